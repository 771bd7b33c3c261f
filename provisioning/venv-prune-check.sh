#!/usr/bin/env bash
# The device venv's prune, proven end to end (issue 15, item 3). Not part of
# `make test` (it builds two venvs: minutes, and the package index).
#
#   provisioning/venv-prune-check.sh [--work DIR]
#
# 1. two scratch-root installs with install.sh's own commands (--root, --skip-model):
#    one with --no-prune (what the runtime would get without the prune), one pruned;
# 2. benchmarks/venv_usage.py in both: the daemon (`microexpr run`, MediaPipe and
#    ONNX backends, reasoner on a local OpenAI-speaking server, real mosquitto on
#    loopback, status page), `timeline` with each backend, check-config and
#    provision-model, under strace: each must exit 0 and the daemon print its
#    event and the reasoner's refinement;
# 3. the timeline CSVs (every AU of every frame of the real clip, both backends)
#    must be byte-identical between the two venvs;
# 4. `pip check` on both (the full venv's pip, --python pointing at the pruned one);
# 5. install.sh run again on the pruned root (the upgrade path: ensurepip puts pip
#    back, pip updates, the prune runs again): the venv must end pruned, the same
#    size within 1 MB, and give the same timeline again;
# 6. sizes by distribution (benchmarks/venv_sizes.py) and `du -sm` of both.
#
# Exit 0 only if every check passed; the summary is printed and kept in DIR.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${TMPDIR:-/tmp}/microexpr-venv-prune-check
DEV_PY=${DEV_PY:-$SRC/.venv/bin/python}  # runs the harness (it uses the tests' fixtures)
while (($#)); do
    case $1 in
        --work) WORK=$2; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "venv-prune-check: unknown option $1" >&2; exit 64 ;;
    esac
    shift
done
[[ -x $DEV_PY ]] || { echo "venv-prune-check: no dev venv python at $DEV_PY (make setup)" >&2; exit 66; }
command -v strace >/dev/null || { echo "venv-prune-check: strace is not installed" >&2; exit 69; }
note() { echo "# $(date -u +%H:%M:%S) $*"; }
fail=0
check() { if "$@"; then echo "PASS: ${LABEL}"; else echo "FAIL: ${LABEL}"; fail=1; fi; }

rm -rf "$WORK"
mkdir -p "$WORK"
FULL=$WORK/full/opt/microexpr/venv
PRUNED=$WORK/pruned/opt/microexpr/venv
note "install.sh --root $WORK/full --no-prune"
bash "$SRC/provisioning/install.sh" --root "$WORK/full" --skip-model --no-prune >"$WORK/install-full.log" 2>&1
note "install.sh --root $WORK/pruned"
bash "$SRC/provisioning/install.sh" --root "$WORK/pruned" --skip-model >"$WORK/install-pruned.log" 2>&1
grep '^prune_venv:' "$WORK/install-pruned.log" || true

for name in full pruned; do
    venv=$WORK/$name/opt/microexpr/venv
    note "runtime usage in the $name venv"
    LABEL="$name: run (both backends, reasoner, MQTT, status), timeline x2, check-config, provision-model exit 0"
    check "$DEV_PY" "$SRC/benchmarks/venv_usage.py" --venv "$venv" --out "$WORK/usage-$name" \
        --timelines "$WORK/timelines-$name"
done
for backend in mediapipe onnx; do
    LABEL="timeline $backend: AU values identical, full vs pruned ($(($(wc -l <"$WORK/timelines-full/timeline-$backend.csv") - 1)) frames)"
    check cmp -s "$WORK/timelines-full/timeline-$backend.csv" "$WORK/timelines-pruned/timeline-$backend.csv"
done

note "pip check"
for name in full pruned; do
    out=$("$FULL/bin/python" -m pip --python "$WORK/$name/opt/microexpr/venv/bin/python" check 2>&1 || true)
    printf '%s\n' "$out" | sed "s/^/pip check ($name): /"
    echo "$out" >"$WORK/pip-check-$name.txt"
done
LABEL="pip check reports the same for both venvs"
check cmp -s "$WORK/pip-check-full.txt" "$WORK/pip-check-pruned.txt"

size_before=$(du -sm "$PRUNED" | cut -f1)
note "install.sh again on the pruned root (upgrade path)"
bash "$SRC/provisioning/install.sh" --root "$WORK/pruned" --skip-model >"$WORK/install-again.log" 2>&1
size_after=$(du -sm "$PRUNED" | cut -f1)
LABEL="rerun: ensurepip restored pip for the update"
check grep -q "ensurepip" "$WORK/install-again.log"
LABEL="rerun: pruned again (no pip), $size_before -> $size_after MB"
check bash -c "! '$PRUNED/bin/python' -m pip --version >/dev/null 2>&1 && (( $size_after <= $size_before + 1 && $size_after >= $size_before - 1 ))"
"$PRUNED/bin/python" -m microexpr timeline "$SRC/../shared/data/media/single_face.mp4" \
    --model "$SRC/../shared/models/face_landmarker.task" -o "$WORK/timeline-again.csv" 2>/dev/null
LABEL="rerun: timeline mediapipe identical"
check cmp -s "$WORK/timelines-full/timeline-mediapipe.csv" "$WORK/timeline-again.csv"
LABEL="pruned venv <= 450 MB (du -sm: $size_after)"
check test "$size_after" -le 450

note "sizes"
python3 "$SRC/benchmarks/venv_sizes.py" "$FULL" "$PRUNED" | tee "$WORK/sizes.md"
exit $fail

#!/usr/bin/env bash
# aarch64 check under emulation: a Debian bookworm arm64 root (debootstrap +
# qemu-user through binfmt_misc), the project installed there with the
# README's own commands (`make model`, the common first half of `make run` and
# `make test`), `microexpr timeline` on the real clip compared AU by AU with
# the same command on this (x86) machine — with the MediaPipe backend and
# with the ONNX Runtime one — and the fast tests.
#
#   sudo provisioning/arm64-check.sh [--root DIR] [--frames N] [--out DIR]
#                                    [--qemu FILE] [--cpu MODEL]
#                                    [--bootstrap-only] [--tests 'PYTEST ARGS']
#                                    [--prune-check]
#
# --prune-check: instead of the above, the device venv's prune on aarch64
# (issue 15): install.sh --root inside the root twice (--no-prune and pruned),
# both venvs' sizes, `timeline` with both backends in both (same PNG frames)
# compared byte for byte, and `pip check`; report venv-prune.md in --out.
#
# qemu-user 7.2 (bookworm's own qemu-user-static) cannot run MediaPipe: the
# FaceLandmarker's creation dies with SIGSEGV inside libmediapipe.so; 10.0.2
# (bookworm-backports) runs it. Without --qemu the script uses the host's
# qemu-aarch64-static when it is 10 or newer, else extracts qemu-user from
# bookworm-backports into /var/tmp/microexpr-qemu (nothing installed on the
# host). It registers that binary in binfmt_misc for the run (the host's own
# qemu-aarch64 entry is disabled meanwhile and re-enabled on exit). --cpu is
# the emulated core (QEMU_CPU), cortex-a76 (Raspberry Pi 5) by default: the
# aarch64 libmediapipe.so needs the LSE atomics of ARMv8.1+, so a Pi 4's
# Cortex-A72 (ARMv8.0) is refused by the library itself.
#
# Timing under emulation means nothing; installability and parity do. Not
# part of `make test` (it takes tens of minutes). Needs root (debootstrap,
# chroot, mounting binfmt_misc) and the Debian archive. Result: a markdown
# report in --out (default benchmarks/results/aarch64-qemu/).
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$SRC/../shared}
ROOT=/var/tmp/microexpr-arm64
OUT=$SRC/benchmarks/results/aarch64-qemu
FRAMES=0            # 0 = the whole clip
BOOTSTRAP_ONLY=0
PRUNE_CHECK=0
TESTS="-m 'not integration and not slow'"  # pytest arguments
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CLIP=single_face.mp4
TOL=${TOL:-0.05}   # max |AU(arm64) - AU(x86)| on the 0-5 intensity scale (values are printed with 2 decimals)
QEMU=""            # qemu-aarch64 binary to register; "" = the host's if >= 10, else bookworm-backports'
CPU=cortex-a76     # QEMU_CPU: the Raspberry Pi 5's core
QEMU_MIN=10        # oldest qemu-user major version seen running MediaPipe (7.2 segfaults)
QEMU_DIR=/var/tmp/microexpr-qemu

die() { echo "arm64-check: error: $*" >&2; exit 1; }
note() { echo "# $(date -u +%H:%M:%S) $*"; }

while (($#)); do
    case $1 in
        --root) ROOT=$2; shift ;;
        --out) OUT=$2; shift ;;
        --frames) FRAMES=$2; shift ;;
        --tests) TESTS=$2; shift ;;
        --qemu) QEMU=$2; shift ;;
        --cpu) CPU=$2; shift ;;
        --bootstrap-only) BOOTSTRAP_ONLY=1 ;;
        --prune-check) PRUNE_CHECK=1 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) echo "arm64-check: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, binfmt_misc)"
# One run at a time on a host: each registers, and on exit removes, the same
# binfmt_misc entry and toggles the host's own qemu-aarch64 entry, so a second
# run ending first left the first one running under bookworm's qemu 7.2, which
# segfaults in MediaPipe (seen: two roots checked at once).
exec 9>/run/lock/microexpr-arm64-check.lock
flock -n 9 || die "another arm64-check.sh is running on this host (binfmt_misc is host-wide); wait for it"
[[ -f $SHARED/data/media/$CLIP ]] || { echo "arm64-check: missing $SHARED/data/media/$CLIP" >&2; exit 66; }

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
    note "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

qemu_major() { "$1" --version 2>/dev/null | head -1 | awk '{print $3}' | cut -d. -f1; }

# qemu-user from <codename>-backports, extracted (not installed) under
# $QEMU_DIR with a private apt state, so the host's packages stay as they are.
fetch_backports_qemu() {
    local codename apt_opts
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    [[ -n $codename ]] || die "cannot tell the host's Debian codename for -backports; give --qemu FILE"
    mkdir -p "$QEMU_DIR/apt/lists/partial" "$QEMU_DIR/apt/cache/archives/partial" "$QEMU_DIR/deb"
    echo "deb $MIRROR $codename-backports main" >"$QEMU_DIR/apt/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$QEMU_DIR/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$QEMU_DIR/apt/lists" -o "Dir::Cache=$QEMU_DIR/apt/cache"
              -o APT::Sandbox::User=root)
    note "qemu-user from $codename-backports into $QEMU_DIR"
    apt-get "${apt_opts[@]}" -q update >/dev/null
    (cd "$QEMU_DIR/deb" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -q download "qemu-user/$codename-backports" >/dev/null)
    dpkg-deb -x "$QEMU_DIR"/deb/qemu-user_*.deb "$QEMU_DIR/root"
    QEMU=$QEMU_DIR/root/usr/bin/qemu-aarch64
}

if [[ -z $QEMU ]]; then
    if [[ -x /usr/bin/qemu-aarch64-static ]] && (( $(qemu_major /usr/bin/qemu-aarch64-static) >= QEMU_MIN )); then
        QEMU=/usr/bin/qemu-aarch64-static
    elif [[ -x $QEMU_DIR/root/usr/bin/qemu-aarch64 ]]; then
        QEMU=$QEMU_DIR/root/usr/bin/qemu-aarch64
    else
        fetch_backports_qemu
    fi
fi
[[ -x $QEMU ]] || die "--qemu $QEMU: not an executable"
[[ $(ldd "$QEMU" 2>&1) == *"statically linked"* ]] || die "--qemu $QEMU: must be statically linked (it runs inside the root)"
qemu_version=$("$QEMU" --version | head -1)
(( $(qemu_major "$QEMU") >= QEMU_MIN )) ||
    note "warning: $qemu_version is older than $QEMU_MIN; 7.2 is known to segfault in MediaPipe"
[[ " $("$QEMU" -cpu help | tr -s ' \n' ' ') " == *" $CPU "* ]] || die "--cpu $CPU: not a CPU model of $QEMU"

# binfmt_misc: our own entry for the run, with the F flag (the interpreter is
# opened now, so it works inside the chroot without a copy); the host's
# qemu-aarch64 entry, if any, is disabled meanwhile (the newest matching entry
# would win anyway, but a disabled one cannot) and re-enabled on exit.
BINFMT=/proc/sys/fs/binfmt_misc
mountpoint -q $BINFMT || mount -t binfmt_misc binfmt_misc $BINFMT
host_entry_was_on=0
restore_binfmt() {
    [[ -e $BINFMT/microexpr-aarch64 ]] && echo -1 >$BINFMT/microexpr-aarch64
    ((host_entry_was_on)) && echo 1 >$BINFMT/qemu-aarch64
    return 0
}
trap restore_binfmt EXIT
if [[ -e $BINFMT/qemu-aarch64 ]] && head -1 $BINFMT/qemu-aarch64 | grep -q enabled; then
    host_entry_was_on=1
    echo 0 >$BINFMT/qemu-aarch64
fi
[[ -e $BINFMT/microexpr-aarch64 ]] && echo -1 >$BINFMT/microexpr-aarch64
magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
echo ":microexpr-aarch64:M::${magic}:${mask}:${QEMU}:F" >$BINFMT/register
note "binfmt_misc: aarch64 runs through $QEMU ($qemu_version), QEMU_CPU=$CPU"

if [[ ! -f $ROOT/.bootstrapped ]]; then
    note "debootstrap bookworm arm64 into $ROOT"
    rm -rf "$ROOT"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,make,ca-certificates \
        bookworm "$ROOT" "$MIRROR"
    touch "$ROOT/.bootstrapped"
fi
[[ $(chroot "$ROOT" uname -m) == aarch64 ]] || die "the root does not run as aarch64"
((BOOTSTRAP_ONLY)) && { note "bootstrapped $ROOT"; exit 0; }

mounted=()
cleanup() { for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done; restore_binfmt; }
trap cleanup EXIT
for fs in proc sys dev; do
    mountpoint -q "$ROOT/$fs" || { mount --bind "/$fs" "$ROOT/$fs"; mounted+=("$ROOT/$fs"); }
done
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The root trusts what this host trusts (a TLS-inspecting proxy's CA
# included), for apt and for pip (PIP_CERT below: pip's own bundle otherwise).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"

# The checkout as a clone would have it (tracked files of the working tree),
# and the shared folder beside it, as the README expects (../shared).
note "copy the checkout and ../shared/{models,data} into the root"
rm -rf "$ROOT/work/microexpr"
mkdir -p "$ROOT/work/microexpr" "$ROOT/work/shared/data/media" "$ROOT/work/out"
(cd "$SRC" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$ROOT/work/microexpr"
# the commit copied, for the reports (HEAD may move during a long run)
commit=$(git -C "$SRC" rev-parse --short HEAD)
cp -r "$SHARED/models" "$ROOT/work/shared/"
# All of data/ (about 1 MB): the fast tests read the stills and the label tables too, not only the clip.
cp -r "$SHARED"/data/. "$ROOT/work/shared/data/"

# OPENBLAS_NUM_THREADS=1: under qemu-user numpy's OpenBLAS worker thread
# never stops spin-waiting (its back-off is counted in emulated time; on
# real hardware it sleeps after a moment), and each one held a whole host
# core through the test run, which it made twice as slow (measured: a
# 6-s sleep after one matmul cost 3.8 s of CPU in that thread, 0 with 1
# thread). The project's numpy calls are too small for BLAS threads.
in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    QEMU_CPU="$CPU" OPENBLAS_NUM_THREADS=1 PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DEFAULT_TIMEOUT=180 \
    bash -c "$1"; }

# The clip's frames (the first $FRAMES, or all), decoded here on x86_64 into
# lossless PNGs in the root's /work/shared/frames: both sides then read the
# same pixels.
frames_as_pngs() {
    rm -rf "$ROOT/work/shared/frames"; mkdir -p "$ROOT/work/shared/frames"
    "$SRC/.venv/bin/python" - "$SHARED/data/media/$CLIP" "$ROOT/work/shared/frames" "$FRAMES" <<'PNG'
import sys, cv2
cap = cv2.VideoCapture(sys.argv[1]); n = int(sys.argv[3]); i = 0
while n <= 0 or i < n:
    ok, frame = cap.read()
    if not ok:
        break
    cv2.imwrite(f"{sys.argv[2]}/{i:05d}.png", frame)
    i += 1
PNG
}

if ((PRUNE_CHECK)); then
    # The frames as PNGs (decoded here), so only the venvs differ between the runs.
    frames_as_pngs
    declare -A mb
    for name in full pruned; do
        opt=""; [[ $name == full ]] && opt=--no-prune
        note "install.sh --root /work/prune-$name --skip-model $opt (inside the root)"
        start=$(date +%s)
        in_root "cd /work/microexpr && rm -rf /work/prune-$name && bash provisioning/install.sh --root /work/prune-$name --skip-model $opt" \
            >"$ROOT/work/out/prune-install-$name.log" 2>&1 || die "install.sh ($name) failed: see $ROOT/work/out/prune-install-$name.log"
        note "  $(( $(date +%s) - start )) s; $(grep '^prune_venv:' "$ROOT/work/out/prune-install-$name.log" || echo 'not pruned')"
        mb[$name]=$(du -sm "$ROOT/work/prune-$name/opt/microexpr/venv" | cut -f1)
    done
    fail=0
    results=()
    for backend in mediapipe onnx; do
        for name in full pruned; do
            note "timeline --backend $backend in the $name venv"
            in_root "/work/prune-$name/opt/microexpr/venv/bin/python -m microexpr timeline /work/shared/frames --fps 30 --backend $backend -o /work/out/prune-$name-$backend.csv" \
                >"$ROOT/work/out/prune-timeline-$name-$backend.log" 2>&1 || { fail=1; results+=("- $backend, $name venv: timeline failed"); }
        done
        if cmp -s "$ROOT/work/out/prune-full-$backend.csv" "$ROOT/work/out/prune-pruned-$backend.csv"; then
            results+=("- $backend: timeline identical, full vs pruned ($(( $(wc -l <"$ROOT/work/out/prune-full-$backend.csv") - 1 )) frames, every AU column)")
        else
            fail=1; results+=("- $backend: timeline DIFFERS between full and pruned")
        fi
    done
    pipcheck() { in_root "/work/prune-full/opt/microexpr/venv/bin/python -m pip --python /work/prune-$1/opt/microexpr/venv/bin/python check" 2>&1 || true; }
    pip_full=$(pipcheck full); pip_pruned=$(pipcheck pruned)
    [[ $pip_full == "$pip_pruned" ]] || fail=1
    mkdir -p "$OUT"
    {
        echo "# Device venv prune on aarch64 (emulated) — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo
        echo "Command: \`sudo nice -n 19 provisioning/arm64-check.sh --prune-check $([[ $FRAMES -gt 0 ]] && echo "--frames $FRAMES")\`, commit $commit,"
        echo "$qemu_version, QEMU_CPU=$CPU, $(in_root 'python3 --version') in a Debian bookworm arm64 root."
        echo "Both venvs built by \`provisioning/install.sh --root DIR --skip-model\` inside the root (one with \`--no-prune\`)."
        echo
        echo "- venv size (\`du -sm\`): full **${mb[full]} MB**, pruned **${mb[pruned]} MB**"
        echo "- prune: $(grep '^prune_venv:' "$ROOT/work/out/prune-install-pruned.log")"
        printf '%s\n' "${results[@]}"
        echo "- pip check, full: $(echo "$pip_full" | tr '\n' ' ')"
        echo "- pip check, pruned: $(echo "$pip_pruned" | tr '\n' ' ')"
        echo
        echo "By distribution (benchmarks/venv_sizes.py):"
        echo
        python3 "$SRC/benchmarks/venv_sizes.py" "$ROOT/work/prune-full/opt/microexpr/venv" "$ROOT/work/prune-pruned/opt/microexpr/venv"
    } >"$OUT/venv-prune.md"
    cat "$OUT/venv-prune.md"
    exit $fail
fi

start=$(date +%s)
note "install with the README's commands: make model (no compiler installed first)"
had_gcc=$(in_root 'command -v gcc || echo none')
in_root 'cd /work/microexpr && make model' 2>&1 | tee "$ROOT/work/out/install.log"
install_s=$(( $(date +%s) - start ))
gcc_after=$(in_root 'command -v gcc || echo none')
venv_mb=$(in_root 'du -sm /work/microexpr/.venv | cut -f1')

# Decoding is not part of the comparison: the aarch64 and x86_64 builds of
# OpenCV's FFmpeg turn the same H.264 stream into slightly different BGR
# pixels (measured below), which alone moves AUs by more than the tolerance.
# So the frames (the first N, or all) are decoded once, here, written as
# lossless PNGs and read by both runs; the decoding difference is reported
# on its own.
note "$( ((FRAMES > 0)) && echo "first $FRAMES" || echo all) frames of $CLIP as PNGs (decoded on $(uname -m))"
frames_as_pngs
clip=/work/shared/frames
frames_opt="--fps $("$SRC/.venv/bin/python" -c 'import sys, cv2; print(cv2.VideoCapture(sys.argv[1]).get(cv2.CAP_PROP_FPS))' "$SHARED/data/media/$CLIP")"

# The decoding difference: every frame decoded in the root and here, compared.
note "decoding $CLIP on aarch64 vs $(uname -m)"
cat >"$ROOT/work/out/decode.py" <<'EOF'
import sys, cv2, numpy as np
cap = cv2.VideoCapture(sys.argv[1]); frames = []
while True:
    ok, frame = cap.read()
    if not ok:
        break
    frames.append(frame)
np.save(sys.argv[2], np.stack(frames))
EOF
in_root "/work/microexpr/.venv/bin/python /work/out/decode.py /work/shared/data/media/$CLIP /work/out/decoded-arm64.npy"
"$SRC/.venv/bin/python" "$ROOT/work/out/decode.py" "$SHARED/data/media/$CLIP" "$ROOT/work/out/decoded-x86.npy"
"$SRC/.venv/bin/python" - "$ROOT/work/out/decoded-x86.npy" "$ROOT/work/out/decoded-arm64.npy" >"$ROOT/work/out/decode.md" <<'EOF'
import sys, numpy as np
a, b = (np.load(p).astype(np.int16) for p in sys.argv[1:3])
if a.shape != b.shape:
    print(f"- decoded frames differ in shape: {a.shape} vs {b.shape}")
else:
    d = np.abs(a - b)
    same = int((d.reshape(len(d), -1).max(axis=1) == 0).sum())
    print(f"- {a.shape[0]} frames of {a.shape[2]}x{a.shape[1]}: identical frames {same}; max |diff| {int(d.max())} "
          f"(0-255), mean {d.mean():.3f}, channel values that differ {100 * (d > 0).mean():.1f} %")
EOF
rm -f "$ROOT/work/out"/decoded-*.npy
cat "$ROOT/work/out/decode.md"

# Each backend on both machines; a run that fails (MediaPipe under qemu 7.2
# segfaults) is recorded with its exit status and the rest goes on.
host_clip=${clip/\/work\/shared/$ROOT/work/shared}
declare -A arm_rc arm_s
set +e
for backend in mediapipe onnx; do
    note "timeline --backend $backend on aarch64 (emulated, QEMU_CPU=$CPU)"
    start=$(date +%s)
    in_root "cd /work/microexpr && .venv/bin/microexpr timeline $clip $frames_opt --backend $backend --json -o /work/out/arm64-$backend.jsonl" \
        >"$ROOT/work/out/timeline-arm64-$backend.log" 2>&1
    arm_rc[$backend]=$?
    arm_s[$backend]=$(( $(date +%s) - start ))
    tail -3 "$ROOT/work/out/timeline-arm64-$backend.log"
    note "timeline --backend $backend on $(uname -m)"
    PYTHONPATH=$SRC/device "$SRC/.venv/bin/microexpr" timeline "$host_clip" $frames_opt --backend $backend --json \
        -o "$ROOT/work/out/x86-$backend.jsonl" || die "timeline --backend $backend failed on this machine"
done

note "AU parity"
parity() {  # parity NAME REFERENCE CANDIDATE -> $ROOT/work/out/parity-NAME.md, exit status of au_parity.py
    if [[ -f $3 ]]; then
        PYTHONPATH=$SRC/device "$SRC/.venv/bin/python" "$SRC/benchmarks/au_parity.py" "$2" "$3" --tol "$TOL" \
            >"$ROOT/work/out/parity-$1.md"
    else
        echo "- not compared: the aarch64 run wrote no output (see below)" >"$ROOT/work/out/parity-$1.md"
        return 1
    fi
}
parity mediapipe "$ROOT/work/out/x86-mediapipe.jsonl" "$ROOT/work/out/arm64-mediapipe.jsonl"
parity_rc=$?
parity onnx "$ROOT/work/out/x86-onnx.jsonl" "$ROOT/work/out/arm64-onnx.jsonl"
onnx_rc=$?
parity cross "$ROOT/work/out/x86-mediapipe.jsonl" "$ROOT/work/out/arm64-onnx.jsonl"
head -50 "$ROOT/work/out"/parity-*.md

# What `make test` adds before pytest (systemd-analyze for test_units.py, the
# broker, openssl, ...): `make model` alone does not install it.
note "fast tests on aarch64: system-deps.sh --test, then pytest $TESTS"
start=$(date +%s)
in_root "cd /work/microexpr && bash provisioning/system-deps.sh --test && .venv/bin/python -m pip install --quiet -r requirements/test.txt && .venv/bin/python -m pytest -q -p no:cacheprovider --timeout 3000 $TESTS" \
    >"$ROOT/work/out/tests.log" 2>&1
tests_rc=$?
tests_s=$(( $(date +%s) - start ))
set -e
tail -5 "$ROOT/work/out/tests.log"

mkdir -p "$OUT"
{
    echo "# arm64 check — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Command: \`sudo provisioning/arm64-check.sh $([[ $FRAMES -gt 0 ]] && echo "--frames $FRAMES")\` on $(uname -m) ($(nproc) cores), commit $commit (copied into the root at the start)."
    echo "Root: Debian bookworm arm64 (debootstrap --variant=minbase), run through $qemu_version"
    echo "(\`$QEMU\`, binfmt_misc with the F flag), emulated CPU \`QEMU_CPU=$CPU\`."
    echo "Python in the root: $(in_root 'python3 --version'), $(in_root 'uname -m')."
    echo "Why not bookworm's qemu 7.2, and why not a Cortex-A72: [diag/README.md](diag/README.md)."
    echo
    echo "## Install (\`make model\`, the README's commands)"
    echo
    echo "- gcc before: $had_gcc; gcc after: $gcc_after (no compiler needed: ${gcc_after/none/yes})"
    echo "- wall time under emulation: ${install_s} s (means nothing for a real board)"
    echo "- venv size: ${venv_mb} MB"
    echo
    what="$( ((FRAMES > 0)) && echo "the first $FRAMES frames" || echo "all frames") of $CLIP, decoded on $(uname -m) into PNGs read by both"
    echo "## AU parity, MediaPipe backend: timeline on $what, aarch64 vs $(uname -m) (tolerance $TOL)"
    echo
    cat "$ROOT/work/out/parity-mediapipe.md"
    echo
    echo "aarch64 timeline: exit ${arm_rc[mediapipe]}, ${arm_s[mediapipe]} s under emulation."
    ((arm_rc[mediapipe] == 0)) || { echo; echo '```'; tail -5 "$ROOT/work/out/timeline-arm64-mediapipe.log"; echo '```'; }
    echo
    echo "## AU parity, ONNX Runtime backend (\`--backend onnx\`): aarch64 vs $(uname -m) (tolerance $TOL)"
    echo
    cat "$ROOT/work/out/parity-onnx.md"
    echo
    echo "aarch64 timeline: exit ${arm_rc[onnx]}, ${arm_s[onnx]} s under emulation."
    ((arm_rc[onnx] == 0)) || { echo; echo '```'; tail -5 "$ROOT/work/out/timeline-arm64-onnx.log"; echo '```'; }
    echo
    echo "## Decoding $CLIP itself, aarch64 vs $(uname -m) (not part of the parity above)"
    echo
    cat "$ROOT/work/out/decode.md"
    echo
    echo "## Across backends: ONNX on aarch64 vs MediaPipe on $(uname -m) (tolerance $TOL, for information)"
    echo
    cat "$ROOT/work/out/parity-cross.md"
    echo
    echo "## Fast tests on aarch64 (\`pytest $TESTS\`, exit $tests_rc, ${tests_s} s)"
    echo
    echo '```'
    grep -E "passed|failed|error" "$ROOT/work/out/tests.log" | tail -15
    echo '```'
} >"$OUT/arm64-check.md"
cp "$ROOT/work/out/install.log" "$OUT/install.log" 2>/dev/null || true
cp "$ROOT/work/out/tests.log" "$ROOT/work/out"/timeline-arm64-*.log "$OUT/" 2>/dev/null || true
cp "$ROOT/work/out"/{arm64,x86}-*.jsonl "$OUT/" 2>/dev/null || true
note "wrote $OUT/arm64-check.md"
exit $(( parity_rc || onnx_rc || tests_rc ))

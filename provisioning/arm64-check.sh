#!/usr/bin/env bash
# aarch64 check under emulation: a Debian bookworm arm64 root (debootstrap +
# qemu-user-static through binfmt_misc), the project installed there with the
# README's own commands (`make model`, the common first half of `make run` and
# `make test`), `microexpr timeline` on the real clip compared AU by AU with
# the same command on this (x86) machine, and the fast tests.
#
#   sudo provisioning/arm64-check.sh [--root DIR] [--frames N] [--out DIR]
#                                    [--bootstrap-only] [--tests 'PYTEST ARGS']
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
TESTS="-m 'not integration and not slow'"  # pytest arguments
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CLIP=single_face.mp4
TOL=${TOL:-0.05}   # max |AU(arm64) - AU(x86)| on the 0-5 intensity scale (values are printed with 2 decimals)

die() { echo "arm64-check: error: $*" >&2; exit 1; }
note() { echo "# $(date -u +%H:%M:%S) $*"; }

while (($#)); do
    case $1 in
        --root) ROOT=$2; shift ;;
        --out) OUT=$2; shift ;;
        --frames) FRAMES=$2; shift ;;
        --tests) TESTS=$2; shift ;;
        --bootstrap-only) BOOTSTRAP_ONLY=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "arm64-check: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, binfmt_misc)"
[[ -f $SHARED/data/media/$CLIP ]] || { echo "arm64-check: missing $SHARED/data/media/$CLIP" >&2; exit 66; }

need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[[ -x /usr/bin/qemu-aarch64-static ]] || need+=(qemu-user-static)
if ((${#need[@]})); then
    note "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# binfmt_misc: mount it and register qemu-aarch64 with the F flag (the
# interpreter is opened now, so it works inside the chroot without a copy).
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    note "register qemu-aarch64 in binfmt_misc"
    magic='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
    echo ":qemu-aarch64:M::${magic}:${mask}:/usr/bin/qemu-aarch64-static:F" >/proc/sys/fs/binfmt_misc/register
fi

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
cleanup() { for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done; }
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
note "copy the checkout and ../shared/{models,data/media} into the root"
rm -rf "$ROOT/work/microexpr"
mkdir -p "$ROOT/work/microexpr" "$ROOT/work/shared/data/media" "$ROOT/work/out"
(cd "$SRC" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$ROOT/work/microexpr"
cp -r "$SHARED/models" "$ROOT/work/shared/"
cp "$SHARED/data/media/$CLIP" "$ROOT/work/shared/data/media/"

in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DEFAULT_TIMEOUT=180 bash -c "$1"; }

start=$(date +%s)
note "install with the README's commands: make model (no compiler installed first)"
had_gcc=$(in_root 'command -v gcc || echo none')
in_root 'cd /work/microexpr && make model' 2>&1 | tee "$ROOT/work/out/install.log"
install_s=$(( $(date +%s) - start ))
gcc_after=$(in_root 'command -v gcc || echo none')
venv_mb=$(in_root 'du -sm /work/microexpr/.venv | cut -f1')

frames_opt=""
clip=/work/shared/data/media/$CLIP
if ((FRAMES > 0)); then
    # Fewer frames, the same pixels on both sides: the first N decoded frames
    # written as a PNG folder on the host, read by both runs.
    note "first $FRAMES frames as PNGs"
    rm -rf "$ROOT/work/shared/frames"; mkdir -p "$ROOT/work/shared/frames"
    "$SRC/.venv/bin/python" - "$SHARED/data/media/$CLIP" "$ROOT/work/shared/frames" "$FRAMES" <<'EOF'
import sys, cv2
cap = cv2.VideoCapture(sys.argv[1]); n = int(sys.argv[3])
for i in range(n):
    ok, frame = cap.read()
    if not ok:
        break
    cv2.imwrite(f"{sys.argv[2]}/{i:05d}.png", frame)
EOF
    clip=/work/shared/frames
    frames_opt="--fps 30"
fi

note "timeline on aarch64 (emulated)"
start=$(date +%s)
in_root "cd /work/microexpr && .venv/bin/microexpr timeline $clip $frames_opt --json -o /work/out/arm64.jsonl"
timeline_s=$(( $(date +%s) - start ))
note "timeline on $(uname -m)"
host_clip=${clip/\/work\/shared/$ROOT/work/shared}
PYTHONPATH=$SRC/device "$SRC/.venv/bin/microexpr" timeline "$host_clip" $frames_opt --json -o "$ROOT/work/out/x86.jsonl"

note "AU parity"
set +e
PYTHONPATH=$SRC/device "$SRC/.venv/bin/python" "$SRC/benchmarks/au_parity.py" \
    "$ROOT/work/out/x86.jsonl" "$ROOT/work/out/arm64.jsonl" --tol "$TOL" >"$ROOT/work/out/parity.md"
parity_rc=$?
cat "$ROOT/work/out/parity.md"

note "fast tests on aarch64: pytest $TESTS"
start=$(date +%s)
in_root "cd /work/microexpr && .venv/bin/python -m pip install --quiet -r requirements/test.txt && .venv/bin/python -m pytest -q -p no:cacheprovider --timeout 3000 $TESTS" \
    >"$ROOT/work/out/tests.log" 2>&1
tests_rc=$?
tests_s=$(( $(date +%s) - start ))
set -e
tail -5 "$ROOT/work/out/tests.log"

mkdir -p "$OUT"
{
    echo "# arm64 check — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Command: \`sudo provisioning/arm64-check.sh $([[ $FRAMES -gt 0 ]] && echo "--frames $FRAMES")\` on $(uname -m) ($(nproc) cores), commit $(git -C "$SRC" rev-parse --short HEAD)."
    echo "Root: Debian bookworm arm64 (debootstrap --variant=minbase), run through qemu-aarch64-static $(/usr/bin/qemu-aarch64-static --version | head -1 | awk '{print $3}')."
    echo "Python in the root: $(in_root 'python3 --version'), $(in_root 'uname -m')."
    echo
    echo "## Install (\`make model\`, the README's commands)"
    echo
    echo "- gcc before: $had_gcc; gcc after: $gcc_after (no compiler needed: ${gcc_after/none/yes})"
    echo "- wall time under emulation: ${install_s} s (means nothing for a real board)"
    echo "- venv size: ${venv_mb} MB"
    echo
    echo "## AU parity, timeline on $( ((FRAMES > 0)) && echo "the first $FRAMES frames of" ) $CLIP (tolerance $TOL)"
    echo
    cat "$ROOT/work/out/parity.md"
    echo
    echo "Timeline under emulation: ${timeline_s} s."
    echo
    echo "## Fast tests on aarch64 (\`pytest $TESTS\`, exit $tests_rc, ${tests_s} s)"
    echo
    echo '```'
    grep -E "passed|failed|error" "$ROOT/work/out/tests.log" | tail -15
    echo '```'
} >"$OUT/arm64-check.md"
cp "$ROOT/work/out/install.log" "$OUT/install.log" 2>/dev/null || true
note "wrote $OUT/arm64-check.md"
exit $(( parity_rc || tests_rc ))

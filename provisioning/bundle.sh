#!/usr/bin/env bash
# Build offline release bundles of microexpr, one per target architecture.
#
#   provisioning/bundle.sh [--arch x86_64|aarch64]... [--out DIR] [--mirror DIR] [--python-version X.Y]
#   make bundle                       # both architectures into dist/
#
# Each bundle is dist/microexpr-<version>-<arch>.tar.gz holding one folder
# microexpr-<version>-<arch>/ with:
#   wheels/        every wheel the runtime needs for that architecture (binary only,
#                  fetched by pip from the configured index with pip's platform tags),
#                  mediapipe, and microexpr's own wheel
#   models/        face_landmarker.task (checked against its sha256 pin here)
#   onnx/          the ONNX Runtime backend's files and their pinned manifest.json
#   services/, provisioning/install.sh, provisioning/*.sh, provisioning/config.example.toml,
#   requirements/  (runtime.txt without systemd-python: it ships only as source,
#                  and a bundle needs no compiler; logs then go to stderr, which
#                  the journal records anyway)
#   bundle.json    name, version, arch, python, platform tags, outbox layouts it reads
#   MANIFEST.sha256  sha256 of every other file (sha256sum format)
# and dist/microexpr-<version>-<arch>.tar.gz.sha256 beside it.
#
# Install one on a device with: sudo provisioning/install.sh --bundle FILE
# (from the bundle itself: tar xzf FILE; microexpr-*/provisioning/install.sh --bundle FILE).
set -euo pipefail
umask 022

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$SRC/.venv/bin/python}
OUT=$SRC/dist
MIRROR=$SRC/../shared/models
ARCHES=()
PY_VERSION=""

fail() { local code=$1; shift; echo "bundle.sh: error: $*" >&2; exit "$code"; }

while (($#)); do
    case $1 in
        --arch) [[ $# -ge 2 ]] || fail 2 "--arch needs x86_64 or aarch64"; ARCHES+=("$2"); shift ;;
        --out) [[ $# -ge 2 ]] || fail 2 "--out needs a directory"; OUT=$2; shift ;;
        --mirror) [[ $# -ge 2 ]] || fail 2 "--mirror needs a directory"; MIRROR=$2; shift ;;
        --python-version) [[ $# -ge 2 ]] || fail 2 "--python-version needs X.Y"; PY_VERSION=$2; shift ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail 2 "unknown option: $1" ;;
    esac
    shift
done
((${#ARCHES[@]})) || ARCHES=(x86_64 aarch64)
for arch in "${ARCHES[@]}"; do
    [[ $arch == x86_64 || $arch == aarch64 ]] || fail 2 "--arch $arch: x86_64 or aarch64"
done
[[ -x $PYTHON ]] || fail 66 "$PYTHON: no Python (run make setup first, or set PYTHON)"
[[ -f $MIRROR/face_landmarker.task ]] || fail 66 "$MIRROR/face_landmarker.task: no such file (--mirror DIR)"
# The target's Python: Debian bookworm / Pi OS ship 3.11; default to the build host's.
[[ -n $PY_VERSION ]] || PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ $PY_VERSION =~ ^3\.[0-9]+$ ]] || fail 2 "--python-version $PY_VERSION: expected 3.N"
PY_TAG=cp${PY_VERSION/./}

export PYTHONPATH=$SRC/device
VERSION=$("$PYTHON" -c 'import microexpr; print(microexpr.__version__)')
LAYOUT=$("$PYTHON" -c 'from microexpr.outbox import LAYOUT_VERSION; print(LAYOUT_VERSION)')
# The pinned model, verified before it goes in (ModelError → exit 80/81 with one line).
"$PYTHON" - "$MIRROR/face_landmarker.task" <<'PY' || fail 80 "$MIRROR/face_landmarker.task does not match its sha256 pin"
import sys
from pathlib import Path
from microexpr import models
sys.exit(0 if models.verify_file(Path(sys.argv[1])) == models.FACE_LANDMARKER.sha256 else 1)
PY

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Our own wheel once (pure Python: the same for every architecture).
echo "# microexpr $VERSION: building its wheel"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/own" "$SRC"
OWN_WHEEL=$(ls "$WORK"/own/microexpr-*.whl)

for arch in "${ARCHES[@]}"; do
    name=microexpr-$VERSION-$arch
    stage=$WORK/$name
    echo "# $name: wheels for $arch, CPython $PY_VERSION"
    mkdir -p "$stage/wheels" "$stage/models" "$stage/onnx" "$stage/requirements" "$stage/provisioning" "$stage/services"
    # systemd-python is source-only: left out (see above).
    grep -v '^systemd-python' "$SRC/requirements/runtime.txt" >"$stage/requirements/runtime.txt"
    cp "$SRC/requirements/mediapipe.txt" "$stage/requirements/"
    platforms=(--platform "manylinux2014_$arch" --platform "manylinux_2_17_$arch" --platform "manylinux_2_28_$arch")
    pip_opts=(--quiet --only-binary=:all: "${platforms[@]}" --python-version "$PY_VERSION"
              --implementation cp --abi "$PY_TAG" --abi abi3 --abi none --dest "$stage/wheels")
    "$PYTHON" -m pip download "${pip_opts[@]}" -r "$stage/requirements/runtime.txt" 2> >(grep -v '^WARNING: Location' >&2)
    "$PYTHON" -m pip download "${pip_opts[@]}" --no-deps -r "$stage/requirements/mediapipe.txt" 2> >(grep -v '^WARNING: Location' >&2)
    cp "$OWN_WHEEL" "$stage/wheels/"
    cp "$MIRROR/face_landmarker.task" "$stage/models/"
    cp "$SRC"/provisioning/onnx/* "$stage/onnx/"
    cp "$SRC"/services/* "$stage/services/"
    cp "$SRC"/provisioning/*.sh "$SRC/provisioning/config.example.toml" "$stage/provisioning/"
    # The venv prune (install.sh step 4): script, ELF helper, manifest, measured module list.
    cp "$SRC"/provisioning/{prune_venv.py,elf_symtab.py,prune-manifest.toml,venv-runtime-modules.txt} "$stage/provisioning/"
    created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    cat >"$stage/bundle.json" <<JSON
{"name": "microexpr", "version": "$VERSION", "arch": "$arch", "python": "$PY_VERSION",
 "platforms": ["manylinux2014_$arch", "manylinux_2_17_$arch", "manylinux_2_28_$arch"],
 "outbox_layouts": [$LAYOUT], "created": "$created",
 "wheel": "$(basename "$OWN_WHEEL")"}
JSON
    (cd "$stage" && find . -type f ! -name MANIFEST.sha256 -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) \
        >"$WORK/MANIFEST.sha256"
    mv "$WORK/MANIFEST.sha256" "$stage/MANIFEST.sha256"
    tar -C "$WORK" -czf "$OUT/$name.tar.gz.part" "$name"
    mv "$OUT/$name.tar.gz.part" "$OUT/$name.tar.gz"
    (cd "$OUT" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
    echo "$OUT/$name.tar.gz ($(du -h "$OUT/$name.tar.gz" | cut -f1), $(wc -l <"$stage/MANIFEST.sha256") files)"
done

#!/usr/bin/env bash
# Install microexpr as a systemd service on Raspberry Pi OS / Debian bookworm (64-bit).
#
# Idempotent: run it again after `git pull` to update the venv and the unit;
# an edited /etc/microexpr/config.toml and configured secrets are never touched.
#
#   sudo provisioning/install.sh [--with-mosquitto] [--mirror DIR] [--start]
#   provisioning/install.sh --dry-run            # print every action, change nothing
#   provisioning/install.sh --root /tmp/img ...   # lay the tree out under a scratch root
#
# What it does, in order (each line it prints is one action):
#   1. apt packages the venv build needs (+ mosquitto with --with-mosquitto)
#   2. system user and group `microexpr`, member of `video` (camera access)
#   3. /opt/microexpr, /etc/microexpr{,/credentials}, /var/lib/microexpr/models
#   4. venv /opt/microexpr/venv: runtime requirements, mediapipe --no-deps,
#      then this checkout --no-deps (the same recipe as the Makefile), then
#      pruned to what the runtime uses (provisioning/prune_venv.py: pip,
#      setuptools, tests, unused byte-code; --no-prune keeps everything);
#      /usr/local/bin/microexpr links to the venv's command (on PATH)
#   5. the pinned FaceLandmarker model via `microexpr provision-model`
#   6. /etc/microexpr/config.toml from provisioning/config.example.toml, only if absent
#   7. empty credential files (0600, root) so LoadCredential= always finds its source
#   8. the unit, `systemctl daemon-reload` and `enable` (skipped when systemd is not PID 1)
#   9. with --with-mosquitto: a loopback broker config for mosquitto, enabled
#
# In a scratch root (--root) nothing outside it is changed: apt, useradd, chown
# and systemctl are printed as "skip (scratch root)" instead of run.
set -euo pipefail
# The service user must be able to read the venv and the model whatever root's umask is.
umask 022

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=""
DRY_RUN=0
WITH_MOSQUITTO=0
WITH_PICAMERA=0
MIRROR=""
WHEELS=""
VENV_FROM=""
SKIP_VENV=0
SKIP_MODEL=0
NO_PRUNE=0
START=0
BUNDLE=""
ROLLBACK=0
PROJECT=""  # what pip installs as microexpr: this checkout, or the bundle's wheel
PYTHON=${PYTHON:-python3}

APP=microexpr
PREFIX=/opt/microexpr
VENV=$PREFIX/venv
ETC=/etc/microexpr
CREDS=$ETC/credentials
STATE=/var/lib/microexpr
MODELS=$STATE/models
UNIT_DIR=/etc/systemd/system
BIN_LINK=/usr/local/bin/microexpr
MOSQUITTO_CONF=/etc/mosquitto/conf.d/microexpr.conf
APT_PACKAGES=(python3-venv python3-systemd libegl1 libgles2)  # libmediapipe.so links EGL/GLESv2; no compiler: Debian's prebuilt systemd-python is linked into the venv (link-systemd.sh)
SECRETS=(mqtt_password openai_api_key status_password)

usage() {
    cat <<EOF
usage: $0 [options]

  --dry-run          print every action without doing any of them
  --root DIR         install under DIR (a scratch root or image); no apt,
                     useradd, chown or systemctl: they are printed instead
  --with-mosquitto   also install a local mosquitto broker (loopback only)
  --with-picamera    Pi camera module support: apt python3-picamera2 (Raspberry
                     Pi OS) and a venv that can see the system's site-packages
  --mirror DIR       local folder holding face_landmarker.task (no download)
  --wheels DIR       install Python packages from this wheel folder only (offline)
  --venv-from DIR    use this existing venv instead of building one (links it)
  --skip-venv        do not create or update the venv (implies --skip-model)
  --skip-model       do not provision the model
  --no-prune         keep the whole venv: pip, setuptools, tests, all byte-code
                     (default: provisioning/prune_venv.py cuts what the runtime
                     never opens, docs/deployment.md "Venv size")
  --start            (re)start the service at the end (needs systemd as PID 1)
  --bundle FILE      install a release bundle (make bundle) offline: every hash
                     checked first; keeps the previous release for --rollback
  --rollback         make the previous bundle release current again
  -h, --help         this text
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
note() { echo "# $*"; }
# fail CODE MESSAGE: one line, a documented exit code (docs/deployment.md).
fail() { local code=$1; shift; echo "install.sh: error: $*" >&2; exit "$code"; }

while (($#)); do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --root) [[ $# -ge 2 ]] || die "--root needs a directory"; ROOT=$2; shift ;;
        --root=*) ROOT=${1#--root=} ;;
        --with-mosquitto) WITH_MOSQUITTO=1 ;;
        --with-picamera) WITH_PICAMERA=1 ;;
        --mirror) [[ $# -ge 2 ]] || die "--mirror needs a directory"; MIRROR=$2; shift ;;
        --mirror=*) MIRROR=${1#--mirror=} ;;
        --wheels) [[ $# -ge 2 ]] || die "--wheels needs a directory"; WHEELS=$2; shift ;;
        --wheels=*) WHEELS=${1#--wheels=} ;;
        --venv-from) [[ $# -ge 2 ]] || die "--venv-from needs a directory"; VENV_FROM=$2; shift ;;
        --venv-from=*) VENV_FROM=${1#--venv-from=} ;;
        --skip-venv) SKIP_VENV=1; SKIP_MODEL=1 ;;
        --skip-model) SKIP_MODEL=1 ;;
        --no-prune) NO_PRUNE=1 ;;
        --start) START=1 ;;
        --bundle) [[ $# -ge 2 ]] || die "--bundle needs a file"; BUNDLE=$2; shift ;;
        --bundle=*) BUNDLE=${1#--bundle=} ;;
        --rollback) ROLLBACK=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

if [[ -n $ROOT ]]; then
    [[ $ROOT = /* ]] || ROOT=$(pwd)/$ROOT
    ROOT=${ROOT%/}
    [[ -n $ROOT ]] || die "--root / is the real system: leave --root out"
fi
[[ -z $MIRROR || -d $MIRROR ]] || die "--mirror $MIRROR: not a directory"
[[ -z $WHEELS || -d $WHEELS ]] || die "--wheels $WHEELS: not a directory"
if [[ -n $VENV_FROM ]]; then
    [[ -x $VENV_FROM/bin/python ]] || die "--venv-from $VENV_FROM: no bin/python there"
    VENV_FROM=$(cd "$VENV_FROM" && pwd)
fi
if ((!DRY_RUN)) && [[ -z $ROOT ]] && (($(id -u) != 0)); then
    die "run as root (sudo), or use --dry-run / --root DIR"
fi

# ---------------------------------------------------------------- helpers

# R PATH: PATH inside the install root.
R() { echo "$ROOT$1"; }

# act CMD...: print an action, then run it unless this is a dry run.
act() {
    echo "+ $*"
    ((DRY_RUN)) || "$@"
}

# sys CMD...: an action on the live system (packages, users, services):
# printed but not run in a scratch root.
sys() {
    if [[ -n $ROOT ]]; then
        echo "skip (scratch root): $*"
    else
        act "$@"
    fi
}

ensure_dir() { # MODE OWNER PATH
    local mode=$1 owner=$2 path=$3
    if [[ -d $(R "$path") ]]; then
        if [[ $(stat -c %a "$(R "$path")") == "${mode#0}" ]]; then
            note "exists: $(R "$path")"
        else
            act chmod "$mode" "$(R "$path")"
        fi
    else
        act install -d -m "$mode" "$(R "$path")"
    fi
    [[ $owner == root:root ]] || sys chown "$owner" "$(R "$path")"
}

# install_if_changed MODE SRC DEST: our own files (the unit) are kept current.
install_if_changed() {
    local mode=$1 src=$2 dest=$3
    if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
        note "unchanged: $dest"
        return 1
    fi
    act install -D -m "$mode" "$src" "$dest"
}

# install_if_absent MODE SRC DEST: the admin's files (config) are never overwritten.
install_if_absent() {
    local mode=$1 src=$2 dest=$3
    if [[ -e $dest ]]; then
        note "kept existing: $dest"
        return 1
    fi
    act install -D -m "$mode" "$src" "$dest"
}

systemd_running() {
    [[ -z $ROOT && -d /run/systemd/system && $(cat /proc/1/comm 2>/dev/null) == systemd ]]
}

# Release bundles (provisioning/bundle-lib.sh): --rollback alone, or --bundle
# verified here, before any step changes anything.
if ((ROLLBACK)) || [[ -n $BUNDLE ]]; then
    # shellcheck source=provisioning/bundle-lib.sh
    . "$SRC/provisioning/bundle-lib.sh"
fi
if ((ROLLBACK)); then
    [[ -z $BUNDLE ]] || die "--rollback and --bundle exclude each other"
    bundle_rollback
    exit 0
fi
[[ -z $BUNDLE ]] || bundle_prepare "$BUNDLE"

# ---------------------------------------------------------------- 0. checks

mode_note=""
((DRY_RUN)) && mode_note=" (dry run: nothing is changed)"
note "microexpr install from $SRC into ${ROOT:-/}$mode_note"
if [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    [[ ${ID:-} == debian || ${ID:-} == raspbian || ${ID_LIKE:-} == *debian* ]] ||
        note "warning: tested on Debian / Raspberry Pi OS bookworm; this is ${PRETTY_NAME:-unknown}"
fi
case $(uname -m) in
    aarch64|x86_64) ;;
    *) note "warning: $(uname -m) is not 64-bit ARM or x86: mediapipe publishes no wheels for it" ;;
esac

# ---------------------------------------------------------------- 1. packages

note "1. system packages"
wanted=("${APT_PACKAGES[@]}")
((WITH_MOSQUITTO)) && wanted+=(mosquitto)
# picamera2 and the libcamera bindings exist only as Debian packages (Pi OS archive).
((WITH_PICAMERA)) && wanted+=(python3-picamera2)
missing=()
if [[ -n $ROOT ]]; then
    missing=("${wanted[@]}")  # the root's package set is not ours to query
else
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
fi
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    sys apt-get update -q
    sys apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    note "already installed: ${wanted[*]}"
fi

# ---------------------------------------------------------------- 2. user

note "2. system user $APP (groups: video)"
if getent passwd "$APP" >/dev/null && [[ -z $ROOT ]]; then
    if id -nG "$APP" | tr ' ' '\n' | grep -qx video; then
        note "user $APP exists and is in video"
    else
        sys usermod -a -G video "$APP"
    fi
else
    getent group video >/dev/null || [[ -n $ROOT ]] || sys groupadd --system video
    sys useradd --system --user-group --groups video --home-dir "$STATE" --no-create-home \
        --shell /usr/sbin/nologin --comment "microexpr appliance" "$APP"
fi

# ---------------------------------------------------------------- 3. directories

note "3. directories"
ensure_dir 0755 root:root "$PREFIX"
ensure_dir 0755 root:root "$ETC"
ensure_dir 0700 root:root "$CREDS"
ensure_dir 0750 "$APP:$APP" "$STATE"
ensure_dir 0750 "$APP:$APP" "$MODELS"

# ---------------------------------------------------------------- 4. venv

note "4. Python environment $VENV"
PY=$(R "$VENV")/bin/python
[[ -z $BUNDLE ]] || ((SKIP_VENV)) || [[ -d $(dirname "$(R "$VENV")") ]] || act install -d -m 0755 "$(dirname "$(R "$VENV")")"
if ((SKIP_VENV)); then
    note "skipped (--skip-venv)"
elif [[ -n $VENV_FROM ]]; then
    if [[ -L $(R "$VENV") && $(readlink "$(R "$VENV")") == "$VENV_FROM" ]]; then
        note "already linked: $(R "$VENV") -> $VENV_FROM"
    else
        [[ ! -e $(R "$VENV") || -L $(R "$VENV") ]] || die "$(R "$VENV") exists and is not a link: remove it to use --venv-from"
        act ln -sfn "$VENV_FROM" "$(R "$VENV")"
    fi
else
    pip_opts=(--quiet --disable-pip-version-check)
    [[ -n $WHEELS ]] && pip_opts+=(--no-index --find-links "$WHEELS")
    venv_opts=()
    ((WITH_PICAMERA)) && venv_opts+=(--system-site-packages)  # to import picamera2/libcamera
    if [[ -x $PY ]]; then
        note "venv exists: updating it"
        cfg_file=$(R "$VENV")/pyvenv.cfg
        if ((WITH_PICAMERA)) && ! grep -qx "include-system-site-packages = true" "$cfg_file"; then
            act sed -i "s/^include-system-site-packages = .*/include-system-site-packages = true/" "$cfg_file"
        fi
    else
        act "$PYTHON" -m venv "${venv_opts[@]}" "$(R "$VENV")"
    fi
    # A pruned venv has no pip (step 4's end): put it back from the interpreter's
    # own bundled wheel (offline), update, then prune again.
    if [[ -x $PY ]] && ! "$PY" -m pip --version >/dev/null 2>&1; then
        act "$PY" -m ensurepip --upgrade --default-pip
    fi
    # systemd-python from Debian's python3-systemd: no compiler (a no-op with a note without it).
    act bash "$SRC/provisioning/link-systemd.sh" "$(R "$VENV")"
    [[ -n $WHEELS ]] || act "$PY" -m pip install "${pip_opts[@]}" --upgrade pip
    act "$PY" -m pip install "${pip_opts[@]}" -r "$SRC/requirements/runtime.txt"
    # mediapipe without its dependencies: they would add opencv-contrib (overwriting
    # the headless cv2) and sounddevice; requirements/runtime.txt has what it imports.
    act "$PY" -m pip install "${pip_opts[@]}" --no-deps -r "$SRC/requirements/mediapipe.txt"
    # The project itself, not editable: the checkout can be deleted afterwards.
    act "$PY" -m pip install "${pip_opts[@]}" --no-deps --force-reinstall "${PROJECT:-$SRC}"
    # Cut what the runtime never opens (measured: benchmarks/venv_usage.py), each
    # path with its reason in provisioning/prune-manifest.toml; report in the venv.
    if ((NO_PRUNE)); then
        note "not pruned (--no-prune)"
    elif [[ -f $SRC/provisioning/prune_venv.py ]]; then
        act "$PY" "$SRC/provisioning/prune_venv.py" "$(R "$VENV")"
    else
        note "no provisioning/prune_venv.py in $SRC: venv not pruned"
    fi
fi
MICROEXPR=$(R "$VENV")/bin/microexpr
if ((!SKIP_VENV)); then
    # On PATH for the admin (the "Next:" line and docs/deployment.md run `microexpr`).
    # The link names the path inside the installed system, not the scratch root.
    link=$(R "$BIN_LINK")
    if [[ -L $link && $(readlink "$link") == "$VENV/bin/microexpr" ]]; then
        note "already linked: $link -> $VENV/bin/microexpr"
    elif [[ -e $link && ! -L $link ]]; then
        note "warning: $link exists and is not a link: left alone; run $VENV/bin/microexpr"
    else
        [[ -d $(dirname "$link") ]] || act install -d -m 0755 "$(dirname "$link")"
        act ln -sfn "$VENV/bin/microexpr" "$link"
    fi
fi

# ---------------------------------------------------------------- 5. model

note "5. model into $MODELS"
if ((SKIP_MODEL)); then
    note "skipped (--skip-model)"
else
    provision=("$MICROEXPR" provision-model --dir "$(R "$MODELS")")
    [[ -n $MIRROR ]] && provision+=(--mirror "$MIRROR")
    act "${provision[@]}"
    # A bundle also carries the ONNX backend's files (verified by their pinned manifest).
    [[ -z $BUNDLE ]] || act "$MICROEXPR" provision-model --onnx --source "$SRC/onnx" --dir "$(R "$MODELS")"
    sys chown -R "$APP:$APP" "$(R "$STATE")"
fi

# ---------------------------------------------------------------- 6. config

note "6. configuration $ETC/config.toml"
install_if_absent 0644 "$SRC/provisioning/config.example.toml" "$(R "$ETC/config.toml")" || true
if ((!DRY_RUN)) && [[ -x $MICROEXPR ]]; then
    # Read-only: reports problems, never edits the file. Checked as the unit will
    # run it: its state directory and credentials (inside the root), not root's own.
    if STATE_DIRECTORY="$(R "$STATE")" CREDENTIALS_DIRECTORY="$(R "$CREDS")" \
        "$MICROEXPR" check-config --config "$(R "$ETC/config.toml")" >/dev/null; then
        note "configuration is valid"
    else
        note "warning: $ETC/config.toml has problems (above); the service will refuse to start"
    fi
else
    note "would check: $MICROEXPR check-config --config $(R "$ETC/config.toml")"
fi

# ---------------------------------------------------------------- 7. credentials

note "7. credentials in $CREDS (empty = not set)"
for name in "${SECRETS[@]}"; do
    target=$(R "$CREDS/$name")
    if [[ -e $target ]]; then
        note "kept existing: $target"
    else
        act install -m 0600 /dev/null "$target"
    fi
done

# ---------------------------------------------------------------- 8. unit

note "8. systemd unit"
changed_unit=0
install_if_changed 0644 "$SRC/services/microexpr.service" "$(R "$UNIT_DIR/$APP.service")" && changed_unit=1
# The template for several cameras: microexpr@<instance> reads /etc/microexpr/<instance>.toml.
install_if_changed 0644 "$SRC/services/microexpr@.service" "$(R "$UNIT_DIR/$APP@.service")" && changed_unit=1
if systemd_running; then
    ((changed_unit)) && act systemctl daemon-reload
    act systemctl enable "$APP.service"
elif [[ -n $ROOT ]]; then
    sys systemctl daemon-reload
    sys systemctl enable "$APP.service"
else
    note "systemd is not PID 1 here: run 'systemctl daemon-reload && systemctl enable --now $APP' after boot"
fi

# ---------------------------------------------------------------- 9. broker

if ((WITH_MOSQUITTO)); then
    note "9. local mosquitto broker"
    install_if_absent 0644 "$SRC/services/mosquitto-microexpr.conf" "$(R "$MOSQUITTO_CONF")" || true
    if systemd_running || [[ -n $ROOT ]]; then
        sys systemctl enable mosquitto.service
        sys systemctl restart mosquitto.service
    else
        note "systemd is not PID 1 here: start mosquitto yourself"
    fi
fi

# ---------------------------------------------------------------- 10. release (bundles)

[[ -z $BUNDLE ]] || bundle_activate

# ---------------------------------------------------------------- start

if ((START)); then
    if systemd_running; then
        act systemctl restart "$APP.service"
    else
        note "--start: systemd is not PID 1 here, not starting"
    fi
fi

note "done. Next: edit $ETC/config.toml (source.uri, mqtt.host), put secrets in $CREDS/, then"
note "  microexpr check-config --config $ETC/config.toml --as-service && systemctl restart $APP"

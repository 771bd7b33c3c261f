# shellcheck shell=bash
# Release bundles for provisioning/install.sh: --bundle FILE and --rollback.
#
# Sourced by install.sh (it uses its R, act, sys, note, fail helpers and its
# ROOT, PREFIX, STATE, PYTHON, DRY_RUN variables). Layout under /opt/microexpr:
#
#   releases/<version>-<manifest hash>/   one folder per installed release:
#       venv/                             built offline from the bundle's wheels
#       bundle.json, MANIFEST.sha256, services/, provisioning/, requirements/
#   current  -> releases/<...>            the running release
#   previous -> releases/<...>            what --rollback goes back to
#   venv     -> current/venv              what the units' ExecStart= names
#
# Everything is checked before anything is changed: the archive reads to its
# end (a truncated file fails here), every file matches MANIFEST.sha256 and
# nothing unlisted is present, the bundle and every wheel are for this
# machine's architecture and Python, and every queue file already in
# /var/lib/microexpr (outboxes, reasoner queues) has a layout this release
# reads. A failure is one line and an exit code (docs/deployment.md):
#   65 truncated, corrupt, unlisted file or hash mismatch
#   66 the bundle file (or, for --rollback, a previous release) does not exist
#   78 wrong architecture or Python, or an outbox this release cannot read
# The new release becomes `current` only after every install step succeeded;
# a failed install removes its half-built release folder. The outbox and the
# state folders are never written by the installer.

BUNDLE_TMP=""

bundle_cleanup() {
    [[ -z $BUNDLE_TMP ]] || rm -rf "$BUNDLE_TMP"
}

# bundle_json DIR KEY: one value of DIR/bundle.json (lists joined by spaces).
bundle_json() {
    "$PYTHON" - "$1/bundle.json" "$2" <<'PY'
import json, sys
value = json.load(open(sys.argv[1], encoding="utf-8"))[sys.argv[2]]
print(" ".join(map(str, value)) if isinstance(value, list) else value)
PY
}

# bundle_check_outboxes LAYOUTS WHAT: every queue file under the state folder
# has a layout in LAYOUTS (space-separated), or fail 78.
bundle_check_outboxes() {
    local layouts=$1 what=$2 state
    state=$(R "$STATE")
    [[ -d $state ]] || return 0
    local problem
    problem=$("$PYTHON" - "$state" "$layouts" <<'PY'
import sys
from pathlib import Path
# The layout is PRAGMA user_version: 4 bytes big-endian at offset 60 of the
# file header. Read without SQLite, so checking creates no -wal/-shm file.
state, readable = Path(sys.argv[1]), {int(n) for n in sys.argv[2].split()}
for path in sorted([*state.glob("*.sqlite*"), *state.glob("*/*.sqlite*")]):
    if path.name.endswith(("-wal", "-shm", "-journal")) or not path.is_file():
        continue
    with path.open("rb") as f:
        header = f.read(100)
    if not header:  # an empty file is an empty database
        continue
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        print(f"{path}: not an SQLite queue file")
        break
    layout = int.from_bytes(header[60:64], "big")
    if layout and layout not in readable:
        print(f"{path} has queue layout {layout}; this release reads {sorted(readable)}")
        break
PY
)
    [[ -z $problem ]] || fail 78 "$problem: deliver its events with the installed version first ($what refused, nothing changed)"
}

# bundle_prepare FILE: verify and unpack; point the install steps at the bundle.
bundle_prepare() {
    local file=$1
    [[ -f $file ]] || fail 66 "--bundle $file: no such file"
    BUNDLE_TMP=$(mktemp -d "${TMPDIR:-/tmp}/microexpr-bundle.XXXXXX")
    trap 'bundle_exit $?' EXIT
    local err
    if ! err=$(tar -xzf "$file" -C "$BUNDLE_TMP" 2>&1); then
        fail 65 "--bundle $file: truncated or not a bundle ($(echo "$err" | head -n1))"
    fi
    local tops=("$BUNDLE_TMP"/*)
    [[ ${#tops[@]} -eq 1 && -d ${tops[0]} && -f ${tops[0]}/MANIFEST.sha256 && -f ${tops[0]}/bundle.json ]] ||
        fail 65 "--bundle $file: not a microexpr bundle (no single folder with MANIFEST.sha256 and bundle.json)"
    local dir=${tops[0]}
    local bad
    bad=$(cd "$dir" && sha256sum --check --strict --quiet MANIFEST.sha256 2>&1 | head -n1) || true
    [[ -z $bad ]] || fail 65 "--bundle $file: ${bad/: FAILED/: does not match its sha256 in MANIFEST.sha256}"
    local unlisted
    unlisted=$(cd "$dir" && comm -23 <(find . -type f ! -name MANIFEST.sha256 -printf '%P\n' | LC_ALL=C sort) \
        <(sed 's/^[0-9a-f]\{64\}  //' MANIFEST.sha256 | LC_ALL=C sort) | head -n1)
    [[ -z $unlisted ]] || fail 65 "--bundle $file: $unlisted is not in MANIFEST.sha256"

    local arch machine version python here layouts wheel
    arch=$(bundle_json "$dir" arch)
    version=$(bundle_json "$dir" version)
    python=$(bundle_json "$dir" python)
    layouts=$(bundle_json "$dir" outbox_layouts)
    wheel=$(bundle_json "$dir" wheel)
    machine=$(uname -m)
    [[ $arch == "$machine" ]] || fail 78 "--bundle $file is for $arch; this machine is $machine"
    local w tag
    for w in "$dir"/wheels/*.whl; do
        tag=${w%.whl}; tag=${tag##*-}
        [[ $tag == any || $tag == *"_$machine"* ]] ||
            fail 78 "--bundle $file: wheels/$(basename "$w") is for $tag, not $machine"
    done
    here=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [[ $python == "$here" ]] || fail 78 "--bundle $file is for Python $python; $PYTHON is $here"
    [[ -f $dir/wheels/$wheel ]] || fail 65 "--bundle $file: bundle.json names wheels/$wheel, which is missing"
    bundle_check_outboxes "$layouts" "--bundle"

    BUNDLE_DIR=$dir
    BUNDLE_LABEL=$version-$(sha256sum "$dir/MANIFEST.sha256" | cut -c1-12)
    RELEASE=$PREFIX/releases/$BUNDLE_LABEL
    note "bundle $file: microexpr $version for $arch, Python $python, every file verified ($(wc -l <"$dir/MANIFEST.sha256") files)"
    # The install steps below read the bundle instead of a checkout, with no index and no compiler.
    SRC=$dir
    WHEELS=$dir/wheels
    MIRROR=$dir/models
    PROJECT=$dir/wheels/$wheel
    VENV=$RELEASE/venv
    APT_PACKAGES=(python3-venv)
    export PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null
    unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT
    RELEASE_EXISTED=0
    [[ -d $(R "$RELEASE") ]] && RELEASE_EXISTED=1
    BUNDLE_ACTIVE=1
}

# Called on exit: a failed install removes the release folder it was building.
bundle_exit() {
    local code=$1
    if ((code != 0)) && ((${BUNDLE_ACTIVE:-0})) && ((!RELEASE_EXISTED)) && ((!DRY_RUN)) && [[ -n ${RELEASE:-} ]]; then
        rm -rf "$(R "$RELEASE")"
        echo "# install failed: removed the half-built $(R "$RELEASE"); the installed release is unchanged" >&2
    fi
    bundle_cleanup
}

# swap_link TARGET LINK: point LINK at TARGET atomically (rename over the old link).
swap_link() {
    act ln -sfn "$1" "$2.new"
    act mv -Tf "$2.new" "$2"
}

# bundle_units DIR: the release's unit files, replacing outdated copies.
bundle_units() {
    local dir=$1 unit changed=0
    for unit in microexpr.service microexpr@.service; do
        [[ -f $dir/services/$unit ]] || continue
        install_if_changed 0644 "$dir/services/$unit" "$(R "$UNIT_DIR/$unit")" && changed=1
    done
    if systemd_running; then
        ((changed)) && act systemctl daemon-reload
        act systemctl try-restart "$APP.service" "$APP@*.service"
    else
        sys systemctl try-restart "$APP.service" "$APP@*.service"
    fi
}

# bundle_activate: after every install step succeeded, make the release current.
bundle_activate() {
    note "10. release $BUNDLE_LABEL"
    local prefix current old=""
    prefix=$(R "$PREFIX")
    current=$prefix/current
    if ((!DRY_RUN)); then
        install -d -m 0755 "$(R "$RELEASE")"
        cp -a "$BUNDLE_DIR/bundle.json" "$BUNDLE_DIR/MANIFEST.sha256" "$BUNDLE_DIR/services" \
            "$BUNDLE_DIR/provisioning" "$BUNDLE_DIR/requirements" "$(R "$RELEASE")/"
    fi
    [[ -L $current ]] && old=$(readlink "$current")
    if [[ -n $old && $old != "releases/$BUNDLE_LABEL" ]]; then
        swap_link "$old" "$prefix/previous"
    fi
    swap_link "releases/$BUNDLE_LABEL" "$current"
    BUNDLE_ACTIVE=0  # from here on the release is in use: never removed on a later failure
    if [[ -d $prefix/venv && ! -L $prefix/venv ]]; then
        # A venv built from a checkout: kept aside, not a rollback target (it has no bundle.json).
        act mv -T "$prefix/venv" "$prefix/venv.pre-bundle"
    fi
    [[ $(readlink "$prefix/venv" 2>/dev/null) == current/venv ]] || swap_link current/venv "$prefix/venv"
    # Keep the current and the previous release, nothing older.
    local keep_prev="" rel
    [[ -L $prefix/previous ]] && keep_prev=$(basename "$(readlink "$prefix/previous")")
    for rel in "$prefix"/releases/*/; do
        rel=$(basename "$rel")
        [[ $rel == "$BUNDLE_LABEL" || $rel == "$keep_prev" ]] || act rm -rf "$prefix/releases/$rel"
    done
    bundle_units "$(R "$RELEASE")"
    note "current: $BUNDLE_LABEL${keep_prev:+; previous (for --rollback): $keep_prev}"
}

# bundle_rollback: make the previous release current again.
bundle_rollback() {
    local prefix
    prefix=$(R "$PREFIX")
    [[ -L $prefix/previous && -d $prefix/$(readlink "$prefix/previous") ]] ||
        fail 66 "--rollback: no previous release in $prefix (nothing to roll back to)"
    local back now
    back=$(readlink "$prefix/previous")
    now=$(readlink "$prefix/current")
    bundle_check_outboxes "$(bundle_json "$prefix/$back" outbox_layouts)" "--rollback"
    note "rollback: $(basename "$now") -> $(basename "$back")"
    swap_link "$back" "$prefix/current"
    swap_link "$now" "$prefix/previous"
    [[ $(readlink "$prefix/venv" 2>/dev/null) == current/venv ]] || swap_link current/venv "$prefix/venv"
    bundle_units "$prefix/$back"
    note "current: $(basename "$back"); previous: $(basename "$now") (--rollback again to return)"
}

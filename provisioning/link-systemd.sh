#!/usr/bin/env bash
# Make Debian's prebuilt systemd-python (package python3-systemd) visible to a
# venv, so the `systemd-python` requirement is met without a compiler.
#
# systemd-python is published only as source: pip would build it with gcc,
# python3-dev, pkg-config and libsystemd-dev on every device. Debian and
# Raspberry Pi OS ship it built for their python3; this links that package
# (code and metadata) into the venv's site-packages, so `import systemd` works
# and pip sees systemd-python as installed. Nothing else of the system's
# site-packages becomes visible.
#
# Usage: link-systemd.sh VENV. Exits 0 without linking, with a note, when the
# Debian package is not installed or does not import in this venv's Python
# (then pip builds systemd-python from source, which needs the compiler
# packages; the daemon itself needs neither: device/microexpr/journal.py).
set -euo pipefail
venv=${1:?usage: link-systemd.sh VENV}
dist=${MICROEXPR_SYSTEM_SITE:-/usr/lib/python3/dist-packages}
py=$venv/bin/python
[[ -x $py ]] || { echo "link-systemd: $py: no such interpreter" >&2; exit 66; }
shopt -s nullglob
meta=("$dist"/systemd_python-*.egg-info "$dist"/systemd_python-*.dist-info)
if [[ ! -f $dist/systemd/journal.py || ${#meta[@]} -eq 0 ]]; then
    echo "link-systemd: Debian's python3-systemd is not installed: not linked" >&2
    exit 0
fi
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn "$dist/systemd" "$site/systemd"
for m in "${meta[@]}"; do ln -sfn "$m" "$site/$(basename "$m")"; done
if ! "$py" -c 'import systemd.journal, systemd.daemon' 2>/dev/null; then
    rm -f "$site/systemd"
    for m in "${meta[@]}"; do rm -f "$site/$(basename "$m")"; done
    echo "link-systemd: $dist/systemd does not import in $py (another Python version?): not linked" >&2
    exit 0
fi
echo "link-systemd: systemd-python from $dist linked into $site"

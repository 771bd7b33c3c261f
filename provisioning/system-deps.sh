#!/usr/bin/env bash
# Debian / Raspberry Pi OS packages the venv build needs: python3-venv, and
# python3-systemd (Debian's prebuilt systemd-python, linked into the venv by
# provisioning/link-systemd.sh). No compiler: every other Python package
# installs from a wheel. Installs them when run as root (or with passwordless sudo),
# otherwise names what is missing and stops. With --test it also installs
# what the test suite runs for real: mosquitto (the broker the fixtures start
# on loopback), systemd (systemd-analyze checks the unit files), chromium
# (headless, for the status page test) and ffmpeg (H.264, the codec IP cameras
# stream, for the spotting-through-codecs tests).
set -euo pipefail
missing=()
if [[ ${1:-} == --test ]]; then
    command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # headless: the status page test (tests/test_status.py)
    command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)  # libx264: real pixels through H.264 (tests/test_spotting_codecs.py)
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
[[ -f /usr/lib/python3/dist-packages/systemd/journal.py ]] || missing+=(python3-systemd)
# mediapipe's libmediapipe.so links libEGL.so.1 and libGLESv2.so.2 even for
# CPU inference (x86_64 and aarch64 wheels alike); a minimal bookworm or
# Raspberry Pi OS Lite lacks them (found by provisioning/arm64-check.sh).
ldconfig -p 2>/dev/null | grep -q 'libEGL\.so\.1 ' || missing+=(libegl1)
ldconfig -p 2>/dev/null | grep -q 'libGLESv2\.so\.2 ' || missing+=(libgles2)
if [[ ${1:-} == --test ]]; then
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # tests: throwaway CA for the TLS broker
fi
((${#missing[@]})) || exit 0
if [[ $(id -u) -eq 0 ]]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else
    echo "microexpr: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

#!/bin/bash
# run10.sh LABEL [qemu args...]: same as run.sh, the python started by qemu 10.0.2 explicitly
R=/var/tmp/microexpr-arm64; label=$1; shift
start=$(date +%s)
timeout 900 nice -n 19 chroot $R /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 \
  /usr/local/bin/qemu10-aarch64 "$@" /work/microexpr/.venv/bin/python /work/diag/mp_create.py /var/lib/microexpr/models/face_landmarker/float16-1/face_landmarker.task /work/diag/single_face.jpg \
  > /work/arm-logs/diag/$label.log 2>&1
rc=$?
echo "rc=$rc secs=$(( $(date +%s) - start )) qemu10 args=$*" >> /work/arm-logs/diag/$label.log

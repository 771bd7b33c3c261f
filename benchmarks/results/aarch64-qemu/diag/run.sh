#!/bin/bash
# run.sh LABEL [ENV=VAL ...] -- runs the minimal create script in the root, logs to diag/LABEL.log
R=/var/tmp/microexpr-arm64; label=$1; shift
envs=("$@")
start=$(date +%s)
timeout 900 nice -n 19 chroot $R /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 "${envs[@]}" \
  /work/microexpr/.venv/bin/python /work/diag/mp_create.py /var/lib/microexpr/models/face_landmarker/float16-1/face_landmarker.task /work/diag/single_face.jpg \
  > /work/arm-logs/diag/$label.log 2>&1
rc=$?
echo "rc=$rc secs=$(( $(date +%s) - start )) env=${envs[*]}" >> /work/arm-logs/diag/$label.log
tail -3 /work/arm-logs/diag/$label.log

"""Defaults chosen by core count: the Raspberry Pi profile.

The settings that depend on how many cores the board has, in one place, with
the reasoning (docs/benchmarks.md "Pi profile"):

* ``overlap`` (``tracker.overlap``): the tracker on one thread and the
  analysis (AUs, motion, baseline, spotter) on another. It pays only with a
  second core; on one core the two threads take turns and add a hand-over,
  so it is off there.
* ``tracker_threads`` (``tracker.threads`` when left at 0, for the ONNX
  backend; MediaPipe's graph sizes its own pool): the tracker may use the
  cores the analysis thread and the capture/publish threads do not. On a
  Pi 4/5 (4 cores) that is 2: one core for the analysis thread, one for
  capture, MQTT and the OS. On 2 cores, 1.
* ``opencv_threads``: OpenCV's thread pool for the analysis (the dense
  flow, the crops' warps, the colour conversions). 1 on every board: those
  calls work on a 150x170-pixel crop, too small for a pool to pay; its
  workers wait for work by spinning, on the cores the tracker's own pool
  needs. Measured on the 2-core x86 (docs/benchmarks.md): the flow's DIS
  call costs 2.9 ms of process CPU alone against 3.3 ms with the default
  pool of 2 (but 2.9 ms of wall time instead of 1.7), and a face at rest 1.13-1.15x
  the bare tracker against 1.17-1.19x. The flow's wall time grows, but with
  ``overlap`` the analysis runs beside the tracker, which takes longer.
* ``idle_stride`` (``activity.ActivityConfig``): at rest the dense flow
  runs on one frame in this many (growing to ``quiet_stride``, 10, while the
  face stays quiet). Deliberately the same on every board (3): what the
  pipeline computes, and so what it spots, must not depend on the machine
  (the arm64 check compares boards frame by frame).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CoreProfile:
    cores: int
    overlap: bool
    tracker_threads: int
    idle_stride: int
    opencv_threads: int = 1


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, as systemd's
    ``CPUAffinity=`` or a container sets it), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def profile_for(cores: int | None = None) -> CoreProfile:
    """The profile for ``cores`` (default: the cores available here)."""
    n = available_cores() if cores is None else max(1, int(cores))
    if n == 1:
        return CoreProfile(n, overlap=False, tracker_threads=1, idle_stride=3)
    if n < 4:
        return CoreProfile(n, overlap=True, tracker_threads=1, idle_stride=3)
    return CoreProfile(n, overlap=True, tracker_threads=min(n - 2, 4), idle_stride=3)


def apply_opencv_threads(profile: CoreProfile | None = None) -> int:
    """Size OpenCV's thread pool (process-wide) for the profile; returns the
    count. Called where a pipeline is built: its analysis is what OpenCV
    runs in this process."""
    import cv2

    n = (profile or profile_for()).opencv_threads
    if cv2.getNumThreads() != n:
        cv2.setNumThreads(n)
    return n


#: What a Raspberry Pi 4 or 5 (4 Cortex-A72 / A76 cores) gets.
PI_4_5 = profile_for(4)


def bench_note(cores: int | None = None) -> list[str]:
    """What ``make bench`` prints for a Raspberry Pi 4/5 user (markdown lines)."""
    here = profile_for(cores)
    return [
        "",
        f"Profile here ({here.cores} cores): tracker.overlap = {str(here.overlap).lower()}, "
        f"ONNX tracker threads {here.tracker_threads}, OpenCV threads {here.opencv_threads}, dense flow at rest on 1 frame in {here.idle_stride} "
        "(up to 1 in 10 while the face stays quiet). "
        f"A Pi 4/5 ({PI_4_5.cores} cores) gets overlap = {str(PI_4_5.overlap).lower()}, "
        f"{PI_4_5.tracker_threads} tracker threads, the same flow schedule (cores.py).",
        "On a Pi 4/5 compare these ratios (not milliseconds) with the recorded x86 run: "
        "stream_overlap_vs_bare_p50 and clip_stream_overlap_vs_bare_p50 (the whole clip, in whole passes and in "
        "turns; goal ≤ 1.10), still_stream_overlap_vs_bare_p50 (≤ 1.05), rest_stream_overlap_vs_bare_p50, "
        "rest_cpu_vs_bare_mean and still_cpu_vs_bare_mean (≤ 1.15; the clip's resting frames sway, the still "
        "face does not), rest_flow_share, still_flow_share and expression_flow_share, "
        "and the bare MediaPipe p50 itself: above 33 ms the board cannot keep 30 fps whatever the pipeline does.",
    ]

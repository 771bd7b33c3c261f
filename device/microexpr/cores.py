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
* ``idle_stride`` (``activity.ActivityConfig``): at rest the dense flow
  runs on one frame in this many (growing to ``quiet_stride``, 6, while the
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


#: What a Raspberry Pi 4 or 5 (4 Cortex-A72 / A76 cores) gets.
PI_4_5 = profile_for(4)


def bench_note(cores: int | None = None) -> list[str]:
    """What ``make bench`` prints for a Raspberry Pi 4/5 user (markdown lines)."""
    here = profile_for(cores)
    return [
        "",
        f"Profile here ({here.cores} cores): tracker.overlap = {str(here.overlap).lower()}, "
        f"ONNX tracker threads {here.tracker_threads}, dense flow at rest on 1 frame in {here.idle_stride} "
        "(up to 1 in 6 while the face stays quiet). "
        f"A Pi 4/5 ({PI_4_5.cores} cores) gets overlap = {str(PI_4_5.overlap).lower()}, "
        f"{PI_4_5.tracker_threads} tracker threads, the same flow schedule (cores.py).",
        "On a Pi 4/5 compare these ratios (not milliseconds) with the recorded x86 run: "
        "stream_overlap_vs_bare_p50 (goal ≤ 1.10), rest_stream_overlap_vs_bare_p50 (≤ 1.05), "
        "rest_cpu_vs_bare_mean (≤ 1.15), rest_flow_share and expression_flow_share, "
        "and the bare MediaPipe p50 itself: above 33 ms the board cannot keep 30 fps whatever the pipeline does.",
    ]

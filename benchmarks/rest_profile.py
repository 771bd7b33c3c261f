#!/usr/bin/env python3
"""Where a face at rest costs: thread CPU of each pipeline stage, where it runs.

The rest regime of ``microexpr bench`` (the clip's frames before its first
spotted onset, played forward and back; a warm-up the baseline learns on,
then the measured stretch), with every stage's method wrapped by a
``time.thread_time_ns`` pair: CPU time of the calling thread, which the
other jobs on a shared machine do not inflate the way they inflate wall
time. The tracker and the bare MediaPipe call (the bench's denominator) are
timed in separate passes over the same frames, with process CPU (MediaPipe
runs its own threads).

Usage (the still-face clip of bench-activity-idle.md)::

    PYTHONPATH=$PWD/device .venv/bin/python benchmarks/rest_profile.py --source CLIP.mp4 [--rest-s 6]

Prints milliseconds per measured frame, stage by stage (a stage's calls
that run on a later frame, e.g. the ring buffer's, count where they run).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "device"))

import numpy as np  # noqa: E402

from microexpr.bench_activity import STILL_WARMUP_S  # noqa: E402

TOTALS: dict[str, int] = defaultdict(int)


def _wrap(owner: Any, name: str, key: str) -> None:
    inner: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time_ns()
        try:
            return inner(*args, **kwargs)
        finally:
            TOTALS[key] += time.thread_time_ns() - t0

    setattr(owner, name, timed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--warmup-s", type=float, default=STILL_WARMUP_S,
                    help="unmeasured seconds first (default: the bench's still-face warm-up: the baseline at its "
                         "sample cap, as on an idle day)")
    ap.add_argument("--rest-s", type=float, default=6.0)
    ap.add_argument("--interleaved", type=int, default=2, metavar="PASSES",
                    help="then this many passes of the whole pipeline and the bare call alternating frame by "
                         "frame (process CPU; load changes hit both alike); 0 skips them")
    args = ap.parse_args(argv)

    import microexpr.activity as activity
    import microexpr.aus as aus
    import microexpr.baseline as baseline
    import microexpr.motion as motion
    import microexpr.pipeline as pipeline
    import microexpr.spotting as spotting
    from microexpr.bench import _BareMediaPipe, load_frames
    from microexpr.bench_activity import _ping_pong, _retimed
    from microexpr.models import resolve_model_path

    stages = [
        (aus.AUEstimator, "estimate", "AU estimation"),
        (pipeline._InputWatch, "observe", "repeated-frame check"),
        (activity.ActivityGate, "decide", "activity gate"),
        (motion.MotionAnalyzer, "process", "dense flow"),
        (baseline.SubjectBaseline, "update", "baseline"),
        (baseline._RobustStats, "refresh", "  of which median/MAD refresh"),
        (spotting.Spotter, "update", "spotter"),
    ]
    for owner, name, key in stages:
        _wrap(owner, name, key)
    inner_active = pipeline.active_aus

    def active_aus(*a: Any, **k: Any) -> Any:
        t0 = time.thread_time_ns()
        try:
            return inner_active(*a, **k)
        finally:
            TOTALS["context (active_aus)"] += time.thread_time_ns() - t0

    pipeline.active_aus = active_aus

    frames = load_frames(args.source)
    model = resolve_model_path()
    with pipeline.Pipeline.create(model_path=model) as probe:
        onsets = [e.episode.onset_frame for f in frames for e in probe.process(f).episodes]
        onsets += [e.episode.onset_frame for e in probe.finish()]
    first = min(onsets, default=len(frames))
    lo, hi = min(5, len(frames) // 4), max(first - 3, 2)
    rest = list(frames[lo:hi]) if hi - lo >= 2 else list(frames[:2])
    step = float(np.median(np.diff([f.timestamp for f in frames]))) if len(frames) > 1 else 1 / 30
    n_warm, n_rest = round(args.warmup_s / step), round(args.rest_s / step)
    seq = _retimed(_ping_pong(rest, n_warm + n_rest), 0.0, step, 0)

    with pipeline.Pipeline.create(model_path=model) as p:
        obs = [p.track(f) for f in seq]
        total = 0
        for k, (f, o) in enumerate(zip(seq, obs)):
            if k == n_warm:
                TOTALS.clear()
            t0 = time.thread_time_ns()
            p.analyse(f, o)
            if k >= n_warm:
                total += time.thread_time_ns() - t0
        flow = (p.flow_ran, p.flow_skipped, p.flow_backfilled)
    per_frame = {k: v / 1e6 / n_rest for k, v in TOTALS.items()}
    tracker_cpu, bare_cpu = [], []
    with pipeline.Pipeline.create(model_path=model) as p:
        for f in seq:
            c0 = time.process_time()
            p.track(f)
            tracker_cpu.append(time.process_time() - c0)
    bare = _BareMediaPipe(model)
    try:
        for f in seq:
            c0 = time.process_time()
            bare.time_frame(f, 0.0)
            bare_cpu.append(time.process_time() - c0)
    finally:
        bare.close()
    t_ms, b_ms = 1e3 * float(np.mean(tracker_cpu[n_warm:])), 1e3 * float(np.mean(bare_cpu[n_warm:]))
    print(f"{args.source.name}: {len(rest)} resting frames played back and forth, {n_warm} warm-up + {n_rest} "
          f"measured; flow ran / skipped / backfilled (whole run): {flow[0]} / {flow[1]} / {flow[2]}")
    print(f"tracker {t_ms:.3f} ms vs bare MediaPipe call {b_ms:.3f} ms process CPU per frame ({t_ms / b_ms:.3f}x)")
    print("| stage at rest | thread CPU ms per frame |")
    print("|---|---|")
    for _owner, _name, key in stages:
        print(f"| {key} | {per_frame.get(key, 0.0):.3f} |")
    print(f"| context (active_aus) | {per_frame.get('context (active_aus)', 0.0):.3f} |")
    print(f"| **analysis after the tracker, all of it** | **{total / 1e6 / n_rest:.3f}** |")
    print(f"estimate: (tracker + analysis) / bare = {(t_ms + total / 1e6 / n_rest) / b_ms:.3f}")
    if args.interleaved > 0:
        # the bench's rest regime, but Pipeline.process and the bare call on
        # each frame in turn (the bench runs them in separate passes)
        ratios = []
        bare = _BareMediaPipe(model)
        try:
            with pipeline.Pipeline.create(model_path=model) as p:
                t_next = 0.0
                for _ in range(args.interleaved):
                    run = _retimed(_ping_pong(rest, n_warm + n_rest), t_next, step, round(t_next / step))
                    t_next += (n_warm + n_rest + 30) * step
                    pipe_cpu, bare_cpu = [], []
                    for k, f in enumerate(run):
                        c0 = time.process_time()
                        p.process(f)
                        c1 = time.process_time()
                        bare.time_frame(f, 0.0)
                        c2 = time.process_time()
                        if k >= n_warm:
                            pipe_cpu.append(c1 - c0)
                            bare_cpu.append(c2 - c1)
                    p.reset()
                    ratios.append(float(np.mean(pipe_cpu) / np.mean(bare_cpu)))
                    print(f"interleaved pass: pipeline {1e3 * np.mean(pipe_cpu):.3f} ms, bare {1e3 * np.mean(bare_cpu):.3f} ms "
                          f"process CPU per resting frame, ratio {ratios[-1]:.3f}")
        finally:
            bare.close()
        print(f"interleaved rest CPU / bare: {' '.join(f'{r:.3f}' for r in ratios)} (mean {np.mean(ratios):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

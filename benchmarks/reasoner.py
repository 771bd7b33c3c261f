#!/usr/bin/env python3
"""Does a slow or busy LLM API slow the camera loop? Per-frame cost, idle vs loaded.

The inference loop's only contact with the reasoner is ``Reasoner.submit()``
for each ambiguous episode. This benchmark runs a frame loop on the real
face clip and compares, in the same run and interleaved so a noisy shared
machine hits both alike:

* **idle**: the reasoner is enabled and running with an empty queue; the
  loop submits nothing;
* **loaded**: a burst of ambiguous episodes (one every ``--every`` frames)
  is submitted while the API (a local OpenAI-compatible HTTP server) takes
  ``--api-delay`` seconds per answer, so the queue grows and a worker is
  always inside a request.

Per frame the loop runs the real engine on the real clip's pixels
(``microexpr.pipeline.Pipeline.process``: MediaPipe tracker, AUs, motion,
baseline, spotter, classifier; without that module, the tracker and the AU
estimator) plus the submit on burst frames. The burst episodes are the
documented sample episode with jittered intensities: the clip holds one macro
smile, not a burst of ambiguous micro-expressions. With ``--submit-only``
the frame work is skipped and only the submit path is timed.

Also reported: ``submit()`` latency percentiles in the loaded blocks and,
as a reference, for the same burst into a reasoner whose (fast) API drains
the queue as it fills.

Usage::

    .venv/bin/python benchmarks/reasoner.py                 # ~1 min on 2 cores
    .venv/bin/python benchmarks/reasoner.py --quick
    .venv/bin/python benchmarks/reasoner.py --submit-only

Writes ``benchmarks/results/reasoner/reasoner.json`` and ``reasoner.md``.
Target (issue 6): loaded / idle per-frame ratio ≤ 1.05.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "device"))
sys.path.insert(0, str(ROOT / "tests"))

from fixtures.openai_server import OpenAIServer, Reply  # noqa: E402
from microexpr.facs import AU  # noqa: E402
from microexpr.reasoner import Reasoner, ReasonerSettings, SubmitOutcome  # noqa: E402
from microexpr.reasoner.sample import sample_decision, sample_episode  # noqa: E402
from microexpr.spotting import Episode  # noqa: E402

SHARED = Path(os.environ.get("MICROEXPR_SHARED", ROOT.parent / "shared"))
CLIP = SHARED / "data" / "media" / "single_face.mp4"
MODEL = SHARED / "models" / "face_landmarker.task"
OUT = ROOT / "benchmarks" / "results" / "reasoner"
TARGET_RATIO = 1.05


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000.0 for v in values]
    return {
        "n": len(ms),
        "mean": statistics.fmean(ms) if ms else float("nan"),
        "p50": pct(ms, 0.50),
        "p95": pct(ms, 0.95),
        "p99": pct(ms, 0.99),
        "max": max(ms) if ms else float("nan"),
    }


class FrameWork:
    """One frame of the inference loop on the real clip, looped with
    increasing timestamps (VIDEO mode needs them): the whole engine
    (``microexpr.pipeline.Pipeline``: tracker → AUs → motion → baseline →
    spotter → classifier) when that module exists, else the tracker and the
    AU estimator."""

    def __init__(self, *, use_pipeline: bool = True) -> None:
        from microexpr.capture import Frame, open_source

        self._frame_type = Frame
        with open_source(CLIP) as source:
            self._images = [frame.image for frame in source]
        self._index = 0
        self.pipeline = None
        size = f"{len(self._images)} frames, {self._images[0].shape[1]}x{self._images[0].shape[0]}, looped"
        if use_pipeline and importlib.util.find_spec("microexpr.pipeline") is not None:
            from microexpr.pipeline import Pipeline

            self.pipeline = Pipeline.create(model_path=MODEL)
            self.description = f"the full engine (microexpr.pipeline.Pipeline.process) on {CLIP.name} ({size})"
        else:
            from microexpr.aus import AUEstimator
            from microexpr.tracking import create_tracker

            self._tracker = create_tracker(model_path=MODEL)
            self._estimator = AUEstimator()
            self.description = f"MediaPipe FaceLandmarker + AUEstimator on {CLIP.name} ({size})"

    def __call__(self) -> None:
        image = self._images[self._index % len(self._images)]
        frame = self._frame_type(index=self._index, timestamp=self._index / 30.0, image=image)
        self._index += 1
        if self.pipeline is not None:
            self.pipeline.process(frame)
        else:
            self._estimator.estimate(self._tracker.process(frame))

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
        else:
            self._tracker.close()


def varied_episode(rng: random.Random) -> Episode:
    """The documented sample episode with its intensities jittered, so each
    burst episode has its own cache signature (the worker must ask the API)."""
    base = sample_episode()
    apex = {au: min(1.0, v + rng.uniform(0.0, 0.5)) for au, v in base.apex_intensity.items()}
    acts = tuple(replace(a, intensity=apex.get(AU(a.au), a.intensity)) for a in base.activations)
    return replace(base, apex_intensity=apex, activations=acts)


def run_block(
    frames: int, work: FrameWork | None, reasoner: Reasoner | None, every: int, rng: random.Random
) -> tuple[list[float], list[float]]:
    """Per-frame seconds and per-submit seconds of one block."""
    decision = sample_decision()
    per_frame: list[float] = []
    per_submit: list[float] = []
    for index in range(frames):
        episode = varied_episode(rng) if reasoner is not None and index % every == 0 else None
        event_id = str(uuid.uuid4())
        start = time.perf_counter()
        if work is not None:
            work()
        if episode is not None:
            assert reasoner is not None
            s0 = time.perf_counter()
            outcome = reasoner.submit(event_id, episode, decision)
            per_submit.append(time.perf_counter() - s0)
            if outcome is not SubmitOutcome.QUEUED:
                raise SystemExit(f"submit returned {outcome}")
        per_frame.append(time.perf_counter() - start)
    return per_frame, per_submit


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
        "note": "shared development machine (2 cores, several engineers' jobs running)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="interleaved idle/loaded block pairs")
    parser.add_argument("--frames", type=int, default=144,
                        help="frames per block (a multiple of the clip's 72 so every block sees the same content)")
    parser.add_argument("--every", type=int, default=5, help="an ambiguous episode every N frames when loaded")
    parser.add_argument("--api-delay", type=float, default=2.0, help="seconds the local API takes per answer")
    parser.add_argument("--submit-only", action="store_true", help="no frame work: time the submit path alone")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="frame work = tracker + AU estimator even when microexpr.pipeline exists")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 60 frames")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.frames = 2, 72

    work: FrameWork | None = None
    if not args.submit_only:
        if not MODEL.is_file() or not CLIP.is_file():
            print(f"model or clip missing under {SHARED}; use --submit-only", file=sys.stderr)
            return 66
        work = FrameWork(use_pipeline=not args.no_pipeline)
    frame_work = "none (submit path alone)" if work is None else work.description
    pipeline_exists = importlib.util.find_spec("microexpr.pipeline") is not None
    pipeline_used = work is not None and work.pipeline is not None

    rng = random.Random(6)
    idle_frames: list[float] = []
    loaded_frames: list[float] = []
    loaded_submits: list[float] = []
    idle_submits: list[float] = []
    round_ratios: list[float] = []
    max_depth = 0
    with tempfile.TemporaryDirectory() as tmp, OpenAIServer() as slow, OpenAIServer() as fast:
        slow.default = Reply.answer().slow(args.api_delay)
        fast.default = Reply.answer()
        base = ReasonerSettings(enabled=True, timeout_s=args.api_delay + 10, queue_path=Path(tmp) / "idle.sqlite3")
        idle = Reasoner(replace(base, base_url=fast.base_url), api_key="bench").start()
        if work is not None:
            for _ in range(30):  # warm-up: the tracker's first frames are slower
                work()
        try:
            for round_no in range(args.rounds):
                # Alternate which condition goes first, so drifts in machine load hit both alike.
                first_loaded = round_no % 2 == 1
                frames_a: list[float] = []
                frames_b: list[float] = []
                for loaded_turn in ((True, False) if first_loaded else (False, True)):
                    if not loaded_turn:
                        # idle: the reasoner is running with nothing to do; nothing submitted
                        frames_a, _ = run_block(args.frames, work, None, args.every, rng)
                        continue
                    # loaded: a fresh reasoner, the slow API, a burst of ambiguous episodes
                    loaded = Reasoner(
                        replace(base, base_url=slow.base_url, queue_path=Path(tmp) / f"loaded{round_no}.sqlite3"),
                        api_key="bench",
                    ).start()
                    frames_b, submits_b = run_block(args.frames, work, loaded, args.every, rng)
                    max_depth = max(max_depth, loaded.queue_depth)
                    loaded.close(timeout=args.api_delay + 5)  # joins its worker (it is in a request)
                    loaded_submits += submits_b
                # reference: the same burst into a reasoner whose fast API drains the queue
                _, submits_fast = run_block(args.frames, work, idle, args.every, rng)
                idle_submits += submits_fast
                idle_frames += frames_a
                loaded_frames += frames_b
                round_ratios.append(statistics.median(frames_b) / statistics.median(frames_a))
                print(f"round {round_no + 1}/{args.rounds}: idle p50 {statistics.median(frames_a) * 1e3:.3f} ms, "
                      f"loaded p50 {statistics.median(frames_b) * 1e3:.3f} ms", file=sys.stderr)
        finally:
            idle.close()
            if work is not None:
                work.close()
        slow_requests = len(slow.chat_requests())

    idle_s = summary_ms(idle_frames)
    loaded_s = summary_ms(loaded_frames)
    result = {
        "benchmark": "reasoner: per-frame cost with the reasoner idle vs a slow API under a burst",
        "machine": machine(),
        "settings": {
            "rounds": args.rounds,
            "frames_per_block": args.frames,
            "ambiguous_every_n_frames": args.every,
            "api_delay_s": args.api_delay,
            "concurrency": 1,
        },
        "frame_work": frame_work,
        "full_pipeline_used": pipeline_used,
        "pipeline_module_present": pipeline_exists,
        "per_frame_ms": {"idle": idle_s, "loaded": loaded_s},
        "ratio_loaded_over_idle": {
            "p50": loaded_s["p50"] / idle_s["p50"],
            "mean": loaded_s["mean"] / idle_s["mean"],
            "p95": loaded_s["p95"] / idle_s["p95"],
            "per_round_p50": round_ratios,
            "median_of_round_ratios": statistics.median(round_ratios),
        },
        "submit_ms": {"loaded_slow_api": summary_ms(loaded_submits), "fast_api": summary_ms(idle_submits)},
        "slow_api_requests_received": slow_requests,
        "max_queue_depth_in_a_loaded_block": max_depth,
        "target_ratio": TARGET_RATIO,
    }
    result["meets_target"] = result["ratio_loaded_over_idle"]["p50"] <= TARGET_RATIO
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reasoner.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "reasoner.md").write_text(render_markdown(result))
    print(render_markdown(result))
    return 0


def render_markdown(r: dict[str, Any]) -> str:
    idle, loaded = r["per_frame_ms"]["idle"], r["per_frame_ms"]["loaded"]
    ratio = r["ratio_loaded_over_idle"]
    sub_l, sub_i = r["submit_ms"]["loaded_slow_api"], r["submit_ms"]["fast_api"]
    m = r["machine"]
    s = r["settings"]
    lines = [
        "# Reasoner: camera-loop cost, idle vs slow API under a burst",
        "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, Python {m['python']}, load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])} ({m['note']}).",
        "",
        f"Frame work: {r['frame_work']}, plus `Reasoner.submit()` on burst frames. "
        + ("The burst episodes are the documented sample episode with jittered intensities (the clip holds one "
           "macro smile, not a burst of ambiguous micro-expressions)."
           if r["full_pipeline_used"] else
           f"The full pipeline (`microexpr.pipeline`) was "
           f"{'present but not used' if r['pipeline_module_present'] else 'not available'}."),
        "",
        f"{s['rounds']} interleaved rounds of {s['frames_per_block']} frames per condition; loaded = one ambiguous "
        f"episode every {s['ambiguous_every_n_frames']} frames while the local API takes {s['api_delay_s']} s per "
        f"answer ({r['slow_api_requests_received']} requests reached it; queue depth up to "
        f"{r['max_queue_depth_in_a_loaded_block']}).",
        "",
        "| per frame (ms) | mean | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|",
        f"| reasoner idle | {idle['mean']:.3f} | {idle['p50']:.3f} | {idle['p95']:.3f} | {idle['p99']:.3f} | {idle['max']:.3f} |",
        f"| slow API + burst | {loaded['mean']:.3f} | {loaded['p50']:.3f} | {loaded['p95']:.3f} | {loaded['p99']:.3f} | {loaded['max']:.3f} |",
        "",
        f"**Ratio loaded / idle: p50 {ratio['p50']:.3f}, mean {ratio['mean']:.3f}, p95 {ratio['p95']:.3f}** "
        f"(per-round p50 ratios: {', '.join(f'{x:.3f}' for x in ratio['per_round_p50'])}; their median "
        f"{ratio['median_of_round_ratios']:.3f}); "
        f"target ≤ {r['target_ratio']} on p50: {'met' if r['meets_target'] else 'NOT met'}.",
        "",
        "| `submit()` (ms) | n | mean | p50 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|",
        f"| slow API, queue growing | {sub_l['n']} | {sub_l['mean']:.3f} | {sub_l['p50']:.3f} | {sub_l['p95']:.3f} | {sub_l['p99']:.3f} | {sub_l['max']:.3f} |",
        f"| fast API, queue drained | {sub_i['n']} | {sub_i['mean']:.3f} | {sub_i['p50']:.3f} | {sub_i['p95']:.3f} | {sub_i['p99']:.3f} | {sub_i['max']:.3f} |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

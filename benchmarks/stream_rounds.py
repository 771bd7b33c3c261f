"""How steady is a stream ratio? The overlapped pipeline vs the bare call,
round by round, timed two ways in one process.

Each round plays the clip as ``make bench``'s ``run_streams`` does (one whole
pass of bare MediaPipe, then one of the overlapped pipeline) and as its
activity scenario does (turns of ``STREAM_CHUNK`` frames, bare then
overlapped, the first frames of each turn left out), and prints both
ratios of the interval p50. The spread of one round's ratio says how many
rounds a run needs before two runs of the same code agree.

    PYTHONPATH=device .venv/bin/python benchmarks/stream_rounds.py [--source CLIP] [--rounds 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from microexpr.bench import _BareMediaPipe, _shifted, describe_machine, load_frames
from microexpr.bench_activity import STREAM_CHUNK, STREAM_FILL
from microexpr.capture import Frame
from microexpr.models import resolve_model_path
from microexpr.overlap import OverlappedPipeline
from microexpr.pipeline import Pipeline


def _p50_ms(samples: list[float]) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, 50))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/media/single_face.mp4")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="write the rounds here too")
    args = parser.parse_args(argv)

    frames = load_frames(args.source)
    model = resolve_model_path()
    duration = frames[-1].timestamp - frames[0].timestamp + 1.0
    bare = _BareMediaPipe(model)
    pipeline = Pipeline.create(model_path=model)
    finished: list[float] = []
    runner: OverlappedPipeline[None] = OverlappedPipeline(
        pipeline, lambda _tag, _frame, _out: finished.append(time.perf_counter()), name="stream-rounds")
    offset = 0.0

    def bare_stream(clip: list[Frame]) -> list[float]:
        return [bare.time_frame(f, offset) for f in clip]

    def overlapped_stream(clip: list[Frame]) -> list[float]:
        finished.clear()
        for f in clip:
            runner.submit(_shifted(f, offset), None)
        runner.drain(timeout=60)
        return np.diff(finished).tolist()

    rounds = []
    try:
        for _ in range(args.rounds):
            whole_bare, whole_ovl = bare_stream(frames), overlapped_stream(frames)
            pipeline.reset()
            offset += duration
            turn_bare: list[float] = []
            turn_ovl: list[float] = []
            for start in range(0, len(frames), STREAM_CHUNK):
                turn = frames[start:start + STREAM_CHUNK]
                turn_bare += bare_stream(turn)[STREAM_FILL + 1:]
                turn_ovl += overlapped_stream(turn)[STREAM_FILL:]
            pipeline.reset()
            offset += duration
            rounds.append({
                "whole": round(_p50_ms(whole_ovl) / _p50_ms(whole_bare), 3),
                "turns": round(_p50_ms(turn_ovl) / _p50_ms(turn_bare), 3),
            })
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        runner.close()
        pipeline.close()
        bare.close()
    for way in ("whole", "turns"):
        values = [r[way] for r in rounds]
        print(f"{way}: one round's ratio {min(values):.3f}-{max(values):.3f}, median {np.median(values):.3f}, "
              f"sd {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}")
    print(f"analysis promoted to the normal policy: {runner.promoted} times")
    if args.json is not None:
        machine = describe_machine()
        args.json.write_text(json.dumps({"source": str(args.source), "machine": machine, "rounds": rounds,
                                         "promoted": runner.promoted}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

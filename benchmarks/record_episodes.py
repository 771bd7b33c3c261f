#!/usr/bin/env python3
"""Run a spotting benchmark with every spotted episode recorded, clip by clip.

``benchmarks/spotting.py`` and ``codec_spotting.py`` report scores, not
each episode; to show that a change leaves spotting unchanged, this runs
one of them unmodified with ``Pipeline.process``/``finish`` observed and
writes every episode — clip number (one per ``Pipeline.reset``), onset,
apex and offset frame, kind, label, confidence and AUs with side and
intensity — in run order to the JSON file ``$SPOT_RECORD``. Two records
compare with ``==``.

Usage::

    SPOT_RECORD=before.json PYTHONPATH=$PWD/device .venv/bin/python benchmarks/record_episodes.py \\
        benchmarks/spotting.py --quick --out /tmp/spot
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any


def main() -> int:
    if len(sys.argv) < 2 or "SPOT_RECORD" not in os.environ:
        print("usage: SPOT_RECORD=out.json record_episodes.py BENCHMARK.py [its arguments]", file=sys.stderr)
        return 64
    script = Path(sys.argv[1]).resolve()
    sys.argv = [str(script), *sys.argv[2:]]
    sys.path.insert(0, str(script.parent.parent / "device"))

    import microexpr.pipeline as pipeline

    record: list[list[Any]] = []
    clip = [0]

    def describe(s: pipeline.SpottedEpisode) -> list[Any]:
        e, d = s.episode, s.decision
        return [clip[0], e.onset_frame, e.apex_frame, e.offset_frame, str(e.kind),
                None if d is None else str(d.label), None if d is None else round(float(d.confidence), 4),
                sorted(f"{a.au.value}{a.side}{a.intensity:.3f}" for a in e.activations)]

    reset, process, finish = pipeline.Pipeline.reset, pipeline.Pipeline.process, pipeline.Pipeline.finish

    def on_reset(self: pipeline.Pipeline) -> None:
        clip[0] += 1
        reset(self)

    def on_process(self: pipeline.Pipeline, frame: Any) -> pipeline.PipelineResult:
        out = process(self, frame)
        record.extend(describe(s) for s in out.episodes)
        return out

    def on_finish(self: pipeline.Pipeline) -> tuple[pipeline.SpottedEpisode, ...]:
        out = finish(self)
        record.extend([*describe(s), "finish"] for s in out)
        return out

    pipeline.Pipeline.reset, pipeline.Pipeline.process, pipeline.Pipeline.finish = on_reset, on_process, on_finish
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        Path(os.environ["SPOT_RECORD"]).write_text(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Long runs, long holds and slow rises on the real smile clip (issue 12, item 3).

Suites (default engine settings, the real MediaPipe model):

* **replay**: ``single_face.mp4`` (72 frames, a smile from frame 16 held to
  the end) looped the way ``microexpr run --source replay:`` plays it,
  joined at a given frame, with real-time timestamps, fed straight through
  ``Pipeline`` without sleeping (the clock is the frames' timestamps, so
  this is what a live replay sees when the machine keeps up). Per run:
  smiles played vs episodes found on them, labels, the time of the last
  event, and the suppression counts (``stats.suppressed``).
* **hold**: the calm start and the smile, whose frames 30-71 are then
  played back and forth (the smile held) for 10 s to the end of the input;
  and for 60 s, then 2 s at rest, then one more smile.
* **slow**: a 1.5 s AU12 rise (linear, and raised-cosine), 1 s hold, 1 s
  fall, made by ``microexpr.synth`` on the real video's neutral frames and
  on the astronaut still: onset error of the episode (frames, seconds).

Nothing here was fitted on these clips: the engine's thresholds come from
docs/spotting.md. Usage::

    .venv/bin/python benchmarks/long_expressions.py                 # 10-min replay + 3 x 2 min, ~15 min on 2 busy cores
    .venv/bin/python benchmarks/long_expressions.py --minutes 2     # shorter main replay

Writes ``benchmarks/results/spotting/long_expressions.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "device"))

import numpy as np  # noqa: E402

from microexpr.capture import Frame, open_source  # noqa: E402
from microexpr.pipeline import Pipeline  # noqa: E402
from microexpr.synth import SynthEvent, SynthSpec, parse_event, write_clip  # noqa: E402
from microexpr.tracking import create_tracker  # noqa: E402

SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "face_landmarker.task"
MEDIA = SHARED / "data" / "media"
FPS = 30.0
SMILE_START = 16


def _clip() -> list[np.ndarray]:
    with open_source(MEDIA / "single_face.mp4") as source:
        return [frame.image for frame in source]


def _run(images: list[np.ndarray], stamps: list[float] | None = None) -> tuple[list[Any], Pipeline, float]:
    out: list[Any] = []
    started = time.perf_counter()
    pipeline = Pipeline.create(model_path=MODEL)
    with pipeline:
        for k, image in enumerate(images):
            t = stamps[k] if stamps is not None else k / FPS
            out.extend(pipeline.process(Frame(k, t, image)).episodes)
        out.extend(pipeline.finish())
    return out, pipeline, time.perf_counter() - started


def _episode(s: Any) -> dict[str, Any]:
    e, d = s.episode, s.decision
    return {
        "onset_frame": e.onset_frame, "apex_frame": e.apex_frame, "offset_frame": e.offset_frame,
        "onset_s": round(e.onset_ts, 3), "kind": e.kind.value, "truncated": e.truncated,
        "aus": "+".join(str(a) for a in e.activations),
        "label": d.label.value if d else None, "confidence": round(d.confidence, 3) if d else None,
        "stage": d.stage.value if d else None,
    }


def replay(clip: list[np.ndarray], start: int, seconds: float) -> dict[str, Any]:
    n = int(seconds * FPS)
    spotted, pipeline, wall = _run([clip[(start + k) % len(clip)] for k in range(n)])
    smiles = [k for k in range(n) if (start + k) % len(clip) == SMILE_START]
    matched = {k: [s for s in spotted if abs(s.episode.onset_frame - k) <= 6] for k in smiles}
    on_smile = [s for found in matched.values() for s in found]
    labels = Counter(s.decision.label.value for s in on_smile if s.decision)
    other = [s for s in spotted if s not in on_smile]
    last = max((s.episode.onset_ts for s in spotted), default=None)
    return {
        "start_frame": start, "seconds": seconds, "frames": n, "wall_s": round(wall, 1),
        "smiles_played": len(smiles),
        "smiles_with_one_episode": sum(1 for v in matched.values() if len(v) == 1),
        "smiles_missed": [k for k, v in matched.items() if not v],
        "labels_on_smiles": dict(labels),
        "stages_on_smiles": dict(Counter(s.decision.stage.value for s in on_smile if s.decision)),
        "episodes_elsewhere": [_episode(s) for s in other],
        "last_event_onset_s": last, "stream_end_s": round((n - 1) / FPS, 3),
        "suppressed": {k: v for k, v in pipeline.suppressed.snapshot().items() if v},
    }


def _held(seconds: float) -> list[int]:
    seq = list(range(72))
    swing = list(range(71, 29, -1)) + list(range(30, 72))
    while len(seq) < 72 + seconds * FPS:
        seq += swing
    return seq[: int(72 + seconds * FPS)]


def hold(clip: list[np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spotted, pipeline, wall = _run([clip[i] for i in _held(10.0)])
    out["held_10s_to_the_end"] = {"episodes": [_episode(s) for s in spotted], "wall_s": round(wall, 1),
                                  "suppressed": {k: v for k, v in pipeline.suppressed.snapshot().items() if v}}
    seq = _held(60.0) + [5, 6, 7, 8, 9, 10, 11, 12, 13, 14] * 6 + list(range(72))
    spotted, pipeline, wall = _run([clip[i] for i in seq])
    out["held_60s_rest_2s_smile"] = {
        "episodes": [_episode(s) for s in spotted], "wall_s": round(wall, 1),
        "second_smile_onset_frame": len(seq) - 72 + SMILE_START,
        "suppressed": {k: v for k, v in pipeline.suppressed.snapshot().items() if v},
    }
    return out


@dataclass(frozen=True, slots=True)
class LinearRise(SynthEvent):
    """An expression rising linearly to its apex (synth's own rise is raised-cosine)."""

    def level(self, t: float) -> float:
        if self.onset_s < t < self.apex_s:
            return (t - self.onset_s) / self.rise_s
        return SynthEvent.level(self, t)


def slow(workdir: Path) -> list[dict[str, Any]]:
    base = replace(parse_event("12@1/1*0.8"), rise_s=1.5, hold_s=1.0, fall_s=1.0)
    linear = LinearRise(**{name: getattr(base, name) for name in base.__dataclass_fields__})
    rows = []
    for face, source, frames in (("real video", MEDIA / "single_face.mp4", (5, 14)), ("astronaut", MEDIA / "astronaut.png", None)):
        for shape, event in (("linear", linear), ("raised-cosine", base)):
            spec = SynthSpec(source, FPS, 5.0, (event,), base_frames=frames)
            path = workdir / f"slow-{len(rows)}.mp4"
            with create_tracker(model_path=MODEL) as tracker:
                truth = write_clip(spec, tracker, path)
            with Pipeline.create(model_path=MODEL) as pipeline, open_source(path) as src:
                spotted = pipeline.run(src)
            onset = truth.events[0].onset_frame
            best = min(spotted, key=lambda s: abs(s.episode.onset_frame - onset), default=None)
            rows.append({
                "face": face, "rise": shape, "truth_onset_frame": onset, "episodes": len(spotted),
                "onset_frame": best.episode.onset_frame if best else None,
                "onset_error_s": round((best.episode.onset_frame - onset) / FPS, 3) if best else None,
                "label": best.decision.label.value if best and best.decision else None,
            })
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Long expressions, silence and slow rises (benchmarks/long_expressions.py)", "",
             f"Command: `{result['command']}`  ", f"Run: {result['when']}, {result['machine']}", "",
             "## Looped replay of single_face.mp4 (real-time timestamps, no sleeping)", "",
             "| joined at frame | minutes | smiles played | with one episode | missed | labels on smiles | stages | other episodes | last event / end (s) | suppressed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["replay"]:
        lines.append(
            f"| {r['start_frame']} | {r['seconds'] / 60:g} | {r['smiles_played']} | {r['smiles_with_one_episode']} | "
            f"{len(r['smiles_missed'])} | {r['labels_on_smiles']} | {r['stages_on_smiles']} | {len(r['episodes_elsewhere'])} | "
            f"{r['last_event_onset_s']} / {r['stream_end_s']} | {r['suppressed']} |")
    lines += ["", "## Held smiles", ""]
    for name, r in result["hold"].items():
        lines.append(f"* **{name}**: {len(r['episodes'])} episode(s): " + "; ".join(
            f"frames {e['onset_frame']}-{e['offset_frame']} {e['kind']}{' truncated' if e['truncated'] else ''} "
            f"{e['aus']} → {e['label']}" for e in r["episodes"]) + f"; suppressed {r['suppressed']}")
    lines += ["", "## Slow macro (1.5 s AU12 rise at 0.8, 30 fps)", "",
              "| face | rise | episodes | truth onset | episode onset | error (s) | label |", "|---|---|---|---|---|---|---|"]
    for r in result["slow"]:
        lines.append(f"| {r['face']} | {r['rise']} | {r['episodes']} | {r['truth_onset_frame']} | {r['onset_frame']} | "
                     f"{r['onset_error_s']} | {r['label']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the main replay (joined at frame 50)")
    parser.add_argument("--short-minutes", type=float, default=2.0, help="length of the replays joined at frames 0, 30, 60")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "spotting")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    clip = _clip()
    result: dict[str, Any] = {
        "command": "benchmarks/long_expressions.py " + " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, python {platform.python_version()}",
        "replay": [], "hold": {}, "slow": [],
    }
    for start, minutes in ((50, args.minutes), (0, args.short_minutes), (30, args.short_minutes), (60, args.short_minutes)):
        if minutes > 0:
            result["replay"].append(replay(clip, start, minutes * 60.0))
            print(json.dumps(result["replay"][-1])[:400], flush=True)
    result["hold"] = hold(clip)
    with tempfile.TemporaryDirectory() as tmp:
        result["slow"] = slow(Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "long_expressions.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "long_expressions.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

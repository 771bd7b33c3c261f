#!/usr/bin/env python3
"""What each codec rule does: the issue-12 false episodes with rules on/off.

The real neutral stretch of ``single_face.mp4`` played back and forth
(20 s per codec, phase 0), written lossless, as per-frame JPEGs at quality
70 and 90, then as ``mp4v``, run in that order through one pipeline (the
tracker stays warm between streams, as on a device; ``Pipeline.reset``
between them). In this sequence the engine of before issue 12 gives an
episode every 1.2 s on the mp4v stream, named AU1+R2+R5+R6+R7+R9+R12+L14.
Each configuration switches the whole-face rigid fit (``motion``) and the
side-mix rejection (``spotting``) on or off; false episodes and the
spotter's rejection counts are reported.

Usage::

    .venv/bin/python benchmarks/codec_ablation.py     # ~5 min on 2 busy cores

Writes ``benchmarks/results/spotting/codec-ablation.json`` and ``.md``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "device"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from codec_spotting import MODEL, VIDEO, codec_name, landmarks, read_frames  # noqa: E402

from microexpr import mesh  # noqa: E402
from microexpr.capture import Frame, open_source  # noqa: E402
from microexpr.flowmorph import MorphClip  # noqa: E402
from microexpr.pipeline import Pipeline  # noqa: E402
from microexpr.videocodec import Codec, write_video  # noqa: E402

SEQUENCE = ((Codec.LOSSLESS, None), (Codec.MJPEG, 70), (Codec.MJPEG, 90), (Codec.MP4V, None))
CONFIGS = {"neither (before)": (False, False), "side_mix only": (False, True), "rigid fit only": (True, False),
           "both (default)": (True, True)}
SECONDS = 20.0


def main() -> int:
    frames = read_frames(VIDEO)
    pts = landmarks(frames)
    report: dict[str, dict] = {}
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
        for name, (rigid, side_mix) in CONFIGS.items():
            pipeline = Pipeline.create(model_path=MODEL)
            c = pipeline.config
            pipeline.config = replace(c, motion=replace(c.motion, rigid_from_regions=rigid),
                                      spotter=replace(c.spotter, reject_side_mix=side_mix))
            t_end, row, rejected = 0.0, {}, {}
            try:
                for k, (codec, q) in enumerate(SEQUENCE):
                    clip = MorphClip(frames, 30.0, SECONDS, face_points=pts[0], smile_points=pts[1],
                                     stable_points=mesh.STABLE_POINTS)
                    written = write_video(clip, Path(tmp) / f"{k}", 30.0, codec, q)
                    pipeline.reset()
                    offset, episodes = t_end + 1.0, []
                    with open_source(written.path) as src:
                        for frame in src:
                            t_end = frame.timestamp + offset
                            episodes += pipeline.process(Frame(frame.index, t_end, frame.image)).episodes
                    episodes += pipeline.finish()
                    row[codec_name(codec, q)] = {
                        "false": len(episodes), "per_minute": round(60 * len(episodes) / SECONDS, 1),
                        "aus": sorted({"+".join(map(str, s.episode.activations)) for s in episodes}),
                        "bitrate_mbps": round(written.bitrate_mbps, 2)}
                # what the engine dropped and why (the daemon's ``stats.suppressed``)
                rejected = {k: v for k, v in pipeline.suppressed.snapshot().items() if v}
            finally:
                pipeline.close()
            report[name] = {"codecs": row, "rejected": rejected}
            print(name, json.dumps(report[name]), flush=True)
    out = ROOT / "benchmarks" / "results" / "spotting"
    out.mkdir(parents=True, exist_ok=True)
    (out / "codec-ablation.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - start),
                                                         "configs": report}, indent=1) + "\n")
    codecs = [codec_name(c, q) for c, q in SEQUENCE]
    lines = [f"# Codec rules on/off ({time.strftime('%Y-%m-%d')}, `benchmarks/codec_ablation.py`)", "",
             f"Real neutral stretch played back and forth, {SECONDS:.0f} s per stream, streams in this order through "
             "one warm pipeline. False episodes (per minute):", "",
             "| rules | " + " | ".join(codecs) + " | suppressed (`Pipeline.suppressed`) |", "|---|" + "---|" * (len(codecs) + 1)]
    for name, v in report.items():
        lines.append(f"| {name} | " + " | ".join(f"{v['codecs'][c]['false']} ({v['codecs'][c]['per_minute']:g}/min)"
                                                  for c in codecs) + f" | {json.dumps(v['rejected'])} |")
    (out / "codec-ablation.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

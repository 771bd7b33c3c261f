#!/usr/bin/env python3
"""The face at rest: how often the activity gate lets the dense flow run, and why.

Clips (made by ``microexpr.synth``, written through a camera codec, read
back through ``open_source``): 12 s of a face at rest with no event — the
astronaut still (sensor noise σ 2, nothing else moves) and the real video's
neutral frames 5–14 played back and forth (a real face's own small
movements) — each as MPEG-4 (mp4v) and MJPEG; and three 4 s clips with one
weak event at 3.0 s on those bases (AU12 0.3, AU4 0.5).

Per resting clip, after the baseline's warm-up (the first 3 s are not
counted): the share of frames whose own flow was computed (at once, or
later from the ring buffer), why the gate ran the flow (reasons), and the
gate's change statistic (largest per-cell difference, in the cell's own
resting noise units) against its thresholds (``change_z``: run now;
``backfill_z``: flow the waiting frames too). Per event clip: the episodes
(onset, apex, offset frames) with the gate and with the flow on every frame.

Nothing here was fitted on these clips: the gate's settings were chosen on
other clips of the same bases (docs/benchmarks.md). Usage::

    .venv/bin/python benchmarks/activity_idle.py     # ~2 min on 2 busy cores

Writes ``benchmarks/results/spotting/activity-idle.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "device"))

import numpy as np  # noqa: E402

from microexpr import activity  # noqa: E402
from microexpr.activity import ActivityConfig  # noqa: E402
from microexpr.capture import open_source  # noqa: E402
from microexpr.pipeline import Pipeline, PipelineConfig, default_classifier  # noqa: E402
from microexpr.synth import SynthSpec, parse_event, write_clip  # noqa: E402
from microexpr.videocodec import Codec  # noqa: E402
from microexpr.tracking import FaceObservation, create_tracker  # noqa: E402

log = logging.getLogger("bench.activity_idle")
WARMUP_S = 3.0


def _media(shared: Path) -> Path:
    return shared / "data" / "media"


def _clips(media: Path) -> tuple[list[tuple[str, SynthSpec, Codec]], list[tuple[str, SynthSpec]]]:
    still = media / "astronaut.png"
    video = media / "single_face.mp4"
    rest = []
    for codec in (Codec.MP4V, Codec.MJPEG_AVI):
        tag = "mp4v" if codec is Codec.MP4V else "mjpeg"
        rest.append((f"astronaut still, {tag}", SynthSpec(still, 30.0, 12.0, ()), codec))
        rest.append((f"real neutral stretch, {tag}", SynthSpec(video, 30.0, 12.0, (), base_frames=(5, 14)), codec))
    events = [
        ("real stretch + AU12 0.3", SynthSpec(video, 30.0, 4.0, (parse_event("12@3.0/0.2*0.3"),), base_frames=(5, 14))),
        ("real stretch + AU4 0.5", SynthSpec(video, 30.0, 4.0, (parse_event("4@3.0/0.2*0.5"),), base_frames=(5, 14))),
        ("astronaut + AU12 0.3", SynthSpec(still, 30.0, 4.0, (parse_event("12@3.0/0.2*0.3"),))),
    ]
    return rest, events


def _track(clip: Path) -> tuple[list[Any], list[FaceObservation]]:
    with open_source(clip) as src:
        frames = list(src)
    with create_tracker() as tracker:
        return frames, [tracker.process(f) for f in frames]


def _rest_run(frames: list[Any], obs: list[FaceObservation]) -> dict[str, Any]:
    decisions: list[tuple[float, activity.FlowDecision]] = []
    original = activity.ActivityGate.decide

    def recording(self: activity.ActivityGate, image: Any, landmarks: Any, timestamp: float, **kw: Any) -> Any:
        d = original(self, image, landmarks, timestamp, **kw)
        decisions.append((timestamp, d))
        return d

    activity.ActivityGate.decide = recording  # type: ignore[method-assign]
    try:
        with Pipeline(create_tracker(), classifier=default_classifier()) as p:
            flowed: set[int] = set()
            t0 = frames[0].timestamp
            for f, o in zip(frames, obs):
                out = p.analyse(f, o)
                if out.motion is not None:
                    flowed.add(f.index)
                flowed.update(out.backfilled)
            p.finish()
            gate = next(iter(p._subjects.values())).gate  # noqa: SLF001 - its settings
    finally:
        activity.ActivityGate.decide = original  # type: ignore[method-assign]
    counted = [f.index for f in frames if f.timestamp - t0 >= WARMUP_S]
    late = [d for t, d in decisions if t - t0 >= WARMUP_S]
    change = np.array([d.change for d in late if np.isfinite(d.change)])
    return {
        "frames_counted": len(counted),
        "flow_share": round(sum(i in flowed for i in counted) / max(len(counted), 1), 3),
        "reasons": dict(Counter(d.reason.value for d in late)),
        "backfilled_frames": sum(d.backfill for d in late),
        "change_percentiles": {f"p{q}": round(float(np.percentile(change, q)), 2) for q in (50, 90, 99, 100)},
        "change_z": gate.config.change_z,
        "backfill_z": gate.config.backfill_z,
    }


def _episodes(frames: list[Any], obs: list[FaceObservation], enabled: bool) -> tuple[list[tuple[int, int, int]], float]:
    config = PipelineConfig(activity=ActivityConfig(enabled=enabled))
    with Pipeline(create_tracker(), classifier=default_classifier(), config=config) as p:
        flowed: set[int] = set()
        eps = []
        for f, o in zip(frames, obs):
            out = p.analyse(f, o)
            eps += [s.episode for s in out.episodes]
            if out.motion is not None:
                flowed.add(f.index)
            flowed.update(out.backfilled)
        eps += [s.episode for s in p.finish()]
    return [(e.onset_frame, e.apex_frame, e.offset_frame) for e in eps], round(len(flowed) / len(frames), 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("MICROEXPR_SHARED", ROOT.parent / "shared")))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "spotting")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    start = time.time()
    rest_specs, event_specs = _clips(_media(args.shared))
    report: dict[str, Any] = {"command": "benchmarks/activity_idle.py", "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                              "load_average_start": [round(x, 2) for x in os.getloadavg()], "rest": {}, "events": {}}
    with tempfile.TemporaryDirectory() as tmp, create_tracker() as tracker:
        for name, spec, codec in rest_specs:
            clip = Path(tmp) / ("clip.mp4" if codec is Codec.MP4V else "clip.avi")
            write_clip(spec, tracker, clip, codec=codec)
            frames, obs = _track(clip)
            report["rest"][name] = _rest_run(frames, obs)
            log.info("%s: %s", name, report["rest"][name])
        for name, spec in event_specs:
            clip = Path(tmp) / "event.mp4"
            truth = write_clip(spec, tracker, clip)
            frames, obs = _track(clip)
            plain, plain_share = _episodes(frames, obs, False)
            gated, gated_share = _episodes(frames, obs, True)
            ev = truth.events[0]
            report["events"][name] = {"truth": [ev.onset_frame, ev.apex_frame, ev.offset_frame], "flow_every_frame": plain,
                                      "gated": gated, "same": plain == gated, "flow_share_gated": gated_share,
                                      "flow_share_plain": plain_share}
            log.info("%s: %s", name, report["events"][name])
    report["seconds"] = round(time.time() - start, 1)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "activity-idle.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        "# The face at rest: when the dense flow runs",
        "",
        f"Run: `benchmarks/activity_idle.py` — {report['date']} UTC, {report['seconds']} s, load average "
        f"{report['load_average_start'][0]} → {report['load_average_end'][0]} (2 shared cores).",
        "",
        "Resting clips, 12 s, no event; counted after the first 3 s (the baseline's warm-up). Change = the "
        "gate's largest per-cell difference from the last flowed frame, in that cell's resting noise units.",
        "",
        "| clip | frames with own flow | reasons (counted frames) | backfills | change p50 / p90 / p99 / max | run at / backfill at |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["rest"].items():
        c = r["change_percentiles"]
        lines.append(f"| {name} | {r['flow_share']} | {', '.join(f'{k} {v}' for k, v in sorted(r['reasons'].items()))} "
                     f"| {r['backfilled_frames']} | {c['p50']} / {c['p90']} / {c['p99']} / {c['p100']} "
                     f"| {r['change_z']} / {r['backfill_z']} |")
    lines += ["", "Weak events (4 s clips, event at 3.0 s): episodes (onset, apex, offset frames).", "",
              "| clip | truth | flow on every frame | gated | same | frames with own flow (gated / every frame) |",
              "|---|---|---|---|---|---|"]
    for name, e in report["events"].items():
        lines.append(f"| {name} | {tuple(e['truth'])} | {[tuple(x) for x in e['flow_every_frame']]} "
                     f"| {[tuple(x) for x in e['gated']]} | {e['same']} | {e['flow_share_gated']} / {e['flow_share_plain']} |")
    (args.out / "activity-idle.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

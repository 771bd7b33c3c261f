#!/usr/bin/env python3
"""The daemon on a looped clip in real time, under CPU load: does it keep reporting?

Issue 12: ``microexpr run --source replay:CLIP`` on a looped 4-s synthetic
clip (the real face's neutral frames with a smile and a brow lowering)
once went quiet for > 30 s, every candidate suppressed as ``held``. This
runs the real daemon (``python -m microexpr run``, default settings) on
``replay:CLIP`` for ``--seconds``, ``--runs`` times, optionally with
``--busy`` busy loops competing for the cores, and reports per run: events,
events per loop of the clip (the replay's capture index modulo the clip's
length), the longest stretch without an event, labels, and the suppression
counts the daemon logged (``microexpr.suppression``).

Where the stream joins the clip depends on how long the model takes to
load and how fast frames are taken, which load changes; the runs are
therefore not identical, by design.

``--engine DEVICE_DIR`` runs another checkout's engine (e.g. the main
branch's ``device/`` folder, for a before/after on the same machine).

    .venv/bin/python -m microexpr synth ../shared/data/media/single_face.mp4 --frames 0-17 \\
        -e 6+12@1.0/0.3 -e 4@2.5/0.35 -o /tmp/loop.mp4
    .venv/bin/python benchmarks/replay_under_load.py /tmp/loop.mp4 --busy 1 --runs 3 --seconds 70

Prints a Markdown table; ``--json FILE`` also writes the raw results.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_SUPPRESSED = re.compile(r"suppressed \d+ (?:more )?candidate episode\(s\) \((\w+)\).*?; (\d+) in total")
_STOPPED = re.compile(r"stopped \(\w+\): (\d+) frame\(s\), (\d+) with a face, (\d+) event\(s\)")


def _frame_count(clip: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(clip))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def run_once(clip: Path, seconds: float, engine: Path, workdir: Path, name: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(engine))
    cmd = [sys.executable, "-m", "microexpr", "run", "--source", f"replay:{clip}", "--outbox",
           str(workdir / f"{name}.sqlite"), "--device-id", name, "--print-events"]
    load_before = os.getloadavg()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    suppressed: dict[str, int] = {}
    for m in _SUPPRESSED.finditer(err):
        suppressed[m.group(1)] = max(suppressed.get(m.group(1), 0), int(m.group(2)))
    stopped = _STOPPED.search(err)
    return {"events": events, "suppressed": suppressed, "load": [load_before, os.getloadavg()],
            "frames": int(stopped.group(1)) if stopped else None, "returncode": proc.returncode,
            "first_sight": "first seen mid-expression" in err}


def summarise(result: dict[str, Any], clip_frames: int, seconds: float) -> dict[str, Any]:
    events = result["events"]
    loops = Counter(int(e["frames"]["onset"]) // clip_frames for e in events)
    last_loop = int(seconds * 30 // clip_frames)
    onsets = sorted(float(e["monotonic"]["onset_s"]) for e in events)
    gaps = [b - a for a, b in zip(onsets, onsets[1:])]
    return {
        "events": len(events),
        "per_loop": [loops.get(k, 0) for k in range(last_loop + 1)],
        "loops_without_event": sum(1 for k in range(1, last_loop) if not loops.get(k)),
        "longest_gap_s": round(max(gaps), 1) if gaps else None,
        "labels": dict(Counter(e["emotion"] for e in events)),
        "suppressed": result["suppressed"],
        "frames": result["frames"],
        "load": [round(x, 2) for x in result["load"][0]],
        "first_sight": result["first_sight"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clip", type=Path)
    ap.add_argument("--seconds", type=float, default=70.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--busy", type=int, default=0, help="busy loops (python 'while 1: pass') running meanwhile")
    ap.add_argument("--engine", type=Path, default=ROOT / "device", help="the device/ folder whose engine runs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    clip = args.clip.resolve()
    clip_frames = _frame_count(clip)
    busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.busy)]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for k in range(args.runs):
                result = run_once(clip, args.seconds, args.engine.resolve(), Path(tmp), f"load-{k}")
                rows.append(summarise(result, clip_frames, args.seconds))
                print(f"run {k}: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        for p in busy:
            p.terminate()
            p.wait()
    print(f"clip {clip} ({clip_frames} frames), {args.seconds:g} s per run, {args.busy} busy loop(s), "
          f"engine {args.engine}\n")
    print("| run | events | per loop | loops without event | longest gap (s) | labels | suppressed | frames | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, r in enumerate(rows):
        print(f"| {k} | {r['events']} | {' '.join(map(str, r['per_loop']))} | {r['loops_without_event']} | "
              f"{r['longest_gap_s']} | {r['labels']} | {r['suppressed']} | {r['frames']} | {r['load'][0]} |")
    if args.json:
        args.json.write_text(json.dumps({"clip": str(clip), "seconds": args.seconds, "busy": args.busy,
                                         "engine": str(args.engine), "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

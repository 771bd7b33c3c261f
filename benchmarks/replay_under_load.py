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
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_SUPPRESSED = re.compile(r"suppressed \d+ (?:more )?candidate episode\(s\) \((\w+)\).*?; (\d+) in total")
_FIRST = re.compile(r"^(\S+ \S+) INFO microexpr.service.daemon: first frame processed", re.M)
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
    started = time.time()
    # files, not pipes: an unread pipe fills (~17 events of JSON) and blocks the daemon
    out_path, err_path = workdir / f"{name}.out", workdir / f"{name}.err"
    with out_path.open("w") as out_file, err_path.open("w") as err_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out_file, stderr=err_file, text=True)
        time.sleep(seconds)
        stopped_at = time.time()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    out, err = out_path.read_text(), err_path.read_text()
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    suppressed: dict[str, int] = {}
    for m in _SUPPRESSED.finditer(err):
        suppressed[m.group(1)] = max(suppressed.get(m.group(1), 0), int(m.group(2)))
    stopped = _STOPPED.search(err)
    first = _FIRST.search(err)
    if first:  # the log's local time: the daemon's first processed frame (after the model loaded)
        started = datetime.strptime(first.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return {"events": events, "suppressed": suppressed, "load": [load_before, os.getloadavg()],
            "started": started, "stopped": stopped_at,
            "frames": int(stopped.group(1)) if stopped else None, "returncode": proc.returncode,
            "first_sight": "first seen mid-expression" in err}


def _wall(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def summarise(result: dict[str, Any], clip_frames: int, smile: tuple[int, int] = (30, 39)) -> dict[str, Any]:
    """Per run. Loops are counted by the replay's capture index (a starved
    capture thread falls behind the wall clock), up to the loop of the last
    event; the silence that matters is measured on the wall clock: the
    longest stretch without an event, from the daemon's first processed
    frame (after the model loaded: 1-5 s under load) to the stop. A loop's
    smile counts as reported when an event labelled happiness has its onset
    within 6 frames of the clip's ``smile`` window."""
    events = result["events"]
    loops = Counter(int(e["frames"]["onset"]) // clip_frames for e in events)
    last_loop = max(loops, default=0)
    times = [result["started"]] + sorted(_wall(e) for e in events) + [result["stopped"]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    smiled = {int(e["frames"]["onset"]) // clip_frames for e in events if e["emotion"] == "happiness"
              and smile[0] - 6 <= int(e["frames"]["onset"]) % clip_frames <= smile[1] + 6}
    return {
        "events": len(events),
        "per_loop": [loops.get(k, 0) for k in range(last_loop + 1)],
        "smiles": f"{sum(1 for k in range(1, last_loop + 1) if k in smiled)}/{last_loop}",
        "loops_without_event": sum(1 for k in range(1, last_loop) if not loops.get(k)),
        "longest_silence_s": round(max(gaps), 1),
        "last_event_s": round(times[-2] - result["started"], 1) if events else None,
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
    ap.add_argument("--logs", type=Path, help="keep each run's stdout/stderr in this folder")
    ap.add_argument("--name", default="load", help="run name prefix (log files, device id)")
    ap.add_argument("--resummarise", type=Path, nargs="+", metavar="JSON",
                    help="print the table from earlier --json files instead of running")
    args = ap.parse_args(argv)
    clip = args.clip.resolve()
    clip_frames = _frame_count(clip)
    if args.resummarise:
        resummarise(args.resummarise, clip_frames)
        return 0
    busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.busy)]
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            logs = args.logs or Path(tmp)
            logs.mkdir(parents=True, exist_ok=True)
            for k in range(args.runs):
                result = run_once(clip, args.seconds, args.engine.resolve(), logs, f"{args.name}-{k}")
                rows.append(summarise(result, clip_frames))
                raw.append(result)
                print(f"run {k}: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        for p in busy:
            p.terminate()
            p.wait()
    print(f"clip {clip} ({clip_frames} frames), {args.seconds:g} s per run, {args.busy} busy loop(s), "
          f"engine {args.engine}\n")
    table(rows)
    if args.json:
        args.json.write_text(json.dumps({"clip": str(clip), "seconds": args.seconds, "busy": args.busy,
                                         "engine": str(args.engine), "runs": rows, "raw": raw}, indent=1))
    return 0


def table(rows: list[dict[str, Any]], names: list[str] | None = None) -> None:
    print("| run | events | per loop (to the last event's) | loops without event | loops with their smile | "
          "longest silence (s) | last event (s) | labels | suppressed | frames | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, r in enumerate(rows):
        print(f"| {names[k] if names else k} | {r['events']} | {' '.join(map(str, r['per_loop']))} | "
              f"{r['loops_without_event']} | {r['smiles']} | "
              f"{r['longest_silence_s']} | {r['last_event_s']} | {r['labels']} | {r['suppressed']} | {r['frames']} | "
              f"{r['load'][0]} |")


def resummarise(paths: list[Path], clip_frames: int) -> None:
    """The table again from ``--json`` files (their raw events), e.g. several
    one-run files of an interleaved before/after."""
    rows, names = [], []
    for path in paths:
        data = json.loads(path.read_text())
        for k, raw in enumerate(data["raw"]):
            rows.append(summarise(raw, clip_frames))
            names.append(f"{path.stem}" + (f"-{k}" if len(data["raw"]) > 1 else "") + f" ({Path(data['engine']).parent.name})")
    table(rows, names)


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""What the AU estimator reads on the real face media (the numbers in docs/aus.md).

For ``single_face.mp4`` (neutral frames 0-17, broad smile from ~20 to the
end): per AU the mean 0..5 intensity over the neutral frames and over the
smile apex (frames 30-69), per side where measured; the raw blendshapes
the docs discuss (cheekSquint, eyeSquint, noseSneer, eyeWide); and the
landmark jitter (s.d. over the neutral frames, IOD units) of every raw
geometric measurement, which is what the dead bands rest on. For the two
stills: one frame each (relative geometric cues are zero on a single
image, by construction).

Usage::

    .venv/bin/python benchmarks/au_profile.py [--shared ../shared]

Writes ``benchmarks/results/au_profile.json`` and ``au_profile.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from microexpr.aus import AU_COLUMNS, MEASUREMENTS, AUEstimator, measure
from microexpr.capture import open_source
from microexpr.tracking import create_tracker

ROOT = Path(__file__).resolve().parents[1]
NEUTRAL = slice(0, 18)
APEX = slice(30, 70)
BLENDSHAPES = ("cheekSquintLeft", "eyeSquintLeft", "noseSneerLeft", "eyeWideLeft", "mouthSmileLeft", "browInnerUp")


def track(path: Path, model: Path) -> tuple[list, list]:
    estimator = AUEstimator()
    with create_tracker(model_path=model) as tracker, open_source(path) as source:
        observations = [tracker.process(frame) for frame in source]
    return observations, [estimator.estimate(o) for o in observations]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    model = args.shared / "models" / "face_landmarker.task"
    media = args.shared / "data" / "media"

    obs, frames = track(media / "single_face.mp4", model)
    result: dict = {
        "machine": machine(),
        "clip": {"frames": len(frames), "with_face": sum(f.face_found for f in frames), "aus": {}},
    }
    for au in AU_COLUMNS:
        entry = {
            "neutral": round(5 * float(np.mean([f.intensity[au] for f in frames[NEUTRAL]])), 2),
            "apex": round(5 * float(np.mean([f.intensity[au] for f in frames[APEX]])), 2),
        }
        if au in frames[0].left:
            entry["apex_left"] = round(5 * float(np.mean([f.left[au] for f in frames[APEX]])), 2)
            entry["apex_right"] = round(5 * float(np.mean([f.right[au] for f in frames[APEX]])), 2)
        result["clip"]["aus"][au.code] = entry
    result["clip"]["blendshapes"] = {
        name: {
            "neutral": round(float(np.mean([o.face.blendshapes[name] for o in obs[NEUTRAL]])), 3),
            "apex": round(float(np.mean([o.face.blendshapes[name] for o in obs[APEX]])), 3),
        }
        for name in BLENDSHAPES
    }
    geo = [measure(o.face) for o in obs]
    jitter = {}
    for i, name in enumerate(MEASUREMENTS):
        for side in ("left", "right"):
            values = [getattr(g, side)[i] for g in geo]
            jitter[f"{name}_{side}"] = {
                "neutral_sd": round(float(np.std(values[NEUTRAL])), 4),
                "apex_minus_neutral": round(float(np.mean(values[APEX]) - np.mean(values[NEUTRAL])), 4),
            }
    gaps = [g.lip_gap for g in geo]
    jitter["lip_gap"] = {"neutral_mean": round(float(np.mean(gaps[NEUTRAL])), 4),
                         "neutral_sd": round(float(np.std(gaps[NEUTRAL])), 4),
                         "apex_mean": round(float(np.mean(gaps[APEX])), 4)}
    result["clip"]["geometry_iod"] = jitter

    result["stills"] = {}
    for name in ("astronaut.png", "single_face.jpg"):
        still_obs, still_frames = track(media / name, model)
        frame = still_frames[0]
        result["stills"][name] = {
            "faces": len(still_obs[0].faces),
            "pose_deg": [round(frame.pose.pitch, 1), round(frame.pose.yaw, 1), round(frame.pose.roll, 1)],
            "aus_over_1": {au.code: round(5 * v, 2) for au, v in frame.intensity.items() if 5 * v >= 1.0},
        }

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "au_profile.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# AU estimator on the real face media",
        "",
        f"Machine: {result['machine']}. Command: `.venv/bin/python benchmarks/au_profile.py`.",
        "",
        f"## single_face.mp4 ({result['clip']['with_face']}/{result['clip']['frames']} frames with a face)",
        "",
        "Mean intensity on the 0..5 scale; neutral = frames 0-17, apex = frames 30-69.",
        "",
        "| AU | neutral | apex | apex left | apex right |",
        "|---|---|---|---|---|",
    ]
    for code, e in result["clip"]["aus"].items():
        lines.append(f"| {code} | {e['neutral']} | {e['apex']} | {e.get('apex_left', '')} | {e.get('apex_right', '')} |")
    lines += ["", "Raw blendshapes (0..1):", "", "| name | neutral | apex |", "|---|---|---|"]
    for n, e in result["clip"]["blendshapes"].items():
        lines.append(f"| {n} | {e['neutral']} | {e['apex']} |")
    lines += ["", "Geometry (IOD units): neutral jitter and smile change:", "",
              "| measurement | neutral s.d. | apex − neutral |", "|---|---|---|"]
    for n, e in jitter.items():
        if "neutral_sd" in e and "apex_minus_neutral" in e:
            lines.append(f"| {n} | {e['neutral_sd']} | {e['apex_minus_neutral']} |")
    lg = jitter["lip_gap"]
    lines.append(f"| lip_gap (absolute) | {lg['neutral_sd']} (mean {lg['neutral_mean']}) | apex mean {lg['apex_mean']} |")
    lines += ["", "## Stills (one frame each)", "", "| image | faces | pitch, yaw, roll (°) | AUs ≥ 1 |", "|---|---|---|---|"]
    for n, e in result["stills"].items():
        aus = ", ".join(f"{k} {v}" for k, v in e["aus_over_1"].items())
        lines.append(f"| {n} | {e['faces']} | {e['pose_deg']} | {aus} |")
    (args.out / "au_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Parity and speed of every ONNX variant against the MediaPipe backend.

Runs each variant of ``microexpr.tracking.onnx`` and the MediaPipe backend
over the same real-face sequences and reports, per variant:

* parity: landmark mean error in pixels of the landmark model's 256-px
  crop (frame-pixel error × 256 / crop side, the crop MediaPipe's own
  landmarks imply), blendshape mean absolute error over the 51 scores,
  head-pose angle differences, and whether a face was found on the same
  frames; a variant **passes** with landmark ≤ 1.0 px and blendshape MAE
  ≤ 0.02 (issue 7);
* speed: each model alone (median of interleaved rounds, so a noisy
  shared machine hits every variant alike) and the whole tracker per frame
  (p50/p95), with ``--threads`` ONNX Runtime threads, and the MediaPipe
  backend in the same run for the ratio.

Sequences: the real clip as a video (tracking on), the clip turned by 20°,
the clip mirrored and shrunk to 60 % (a smaller face), and the two real
stills, each as a fresh stream. Spotting parity runs when the spotting
pipeline (``microexpr.pipeline``) exists.

Usage (runtime venv; candidates come from ``provisioning/convert_onnx.py
--experiments DIR`` on the build host)::

    .venv/bin/python benchmarks/onnx_parity.py                  # shipped variants
    .venv/bin/python benchmarks/onnx_parity.py --candidates /tmp/exp
    .venv/bin/python benchmarks/onnx_parity.py --quick          # fewer rounds

Writes ``benchmarks/results/onnx/parity.json`` and ``parity.md``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "device"))

from microexpr.capture import Frame  # noqa: E402
from microexpr.tracking import onnx as ox  # noqa: E402
from microexpr.tracking.base import FaceObservation  # noqa: E402

SHARED = Path(os.environ.get("MICROEXPR_SHARED", ROOT.parent / "shared"))
MEDIA = SHARED / "data" / "media"
LANDMARK_LIMIT_PX = 1.0
BLENDSHAPE_LIMIT = 0.02
NAMES = ox.BLENDSHAPE_NAMES[1:]


# ---------------------------------------------------------------------------
# Inputs


def _clip_frames() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(MEDIA / "single_face.mp4"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def _rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def sequences() -> dict[str, list[np.ndarray]]:
    clip = _clip_frames()
    return {
        "clip": clip,
        "clip_rot20": [_rotated(f, 20.0) for f in clip],
        "clip_mirror_small": [cv2.resize(f[:, ::-1], None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA) for f in clip],
        "astronaut": [cv2.imread(str(MEDIA / "astronaut.png"))],
        "single_face_jpg": [cv2.imread(str(MEDIA / "single_face.jpg"))],
    }


# ---------------------------------------------------------------------------
# Running trackers


def run(tracker_factory, seqs: dict[str, list[np.ndarray]]) -> tuple[dict[str, list[FaceObservation]], list[float]]:
    """Observations per sequence (a fresh tracker per sequence, frames at
    30 fps timestamps) and per-frame wall times."""
    out: dict[str, list[FaceObservation]] = {}
    times: list[float] = []
    for name, frames in seqs.items():
        with tracker_factory() as tracker:
            obs = []
            for i, image in enumerate(frames):
                start = time.perf_counter()
                obs.append(tracker.process(Frame(index=i, timestamp=i / 30.0, image=image)))
                times.append(time.perf_counter() - start)
            out[name] = obs
    return out, times


def compare(ref: dict[str, list[FaceObservation]], got: dict[str, list[FaceObservation]]) -> dict:
    lm_err, bs_err, pose_err = [], [], []
    per_name = np.zeros(len(NAMES))
    n_both = missing = extra = 0
    per_seq = {}
    for seq, ref_obs in ref.items():
        seq_lm, seq_bs = [], []
        for r, g in zip(ref_obs, got[seq]):
            if r.face is None or g.face is None:
                missing += r.face is not None and g.face is None
                extra += r.face is None and g.face is not None
                continue
            n_both += 1
            side = ox.roi_from_landmarks(r.face.landmarks.astype(np.float64)).width
            err = float(np.linalg.norm(g.face.landmarks[:, :2] - r.face.landmarks[:, :2], axis=1).mean()) * 256 / side
            rb = np.array([r.face.blendshapes.get(n, 0.0) for n in NAMES])
            gb = np.array([g.face.blendshapes.get(n, 0.0) for n in NAMES])
            lm_err.append(err)
            seq_lm.append(err)
            bs_err.append(float(np.abs(rb - gb).mean()))
            seq_bs.append(bs_err[-1])
            per_name += np.abs(rb - gb)
            rp, gp = r.face.pose, g.face.pose
            pose_err.append(max(abs(rp.pitch - gp.pitch), abs(rp.yaw - gp.yaw), abs(rp.roll - gp.roll)))
        per_seq[seq] = {
            "frames": len(ref_obs),
            "landmark_px": round(float(np.mean(seq_lm)), 4) if seq_lm else None,
            "blendshape_mae": round(float(np.mean(seq_bs)), 5) if seq_bs else None,
        }
    worst = int(np.argmax(per_name)) if n_both else 0
    result = {
        "frames_compared": n_both,
        "faces_missing": int(missing),
        "faces_extra": int(extra),
        "landmark_px_mean": round(float(np.mean(lm_err)), 4) if lm_err else None,
        "landmark_px_p95": round(float(np.percentile(lm_err, 95)), 4) if lm_err else None,
        "blendshape_mae": round(float(np.mean(bs_err)), 5) if bs_err else None,
        "blendshape_worst": {"name": NAMES[worst], "mae": round(float(per_name[worst] / max(n_both, 1)), 4)},
        "pose_max_deg_p95": round(float(np.percentile(pose_err, 95)), 3) if pose_err else None,
        "per_sequence": per_seq,
    }
    result["passes"] = bool(
        n_both > 0
        and missing == 0
        and extra == 0
        and result["landmark_px_mean"] <= LANDMARK_LIMIT_PX
        and result["blendshape_mae"] <= BLENDSHAPE_LIMIT
    )
    return result


# ---------------------------------------------------------------------------
# Speed of each model alone


def model_inputs(seqs: dict[str, list[np.ndarray]], fp32: ox.OnnxTracker) -> dict[str, np.ndarray]:
    """One real input per model: the clip's tenth frame through the fp32 pipeline."""
    image = cv2.cvtColor(seqs["clip"][10], cv2.COLOR_BGR2RGB)
    det = fp32.detect(image)[0]
    roi = ox.roi_from_detection(det)
    points, _ = fp32.landmarks(image, roi)
    roi = ox.roi_from_landmarks(points)
    affine = roi.crop_to_image(ox.LANDMARK_SIZE)
    sample = affine.copy()
    sample[:, 2] += affine[:, :2] @ np.array([0.5, 0.5]) - 0.5
    crop = cv2.warpAffine(image, sample, (256, 256), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    h, w = image.shape[:2]
    s = 128 / max(w, h)
    m = np.array([[s, 0, (128 - w * s) / 2 + 0.5 * s - 0.5], [0, s, (128 - h * s) / 2 + 0.5 * s - 0.5]])
    det_t = cv2.warpAffine(image, m, (128, 128), flags=cv2.INTER_LINEAR)
    return {
        "detector": (det_t.astype(np.float32) * (2 / 255) - 1)[None],
        "landmarks": (crop.astype(np.float32) / 255)[None],
        "blendshapes": points[np.asarray(ox.BLENDSHAPE_LANDMARKS), :2].astype(np.float32)[None],
    }


def time_models(trackers: dict[str, ox.OnnxTracker], inputs: dict[str, np.ndarray], rounds: int, iters: int) -> dict:
    """Median ms per model run, interleaving variants round by round and
    keeping each variant's best round (least disturbed by other load)."""
    sessions = {"detector": "_detector", "landmarks": "_landmarker", "blendshapes": "_blendshaper"}
    best: dict[str, dict[str, float]] = {v: {} for v in trackers}
    for _ in range(rounds):
        for variant, tracker in trackers.items():
            for role, attr in sessions.items():
                session = getattr(tracker, attr)
                feed = {session.get_inputs()[0].name: inputs[role]}
                session.run(None, feed)
                samples = []
                for _ in range(iters):
                    start = time.perf_counter()
                    session.run(None, feed)
                    samples.append(time.perf_counter() - start)
                ms = statistics.median(samples) * 1000
                best[variant][role] = min(best[variant].get(role, ms), ms)
    return {v: {r: round(ms, 3) for r, ms in roles.items()} for v, roles in best.items()}


# ---------------------------------------------------------------------------
# Spotting parity (when the pipeline exists)


def spotting_parity(ref_factory, onnx_factory) -> dict:
    try:
        import microexpr.pipeline as pipeline  # noqa: F401
    except ImportError:
        return {"status": "skipped: microexpr.pipeline does not exist yet"}
    spot = getattr(pipeline, "spot_episodes", None)
    if spot is None:
        return {"status": "skipped: microexpr.pipeline has no spot_episodes(frames, tracker)"}
    return {"status": "not wired: see docs/onnx.md"}


# ---------------------------------------------------------------------------
# Report


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = {}
    for name in ("onnxruntime", "mediapipe", "numpy", "opencv-python-headless"):
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "packages": packages,
    }


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 3)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# ONNX backend: parity and speed of every variant",
        "",
        f"Machine: {m['cpu']} ({m['arch']}, {m['cores']} cores), Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + f". ONNX Runtime threads: {report['threads']}. Generated by `benchmarks/onnx_parity.py`.",
        "",
        f"Parity gates: landmark mean error ≤ {LANDMARK_LIMIT_PX} px in the 256-px crop, blendshape MAE ≤ "
        f"{BLENDSHAPE_LIMIT}, a face on exactly the frames where MediaPipe finds one. Reference: the MediaPipe "
        f"backend (VIDEO mode) on {report['frames']} real-face frames.",
        "",
        f"MediaPipe backend: p50 {report['mediapipe']['p50_ms']} ms, p95 {report['mediapipe']['p95_ms']} ms per frame.",
        "",
        "| variant | what | landmarks px | blendshape MAE | worst blendshape | pose Δ° p95 | passes | detector ms "
        "| landmarks ms | blendshapes ms | tracker p50 ms | vs fp32 (tracker) | vs fp32 (landmarks) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in report["variants"].items():
        if "error" in v:
            lines.append(f"| {name} | {v.get('note', '')} | build failed: {v['error']} | | | | no | | | | | | |")
            continue
        p, s, models = v["parity"], v["speed"], v["models_ms"]
        worst = f"{p['blendshape_worst']['name']} {p['blendshape_worst']['mae']}"
        lines.append(
            f"| {name} | {v.get('note', '')} | {p['landmark_px_mean']} | {p['blendshape_mae']} | {worst} "
            f"| {p['pose_max_deg_p95']} | {'yes' if p['passes'] else '**no**'} | {models['detector']} "
            f"| {models['landmarks']} | {models['blendshapes']} | {s['p50_ms']} | {v['speedup_tracker']}x "
            f"| {v['speedup_landmarks']}x |"
        )
    lines += ["", "Per-sequence parity:", ""]
    for name, v in report["variants"].items():
        if "parity" in v:
            seqs = "; ".join(
                f"{k}: {s['landmark_px']} px / {s['blendshape_mae']}" for k, s in v["parity"]["per_sequence"].items()
            )
            lines.append(f"- {name}: {seqs}")
    lines += ["", f"Spotting parity: {report['spotting']['status']}", ""]
    lines += ["## Verdict", "", *report["verdict"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=Path, help="experiments folder from convert_onnx.py --experiments")
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "face_landmarker.task")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "onnx")
    args = parser.parse_args(argv)

    from microexpr.tracking import create_tracker

    seqs = sequences()
    frames = sum(len(v) for v in seqs.values())
    print(f"{frames} frames in {len(seqs)} sequences", file=sys.stderr)
    ref, mp_times = run(lambda: create_tracker("mediapipe", model_path=args.model), seqs)
    mp_times2 = run(lambda: create_tracker("mediapipe", model_path=args.model), seqs)[1]
    mp_all = [min(a, b) for a, b in zip(mp_times, mp_times2)]

    # Variants: the shipped ones, then every candidate of the experiments folder.
    variants: dict[str, dict] = {}
    factories = {}
    for variant in ox.OnnxVariant:
        try:
            ox.load_model_files(variant)
        except Exception as exc:  # not shipped (e.g. no int8 variant)
            variants[f"shipped:{variant.value}"] = {"error": str(exc), "note": "shipped variant"}
            continue
        factories[f"shipped:{variant.value}"] = (lambda v=variant: ox.OnnxTracker(variant=v, threads=args.threads), "shipped variant")
    if args.candidates is not None:
        manifest = json.loads((args.candidates / ox.MANIFEST_NAME).read_text())
        for name, files in manifest["variants"].items():
            if "error" in files:
                variants[name] = {"error": files["error"], "note": files.get("note", "")}
                continue
            notes = [manifest["files"][f].get("note", "") for f in files.values() if f in manifest["files"]]
            note = next((n for n in notes if n), "fp32 reference (tf2onnx)")
            # The folder's manifest is trusted by the hash just read: a build
            # product under test, not a device install.
            files = ox.variant_files(args.candidates, manifest, name)
            factories[name] = (lambda f=files: ox.OnnxTracker(files=f, threads=args.threads), note)

    trackers = {}
    for name, (factory, note) in factories.items():
        print(f"variant {name} ...", file=sys.stderr)
        got, times = run(factory, seqs)
        times2 = run(factory, seqs)[1]
        best = [min(a, b) for a, b in zip(times, times2)]
        variants[name] = {
            "note": note,
            "parity": compare(ref, got),
            "speed": {"p50_ms": pct(best, 50), "p95_ms": pct(best, 95)},
        }
        trackers[name] = factory()

    fp32_name = "fp32" if "fp32" in trackers else "shipped:fp32"
    inputs = model_inputs(seqs, trackers[fp32_name])
    rounds, iters = (2, 15) if args.quick else (4, 40)
    models_ms = time_models(trackers, inputs, rounds, iters)
    for name, tracker in trackers.items():
        tracker.close()
        v = variants[name]
        v["models_ms"] = models_ms[name]
        v["speedup_tracker"] = round(variants[fp32_name]["speed"]["p50_ms"] / v["speed"]["p50_ms"], 2)
        v["speedup_landmarks"] = round(models_ms[fp32_name]["landmarks"] / models_ms[name]["landmarks"], 2)

    report = {
        "machine": machine(),
        "threads": args.threads,
        "frames": frames,
        "mediapipe": {"p50_ms": pct(mp_all, 50), "p95_ms": pct(mp_all, 95)},
        "variants": variants,
        "spotting": spotting_parity(None, None),
    }
    report["verdict"] = verdict(report, fp32_name)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "parity.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def verdict(report: dict, fp32_name: str) -> list[str]:
    lines = []
    passing = {n: v for n, v in report["variants"].items() if "parity" in v and v["parity"]["passes"]}
    failing = [n for n, v in report["variants"].items() if "parity" in v and not v["parity"]["passes"]]
    fast = {n: v for n, v in passing.items() if v["speedup_tracker"] >= 1.3}
    mp = report["mediapipe"]["p50_ms"]
    fp32 = report["variants"][fp32_name]["speed"]["p50_ms"]
    lines.append(f"- ONNX fp32 tracker p50 {fp32} ms vs MediaPipe {mp} ms ({round(fp32 / mp, 2)}x MediaPipe's time).")
    lines.append(f"- Pass parity: {', '.join(sorted(passing)) or 'none'}; fail: {', '.join(sorted(failing)) or 'none'}.")
    if fast:
        best = max(fast, key=lambda n: fast[n]["speedup_tracker"])
        lines.append(f"- Target met: {best} passes parity and is {fast[best]['speedup_tracker']}x faster than fp32.")
    else:
        lines.append("- Target NOT met: no variant both passes parity and runs ≥ 1.3x faster than ONNX fp32 here.")
    return lines


if __name__ == "__main__":
    sys.exit(main())

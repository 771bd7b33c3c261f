#!/usr/bin/env python3
"""Build-host step: turn the pinned FaceLandmarker bundle into the ONNX models
that ``microexpr.tracking.onnx`` runs, and record what was made.

This needs TensorFlow (for ``tf2onnx --tflite``) and ``onnx`` — about 1.6 GB
— so it runs in a separate virtualenv, never on the device and never in the
runtime venv. Reproduce it with (versions are the ones recorded in
``provisioning/onnx/manifest.json``)::

    python3.11 -m venv /work/build-venv
    /work/build-venv/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 \\
        onnx==1.23.2 onnxruntime==1.32.0 opencv-python-headless==5.0.0.93 platformdirs
    /work/build-venv/bin/python provisioning/convert_onnx.py \\
        --bundle ../shared/models/face_landmarker.task --out provisioning/onnx

What it does:

1. checks the bundle against the sha256 pin of ``microexpr.models``
   (``FACE_LANDMARKER``) and extracts its three ``.tflite`` models and the
   geometry metadata;
2. converts each model with ``python -m tf2onnx.convert --tflite`` (opset
   17), fixes the batch dimension to 1 and rewrites PRelu into ReLU and
   depthwise convolutions (same outputs to float rounding, about three
   times as fast under ONNX Runtime; see ``rewrite_prelu``);
3. writes the ``int8`` variant by the recipe that passed the parity suite
   (``INT8_RECIPE`` below, chosen from ``--experiments``);
4. writes ``manifest.json``: every file's sha256 and size, the source
   bundle's sha256, each member's sha256, tool versions and the commands;
   then prints the manifest's sha256, which must be pasted into
   ``MANIFEST_SHA256`` of ``device/microexpr/tracking/onnx.py`` — the one
   pin the device trusts.

``--experiments DIR`` additionally writes every quantization candidate that
was tried (see ``CANDIDATES``) into DIR with its own manifest, for
``benchmarks/onnx_parity.py --candidates DIR`` to measure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "device"))

from microexpr.models import FACE_LANDMARKER  # noqa: E402

OPSET = 17
MEMBERS = {
    "detector": "face_detector.tflite",
    "landmarks": "face_landmarks_detector.tflite",
    "blendshapes": "face_blendshapes.tflite",
}
GEOMETRY = "geometry_pipeline_metadata_landmarks.binarypb"
MEDIA_DIR = ROOT.parent / "shared" / "data" / "media"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("tensorflow-cpu", "tensorflow", "tf2onnx", "onnx", "onnxruntime", "numpy", "opencv-python-headless"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def verified_bundle(path: Path) -> Path:
    digest = sha256_file(path)
    if path.stat().st_size != FACE_LANDMARKER.size or digest != FACE_LANDMARKER.sha256:
        sys.exit(f"convert_onnx: {path}: sha256 {digest} is not the pinned {FACE_LANDMARKER.sha256}")
    return path


def extract(bundle: Path, work: Path) -> dict[str, str]:
    """Extract the members; returns member name → sha256."""
    hashes = {}
    with zipfile.ZipFile(bundle) as archive:
        for name in (*MEMBERS.values(), GEOMETRY):
            (work / name).write_bytes(archive.read(name))
            hashes[name] = sha256_file(work / name)
    return hashes


def tf2onnx_convert(tflite: Path, out: Path) -> list[str]:
    """Run tf2onnx as its documented CLI; returns the command (recorded)."""
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(out), "--opset", str(OPSET)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"convert_onnx: tf2onnx failed on {tflite.name}:\n{result.stderr[-2000:]}")
    fix_batch(out)
    return ["python", "-m", "tf2onnx.convert", "--tflite", tflite.name, "--output", out.name, "--opset", str(OPSET)]


def rewrite_prelu(path: Path) -> int:
    """Rewrite every ``PRelu(x, s)`` (per-channel slopes ``s``) as
    ``DWConv(x, s) + DWConv(Relu(x), 1 - s)``: two depthwise 1x1 convolutions
    and a ReLU. Returns how many nodes were rewritten.

    Why: ONNX Runtime 1.32's CPU PRelu kernel is not vectorised and is not
    part of its blocked (NCHWc) convolution layout, so every PRelu also costs
    two layout reorders; in the landmark model its 69 PRelus took about 8 of
    12 ms per run. ReLU, depthwise convolutions and the add are all NCHWc
    operations that ONNX Runtime fuses (the add into the second
    convolution), which brings the model to about 3.5 ms. For x > 0 the
    result is s·x + (1 - s)·x, equal to x up to float rounding; for x ≤ 0 it
    is s·x exactly (measured max difference on the landmark outputs:
    2.4e-4 crop pixels, recorded in the manifest). A slope that is not a
    per-channel constant falls back to ``Max(x, 0) + s * Min(x, 0)``.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    zero = "prelu_rewrite_zero"
    nodes = []
    count = 0
    used_zero = False
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        count += 1
        x, slope_name = node.input
        tag = f"prelu{count}__{node.name}"
        slope = numpy_helper.to_array(inits[slope_name]).astype(np.float32).reshape(-1) if slope_name in inits else None
        if slope is not None and slope.size > 1:
            channels = slope.size
            graph.initializer.extend([
                numpy_helper.from_array(slope.reshape(channels, 1, 1, 1), f"{tag}_s"),
                numpy_helper.from_array((1.0 - slope).reshape(channels, 1, 1, 1), f"{tag}_1ms"),
            ])  # fmt: skip
            nodes += [
                helper.make_node("Relu", [x], [f"{tag}_relu"], name=f"{tag}_relu"),
                helper.make_node("Conv", [x, f"{tag}_s"], [f"{tag}_lin"], name=f"{tag}_dws", group=channels,
                                 kernel_shape=[1, 1]),
                helper.make_node("Conv", [f"{tag}_relu", f"{tag}_1ms"], [f"{tag}_pos"], name=f"{tag}_dwr",
                                 group=channels, kernel_shape=[1, 1]),
                helper.make_node("Add", [f"{tag}_lin", f"{tag}_pos"], list(node.output), name=f"{tag}_add"),
            ]  # fmt: skip
        else:
            used_zero = True
            nodes += [
                helper.make_node("Max", [x, zero], [f"{tag}_pos"], name=f"{tag}_max"),
                helper.make_node("Min", [x, zero], [f"{tag}_neg"], name=f"{tag}_min"),
                helper.make_node("Mul", [f"{tag}_neg", slope_name], [f"{tag}_scaled"], name=f"{tag}_mul"),
                helper.make_node("Add", [f"{tag}_pos", f"{tag}_scaled"], list(node.output), name=f"{tag}_add"),
            ]
    if count:
        if used_zero:
            graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
        del graph.node[:]
        graph.node.extend(nodes)
        referenced = {name for n in graph.node for name in n.input}
        keep = [t for t in graph.initializer if t.name in referenced]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return count


def max_abs_difference(a: Path, b: Path, seed: int = 0) -> float:
    """Largest output difference of two models on the same random input."""
    import numpy as np
    import onnxruntime as ort

    sa = ort.InferenceSession(str(a), providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(str(b), providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in sa.get_inputs()[0].shape]
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    outs_a = sa.run(None, {sa.get_inputs()[0].name: x})
    outs_b = sb.run(None, {sb.get_inputs()[0].name: x})
    return float(max(np.abs(u - v).max() for u, v in zip(outs_a, outs_b)))


def fix_batch(path: Path) -> None:
    """Pin symbolic batch dimensions to 1 (we only ever run one image),
    which lets ONNX Runtime fold shapes at load time."""
    import onnx

    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    onnx.save(model, str(path))


# ---------------------------------------------------------------------------
# Quantization


def calibration_inputs(fp32_dir: Path, count: int, seed: int = 7) -> dict[str, list]:
    """Real model inputs for static quantization: landmark crops and
    detector tensors from the real face media, plus augmented crops (small
    shifts, rotations, scales, brightness/contrast, blur, noise) around the
    tracked face, and blendshape inputs from those crops' landmarks.

    Uses our own fp32 ONNX pipeline and its input functions, so the crops
    are exactly what the device feeds the models.
    """
    import numpy as np

    from microexpr.tracking import onnx as ox

    manifest_sha = sha256_file(fp32_dir / ox.MANIFEST_NAME)
    tracker = ox.OnnxTracker(variant="fp32", model_dir=fp32_dir, pinned_manifest=manifest_sha)
    frames = list(_media_frames())
    rng = np.random.default_rng(seed)
    det_inputs, lm_inputs, bs_inputs = [], [], []
    for i in range(count):
        rgb = frames[i % len(frames)]
        found = tracker.detect(rgb)
        if not found:
            continue
        points, _ = tracker.landmarks(rgb, ox.roi_from_detection(found[0]))
        roi = ox.roi_from_landmarks(points)
        if i >= len(frames):  # beyond one pass over the media: augment
            roi = ox.Roi(
                cx=roi.cx + rng.normal(0, 0.04) * roi.width,
                cy=roi.cy + rng.normal(0, 0.04) * roi.height,
                width=roi.width * rng.uniform(0.9, 1.1),
                height=roi.height * rng.uniform(0.9, 1.1),
                angle=roi.angle + rng.normal(0, 0.12),
            )
            rgb = _photometric(rgb, rng)
        lm_inputs.append(ox.landmark_input(rgb, roi)[0])
        points, _ = tracker.landmarks(rgb, roi)
        bs_inputs.append(ox.blendshape_input(points))
        det_inputs.append(ox.detector_input(rgb)[0])
    tracker.close()
    return {"detector": det_inputs, "landmarks": lm_inputs, "blendshapes": bs_inputs}


def _photometric(rgb, rng):
    import cv2
    import numpy as np

    out = rgb.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        out = out + rng.normal(0, 4, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _media_frames() -> Iterator:
    """RGB frames of every real face medium: every frame of each video and
    each still."""
    import cv2

    for path in sorted(MEDIA_DIR.iterdir()):
        if path.suffix.lower() in (".mp4", ".avi", ".mov", ".mkv"):
            cap = cv2.VideoCapture(str(path))
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            cap.release()
        elif path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            image = cv2.imread(str(path))
            if image is not None:
                yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over a list of arrays."""

    def __init__(self, input_name: str, arrays: list) -> None:
        self._items = iter([{input_name: a} for a in arrays])

    def get_next(self):
        return next(self._items, None)


def _nodes(model_path: Path) -> list:
    import onnx

    return list(onnx.load(str(model_path)).graph.node)


def sensitive_nodes(model_path: Path, *, first: int = 0, last: int = 0, prelu: bool = False, heads: bool = False) -> list[str]:
    """Node names to keep in float: the first/last ``n`` compute nodes
    (Conv/MatMul/Gemm), every PReLU block, and the output heads (the
    nodes that feed graph outputs, back to the last Conv)."""
    import onnx

    model = onnx.load(str(model_path))
    nodes = list(model.graph.node)
    compute = [n for n in nodes if n.op_type in ("Conv", "MatMul", "Gemm", "ConvTranspose")]
    names: set[str] = set()
    names.update(n.name for n in compute[:first])
    if last:
        names.update(n.name for n in compute[-last:])
    if prelu:  # PRelu nodes, or the blocks they were rewritten into (named prelu<n>__...)
        names.update(n.name for n in nodes if n.op_type == "PRelu" or n.name.startswith("prelu"))
    if heads:
        producers = {out: n for n in nodes for out in n.output}
        frontier = [o.name for o in model.graph.output]
        seen: set[str] = set()
        while frontier:
            name = frontier.pop()
            node = producers.get(name)
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            names.add(node.name)
            if node.op_type in ("Conv", "MatMul", "Gemm"):
                continue  # stop at the head's own layer
            frontier.extend(node.input)
    return sorted(names)


def pointwise_convs(model_path: Path) -> list[str]:
    """Names of the 1x1, ungrouped convolutions: most of the arithmetic of
    a MobileNet-style mesh model, and the layers int8 kernels speed up most
    (depthwise convolutions gain little and lose the most precision)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    weights = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = weights.get(node.input[1])
        if group == 1 and weight is not None and tuple(numpy_helper.to_array(weight).shape[2:]) == (1, 1):
            out.append(node.name)
    return out


@dataclass(frozen=True)
class Candidate:
    """One quantization attempt of one model."""

    name: str
    role: str  # detector | landmarks | blendshapes
    kind: str  # dynamic | static | fp16
    note: str
    exclude: Callable[[Path], list[str]] = field(default=lambda p: [])
    per_channel: bool = True
    calibrate: str = "MinMax"  # MinMax | Percentile | Entropy
    op_types: tuple[str, ...] | None = None  # None: every op the quantizer supports
    only: Callable[[Path], list[str]] | None = None  # quantize only these nodes
    symmetric_activations: bool = False


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("lm_dynamic", "landmarks", "dynamic", "quantize_dynamic, all weights (the naive baseline)"),
    Candidate("lm_static_all", "landmarks", "static", "QDQ per-channel, every node, MinMax"),
    Candidate("lm_static_pct", "landmarks", "static", "QDQ per-channel, every node, Percentile 99.999",
              calibrate="Percentile"),
    Candidate("lm_static_excl_edges", "landmarks", "static", "QDQ per-channel, first 2 and last 4 layers float",
              exclude=lambda p: sensitive_nodes(p, first=2, last=4)),
    Candidate("lm_static_excl_prelu", "landmarks", "static", "QDQ per-channel, PReLU blocks + edges float",
              exclude=lambda p: sensitive_nodes(p, first=2, last=4, prelu=True)),
    Candidate("lm_static_excl_heads", "landmarks", "static", "QDQ per-channel, edges + PReLU + output heads float",
              exclude=lambda p: sensitive_nodes(p, first=2, last=4, prelu=True, heads=True)),
    Candidate("lm_static_conv_only", "landmarks", "static", "QDQ per-channel, Conv nodes only (no Q/DQ around Add/PReLU)",
              op_types=("Conv",)),
    Candidate("lm_static_pointwise", "landmarks", "static", "QDQ per-channel, only the 1x1 convolutions; depthwise float",
              only=pointwise_convs),
    Candidate("lm_static_pointwise_s8", "landmarks", "static",
              "QDQ per-channel, 1x1 convolutions only, symmetric int8 activations", only=pointwise_convs,
              symmetric_activations=True),
    Candidate("lm_fp16", "landmarks", "fp16", "float16 weights and activations (ORT float16 converter)"),
    Candidate("det_static", "detector", "static", "QDQ per-channel detector, first/last layers float",
              exclude=lambda p: sensitive_nodes(p, first=1, last=2)),
    Candidate("det_static_heads", "detector", "static", "QDQ per-channel detector, edges + output heads float",
              exclude=lambda p: sensitive_nodes(p, first=1, last=4, heads=True)),
    Candidate("bs_dynamic", "blendshapes", "dynamic", "quantize_dynamic of the blendshape MLP"),
    Candidate("bs_static", "blendshapes", "static", "QDQ per-channel blendshape MLP, first/last layers float",
              exclude=lambda p: sensitive_nodes(p, first=1, last=1)),
    Candidate("bs_fp16", "blendshapes", "fp16", "float16 blendshape MLP"),
)  # fmt: skip


def build_candidate(cand: Candidate, fp32: Path, out: Path, calib: dict[str, list]) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    exclude = cand.exclude(fp32)
    if cand.kind == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        onnx.save(model, str(out))
    elif cand.kind == "dynamic":
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=cand.per_channel)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            prep = Path(tmp) / "prep.onnx"
            quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
            import onnxruntime as ort

            name = ort.InferenceSession(str(prep)).get_inputs()[0].name
            extra: dict = {"CalibPercentile": 99.999} if cand.calibrate == "Percentile" else {}
            if cand.symmetric_activations:
                extra["ActivationSymmetric"] = True
            method = {"MinMax": CalibrationMethod.MinMax, "Percentile": CalibrationMethod.Percentile,
                      "Entropy": CalibrationMethod.Entropy}[cand.calibrate]  # fmt: skip
            quantize_static(
                str(prep), str(out), _Reader(name, calib[cand.role]),
                quant_format=QuantFormat.QDQ, per_channel=cand.per_channel,
                activation_type=QuantType.QInt8 if cand.symmetric_activations else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method, nodes_to_exclude=exclude,
                nodes_to_quantize=cand.only(fp32) if cand.only else None,
                op_types_to_quantize=list(cand.op_types) if cand.op_types else None,
                extra_options=extra,
            )  # fmt: skip
    return {"role": cand.role, "kind": cand.kind, "note": cand.note, "excluded_nodes": len(exclude),
            "calibration_samples": len(calib[cand.role]) if cand.kind == "static" else 0}  # fmt: skip


#: The int8 variant shipped in the manifest: role → candidate name, or None
#: for the fp32 file. Chosen from the parity results (see docs/onnx.md).
#: Measured (benchmarks/results/onnx/parity.md): no int8 landmark model
#: passes parity (best 1.9 px) and none is faster than fp32 on x86; the
#: int8 detector passes only with its heads in float and is slower; the
#: int8 blendshape MLP passes and is faster. So "int8" is fp32 detector and
#: landmarks with the static-int8 blendshape MLP.
INT8_RECIPE: dict[str, str | None] = {"detector": None, "landmarks": None, "blendshapes": "bs_static"}


def write_manifest(out: Path, entries: dict, variants: dict, bundle: Path, member_hashes: dict, extra: dict) -> str:
    files = {}
    for name, info in sorted(entries.items()):
        path = out / name
        files[name] = {"sha256": sha256_file(path), "size": path.stat().st_size, **info}
    manifest = {
        "schema": 1,
        "source": {
            "bundle": FACE_LANDMARKER.name, "version": FACE_LANDMARKER.version,
            "sha256": sha256_file(bundle), "size": bundle.stat().st_size, "members": member_hashes,
            "licence": "Apache-2.0 (Google MediaPipe models); see NOTICE",
        },
        "tools": versions(),
        "opset": OPSET,
        "generated_by": "provisioning/convert_onnx.py (see its docstring for the venv and command)",
        "variants": variants,
        "files": files,
        **extra,
    }  # fmt: skip
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (out / "manifest.json").write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=ROOT.parent / "shared" / "models" / FACE_LANDMARKER.name)
    parser.add_argument("--out", type=Path, default=ROOT / "provisioning" / "onnx")
    parser.add_argument("--experiments", type=Path, help="also write every quantization candidate here")
    parser.add_argument("--calibration", type=int, default=240, help="calibration samples per model")
    parser.add_argument("--only", nargs="*", help="build only these candidates (default: all)")
    args = parser.parse_args(argv)

    bundle = verified_bundle(args.bundle)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        member_hashes = extract(bundle, work)
        entries: dict[str, dict] = {}
        fp32 = {}
        for role, member in MEMBERS.items():
            name = member.replace(".tflite", ".onnx")
            cmd = tf2onnx_convert(work / member, args.out / name)
            plain = work / f"{role}.plain.onnx"
            shutil.copyfile(args.out / name, plain)
            rewritten = rewrite_prelu(args.out / name)
            entries[name] = {
                "derived_from": member, "variant": "fp32", "command": " ".join(cmd),
                "graph_rewrites": f"PRelu -> Relu + 2 depthwise 1x1 Conv + Add ({rewritten} nodes)" if rewritten else "none",
                "max_abs_diff_vs_plain_conversion": max_abs_difference(plain, args.out / name),
            }  # fmt: skip
            fp32[role] = name
        shutil.copyfile(work / GEOMETRY, args.out / GEOMETRY)
        entries[GEOMETRY] = {"derived_from": GEOMETRY, "variant": "any", "command": "copied from the bundle"}
        variants = {"fp32": {**fp32, "geometry": GEOMETRY}}
        # First write an fp32-only manifest so calibration can load the models.
        write_manifest(args.out, entries, variants, bundle, member_hashes, {})

        needs_calibration = args.experiments is not None or any(INT8_RECIPE.values())
        calib = calibration_inputs(args.out, args.calibration) if needs_calibration else {}
        by_name = {c.name: c for c in CANDIDATES}
        int8 = dict(fp32)
        for role, cand_name in INT8_RECIPE.items():
            if cand_name is None:
                continue
            cand = by_name[cand_name]
            name = f"{Path(fp32[role]).stem}.{cand_name}.onnx"
            info = build_candidate(cand, args.out / fp32[role], args.out / name, calib)
            entries[name] = {"derived_from": fp32[role], "variant": "int8", "command": f"candidate {cand_name}", **info}
            int8[role] = name
        if any(INT8_RECIPE.values()):
            variants["int8"] = {**int8, "geometry": GEOMETRY}
        digest = write_manifest(args.out, entries, variants, bundle, member_hashes, {"int8_recipe": INT8_RECIPE})

        if args.experiments is not None:
            exp = args.experiments
            exp.mkdir(parents=True, exist_ok=True)
            exp_entries = {}
            for name in (*fp32.values(), GEOMETRY):
                shutil.copyfile(args.out / name, exp / name)
                exp_entries[name] = entries[name]
            exp_variants = {"fp32": {**fp32, "geometry": GEOMETRY}}
            for cand in CANDIDATES:
                if args.only and cand.name not in args.only:
                    continue
                name = f"{Path(fp32[cand.role]).stem}.{cand.name}.onnx"
                print(f"candidate {cand.name} ...", file=sys.stderr)
                try:
                    info = build_candidate(cand, args.out / fp32[cand.role], exp / name, calib)
                except Exception as exc:  # a failed attempt is a result too
                    print(f"  failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    exp_variants[cand.name] = {"error": f"{type(exc).__name__}: {exc}", "role": cand.role,
                                               "note": cand.note}  # fmt: skip
                    continue
                exp_entries[name] = {"derived_from": fp32[cand.role], "variant": cand.name, **info}
                exp_variants[cand.name] = {**fp32, "geometry": GEOMETRY, cand.role: name}
            write_manifest(exp, exp_entries, exp_variants, bundle, member_hashes, {})
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())

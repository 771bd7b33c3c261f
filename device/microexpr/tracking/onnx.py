"""FaceTracker backend on ONNX Runtime, running the FaceLandmarker's own models.

The three networks of the pinned ``face_landmarker.task`` bundle (BlazeFace
short-range detector, 478-point attention mesh, blendshape MLP) are
converted to ONNX on a build host (``provisioning/convert_onnx.py``) and
run here with our own pre- and post-processing, which follows what the
MediaPipe Tasks graphs do (``face_detector_graph.cc``,
``face_landmarks_detector_graph.cc``, ``face_blendshapes_graph.cc``,
``face_geometry/libs/geometry_pipeline.cc``):

1. **detect** (only when not tracking): the frame is letterboxed into
   128x128, values in [-1, 1]; 896 SSD anchors decode boxes and six
   keypoints; sigmoid scores ≥ ``min_detection_confidence``; weighted NMS.
   Image warps map pixel index to pixel index, as MediaPipe's do.
2. **region of interest**: the box centre, turned so that the eye line
   (keypoints 0 → 1) is horizontal, scaled 1.5x.
3. **landmarks**: the rotated region is warped to 256x256 (values in
   [0, 1], border replicated); the model returns 478 (x, y, z) in crop
   pixels and a face-presence logit; the points are mapped back into the
   frame with the inverse of the crop transform, depth with MediaPipe's
   scale (``_z_factor``).
4. **tracking** (MediaPipe's VIDEO mode): the next frame's region is the
   landmarks' bounding box turned by the line from landmark 33 to 263,
   squared on its long side and scaled 1.5x. When the presence score drops
   under ``min_presence_confidence`` the detector runs again — on the same
   frame, where MediaPipe would report no face and detect on the next one.
5. **blendshapes**: the 146-landmark subset, in pixels of the frame, into
   the MLP; 52 scores, ``_neutral`` dropped.
6. **head pose**: MediaPipe's geometry pipeline re-derived: the landmarks
   are unprojected with a 63° vertical-FOV pinhole camera and the canonical
   face (``geometry_pipeline_metadata_landmarks.binarypb``) is fitted to
   them by weighted orthogonal Procrustes (33 weighted points); the 4x4
   matrix is turned into a ``HeadPose`` by the MediaPipe backend's own
   conversion, so both backends report the same convention.
7. **smoothing** (VIDEO mode with one face): a one-euro filter over the
   landmarks with MediaPipe's settings (``LandmarkSmoother``); the smoothed
   points are reported and feed blendshapes and pose, the raw ones the next
   region. ``smooth=False`` gives the per-frame model output.

Known differences from MediaPipe: re-detection on the same frame after a
loss, and one face per stream. The parity suite (``benchmarks/onnx_parity.py``)
measures what this costs.

Every model file is checked against ``provisioning/onnx/manifest.json``
(whose own sha256 is pinned below) before ONNX Runtime sees its bytes: a
modified file is refused with ``ModelError``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from microexpr.capture import Frame
from microexpr.errors import ConfigError, ExitCode, MicroexprError, ModelError
from microexpr.tracking.base import Face, FaceObservation, HeadPose

log = logging.getLogger(__name__)

#: sha256 of ``provisioning/onnx/manifest.json``: the one value that pins every
#: ONNX file (the manifest holds their hashes). ``convert_onnx.py`` prints it.
MANIFEST_SHA256 = "8797540fafddbd4d3f67bd5a31e4aff0349e6510b259fbf8239484b9a2bf70d8"
MANIFEST_NAME = "manifest.json"
ENV_ONNX_DIR = "MICROEXPR_ONNX_DIR"
#: Folder of the installed ONNX set inside the models directory.
ONNX_SUBDIR = "onnx"
#: Where the repository keeps the converted models (a checkout is the install).
REPO_ONNX_DIR = Path(__file__).resolve().parents[3] / "provisioning" / "onnx"


class OnnxVariant(StrEnum):
    """Which set of converted weights to run."""

    FP32 = "fp32"
    INT8 = "int8"


#: Landmarks the blendshape model reads, in its input order: the 146-entry
#: ``kLandmarksSubsetIdxs`` of MediaPipe's face_blendshapes_graph.cc (a fact
#: about the model's input layout, restated as data).
BLENDSHAPE_LANDMARKS: tuple[int, ...] = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67,
    70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148,
    149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191,
    195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297,
    300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374,
    375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415,
    454, 466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
)  # fmt: skip

#: The blendshape model's 52 outputs, in order (index 0 is dropped).
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
    "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft",
    "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)  # fmt: skip

DETECTOR_SIZE = 128
LANDMARK_SIZE = 256
NUM_LANDMARKS = 478
#: Landmarks whose line is made horizontal when tracking (outer eye corners).
_TRACK_EYE_A, _TRACK_EYE_B = 33, 263
_ROI_SCALE = 1.5


# ---------------------------------------------------------------------------
# Model files: manifest, verification, sessions


_ROLES = ("detector", "landmarks", "blendshapes", "geometry")


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """Verified bytes of one variant's models, ready for ONNX Runtime."""

    directory: Path
    variant: str
    detector: bytes
    landmarks: bytes
    blendshapes: bytes
    geometry: bytes
    names: Mapping[str, str]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{what} {path}: no such file; run `microexpr provision-model --onnx`") from None
    except OSError as exc:
        raise ModelError(f"{what} {path}: cannot read: {exc.strerror}") from None


def onnx_search_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where the ONNX models are looked for: ``$MICROEXPR_ONNX_DIR``, the
    installed copy in the models directory, then the repository's folder."""
    env = os.environ if env is None else env
    dirs: list[Path] = []
    if env.get(ENV_ONNX_DIR):
        dirs.append(Path(env[ENV_ONNX_DIR]).expanduser())
    try:
        from microexpr.models import default_models_dir

        dirs.append(default_models_dir(env) / ONNX_SUBDIR)
    except ImportError:  # pragma: no cover - models.py is part of the package
        pass
    dirs.append(REPO_ONNX_DIR)
    return dirs


def load_manifest(directory: Path, *, pinned: str | None = None) -> dict[str, Any]:
    """The manifest of ``directory``, refused unless its sha256 is ``pinned``
    (default: the build's ``MANIFEST_SHA256``)."""
    path = directory / MANIFEST_NAME
    data = _read(path, "ONNX manifest")
    digest = _sha256(data)
    expected = MANIFEST_SHA256 if pinned is None else pinned
    if digest != expected:
        raise ModelError(f"ONNX manifest {path}: sha256 {digest} is not the pinned {expected}")
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ModelError(f"ONNX manifest {path}: not JSON: {exc}") from None
    if not isinstance(manifest, dict) or "files" not in manifest or "variants" not in manifest:
        raise ModelError(f"ONNX manifest {path}: missing 'files' or 'variants'")
    return manifest


def verified_file(directory: Path, manifest: Mapping[str, Any], name: str) -> bytes:
    """Bytes of ``name``, which must be listed in the manifest with this
    exact size and sha256; the same bytes are then given to ONNX Runtime."""
    entry = manifest["files"].get(name)
    path = directory / name
    if entry is None:
        raise ModelError(f"ONNX model {path}: not listed in {directory / MANIFEST_NAME}")
    data = _read(path, "ONNX model")
    if len(data) != int(entry["size"]):
        raise ModelError(f"ONNX model {path}: {len(data)} bytes, expected {entry['size']}")
    digest = _sha256(data)
    if digest != entry["sha256"]:
        raise ModelError(f"ONNX model {path}: sha256 {digest} is not the pinned {entry['sha256']}")
    return data


def load_model_files(
    variant: OnnxVariant | str = OnnxVariant.FP32, model_dir: Path | None = None, *, pinned: str | None = None
) -> ModelFiles:
    """Find and verify the models of ``variant``.

    With ``model_dir`` only that folder is used; otherwise the first folder
    of :func:`onnx_search_dirs` holding a manifest.
    """
    try:
        chosen = OnnxVariant(str(variant))
    except ValueError:
        known = ", ".join(v.value for v in OnnxVariant)
        raise ConfigError(f"onnx.variant: unknown variant {variant!r} (known: {known})") from None
    if model_dir is not None:
        directory = Path(model_dir).expanduser()
    else:
        candidates = onnx_search_dirs()
        found = [d for d in candidates if (d / MANIFEST_NAME).is_file()]
        if not found:
            looked = ", ".join(str(d) for d in candidates)
            raise ModelError(f"ONNX models not installed (looked in {looked}); run `microexpr provision-model --onnx`")
        directory = found[0]
    manifest = load_manifest(directory, pinned=pinned)
    return variant_files(directory, manifest, chosen.value)


def variant_files(directory: Path, manifest: Mapping[str, Any], variant: str) -> ModelFiles:
    """Verified bytes of the files a manifest lists for ``variant`` (the
    parity benchmark also uses this for its experimental variants)."""
    names = manifest["variants"].get(variant)
    if not isinstance(names, dict) or any(role not in names for role in _ROLES):
        raise ModelError(f"ONNX manifest {directory / MANIFEST_NAME}: no complete variant {variant!r}")
    blobs = {role: verified_file(directory, manifest, names[role]) for role in _ROLES}
    return ModelFiles(directory=directory, variant=variant, names={r: names[r] for r in _ROLES}, **blobs)


@dataclass(frozen=True, slots=True)
class InstallResult:
    """What :func:`install_models` did."""

    directory: Path
    installed: tuple[str, ...]
    kept: tuple[str, ...]


def install_models(source: Path | None = None, models_dir: Path | None = None) -> InstallResult:
    """Copy the pinned ONNX set into ``<models_dir>/face_landmarker_onnx``.

    ``source`` is a folder holding ``manifest.json`` and the files (default:
    the repository's ``provisioning/onnx``). The manifest must match the
    pin and every file its hash before anything is written; files already
    installed and verified are kept; the manifest is written last, so an
    interrupted install is never picked up as complete.
    """
    from microexpr.models import default_models_dir

    src = Path(source).expanduser() if source is not None else REPO_ONNX_DIR
    if src.is_file():
        src = src.parent
    manifest = load_manifest(src)
    blobs = {name: verified_file(src, manifest, name) for name in manifest["files"]}
    dest = (Path(models_dir).expanduser() if models_dir is not None else default_models_dir()) / ONNX_SUBDIR
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MicroexprError(
            f"ONNX models directory {dest}: cannot create: {exc.strerror} (run as the service user, or pass --dir)",
            exit_code=ExitCode.IO_ERROR,
        ) from None
    installed, kept = [], []
    for name, data in (*blobs.items(), (MANIFEST_NAME, (src / MANIFEST_NAME).read_bytes())):
        target = dest / name
        if target.is_file() and target.read_bytes() == data:
            kept.append(name)
            continue
        tmp = target.with_name(f".{name}.part")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise MicroexprError(f"ONNX model {target}: cannot write: {exc.strerror}", exit_code=ExitCode.IO_ERROR) from None
        installed.append(name)
    load_manifest(dest)  # what is there now is the pinned set
    return InstallResult(directory=dest, installed=tuple(installed), kept=tuple(kept))


def _session(data: bytes, threads: int, what: str) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        # In the runtime set; a venv built without it gets one line and exit 78.
        raise ConfigError(
            "tracker.backend = \"onnx\" needs onnxruntime, which is not installed "
            "(pip install -r requirements/runtime.txt)") from None

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"ONNX model {what}: ONNX Runtime cannot load it: {first}") from None


# ---------------------------------------------------------------------------
# Geometry pieces (pure functions, tested on their own)


@dataclass(frozen=True, slots=True)
class Roi:
    """A rotated rectangle of the frame, in pixels; ``angle`` in radians
    (positive turns the crop's x axis toward the image's y axis)."""

    cx: float
    cy: float
    width: float
    height: float
    angle: float

    def crop_to_image(self, size: int) -> np.ndarray:
        """2x3 affine map from crop pixel coordinates (0..size) to frame pixels."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        sx, sy = self.width / size, self.height / size
        linear = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
        offset = np.array([self.cx, self.cy]) - linear @ np.array([size / 2.0, size / 2.0])
        return np.hstack([linear, offset[:, None]])


@dataclass(frozen=True, slots=True)
class Detection:
    """One BlazeFace detection in frame pixels: box (xmin, ymin, xmax, ymax),
    six keypoints (eyes, nose, mouth, ears), and the sigmoid score."""

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    score: float


def ssd_anchors() -> np.ndarray:
    """(896, 2) anchor centres of BlazeFace short-range, in 0..1.

    MediaPipe's options for this model: 4 layers with strides 8, 16, 16, 16,
    aspect ratio 1 plus one interpolated scale, fixed anchor size, offset
    0.5. Layers that share a stride share a grid, so 2 anchors per cell of
    the 16x16 grid and 6 per cell of the 8x8 grid.
    """
    centres: list[tuple[float, float]] = []
    for stride, per_cell in ((8, 2), (16, 6)):
        grid = DETECTOR_SIZE // stride
        for y in range(grid):
            for x in range(grid):
                centres.extend([((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell)
    return np.asarray(centres, dtype=np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) against boxes ``b`` (n, 4)."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Blend overlapping detections (score-weighted mean of box and
    keypoints, the best score kept), best first; BlazeFace fires on many
    neighbouring anchors for one face and the blend is steadier than
    keeping only the best."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.arange(len(scores))
    out: list[tuple[np.ndarray, np.ndarray, float]] = []
    while remaining.size:
        top = remaining[0]
        overlap = _iou(boxes[top], boxes[remaining]) > iou_threshold
        overlap[0] = True
        group = remaining[overlap]
        weights = scores[group][:, None]
        total = float(weights.sum())
        box = (boxes[group] * weights).sum(axis=0) / total
        kps = (keypoints[group] * weights[:, :, None]).sum(axis=0) / total
        out.append((box, kps, float(scores[top])))
        remaining = remaining[~overlap]
    return out


def roi_from_detection(det: Detection) -> Roi:
    """The landmark model's region for a fresh detection."""
    xmin, ymin, xmax, ymax = det.box
    (x0, y0), (x1, y1) = det.keypoints[0], det.keypoints[1]
    angle = _normalize_angle(-math.atan2(-(y1 - y0), x1 - x0))
    return Roi(
        cx=(xmin + xmax) / 2,
        cy=(ymin + ymax) / 2,
        width=(xmax - xmin) * _ROI_SCALE,
        height=(ymax - ymin) * _ROI_SCALE,
        angle=angle,
    )


def roi_from_landmarks(points: np.ndarray) -> Roi:
    """The next frame's region from this frame's landmarks (pixels)."""
    xmin, ymin = points[:, 0].min(), points[:, 1].min()
    xmax, ymax = points[:, 0].max(), points[:, 1].max()
    (x0, y0), (x1, y1) = points[_TRACK_EYE_A, :2], points[_TRACK_EYE_B, :2]
    angle = _normalize_angle(-math.atan2(-(y1 - y0), x1 - x0))
    side = max(xmax - xmin, ymax - ymin) * _ROI_SCALE
    return Roi(cx=float(xmin + xmax) / 2, cy=float(ymin + ymax) / 2, width=float(side), height=float(side), angle=angle)


def _normalize_angle(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


# ---------------------------------------------------------------------------
# Head pose: MediaPipe's geometry pipeline, re-derived


@dataclass(frozen=True, slots=True)
class CanonicalFace:
    """The canonical face model (468 points, centimetres, right-handed) and
    the Procrustes weights of its 33 anchor points."""

    points: np.ndarray  # (468, 3)
    weights: np.ndarray  # (468,)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _proto_fields(buf: bytes) -> dict[int, list[Any]]:
    """Minimal protobuf wire-format reader (varint, 32/64-bit, bytes): all
    this one small metadata message needs, without generated classes."""
    out: dict[int, list[Any]] = {}
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i : i + length], i + length
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.setdefault(field, []).append((wire, value))
    return out


def parse_geometry_metadata(data: bytes) -> CanonicalFace:
    """Canonical mesh and Procrustes basis from
    ``geometry_pipeline_metadata_landmarks.binarypb`` (GeometryPipelineMetadata:
    1 = canonical_mesh {3 = vertex_buffer, 5 floats per vertex: x y z u v},
    2 = procrustes_landmark_basis {1 = landmark_id, 2 = weight})."""
    try:
        top = _proto_fields(data)
        mesh = _proto_fields(top[1][0][1])
        floats: list[float] = []
        for wire, value in mesh[3]:
            floats.extend(np.frombuffer(value, dtype="<f4").tolist())  # packed or not
        vertices = np.asarray(floats, dtype=np.float64).reshape(-1, 5)[:, :3]
        weights = np.zeros(len(vertices))
        for _wire, entry in top[2]:
            fields = _proto_fields(entry)
            landmark_id = fields[1][0][1]
            weights[landmark_id] = float(np.frombuffer(fields[2][0][1], dtype="<f4")[0])
    except (KeyError, IndexError, ValueError) as exc:
        raise ModelError(f"geometry metadata: malformed ({exc})") from None
    if len(vertices) != 468 or weights.sum() <= 0:
        raise ModelError(f"geometry metadata: expected 468 vertices and positive weights, got {len(vertices)}")
    return CanonicalFace(points=vertices, weights=weights)


def weighted_procrustes(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """4x4 similarity transform T (scale·rotation, translation) minimising
    Σ w_i |T·s_i - t_i|², reflections excluded (Umeyama's solution with
    weights)."""
    w = weights / weights.sum()
    mu_s = w @ source
    mu_t = w @ target
    src = source - mu_s
    tgt = target - mu_t
    cov = (tgt * w[:, None]).T @ src
    u, _sv, vt = np.linalg.svd(cov)
    d = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2, 2] = -1.0
    rot = u @ d @ vt
    var = float((w * (src**2).sum(axis=1)).sum())
    scale = float(np.trace((rot @ src.T) @ (tgt * w[:, None]))) / var
    out = np.eye(4)
    out[:3, :3] = scale * rot
    out[:3, 3] = mu_t - scale * rot @ mu_s
    return out


def face_pose_matrix(
    landmarks: np.ndarray, width: int, height: int, canonical: CanonicalFace, vertical_fov_deg: float = 63.0
) -> np.ndarray:
    """The facial transformation matrix (canonical face → camera, OpenGL
    axes, centimetres) from frame-pixel landmarks, as MediaPipe estimates
    it: screen points on the near plane, a first scale from a Procrustes fit
    without unprojection, then unprojection by depth with the product of two
    scale estimates, and a final weighted fit."""
    near = 1.0
    h_near = 2.0 * near * math.tan(math.radians(vertical_fov_deg) / 2.0)
    w_near = width * h_near / height
    pts = np.asarray(landmarks[:468], dtype=np.float64)
    screen = np.empty_like(pts)
    screen[:, 0] = pts[:, 0] / width * w_near - w_near / 2
    screen[:, 1] = (1.0 - pts[:, 1] / height) * h_near - h_near / 2
    screen[:, 2] = pts[:, 2] / width * w_near
    depth_offset = float(screen[:, 2].mean())

    def scale_of(points: np.ndarray) -> float:
        return float(np.linalg.norm(weighted_procrustes(canonical.points, points, canonical.weights)[:3, 0]))

    def unproject(scale: float) -> np.ndarray:
        out = screen.copy()
        out[:, 2] = (screen[:, 2] - depth_offset + near) / scale
        out[:, 0] = screen[:, 0] * out[:, 2] / near
        out[:, 1] = screen[:, 1] * out[:, 2] / near
        out[:, 2] *= -1.0
        return out

    flipped = screen.copy()
    flipped[:, 2] *= -1.0
    first = scale_of(flipped)
    second = scale_of(unproject(first))
    metric = unproject(first * second)
    return weighted_procrustes(canonical.points, metric, canonical.weights)


# ---------------------------------------------------------------------------
# Model inputs (shared with the build script's calibration and the benchmark)


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the detector's square input."""

    scale: float
    pad_x: float
    pad_y: float

    def to_frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detector-input coordinates in 0..1 → frame pixels."""
        return (x * DETECTOR_SIZE - self.pad_x) / self.scale, (y * DETECTOR_SIZE - self.pad_y) / self.scale


def detector_input(rgb: np.ndarray) -> tuple[np.ndarray, Letterbox]:
    """(1, 128, 128, 3) float32 in [-1, 1]: the frame letterboxed by one
    affine warp (bilinear, zero border). The warp maps pixel index to pixel
    index (corners to corners, no half-pixel shift): that is what
    MediaPipe's image-to-tensor step does — with it our detections match the
    MediaPipe face detector's keypoints to 0.02 px, against 3 px with a
    centre-aligned warp."""
    height, width = rgb.shape[:2]
    scale = DETECTOR_SIZE / max(width, height)
    box = Letterbox(scale, (DETECTOR_SIZE - width * scale) / 2.0, (DETECTOR_SIZE - height * scale) / 2.0)
    matrix = np.array([[scale, 0.0, box.pad_x], [0.0, scale, box.pad_y]])
    tensor = cv2.warpAffine(rgb, matrix, (DETECTOR_SIZE, DETECTOR_SIZE), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT)  # fmt: skip
    return (tensor.astype(np.float32) * (2.0 / 255.0) - 1.0)[None], box


def landmark_input(rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, np.ndarray]:
    """(1, 256, 256, 3) float32 in [0, 1] cut from ``roi`` (border
    replicated, same corner-to-corner convention as ``detector_input``), and
    the crop → frame affine map."""
    affine = roi.crop_to_image(LANDMARK_SIZE)
    crop = cv2.warpAffine(
        rgb, affine, (LANDMARK_SIZE, LANDMARK_SIZE),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    return (crop.astype(np.float32) * (1.0 / 255.0))[None], affine


def blendshape_input(points: np.ndarray) -> np.ndarray:
    """(1, 146, 2) float32: the blendshape model's landmarks, frame pixels."""
    return points[np.asarray(BLENDSHAPE_LANDMARKS), :2].astype(np.float32)[None]


# ---------------------------------------------------------------------------
# Temporal smoothing (MediaPipe's VIDEO mode)


class LandmarkSmoother:
    """One-euro filter (Casiez, Roussel & Vogel, CHI 2012) over all landmark
    coordinates, with MediaPipe's FaceLandmarker settings for VIDEO mode
    (``face_landmarks_detector_graph.cc``: min cutoff 0.05 Hz, beta 80,
    derivative cutoff 1 Hz) and its value scaling: speeds are measured in
    face sizes per second (face size = mean of the landmarks' bounding-box
    width and height), so the filter behaves alike for near and far faces.

    Still faces get heavy smoothing (jitter removed), moving ones little
    (no lag). The first frame after a reset passes through unchanged.
    """

    def __init__(self, min_cutoff: float = 0.05, beta: float = 80.0, derivative_cutoff: float = 1.0) -> None:
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.derivative_cutoff = derivative_cutoff
        self.reset()

    def reset(self) -> None:
        self._last_t: float | None = None
        self._rate = 30.0
        self._raw: np.ndarray | None = None
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, rate: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * rate)

    def __call__(self, timestamp: float, points: np.ndarray) -> np.ndarray:
        """Smoothed copy of ``points`` (N, 3) in pixels observed at ``timestamp`` (s)."""
        if self._last_t is not None and timestamp <= self._last_t:
            return points.copy()  # out of order: nothing sensible to filter against
        if self._last_t is not None:
            self._rate = 1.0 / (timestamp - self._last_t)
        self._last_t = timestamp
        size = ((points[:, 0].max() - points[:, 0].min()) + (points[:, 1].max() - points[:, 1].min())) / 2.0
        scale = 1.0 / size if size > 1e-6 else 1.0
        if self._raw is None or self._value is None or self._speed is None:
            speed = np.zeros_like(points)
            self._speed = speed
            self._value = points.copy()
        else:
            speed = (points - self._raw) * scale * self._rate
            a = self._alpha(self.derivative_cutoff, self._rate)
            self._speed = a * speed + (1.0 - a) * self._speed
            alpha = self._alpha(self.min_cutoff + self.beta * np.abs(self._speed), self._rate)
            self._value = alpha * points + (1.0 - alpha) * self._value
        self._raw = points.copy()
        return self._value.copy()


# ---------------------------------------------------------------------------
# The tracker


def _z_factor(angle: float, width: int, height: int) -> float:
    """MediaPipe's depth scale for a turned region, relative to ours.

    MediaPipe scales depth by the length of the crop's x axis measured in
    frame-normalised units (x / width, y / height), then the backends
    multiply by the frame width. In a non-square frame that length grows
    with the region's turn: the factor is sqrt(cos² + (W/H)² sin²) — 1 for
    an upright face or a square frame, 1.29 at 34° in 16:9. Measured against
    the MediaPipe backend to 4 digits; kept so both backends report the same z.
    """
    aspect = width / height
    return math.sqrt(math.cos(angle) ** 2 + (aspect * math.sin(angle)) ** 2)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-100.0, min(100.0, x))))


class OnnxTracker:
    """The FaceLandmarker pipeline on ONNX Runtime, one face per stream.

    ``threads`` is ONNX Runtime's intra-op thread count (1 keeps a core free
    for capture and the rest of the pipeline on a Pi; 0 lets ONNX Runtime
    use every physical core). Tracking state (the last region) lives in the
    instance: one instance per video stream. ``files`` bypasses the lookup
    with already verified bytes (the parity benchmark's candidates).
    """

    def __init__(
        self,
        *,
        variant: OnnxVariant | str = OnnxVariant.FP32,
        threads: int = 1,
        model_dir: Path | None = None,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        nms_iou: float = 0.3,
        pinned_manifest: str | None = None,
        files: ModelFiles | None = None,
        smooth: bool = True,
    ) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise ConfigError(f"tracker.threads: must be an integer >= 0 (0 = ONNX Runtime's default), got {threads!r}")
        if files is None:
            files = load_model_files(variant, model_dir, pinned=pinned_manifest)
        self.variant = files.variant
        self.model_dir = files.directory
        #: role (detector, landmarks, blendshapes, geometry) -> file name loaded.
        self.model_names: dict[str, str] = dict(files.names)
        self.threads = threads
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_presence_confidence = float(min_presence_confidence)
        self.nms_iou = float(nms_iou)
        self._canonical = parse_geometry_metadata(files.geometry)
        self._detector: Any = _session(files.detector, threads, files.names["detector"])
        self._landmarker: Any = _session(files.landmarks, threads, files.names["landmarks"])
        self._blendshaper: Any = _session(files.blendshapes, threads, files.names["blendshapes"])
        self._det_in = self._detector.get_inputs()[0].name
        self._lm_in = self._landmarker.get_inputs()[0].name
        self._bs_in = self._blendshaper.get_inputs()[0].name
        self._det_outputs = self._output_order(self._detector, ("regressors", "classificators"))
        self._anchors = ssd_anchors()
        self._roi: Roi | None = None
        self._smoother = LandmarkSmoother() if smooth else None
        self._closed = False
        #: How often the detector ran (tracking keeps this low; benchmarks read it).
        self.detections = 0
        log.debug("ONNX tracker %s loaded from %s (threads=%d)", self.variant, self.model_dir, threads)

    @staticmethod
    def _output_order(session: Any, names: Sequence[str]) -> list[str]:
        outputs = [o.name for o in session.get_outputs()]
        return [n for n in names if n in outputs] or outputs

    # -- lifecycle -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Drop the sessions. Safe to call twice."""
        self._closed = True
        self._detector = self._landmarker = self._blendshaper = None

    def __enter__(self) -> OnnxTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """Forget the tracked region and the smoothing state (next frame
        runs the detector, as for a new stream)."""
        self._roi = None
        if self._smoother is not None:
            self._smoother.reset()

    # -- stages ----------------------------------------------------------------

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """BlazeFace on the whole frame, best first."""
        x, box = detector_input(rgb)
        regressors, logits = self._detector.run(self._det_outputs, {self._det_in: x})
        raw = regressors.reshape(-1, 16)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -100.0, 100.0)))
        keep = scores >= self.min_detection_confidence
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
        cx = raw[:, 0] / DETECTOR_SIZE + anchors[:, 0]
        cy = raw[:, 1] / DETECTOR_SIZE + anchors[:, 1]
        w = raw[:, 2] / DETECTOR_SIZE
        h = raw[:, 3] / DETECTOR_SIZE
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        kps = raw[:, 4:16].reshape(-1, 6, 2) / DETECTOR_SIZE + anchors[:, None, :]
        out = []
        for rect, points, score in weighted_nms(boxes, kps, scores, self.nms_iou):
            bx, by = box.to_frame(rect[[0, 2]], rect[[1, 3]])
            px, py = box.to_frame(points[:, 0], points[:, 1])
            out.append(
                Detection(box=(float(bx[0]), float(by[0]), float(bx[1]), float(by[1])),
                          keypoints=np.stack([px, py], axis=1), score=score)
            )  # fmt: skip
        return out

    def landmarks(self, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """478 landmarks in frame pixels (z scaled like x) and the presence score."""
        x, affine = landmark_input(rgb, roi)
        outputs = self._landmarker.run(None, {self._lm_in: x})
        mesh = next(o for o in outputs if o.size == NUM_LANDMARKS * 3).reshape(NUM_LANDMARKS, 3).astype(np.float64)
        flag = next(o for o in outputs if o.size == 1 and o.ndim == 4)
        points = np.empty((NUM_LANDMARKS, 3), dtype=np.float64)
        points[:, :2] = mesh[:, :2] @ affine[:, :2].T + affine[:, 2]
        points[:, 2] = mesh[:, 2] * (roi.width / LANDMARK_SIZE) * _z_factor(roi.angle, rgb.shape[1], rgb.shape[0])
        return points, _sigmoid(float(flag.reshape(-1)[0]))

    def blendshapes(self, points: np.ndarray) -> dict[str, float]:
        """The 51 blendshape scores (``_neutral`` dropped) from frame-pixel landmarks."""
        scores = self._blendshaper.run(None, {self._bs_in: blendshape_input(points)})[0].reshape(-1)
        return {name: float(scores[i]) for i, name in enumerate(BLENDSHAPE_NAMES) if i > 0}

    def pose(self, points: np.ndarray, width: int, height: int) -> tuple[HeadPose, np.ndarray]:
        from microexpr.tracking.mediapipe import pose_from_matrix

        matrix = face_pose_matrix(points, width, height, self._canonical)
        return pose_from_matrix(matrix), matrix

    # -- the FaceTracker protocol ----------------------------------------------

    def process(self, frame: Frame) -> FaceObservation:
        """Track the face in one frame. No face is a normal result (``faces=()``)."""
        if self._closed:
            raise RuntimeError("OnnxTracker.process() after close()")
        rgb = _to_rgb(frame.image)
        height, width = rgb.shape[:2]
        face = self._track(rgb)
        faces: tuple[Face, ...] = ()
        if face is None and self._smoother is not None:
            self._smoother.reset()
        if face is not None:
            points, presence = face
            if self._smoother is not None:
                # Smoothed points feed the output, blendshapes and pose; the
                # next region was already taken from the raw ones, as in MediaPipe.
                points = self._smoother(frame.timestamp, points)
            pose, _matrix = self.pose(points, width, height)
            landmarks = points.astype(np.float32)
            landmarks.setflags(write=False)
            faces = (
                Face(landmarks=landmarks, blendshapes=self.blendshapes(points), pose=pose, confidence=presence),
            )
        return FaceObservation(frame_index=frame.index, timestamp=frame.timestamp, width=width, height=height, faces=faces)

    def _track(self, rgb: np.ndarray) -> tuple[np.ndarray, float] | None:
        """Landmarks from the tracked region, or from a fresh detection when
        there is none or the face left it; updates the tracked region."""
        attempts = [self._roi] if self._roi is not None else []
        attempts.append(None)  # None: detect
        for roi in attempts:
            if roi is None:
                self.detections += 1
                found = self.detect(rgb)
                if not found:
                    break
                roi = roi_from_detection(found[0])
            points, presence = self.landmarks(rgb, roi)
            if presence >= self.min_presence_confidence:
                self._roi = roi_from_landmarks(points)
                return points, presence
        self._roi = None
        return None


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

"""FaceTracker backend on the MediaPipe Tasks FaceLandmarker (VIDEO mode).

MediaPipe's result is converted once, here, into ``FaceObservation``:
landmarks in pixels, the 52 blendshapes by name, and a head pose in degrees.
Nothing else in the package imports mediapipe.

Head pose convention (the one OpenFace documents for ``pose_Rx/Ry/Rz``):
the rotation is expressed in the camera frame of OpenCV (x to the image
right, y down, z away from the camera) and decomposed as
``R = Rx(pitch) @ Ry(yaw) @ Rz(roll)``. In plain words, with a camera that
does not mirror the image:

* pitch > 0: the face turns down (chin toward the chest);
* yaw > 0: the face turns toward the image's left, i.e. the subject's right;
* roll > 0: the top of the head tilts toward the image's right, i.e. toward
  the subject's left shoulder; rotating the picture counter-clockwise on
  screen by θ lowers roll by θ.

MediaPipe's facial transformation matrix maps the canonical face model
into its OpenGL-style camera frame (y up, z toward the viewer), so we
conjugate it with diag(1, -1, -1) before decomposing. Mirroring the image
left-right flips the sign of yaw and roll and keeps pitch (tested).

Confidence: the Tasks API reports no per-face score. A face is only
returned when the detector (``min_detection_confidence``) and the landmark
model's face-presence score (``min_presence_confidence``) both cleared their
thresholds, so every returned face gets ``confidence = 1.0`` and a frame
without a face has no ``Face`` at all. The number is kept in the contract so
that a backend with a real score (ONNX Runtime) can fill it in.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from microexpr.capture import Frame
from microexpr.errors import ModelError
from microexpr.tracking.base import Face, FaceObservation, HeadPose
from microexpr.tracking.cpu import mediapipe_refusal

log = logging.getLogger(__name__)

#: Number of points in the FaceLandmarker mesh (468 face + 2 × 5 iris).
NUM_LANDMARKS = 478
#: MediaPipe's catch-all category, not a facial action: dropped.
NEUTRAL_CATEGORY = "_neutral"
#: OpenGL camera frame (y up, z toward viewer) ↔ OpenCV frame (y down, z away).
_GL_TO_CV = np.diag([1.0, -1.0, -1.0])


def rotation_to_euler(rotation_gl: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees from MediaPipe's 3x3 rotation block.

    The block may carry a uniform scale (the canonical model is fitted to the
    face's size), so it is projected to the nearest rotation first.
    """
    u, _s, vt = np.linalg.svd(np.asarray(rotation_gl, dtype=np.float64))
    rot = u @ vt
    if np.linalg.det(rot) < 0:  # a reflection cannot be a head pose
        u[:, -1] *= -1
        rot = u @ vt
    r = _GL_TO_CV @ rot @ _GL_TO_CV
    # R = Rx(a) Ry(b) Rz(c): R[0,2] = sin b, R[1,2] = -sin a cos b,
    # R[2,2] = cos a cos b, R[0,1] = -cos b sin c, R[0,0] = cos b cos c.
    yaw = math.asin(max(-1.0, min(1.0, float(r[0, 2]))))
    pitch = math.atan2(-float(r[1, 2]), float(r[2, 2]))
    roll = math.atan2(-float(r[0, 1]), float(r[0, 0]))
    return math.degrees(pitch), math.degrees(yaw), math.degrees(roll)


def pose_from_matrix(matrix: np.ndarray) -> HeadPose:
    """HeadPose from the 4x4 facial transformation matrix (translation in
    the canonical model's units, centimetres, in OpenCV camera axes)."""
    m = np.asarray(matrix, dtype=np.float64).reshape(4, 4)
    pitch, yaw, roll = rotation_to_euler(m[:3, :3])
    tx, ty, tz = (_GL_TO_CV @ m[:3, 3]).tolist()
    return HeadPose(pitch=pitch, yaw=yaw, roll=roll, translation=(tx, ty, tz))


def face_from_mediapipe(
    landmarks: Any, blendshapes: Any, matrix: np.ndarray | None, width: int, height: int, subject_id: int = 0
) -> Face:
    """One ``Face`` from one entry of a FaceLandmarkerResult (the boundary)."""
    # one list, one array, one multiply (a per-row numpy assignment cost
    # 0.3 ms a frame); products in float64 then rounded, as before
    xyz = np.array([(lm.x, lm.y, lm.z) for lm in landmarks], dtype=np.float64).reshape(-1, 3)
    scores = {
        c.category_name: float(c.score) for c in blendshapes if c.category_name and c.category_name != NEUTRAL_CATEGORY
    }
    return face_from_arrays(xyz, scores, matrix, width, height, subject_id)


def face_from_arrays(
    xyz: np.ndarray, scores: dict[str, float], matrix: np.ndarray | None, width: int, height: int, subject_id: int = 0
) -> Face:
    """One ``Face`` from normalised landmarks (n, 3) float64, blendshape
    scores by name (``NEUTRAL_CATEGORY`` left out) and the transformation
    matrix: what both readers of MediaPipe's result produce."""
    points = (xyz * np.array([width, height, width], dtype=np.float64)).astype(np.float32)
    pose = pose_from_matrix(matrix) if matrix is not None else HeadPose(0.0, 0.0, 0.0)
    points.setflags(write=False)
    return Face(landmarks=points, blendshapes=scores, pose=pose, confidence=1.0, subject_id=subject_id)


_Raw = tuple[np.ndarray, dict[str, float], "np.ndarray | None"]


class _DirectReader:
    """FaceLandmarker's VIDEO call with its C result read straight into numpy.

    MediaPipe's Python API turns the C result into 478 ``NormalizedLandmark``
    and 52 ``Category`` objects per face (``FaceLandmarkerResult.from_ctypes``:
    0.56 ms of a 7.9 ms call, process CPU, measured on the 2-core x86
    machine), which ``face_from_mediapipe`` then turns into one array. This
    reads the landmarks' x, y, z as one float32 view of the C array (the
    same float32 values the Python objects carry, widened to float64 alike:
    equal bit for bit, tests/test_tracking.py) and closes the result as the
    API does. It uses the binding's own ctypes structs and library handle,
    which are not public: ``probe`` checks the layout it relies on and
    returns None when anything differs (another MediaPipe release), and the
    tracker then keeps the public call.
    """

    def __init__(self, landmarker: Any, result_cls: Any, stride: int) -> None:
        self._landmarker = landmarker
        self._result_cls = result_cls
        self._detect = landmarker._lib.MpFaceLandmarkerDetectForVideo
        self._close = landmarker._lib.MpFaceLandmarkerCloseResult
        self._stride = stride

    @classmethod
    def probe(cls, landmarker: Any) -> _DirectReader | None:
        if os.environ.get("MICROEXPR_MEDIAPIPE_PUBLIC_API") == "1":
            return None
        try:
            import ctypes

            from mediapipe.tasks.python.components.containers import landmark_c
            from mediapipe.tasks.python.vision import face_landmarker as fl

            result_cls = fl.MpFaceLandmarkerResultC
            lm_cls = landmark_c.MpNormalizedLandmarkC
            fields = dict(result_cls._fields_)
            ok = (
                [name for name, _ in lm_cls._fields_[:3]] == ["x", "y", "z"]
                and all(t is ctypes.c_float for _, t in lm_cls._fields_[:3])
                and (lm_cls.x.offset, lm_cls.y.offset, lm_cls.z.offset) == (0, 4, 8)
                and ctypes.sizeof(lm_cls) % 4 == 0
                and {"face_landmarks", "face_landmarks_count", "face_blendshapes", "face_blendshapes_count",
                     "facial_transformation_matrixes", "facial_transformation_matrixes_count"} <= set(fields)
                and fields["face_landmarks"]._type_._fields_[0][1]._type_ is lm_cls
                and callable(landmarker._lib.MpFaceLandmarkerDetectForVideo)
                and callable(landmarker._lib.MpFaceLandmarkerCloseResult)
                and landmarker._handle
            )
        except (ImportError, AttributeError, KeyError, IndexError, TypeError):
            ok = False
        if not ok:
            log.debug("MediaPipe's C result layout is not the one known here: using the public Python API")
            return None
        return cls(landmarker, result_cls, ctypes.sizeof(lm_cls) // 4)

    def detect(self, image: Any, timestamp_ms: int) -> list[_Raw]:
        import ctypes

        res = self._result_cls()
        # raises like detect_for_video on a non-OK status (the binding's errcheck)
        self._detect(self._landmarker._handle, image._image_ptr, None, timestamp_ms, ctypes.byref(res))
        try:
            return self.read(res)
        finally:
            self._close(ctypes.byref(res))

    def read(self, res: Any) -> list[_Raw]:
        """Per face of a C result struct: landmarks, scores, matrix (copies)."""
        import ctypes

        out: list[_Raw] = []
        stride = self._stride
        for i in range(res.face_landmarks_count):
            lms = res.face_landmarks[i]
            n = int(lms.landmarks_count)
            if n and lms.landmarks:
                buf = (ctypes.c_float * (n * stride)).from_address(ctypes.addressof(lms.landmarks.contents))
                xyz = np.frombuffer(buf, dtype=np.float32).reshape(n, stride)[:, :3].astype(np.float64)
            else:
                xyz = np.zeros((0, 3))
            scores: dict[str, float] = {}
            if i < res.face_blendshapes_count:
                cats = res.face_blendshapes[i]
                for j in range(cats.categories_count):
                    c = cats.categories[j]
                    name = c.category_name
                    if name:
                        text = name.decode("utf-8")
                        if text != NEUTRAL_CATEGORY:
                            scores[text] = float(c.score)
            matrix = None
            if i < res.facial_transformation_matrixes_count:
                m = res.facial_transformation_matrixes[i]
                matrix = (np.ctypeslib.as_array(m.data, shape=(m.cols, m.rows)).copy().T
                          if m.data and m.rows and m.cols else np.empty((0,)))
            out.append((xyz, scores, matrix))
        return out


class _SubjectAssigner:
    """Keeps ``subject_id`` stable across frames when several faces are tracked.

    MediaPipe does not promise the order of faces. Each face is matched to
    the nearest face centre of the previous frame (greedily, nearest pair
    first) if it moved less than half a face width; otherwise it gets a new
    id. With one face the id is always 0.
    """

    def __init__(self) -> None:
        self._previous: dict[int, tuple[np.ndarray, float]] = {}
        self._next_id = 0

    def assign(self, faces: list[np.ndarray]) -> list[int]:
        centres = [(pts[:, :2].mean(axis=0), float(np.ptp(pts[:, 0]))) for pts in faces]
        pairs = sorted(
            (float(np.linalg.norm(centre - previous)), i, sid)
            for i, (centre, _width) in enumerate(centres)
            for sid, (previous, _previous_width) in self._previous.items()
        )
        matched: dict[int, int] = {}
        taken: set[int] = set()
        for dist, i, sid in pairs:
            if i in matched or sid in taken or dist > 0.5 * max(centres[i][1], 1.0):
                continue
            matched[i] = sid
            taken.add(sid)
        ids: list[int] = []
        for i in range(len(faces)):
            if i not in matched:
                matched[i] = self._next_id
            self._next_id = max(self._next_id, matched[i] + 1)
            ids.append(matched[i])
        self._previous = {sid: centres[i] for i, sid in enumerate(ids)}
        return ids


#: What MediaPipe's C++ core prints while a graph starts: glog info and
#: warning lines ("I0000 00:00:1700000000.000000  123 file.cc:12] ...")
#: TensorFlow Lite's "INFO: Created TensorFlow Lite XNNPACK delegate", and
#: absl's "WARNING: Logging before InitGoogle() is written to STDERR".
_NATIVE_CHATTER = re.compile(rb"^(?:[IW]\d{4} [\d:.]+\s+\d+ [^\]]*\] |INFO: |WARNING: Logging before InitGoogle\(\))")


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Drop MediaPipe's start-up chatter from file descriptor 2, keep the rest.

    MediaPipe's C++ core writes glog/TFLite lines ("Sets
    FaceBlendshapesGraph acceleration...", "Created TensorFlow Lite XNNPACK
    delegate") straight to fd 2 while the graph starts and on the first
    frame; GLOG_minloglevel is not honoured by the bundled library. For the
    duration, fd 2 is a pipe read by a filter thread that forwards every
    other line — our own log records from other threads (the broker check
    runs while the model loads), and native errors — to the real stderr.
    Set MICROEXPR_NATIVE_LOGS=1 to see everything.
    """
    if os.environ.get("MICROEXPR_NATIVE_LOGS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no fd 2 (e.g. a detached process): nothing to hide
        yield
        return

    def forward() -> None:
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = b"".join(line + b"\n" for line in lines if not _NATIVE_CHATTER.match(line))
                if kept:
                    os.write(saved, kept)
        if pending and not _NATIVE_CHATTER.match(pending):
            os.write(saved, pending)

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    try:
        os.dup2(write_end, 2)
        os.close(write_end)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer is gone: the filter reads EOF
        thread.join(5.0)
        os.close(saved)


def _refuse_arm_cpu_without_lse(machine: str | None = None, hwcap: int | None = None) -> None:
    """A one-line error instead of MediaPipe's SIGILL on an ARMv8.0 core
    (``tracking.cpu``): a service would crash-loop; this names the cause and
    the backend that does run there."""
    why = mediapipe_refusal(machine, hwcap)
    if why is not None:
        raise ModelError(f'{why}; set [tracker] backend = "onnx" (or "auto")')


def _read_verified_model(model_path: Path | None) -> tuple[Path, bytes]:
    """The model bytes, verified by the pin, read once.

    ``resolve_model_path`` checks the file; we then hash the very bytes we
    hand to MediaPipe (as a buffer, not a path), so a file swapped between
    the check and the load cannot be run.
    """
    from microexpr.models import FACE_LANDMARKER, ModelHashMismatch, resolve_model_path

    path = resolve_model_path(model_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"model {path}: cannot read: {exc.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != FACE_LANDMARKER.sha256:
        raise ModelHashMismatch(f"model {path}: sha256 {digest} is not the pinned {FACE_LANDMARKER.sha256}")
    return path, data


class MediaPipeTracker:
    """FaceLandmarker in VIDEO running mode; one instance per video stream.

    VIDEO mode tracks the face from frame to frame (the detector runs only
    when tracking is lost), which is what makes it cheap enough for a Pi.
    It requires strictly increasing millisecond timestamps: they are taken
    from ``Frame.timestamp`` and nudged forward by 1 ms when two frames
    round to the same (or an earlier) millisecond.
    """

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        num_faces: int = 1,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ) -> None:
        self.model_path, model_bytes = _read_verified_model(model_path)
        _refuse_arm_cpu_without_lse()
        self.num_faces = num_faces
        self._last_ms: int | None = None
        self._first_frame = True
        self._subjects = _SubjectAssigner()
        try:
            from mediapipe.tasks.python.core.base_options import BaseOptions
            from mediapipe.tasks.python.vision import face_landmarker as fl
            from mediapipe.tasks.python.vision.core import image as mp_image
            from mediapipe.tasks.python.vision.core.vision_task_running_mode import VisionTaskRunningMode
        except ImportError as exc:
            raise ModelError(f"mediapipe is not installed or broken: {exc}") from None
        self._image_cls = mp_image.Image
        self._srgb = mp_image.ImageFormat.SRGB
        options = fl.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=model_bytes),
            running_mode=VisionTaskRunningMode.VIDEO,
            num_faces=num_faces,
            min_face_detection_confidence=min_detection_confidence,
            min_face_presence_confidence=min_presence_confidence,
            min_tracking_confidence=min_tracking_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        try:
            with _native_stderr_silenced():
                self._landmarker: Any = fl.FaceLandmarker.create_from_options(options)
        except (ValueError, RuntimeError, OSError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"model {self.model_path}: MediaPipe cannot load it: {first_line}") from None
        self._direct = _DirectReader.probe(self._landmarker)
        log.debug("FaceLandmarker loaded from %s (num_faces=%d, result read %s)", self.model_path, num_faces,
                  "directly" if self._direct else "through the public API")

    # -- lifecycle -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._landmarker is None

    def close(self) -> None:
        """Release the native graph. Safe to call twice. Must be called:
        MediaPipe's own ``__del__`` prints a traceback at interpreter exit."""
        landmarker, self._landmarker = self._landmarker, None
        self._direct = None
        if landmarker is not None:
            landmarker.close()

    def __enter__(self) -> MediaPipeTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- work ------------------------------------------------------------------

    def _timestamp_ms(self, timestamp: float) -> int:
        ms = int(round(timestamp * 1000.0))
        if self._last_ms is not None and ms <= self._last_ms:
            ms = self._last_ms + 1
        self._last_ms = ms
        return ms

    def _detect(self, image_mp: Any, timestamp_ms: int) -> list[_Raw]:
        """Per face: normalised landmarks (n, 3) float64, blendshape scores
        by name, transformation matrix (None when MediaPipe gave none)."""
        if self._direct is not None:
            return self._direct.detect(image_mp, timestamp_ms)
        result = self._landmarker.detect_for_video(image_mp, timestamp_ms)
        out: list[_Raw] = []
        for i, landmarks in enumerate(result.face_landmarks):
            blendshapes = result.face_blendshapes[i] if i < len(result.face_blendshapes) else []
            out.append((
                np.array([(lm.x, lm.y, lm.z) for lm in landmarks], dtype=np.float64).reshape(-1, 3),
                {c.category_name: float(c.score) for c in blendshapes
                 if c.category_name and c.category_name != NEUTRAL_CATEGORY},
                result.facial_transformation_matrixes[i] if i < len(result.facial_transformation_matrixes) else None,
            ))
        return out

    def process(self, frame: Frame) -> FaceObservation:
        """Track faces in one frame. No face is a normal result (``faces=()``)."""
        if self._landmarker is None:
            raise RuntimeError("MediaPipeTracker.process() after close()")
        import cv2

        image = frame.image
        if image.ndim == 2:
            rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        elif image.shape[2] == 4:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        else:
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        height, width = rgb.shape[:2]
        image_mp = self._image_cls(image_format=self._srgb, data=rgb)
        timestamp_ms = self._timestamp_ms(frame.timestamp)
        if self._first_frame:
            self._first_frame = False
            with _native_stderr_silenced():
                raw = self._detect(image_mp, timestamp_ms)
        else:
            raw = self._detect(image_mp, timestamp_ms)
        faces: tuple[Face, ...] = ()
        if raw:
            converted = [face_from_arrays(xyz, scores, mat, width, height) for xyz, scores, mat in raw]
            ids = self._subjects.assign([f.landmarks for f in converted]) if self.num_faces > 1 else [0]
            faces = tuple(f if f.subject_id == sid else replace(f, subject_id=sid) for f, sid in zip(converted, ids))
        return FaceObservation(
            frame_index=frame.index, timestamp=frame.timestamp, width=width, height=height, faces=faces
        )


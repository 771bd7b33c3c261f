"""The backend-neutral face tracking result and interface.

A backend (MediaPipe Tasks today, ONNX Runtime later) converts its library's
output once, here, into ``FaceObservation``; nothing downstream imports
mediapipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from microexpr.capture import Frame


@dataclass(frozen=True, slots=True)
class HeadPose:
    """Head rotation in degrees (OpenFace convention: Rx pitch, Ry yaw, Rz roll)
    and translation in the canonical face model's units."""

    pitch: float
    yaw: float
    roll: float
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Face:
    """One tracked face in one frame.

    ``landmarks`` is (478, 3) float32: x, y in pixels of the frame, z in the
    same scale as x (MediaPipe's relative depth times frame width).
    ``blendshapes`` maps the FaceLandmarker names (``"mouthSmileLeft"``…)
    to 0..1 scores: 51 of its 52 categories, ``"_neutral"`` being dropped.
    """

    landmarks: np.ndarray
    blendshapes: Mapping[str, float]
    pose: HeadPose
    confidence: float
    subject_id: int = 0


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """Everything the tracker saw in one frame. No face is a normal outcome:
    ``faces`` is empty."""

    frame_index: int
    timestamp: float
    width: int
    height: int
    faces: tuple[Face, ...]

    @property
    def face(self) -> Face | None:
        """The primary face (the first), or None."""
        return self.faces[0] if self.faces else None


class FaceTracker(Protocol):
    """What every backend provides. Backends are context managers and
    ``close()`` is safe to call twice."""

    def process(self, frame: Frame) -> FaceObservation: ...

    def close(self) -> None: ...

    def __enter__(self) -> "FaceTracker": ...

    def __exit__(self, *exc: object) -> None: ...

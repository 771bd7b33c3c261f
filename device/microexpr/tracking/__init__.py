"""FaceTracker backends: frames in, ``FaceObservation`` out.

Callers never import a backend module directly; they ask
:func:`create_tracker` for one by name, so a second backend (ONNX Runtime,
a later issue) drops in by adding a branch here and a module beside
``mediapipe.py``. Backend modules are imported lazily: importing
``microexpr.tracking`` does not load mediapipe.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path

from microexpr.errors import ConfigError
from microexpr.tracking.base import Face, FaceObservation, FaceTracker, HeadPose

__all__ = [
    "Face",
    "FaceObservation",
    "FaceTracker",
    "HeadPose",
    "TrackerBackend",
    "create_tracker",
    "resolve_backend",
]

log = logging.getLogger(__name__)

#: The configuration value that picks a backend by what the CPU can run.
AUTO = "auto"


class TrackerBackend(StrEnum):
    """The tracker implementations this build knows about."""

    MEDIAPIPE = "mediapipe"
    ONNX = "onnx"


def resolve_backend(backend: str | TrackerBackend, *, machine: str | None = None,
                    hwcap: int | None = None) -> TrackerBackend:
    """The backend a name stands for: ``"auto"`` is MediaPipe where this CPU
    can run it and ONNX Runtime where it cannot (``tracking.cpu``); any
    other name is itself. ``machine``/``hwcap`` are for tests."""
    if str(backend) == AUTO:
        from microexpr.tracking.cpu import mediapipe_refusal

        why = mediapipe_refusal(machine, hwcap)
        if why is None:
            return TrackerBackend.MEDIAPIPE
        log.info("tracker backend auto: onnx (%s)", why)
        return TrackerBackend.ONNX
    try:
        return TrackerBackend(str(backend))
    except ValueError:
        known = ", ".join([AUTO, *(b.value for b in TrackerBackend)])
        raise ConfigError(f"tracker.backend: unknown backend {backend!r} (known: {known})") from None


def create_tracker(
    backend: str | TrackerBackend = TrackerBackend.MEDIAPIPE,
    *,
    model_path: Path | None = None,
    num_faces: int = 1,
    min_detection_confidence: float = 0.5,
    min_presence_confidence: float = 0.5,
    min_tracking_confidence: float = 0.5,
    variant: str = "fp32",
    threads: int = 1,
    onnx_dir: Path | None = None,
) -> FaceTracker:
    """Open a face tracker.

    ``model_path`` is an explicit model file; ``None`` means the installed,
    provisioned copy. Either way the file is verified against the sha256 pin
    before it is loaded (``microexpr.models.resolve_model_path``).

    ``variant`` ("fp32" | "int8"), ``threads`` and ``onnx_dir`` apply to the
    ONNX Runtime backend only (one face; files verified against the ONNX
    manifest pin, see docs/onnx.md).

    ``backend`` "auto" picks by what the CPU can run (``resolve_backend``).

    Raises ConfigError for an unknown backend or out-of-range option,
    ModelError (or a subclass with its own exit code) when the model is
    missing, unverified or cannot be loaded.
    """
    chosen = resolve_backend(backend)
    if not isinstance(num_faces, int) or num_faces < 1:
        raise ConfigError(f"tracker.num_faces: must be an integer >= 1, got {num_faces!r}")
    for key, value in (
        ("min_detection_confidence", min_detection_confidence),
        ("min_presence_confidence", min_presence_confidence),
        ("min_tracking_confidence", min_tracking_confidence),
    ):
        if not 0.0 <= float(value) <= 1.0:
            raise ConfigError(f"tracker.{key}: must be within 0..1, got {value!r}")

    if chosen is TrackerBackend.MEDIAPIPE:
        from microexpr.tracking.mediapipe import MediaPipeTracker

        return MediaPipeTracker(
            model_path=model_path,
            num_faces=num_faces,
            min_detection_confidence=min_detection_confidence,
            min_presence_confidence=min_presence_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
    if chosen is TrackerBackend.ONNX:
        if num_faces != 1:
            raise ConfigError(f"tracker.num_faces: the onnx backend tracks one face, got {num_faces!r}")
        from microexpr.tracking.onnx import OnnxTracker

        return OnnxTracker(
            variant=variant,
            threads=threads,
            model_dir=onnx_dir,
            min_detection_confidence=min_detection_confidence,
            min_presence_confidence=min_presence_confidence,
        )
    raise AssertionError(f"unhandled backend {chosen}")  # pragma: no cover

"""Building the real pipeline for a configuration, and keeping our logs visible while it loads."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from microexpr.config import Config
from microexpr.tracking import TrackerBackend, resolve_backend

if TYPE_CHECKING:  # mediapipe stays lazy until a pipeline is built
    from microexpr.pipeline import Pipeline


def build_pipeline(config: Config) -> Pipeline:
    """The real pipeline for ``config``; the model is verified against its pin and loaded here."""
    from microexpr.models import FACE_LANDMARKER, resolve_model_path
    from microexpr.pipeline import Pipeline

    explicit = config.model.path
    if explicit is None and config.model.models_dir is not None:
        installed = FACE_LANDMARKER.install_path(config.model.models_dir)
        if installed.exists():
            explicit = installed
    tracker_options: dict[str, Any] = {"num_faces": config.tracker.num_faces}
    backend = resolve_backend(config.tracker.backend)
    if backend is TrackerBackend.ONNX:
        tracker_options.update(variant=config.onnx.variant, onnx_dir=config.onnx.models_dir)
        if config.tracker.threads:
            tracker_options["threads"] = config.tracker.threads
        else:
            # 0 = by core count (cores.py, the Pi profile)
            from microexpr.cores import profile_for

            tracker_options["threads"] = profile_for().tracker_threads
        model_path = None
    else:
        model_path = resolve_model_path(explicit)
    engine = config.engine
    return Pipeline.create(
        model_path=model_path,
        backend=backend,
        micro_max_s=engine.micro_max_s,
        emit_delay_s=engine.emit_delay_s,
        min_evidence_z=engine.min_evidence_z,
        ambiguous_confidence=engine.ambiguous_confidence,
        ambiguous_margin=engine.ambiguous_margin,
        label_profile=engine.label_profile,
        prototypes=engine.prototypes,
        **tracker_options,
    )


@contextlib.contextmanager
def logs_on_own_stderr() -> Iterator[None]:
    """Point stderr log handlers at a private duplicate of fd 2.

    The tracker briefly redirects fd 2 to /dev/null to hide MediaPipe's
    native start-up chatter; in a threaded daemon that would also swallow
    whatever another thread logs meanwhile (e.g. "no mqtt broker answers").
    Our handlers keep writing to the terminal through their own descriptor.
    """
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    private: TextIO | None = None
    try:
        fd = os.dup(sys.stderr.fileno())
        private = os.fdopen(fd, "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                            errors="backslashreplace")
    except (OSError, ValueError, AttributeError):
        private = None
    if private is not None:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                swapped.append((handler, handler.setStream(private)))
    try:
        yield
    finally:
        for handler, previous in swapped:
            handler.setStream(previous)
        if private is not None:
            private.close()

"""The daemon's health: one word for ``stats``, systemd's STATUS= and Home Assistant.

A closed set so that dashboards can map it; the words are the ones the
``stats`` payload documents (``events.Stats.health``).
"""

from __future__ import annotations

import threading
import time
from enum import StrEnum


class Health(StrEnum):
    """Where the daemon is in its life."""

    STARTING = "starting"  #: model loading, or no frame processed yet
    OK = "ok"  #: frames flow through the pipeline
    DEGRADED = "degraded"  #: frames flow, but the pipeline failed on recent frames, or storage fails
    NO_CAMERA = "no_camera"  #: the camera is lost (or absent at start); reconnecting with backoff
    STOPPING = "stopping"  #: SIGTERM/SIGINT or end of input: flushing and closing
    #: every thread joined, the pipeline flushed into the outbox: the last
    #: retained ``stats`` says so, so a dashboard is not left on "stopping"
    STOPPED = "stopped"


class HealthState:
    """The current :class:`Health`, shared by the daemon's threads.

    ``set`` returns whether the state changed, so the caller can say so once
    (a log line, a STATUS= update) instead of on every frame. STOPPING is
    final but for STOPPED: a late frame or reconnect cannot bring a stopping
    daemon back.
    """

    def __init__(self, initial: Health = Health.STARTING) -> None:
        self._lock = threading.Lock()
        self._value = initial
        self._since = time.monotonic()

    @property
    def value(self) -> Health:
        with self._lock:
            return self._value

    @property
    def since(self) -> float:
        """``time.monotonic()`` when the current state began."""
        with self._lock:
            return self._since

    def set(self, value: Health) -> bool:
        with self._lock:
            if self._value is value or self._value is Health.STOPPED:
                return False
            if self._value is Health.STOPPING and value is not Health.STOPPED:
                return False
            self._value = value
            self._since = time.monotonic()
            return True

"""Frame counters and latency windows for ``stats`` and the status line."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping

from microexpr.events import LatencyStats

#: Frame-rate window: fps is frames processed over about this many seconds.
FPS_WINDOW_S = 5.0
#: Latency samples kept per stage for the percentiles in ``stats``.
LATENCY_WINDOW = 512


class Metrics:
    """Counters and latency windows, written by the inference thread and read
    by the stats thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.frames = 0
        #: Frames in which the tracker found a face (written by one thread: the one that analyses).
        self.frames_with_face = 0
        self.events = 0
        self.errors = 0
        self.dropped_queue = 0
        self._done: deque[float] = deque()
        self._latency: dict[str, deque[float]] = {}
        self._recent_errors: deque[float] = deque(maxlen=16)

    def frame_done(self, now: float, timings: Mapping[str, float]) -> None:
        with self._lock:
            self.frames += 1
            self._done.append(now)
            while self._done and now - self._done[0] > FPS_WINDOW_S:
                self._done.popleft()
            for stage, seconds in timings.items():
                window = self._latency.get(stage)
                if window is None:
                    window = self._latency[stage] = deque(maxlen=LATENCY_WINDOW)
                window.append(seconds)

    def frame_failed(self, now: float) -> None:
        with self._lock:
            self.errors += 1
            self._recent_errors.append(now)

    def failing(self, now: float, window_s: float = 5.0) -> bool:
        """Did the pipeline fail on a frame within the last ``window_s``?"""
        with self._lock:
            return bool(self._recent_errors) and now - self._recent_errors[-1] < window_s

    def event_emitted(self) -> None:
        with self._lock:
            self.events += 1

    def queue_drop(self) -> None:
        with self._lock:
            self.dropped_queue += 1

    def fps(self, now: float) -> float:
        with self._lock:
            recent = [t for t in self._done if now - t <= FPS_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def latency(self) -> dict[str, LatencyStats]:
        with self._lock:
            windows = {stage: list(samples) for stage, samples in self._latency.items()}
        return {stage: LatencyStats.from_seconds(samples) for stage, samples in windows.items()}

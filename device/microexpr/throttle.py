"""Rate limits for what the daemon reacts to: log lines and repeated actions.

A full disk, a flapping broker or a flood of ``homeassistant/status``
messages repeat the same condition thousands of times; the journal of an
appliance must not fill with it. A :class:`Throttle` lets the first
occurrence of a condition through, then at most one per interval, and
reports how many it held back in between, so nothing is silently dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Gate:
    """The answer for one occurrence: ``allowed``, and how many were held back since the last allowed one."""

    allowed: bool
    suppressed: int

    def suffix(self) -> str:
        """`` (N more since the last report)`` for a log line, or ""."""
        return f" ({self.suppressed} more since the last report)" if self.allowed and self.suppressed else ""


class Throttle:
    """At most one allowed occurrence per ``interval_s`` per key; thread-safe."""

    def __init__(self, interval_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = float(interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def gate(self, key: str) -> Gate:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return Gate(False, self._held[key])
            self._last[key] = now
            held = self._held.pop(key, 0)
            return Gate(True, held)

    def due_in(self, key: str) -> float:
        """Seconds until ``key`` is allowed again (0 when it is)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
        return 0.0 if last is None else max(0.0, self.interval_s - (now - last))

    def reset(self, key: str) -> int:
        """Forget ``key`` (the condition ended); returns how many were held back."""
        with self._lock:
            self._last.pop(key, None)
            return self._held.pop(key, 0)

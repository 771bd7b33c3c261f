"""Why an expression did not become an event: counted, and said at a bounded rate.

A device that stops reporting must say why. Every place in the engine that
drops, withholds or relabels a candidate episode records it here with a
:class:`Suppression` reason; the daemon publishes the counts in ``stats``
(``suppressed``) and the log gets at most one INFO line per reason per
``log_interval_s`` (a minute) with the count since the last line — enough
to explain a silent minute, never a flood (a held smile at 30 fps must not
write 30 lines a second).

Counts are of *candidate episodes* (an onset crossing ``on_z``, or an
episode the spotter closed), not of frames, so they compare with
``events``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from enum import StrEnum

log = logging.getLogger(__name__)


class Suppression(StrEnum):
    """Closed set of reasons (the keys of ``stats.suppressed``)."""

    #: The spotter rejected the episode: the head turned or moved during it.
    HEAD_MOTION = "head_motion"
    #: Rejected: only the lids moved, during a blink.
    BLINK = "blink"
    #: Rejected: only the lids moved, during a gaze shift.
    GAZE = "gaze"
    #: Rejected: shorter than the spotter accepts.
    TOO_SHORT = "too_short"
    #: Rejected: AUs named one-sided on both sides (R2+L14), which no muscle
    #: does and codec blocks or residual rigid motion do.
    SIDE_MIX = "side_mix"
    #: A movement crossed the onset threshold while the head was gated
    #: (moving fast, or far from the reference pose): not evidence.
    GATED = "gated"
    #: A movement crossed the onset threshold before the face had come back
    #: to rest after the previous episode (its tail is not a new one).
    NOT_REARMED = "not_rearmed"
    #: A movement crossed the onset threshold while a capped (truncated)
    #: expression was still held: part of that expression.
    HELD = "held"
    #: A face first seen mid-expression came to rest: the subject started
    #: over and the episode its release opened was dropped.
    FIRST_SIGHT = "first_sight"
    #: The episode was emitted, but the subject context (habitual AUs) set
    #: its label (stage ``context``).
    CONTEXT = "context"
    #: The episode was emitted without a label (no classifier in the build).
    UNLABELLED = "unlabelled"


class SuppressionLog:
    """Counts per reason, and a rate-limited INFO line per reason.

    Thread-safe: the engine records on its thread, the stats thread reads
    :meth:`snapshot`. Times are the stream's seconds (frame timestamps), so
    a replayed file logs the same lines however fast it is processed; a
    time that goes backwards (a new stream) restarts the interval.
    """

    def __init__(self, log_interval_s: float = 60.0) -> None:
        if not log_interval_s > 0:
            raise ValueError(f"log_interval_s must be > 0, got {log_interval_s!r}")
        self.log_interval_s = float(log_interval_s)
        self._lock = threading.Lock()
        self._counts: Counter[Suppression] = Counter()
        self._unlogged: Counter[Suppression] = Counter()
        self._logged_at: dict[Suppression, float] = {}

    def record(self, reason: Suppression, now: float, detail: str = "") -> None:
        """Count one suppressed candidate; log if this reason has been quiet
        in the log for ``log_interval_s``."""
        with self._lock:
            self._counts[reason] += 1
            self._unlogged[reason] += 1
            last = self._logged_at.get(reason, -math.inf)
            if now < last:
                last = -math.inf
            if now - last < self.log_interval_s:
                return
            count, self._unlogged[reason] = self._unlogged[reason], 0
            total = self._counts[reason]
            self._logged_at[reason] = now
        log.info("suppressed %d candidate episode(s) (%s)%s; %d in total, next line for this reason in %.0f s at most",
                 count, reason.value, f": {detail}" if detail else "", total, self.log_interval_s)

    def flush(self) -> None:
        """Log what was counted since each reason's last line (end of stream)."""
        with self._lock:
            pending = {r: n for r, n in self._unlogged.items() if n}
            totals = dict(self._counts)
            self._unlogged.clear()
        for reason, count in sorted(pending.items()):
            log.info("suppressed %d more candidate episode(s) (%s); %d in total", count, reason.value, totals[reason])

    def snapshot(self) -> dict[str, int]:
        """Counts so far, every reason present (0 when none): ``stats.suppressed``."""
        with self._lock:
            return {r.value: int(self._counts.get(r, 0)) for r in Suppression}

    def count(self, reason: Suppression) -> int:
        with self._lock:
            return int(self._counts.get(reason, 0))

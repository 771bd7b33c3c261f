"""Durable means durable: the daemon's only way into the outbox when storage may fail.

The daemon promises that an event it prints, counts or reports is already
committed to the outbox. An SD card fills up, so that promise needs a plan
for when the commit cannot happen. :class:`OutboxGuard` is that plan:

* **Reserve.** Before each commit the free space of the outbox's file
  system is checked against ``outbox.reserve_mb``. Below it the outbox stops
  growing *before* SQLite fails: ``drop_oldest`` replaces the oldest stored
  message with the new one (counted in ``dropped``), ``reject_new`` refuses
  the new one (counted in ``rejected``). Either way health is ``degraded``
  with the reason.
* **Spill.** When a commit fails anyway (disk full despite the reserve, an
  I/O error, a damaged page), the message is kept in a bounded in-memory
  spill, newest kept, and written back in order as soon as a commit
  succeeds again (:meth:`drain`, called on every new event and every few
  seconds). A message is handed back to the caller — to be printed and
  counted — only once it is committed. What overflows the spill, or is
  still in it at shutdown, is counted in ``lost`` and logged.
* **Counts and logs.** Every refusal, spill and loss is counted exactly
  (:class:`GuardCounts`) and logged through a :class:`~microexpr.throttle.Throttle`
  (first occurrence, then at most once per ``log_interval_s`` with the
  number held back).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from microexpr.errors import PublishError
from microexpr.outbox import Outbox, OutboxError, WhenFull
from microexpr.throttle import Throttle

log = logging.getLogger(__name__)

MB = 1024 * 1024
#: Repeated storage conditions are logged at most this often (with a count).
LOG_INTERVAL_S = 60.0


class StoreOutcome(StrEnum):
    STORED = "stored"  #: committed: print it, count it
    DUPLICATE = "duplicate"  #: this key was already stored (a replay)
    SPILLED = "spilled"  #: held in memory: not durable yet, reported when written back
    REJECTED = "rejected"  #: refused by the ``reject_new`` policy (counted)


class StorageProblem(StrEnum):
    LOW_SPACE = "low_space"  #: free space below the reserve: the outbox no longer grows
    WRITE_FAILED = "write_failed"  #: commits fail: new messages wait in memory


@dataclass(frozen=True, slots=True)
class Pending:
    """One message the guard holds in memory until it can be committed."""

    event_id: str
    topic: str
    payload: str
    qos: int


@dataclass(frozen=True, slots=True)
class GuardCounts:
    """Exact counts since start (``stats.outbox``)."""

    rejected: int  #: refused by ``reject_new`` (queue at max_events, or below the reserve)
    spilled: int  #: held in memory right now
    written_back: int  #: spilled, then committed
    lost: int  #: could not be kept: spill overflow, or still in memory at shutdown


def free_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on ``folder``'s file system."""
    info = os.statvfs(folder)
    return int(info.f_bavail) * int(info.f_frsize)


class OutboxGuard:
    """Wraps an :class:`Outbox`; thread-safe (inference, reasoner workers, stats thread)."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        reserve_bytes: int = 16 * MB,
        spill_max: int = 1000,
        log_interval_s: float = LOG_INTERVAL_S,
        free_space: Callable[[], int] | None = None,
    ) -> None:
        self.outbox = outbox
        self.reserve_bytes = max(0, int(reserve_bytes))
        self.spill_max = max(0, int(spill_max))
        self._free_space = free_space or (lambda: free_bytes(outbox.path.parent))
        self._lock = threading.RLock()
        self._spill: deque[Pending] = deque()
        self._rejected = 0
        self._written_back = 0
        self._lost = 0
        self._problem: StorageProblem | None = None
        self._detail = ""
        self._throttle = Throttle(log_interval_s)

    # -- what the daemon calls ------------------------------------------------

    def store(self, message: Pending) -> tuple[StoreOutcome, list[Pending]]:
        """Commit ``message`` (after any spilled ones, in order).

        Returns the outcome for ``message`` and the spilled messages that
        were written back by this call (the caller reports them now).
        """
        with self._lock:
            written = self._drain_locked()
            if self._spill:  # older messages still wait: keep the order
                self._spill_locked(message, "earlier messages are still waiting in memory")
                return StoreOutcome.SPILLED, written
            return self._commit_locked(message, spill_on_failure=True), written

    def store_now(self, message: Pending) -> StoreOutcome:
        """Commit or raise: for callers that keep the message themselves on failure
        (the reasoner keeps a refinement queued). Never spills.

        Raises:
            OutboxError: the commit failed or space is below the reserve.
            PublishError: refused by the ``reject_new`` policy.
        """
        with self._lock:
            low = self._below_reserve()
            if low is not None and self.outbox.when_full is WhenFull.REJECT_NEW:
                raise OutboxError(f"{self.outbox.path}: {low}; {message.event_id} not stored")
            stored = self.outbox.put(message.event_id, message.topic, message.payload, qos=message.qos,
                                     make_room=low is not None)
            return StoreOutcome.STORED if stored else StoreOutcome.DUPLICATE

    def drain(self) -> list[Pending]:
        """Write spilled messages back while commits succeed; returns those written.

        Called every few seconds: with nothing held it also re-checks the
        reserve, so health says ``low_space`` (and recovers) when the disk
        fills or empties between events, not only at the next event.
        """
        with self._lock:
            written = self._drain_locked()
            if not self._spill:
                low = self._below_reserve()
                if low is not None:
                    self._set_problem(StorageProblem.LOW_SPACE, low)
                elif self._problem is not None:
                    self._clear_problem()
            return written

    def close(self) -> int:
        """Count what is still in memory as lost (the process is ending); returns that number."""
        with self._lock:
            left = len(self._spill)
            if left:
                self._lost += left
                log.error(
                    "%s: %d event(s) held in memory could not be written before shutdown and are lost "
                    "(%d lost since start)", self.outbox.path, left, self._lost,
                )
                self._spill.clear()
            return left

    # -- what stats and health read ----------------------------------------------

    def counts(self) -> GuardCounts:
        with self._lock:
            return GuardCounts(self._rejected, len(self._spill), self._written_back, self._lost)

    @property
    def problem(self) -> StorageProblem | None:
        with self._lock:
            return self._problem

    def reason(self) -> str:
        """A short human reason for ``degraded`` ("" when storage is fine)."""
        with self._lock:
            if self._problem is None:
                return ""
            held = f", {len(self._spill)} event(s) in memory" if self._spill else ""
            return f"{self._problem.value}: {self._detail}{held}"

    # -- inside the lock ----------------------------------------------------------------

    def _below_reserve(self) -> str | None:
        if self.reserve_bytes <= 0:
            return None
        try:
            free = self._free_space()
        except OSError as exc:
            return f"free space unknown ({exc.strerror})"
        if free >= self.reserve_bytes:
            return None
        return f"{free / MB:.1f} MB free, below the {self.reserve_bytes / MB:g} MB reserve"

    def _commit_locked(self, message: Pending, *, spill_on_failure: bool) -> StoreOutcome:
        low = self._below_reserve()
        if low is not None and self.outbox.when_full is WhenFull.REJECT_NEW:
            self._rejected += 1
            self._set_problem(StorageProblem.LOW_SPACE, low)
            self._log_refusal(message, low)
            return StoreOutcome.REJECTED
        try:
            stored = self.outbox.put(
                message.event_id, message.topic, message.payload, qos=message.qos, make_room=low is not None
            )
        except PublishError as exc:  # reject_new at max_events
            self._rejected += 1
            self._log_refusal(message, str(exc))
            return StoreOutcome.REJECTED
        except OutboxError as exc:
            if not spill_on_failure:
                raise
            self._set_problem(StorageProblem.WRITE_FAILED, _short(exc))
            self._spill_locked(message, _short(exc))
            return StoreOutcome.SPILLED
        if low is not None:
            self._set_problem(StorageProblem.LOW_SPACE, low)
        else:
            self._clear_problem()
        return StoreOutcome.STORED if stored else StoreOutcome.DUPLICATE

    def _drain_locked(self) -> list[Pending]:
        written: list[Pending] = []
        while self._spill:
            message = self._spill[0]
            # Below the reserve the policy applies to held messages as to new
            # ones (otherwise a disk that stays a little short of the reserve
            # would keep them in memory until the spill overflows).
            low = self._below_reserve()
            if low is not None and self.outbox.when_full is WhenFull.REJECT_NEW:
                self._spill.popleft()
                self._rejected += 1
                self._log_refusal(message, low)
                continue
            try:
                self.outbox.put(message.event_id, message.topic, message.payload, qos=message.qos,
                                make_room=low is not None)
            except PublishError as exc:  # reject_new at max_events: refused like a new one
                self._spill.popleft()
                self._rejected += 1
                self._log_refusal(message, str(exc))
                continue
            except OutboxError as exc:
                self._detail = _short(exc)
                break
            self._spill.popleft()
            self._written_back += 1
            written.append(message)
        if written:
            log.warning(
                "%s: %d event(s) held in memory written back to the outbox (%d still in memory)",
                self.outbox.path, len(written), len(self._spill),
            )
        if not self._spill and self._problem is StorageProblem.WRITE_FAILED and written:
            low = self._below_reserve()
            if low is not None:
                self._set_problem(StorageProblem.LOW_SPACE, low)
            else:
                self._clear_problem()
        return written

    def _spill_locked(self, message: Pending, why: str) -> None:
        if self.spill_max == 0:
            self._lost += 1
            self._log_loss(message.event_id, why)
            return
        if len(self._spill) >= self.spill_max:
            victim = self._spill.popleft()
            self._lost += 1
            self._log_loss(victim.event_id, f"in-memory spill full ({self.spill_max})")
        self._spill.append(message)
        gate = self._throttle.gate("spill")
        if gate.allowed:
            log.error(
                "%s: cannot commit event %s (%s); holding it in memory (%d held, at most %d) until storage recovers%s",
                self.outbox.path, message.event_id, why, len(self._spill), self.spill_max, gate.suffix(),
            )

    def _log_refusal(self, message: Pending, why: str) -> None:
        gate = self._throttle.gate("reject")
        if gate.allowed:
            log.error("event %s refused (policy reject_new): %s; %d refused since start%s",
                      message.event_id, why, self._rejected, gate.suffix())

    def _log_loss(self, event_id: str, why: str) -> None:
        gate = self._throttle.gate("lost")
        if gate.allowed:
            log.error("event %s lost: %s; %d lost since start%s", event_id, why, self._lost, gate.suffix())

    def _set_problem(self, problem: StorageProblem, detail: str) -> None:
        changed = self._problem is not problem
        self._problem, self._detail = problem, detail
        if changed:
            log.warning("%s: storage %s: %s", self.outbox.path, problem.value, detail)

    def _clear_problem(self) -> None:
        if self._problem is not None:
            log.warning("%s: storage recovered (%s ended)", self.outbox.path, self._problem.value)
            self._problem, self._detail = None, ""


def _short(exc: Exception) -> str:
    """SQLite's reason without the path and key the message starts with."""
    return str(exc).rsplit(": ", 1)[-1]

"""Pacing: exponential backoff with jitter, a circuit breaker, a per-minute
rate limit. Pure logic on an injected clock, shared by the worker threads
(each object is thread-safe)."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable
from enum import StrEnum

Clock = Callable[[], float]


def backoff_delay(
    failures: int, *, base_s: float, max_s: float, rng: random.Random, retry_after_s: float | None = None
) -> float:
    """Delay before the next attempt after ``failures`` consecutive failures.

    ``base * 2**(failures-1)`` capped at ``max_s``, scaled by a jitter in
    [0.5, 1] so that several devices (or workers) do not retry in lock step;
    never shorter than the server's ``Retry-After``.
    """
    exponent = max(0, failures - 1)
    raw = min(max_s, base_s * (2.0 ** min(exponent, 30)))
    delay = raw * rng.uniform(0.5, 1.0)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


class BreakerState(StrEnum):
    CLOSED = "closed"  #: requests flow
    OPEN = "open"  #: no requests until the cool-down ends
    HALF_OPEN = "half_open"  #: one trial request decides


class CircuitBreaker:
    """Stop calling a service that keeps failing, then probe it once.

    Opens after ``threshold`` consecutive failed attempts; after
    ``cooldown_s`` one caller gets a trial (half-open): success closes the
    breaker, failure re-opens it for twice the previous cool-down (at most
    ``max_cooldown_s``).
    """

    def __init__(self, threshold: int, cooldown_s: float, *, clock: Clock, max_cooldown_s: float = 3600.0) -> None:
        self._threshold = max(1, threshold)
        self._base_cooldown = cooldown_s
        self._max_cooldown = max(cooldown_s, max_cooldown_s)
        self._cooldown = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._cooldown:
                return BreakerState.HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    def retry_in(self) -> float:
        """Seconds until a request may be tried (0 when one may go now)."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return 0.0
            if self._trial_out:  # another worker is probing: wait for its verdict
                return min(self._cooldown, 1.0)
            return max(0.0, self._opened_at + self._cooldown - self._clock())

    def allow(self) -> bool:
        """May a request be sent now? In half-open, only the first asker may."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if self._trial_out:
                return False
            if self._clock() - self._opened_at >= self._cooldown:
                self._state = BreakerState.HALF_OPEN
                self._trial_out = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._trial_out = False
            self._cooldown = self._base_cooldown

    def record_failure(self) -> bool:
        """Count a failed attempt; True when this failure opened the breaker."""
        with self._lock:
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN:
                self._cooldown = min(self._max_cooldown, self._cooldown * 2)
                self._open()
                return True
            if self._state is BreakerState.CLOSED and self._failures >= self._threshold:
                self._open()
                return True
            return False

    def release_trial(self) -> None:
        """The half-open trial was not sent after all (budget, shutdown)."""
        with self._lock:
            if self._trial_out:
                self._trial_out = False
                self._state = BreakerState.OPEN
                self._opened_at = self._clock() - self._cooldown  # trial may go again at once

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._trial_out = False


class RateLimiter:
    """At most ``per_minute`` requests in any sliding 60 s window."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int, *, clock: Clock) -> None:
        self._limit = max(1, per_minute)
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()

    def set_limit(self, per_minute: int) -> None:
        with self._lock:
            self._limit = max(1, per_minute)

    def try_acquire(self) -> float:
        """Take a slot and return 0, or return the seconds until one frees."""
        with self._lock:
            wait = self._wait_locked()
            if wait == 0.0:
                self._sent.append(self._clock())
            return wait

    def wait_time(self) -> float:
        """Seconds until a slot frees (0: one is free now); takes nothing."""
        with self._lock:
            return self._wait_locked()

    def _wait_locked(self) -> float:
        now = self._clock()
        while self._sent and now - self._sent[0] >= self.WINDOW_S:
            self._sent.popleft()
        if len(self._sent) < self._limit:
            return 0.0
        return max(1e-3, self._sent[0] + self.WINDOW_S - now)

    def in_window(self) -> int:
        with self._lock:
            now = self._clock()
            return sum(1 for t in self._sent if now - t < self.WINDOW_S)

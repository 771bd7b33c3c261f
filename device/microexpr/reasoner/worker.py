"""The reasoner: a durable queue drained by worker threads that ask the API.

The inference loop calls :meth:`Reasoner.submit`, which only inserts one
row into SQLite and wakes a worker: whether the API is slow, down, out of
budget or not configured, the camera loop pays the same small cost. Workers
(named threads owned by the Reasoner, sharing one stop event) take the
oldest due episode, serve it from the cache when the same evidence was
answered before, and otherwise pass the gates in order — global backoff,
circuit breaker, per-minute rate limit, daily budget — before one attempt.
A blocked gate leaves the episode queued: nothing is dropped for being
offline. Answers go to ``on_refined`` (the service wires it to the outbox);
an episode leaves the queue only after that callback returned.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import openai

from microexpr.classify.decide import Decision
from microexpr.reasoner.answer import Answer, AttemptFailed, ask
from microexpr.reasoner.policy import BreakerState, CircuitBreaker, RateLimiter, backoff_delay
from microexpr.reasoner.prompt import PROMPT_VERSION, estimate_tokens, request_body
from microexpr.reasoner.refinement import BudgetState, ReasonerState, Refinement
from microexpr.reasoner.request import ReasonerRequest
from microexpr.reasoner.settings import ReasonerSettings
from microexpr.reasoner.store import Enqueued, QueueItem, ReasonerStore, StoreError
from microexpr.spotting import Episode

log = logging.getLogger(__name__)

#: Called from a worker thread with each new refinement. Raising keeps the
#: answer in the queue; it is offered again a few seconds later.
OnRefined = Callable[[Refinement], None]

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
#: Longest a worker sleeps before looking again (new day, due retries).
MAX_IDLE_S = 5.0
#: Pause before offering an answer again after on_refined raised.
REDELIVER_S = 5.0


class SubmitOutcome(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  #: this event id is already queued
    FULL = "full"  #: the queue is at max_queue: refused and counted
    DISABLED = "disabled"  #: reasoner.enabled is false: nothing stored
    NOT_AMBIGUOUS = "not_ambiguous"  #: the local decision is confident
    ERROR = "error"  #: the store failed (logged); the camera loop goes on


@dataclass(frozen=True, slots=True)
class _Blocked:
    reason: str
    wait_s: float
    #: True when waiting cannot help within a run (no key, budget spent).
    hard: bool = False


def read_api_key() -> str | None:
    """The key from systemd credentials or ``OPENAI_API_KEY``, read when the
    reasoner starts (never at import, never from the TOML file)."""
    try:
        from microexpr.secrets import read_secret  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        value = os.environ.get("OPENAI_API_KEY", "").strip()
        return value or None
    value = read_secret("openai_api_key", "OPENAI_API_KEY")
    return value.strip() if isinstance(value, str) and value.strip() else None


def utc_day(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).date().isoformat()


def _seconds_to_utc_midnight(wall: float) -> float:
    now = datetime.fromtimestamp(wall, UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(0.0, (midnight - now).total_seconds())


class Reasoner:
    """Owns the store, the API client and the worker threads.

    ``settings`` is anything with the ``[reasoner]`` fields (see
    :class:`ReasonerSettings`). ``api_key`` overrides the credential lookup.
    ``clock``/``wall``/``rng`` are injectable for tests of pacing.
    """

    def __init__(
        self,
        settings: object | None = None,
        *,
        on_refined: OnRefined | None = None,
        api_key: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = ReasonerSettings.from_any(settings)
        s = self.settings
        self._on_refined = on_refined
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self._store: ReasonerStore | None = ReasonerStore(s.queue_path) if s.enabled else None
        key = api_key if api_key is not None else (read_api_key() if s.enabled else None)
        if not key and s.base_url:
            key = "unused"  # a local OpenAI-compatible server may need none
        self._client: openai.OpenAI | None = None
        if s.enabled and key:
            self._client = openai.OpenAI(
                api_key=key, base_url=s.base_url or OFFICIAL_BASE_URL, timeout=s.timeout_s, max_retries=0
            )
            # The client imports its resource modules on first use (~25 ms
            # holding the GIL): pay that here, at start-up, not in a worker
            # while the camera loop runs.
            _ = self._client.chat.completions
        elif s.enabled:
            log.warning("reasoner enabled but no OpenAI API key (credential openai_api_key or OPENAI_API_KEY): "
                        "ambiguous episodes are queued until one is configured")
        for name in ("httpx2", "httpx"):  # one INFO line per HTTP request is noise here
            http_log = logging.getLogger(name)
            if http_log.level == logging.NOTSET:
                http_log.setLevel(logging.WARNING)
        self._breaker = CircuitBreaker(s.breaker_threshold, s.breaker_cooldown_s, clock=clock)
        self._limiter = RateLimiter(s.max_requests_per_minute, clock=clock)
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._lock = threading.Lock()  # counts, claims, last error, backoff
        self._gate_lock = threading.Lock()  # rate slot + breaker trial + budget, taken together
        self._claimed: set[int] = set()
        self._counts: Counter[str] = Counter()
        self._last_error: str | None = None
        self._last_error_at: str | None = None
        self._not_before = 0.0
        self._status = "disabled" if not s.enabled else ("idle" if self._client is not None else "offline")
        self._budget_blocked_day: str | None = None
        self._redeliver_at = 0.0
        self._threads: list[threading.Thread] = []
        self._closed = False

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> Reasoner:
        """Start the worker threads (no-op when disabled or already started)."""
        if not self.settings.enabled or self._threads or self._closed:
            return self
        for index in range(self.settings.concurrency):
            thread = threading.Thread(target=self._run, name=f"reasoner-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()
        log.info("reasoner started: model %s, %d worker(s), %d queued", self.settings.model,
                 len(self._threads), self.queue_depth)
        return self

    def close(self, timeout: float | None = None) -> None:
        """Stop the workers (an in-flight request may take up to timeout_s)
        and close the store and the client. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        limit = self.settings.timeout_s + 2.0 if timeout is None else timeout
        deadline = self._clock() + limit
        for thread in self._threads:
            thread.join(max(0.0, deadline - self._clock()))
            if thread.is_alive():
                log.warning("reasoner worker %s still in a request at shutdown; abandoning it", thread.name)
        busy = any(t.is_alive() for t in self._threads)
        if self._client is not None and not busy:
            self._client.close()
        if self._store is not None and not busy:
            self._store.close()

    def apply_live(self, settings: object) -> None:
        """Take the keys that may change without a restart (SIGHUP): the
        daily budget and the per-minute rate. Everything else is fixed at
        start (model, endpoint, workers, queue file)."""
        new = ReasonerSettings.from_any(settings)
        self.settings = replace(
            self.settings,
            max_requests_per_day=new.max_requests_per_day,
            max_tokens_per_day=new.max_tokens_per_day,
            max_requests_per_minute=new.max_requests_per_minute,
        )
        self._limiter.set_limit(new.max_requests_per_minute)
        self._budget_blocked_day = None
        with self._wake:
            self._wake.notify_all()

    def __enter__(self) -> Reasoner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the camera-loop side -------------------------------------------------

    def submit(
        self, event_id: str, episode: Episode, decision: Decision, context: object | None = None
    ) -> SubmitOutcome:
        """Queue an ambiguous episode. Never blocks on the network, never raises."""
        if not self.settings.enabled or self._store is None:
            return SubmitOutcome.DISABLED
        if not decision.ambiguous:
            return SubmitOutcome.NOT_AMBIGUOUS
        try:
            request = ReasonerRequest.from_episode(event_id, episode, decision, context)
        except (TypeError, ValueError, KeyError) as exc:
            log.error("reasoner: cannot build a request for event %s: %s", event_id, exc)
            self._count("submit_errors")
            return SubmitOutcome.ERROR
        return self.submit_request(request)

    def submit_request(self, request: ReasonerRequest) -> SubmitOutcome:
        if not self.settings.enabled or self._store is None:
            return SubmitOutcome.DISABLED
        try:
            result = self._store.enqueue(
                request.event_id,
                json.dumps(request.evidence(), separators=(",", ":")),
                now=self._wall(),
                max_queue=self.settings.max_queue,
            )
        except StoreError as exc:
            log.error("reasoner: %s", exc)
            self._count("submit_errors")
            return SubmitOutcome.ERROR
        if result is Enqueued.FULL:
            self._count("refused_full")
            if self._counts["refused_full"] == 1:
                log.warning("reasoner queue full (%d episodes): new ambiguous episodes are not queued",
                            self.settings.max_queue)
            return SubmitOutcome.FULL
        if result is Enqueued.DUPLICATE:
            self._count("duplicates")
            return SubmitOutcome.DUPLICATE
        self._count("submitted")
        with self._wake:
            self._wake.notify()
        return SubmitOutcome.QUEUED

    @property
    def stopping(self) -> bool:
        """close() was called (workers finish their request and exit)."""
        return self._stop.is_set()

    @property
    def queue_depth(self) -> int:
        return 0 if self._store is None else self._store.pending

    # -- state ----------------------------------------------------------------

    def state(self) -> ReasonerState:
        s = self.settings
        day = utc_day(self._wall())
        used_requests, used_tokens = (0, 0)
        cache_entries = 0
        awaiting = 0
        if self._store is not None and not self._closed:
            used_requests, used_tokens = self._store.usage(day)
            cache_entries = self._store.cache_size()
            awaiting = self._store.answered_count
        exhausted = (
            used_requests >= s.max_requests_per_day
            or used_tokens >= s.max_tokens_per_day
            or self._budget_blocked_day == day
        )
        with self._lock:
            return ReasonerState(
                enabled=s.enabled,
                status=self._status,
                queue_depth=self.queue_depth,
                awaiting_delivery=awaiting,
                budget=BudgetState(day, used_requests, s.max_requests_per_day, used_tokens,
                                   s.max_tokens_per_day, exhausted),
                breaker=self._breaker.state.value,
                consecutive_failures=self._breaker.consecutive_failures,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                cache_entries=cache_entries,
                counts=dict(self._counts),
            )

    # -- synchronous use (evaluation) ----------------------------------------

    def refine_now(self, request: ReasonerRequest, *, max_attempts: int = 4, max_wait_s: float = 120.0) -> Refinement | None:
        """Ask for one request in the calling thread, through the same cache,
        budget, rate limit, breaker and backoff as the workers. Returns None
        when no answer could be had (budget spent, no key, repeated failures)."""
        if self._store is None:
            return None
        signature = request.signature(model=self.settings.model, prompt_version=PROMPT_VERSION)
        cached = self._from_cache(request, signature, attempts=0)
        if cached is not None:
            return cached
        attempts = 0
        while attempts < max_attempts and not self._stop.is_set():
            outcome = self._attempt(request)
            if isinstance(outcome, _Blocked):
                if outcome.hard or outcome.wait_s > max_wait_s:
                    return None
                self._stop.wait(outcome.wait_s)
                continue
            attempts += 1
            answer, latency, failure = outcome
            if answer is not None:
                return self._finish(request, signature, answer, latency=latency, attempts=attempts)
            assert failure is not None
            if not failure.kind.transient and attempts >= self.settings.max_invalid_attempts:
                return None
        return None

    # -- worker ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait_s = self._step()
            except Exception:  # a bug or a store failure must not kill the worker
                log.exception("reasoner worker step failed")
                wait_s = 1.0
            if wait_s > 0 and not self._stop.is_set():
                with self._wake:
                    self._wake.wait(min(wait_s, MAX_IDLE_S))

    def _step(self) -> float:
        """Do one unit of work; return how long to sleep before the next."""
        store = self._store
        assert store is not None
        self._redeliver()
        with self._lock:
            exclude = tuple(self._claimed)
        item = store.claim(now=self._wall(), exclude=exclude)
        if item is not None:
            with self._lock:
                if item.id in self._claimed:
                    item = None
                else:
                    self._claimed.add(item.id)
        if item is None:
            with self._lock:
                exclude = tuple(self._claimed)
                if store.pending == 0 or self._status == "working":
                    self._status = "idle" if self._client is not None else "offline"
            due = store.next_due(exclude=exclude)
            return MAX_IDLE_S if due is None else max(0.01, due - self._wall())
        try:
            return self._process(item)
        finally:
            with self._lock:
                self._claimed.discard(item.id)

    def _process(self, item: QueueItem) -> float:
        store = self._store
        assert store is not None
        try:
            request = ReasonerRequest.from_evidence(json.loads(item.evidence))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("reasoner: queued event %s is unreadable (%s); dropping it", item.event_id, exc)
            self._count("gave_up")
            store.delete(item.id)
            return 0.0
        signature = request.signature(model=self.settings.model, prompt_version=PROMPT_VERSION)
        cached = self._from_cache(request, signature, attempts=item.attempts)
        if cached is not None:
            self._store_and_deliver(item, cached)
            return 0.0
        outcome = self._attempt(request)
        if isinstance(outcome, _Blocked):
            return outcome.wait_s
        answer, latency, failure = outcome
        if answer is not None:
            refinement = self._finish(request, signature, answer, latency=latency, attempts=item.attempts + 1)
            self._store_and_deliver(item, refinement)
            return 0.0
        assert failure is not None
        if failure.kind.transient:
            store.reschedule(item.id, due_at=self._wall() + self._backoff_remaining(), error=str(failure),
                             invalid=False)
            return 0.0
        delay = backoff_delay(item.invalid_attempts + 1, base_s=self.settings.backoff_base_s,
                              max_s=self.settings.backoff_max_s, rng=self._rng)
        invalid = store.reschedule(item.id, due_at=self._wall() + delay, error=str(failure), invalid=True)
        if invalid >= self.settings.max_invalid_attempts:
            log.warning("reasoner: giving up event %s after %d invalid answers (last: %s)",
                        item.event_id, invalid, failure)
            self._count("gave_up")
            store.delete(item.id)
        return 0.0

    # -- one attempt through the gates -----------------------------------------

    def _gate(self, day: str, estimate: int) -> _Blocked | None:
        """Pass the gates in order — key, backoff, breaker, rate, budget — and
        on success take what they give (the breaker's trial in half-open, a
        rate slot, the budget reservation); a closed gate takes nothing."""
        s = self.settings
        if self._client is None:
            return _Blocked("offline", MAX_IDLE_S, hard=True)
        backoff = self._backoff_remaining()
        if backoff > 0:
            return _Blocked("backoff", backoff)
        with self._gate_lock:  # workers must not both see the last free slot
            wait = self._limiter.wait_time()
            if wait > 0:
                return _Blocked("rate_limited", wait)
            if not self._breaker.allow():
                return _Blocked("circuit_open", max(0.05, self._breaker.retry_in()))
            assert self._store is not None
            if not self._store.reserve(
                day, tokens=estimate, max_requests=s.max_requests_per_day, max_tokens=s.max_tokens_per_day
            ):
                self._breaker.release_trial()
                if self._budget_blocked_day != day:
                    log.warning("reasoner: daily budget spent (%d requests / %d tokens): queue waits until "
                                "00:00 UTC", s.max_requests_per_day, s.max_tokens_per_day)
                self._budget_blocked_day = day
                return _Blocked("budget_exhausted", max(1.0, _seconds_to_utc_midnight(self._wall())), hard=True)
            self._limiter.try_acquire()
        return None

    def _attempt(self, request: ReasonerRequest) -> _Blocked | tuple[Answer | None, float, AttemptFailed | None]:
        s = self.settings
        body = request_body(request, model=s.model, temperature=s.temperature, max_output_tokens=s.max_output_tokens)
        estimate = estimate_tokens(body)
        day = utc_day(self._wall())
        blocked = self._gate(day, estimate)
        if blocked is not None:
            with self._lock:
                self._status = blocked.reason
            return blocked
        assert self._client is not None and self._store is not None
        with self._lock:
            self._status = "working"
        self._count("sent")
        started = self._clock()
        try:
            answer = ask(self._client, request, body)
        except AttemptFailed as failure:
            self._on_failure(failure, day, estimate)
            return None, self._clock() - started, failure
        latency = self._clock() - started
        self._breaker.record_success()
        with self._lock:
            self._not_before = 0.0
        actual = answer.total_tokens
        if actual is not None:
            self._store.adjust_tokens(day, actual - estimate)
        self._count("answered")
        return answer, latency, None

    def _on_failure(self, failure: AttemptFailed, day: str, estimate: int) -> None:
        assert self._store is not None
        if failure.tokens is not None:
            self._store.adjust_tokens(day, failure.tokens - estimate)
        elif not failure.billed:
            self._store.adjust_tokens(day, -estimate)
        opened = self._breaker.record_failure()
        self._count(f"failed_{failure.kind.value}")
        now_iso = datetime.fromtimestamp(self._wall(), UTC).isoformat(timespec="seconds")
        with self._lock:
            self._last_error = str(failure)
            self._last_error_at = now_iso
            if failure.kind.transient:
                retry_after = failure.retry_after_s
                if retry_after is not None:
                    retry_after = min(retry_after, self.settings.retry_after_max_s)
                delay = backoff_delay(self._breaker.consecutive_failures, base_s=self.settings.backoff_base_s,
                                      max_s=self.settings.backoff_max_s, rng=self._rng, retry_after_s=retry_after)
                self._not_before = max(self._not_before, self._clock() + delay)
        log.warning("reasoner attempt failed: %s", failure)
        if opened:
            log.warning("reasoner circuit breaker open after %d consecutive failures",
                        self._breaker.consecutive_failures)

    def _backoff_remaining(self) -> float:
        with self._lock:
            return max(0.0, self._not_before - self._clock())

    # -- answers --------------------------------------------------------------

    def _finish(self, request: ReasonerRequest, signature: str, answer: Answer, *, latency: float,
                attempts: int) -> Refinement:
        assert self._store is not None
        cached = {
            "label": answer.label.value,
            "confidence": answer.confidence,
            "rationale": answer.rationale,
            "aus_cited": [au.code for au in answer.aus_cited],
            "model": answer.model or self.settings.model,
        }
        self._store.cache_put(signature, json.dumps(cached), now=self._wall(), limit=self.settings.cache_size)
        return Refinement(
            event_id=request.event_id,
            label=answer.label,
            confidence=answer.confidence,
            rationale=answer.rationale,
            aus_cited=answer.aus_cited,
            agrees_with_local=answer.label == request.local.label,
            local_label=request.local.label,
            local_confidence=request.local.confidence,
            model=answer.model or self.settings.model,
            prompt_version=PROMPT_VERSION,
            tokens=answer.total_tokens,
            latency_s=round(latency, 3),
            attempts=attempts,
        )

    def _from_cache(self, request: ReasonerRequest, signature: str, *, attempts: int) -> Refinement | None:
        assert self._store is not None
        raw = self._store.cache_get(signature, now=self._wall())
        if raw is None:
            return None
        try:
            data: dict[str, Any] = json.loads(raw)
            refinement = Refinement.from_dict(
                {
                    **data,
                    "event_id": request.event_id,
                    "agrees_with_local": data["label"] == request.local.label.value,
                    "local_label": request.local.label.value,
                    "local_confidence": request.local.confidence,
                    "prompt_version": PROMPT_VERSION,
                    "from_cache": True,
                    "attempts": attempts,
                }
            )
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("reasoner: unreadable cache entry %s… ignored (%s)", signature[:12], exc)
            return None
        self._count("cache_hits")
        return refinement

    def _store_and_deliver(self, item: QueueItem, refinement: Refinement) -> None:
        assert self._store is not None
        self._store.answer(item.id, refinement.to_json())
        self._deliver(item.id, refinement)

    def _deliver(self, item_id: int, refinement: Refinement) -> None:
        assert self._store is not None
        if self._stop.is_set():
            # Shutting down: the service's outbox may already be closed. The
            # answer stays in the queue and is delivered after the restart.
            log.info("reasoner: event %s answered during shutdown; delivered after restart", refinement.event_id)
            return
        if self._on_refined is not None:
            try:
                self._on_refined(refinement)
            except Exception:
                log.exception("reasoner: on_refined failed for event %s; offering it again later",
                              refinement.event_id)
                self._count("callback_errors")
                with self._lock:
                    self._redeliver_at = self._clock() + REDELIVER_S
                return
        log.info("reasoner: event %s refined to %s (%.2f, %s local %s)%s", refinement.event_id,
                 refinement.label.value, refinement.confidence,
                 "agrees with" if refinement.agrees_with_local else "differs from",
                 refinement.local_label.value, " [cache]" if refinement.from_cache else "")
        self._store.delete(item_id)
        self._count("delivered")

    def _redeliver(self) -> None:
        """Offer answers whose callback failed (or that a crash left behind)."""
        store = self._store
        assert store is not None
        if store.answered_count == 0:
            return
        with self._lock:
            if self._clock() < self._redeliver_at:
                return
            self._redeliver_at = self._clock() + REDELIVER_S
            claimed = set(self._claimed)
        for item_id, text in store.answered():
            if item_id in claimed:
                continue
            with self._lock:
                if item_id in self._claimed:
                    continue
                self._claimed.add(item_id)
            try:
                self._deliver(item_id, Refinement.from_json(text))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("reasoner: stored answer %d unreadable (%s); dropping it", item_id, exc)
                store.delete(item_id)
            finally:
                with self._lock:
                    self._claimed.discard(item_id)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    @property
    def breaker_state(self) -> BreakerState:
        return self._breaker.state

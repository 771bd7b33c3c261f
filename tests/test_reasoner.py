"""The LLM reasoner against a real HTTP server through the real openai client.

The server (tests/fixtures/openai_server.py) answers from a script; these
tests assert on what the reasoner delivers, what it reports in ``state()``
and on exactly what the server received.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fixtures.openai_server import OpenAIServer, Reply
from microexpr.classify.decide import Decision, Stage
from microexpr.errors import ConfigError, ExitCode
from microexpr.facs import AU, AUActivation, Emotion, Side
from microexpr.reasoner import (
    PROMPT_VERSION,
    Reasoner,
    ReasonerRequest,
    ReasonerSettings,
    Refinement,
    StoreError,
    SubmitOutcome,
    refine_rows,
)
from microexpr.reasoner.answer import retry_after_seconds
from microexpr.reasoner.policy import BreakerState, CircuitBreaker, RateLimiter, backoff_delay
from microexpr.reasoner.prompt import estimate_tokens, render, request_body
from microexpr.reasoner.request import scrub_identity
from microexpr.spotting import Episode, EpisodeKind

pytestmark = pytest.mark.integration

SUBJECT_ID = 4242  # must never reach the server


# -- building blocks ---------------------------------------------------------


def make_episode(variant: int = 0, *, subject_id: int = SUBJECT_ID) -> Episode:
    """A fear-or-surprise episode; ``variant`` moves AU1's apex by 0.15 so
    different variants have different cache signatures."""
    au1 = 0.3 + 0.15 * variant
    activations = (
        AUActivation(AU.INNER_BROW_RAISER, Side.BOTH, au1),
        AUActivation(AU.OUTER_BROW_RAISER, Side.BOTH, 0.41),
        AUActivation(AU.BROW_LOWERER, Side.BOTH, 0.33),
        AUActivation(AU.LIP_STRETCHER, Side.LEFT, 0.30),
        AUActivation(AU.LIP_STRETCHER, Side.RIGHT, 0.18),
    )
    apex = {AU.INNER_BROW_RAISER: au1, AU.OUTER_BROW_RAISER: 0.41, AU.BROW_LOWERER: 0.33, AU.LIP_STRETCHER: 0.30}
    return Episode(
        subject_id=subject_id,
        onset_frame=300,
        apex_frame=306,
        offset_frame=318,
        onset_ts=1000.0,
        apex_ts=1000.2,
        offset_ts=1000.6,
        kind=EpisodeKind.MICRO,
        activations=activations,
        onset_intensity={au: 0.02 for au in apex},
        apex_intensity=apex,
        offset_intensity={au: 0.05 for au in apex},
        apex_evidence={au: 4.0 * v for au, v in apex.items()},
    )


def make_decision(label: Emotion = Emotion.FEAR, *, ambiguous: bool = True) -> Decision:
    return Decision(
        label=label,
        confidence=0.41,
        margin=0.03,
        runner_up=Emotion.SURPRISE,
        stage=Stage.PROTOTYPE,
        scores=((label, 0.41), (Emotion.SURPRISE, 0.38), (Emotion.OTHERS, 0.12)),
        trace=(
            "AU1+AU2 raised with AU4: fear or surprise.",
            f"Subject {SUBJECT_ID} habitually shows AU12; weighed less.",
        ),
        ambiguous=ambiguous,
    )


CONTEXT = SimpleNamespace(habitual_aus=frozenset({AU.LIP_CORNER_PULLER}))


class Collector:
    """An ``on_refined`` callback that tests can wait on."""

    def __init__(self, fail_times: int = 0) -> None:
        self.items: list[Refinement] = []
        self._cond = threading.Condition()
        self._fail = fail_times

    def __call__(self, refinement: Refinement) -> None:
        with self._cond:
            if self._fail > 0:
                self._fail -= 1
                raise RuntimeError("outbox unavailable")
            self.items.append(refinement)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Refinement]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.items) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} refinements, got {len(self.items)}")
                self._cond.wait(left)
            return list(self.items)


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def settings_for(server: OpenAIServer, tmp_path: Path, **overrides: Any) -> ReasonerSettings:
    base = ReasonerSettings(
        enabled=True,
        base_url=server.base_url,
        timeout_s=3.0,
        queue_path=tmp_path / "reasoner.sqlite3",
        max_requests_per_minute=1000,
        backoff_base_s=0.02,
        backoff_max_s=0.2,
        breaker_cooldown_s=0.2,
    )
    return replace(base, **overrides)


def event_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


@pytest.fixture
def collector() -> Collector:
    return Collector()


# -- the normal path -------------------------------------------------------------


def test_normal_answer_becomes_a_refinement(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    openai_server.script(Reply.answer(label="fear", confidence=0.74, aus_cited=("AU1", "AU4", "AU20")))
    with Reasoner(settings_for(openai_server, tmp_path), on_refined=collector, api_key="sk-test") as reasoner:
        outcome = reasoner.submit(event_id(1), make_episode(), make_decision(), CONTEXT)
        assert outcome is SubmitOutcome.QUEUED
        (refinement,) = collector.wait_for(1)
        wait_until(lambda: reasoner.state().counts.get("delivered") == 1, what="delivery recorded")
        state = reasoner.state()

    assert refinement.event_id == event_id(1)
    assert refinement.label is Emotion.FEAR
    assert refinement.confidence == pytest.approx(0.74)
    assert refinement.aus_cited == (AU.INNER_BROW_RAISER, AU.BROW_LOWERER, AU.LIP_STRETCHER)
    assert refinement.agrees_with_local is True
    assert refinement.local_label is Emotion.FEAR
    assert refinement.stage is Stage.LLM
    assert refinement.from_cache is False
    assert refinement.tokens == 480  # the server's usage
    assert refinement.prompt_version == PROMPT_VERSION
    assert state.queue_depth == 0 and state.awaiting_delivery == 0
    assert state.budget.requests_used == 1 and state.budget.tokens_used == 480
    assert state.budget.requests_remaining == 499 and not state.budget.exhausted
    assert state.breaker == "closed"

    (request,) = openai_server.chat_requests()
    body = request.body
    assert request.headers["authorization"] == "Bearer sk-test"
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    props = fmt["json_schema"]["schema"]["properties"]
    assert props["label"]["enum"] == [e.value for e in Emotion]
    assert props["aus_cited"]["items"]["enum"] == ["AU1", "AU2", "AU4", "AU20"]


def test_disagreeing_answer_is_reported_as_such(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    openai_server.script(Reply.answer(label="surprise", aus_cited=("AU1", "AU2")))
    with Reasoner(settings_for(openai_server, tmp_path), on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(2), make_episode(), make_decision(Emotion.FEAR))
        (refinement,) = collector.wait_for(1)
    assert refinement.label is Emotion.SURPRISE
    assert refinement.agrees_with_local is False
    assert refinement.local_label is Emotion.FEAR


def test_request_body_holds_no_image_landmarks_or_identity(
    openai_server: OpenAIServer, tmp_path: Path, collector: Collector
) -> None:
    openai_server.script(Reply.answer())
    with Reasoner(settings_for(openai_server, tmp_path), on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(3), make_episode(subject_id=SUBJECT_ID), make_decision(), CONTEXT)
        collector.wait_for(1)
    (request,) = openai_server.chat_requests()
    body = request.body
    raw = request.raw.decode()
    assert set(body) == {"model", "messages", "response_format", "temperature", "max_completion_tokens"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert all(isinstance(m["content"], str) for m in body["messages"])  # text only: no image parts
    for forbidden in ("image", "base64", "landmark", "pixel", str(SUBJECT_ID), "subject_id", event_id(3)):
        assert forbidden not in raw.lower(), forbidden
    # Landmarks would be hundreds of coordinates; the evidence is a few AUs.
    numbers = re.findall(r"\d+\.\d+", " ".join(m["content"] for m in body["messages"]))
    assert len(numbers) < 60
    # No absolute timestamps or frame numbers of the source either.
    user = body["messages"][1]["content"]
    for clock_value in ("1000.0", "1000.2", "300", "306", "318"):
        assert clock_value not in user
    # What is there: the AUs present, the local scores and the habitual AU.
    for code in ("AU1 ", "AU2 ", "AU4 ", "AU20 ", "AU12"):
        assert code in user
    assert "fear: 0.41" in user and "surprise: 0.38" in user
    assert "The subject habitually shows AU12" in user


# -- resilience -------------------------------------------------------------------


def test_429_retry_after_is_honoured(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    openai_server.script(Reply.error(429, "slow down", retry_after="1"), Reply.answer())
    with Reasoner(settings_for(openai_server, tmp_path), on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(4), make_episode(), make_decision())
        collector.wait_for(1)
        counts = reasoner.state().counts
    first, second = openai_server.chat_requests()
    assert second.at - first.at >= 1.0  # the header asked for 1 s; backoff alone is ≤ 0.2 s
    assert counts["failed_rate_limited"] == 1
    assert counts["sent"] == 2


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = "Sat, 28 Nov 2026 03:00:30 GMT"
    now = time.mktime(time.strptime("2026-11-28 03:00:00", "%Y-%m-%d %H:%M:%S")) - time.timezone
    assert retry_after_seconds({"retry-after": date}, now=now) == pytest.approx(30.0)
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_server_errors_then_success(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    openai_server.script(Reply.error(500), Reply.error(502), Reply.error(503), Reply.answer(label="fear"))
    with Reasoner(settings_for(openai_server, tmp_path), on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(5), make_episode(), make_decision())
        (refinement,) = collector.wait_for(1)
        state = reasoner.state()
    assert refinement.label is Emotion.FEAR and refinement.attempts == 4
    assert state.counts["failed_server_error"] == 3
    assert state.breaker == "closed" and state.consecutive_failures == 0
    assert state.last_error is not None and "503" in state.last_error
    assert len(openai_server.chat_requests()) == 4
    # 5xx cost no tokens: only the successful answer is on the budget.
    assert state.budget.tokens_used == 480 and state.budget.requests_used == 4


def test_timeout_is_a_transient_failure(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    openai_server.script(Reply.answer(label="fear").slow(30), Reply.answer(label="surprise"))
    with Reasoner(settings_for(openai_server, tmp_path, timeout_s=0.4), on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(6), make_episode(), make_decision())
        (refinement,) = collector.wait_for(1)
        counts = reasoner.state().counts
    assert refinement.label is Emotion.SURPRISE  # the hung answer was never used
    assert counts["failed_timeout"] == 1


def test_malformed_answers_are_failed_attempts(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    openai_server.script(
        Reply.completion(content="fear, I think"),
        Reply.broken_body(),
        Reply.answer(label="fear"),
    )
    with Reasoner(settings_for(openai_server, tmp_path), on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(7), make_episode(), make_decision())
        (refinement,) = collector.wait_for(1)
        state = reasoner.state()
    assert refinement.attempts == 3
    assert state.counts["failed_malformed"] == 2
    assert "not JSON" in (state.last_error or "")


def test_missing_field_is_malformed(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    openai_server.script(
        Reply.completion(content=json.dumps({"label": "fear", "confidence": 0.5})),
        Reply.completion(content=json.dumps({"label": "fear", "confidence": 1.7, "rationale": "x", "aus_cited": []})),
        Reply.answer(),
    )
    with Reasoner(settings_for(openai_server, tmp_path), on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(8), make_episode(), make_decision())
        collector.wait_for(1)
        assert reasoner.state().counts["failed_malformed"] == 2


def test_case_spacing_and_a_markdown_fence_are_tolerated(
    openai_server: OpenAIServer, tmp_path: Path, collector: Collector
) -> None:
    body = json.dumps({"label": " Fear", "confidence": 1, "rationale": "brows", "aus_cited": ["au4", "AU 20"]})
    openai_server.script(Reply.completion(content=f"```json\n{body}\n```"))
    with Reasoner(settings_for(openai_server, tmp_path), on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(160), make_episode(), make_decision())
        (refinement,) = collector.wait_for(1)
    assert refinement.label is Emotion.FEAR and refinement.confidence == 1.0
    assert refinement.aus_cited == (AU.BROW_LOWERER, AU.LIP_STRETCHER) and refinement.attempts == 1


def test_out_of_set_label_and_uncited_au_are_rejected(
    openai_server: OpenAIServer, tmp_path: Path, collector: Collector
) -> None:
    openai_server.script(
        Reply.answer(label="joy"),
        Reply.answer(label="fear", aus_cited=("AU9",)),  # AU9 is not in this episode's evidence
        Reply.answer(label="fear", aus_cited=("AU4",)),
    )
    with Reasoner(settings_for(openai_server, tmp_path), on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(9), make_episode(), make_decision())
        (refinement,) = collector.wait_for(1)
        counts = reasoner.state().counts
    assert counts["failed_out_of_set"] == 2
    assert refinement.aus_cited == (AU.BROW_LOWERER,)


def test_refusals_give_the_episode_up_without_crashing(
    openai_server: OpenAIServer, tmp_path: Path, collector: Collector
) -> None:
    openai_server.script(Reply.refusal(), Reply.refusal(), Reply.refusal(), Reply.answer(label="surprise"))
    s = settings_for(openai_server, tmp_path, max_invalid_attempts=3)
    with Reasoner(s, on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(10), make_episode(0), make_decision())
        wait_until(lambda: reasoner.state().counts.get("gave_up") == 1, what="episode given up")
        state = reasoner.state()
        assert state.counts["failed_refused"] == 3
        assert state.queue_depth == 0 and collector.items == []
        # The worker is still alive and serves the next episode.
        reasoner.submit(event_id(11), make_episode(1), make_decision())
        (refinement,) = collector.wait_for(1)
    assert refinement.event_id == event_id(11) and refinement.label is Emotion.SURPRISE


def test_breaker_opens_and_probes_after_the_cooldown(
    openai_server: OpenAIServer, tmp_path: Path, collector: Collector
) -> None:
    openai_server.script(Reply.error(500), Reply.error(500), Reply.answer())
    s = settings_for(openai_server, tmp_path, breaker_threshold=2, breaker_cooldown_s=0.6)
    with Reasoner(s, on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(12), make_episode(), make_decision())
        wait_until(lambda: reasoner.state().breaker == "open", what="breaker open")
        collector.wait_for(1)
        state = reasoner.state()
    first, second, third = openai_server.chat_requests()
    assert third.at - second.at >= 0.6  # no request while open
    assert state.breaker == "closed"


def test_breaker_unit_transitions() -> None:
    now = [0.0]
    breaker = CircuitBreaker(3, 10.0, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.record_failure() is True
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow()  # the one trial
    assert not breaker.allow()  # a second caller waits for its verdict
    breaker.record_failure()  # trial failed: open again, cool-down doubled
    now[0] = 29.0
    assert not breaker.allow()
    now[0] = 30.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 0


def test_backoff_grows_with_jitter_and_respects_retry_after() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(n, base_s=1.0, max_s=60.0, rng=rng) for n in range(1, 9)]
    for n, d in enumerate(delays, start=1):
        cap = min(60.0, 2.0 ** (n - 1))
        assert 0.5 * cap <= d <= cap
    assert backoff_delay(1, base_s=1.0, max_s=60.0, rng=rng, retry_after_s=12.0) == 12.0


def test_rate_limit_per_minute(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    openai_server.default = Reply.answer()
    s = settings_for(openai_server, tmp_path, max_requests_per_minute=2)
    with Reasoner(s, on_refined=collector, api_key="k") as reasoner:
        for n in range(3):
            reasoner.submit(event_id(20 + n), make_episode(n), make_decision())
        collector.wait_for(2)
        wait_until(lambda: reasoner.state().status == "rate_limited", what="rate limited")
        assert len(openai_server.chat_requests()) == 2
        assert reasoner.state().queue_depth == 1

    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.try_acquire() == 0 and limiter.try_acquire() == 0
    now[0] = 20.0
    assert limiter.try_acquire() == pytest.approx(40.0)
    now[0] = 60.0
    assert limiter.try_acquire() == 0


# -- budget, persistence, cache ------------------------------------------------------


def test_budget_exhausted_stops_asking_persists_and_resets_next_utc_day(
    openai_server: OpenAIServer, tmp_path: Path, collector: Collector
) -> None:
    openai_server.default = Reply.answer()
    offset = [0.0]

    def wall() -> float:
        return time.time() + offset[0]

    s = settings_for(openai_server, tmp_path, max_requests_per_day=2)
    with Reasoner(s, on_refined=collector, api_key="k", wall=wall) as reasoner:
        for n in range(3):
            reasoner.submit(event_id(30 + n), make_episode(n), make_decision())
        collector.wait_for(2)
        wait_until(lambda: reasoner.state().status == "budget_exhausted", what="budget exhausted")
        state = reasoner.state()
    assert len(openai_server.chat_requests()) == 2
    assert state.queue_depth == 1
    assert state.budget.exhausted and state.budget.requests_remaining == 0
    assert state.as_dict()["budget"]["exhausted"] is True

    # A restart does not reset the day's budget.
    with Reasoner(s, on_refined=collector, api_key="k", wall=wall) as reasoner:
        assert reasoner.state().budget.requests_used == 2
        assert reasoner.state().budget.exhausted
        wait_until(lambda: reasoner.state().status == "budget_exhausted", what="still exhausted")
        assert len(openai_server.chat_requests()) == 2
        # The next UTC day has a fresh budget: the waiting episode goes out.
        offset[0] = 86400.0
        reasoner.submit(event_id(33), make_episode(3), make_decision())
        collector.wait_for(4)
        assert reasoner.state().budget.requests_used == 2
    assert len(openai_server.chat_requests()) == 4


def test_raising_the_budget_on_reload_resumes_sending(
    openai_server: OpenAIServer, tmp_path: Path, collector: Collector
) -> None:
    openai_server.default = Reply.answer()
    s = settings_for(openai_server, tmp_path, max_requests_per_day=1)
    with Reasoner(s, on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(35), make_episode(0), make_decision())
        reasoner.submit(event_id(36), make_episode(1), make_decision())
        collector.wait_for(1)
        wait_until(lambda: reasoner.state().status == "budget_exhausted", what="budget exhausted")
        reasoner.apply_live(SimpleNamespace(max_requests_per_day=2, max_tokens_per_day=200_000,
                                            max_requests_per_minute=10, model="ignored-on-reload"))
        collector.wait_for(2)
        state = reasoner.state()
    assert state.budget.requests_used == 2 and state.budget.requests_limit == 2
    assert reasoner.settings.model == "gpt-4o-mini"  # only the live keys changed


def test_token_budget_is_never_overshot(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    openai_server.default = Reply.answer()
    probe = ReasonerRequest.from_episode(event_id(40), make_episode(0), make_decision())
    reserve = estimate_tokens(request_body(probe, model="gpt-4o-mini", temperature=0.0, max_output_tokens=300))
    # The first request's worst case fits; after it used 480 tokens, the second's does not.
    s = settings_for(openai_server, tmp_path, max_tokens_per_day=reserve + 479)
    with Reasoner(s, on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(40), make_episode(0), make_decision())
        reasoner.submit(event_id(41), make_episode(1), make_decision())
        collector.wait_for(1)
        wait_until(lambda: reasoner.state().status == "budget_exhausted", what="token budget")
        state = reasoner.state()
    assert len(openai_server.chat_requests()) == 1
    assert state.budget.tokens_used == 480 and state.queue_depth == 1


def test_queued_items_are_sent_after_restart(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    s = settings_for(openai_server, tmp_path)
    first = Reasoner(s, api_key="k")  # never started: the device went down first
    assert first.submit(event_id(50), make_episode(0), make_decision()) is SubmitOutcome.QUEUED
    assert first.submit(event_id(51), make_episode(1), make_decision()) is SubmitOutcome.QUEUED
    assert first.submit(event_id(51), make_episode(1), make_decision()) is SubmitOutcome.DUPLICATE
    first.close()
    first.close()  # idempotent
    assert openai_server.chat_requests() == []

    openai_server.default = Reply.answer()
    second = Reasoner(s, on_refined=collector, api_key="k")
    assert second.queue_depth == 2  # read before the workers start: they may send one at once
    with second:
        got = collector.wait_for(2)
    assert sorted(r.event_id for r in got) == [event_id(50), event_id(51)]
    assert len(openai_server.chat_requests()) == 2


def test_answer_survives_a_failing_callback_and_a_restart(openai_server: OpenAIServer, tmp_path: Path) -> None:
    openai_server.script(Reply.answer(label="fear"))
    s = settings_for(openai_server, tmp_path)
    failing = Collector(fail_times=100)
    with Reasoner(s, on_refined=failing, api_key="k") as reasoner:
        reasoner.submit(event_id(60), make_episode(), make_decision())
        wait_until(lambda: reasoner.state().counts.get("callback_errors", 0) >= 1, what="callback error")
        assert reasoner.state().awaiting_delivery == 1
    good = Collector()
    with Reasoner(s, on_refined=good, api_key="k") as reasoner:
        (refinement,) = good.wait_for(1)
        wait_until(lambda: reasoner.state().awaiting_delivery == 0, what="row deleted")
    assert refinement.event_id == event_id(60) and refinement.label is Emotion.FEAR
    assert len(openai_server.chat_requests()) == 1  # delivered again, not asked again


def test_cache_hit_does_not_call_the_server(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    openai_server.script(Reply.answer(label="surprise", aus_cited=("AU1", "AU2")))
    s = settings_for(openai_server, tmp_path)
    with Reasoner(s, on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(70), make_episode(0), make_decision(Emotion.FEAR))
        collector.wait_for(1)
        # Same evidence, another event (and a local label that changed).
        reasoner.submit(event_id(71), make_episode(0), make_decision(Emotion.SURPRISE))
        collector.wait_for(2)
    # ...and after a restart the cache is still there.
    with Reasoner(s, on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(72), make_episode(0), make_decision(Emotion.FEAR))
        third = collector.wait_for(3)[2]
        assert reasoner.state().counts["cache_hits"] == 1
    first, second = collector.items[0], collector.items[1]
    assert len(openai_server.chat_requests()) == 1
    assert first.from_cache is False and second.from_cache is True and third.from_cache is True
    assert second.event_id == event_id(71) and second.label is Emotion.SURPRISE
    assert second.agrees_with_local is True and first.agrees_with_local is False
    assert second.tokens is None


def test_submit_does_not_block_while_a_request_is_in_flight(
    openai_server: OpenAIServer, tmp_path: Path, collector: Collector
) -> None:
    release = threading.Event()
    openai_server.script(Reply.answer().held(release), Reply.answer())
    with Reasoner(settings_for(openai_server, tmp_path, timeout_s=30), on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(event_id(80), make_episode(0), make_decision())
        openai_server.wait_for_requests(1)
        assert openai_server.in_flight == 1
        outcomes = [reasoner.submit(event_id(81 + n), make_episode(1 + n), make_decision()) for n in range(20)]
        # All 20 returned while the first request is still held by the server.
        assert openai_server.in_flight == 1 and not release.is_set()
        assert outcomes == [SubmitOutcome.QUEUED] * 20
        assert reasoner.queue_depth == 21
        release.set()
        openai_server.default = Reply.answer()
        collector.wait_for(21)


def test_concurrency_two_sends_two_at_once(openai_server: OpenAIServer, tmp_path: Path, collector: Collector) -> None:
    release = threading.Event()
    openai_server.default = Reply.answer().held(release)
    with Reasoner(settings_for(openai_server, tmp_path, concurrency=2), on_refined=collector, api_key="k") as reasoner:
        names = {t.name for t in threading.enumerate()}
        assert {"reasoner-0", "reasoner-1"} <= names
        for n in range(3):
            reasoner.submit(event_id(90 + n), make_episode(n), make_decision())
        wait_until(lambda: openai_server.in_flight == 2, what="two in flight")
        release.set()
        got = collector.wait_for(3)
    assert len({r.event_id for r in got}) == 3
    assert not any(t.name.startswith("reasoner-") for t in threading.enumerate())


# -- offline and off -------------------------------------------------------------------


def test_no_key_means_the_queue_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    s = ReasonerSettings(enabled=True, queue_path=tmp_path / "q.sqlite3")  # official endpoint, no key
    with Reasoner(s) as reasoner:
        assert reasoner.submit(event_id(100), make_episode(), make_decision()) is SubmitOutcome.QUEUED
        wait_until(lambda: reasoner.state().status == "offline", what="offline status")
        assert reasoner.queue_depth == 1
    with sqlite3.connect(tmp_path / "q.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 1


def test_disabled_reasoner_stores_nothing(tmp_path: Path) -> None:
    s = ReasonerSettings(queue_path=tmp_path / "never.sqlite3")  # enabled defaults to False
    with Reasoner(s, api_key="k") as reasoner:
        assert reasoner.submit(event_id(110), make_episode(), make_decision()) is SubmitOutcome.DISABLED
        assert reasoner.state().status == "disabled"
    assert not (tmp_path / "never.sqlite3").exists()


def test_confident_decisions_are_not_queued(openai_server: OpenAIServer, tmp_path: Path) -> None:
    with Reasoner(settings_for(openai_server, tmp_path), api_key="k") as reasoner:
        outcome = reasoner.submit(event_id(120), make_episode(), make_decision(ambiguous=False))
        assert outcome is SubmitOutcome.NOT_AMBIGUOUS and reasoner.queue_depth == 0


def test_full_queue_refuses_new_episodes(openai_server: OpenAIServer, tmp_path: Path) -> None:
    reasoner = Reasoner(settings_for(openai_server, tmp_path, max_queue=2), api_key="k")
    try:
        got = [reasoner.submit(event_id(130 + n), make_episode(n), make_decision()) for n in range(3)]
        assert got == [SubmitOutcome.QUEUED, SubmitOutcome.QUEUED, SubmitOutcome.FULL]
        assert reasoner.state().counts["refused_full"] == 1
    finally:
        reasoner.close()


# -- settings, store, prompt -----------------------------------------------------------


def test_settings_from_a_config_like_object(tmp_path: Path) -> None:
    cfg = SimpleNamespace(enabled=True, model="local-model", base_url="http://127.0.0.1:1/v1", timeout_s=5,
                          concurrency=2, queue_path=str(tmp_path / "x.sqlite3"), unknown_key=1)
    s = ReasonerSettings.from_any(cfg)
    assert (s.enabled, s.model, s.concurrency, s.queue_path) == (True, "local-model", 2, tmp_path / "x.sqlite3")
    assert s.max_requests_per_day == 500  # default kept
    with pytest.raises(ConfigError, match=r"^reasoner\.concurrency: must be >= 1, got 0$") as exc:
        ReasonerSettings.from_any({"concurrency": 0})
    assert exc.value.exit_code is ExitCode.CONFIG


def test_corrupt_store_is_moved_aside_and_a_fresh_one_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "reasoner.sqlite3"
    garbage = b"this is not a database, just text " * 64
    bad.write_bytes(garbage)
    with caplog.at_level("ERROR"):
        reasoner = Reasoner(ReasonerSettings(enabled=True, queue_path=bad), api_key="k")
    try:
        aside = [p for p in tmp_path.iterdir() if p.name.startswith("reasoner.sqlite3.corrupt-")]
        assert len(aside) == 1 and aside[0].read_bytes() == garbage  # kept, never deleted
        assert any("moved aside" in r.getMessage() for r in caplog.records)
        with sqlite3.connect(bad) as db:
            assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        reasoner.close(timeout=1.0)


def test_unopenable_store_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as exc:
        Reasoner(ReasonerSettings(enabled=True, queue_path=tmp_path), api_key="k")  # a folder
    assert str(tmp_path) in str(exc.value) and "\n" not in str(exc.value)
    assert exc.value.exit_code is ExitCode.IO_ERROR


def test_prompt_carries_definitions_guidance_and_scores() -> None:
    request = ReasonerRequest.from_episode(event_id(140), make_episode(), make_decision(), CONTEXT)
    prompt = render(request)
    for needle in ("fear vs surprise", "disgust vs sadness", "repression vs anger", "contempt", "one side only",
                   "Answer only from the evidence"):
        assert needle in prompt.system
    assert '"happiness", "disgust", "repression", "fear", "surprise", "sadness", "contempt", "anger", "others"' in prompt.system
    user = prompt.user
    assert "AU1 Inner brow raiser" in user and "AU20 Lip stretcher" in user
    assert "left 0.30, right 0.18" in user  # asymmetry kept
    assert "micro-expression, 600 ms" in user
    assert "Habitual AUs of this person: AU12" in user
    assert "decided by the prototype stage" in user
    assert "#" not in prompt.system + user  # template comments never sent
    # Deterministic: same evidence, same bytes; rendering from the stored form is identical.
    stored = ReasonerRequest.from_evidence(json.loads(json.dumps(request.evidence())))
    assert render(stored) == prompt
    body = request_body(stored, model="m", temperature=0.0, max_output_tokens=300)
    assert body["temperature"] == 0.0


def test_signature_ignores_event_and_local_scores_but_not_evidence() -> None:
    a = ReasonerRequest.from_episode(event_id(1), make_episode(0), make_decision(Emotion.FEAR))
    b = ReasonerRequest.from_episode(event_id(2), make_episode(0, subject_id=7), make_decision(Emotion.SURPRISE))
    c = ReasonerRequest.from_episode(event_id(3), make_episode(1), make_decision(Emotion.FEAR))
    sig = lambda r, model="m": r.signature(model=model, prompt_version="v1")  # noqa: E731
    assert sig(a) == sig(b)
    assert sig(a) != sig(c)
    assert sig(a) != sig(a, model="other")


def test_identity_scrubbing() -> None:
    assert scrub_identity("Subject 12 often shows AU14") == "The subject often shows AU14"
    assert scrub_identity("sub07: habitual AU4; subject_id=3") == "The subject: habitual AU4; the subject"
    assert scrub_identity("AU12 rising on one side") == "AU12 rising on one side"


# -- evaluation ------------------------------------------------------------------------


def test_refine_rows_routes_only_ambiguous_rows_and_respects_the_budget(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    def responder(body: dict[str, Any]) -> Reply:
        user = body["messages"][1]["content"]
        return Reply.answer(label="surprise" if "AU26" in user else "disgust", aus_cited=())

    openai_server.default = responder
    surprise = (AUActivation(AU.INNER_BROW_RAISER), AUActivation(AU.JAW_DROP))
    disgust = (AUActivation(AU.NOSE_WRINKLER), AUActivation(AU.UPPER_LIP_RAISER, Side.LEFT, 0.6))
    confident = (AUActivation(AU.LIP_CORNER_PULLER), AUActivation(AU.CHEEK_RAISER))
    rows = [
        (SimpleNamespace(activations=confident), make_decision(Emotion.HAPPINESS, ambiguous=False)),
        (SimpleNamespace(activations=surprise), make_decision(Emotion.FEAR)),
        (disgust, make_decision(Emotion.SADNESS)),
        (SimpleNamespace(activations=surprise), make_decision(Emotion.FEAR)),  # same evidence: cache
    ]
    s = settings_for(openai_server, tmp_path, enabled=False)  # --reasoner is the consent for the run
    labels = refine_rows(rows, s, api_key="k")
    assert labels == [None, Emotion.SURPRISE, Emotion.DISGUST, Emotion.SURPRISE]
    assert len(openai_server.chat_requests()) == 2
    user = openai_server.chat_requests()[0].body["messages"][1]["content"]
    assert "a coded dataset row" in user

    # A rerun is served from the persisted cache; a spent budget yields None.
    tight = settings_for(openai_server, tmp_path / "other", max_requests_per_day=1)
    assert refine_rows(rows[1:3], tight, api_key="k") == [Emotion.SURPRISE, None]
    assert refine_rows(rows, s, api_key="k") == labels
    assert len(openai_server.chat_requests()) == 3


# -- the privacy documentation -------------------------------------------------------


def test_docs_sample_is_what_the_server_receives(
    openai_server: OpenAIServer, tmp_path: Path, collector: Collector
) -> None:
    from microexpr.reasoner.sample import SAMPLE_EVENT_ID, _Context, sample_decision, sample_episode

    doc = (Path(__file__).resolve().parents[1] / "docs" / "reasoner.md").read_text(encoding="utf-8")
    block = doc.split("<!-- sample-body", 1)[1].split("```json\n", 1)[1].split("\n```", 1)[0]
    documented = json.loads(block)
    openai_server.script(Reply.answer())
    s = settings_for(openai_server, tmp_path)
    with Reasoner(s, on_refined=collector, api_key="k") as reasoner:
        reasoner.submit(SAMPLE_EVENT_ID, sample_episode(), sample_decision(), _Context())
        collector.wait_for(1)
    (request,) = openai_server.chat_requests()
    assert request.body == documented
    # Headers: only those the doc lists (transport headers + the client's own).
    allowed = {"host", "accept-encoding", "connection", "authorization", "accept", "content-type",
               "user-agent", "content-length"}
    assert {h for h in request.headers if not h.startswith("x-stainless-")} <= allowed


# -- end to end: a refinement on the real broker -------------------------------------


def test_normal_answer_becomes_a_refined_event_on_mosquitto(
    openai_server: OpenAIServer, tmp_path: Path, broker: Any, make_subscriber: Any
) -> None:
    from microexpr.events import PayloadKind, validate
    from microexpr.mqtt import MqttPublisher
    from microexpr.outbox import Outbox

    device_id = f"r{uuid.uuid4().hex[:10]}"
    topic = f"microexpr/{device_id}/event/refined"
    subscriber = make_subscriber(broker, [topic])
    mqtt_settings = SimpleNamespace(
        host=broker.host, port=broker.port, tls=False, ca_file=None, client_id=None, username=None,
        topic_prefix="microexpr", keepalive_s=5, qos=1, aus_interval_s=0.0, stats_interval_s=0.0,
        discovery=False, discovery_prefix="homeassistant",
    )
    openai_server.script(Reply.answer(label="surprise", confidence=0.66, aus_cited=("AU1", "AU2"),
                                      rationale="AU1+AU2 without AU20 dominance."))
    the_event = str(uuid.uuid4())
    with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        publisher = MqttPublisher(mqtt_settings, device_id=device_id, outbox=outbox).start()
        try:
            def on_refined(refinement: Refinement) -> None:  # the service's wiring
                publisher.publish_refined(refinement.to_refined_event(device_id))

            with Reasoner(settings_for(openai_server, tmp_path), on_refined=on_refined, api_key="k") as reasoner:
                reasoner.submit(the_event, make_episode(), make_decision(Emotion.FEAR), CONTEXT)
                (message,) = subscriber.wait_for(lambda ms: len(ms) >= 1, 15, "the refined event")
            assert publisher.flush(10)
        finally:
            publisher.close(timeout=2)
    validate(message.text, PayloadKind.EVENT_REFINED)
    payload = json.loads(message.payload)
    assert message.topic == topic and message.qos == 1
    assert payload["event_id"] == the_event
    assert payload["stage"] == "llm"
    assert payload["emotion"] == "surprise" and payload["local_emotion"] == "fear"
    assert payload["agrees_with_local"] is False
    assert payload["confidence"] == pytest.approx(0.66)
    assert payload["aus_cited"] == ["AU1", "AU2"]
    assert payload["rationale"] == "AU1+AU2 without AU20 dominance."
    assert payload["model"] == "gpt-4o-mini"


# -- microexpr eval --reasoner ----------------------------------------------------------


def _eval_config(tmp_path: Path, server: OpenAIServer, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "[reasoner]\n"
        f'base_url = "{server.base_url}"\n'
        f'queue_path = "{tmp_path / "eval-reasoner.sqlite3"}"\n'
        "max_requests_per_minute = 10000\n" + extra
    )
    return path


def test_eval_reasoner_scores_with_and_without_it(
    openai_server: OpenAIServer, tmp_path: Path, casme2_csv: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from microexpr.cli import main

    def echo_local_label(body: dict[str, Any]) -> Reply:
        user = body["messages"][1]["content"]
        first = re.search(r"found ambiguous\):\n- (\w+):", user)
        assert first is not None
        return Reply.answer(label=first.group(1), aus_cited=())

    openai_server.default = echo_local_label
    monkeypatch.setenv("OPENAI_API_KEY", "sk-eval")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = _eval_config(tmp_path, openai_server)
    code = main(["eval", str(casme2_csv), "--protocol", "5class", "--reasoner", "--config", str(config), "--json"])
    assert code == 0
    methods = json.loads(capsys.readouterr().out)["protocols"]["5class"]["methods"]
    local, refined = methods["classifier"], methods["classifier+reasoner"]
    ambiguous = local["ambiguous"]
    assert ambiguous > 0 and refined["ambiguous"] == ambiguous and refined["refined"] == ambiguous
    # The model agreed with every local label: the scores must not move.
    assert refined["accuracy"] == local["accuracy"] and refined["uf1"] == local["uf1"]
    requests = openai_server.chat_requests()
    assert 1 <= len(requests) <= ambiguous  # identical AU evidence is asked once
    # Dataset identities (subjects, clip names) never reach the API.
    subjects_and_clips = re.findall(r"^(\w+),(\w+),", casme2_csv.read_text(), flags=re.MULTILINE)[1:]
    sent = " ".join(r.raw.decode() for r in requests)
    for subject, clip in subjects_and_clips:
        assert clip not in sent
    assert "a coded dataset row" in sent

    # A second run is served from the persisted cache: no new request.
    assert main(["eval", str(casme2_csv), "--protocol", "5class", "--reasoner", "--config", str(config),
                 "--json"]) == 0
    capsys.readouterr()
    assert len(openai_server.chat_requests()) == len(requests)


def test_eval_reasoner_bad_config_is_exit_78(
    openai_server: OpenAIServer, tmp_path: Path, casme2_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from microexpr.cli import main

    config = _eval_config(tmp_path, openai_server, "concurrency = 0\n")
    code = main(["eval", str(casme2_csv), "--protocol", "5class", "--reasoner", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == ExitCode.CONFIG
    assert err.startswith("microexpr: error: reasoner.concurrency") and len(err.strip().splitlines()) == 1
    assert openai_server.chat_requests() == []


def test_an_answer_arriving_during_shutdown_is_kept_for_the_restart(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    release = threading.Event()
    openai_server.script(Reply.answer(label="fear").held(release))
    s = settings_for(openai_server, tmp_path)
    early = Collector()
    reasoner = Reasoner(s, on_refined=early, api_key="k").start()
    reasoner.submit(event_id(150), make_episode(), make_decision())
    openai_server.wait_for_requests(1)
    closer = threading.Thread(target=reasoner.close, kwargs={"timeout": 10.0}, name="test-closer")
    closer.start()
    wait_until(lambda: reasoner.stopping, what="stop requested")
    release.set()  # the answer arrives after the stop was requested
    closer.join(10)
    assert not closer.is_alive() and early.items == []
    late = Collector()
    with Reasoner(s, on_refined=late, api_key="k") as again:
        (refinement,) = late.wait_for(1)
        wait_until(lambda: again.state().awaiting_delivery == 0, what="delivered")
    assert refinement.event_id == event_id(150) and refinement.label is Emotion.FEAR
    assert len(openai_server.chat_requests()) == 1

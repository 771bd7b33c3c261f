"""What the reasoner hands back: a refinement of one published event, and a
snapshot of the reasoner's health for the ``stats`` payload."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from microexpr.classify.decide import Stage
from microexpr.facs import AU, Emotion

if TYPE_CHECKING:
    from microexpr.events import RefinedEvent


@dataclass(frozen=True, slots=True)
class Refinement:
    """The LLM's label for an event already published with its local label.

    The service turns it into the ``event/refined`` payload (same
    ``event_id``) and stores it with the event.
    """

    event_id: str
    label: Emotion
    confidence: float
    rationale: str
    aus_cited: tuple[AU, ...]
    agrees_with_local: bool
    local_label: Emotion
    local_confidence: float
    model: str
    prompt_version: str
    #: True when the answer came from the cache (identical evidence seen before).
    from_cache: bool = False
    #: Tokens billed for this answer (None when cached or not reported).
    tokens: int | None = None
    #: Seconds the API took to answer the successful attempt (None if cached).
    latency_s: float | None = None
    #: Attempts spent on this episode, the successful one included.
    attempts: int = 1
    stage: Stage = field(default=Stage.LLM)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (AUs as "AU12" codes, enums as their values)."""
        data = asdict(self)
        data["label"] = self.label.value
        data["local_label"] = self.local_label.value
        data["aus_cited"] = [au.code for au in self.aus_cited]
        data["stage"] = self.stage.value
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    def to_refined_event(self, device_id: str) -> RefinedEvent:
        """The ``event/refined`` payload object (``events.RefinedEvent``)."""
        from microexpr.events import RefinedEvent  # lazily: the reasoner needs no payload code

        return RefinedEvent(
            event_id=self.event_id,
            device_id=device_id,
            emotion=self.label,
            confidence=self.confidence,
            rationale=self.rationale,
            aus_cited=self.aus_cited,
            local_emotion=self.local_label,
            model=self.model,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Refinement:
        return cls(
            event_id=str(data["event_id"]),
            label=Emotion(data["label"]),
            confidence=float(data["confidence"]),
            rationale=str(data["rationale"]),
            aus_cited=tuple(AU(int(str(code).upper().removeprefix("AU"))) for code in data["aus_cited"]),
            agrees_with_local=bool(data["agrees_with_local"]),
            local_label=Emotion(data["local_label"]),
            local_confidence=float(data["local_confidence"]),
            model=str(data["model"]),
            prompt_version=str(data["prompt_version"]),
            from_cache=bool(data.get("from_cache", False)),
            tokens=data.get("tokens"),
            latency_s=data.get("latency_s"),
            attempts=int(data.get("attempts", 1)),
        )

    @classmethod
    def from_json(cls, text: str) -> Refinement:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True, slots=True)
class BudgetState:
    day: str  #: UTC date the counters belong to
    requests_used: int
    requests_limit: int
    tokens_used: int
    tokens_limit: int
    exhausted: bool

    @property
    def requests_remaining(self) -> int:
        return max(0, self.requests_limit - self.requests_used)

    @property
    def tokens_remaining(self) -> int:
        return max(0, self.tokens_limit - self.tokens_used)


@dataclass(frozen=True, slots=True)
class ReasonerState:
    """A snapshot for the ``stats`` payload and ``microexpr check``-style output."""

    enabled: bool
    #: What the workers are doing (the ``stats`` payload's vocabulary):
    #: "disabled", "idle", "working", "offline" (no API key), "backoff"
    #: (after 429/5xx/timeout), "circuit_open", "rate_limited" (per-minute
    #: cap), "budget_exhausted" (daily cap; waits for 00:00 UTC).
    status: str
    queue_depth: int  #: episodes waiting for an answer
    awaiting_delivery: int  #: answered, not yet accepted by on_refined
    budget: BudgetState
    breaker: str  #: closed | open | half_open
    consecutive_failures: int
    last_error: str | None
    last_error_at: str | None  #: ISO-8601 UTC
    cache_entries: int
    counts: Mapping[str, int]

    def stats_fields(self) -> dict[str, Any]:
        """Keyword arguments of ``events.ReasonerStats`` (the ``stats`` topic)."""
        return {
            "state": self.status,
            "queue_depth": self.queue_depth,
            "requests_today": self.budget.requests_used,
            "tokens_today": self.budget.tokens_used,
            "budget_exhausted": self.budget.exhausted,
        }

    def as_dict(self) -> dict[str, Any]:
        budget = self.budget
        return {
            "enabled": self.enabled,
            "status": self.status,
            "queue_depth": self.queue_depth,
            "awaiting_delivery": self.awaiting_delivery,
            "budget": {
                "day": budget.day,
                "requests_used": budget.requests_used,
                "requests_limit": budget.requests_limit,
                "requests_remaining": budget.requests_remaining,
                "tokens_used": budget.tokens_used,
                "tokens_limit": budget.tokens_limit,
                "tokens_remaining": budget.tokens_remaining,
                "exhausted": budget.exhausted,
            },
            "breaker": self.breaker,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "cache_entries": self.cache_entries,
            "counts": dict(self.counts),
        }

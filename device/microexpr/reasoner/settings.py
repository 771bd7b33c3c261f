"""The reasoner's settings, decoupled from the configuration loader.

``config.ReasonerConfig`` (pydantic, the ``[reasoner]`` TOML section) is the
user-facing source; the reasoner reads its fields by name through
:meth:`ReasonerSettings.from_any`, so any object with those attributes works
(tests build this dataclass directly). Knobs the TOML does not expose (retry
pacing, breaker thresholds) keep their defaults here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from microexpr.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ReasonerSettings:
    #: Off by default: nothing leaves the device unless a person enables it.
    enabled: bool = False
    model: str = "gpt-4o-mini"
    #: "" means the official endpoint; any OpenAI-compatible server otherwise.
    base_url: str = ""
    timeout_s: float = 20.0
    concurrency: int = 1
    max_requests_per_day: int = 500
    max_tokens_per_day: int = 200_000
    max_requests_per_minute: int = 10
    queue_path: Path = Path("/var/lib/microexpr/reasoner.sqlite3")
    #: Distinct AU signatures whose answers are remembered (persisted).
    cache_size: int = 2048
    temperature: float = 0.0
    # -- not in the TOML: pacing and safety nets -------------------------------
    #: Upper bound on the answer's length; also reserved from the token budget
    #: before each request so the daily cap is never overshot.
    max_output_tokens: int = 300
    #: Queued episodes kept at most; past this new ones are refused (counted).
    max_queue: int = 10_000
    #: Exponential backoff: base * 2**(n-1), capped, times a jitter in [0.5, 1].
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    #: A Retry-After longer than this is clamped (a broken header must not
    #: park the queue for a day).
    retry_after_max_s: float = 3600.0
    #: Consecutive failed attempts that open the circuit breaker.
    breaker_threshold: int = 5
    #: Seconds the breaker stays open before one trial request (half-open).
    breaker_cooldown_s: float = 60.0
    #: Invalid answers (malformed, out-of-set, refusal) tolerated per episode
    #: before it is given up; transient errors never give an episode up.
    max_invalid_attempts: int = 3

    @classmethod
    def from_any(cls, source: Any) -> ReasonerSettings:
        """Copy the same-named attributes of ``source`` (a config model, a
        namespace, a mapping or an instance of this class) over the defaults."""
        if source is None:
            return cls()
        if isinstance(source, cls):
            return source.validated()
        values: dict[str, Any] = {}
        for f in fields(cls):
            if isinstance(source, dict):
                present = f.name in source
                value = source.get(f.name)
            else:
                present = hasattr(source, f.name)
                value = getattr(source, f.name, None)
            if present and value is not None:
                values[f.name] = value
        return replace(cls(), **values).validated()

    def validated(self) -> ReasonerSettings:
        """Reject values that would make the worker misbehave; keys are named
        as in the TOML section."""
        checks: list[tuple[bool, str]] = [
            (self.timeout_s > 0, f"reasoner.timeout_s: must be > 0, got {self.timeout_s!r}"),
            (self.concurrency >= 1, f"reasoner.concurrency: must be >= 1, got {self.concurrency!r}"),
            (self.max_requests_per_day >= 0, f"reasoner.max_requests_per_day: must be >= 0, got {self.max_requests_per_day!r}"),
            (self.max_tokens_per_day >= 0, f"reasoner.max_tokens_per_day: must be >= 0, got {self.max_tokens_per_day!r}"),
            (self.max_requests_per_minute >= 1, f"reasoner.max_requests_per_minute: must be >= 1, got {self.max_requests_per_minute!r}"),
            (self.cache_size >= 0, f"reasoner.cache_size: must be >= 0, got {self.cache_size!r}"),
            (0.0 <= self.temperature <= 2.0, f"reasoner.temperature: must be 0..2, got {self.temperature!r}"),
            (bool(self.model), "reasoner.model: must not be empty"),
            (self.max_queue >= 1, f"reasoner.max_queue: must be >= 1, got {self.max_queue!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return replace(self, queue_path=Path(self.queue_path))

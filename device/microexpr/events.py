"""What leaves the device: event payloads and their versioned JSON Schemas.

An :class:`Event` is built once from a spotted :class:`~microexpr.spotting.Episode`
and the classifier's :class:`~microexpr.classify.decide.Decision`, and turned
into JSON once, when it enters the outbox; the publisher never looks inside.
The other payloads (the LLM refinement, the periodic stats, the throttled AU
stream, availability) are built here too, so every byte published over MQTT
is described by one module and one folder of schemas (``schemas/``).

Schema versioning (see docs/mqtt.md): every payload carries
``schema_version = "MAJOR.MINOR.PATCH"``. A new optional field bumps MINOR;
a removed, renamed or retyped field, or a changed meaning, bumps MAJOR and
ships a new ``<name>.v<MAJOR>.json`` file next to the old one. The shipped
``*.v1.json`` files always describe the newest 1.x and accept unknown
properties, so a consumer validating with them keeps working across MINOR
bumps; subscribers should check only the MAJOR number.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from microexpr.classify.decide import Decision, Stage
from microexpr.errors import DataError
from microexpr.facs import AU, AUActivation, Emotion
from microexpr.spotting import Episode, EpisodeKind

if TYPE_CHECKING:  # annotations only: the payload code needs no AU estimator
    from microexpr.aus import AUFrame

#: Version of every payload defined here (semantic versioning, see module doc).
SCHEMA_VERSION = "1.0.0"
#: The MAJOR part: which ``*.v<N>.json`` schema files describe the payloads.
SCHEMA_MAJOR = int(SCHEMA_VERSION.split(".", 1)[0])

#: Decimal places kept for intensities, scores and seconds: enough for any
#: consumer, and it keeps an event under ~2 kB.
_DIGITS = 4

JsonObject = dict[str, Any]


class PayloadKind(StrEnum):
    """The payload families, each with its own schema file."""

    EVENT = "event"
    EVENT_REFINED = "event_refined"
    STATS = "stats"
    AUS = "aus"
    #: new / update / end notices of one event (``mqtt.event_lifecycle``)
    EVENT_LIFECYCLE = "event_lifecycle"


class Availability(StrEnum):
    """Plain-string payloads of the retained ``availability`` topic."""

    ONLINE = "online"
    OFFLINE = "offline"


def utc_now_iso(now: datetime | None = None) -> str:
    """ISO-8601 UTC wall-clock time with milliseconds and a ``Z`` suffix."""
    moment = now if now is not None else datetime.now(timezone.utc)
    if moment.tzinfo is None:
        raise DataError(f"wall time {moment.isoformat()}: must be timezone-aware")
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(value: float, name: str) -> float:
    """A finite, rounded float: JSON has no NaN, and a NaN here is a bug upstream."""
    number = float(value)
    if not math.isfinite(number):
        raise DataError(f"payload field {name}: not a finite number ({number})")
    return round(number, _DIGITS)


@dataclass(frozen=True, slots=True)
class PhaseIntensity:
    """One AU's estimator intensity (0..1) at onset, apex and offset."""

    onset: float
    apex: float
    offset: float


@dataclass(frozen=True, slots=True)
class Event:
    """One classified episode, ready to publish on ``<prefix>/<device>/event``.

    Timestamps come in two clocks on purpose: ``time`` is the wall clock when
    the event was emitted (for people and databases), the ``*_s`` fields are
    the source's monotonic seconds (for ordering and latency, immune to NTP
    steps on a board without an RTC).
    """

    event_id: str
    device_id: str
    time: str
    onset_s: float
    apex_s: float
    offset_s: float
    onset_frame: int
    apex_frame: int
    offset_frame: int
    kind: EpisodeKind
    subject_id: int
    aus: tuple[AUActivation, ...]
    intensities: Mapping[AU, PhaseIntensity]
    evidence: Mapping[AU, float]
    emotion: Emotion
    confidence: float
    margin: float
    runner_up: Emotion | None
    scores: tuple[tuple[Emotion, float], ...]
    stage: Stage
    trace: tuple[str, ...]
    ambiguous: bool
    schema_version: str = SCHEMA_VERSION

    @classmethod
    def from_episode(
        cls,
        episode: Episode,
        decision: Decision,
        *,
        device_id: str,
        wall_time: datetime | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Build the event of one episode; a fresh UUID4 unless ``event_id`` is given."""
        phases = episode.onset_intensity, episode.apex_intensity, episode.offset_intensity
        present = sorted({au for phase in phases for au in phase})
        intensities = {
            au: PhaseIntensity(
                onset=_num(episode.onset_intensity.get(au, 0.0), f"intensities.{au.code}.onset"),
                apex=_num(episode.apex_intensity.get(au, 0.0), f"intensities.{au.code}.apex"),
                offset=_num(episode.offset_intensity.get(au, 0.0), f"intensities.{au.code}.offset"),
            )
            for au in present
        }
        return cls(
            event_id=event_id or str(uuid.uuid4()),
            device_id=device_id,
            time=utc_now_iso(wall_time),
            onset_s=_num(episode.onset_ts, "monotonic.onset_s"),
            apex_s=_num(episode.apex_ts, "monotonic.apex_s"),
            offset_s=_num(episode.offset_ts, "monotonic.offset_s"),
            onset_frame=int(episode.onset_frame),
            apex_frame=int(episode.apex_frame),
            offset_frame=int(episode.offset_frame),
            kind=EpisodeKind(episode.kind),
            subject_id=int(episode.subject_id),
            aus=tuple(sorted(episode.activations, key=lambda a: (a.au, a.side))),
            intensities=intensities,
            evidence={au: _num(z, f"evidence.{au.code}") for au, z in sorted(episode.apex_evidence.items())},
            emotion=Emotion(decision.label),
            confidence=_num(decision.confidence, "confidence"),
            margin=_num(decision.margin, "margin"),
            runner_up=Emotion(decision.runner_up) if decision.runner_up is not None else None,
            scores=tuple((Emotion(e), _num(s, f"scores.{e}")) for e, s in decision.scores),
            stage=Stage(decision.stage),
            trace=tuple(decision.trace),
            ambiguous=bool(decision.ambiguous),
        )

    @property
    def duration_s(self) -> float:
        return round(self.offset_s - self.onset_s, _DIGITS)

    @property
    def explanation(self) -> str:
        """The classifier's trace as one readable paragraph."""
        return " ".join(sentence.strip() for sentence in self.trace if sentence.strip())

    def to_payload(self) -> JsonObject:
        """The JSON object described by ``schemas/event.v1.json``."""
        return {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "device_id": self.device_id,
            "time": self.time,
            "monotonic": {"onset_s": self.onset_s, "apex_s": self.apex_s, "offset_s": self.offset_s},
            "frames": {"onset": self.onset_frame, "apex": self.apex_frame, "offset": self.offset_frame},
            "duration_s": self.duration_s,
            "kind": self.kind.value,
            "subject_id": self.subject_id,
            "aus": [
                {"au": a.au.code, "side": a.side.value, "intensity": _num(a.intensity, f"aus.{a.au.code}")}
                for a in self.aus
            ],
            "intensities": {
                au.code: {"onset": p.onset, "apex": p.apex, "offset": p.offset} for au, p in self.intensities.items()
            },
            "evidence": {au.code: z for au, z in self.evidence.items()},
            "emotion": self.emotion.value,
            "confidence": self.confidence,
            "margin": self.margin,
            "runner_up": self.runner_up.value if self.runner_up is not None else None,
            "scores": [{"emotion": e.value, "score": s} for e, s in self.scores],
            "stage": self.stage.value,
            "explanation": self.explanation,
            "trace": list(self.trace),
            "ambiguous": self.ambiguous,
        }

    def to_json(self) -> str:
        return dumps(self.to_payload())


@dataclass(frozen=True, slots=True)
class RefinedEvent:
    """The reasoner's second opinion on an event, published on ``event/refined``.

    It carries the *same* ``event_id`` as the event it refines, so a
    subscriber joins the two by id; ``agrees_with_local`` is derived, never
    passed in, so it cannot contradict the two labels.
    """

    event_id: str
    device_id: str
    emotion: Emotion
    confidence: float
    rationale: str
    aus_cited: tuple[AU, ...]
    local_emotion: Emotion
    model: str
    time: str = field(default_factory=utc_now_iso)
    schema_version: str = SCHEMA_VERSION

    @property
    def agrees_with_local(self) -> bool:
        return self.emotion == self.local_emotion

    def to_payload(self) -> JsonObject:
        return {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "device_id": self.device_id,
            "time": self.time,
            "stage": Stage.LLM.value,
            "emotion": Emotion(self.emotion).value,
            "confidence": _num(self.confidence, "confidence"),
            "rationale": self.rationale,
            "aus_cited": [AU(au).code for au in self.aus_cited],
            "local_emotion": Emotion(self.local_emotion).value,
            "agrees_with_local": self.agrees_with_local,
            "model": self.model,
        }

    def to_json(self) -> str:
        return dumps(self.to_payload())


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Percentiles of one stage's latency, in milliseconds."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    count: int

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> LatencyStats:
        """Nearest-rank percentiles of a window of durations in seconds."""
        if not samples:
            return cls(0.0, 0.0, 0.0, 0)
        ordered = sorted(samples)

        def rank(q: float) -> float:
            index = max(0, math.ceil(q * len(ordered)) - 1)
            return ordered[index] * 1000.0

        return cls(rank(0.50), rank(0.95), rank(0.99), len(ordered))


@dataclass(frozen=True, slots=True)
class ReasonerStats:
    """The LLM reasoner's health as reported in ``stats``.

    ``state`` is a lower-case word; known values: ``disabled``, ``idle``,
    ``working``, ``offline``, ``backoff``, ``circuit_open``,
    ``budget_exhausted``.
    """

    state: str
    queue_depth: int = 0
    requests_today: int = 0
    tokens_today: int = 0
    budget_exhausted: bool = False


@dataclass(frozen=True, slots=True)
class Stats:
    """Periodic health and latency of the daemon (retained ``stats`` topic).

    ``health`` is a lower-case word; known values: ``starting``, ``ok``,
    ``degraded``, ``no_camera``, ``stopping``, ``stopped``. Queue and latency maps are
    keyed by stage name so new stages need no schema change.
    """

    device_id: str
    uptime_s: float
    fps: float
    frames: int
    dropped_frames: int
    latency: Mapping[str, LatencyStats]
    queues: Mapping[str, int]
    outbox_depth: int
    outbox_dropped: int
    events: int
    health: str
    reasoner: ReasonerStats | None = None
    #: Candidate episodes dropped, withheld or relabelled since start, per
    #: reason (``suppression.Suppression``): why the device is silent.
    suppressed: Mapping[str, int] = field(default_factory=dict)
    #: MQTT commands: paused (0/1), frames dropped while paused, commands accepted / refused.
    controls: Mapping[str, int] = field(default_factory=dict)
    #: More outbox counts (``outbox_guard.GuardCounts``: rejected, spilled,
    #: written_back, lost), merged into the ``outbox`` object.
    outbox_counts: Mapping[str, int] = field(default_factory=dict)
    #: Why health is ``degraded`` when storage is the cause ("" otherwise).
    health_reason: str = ""
    #: Frames with a face on which the dense ROI flow ran / was skipped at
    #: rest since start (``activity.py``): ``{"ran": n, "skipped": m}``.
    flow: Mapping[str, int] = field(default_factory=dict)
    #: The analysis thread when the tracker and the analysis overlap
    #: (``overlap.py``; empty otherwise): ``promoted``, times it fell a whole
    #: frame behind and got its normal priority back; ``yielding``, 1 while
    #: it runs at ``SCHED_IDLE`` (0 for good where that policy is refused).
    analysis: Mapping[str, int] = field(default_factory=dict)
    time: str = field(default_factory=utc_now_iso)
    schema_version: str = SCHEMA_VERSION

    def to_payload(self) -> JsonObject:
        return {
            "schema_version": self.schema_version,
            "device_id": self.device_id,
            "time": self.time,
            "uptime_s": _num(self.uptime_s, "uptime_s"),
            "fps": _num(self.fps, "fps"),
            "frames": int(self.frames),
            "dropped_frames": int(self.dropped_frames),
            "latency_ms": {
                name: {
                    "p50": _num(s.p50_ms, f"latency_ms.{name}.p50"),
                    "p95": _num(s.p95_ms, f"latency_ms.{name}.p95"),
                    "p99": _num(s.p99_ms, f"latency_ms.{name}.p99"),
                    "count": int(s.count),
                }
                for name, s in self.latency.items()
            },
            "queues": {name: int(depth) for name, depth in self.queues.items()},
            "outbox": {
                "depth": int(self.outbox_depth),
                "dropped": int(self.outbox_dropped),
                **{name: int(n) for name, n in self.outbox_counts.items()},
            },
            "events": int(self.events),
            "suppressed": {name: int(n) for name, n in self.suppressed.items()},
            "controls": {name: int(n) for name, n in self.controls.items()},
            "flow": {name: int(n) for name, n in self.flow.items()},
            "analysis": {name: int(n) for name, n in self.analysis.items()},
            "health": self.health,
            "health_reason": self.health_reason,
            "reasoner": None
            if self.reasoner is None
            else {
                "state": self.reasoner.state,
                "queue_depth": int(self.reasoner.queue_depth),
                "requests_today": int(self.reasoner.requests_today),
                "tokens_today": int(self.reasoner.tokens_today),
                "budget_exhausted": bool(self.reasoner.budget_exhausted),
            },
        }

    def to_json(self) -> str:
        return dumps(self.to_payload())


def au_stream_payload(frame: AUFrame, *, device_id: str, wall_time: datetime | None = None) -> JsonObject:
    """The throttled per-frame AU sample published on ``aus`` (never stored)."""
    aus: list[JsonObject] = []
    for au in sorted(frame.intensity):
        item: JsonObject = {"au": au.code, "intensity": _num(frame.intensity[au], f"aus.{au.code}")}
        if au in frame.left:
            item["left"] = _num(frame.left[au], f"aus.{au.code}.left")
        if au in frame.right:
            item["right"] = _num(frame.right[au], f"aus.{au.code}.right")
        aus.append(item)
    return {
        "schema_version": SCHEMA_VERSION,
        "device_id": device_id,
        "time": utc_now_iso(wall_time),
        "monotonic_s": _num(frame.timestamp, "monotonic_s"),
        "frame": int(frame.frame_index),
        "face_found": bool(frame.face_found),
        "confidence": _num(frame.confidence, "confidence"),
        "aus": aus,
    }


def dumps(payload: Mapping[str, Any]) -> str:
    """Compact, strict JSON (no NaN): the one serialisation used on the wire."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --- schemas -----------------------------------------------------------------


def schema_name(kind: PayloadKind | str, major: int = SCHEMA_MAJOR) -> str:
    return f"{PayloadKind(kind).value}.v{major}.json"


@lru_cache(maxsize=None)
def load_schema(kind: PayloadKind | str, major: int = SCHEMA_MAJOR) -> Mapping[str, Any]:
    """The shipped JSON Schema (draft 2020-12) of one payload family."""
    name = schema_name(kind, major)
    resource = resources.files("microexpr").joinpath("schemas", name)
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"schema microexpr/schemas/{name}: not shipped with this version") from None
    try:
        schema: Mapping[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"schema microexpr/schemas/{name}: line {exc.lineno}: {exc.msg}") from None
    return schema


@lru_cache(maxsize=None)
def _validator(kind: PayloadKind, major: int) -> Any:
    from jsonschema import Draft202012Validator  # heavy import, only when validating

    schema = load_schema(kind, major)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate(payload: Mapping[str, Any] | str, kind: PayloadKind | str) -> None:
    """Check a payload (object or JSON text) against its schema.

    Raises:
        DataError: naming the payload kind, the JSON path of the first
            offending field and what is wrong with it.
    """
    kind = PayloadKind(kind)
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise DataError(f"{kind.value} payload: not JSON: {exc.msg} at char {exc.pos}") from None
    errors: Iterable[Any] = _validator(kind, SCHEMA_MAJOR).iter_errors(payload)
    first = min(errors, key=lambda e: (len(e.absolute_path), str(e.absolute_path)), default=None)
    if first is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path) or "(root)"
        raise DataError(f"{kind.value} payload {where.lstrip('.')}: {first.message}")

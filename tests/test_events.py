"""Event payloads: built from the stage contracts, checked against the shipped schemas."""

from __future__ import annotations

import copy
import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from microexpr import events
from microexpr.aus import AUFrame
from microexpr.classify.decide import Decision, Stage
from microexpr.errors import DataError
from microexpr.events import (
    SCHEMA_VERSION,
    Event,
    LatencyStats,
    PayloadKind,
    ReasonerStats,
    RefinedEvent,
    Stats,
    au_stream_payload,
    validate,
)
from microexpr.facs import AU, AUActivation, Emotion, Side
from microexpr.spotting import Episode, EpisodeKind

DOCS = Path(__file__).resolve().parents[1] / "docs" / "mqtt.md"


def make_episode(**overrides: Any) -> Episode:
    fields: dict[str, Any] = dict(
        subject_id=3,
        onset_frame=120,
        apex_frame=126,
        offset_frame=133,
        onset_ts=4.0,
        apex_ts=4.2,
        offset_ts=4.4333333,
        kind=EpisodeKind.MICRO,
        activations=(
            AUActivation(AU.LIP_CORNER_PULLER, Side.LEFT, 0.41),
            AUActivation(AU.CHEEK_RAISER, Side.BOTH, 0.22),
        ),
        onset_intensity={AU.LIP_CORNER_PULLER: 0.02, AU.CHEEK_RAISER: 0.01},
        apex_intensity={AU.LIP_CORNER_PULLER: 0.41, AU.CHEEK_RAISER: 0.22, AU.BROW_LOWERER: 0.05},
        offset_intensity={AU.LIP_CORNER_PULLER: 0.04},
        apex_evidence={AU.LIP_CORNER_PULLER: 5.3, AU.CHEEK_RAISER: 2.1},
    )
    fields.update(overrides)
    return Episode(**fields)


def make_decision(**overrides: Any) -> Decision:
    fields: dict[str, Any] = dict(
        label=Emotion.HAPPINESS,
        confidence=0.78,
        margin=0.41,
        runner_up=Emotion.OTHERS,
        stage=Stage.RULES,
        scores=((Emotion.HAPPINESS, 0.78), (Emotion.OTHERS, 0.37), (Emotion.REPRESSION, 0.12)),
        trace=("AU12 (left) and AU6 are active at the apex.", "Rule happiness: AU6+AU12 matched."),
        ambiguous=False,
    )
    fields.update(overrides)
    return Decision(**fields)


@pytest.fixture
def event() -> Event:
    return Event.from_episode(make_episode(), make_decision(), device_id="kiosk-1")


def schema_properties(kind: PayloadKind) -> set[str]:
    return set(events.load_schema(kind)["properties"])


# --- schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PayloadKind))
def test_every_schema_is_shipped_and_valid_2020_12(kind: PayloadKind) -> None:
    path = resources.files("microexpr").joinpath("schemas", f"{kind.value}.v1.json")
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("/draft/2020-12/schema")
    # The version pattern in the schema accepts the version we emit.
    assert re.match(schema["properties"]["schema_version"].get("pattern", "^1\\."), SCHEMA_VERSION)


def test_schema_version_is_semver_and_matches_the_schema_files() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", SCHEMA_VERSION)
    assert events.schema_name(PayloadKind.EVENT) == f"event.v{SCHEMA_VERSION.split('.')[0]}.json"


def test_a_schema_major_that_is_not_shipped_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"event\.v99\.json"):
        events.load_schema(PayloadKind.EVENT, 99)


# --- events ------------------------------------------------------------------------


def test_event_payload_validates_and_carries_every_field(event: Event) -> None:
    payload = event.to_payload()
    validate(payload, PayloadKind.EVENT)
    validate(event.to_json(), "event")
    # Producer-side strictness: nothing emitted that the schema does not describe,
    # nothing described that is not emitted.
    assert set(payload) == schema_properties(PayloadKind.EVENT)
    assert set(events.load_schema(PayloadKind.EVENT)["required"]) == set(payload)


def test_event_fields_come_from_the_episode_and_decision(event: Event) -> None:
    payload = json.loads(event.to_json())
    assert uuid.UUID(payload["event_id"]).version == 4
    assert payload["device_id"] == "kiosk-1"
    assert payload["schema_version"] == SCHEMA_VERSION
    assert payload["kind"] == "micro" and payload["subject_id"] == 3
    assert payload["monotonic"] == {"onset_s": 4.0, "apex_s": 4.2, "offset_s": 4.4333}
    assert payload["frames"] == {"onset": 120, "apex": 126, "offset": 133}
    assert payload["duration_s"] == pytest.approx(0.4333, abs=1e-4)
    # AUs sorted by number, side kept, intensities rounded.
    assert payload["aus"] == [
        {"au": "AU6", "side": "B", "intensity": 0.22},
        {"au": "AU12", "side": "L", "intensity": 0.41},
    ]
    # Every AU measured at any phase appears, missing phases are 0.
    assert list(payload["intensities"]) == ["AU4", "AU6", "AU12"]
    assert payload["intensities"]["AU4"] == {"onset": 0.0, "apex": 0.05, "offset": 0.0}
    assert payload["intensities"]["AU6"] == {"onset": 0.01, "apex": 0.22, "offset": 0.0}
    assert payload["evidence"] == {"AU6": 2.1, "AU12": 5.3}
    assert payload["emotion"] == "happiness" and payload["runner_up"] == "others"
    assert payload["scores"][0] == {"emotion": "happiness", "score": 0.78}
    assert payload["stage"] == "rules" and payload["ambiguous"] is False
    assert payload["explanation"] == (
        "AU12 (left) and AU6 are active at the apex. Rule happiness: AU6+AU12 matched."
    )
    assert payload["trace"] == list(make_decision().trace)


def test_event_ids_are_unique_and_time_is_utc_wall_clock() -> None:
    before = datetime.now(timezone.utc)
    made = [Event.from_episode(make_episode(), make_decision(), device_id="d") for _ in range(50)]
    assert len({e.event_id for e in made}) == 50
    stamp = datetime.fromisoformat(made[0].time.replace("Z", "+00:00"))
    assert made[0].time.endswith("Z")
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(timezone.utc) + timedelta(seconds=1)


def test_given_wall_time_and_event_id_are_kept() -> None:
    moment = datetime(2025, 6, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    fixed = str(uuid.uuid4())
    event = Event.from_episode(make_episode(), make_decision(), device_id="d", wall_time=moment, event_id=fixed)
    assert event.time == "2025-06-01T12:30:05.123Z"
    assert event.event_id == fixed


def test_naive_wall_time_is_refused() -> None:
    with pytest.raises(DataError, match="timezone-aware"):
        Event.from_episode(make_episode(), make_decision(), device_id="d", wall_time=datetime(2025, 1, 1))


def test_an_ambiguous_decision_without_runner_up_is_valid() -> None:
    decision = make_decision(runner_up=None, ambiguous=True, stage=Stage.CONTEXT, scores=(), trace=())
    payload = Event.from_episode(make_episode(kind=EpisodeKind.MACRO), decision, device_id="d").to_payload()
    validate(payload, PayloadKind.EVENT)
    assert payload["runner_up"] is None and payload["explanation"] == "" and payload["kind"] == "macro"


def test_a_nan_confidence_is_a_data_error_not_invalid_json() -> None:
    with pytest.raises(DataError, match="confidence"):
        Event.from_episode(make_episode(), make_decision(confidence=float("nan")), device_id="d")


def _set(path: str, value: Any) -> Any:
    def mutate(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = payload
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (_set("event_id", _DELETE), "event_id"),
        (_set("event_id", "not-a-uuid"), "event_id"),
        (_set("emotion", "joy"), "emotion"),
        (_set("confidence", 1.5), "confidence"),
        (_set("kind", "meso"), "kind"),
        (_set("stage", "oracle"), "stage"),
        (_set("aus.0.side", "X"), "aus[0].side"),
        (_set("aus.1.au", "12"), "aus[1].au"),
        (_set("intensities.AU6.apex", -0.1), "intensities.AU6.apex"),
        (_set("time", "2025-06-01 12:00:00"), "time"),
        (_set("schema_version", "2.0.0"), "schema_version"),
        (_set("device_id", "kiosk/1"), "device_id"),
        (_set("frames.onset", 1.5), "frames.onset"),
        (_set("ambiguous", "no"), "ambiguous"),
    ],
)
def test_invalid_event_payloads_fail_naming_the_field(event: Event, mutate: Any, where: str) -> None:
    payload = copy.deepcopy(event.to_payload())
    mutate(payload)
    with pytest.raises(DataError) as exc:
        validate(payload, PayloadKind.EVENT)
    assert str(exc.value).startswith("event payload")
    assert where.split(".")[0].split("[")[0] in str(exc.value)


def test_unknown_fields_are_accepted_for_forward_compatibility(event: Event) -> None:
    payload = event.to_payload() | {"added_in_1_1": True}
    validate(payload, PayloadKind.EVENT)


def test_text_that_is_not_json_is_a_data_error() -> None:
    with pytest.raises(DataError, match="not JSON"):
        validate("{nope", PayloadKind.EVENT)


# --- refinement, stats, AU stream ----------------------------------------------------


def test_refined_event_keeps_the_event_id_and_says_whether_it_agrees(event: Event) -> None:
    refined = RefinedEvent(
        event_id=event.event_id,
        device_id=event.device_id,
        emotion=Emotion.REPRESSION,
        confidence=0.64,
        rationale="AU12 is unilateral and weak; with AU14 absent this reads as a suppressed smile.",
        aus_cited=(AU.LIP_CORNER_PULLER, AU.CHEEK_RAISER),
        local_emotion=event.emotion,
        model="gpt-4o-mini",
    )
    payload = refined.to_payload()
    validate(payload, PayloadKind.EVENT_REFINED)
    assert set(payload) == schema_properties(PayloadKind.EVENT_REFINED)
    assert payload["event_id"] == event.event_id
    assert payload["stage"] == "llm" and payload["aus_cited"] == ["AU12", "AU6"]
    assert payload["agrees_with_local"] is False
    same = RefinedEvent(event.event_id, "d", Emotion.HAPPINESS, 0.9, "", (), Emotion.HAPPINESS, "m")
    assert same.to_payload()["agrees_with_local"] is True
    broken = payload | {"emotion": "bliss"}
    with pytest.raises(DataError, match="emotion"):
        validate(broken, PayloadKind.EVENT_REFINED)


def test_latency_percentiles_are_nearest_rank_in_ms() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    stats = LatencyStats.from_seconds(samples)
    assert (stats.p50_ms, stats.p95_ms, stats.p99_ms, stats.count) == pytest.approx((50.0, 95.0, 99.0, 100))
    assert LatencyStats.from_seconds([]) == LatencyStats(0.0, 0.0, 0.0, 0)
    single = LatencyStats.from_seconds([0.007])
    assert single.p50_ms == single.p99_ms == pytest.approx(7.0)


def make_stats(**overrides: Any) -> Stats:
    fields: dict[str, Any] = dict(
        device_id="kiosk-1",
        uptime_s=3600.5,
        fps=29.7,
        frames=106_920,
        dropped_frames=12,
        latency={"tracker": LatencyStats.from_seconds([0.011, 0.012, 0.019]), "total": LatencyStats(14.0, 21.0, 30.5, 300)},
        queues={"frames": 1, "episodes": 0},
        outbox_depth=0,
        outbox_dropped=0,
        events=17,
        health="ok",
        reasoner=ReasonerStats("budget_exhausted", queue_depth=4, requests_today=200, tokens_today=91_000, budget_exhausted=True),
    )
    fields.update(overrides)
    return Stats(**fields)


def test_stats_payload_validates() -> None:
    payload = make_stats().to_payload()
    validate(payload, PayloadKind.STATS)
    assert set(payload) == schema_properties(PayloadKind.STATS)
    assert payload["latency_ms"]["total"] == {"p50": 14.0, "p95": 21.0, "p99": 30.5, "count": 300}
    assert payload["reasoner"]["budget_exhausted"] is True
    validate(make_stats(reasoner=None).to_payload(), PayloadKind.STATS)
    with pytest.raises(DataError, match="health"):
        validate(make_stats(health="Not OK!").to_payload(), PayloadKind.STATS)
    with pytest.raises(DataError, match="dropped_frames"):
        validate(make_stats(dropped_frames=-1).to_payload(), PayloadKind.STATS)


def test_au_stream_payload_validates_and_keeps_sides() -> None:
    frame = AUFrame(
        frame_index=42,
        timestamp=1.4,
        face_found=True,
        confidence=0.97,
        intensity={AU.LIP_CORNER_PULLER: 0.5, AU.INNER_BROW_RAISER: 0.1},
        left={AU.LIP_CORNER_PULLER: 0.5},
        right={AU.LIP_CORNER_PULLER: 0.31},
        pose=None,
    )
    payload = au_stream_payload(frame, device_id="kiosk-1")
    validate(payload, PayloadKind.AUS)
    assert set(payload) == schema_properties(PayloadKind.AUS)
    assert payload["aus"] == [
        {"au": "AU1", "intensity": 0.1},
        {"au": "AU12", "intensity": 0.5, "left": 0.5, "right": 0.31},
    ]
    empty = AUFrame(43, 1.43, False, 0.0, {}, {}, {}, None)
    assert au_stream_payload(empty, device_id="kiosk-1")["aus"] == []


# --- the documentation's examples are real payloads ------------------------------------


def test_every_payload_example_in_the_docs_validates() -> None:
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- payload: (\w+) -->\s*```json\n(.*?)```", text, flags=re.S)
    kinds = {kind for kind, _ in blocks}
    assert kinds == {k.value for k in PayloadKind}, f"docs/mqtt.md examples cover {sorted(kinds)}"
    for kind, body in blocks:
        validate(json.loads(body), kind)

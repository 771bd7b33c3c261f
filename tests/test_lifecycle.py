"""The event lifecycle (``mqtt.event_lifecycle``): new at onset, update past the
apex, end with the decision, one ``event_id`` shared with the ``event`` message.

The real pipeline on the real clip feeds the tracker; the daemon publishes
through a real mosquitto, and the subscriber checks order and ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from fixtures.toml import toml_text

from microexpr.capture import open_source
from microexpr.events import PayloadKind, validate
from microexpr.pipeline import Pipeline
from microexpr.service.items import emitted_episodes
from microexpr.service.lifecycle import LifecycleTracker
from microexpr.spotting import Spotter

ROOT = Path(__file__).resolve().parents[1]


def _run_tracker(clip: Path, model: Path) -> tuple[list[dict[str, Any]], list[str], list[Any]]:
    tracker = LifecycleTracker("lab-1")
    payloads: list[dict[str, Any]] = []
    event_ids: list[str] = []
    episodes: list[Any] = []
    from microexpr.events import Event

    def emit(emitted: list[Any], in_progress: Any, now: float) -> None:
        notices, ids = tracker.step(in_progress, emitted, now)
        payloads.extend(n.to_payload() for n in notices)
        for item, event_id in zip(emitted, ids, strict=True):
            event = Event.from_episode(item.episode, item.decision, device_id="lab-1", event_id=event_id)
            event_ids.append(event.event_id)
            episodes.append(item.episode)
            end = tracker.end_notice(event)
            assert end is not None
            payloads.append(end.to_payload())

    with Pipeline.create(model_path=model) as pipeline, open_source(clip) as frames:
        for frame in frames:
            result = pipeline.process(frame)
            emit(list(emitted_episodes(result.episodes)), result.in_progress, frame.timestamp)
        emit(list(emitted_episodes(pipeline.finish())), (), float("inf"))
    return payloads, event_ids, episodes


@pytest.mark.integration
def test_real_clip_lifecycle_is_new_update_end_with_the_events_id(smile_clip: Path, model_path: Path) -> None:
    payloads, event_ids, _episodes = _run_tracker(smile_clip, model_path)
    assert event_ids, "the clip's smile is an event"
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for payload in payloads:
        validate(payload, PayloadKind.EVENT_LIFECYCLE)
        by_id[payload["event_id"]].append(payload)
    assert set(event_ids) <= set(by_id)
    for event_id, notices in by_id.items():
        types = [n["type"] for n in notices]
        assert types[0] == "new" and types[-1] == "end" and types.count("end") == 1, types
        assert set(types[1:-1]) <= {"update"} and len(types) <= 2 + 4, types
        assert [n["sequence"] for n in notices] == list(range(len(notices)))
        end = notices[-1]
        if event_id in event_ids:
            assert end["outcome"] == "emitted" and end["event"]["event_id"] == event_id
            validate(end["event"], PayloadKind.EVENT)
        else:
            assert end["outcome"] == "discarded" and end["reason"] and end["event"] is None
    # The smile was told early: its "new" came with an onset before the event's offset.
    smile = by_id[event_ids[0]]
    assert smile[0]["monotonic"]["onset_s"] < smile[-1]["event"]["monotonic"]["offset_s"]
    assert "update" in [n["type"] for n in smile], "the apex of a 2 s smile passes while it is open"


@pytest.mark.integration
def test_reading_the_open_episode_changes_no_decision(smile_clip: Path, model_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with Pipeline.create(model_path=model_path) as pipeline, open_source(smile_clip) as frames:
        with_view = [(s.episode, s.decision) for s in pipeline.run(frames)]
    monkeypatch.setattr(Spotter, "in_progress", property(lambda self: None))
    with Pipeline.create(model_path=model_path) as pipeline, open_source(smile_clip) as frames:
        without = [(s.episode, s.decision) for s in pipeline.run(frames)]
    assert with_view == without and with_view


def test_an_open_episode_the_engine_drops_ends_discarded() -> None:
    from microexpr.pipeline import EpisodeInProgress
    from microexpr.spotting import OpenEpisode

    tracker = LifecycleTracker("lab-1")
    opened = EpisodeInProgress(0, OpenEpisode(10, 1.0, 12, 1.07, 4.0, "mouth_corner_l"))
    notices, ids = tracker.step([opened], [], 1.07)
    assert [n.type.value for n in notices] == ["new"] and ids == []
    notices, _ = tracker.step([opened], [], 1.3)  # peak 0.23 s ago: the apex has passed
    assert [n.type.value for n in notices] == ["update"]
    notices, _ = tracker.step([], [], 1.4)  # closed without an event (rejected, suppressed)
    assert [(n.type.value, n.outcome.value if n.outcome else None) for n in notices] == [("end", "discarded")]
    assert notices[0].sequence == 2
    for notice in notices:
        validate(notice.to_payload(), PayloadKind.EVENT_LIFECYCLE)
    assert tracker.counts == {"new": 1, "update": 1, "end": 1, "emitted": 0, "discarded": 1}


@pytest.mark.integration
def test_lifecycle_arrives_in_order_on_a_real_broker(tmp_path: Path, broker: Any, make_subscriber: Any,
                                                     smile_clip: Path, model_path: Path, openai_server: Any) -> None:
    from fixtures.openai_server import Reply

    device_id = f"lc-{uuid.uuid4().hex[:8]}"
    base = f"microexpr/{device_id}"
    subscriber = make_subscriber(broker, [f"{base}/event", f"{base}/event/lifecycle", f"{base}/event/refined"])
    openai_server.default = Reply.answer(label="happiness", confidence=0.7, aus_cited=())
    config = tmp_path / "config.toml"
    config.write_text(f'device_id = "{device_id}"\n' + toml_text({
        "source": {"uri": str(smile_clip)},
        "model": {"path": str(model_path)},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "event_lifecycle": True},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        # every episode ambiguous: the (local) reasoner's label must reach the same event id
        "engine": {"ambiguous_confidence": 1.0},
        "reasoner": {"enabled": True, "base_url": openai_server.base_url,
                     "queue_path": str(tmp_path / "reasoner.sqlite3")},
    }))
    env = {k: v for k, v in os.environ.items() if k not in {"NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM"}}
    env["PYTHONPATH"] = str(ROOT / "device")
    proc = subprocess.run([sys.executable, "-m", "microexpr", "run", "--config", str(config), "--no-print-events"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    subscriber.wait_for(lambda msgs: any(m.topic == f"{base}/event" for m in msgs)
                        and any(m.topic.endswith("/lifecycle") and json.loads(m.text)["type"] == "end" for m in msgs),
                        60, "an event and its lifecycle end")
    refined = [json.loads(m.text) for m in subscriber.snapshot() if m.topic == f"{base}/event/refined"]
    ends = {json.loads(m.text)["event_id"] for m in subscriber.snapshot()
            if m.topic.endswith("/lifecycle") and json.loads(m.text)["type"] == "end"}
    assert refined, proc.stderr[-2000:]
    assert {r["event_id"] for r in refined} <= ends  # the LLM's label names the lifecycle's event id
    messages = subscriber.snapshot()
    events = [json.loads(m.text) for m in messages if m.topic == f"{base}/event"]
    lifecycle = [json.loads(m.text) for m in messages if m.topic == f"{base}/event/lifecycle"]
    for payload in lifecycle:
        validate(payload, PayloadKind.EVENT_LIFECYCLE)
    for event in events:
        mine = [p for p in lifecycle if p["event_id"] == event["event_id"]]
        # in the order sent, one event_id: new first, end last, carrying the very event published on .../event
        assert [p["type"] for p in mine][0] == "new" and [p["type"] for p in mine][-1] == "end", mine
        assert [p["sequence"] for p in mine] == list(range(len(mine)))
        assert mine[-1]["outcome"] == "emitted" and mine[-1]["event"] == event

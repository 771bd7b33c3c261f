"""Home Assistant / Node-RED as users meet them (issue 13, item 4).

1. Every discovery config is checked against the discovery schema Home
   Assistant documents for its component (written out below from the HA
   docs for ``sensor.mqtt``, ``binary_sensor.mqtt``, ``event.mqtt``,
   ``switch.mqtt``, ``button.mqtt`` and the discovery page: required keys,
   the keys each component accepts, ``device_class: enum`` needing
   ``options`` and no unit or state class, an event's ``event_types``,
   ``origin`` with a ``name``), and every ``value_json.X`` a template reads
   exists in the payload schema of the topic it reads.
2. A real daemon (real model, the real clip replayed as a camera) on a real
   mosquitto: the face binary sensor turns ON, bad command payloads are
   refused and counted and change nothing, pause/resume, recalibrate and
   the AU stream switch work, each state retained.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fixtures.broker import Broker, publish_once, wait_until

from microexpr.config import parse_config
from microexpr.events import PayloadKind, load_schema
from microexpr.facs import Emotion
from microexpr.mqtt import Topics, discovery_messages
from microexpr.mqtt.commands import CommandName, CommandRejected, parse_command
from microexpr.service import Service

# --------------------------------------------------------------------------
# The documented discovery schema, per component (HA docs, MQTT integrations)

_COMMON = {
    "name", "unique_id", "availability_topic", "payload_available", "payload_not_available", "has_entity_name",
    "device", "origin", "icon", "entity_category", "qos", "enabled_by_default", "object_id",
}
_STATEFUL = {"state_topic", "value_template", "json_attributes_topic", "json_attributes_template"}
SCHEMA: dict[str, dict[str, set[str]]] = {
    "sensor": {"required": {"state_topic"},
               "allowed": _COMMON | _STATEFUL | {"device_class", "unit_of_measurement", "state_class", "options",
                                                 "expire_after", "force_update", "suggested_display_precision"}},
    "binary_sensor": {"required": {"state_topic"},
                      "allowed": _COMMON | _STATEFUL | {"device_class", "payload_on", "payload_off", "expire_after",
                                                        "force_update", "off_delay"}},
    "event": {"required": {"state_topic", "event_types"},
              "allowed": _COMMON | _STATEFUL | {"event_types", "device_class"}},
    "switch": {"required": {"command_topic"},
               "allowed": _COMMON | _STATEFUL | {"command_topic", "payload_on", "payload_off", "state_on", "state_off",
                                                 "optimistic", "retain", "device_class"}},
    "button": {"required": {"command_topic"},
               "allowed": _COMMON | {"command_topic", "command_template", "payload_press", "retain", "device_class"}},
}
#: device classes HA documents for each component (only those we may use are listed)
DEVICE_CLASSES = {
    "sensor": {"enum", "duration", "timestamp"},
    "binary_sensor": {"occupancy", "presence", "motion", "problem", "connectivity"},
    "event": {"button", "doorbell", "motion"},
    "switch": {"switch", "outlet"},
    "button": {"identify", "restart", "update"},
}
ENTITY_CATEGORIES = {"config", "diagnostic"}
TOPIC_RE = re.compile(r"^[^#+\x00]+$")


def _check(component: str, config: Mapping[str, Any]) -> list[str]:
    """Every way ``config`` breaks the documented schema of ``component``."""
    schema = SCHEMA[component]
    problems = [f"missing {key}" for key in schema["required"] - set(config)]
    problems += [f"{key} is not a {component} option" for key in set(config) - schema["allowed"]]
    device = config.get("device", {})
    if not (device.get("identifiers") or device.get("connections")):
        problems.append("device needs identifiers or connections")
    if not config.get("unique_id"):
        problems.append("device info needs a unique_id")
    if not isinstance(config.get("origin"), Mapping) or not config["origin"].get("name"):
        problems.append("origin needs a name")
    for key in ("state_topic", "command_topic", "availability_topic", "json_attributes_topic"):
        if key in config and not TOPIC_RE.match(config[key]):
            problems.append(f"{key} is not a publishable topic")
    if "device_class" in config and config["device_class"] not in DEVICE_CLASSES[component]:
        problems.append(f"device_class {config['device_class']} is not one of {component}'s")
    if config.get("entity_category", "config") not in ENTITY_CATEGORIES:
        problems.append("entity_category must be config or diagnostic")
    if component == "sensor" and config.get("device_class") == "enum":
        if not config.get("options") or not all(isinstance(o, str) for o in config["options"]):
            problems.append("an enum sensor needs a non-empty options list of strings")
        if {"unit_of_measurement", "state_class"} & set(config):
            problems.append("an enum sensor takes no unit_of_measurement or state_class")
    if "options" in config and config.get("device_class") != "enum":
        problems.append("options needs device_class enum")
    if component == "event":
        types = config.get("event_types")
        if not types or not all(isinstance(t, str) and t for t in types) or len(set(types)) != len(types):
            problems.append("event_types must be a non-empty list of distinct strings")
        if "event_type" not in config.get("value_template", "event_type"):
            problems.append("the event template must produce an event_type")
    if component in ("switch", "binary_sensor") and config.get("payload_on") == config.get("payload_off", object()):
        problems.append("payload_on and payload_off must differ")
    return problems


def _fields(kind: PayloadKind) -> set[str]:
    return set(load_schema(kind)["properties"])


def test_every_discovery_config_follows_the_documented_schema() -> None:
    topics = Topics.build("microexpr", "kiosk-1")
    messages = discovery_messages(topics, "kiosk-1")
    components: dict[str, int] = {}
    unique_ids = set()
    readable = {topics.event: _fields(PayloadKind.EVENT), topics.stats: _fields(PayloadKind.STATS)}
    for topic, text in messages.items():
        match = re.fullmatch(r"homeassistant/(\w+)/kiosk-1/(\w+)/config", topic)
        assert match, topic
        component = match.group(1)
        components[component] = components.get(component, 0) + 1
        config = json.loads(text)
        assert _check(component, config) == [], (topic, _check(component, config))
        unique_ids.add(config["unique_id"])
        # templates read only fields the payload on that topic has
        for key in ("value_template", "json_attributes_template"):
            if key in config and config.get("state_topic") in readable:
                used = set(re.findall(r"value_json\.(\w+)", config[key]))
                assert used <= readable[config["state_topic"]], (topic, used - readable[config["state_topic"]])
    assert len(unique_ids) == len(messages)
    assert components == {"sensor": 9, "event": 1, "binary_sensor": 1, "switch": 2, "button": 1}
    by_id = {json.loads(t)["unique_id"]: json.loads(t) for t in messages.values()}
    event = by_id["microexpr_kiosk-1_emotion_event"]
    assert event["event_types"] == [e.value for e in Emotion] and event["state_topic"] == topics.event
    emotion = by_id["microexpr_kiosk-1_emotion"]
    assert emotion["device_class"] == "enum" and emotion["options"] == [e.value for e in Emotion]
    face = by_id["microexpr_kiosk-1_face"]
    assert face["state_topic"] == "microexpr/kiosk-1/face"
    assert by_id["microexpr_kiosk-1_paused"]["command_topic"] == "microexpr/kiosk-1/set/paused"
    assert by_id["microexpr_kiosk-1_recalibrate"]["command_topic"] == "microexpr/kiosk-1/set/recalibrate"


def test_the_checker_catches_what_home_assistant_refuses() -> None:
    """The checks above can fail: configs HA would reject are reported."""
    good = json.loads(next(iter(discovery_messages(Topics.build("microexpr", "k"), "k").values())))
    assert _check("sensor", good) == []
    assert "an enum sensor takes no unit_of_measurement or state_class" in _check(
        "sensor", good | {"device_class": "enum", "options": ["a"], "unit_of_measurement": "%"})
    assert "an enum sensor needs a non-empty options list of strings" in _check(
        "sensor", good | {"device_class": "enum", "options": []})
    assert "missing event_types" in _check("event", good)
    assert "origin needs a name" in _check("sensor", good | {"origin": {}})
    assert "bogus is not a sensor option" in _check("sensor", good | {"bogus": 1})
    assert "missing command_topic" in _check("button", {k: v for k, v in good.items() if k != "state_topic"})


@pytest.mark.parametrize(
    ("topic", "payload", "why"),
    [
        ("b/set/paused", b"on", "must be ON or OFF"),
        ("b/set/paused", b"TRUE", "must be ON or OFF"),
        ("b/set/paused", b'{"state":"ON"}', "must be ON or OFF"),
        ("b/set/paused", b"\xff\xfe", "not ASCII"),
        ("b/set/recalibrate", b"ON", "must be PRESS"),
        ("b/set/reboot", b"PRESS", "unknown command"),
        ("b/set/aus_stream", b"", "must be ON or OFF"),
        ("b/set/paused", b"ON" * 100, "payload of 200 bytes"),
    ],
)
def test_bad_command_payloads_are_refused_with_a_reason(topic: str, payload: bytes, why: str) -> None:
    with pytest.raises(CommandRejected, match=re.escape(why)):
        parse_command("b/set", topic, payload)


def test_good_command_payloads() -> None:
    assert parse_command("b/set", "b/set/paused", b"ON").value is True
    assert parse_command("b/set", "b/set/aus_stream", b"OFF").value is False
    assert parse_command("b/set", "b/set/recalibrate", b"PRESS").name is CommandName.RECALIBRATE


# --------------------------------------------------------------------------
# A real daemon on a real broker


def _last(messages: list[Any], topic: str) -> str | None:
    texts = [m.text for m in messages if m.topic == topic]
    return texts[-1] if texts else None


@pytest.mark.integration
def test_commands_and_face_sensor_on_a_real_broker(tmp_path: Path, broker: Broker, make_subscriber: Any,
                                                  smile_clip: Path, model_path: Path) -> None:
    device_id = f"ha-{uuid.uuid4().hex[:8]}"
    base = f"microexpr/{device_id}"
    subscriber = make_subscriber(broker, [f"{base}/#", f"homeassistant/+/{device_id}/+/config"])
    config = parse_config({
        "device_id": device_id,
        "source": {"uri": f"replay:{smile_clip}", "loop": True},
        "model": {"path": str(model_path)},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "stats_interval_s": 1.0, "keepalive_s": 5},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
    })
    service = Service(config)
    outcome: list[int] = []
    runner = threading.Thread(target=lambda: outcome.append(service.run(install_signals=False)), daemon=True)
    runner.start()
    try:
        wait_until(lambda: service.metrics.frames > 10, 120, "frames through the pipeline")
        subscriber.wait_for(lambda ms: _last(ms, f"{base}/face") == "ON", 60, "face binary sensor ON")
        messages = subscriber.snapshot()
        assert _last(messages, f"{base}/state/paused") == "OFF"
        assert _last(messages, f"{base}/state/aus_stream") == "OFF"
        assert any(m.topic == f"homeassistant/event/{device_id}/emotion_event/config" for m in messages)

        # Bad payloads: refused, counted, nothing changes state.
        frames = service.metrics.frames
        for topic, payload in ((f"{base}/set/paused", "on"), (f"{base}/set/paused", '{"x":1}'),
                               (f"{base}/set/recalibrate", "ON"), (f"{base}/set/shutdown", "PRESS")):
            publish_once(broker, topic, payload)
        wait_until(lambda: service.controls.rejected == 4, 30, "four refused commands")
        assert service.controls.accepted == 0 and not service.paused
        wait_until(lambda: service.metrics.frames > frames + 5, 60, "frames still flowing")

        # Pause: frames are dropped and counted, the switch state is retained ON.
        publish_once(broker, f"{base}/set/paused", "ON")
        subscriber.wait_for(lambda ms: _last(ms, f"{base}/state/paused") == "ON", 30, "paused state ON")
        assert service.paused
        processed = service.metrics.frames
        wait_until(lambda: service.paused_frames > 5, 60, "frames dropped while paused")
        assert service.metrics.frames <= processed + 2  # at most what was already queued in the analysis
        late = make_subscriber(broker, [f"{base}/state/#", f"{base}/stats"])
        late.wait_for(lambda ms: _last(ms, f"{base}/state/paused") == "ON", 30, "retained paused ON")
        late.wait_for(lambda ms: any(m.topic == f"{base}/stats" and json.loads(m.text)["controls"]["paused"] == 1
                                     for m in ms), 30, "stats saying paused")
        publish_once(broker, f"{base}/set/paused", "OFF")
        subscriber.wait_for(lambda ms: _last(ms, f"{base}/state/paused") == "OFF", 30, "paused state OFF")
        wait_until(lambda: service.metrics.frames > processed + 5, 60, "frames after resume")

        # Recalibrate and the AU stream switch.
        publish_once(broker, f"{base}/set/recalibrate", "PRESS")
        publish_once(broker, f"{base}/set/aus_stream", "ON")
        subscriber.wait_for(lambda ms: any(m.topic == f"{base}/aus" for m in ms), 60, "AU samples after ON")
        assert _last(subscriber.snapshot(), f"{base}/state/aus_stream") == "ON"
        wait_until(lambda: service.controls.accepted == 4, 30, "four accepted commands")
        stats = service.stats().to_payload()
        assert stats["controls"]["commands_rejected"] == 4 and stats["controls"]["commands_accepted"] == 4
    finally:
        service.request_stop("test")
        runner.join(60)
    assert outcome == [0]
    time.sleep(0)  # nothing else: the broker fixture outlives the test

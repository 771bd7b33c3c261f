"""The MQTT publisher against a real mosquitto on loopback.

Every test uses its own device id, so retained messages of one test never
reach another's subscriber on the shared session broker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from fixtures.broker import Broker, Received, make_tls_files, publish_once, wait_until
from test_events import make_decision, make_episode, make_stats

from paho.mqtt.enums import CallbackAPIVersion

from microexpr.aus import AUFrame
from microexpr.errors import ConfigError, PublishError
from microexpr.events import Event, PayloadKind, RefinedEvent, validate
from microexpr.facs import AU, Emotion
from microexpr.mqtt import MqttPublisher, Topics, discovery_messages
from microexpr.outbox import Outbox

TESTS = Path(__file__).resolve().parent

#: Sensors announced to Home Assistant (one retained config each).
N_SENSORS = len(discovery_messages(Topics.build("microexpr", "x"), "x"))


@dataclass
class Settings:
    """Duck-typed like config.MqttConfig; no ``password``: it comes from secrets."""

    host: str
    port: int
    tls: bool = False
    ca_file: str | None = None
    client_id: str | None = None
    username: str | None = None
    topic_prefix: str = "microexpr"
    keepalive_s: int = 5
    qos: int = 1
    aus_interval_s: float = 0.0
    stats_interval_s: float = 0.0
    discovery: bool = False
    discovery_prefix: str = "homeassistant"


def new_device_id() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def new_event(device_id: str) -> Event:
    return Event.from_episode(make_episode(), make_decision(), device_id=device_id)


def event_ids(messages: list[Received]) -> list[str]:
    return [json.loads(m.payload)["event_id"] for m in messages]


@pytest.fixture(autouse=True)
def _no_inherited_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("MICROEXPR_MQTT_PASSWORD", raising=False)


@pytest.fixture
def device_id() -> str:
    return new_device_id()


@pytest.fixture
def make_publisher(tmp_path: Path) -> Iterator[Callable[..., MqttPublisher]]:
    """Factory: a publisher with its own outbox file, closed after the test."""
    made: list[tuple[MqttPublisher, Outbox]] = []

    def factory(
        settings: Settings,
        device_id: str,
        *,
        outbox: Outbox | None = None,
        start: bool = True,
        cls: type[MqttPublisher] = MqttPublisher,
        **kwargs: Any,
    ) -> MqttPublisher:
        box = outbox if outbox is not None else Outbox(tmp_path / f"outbox-{device_id}-{len(made)}.db")
        kwargs.setdefault("reconnect_min_s", 0.1)
        kwargs.setdefault("reconnect_max_s", 0.5)
        publisher = cls(settings, device_id=device_id, outbox=box, **kwargs)
        made.append((publisher, box))
        return publisher.start() if start else publisher

    yield factory
    for publisher, box in made:
        publisher.close(timeout=2)
        box.close()


# --- delivery -------------------------------------------------------------------------


@pytest.mark.integration
def test_events_arrive_with_qos1_and_validate(broker: Broker, make_subscriber, make_publisher, device_id) -> None:  # type: ignore[no-untyped-def]
    base = f"microexpr/{device_id}"
    sub = make_subscriber(broker, [f"{base}/#"])
    publisher = make_publisher(Settings(broker.host, broker.port), device_id)
    assert publisher.wait_connected(10)
    sent = [new_event(device_id) for _ in range(5)]
    for event in sent:
        publisher.publish_event(event)
    refined = RefinedEvent(
        sent[0].event_id, device_id, Emotion.REPRESSION, 0.6, "weak unilateral AU12", (AU.LIP_CORNER_PULLER,),
        sent[0].emotion, "gpt-4o-mini",
    )
    publisher.publish_refined(refined)
    messages = sub.wait_for(
        lambda ms: len([m for m in ms if m.topic == f"{base}/event"]) >= 5
        and any(m.topic == f"{base}/event/refined" for m in ms),
        10, "5 events and 1 refinement",
    )
    got = [m for m in messages if m.topic == f"{base}/event"]
    assert event_ids(got) == [e.event_id for e in sent]  # in order
    for message, event in zip(got, sent, strict=True):
        validate(message.text, PayloadKind.EVENT)
        assert json.loads(message.payload) == event.to_payload()
        assert message.qos == 1 and not message.retain
    (refined_message,) = [m for m in messages if m.topic == f"{base}/event/refined"]
    validate(refined_message.text, PayloadKind.EVENT_REFINED)
    assert json.loads(refined_message.payload)["event_id"] == sent[0].event_id
    assert publisher.flush(10), "outbox not emptied after PUBACKs"
    # Delivered is counted when the acknowledged row is deleted, just after.
    wait_until(lambda: publisher.status().delivered == 6, 10, "six deliveries counted")
    status = publisher.status()
    assert status.delivered == 6 and status.outbox_depth == 0 and status.in_flight == 0


@pytest.mark.integration
def test_availability_is_retained_online_then_offline_on_clean_close(broker, make_subscriber, make_publisher, device_id) -> None:  # type: ignore[no-untyped-def]
    topic = f"microexpr/{device_id}/availability"
    early = make_subscriber(broker, [topic])
    publisher = make_publisher(Settings(broker.host, broker.port), device_id)
    assert publisher.wait_connected(10)
    early.wait_for(lambda ms: [m.text for m in ms] == ["online"], 10, "online on connect")
    # A subscriber arriving later still learns the state: the message is retained.
    late = make_subscriber(broker, [topic])
    first = late.wait_for(lambda ms: len(ms) >= 1, 10, "retained availability")[0]
    assert (first.text, first.retain) == ("online", True)
    publisher.close(timeout=5)
    publisher.close(timeout=5)  # idempotent
    late.wait_for(lambda ms: ms[-1].text == "offline", 10, "offline on close")
    after = make_subscriber(broker, [topic])
    last = after.wait_for(lambda ms: len(ms) >= 1, 10, "retained offline")[0]
    assert (last.text, last.retain) == ("offline", True)
    # An event spotted during shutdown is still committed, for the next start.
    publisher.publish_event(new_event(device_id))
    assert len(publisher.outbox) == 1


CHILD = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
cfg = json.loads(sys.argv[1])
sys.path.insert(0, cfg["tests"])
from types import SimpleNamespace
from test_events import make_decision, make_episode
from microexpr.events import Event
from microexpr.mqtt import MqttPublisher
from microexpr.outbox import Outbox

outbox = Outbox(cfg["outbox"])
publisher = MqttPublisher(SimpleNamespace(**cfg["settings"]), device_id=cfg["device_id"], outbox=outbox,
                          reconnect_min_s=0.1, reconnect_max_s=0.3).start()
if cfg["wait_connected"]:
    assert publisher.wait_connected(20), "not connected"
    print("connected", flush=True)
for _ in range(cfg["events"]):
    event = Event.from_episode(make_episode(), make_decision(), device_id=cfg["device_id"])
    publisher.publish_event(event)
    print(event.event_id, flush=True)  # only after the outbox commit returned
    time.sleep(cfg["pause"])
print("done", flush=True)
time.sleep(600)
"""


def start_child(settings: Settings, device_id: str, outbox: Path, *, events: int, pause: float, wait_connected: bool) -> subprocess.Popen[str]:
    cfg = {
        "tests": str(TESTS),
        "settings": asdict(settings),
        "device_id": device_id,
        "outbox": str(outbox),
        "events": events,
        "pause": pause,
        "wait_connected": wait_connected,
    }
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )


def read_line(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.wait(5)
        stderr = child.stderr.read() if child.stderr else ""
        pytest.fail(f"child exited early ({child.returncode}): {stderr[-2000:]}")
    return line.strip()


def sigkill(child: subprocess.Popen[str]) -> tuple[list[str], str]:
    """Kill -9 and return the rest of its stdout lines and its stderr."""
    child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return out.split(), err


@pytest.mark.integration
def test_last_will_offline_when_the_process_is_killed(broker, make_subscriber, device_id, tmp_path) -> None:  # type: ignore[no-untyped-def]
    topic = f"microexpr/{device_id}/availability"
    sub = make_subscriber(broker, [topic])
    child = start_child(Settings(broker.host, broker.port), device_id, tmp_path / "o.db", events=0, pause=0, wait_connected=True)
    try:
        assert read_line(child) == "connected"
        sub.wait_for(lambda ms: [m.text for m in ms] == ["online"], 10, "online from the child")
    finally:
        sigkill(child)
    sub.wait_for(lambda ms: ms[-1].text == "offline", 10, "the last will after SIGKILL")
    assert [m.text for m in sub.snapshot()] == ["online", "offline"]


@pytest.mark.integration
def test_broker_restart_mid_stream_loses_nothing(make_broker, make_subscriber, make_publisher, device_id) -> None:  # type: ignore[no-untyped-def]
    broker = make_broker()
    topic = f"microexpr/{device_id}/event"
    # A persistent session: the broker queues for the subscriber across the restart.
    sub = make_subscriber(broker, [topic], client_id=f"sub-{device_id}", clean_session=False)
    publisher = make_publisher(Settings(broker.host, broker.port), device_id)
    assert publisher.wait_connected(10)

    sent: list[str] = []
    sent_while_down = 0
    stop = threading.Event()

    def produce() -> None:
        nonlocal sent_while_down
        while not stop.is_set():
            event = new_event(device_id)
            down = not publisher.connected
            publisher.publish_event(event)
            sent.append(event.event_id)
            sent_while_down += down
            time.sleep(0.005)

    producer = threading.Thread(target=produce, name="test-producer")
    producer.start()
    try:
        sub.wait_for(lambda ms: len(ms) >= 20, 20, "20 events before the outage")
        broker.stop()
        wait_until(lambda: not publisher.connected, 10, "publisher to notice the outage")
        mark = len(sent)
        wait_until(lambda: len(sent) >= mark + 15, 10, "15 events during the outage")
        broker.start()
        assert publisher.wait_connected(20)
        mark = len(sent)
        wait_until(lambda: len(sent) >= mark + 15, 10, "15 events after the restart")
    finally:
        stop.set()
        producer.join(timeout=10)
    assert sent_while_down >= 10
    expected = set(sent)
    messages = sub.wait_for(lambda ms: set(event_ids(ms)) >= expected, 30, f"all {len(expected)} events")
    received = event_ids(messages)
    assert set(received) == expected, "an event arrived that was never sent"
    # Duplicates are allowed only as the same event: same id, same bytes.
    by_id: dict[str, set[bytes]] = {}
    for message in messages:
        by_id.setdefault(json.loads(message.payload)["event_id"], set()).add(message.payload)
    assert all(len(payloads) == 1 for payloads in by_id.values())
    assert publisher.flush(10)


@pytest.mark.integration
def test_outbox_of_a_killed_process_is_replayed_on_restart(make_broker, make_subscriber, make_publisher, device_id, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broker = make_broker()
    broker.stop()  # the child publishes into the void
    outbox_path = tmp_path / "outbox.db"
    settings = Settings(broker.host, broker.port)
    child = start_child(settings, device_id, outbox_path, events=1000, pause=0.01, wait_connected=False)
    committed = [read_line(child) for _ in range(25)]
    rest, stderr = sigkill(child)
    committed += [line for line in rest if line != "done"]
    # Said once, not once per retry; no traceback.
    assert stderr.count("no mqtt broker answers") == 1, stderr
    assert "Traceback" not in stderr

    broker.start()
    sub = make_subscriber(broker, [f"microexpr/{device_id}/event"])
    with Outbox(outbox_path) as reopened:
        assert len(reopened) >= len(committed)
    publisher = make_publisher(settings, device_id, outbox=Outbox(outbox_path))
    messages = sub.wait_for(lambda ms: set(event_ids(ms)) >= set(committed), 20, "every committed event")
    assert event_ids(messages)[: len(committed)] == committed  # replayed in order
    assert publisher.flush(10)
    # flush() waits for the broker's acknowledgements; the pump deletes the
    # acknowledged rows right after (a row acknowledged but not yet deleted is
    # not re-sent, so flush does not wait for it).
    wait_until(lambda: len(publisher.outbox) == 0, 10, "the acknowledged rows deleted")


# --- failure handling -------------------------------------------------------------------


class CountingPublisher(MqttPublisher):
    """Counts connection attempts, to wait for retries without sleeping blindly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = 0
        self.refusals = 0

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self.failures += 1
        super()._on_connect_fail(client, userdata)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.refusals += 1
        super()._on_connect(client, userdata, flags, reason_code, properties)


@pytest.mark.integration
def test_without_a_broker_it_says_so_once_and_keeps_events(make_broker, make_publisher, device_id, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="microexpr.mqtt")
    broker = make_broker()
    broker.stop()
    publisher = make_publisher(Settings(broker.host, broker.port), device_id, cls=CountingPublisher)
    for _ in range(3):
        publisher.publish_event(new_event(device_id))
    wait_until(lambda: publisher.failures >= 3, 20, "three failed connection attempts")
    assert caplog.text.count("no mqtt broker answers") == 1
    assert not publisher.connected and len(publisher.outbox) == 3
    assert not publisher.publish_stats(make_stats(device_id=device_id))  # dropped while down
    publisher.close(timeout=5)  # does not wait for a broker that is not there
    assert len(publisher.outbox) == 3


@pytest.mark.integration
def test_refused_credentials_never_count_as_connected(make_broker, make_publisher, make_subscriber, device_id, tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="microexpr.mqtt")
    broker = make_broker(users={"device": "correct horse"})
    settings = Settings(broker.host, broker.port, username="device")
    outbox_path = tmp_path / "auth.db"

    monkeypatch.setenv("MICROEXPR_MQTT_PASSWORD", "wrong")
    refused = make_publisher(settings, device_id, outbox=Outbox(outbox_path), cls=CountingPublisher)
    refused.publish_event(new_event(device_id))
    wait_until(lambda: refused.refusals >= 2, 20, "two refused connections")
    assert not refused.connected
    assert caplog.text.count("refused the connection") == 1
    refused.close(timeout=2)
    assert len(refused.outbox) == 1

    monkeypatch.setenv("MICROEXPR_MQTT_PASSWORD", "correct horse")  # via secrets.read_secret
    sub = make_subscriber(broker, [f"microexpr/{device_id}/event"], username="device", password="correct horse")
    accepted = make_publisher(settings, device_id, outbox=Outbox(outbox_path))
    assert accepted.wait_connected(10)
    sub.wait_for(lambda ms: len(ms) == 1, 10, "the event kept while refused")
    assert accepted.flush(10)


@pytest.mark.integration
def test_tls_with_a_private_ca(make_broker, make_subscriber, make_publisher, device_id, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tls = make_tls_files(tmp_path / "pki")
    broker = make_broker(tls=tls)
    sub = make_subscriber(broker, [f"microexpr/{device_id}/event"], ca_file=tls.ca_file)
    publisher = make_publisher(Settings(broker.host, broker.port, tls=True, ca_file=str(tls.ca_file)), device_id)
    assert publisher.wait_connected(10)
    event = new_event(device_id)
    publisher.publish_event(event)
    messages = sub.wait_for(lambda ms: len(ms) == 1, 10, "an event over TLS")
    assert event_ids(messages) == [event.event_id]


def test_configuration_errors_name_the_key(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as outbox:
        with pytest.raises(ConfigError, match=r"^mqtt\.ca_file: no such file"):
            MqttPublisher(Settings("127.0.0.1", 1883, tls=True, ca_file=str(tmp_path / "nope.pem")), device_id="d", outbox=outbox)
        with pytest.raises(ConfigError, match=r"^device\.id:"):
            MqttPublisher(Settings("127.0.0.1", 1883), device_id="kiosk/1", outbox=outbox)
        with pytest.raises(ConfigError, match=r"^mqtt\.topic_prefix:"):
            MqttPublisher(Settings("127.0.0.1", 1883, topic_prefix="a/#"), device_id="d", outbox=outbox)
        with pytest.raises(ConfigError, match=r"^mqtt\.qos:"):
            MqttPublisher(Settings("127.0.0.1", 1883, qos=3), device_id="d", outbox=outbox)


# --- outbox policies through the publisher ---------------------------------------------------


@pytest.mark.integration
def test_full_outbox_drop_oldest_delivers_the_newest(broker, make_subscriber, make_publisher, device_id, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sub = make_subscriber(broker, [f"microexpr/{device_id}/event"])
    outbox = Outbox(tmp_path / "small.db", max_items=3, when_full="drop_oldest")
    publisher = make_publisher(Settings(broker.host, broker.port), device_id, outbox=outbox, start=False)
    sent = [new_event(device_id) for _ in range(5)]
    for event in sent:
        publisher.publish_event(event)  # queued before the connection exists
    assert outbox.dropped == 2
    publisher.start()
    messages = sub.wait_for(lambda ms: len(ms) >= 3, 10, "the three newest events")
    assert publisher.flush(10)
    assert event_ids(sub.snapshot()) == [e.event_id for e in sent[2:]] == event_ids(messages)


def test_full_outbox_reject_new_raises_publish_error(make_publisher, device_id, tmp_path) -> None:  # type: ignore[no-untyped-def]
    outbox = Outbox(tmp_path / "small.db", max_items=2, when_full="reject_new")
    publisher = make_publisher(Settings("127.0.0.1", 1), device_id, outbox=outbox, start=False)
    publisher.publish_event(new_event(device_id))
    publisher.publish_event(new_event(device_id))
    with pytest.raises(PublishError, match="reject_new"):
        publisher.publish_event(new_event(device_id))
    assert len(outbox) == 2


# --- Home Assistant, stats, AU stream ---------------------------------------------------------


@pytest.mark.integration
def test_discovery_is_retained_and_resent_when_home_assistant_comes_online(broker, make_subscriber, make_publisher, device_id) -> None:  # type: ignore[no-untyped-def]
    configs = f"homeassistant/+/{device_id}/+/config"  # sensors, the event, the binary sensor, switches, button
    sub = make_subscriber(broker, [configs])
    publisher = make_publisher(Settings(broker.host, broker.port, discovery=True), device_id)
    assert publisher.wait_connected(10)
    announced = sub.wait_for(lambda ms: len(ms) >= N_SENSORS, 10, "discovery configs on connect")
    # Once announced, a newcomer (Home Assistant starting later) gets them retained.
    late = make_subscriber(broker, [configs])
    retained = late.wait_for(lambda ms: len(ms) >= N_SENSORS, 10, "retained discovery configs")
    assert all(m.retain for m in retained)
    assert len({m.topic for m in retained}) == N_SENSORS == len({m.topic for m in announced})
    unique_ids = set()
    for message in retained:
        config = json.loads(message.payload)
        assert config["availability_topic"] == f"microexpr/{device_id}/availability"
        assert config.get("state_topic", config.get("command_topic", "")).startswith(f"microexpr/{device_id}/")
        assert config["device"]["identifiers"] == [f"microexpr_{device_id}"]
        unique_ids.add(config["unique_id"])
    assert len(unique_ids) == N_SENSORS

    sub.clear()
    publish_once(broker, "homeassistant/status", "online")
    resent = sub.wait_for(lambda ms: len(ms) >= N_SENSORS, 10, "discovery re-sent after homeassistant/status online")
    assert {m.topic for m in resent} == {m.topic for m in retained}

    # A flood of "online" (anyone on the broker can send it) is answered at
    # most once per DISCOVERY_MIN_INTERVAL_S: the one above opened the interval.
    sub.clear()
    flood = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{device_id}")
    flood.connect(broker.host, broker.port)
    flood.loop_start()
    try:
        for _ in range(500):
            flood.publish("homeassistant/status", "online", qos=0)
        flood.publish("homeassistant/status", "online", qos=1).wait_for_publish(10)
    finally:
        flood.loop_stop()
        flood.disconnect()
    wait_until(lambda: publisher._discovery_requests >= 400, 10, "the flood to reach the publisher")
    time.sleep(1.5)  # the pump wakes at least once a second: time to misbehave if it would
    assert sub.snapshot() == [], "discovery re-published again within the interval"


@pytest.mark.integration
def test_stats_are_published_periodically_and_retained(broker, make_subscriber, make_publisher, device_id) -> None:  # type: ignore[no-untyped-def]
    topic = f"microexpr/{device_id}/stats"
    calls = 0

    def source() -> Any:
        nonlocal calls
        calls += 1
        return make_stats(device_id=device_id, frames=calls)

    sub = make_subscriber(broker, [topic])
    make_publisher(Settings(broker.host, broker.port, stats_interval_s=0.1), device_id, stats_source=source)
    messages = sub.wait_for(lambda ms: len(ms) >= 3, 10, "three stats messages")
    frames = [json.loads(m.payload)["frames"] for m in messages]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)  # fresh each period
    for message in messages:
        validate(message.text, PayloadKind.STATS)
    late = make_subscriber(broker, [topic])
    assert late.wait_for(lambda ms: len(ms) >= 1, 10, "retained stats")[0].retain


@pytest.mark.integration
def test_au_stream_is_throttled_qos0_and_never_stored(broker, make_subscriber, make_publisher, device_id) -> None:  # type: ignore[no-untyped-def]
    topic = f"microexpr/{device_id}/aus"
    sub = make_subscriber(broker, [topic], qos=1)
    interval = 0.1
    publisher = make_publisher(Settings(broker.host, broker.port, aus_interval_s=interval), device_id)
    assert publisher.wait_connected(10)
    frame = AUFrame(7, 0.23, True, 0.99, {AU.LIP_CORNER_PULLER: 0.4}, {AU.LIP_CORNER_PULLER: 0.4}, {AU.LIP_CORNER_PULLER: 0.3}, None)
    started = time.monotonic()
    attempts = sent = 0
    while sent < 3:
        sent += publisher.publish_aus(frame)
        attempts += 1
        time.sleep(0.002)
    elapsed = time.monotonic() - started
    # At most one sample per interval got through, however many frames came.
    assert sent <= elapsed / interval + 1 and attempts > sent
    messages = sub.wait_for(lambda ms: len(ms) >= sent, 10, f"{sent} AU samples")
    for message in messages:
        validate(message.text, PayloadKind.AUS)
        assert message.qos == 0  # published at QoS 0: the subscription cannot upgrade it
    assert len(publisher.outbox) == 0


def test_au_stream_is_off_by_default(make_publisher, device_id) -> None:  # type: ignore[no-untyped-def]
    publisher = make_publisher(Settings("127.0.0.1", 1), device_id, start=False)
    frame = AUFrame(0, 0.0, False, 0.0, {}, {}, {}, None)
    assert publisher.publish_aus(frame) is False

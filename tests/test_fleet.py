"""Several cameras per board (the template unit), bridging to a central broker,
and the fleet view: real daemons on real face clips, real mosquitto processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.broker import Broker, Subscriber, make_tls_files, publish_once, wait_until
from fleet_support import ConfiguredBroker, Instance, bridge_lines, central_acl, start_instance, synth_clip

from microexpr import config as cfg
from microexpr.events import PayloadKind, validate

pytestmark = pytest.mark.integration

#: Model load plus a 72..110-frame clip on a shared, busy machine: generous.
ROOT = Path(__file__).resolve().parents[1]
RUN_S = 180.0
#: How long the central broker stays down mid-stream. The issue's figure is
#: 30 s; MICROEXPR_FLEET_DOWN_S shortens it (the mechanism, a bridge queue
#: on the device broker, is the same for any length).
CENTRAL_DOWN_S = float(os.environ.get("MICROEXPR_FLEET_DOWN_S", "30"))
#: The bridge's reconnect backoff in the tests: the shipped file says 5..60 s;
#: 1..5 s keeps a test from idling up to a minute after the central broker is back.
TEST_RESTART_TIMEOUT = "1 5"


@pytest.fixture(scope="module")
def second_clip(tmp_path_factory: pytest.TempPathFactory, smile_clip: Path, model_path: Path) -> Path:
    return synth_clip(tmp_path_factory.mktemp("clips"), smile_clip, model_path)


@pytest.fixture
def instances() -> Iterator[list[Instance]]:
    started: list[Instance] = []
    yield started
    for instance in started:
        instance.close()


def instance_settings(source: Path, model_path: Path, port: int, **mqtt: Any) -> dict[str, Any]:
    """An instance file as an admin writes it: no device_id, no outbox path
    (both come from the instance: ``<host>-<instance>``, ``$STATE_DIRECTORY``)."""
    return {
        "source": {"uri": str(source)},
        "model": {"path": str(model_path)},
        "mqtt": {"host": "127.0.0.1", "port": port, "stats_interval_s": 1.0, "keepalive_s": 5, **mqtt},
    }


def events_by_device(messages: list[Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        parts = message.topic.split("/")
        if len(parts) == 3 and parts[2] == "event":
            payload = json.loads(message.payload)
            assert payload["device_id"] == parts[1]
            out.setdefault(parts[1], []).append(payload)
    return out


def test_two_template_instances_on_two_clips_one_broker(
    tmp_path: Path, make_broker: Callable[..., Broker], make_subscriber: Callable[..., Subscriber],
    instances: list[Instance], smile_clip: Path, second_clip: Path, model_path: Path,
) -> None:
    broker = make_broker()
    sub = make_subscriber(broker, ["microexpr/+/event"], client_id="fleet-watch", clean_session=False)
    for name, clip in (("cam0", smile_clip), ("cam1", second_clip)):
        instances.append(start_instance(tmp_path, name, instance_settings(clip, model_path, broker.port)))
    for instance in instances:
        code = instance.wait(RUN_S)
        assert code == 0, instance.stderr()[-3000:]

    host = cfg.hostname_device_id()
    printed = {f"{host}-{i.name}": i.events() for i in instances}
    assert all(printed.values()), {k: len(v) for k, v in printed.items()}
    received = sub.wait_for(
        lambda ms: {k: [e["event_id"] for e in v] for k, v in events_by_device(ms).items()}
        == {k: [e["event_id"] for e in v] for k, v in printed.items()},
        30, "both instances' events on the broker",
    )
    # Each stream complete, in order, byte for byte what the instance printed, and valid.
    got = events_by_device(received)
    assert set(got) == set(printed) == {f"{host}-cam0", f"{host}-cam1"}
    for device, events in got.items():
        assert events == printed[device]
        for event in events:
            validate(event, PayloadKind.EVENT)
    # Separate state folders, each with its own, now empty, outbox.
    assert instances[0].state != instances[1].state
    for instance in instances:
        assert (instance.state / "outbox.sqlite").is_file()
        assert instance.outbox_depth() == 0


# --------------------------------------------------------------------------
# Bridging: device broker (loopback) ==TLS, QoS 1, persistent==> central broker


class Fleet:
    """A central broker (TLS, one user per board, ACL) and a board's device
    broker bridged to it with services/mosquitto-bridge.conf."""

    BOARD = "board-a"

    def __init__(self, tmp_path: Path, devices: list[str], *, bridge_password: str | None = None) -> None:
        self.tls = make_tls_files(tmp_path / "tls")
        self.passwords = {self.BOARD: "board-a-secret", "fleet-view": "viewer-secret"}
        acl = central_acl(tmp_path, self.BOARD, devices)
        self.central = ConfiguredBroker(tmp_path / "central", users=self.passwords, tls=self.tls,
                                        extra=f"acl_file {acl}")
        self.device = ConfiguredBroker(tmp_path / "device", extra=self.bridge(bridge_password))

    def bridge(self, password: str | None = None) -> str:
        return bridge_lines(port=self.central.port, board=self.BOARD,
                            password=password or self.passwords[self.BOARD],
                            ca_file=self.tls.ca_file, restart_timeout=TEST_RESTART_TIMEOUT)

    def viewer(self) -> Subscriber:
        """A consumer on the central broker with a persistent session."""
        return Subscriber(self.central, ["microexpr/#", "microexpr-bridge/#"], client_id="fleet-view-test",
                          clean_session=False, username="fleet-view", password=self.passwords["fleet-view"],
                          ca_file=self.tls.ca_file)

    def close(self) -> None:
        self.device.close()
        self.central.close()


@pytest.fixture
def fleets() -> Iterator[list[Fleet]]:
    made: list[Fleet] = []
    yield made
    for fleet in made:
        fleet.close()


def dedupe(messages: list[Any]) -> dict[str, dict[str, bytes]]:
    """Per device, event_id -> payload; a duplicate must be the same bytes."""
    out: dict[str, dict[str, bytes]] = {}
    for message in messages:
        parts = message.topic.split("/")
        if len(parts) == 3 and parts[2] == "event":
            event_id = json.loads(message.payload)["event_id"]
            seen = out.setdefault(parts[1], {})
            assert seen.get(event_id, message.payload) == message.payload, "a duplicate differs from its original"
            seen[event_id] = message.payload
    return out


def test_central_broker_down_mid_stream_loses_nothing(
    tmp_path: Path, instances: list[Instance], fleets: list[Fleet],
    smile_clip: Path, model_path: Path,
) -> None:
    host = cfg.hostname_device_id()
    devices = [f"{host}-cam0", f"{host}-cam1"]
    fleet = Fleet(tmp_path, devices)
    fleets.append(fleet)
    fleet.central.start()
    fleet.device.start()
    viewer = fleet.viewer().start()
    # `microexpr fleet --json` on the central broker for the whole run, as an operator would.
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env["MICROEXPR_MQTT_PASSWORD"] = fleet.passwords["fleet-view"]
    fleet_view = subprocess.Popen(
        [sys.executable, "-m", "microexpr", "fleet", "--host", "127.0.0.1", "--port", str(fleet.central.port),
         "--tls", "--ca-file", str(fleet.tls.ca_file), "--username", "fleet-view", "--session", "fleet-view-cli",
         "--json", "--interval", "5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Two cameras replayed in real time, looping: live streams that keep
        # publishing. Both play the real smile clip (a smile every loop, 2.4 s):
        # the looped 4-s synth clip once went quiet for > 30 s on one instance
        # (suppressed as "held", counted and logged; a spotting matter, issue 12),
        # and this test is about the bridge, which needs both devices publishing.
        for name, clip in (("cam0", smile_clip), ("cam1", smile_clip)):
            instances.append(start_instance(tmp_path, name, instance_settings(f"replay:{clip}", model_path,
                                                                               fleet.device.port)))
        # Mid-stream: both devices' events already reach the central broker.
        viewer.wait_for(lambda ms: set(dedupe(ms)) == set(devices), RUN_S, "events of both devices centrally")

        fleet.central.stop()
        went_down = time.monotonic()
        printed_at_stop = {i.name: len(i.events()) for i in instances}
        while time.monotonic() - went_down < CENTRAL_DOWN_S:
            for instance in instances:
                assert instance.process.poll() is None, instance.stderr()[-3000:]
            time.sleep(0.5)
        published_while_down = {i.name: len(i.events()) - printed_at_stop[i.name] for i in instances}
        assert all(n > 0 for n in published_while_down.values()), published_while_down
        fleet.central.start()
        time.sleep(3)  # a little more stream after the return

        for instance in instances:
            instance.process.send_signal(signal.SIGTERM)
        for instance in instances:
            assert instance.wait(60) == 0, instance.stderr()[-3000:]
            assert instance.outbox_depth() == 0  # all handed to the device broker

        printed = {f"{host}-{i.name}": {e["event_id"] for e in i.events()} for i in instances}
        received = viewer.wait_for(
            lambda ms: {d: set(ids) for d, ids in dedupe(ms).items() if d in printed} == printed,
            60, "every event of both devices at the central broker",
        )
        # The view backs off up to 10 s while the central broker is away: stop
        # it only once it is back (its session then delivers what it missed).
        wait_until(lambda: fleet.central.log_path.read_text(errors="replace").count(" as fleet-view-cli ") >= 2, 30,
                   "the fleet view reconnected to the central broker")
        time.sleep(2)
        fleet_view.send_signal(signal.SIGTERM)
        view_out, view_err = fleet_view.communicate(timeout=30)
        assert fleet_view.returncode == 0, view_err
    finally:
        viewer.close()
        if fleet_view.poll() is None:
            fleet_view.kill()
            fleet_view.wait(10)
    per_device = dedupe(received)
    copies = [m for m in received if m.topic.endswith("/event")]
    duplicates = len(copies) - sum(len(v) for v in per_device.values())
    print(f"central down {CENTRAL_DOWN_S:g} s; published while down {published_while_down}; "
          f"events per device {{{', '.join(f'{d}: {len(v)}' for d, v in per_device.items())}}}; "
          f"duplicates {duplicates}")
    # The fleet view counted every event once per device, and shows the devices' last state.
    rows = {row["device_id"]: row for row in json.loads(view_out.strip().splitlines()[-1])["devices"]}
    print("microexpr fleet --json:", json.dumps(rows, sort_keys=True))
    for device in devices:
        assert rows[device]["events_total"] == len(printed[device]), (device, rows[device])
        assert sum(rows[device]["events"].values()) == len(printed[device])
        assert rows[device]["availability"] == "offline"  # both daemons were stopped cleanly
        assert rows[device]["fps"] is not None and rows[device]["outbox_depth"] is not None
    # The retained health topics made it across too (what `microexpr fleet` reads).
    for device in devices:
        assert any(m.topic == f"microexpr/{device}/stats" for m in received)
        assert any(m.topic == f"microexpr/{device}/availability" for m in received)


def test_wrong_bridge_credentials_are_refused_logged_and_nothing_is_lost(
    tmp_path: Path, fleets: list[Fleet],
) -> None:
    device_id = "board-a-cam0"
    fleet = Fleet(tmp_path, [device_id], bridge_password="wrong-password")
    fleets.append(fleet)
    fleet.central.start()
    fleet.device.start()
    viewer = fleet.viewer().start()
    try:
        sent = [json.dumps({"event_id": f"id-{n}", "device_id": device_id}) for n in range(5)]
        for payload in sent:
            publish_once(fleet.device, f"microexpr/{device_id}/event", payload)
        # The central broker refuses the bridge at every attempt; the device broker logs each refusal.
        wait_until(lambda: fleet.device.log_tail(200).count("not authorised") >= 2, 30,
                   "two refused bridge attempts in the device broker's log")
        wait_until(lambda: "not authorised" in fleet.central.log_tail(200), 10, "the refusal in the central log")
        assert not [m for m in viewer.snapshot() if m.topic.startswith("microexpr/")]
        # The bridge's own retained state on the device broker says "down".
        local = Subscriber(fleet.device, ["microexpr-bridge/#"]).start()
        try:
            local.wait_for(lambda ms: any(m.payload == b"0" for m in ms), 10, "bridge state 0 on the device broker")
        finally:
            local.close()
        # Fixed credentials, device broker restarted: the queued events all arrive.
        fleet.device.stop()
        fleet.device.reconfigure(fleet.bridge())
        fleet.device.start()
        got = viewer.wait_for(lambda ms: len({m.payload for m in ms if m.topic.endswith("/event")}) == len(sent),
                              60, "the queued events after the credentials were fixed")
    finally:
        viewer.close()
    assert {m.payload.decode() for m in got if m.topic.endswith("/event")} == set(sent)

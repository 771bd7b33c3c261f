"""The fleet view: its aggregation rules on known messages, and ``microexpr fleet``
against a real mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.broker import Broker, publish_once
from test_events import make_decision, make_episode, make_stats

from microexpr import cli
from microexpr.events import Event
from microexpr.fleet import FleetView, parse_time, render_table

ROOT = Path(__file__).resolve().parents[1]
NOW = parse_time("2025-06-01T12:10:00.000Z")
assert NOW is not None


def event(device: str, label: str, when: str, event_id: str) -> bytes:
    return json.dumps({"event_id": event_id, "device_id": device, "emotion": label, "time": when}).encode()


def test_rows_take_health_from_stats_and_count_unique_events_in_the_window() -> None:
    view = FleetView(window_s=300)
    stats = make_stats().to_payload()
    view.feed("microexpr/kiosk-1/availability", b"online", now=NOW)
    view.feed("microexpr/kiosk-1/stats", json.dumps(stats).encode(), now=NOW)
    view.feed("microexpr/kiosk-1/event", event("kiosk-1", "happiness", "2025-06-01T12:09:00Z", "a"), now=NOW)
    view.feed("microexpr/kiosk-1/event", event("kiosk-1", "happiness", "2025-06-01T12:09:00Z", "a"), now=NOW)
    view.feed("microexpr/kiosk-1/event", event("kiosk-1", "surprise", "2025-06-01T12:08:00Z", "b"), now=NOW)
    # Emitted 20 min ago, delivered now (after an outage): counted in the total, not in the window.
    view.feed("microexpr/kiosk-1/event", event("kiosk-1", "fear", "2025-06-01T11:50:00Z", "c"), now=NOW)
    view.feed("microexpr/kiosk-2/event", b"{not json", now=NOW)
    view.feed("microexpr/kiosk-1/aus", b"{}", now=NOW)
    view.feed("microexpr/kiosk-1/event/refined", b"{}", now=NOW)
    view.feed("other/kiosk-1/event", b"{}", now=NOW)
    one, two = view.rows(now=NOW)
    assert one.device_id == "kiosk-1" and one.availability == "online"
    assert one.fps == stats["fps"] and one.dropped_frames == stats["dropped_frames"]
    assert one.latency_p95_ms == stats["latency_ms"]["total"]["p95"]
    assert one.outbox_depth == stats["outbox"]["depth"] and one.health == stats["health"]
    assert one.events_total == 3 and one.duplicates == 1
    assert one.events == {"happiness": 1, "surprise": 1}
    assert (two.device_id, two.malformed, two.events_total) == ("kiosk-2", 1, 0)
    assert view.ignored == 3
    table = render_table([one, two], 300)
    assert "kiosk-1" in table and "happiness=1 surprise=1" in table
    assert json.loads(json.dumps(one.to_json()))["events"] == {"happiness": 1, "surprise": 1}


def test_a_duplicate_on_another_device_topic_is_still_a_duplicate() -> None:
    # event_id is a UUID4: the same id twice is the same event, whichever topic copy.
    view = FleetView()
    view.feed("microexpr/a/event", event("a", "anger", "2025-06-01T12:09:00Z", "x"), now=NOW)
    view.feed("microexpr/a/event", event("a", "anger", "2025-06-01T12:09:00Z", "x"), now=NOW)
    (row,) = view.rows(now=NOW)
    assert (row.events_total, row.duplicates) == (1, 1)


def test_stats_without_its_fields_is_counted_as_malformed_not_shown() -> None:
    view = FleetView()
    view.feed("microexpr/a/stats", b'{"fps": 3}', now=NOW)
    (row,) = view.rows(now=NOW)
    assert row.malformed == 1 and row.fps is None


@pytest.mark.integration
def test_fleet_json_counts_per_device_and_dedupes_on_a_real_broker(
    make_broker: Callable[..., Broker], tmp_path: Path,
) -> None:
    broker = make_broker()
    devices = {"fv-a": 3, "fv-b": 2}
    sent: dict[str, list[Event]] = {}
    for device, n in devices.items():
        publish_once(broker, f"microexpr/{device}/availability", "online", retain=True)
        publish_once(broker, f"microexpr/{device}/stats",
                     json.dumps({**make_stats().to_payload(), "device_id": device}), retain=True)
        sent[device] = [Event.from_episode(make_episode(), make_decision(), device_id=device) for _ in range(n)]
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    view = subprocess.Popen(
        [sys.executable, "-m", "microexpr", "fleet", "--host", "127.0.0.1", "--port", str(broker.port), "--json",
         "--interval", "0.5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(3)  # subscribed (the interpreter and paho start in well under that)
        for device, events in sent.items():
            for e in events:
                publish_once(broker, f"microexpr/{device}/event", e.to_json())
            publish_once(broker, f"microexpr/{device}/event", events[0].to_json())  # an at-least-once copy
        time.sleep(2)
        view.send_signal(signal.SIGTERM)
        out, err = view.communicate(timeout=30)
    finally:
        if view.poll() is None:
            view.kill()
    assert view.returncode == 0, err
    last = json.loads(out.strip().splitlines()[-1])
    rows = {row["device_id"]: row for row in last["devices"]}
    assert set(rows) == set(devices)
    for device, n in devices.items():
        row = rows[device]
        assert row["events_total"] == n and row["duplicates"] == 1
        assert sum(row["events"].values()) == n
        assert row["availability"] == "online" and row["fps"] == make_stats().to_payload()["fps"]


@pytest.mark.integration
def test_fleet_errors_are_one_line_with_documented_codes(make_broker: Callable[..., Broker],
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures.broker import free_port

    port = free_port()
    assert cli.main(["fleet", "--host", "127.0.0.1", "--port", str(port), "--connect-timeout", "1"]) == 75
    assert capsys.readouterr().err.strip() == f"microexpr: error: no mqtt broker answers at 127.0.0.1:{port} within 1 s"
    secured = make_broker(users={"viewer": "right"})
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("MICROEXPR_MQTT_PASSWORD", "wrong")
    code = cli.main(["fleet", "--host", "127.0.0.1", "--port", str(secured.port), "--username", "viewer",
                     "--duration", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 78 and len(err) == 1 and "refused the connection" in err[0], err
    assert cli.main(["fleet", "--ca-file", "/nonexistent.pem", "--tls"]) == 78
    assert capsys.readouterr().err.strip() == "microexpr: error: --ca-file /nonexistent.pem: no such file"

"""Several cameras per board (the template unit), bridging to a central broker,
and the fleet view: real daemons on real face clips, real mosquitto processes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.broker import Broker, Subscriber
from fleet_support import Instance, start_instance, synth_clip

from microexpr import config as cfg
from microexpr.events import PayloadKind, validate

pytestmark = pytest.mark.integration

#: Model load plus a 72..110-frame clip on a shared, busy machine: generous.
RUN_S = 180.0


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

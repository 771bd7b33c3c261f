"""The topic tree of one device, its id rule, and what the publisher reads from configuration."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from microexpr.errors import ConfigError

#: A device id becomes an MQTT topic level and a Home Assistant node id.
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")



class MqttSettings(Protocol):
    """What the publisher reads from configuration (``config.MqttConfig``).

    Any object with these attributes will do. Optional ones, read with
    defaults: ``cert_file``/``key_file`` (client certificate for TLS),
    ``aus_stream`` (False turns the AU stream off), ``password`` (when absent
    or empty, the secret ``mqtt_password`` is looked up — systemd credential,
    then ``$MICROEXPR_MQTT_PASSWORD`` — if a username is set).
    """

    host: str
    port: int
    tls: bool
    ca_file: str | Path | None
    client_id: str | None
    username: str | None
    topic_prefix: str
    keepalive_s: int
    qos: int
    aus_interval_s: float
    stats_interval_s: float
    discovery: bool
    discovery_prefix: str


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic this device publishes or listens to."""

    base: str
    availability: str
    event: str
    refined: str
    aus: str
    stats: str
    discovery_status: str
    discovery_prefix: str
    #: new / update / end notices (``mqtt.event_lifecycle``)
    lifecycle: str = ""
    #: retained ``ON`` / ``OFF``: a face is in view (Home Assistant binary sensor)
    face: str = ""
    #: commands in (``<base>/set/<name>``) and their retained states out (``<base>/state/<name>``)
    set_base: str = ""
    state_base: str = ""

    def command(self, name: str) -> str:
        """``<base>/set/<name>``: where Home Assistant / Node-RED send a command."""
        return f"{self.set_base}/{name}"

    def state(self, name: str) -> str:
        """``<base>/state/<name>``: the retained state of a switch."""
        return f"{self.state_base}/{name}"

    @classmethod
    def build(cls, topic_prefix: str, device_id: str, discovery_prefix: str = "homeassistant") -> Topics:
        prefix = topic_prefix.strip("/")
        if not prefix or any(c in prefix for c in "#+\0"):
            raise ConfigError(f"mqtt.topic_prefix: must be a non-empty topic without '#' or '+', got {topic_prefix!r}")
        discovery = discovery_prefix.strip("/")
        if not discovery or any(c in discovery for c in "#+\0"):
            raise ConfigError(
                f"mqtt.discovery_prefix: must be a non-empty topic without '#' or '+', got {discovery_prefix!r}"
            )
        check_device_id(device_id)
        base = f"{prefix}/{device_id}"
        return cls(
            base=base,
            availability=f"{base}/availability",
            event=f"{base}/event",
            refined=f"{base}/event/refined",
            aus=f"{base}/aus",
            stats=f"{base}/stats",
            discovery_status=f"{discovery}/status",
            discovery_prefix=discovery,
            lifecycle=f"{base}/event/lifecycle",
            face=f"{base}/face",
            set_base=f"{base}/set",
            state_base=f"{base}/state",
        )


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_PATTERN.match(device_id or ""):
        raise ConfigError(
            f"device.id: must be 1-64 letters, digits, '-' or '_' (it is an MQTT topic level "
            f"and a Home Assistant id), got {device_id!r}"
        )
    return device_id


def parse_payload(payload: bytes | str) -> dict[str, Any]:
    """Decode one JSON payload received from this device (tools and tests)."""
    text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    value: dict[str, Any] = json.loads(text)
    return value

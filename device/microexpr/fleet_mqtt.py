"""The fleet view's MQTT side: one subscriber on the central broker feeding a
:class:`~microexpr.fleet.FleetView`.

It subscribes (QoS 1) to ``<prefix>/+/availability``, ``<prefix>/+/stats``
and ``<prefix>/+/event`` and nothing else: no new protocol, the retained
messages give the last known state at once. With a ``session`` name it uses a
persistent session (``clean_session=False``, fixed client id), so the central
broker queues QoS 1 events for it while it is not running and a restarted
view loses none of them (only while the broker keeps the session).

Connection problems: no answer within the connect timeout is a
``BrokerUnavailable`` (exit 75, temporary); a refusal (bad credentials, not
authorised) is a ``ConfigError`` (exit 78). A connection lost later is
logged once and retried by paho (0.5..10 s); the view keeps what it has.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from microexpr.errors import ConfigError, ExitCode, MicroexprError
from microexpr.fleet import DeviceRow, FleetView, Topic

log = logging.getLogger(__name__)


class BrokerUnavailable(MicroexprError):
    """The central broker did not answer (exit 75: try again later)."""

    exit_code = ExitCode.TEMPORARY


@dataclass(frozen=True, slots=True)
class FleetConnection:
    """Where the central broker is and who the view is there."""

    host: str
    port: int
    topic_prefix: str = "microexpr"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    #: A persistent session under this client id; None = a clean, throwaway session.
    session: str | None = None
    keepalive_s: int = 30


class FleetSubscriber:
    """Owns the paho client; :meth:`rows` is safe to call from any thread."""

    def __init__(self, connection: FleetConnection, view: FleetView) -> None:
        self.connection = connection
        self.view = view
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._answered = threading.Event()
        self._refused: str | None = None
        self._lost_logged = False
        self.messages = 0
        persistent = connection.session is not None
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=connection.session or "",
            clean_session=not persistent,
        )
        if connection.username:
            self._client.username_pw_set(connection.username, connection.password)
        if connection.tls:
            self._client.tls_set(ca_certs=str(connection.ca_file) if connection.ca_file else None,
                                 cert_reqs=ssl.CERT_REQUIRED)
        self._client.reconnect_delay_set(min_delay=0.5, max_delay=10)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def topics(self) -> list[str]:
        prefix = self.connection.topic_prefix
        return [f"{prefix}/+/{kind.value}" for kind in Topic]

    def start(self, timeout: float = 10.0) -> FleetSubscriber:
        c = self.connection
        try:
            self._client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        except (OSError, ValueError) as exc:
            raise BrokerUnavailable(f"mqtt broker {c.host}:{c.port}: {exc}") from None
        self._client.loop_start()
        if not self._answered.wait(timeout):
            self.close()
            raise BrokerUnavailable(f"no mqtt broker answers at {c.host}:{c.port} within {timeout:g} s")
        if self._refused is not None:
            self.close()
            raise ConfigError(f"mqtt broker {c.host}:{c.port} refused the connection: {self._refused}")
        return self

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self._answered.set()
            client.disconnect()  # a refusal is not retried: credentials do not fix themselves
            return
        client.subscribe([(topic, 1) for topic in self.topics()])
        if self._lost_logged:
            log.info("central broker %s:%d answers again", self.connection.host, self.connection.port)
        self._lost_logged = False
        self._connected.set()
        self._answered.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connected.clear()
        if not self._lost_logged and self._answered.is_set() and self._refused is None:
            self._lost_logged = True
            log.warning("lost the central broker %s:%d (%s); retrying, the view keeps what it has",
                        self.connection.host, self.connection.port, reason_code)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages += 1
            self.view.feed(message.topic, bytes(message.payload))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def rows(self) -> list[DeviceRow]:
        with self._lock:
            return self.view.rows()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

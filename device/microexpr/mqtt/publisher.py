"""The publisher: paho's client, the pump thread that drains the outbox, availability.

Delivery is described in :mod:`microexpr.mqtt`: the outbox commit comes
first, the delete only after the broker's PUBACK.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from microexpr.errors import ConfigError, PublishError
from microexpr.events import Availability, Event, RefinedEvent, Stats, au_stream_payload, dumps
from microexpr.mqtt.discovery import discovery_messages
from microexpr.mqtt.topics import MqttSettings, Topics, check_device_id
from microexpr.outbox import Outbox, OutboxError
from microexpr.throttle import Throttle

if TYPE_CHECKING:  # annotations only: the payload code needs no AU estimator
    from microexpr.aus import AUFrame

log = logging.getLogger(__name__)

StatsSource = Callable[[], Stats]
#: Called on paho's network thread with (topic, payload) of a message on ``<base>/set/#``.
CommandSink = Callable[[str, bytes], None]

#: Discovery is re-published on ``homeassistant/status`` = ``online`` at most
#: this often; requests in between are counted and served by one re-publish
#: when the interval ends (the configs are retained, so nothing is missed).
DISCOVERY_MIN_INTERVAL_S = 30.0
#: A delete after PUBACK that failed (disk full) is retried after this long,
#: doubling up to the maximum; the message is never re-sent meanwhile.
DELETE_RETRY_MIN_S = 1.0
DELETE_RETRY_MAX_S = 10.0
#: Repeated publisher conditions (failed deletes) are logged at most this often.
LOG_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class PublisherStatus:
    connected: bool
    outbox_depth: int
    outbox_dropped: int
    in_flight: int
    delivered: int


class MqttPublisher:
    """Publishes a device's events from a durable outbox; owns paho's client.

    The outbox is the caller's (open it first, close it after this). Start
    with :meth:`start` or ``with``; :meth:`close` publishes ``offline``,
    flushes what it can within its timeout and stops the threads.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        device_id: str,
        outbox: Outbox,
        stats_source: StatsSource | None = None,
        window: int = 32,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        on_command: CommandSink | None = None,
    ) -> None:
        self.settings = settings
        self._on_command = on_command
        #: retained states (face, switches): the last value per topic, re-sent on every connection
        self._retained: dict[str, str] = {}
        self._resend_retained = False
        self.device_id = check_device_id(device_id)
        self.outbox = outbox
        self.topics = Topics.build(
            getattr(settings, "topic_prefix", "microexpr"),
            device_id,
            getattr(settings, "discovery_prefix", "homeassistant"),
        )
        self.qos = int(getattr(settings, "qos", 1))
        if self.qos not in (0, 1, 2):
            raise ConfigError(f"mqtt.qos: must be 0, 1 or 2, got {self.qos}")
        self.host = str(settings.host)
        self.port = int(settings.port)
        self._stats_source = stats_source
        self._stats_interval = float(getattr(settings, "stats_interval_s", 30.0) or 0.0)
        # The AU stream is on when ``aus_stream`` (if the settings have it) is
        # true and the interval is positive.
        aus_on = bool(getattr(settings, "aus_stream", True))
        self._aus_interval = float(getattr(settings, "aus_interval_s", 0.0) or 0.0) if aus_on else 0.0
        self._discovery = bool(getattr(settings, "discovery", False))
        self._window = max(1, int(window))
        self._reconnect = (reconnect_min_s, reconnect_max_s)

        self._lock = threading.Lock()
        #: outbox key → paho's handle of the message handed over for it.
        self._in_flight: dict[str, paho.MQTTMessageInfo] = {}
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._resend_discovery = False
        #: ``online`` messages from Home Assistant not yet answered (rate-limited).
        self._discovery_requests = 0
        self._discovery_throttle = Throttle(DISCOVERY_MIN_INTERVAL_S)
        self._log_throttle = Throttle(LOG_INTERVAL_S)
        #: Acknowledged by the broker but not yet deleted (the delete failed):
        #: outbox key → (next retry, current delay). Never re-sent from here.
        self._acked: dict[str, tuple[float, float]] = {}
        self._delivered = 0
        self._last_aus = float("-inf")
        self._unreachable_logged = False
        self._refusal_logged: str | None = None
        self._started = False
        self._closed = False
        self._pump: threading.Thread | None = None
        self._client = self._make_client()

    # --- set-up --------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        settings = self.settings
        client_id = getattr(settings, "client_id", None) or f"microexpr-{self.device_id}"
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        # The pump bounds what is in flight; paho's own cap would park the rest
        # in a "queued" state that it resends less eagerly after a reconnect.
        client.max_inflight_messages_set(0)
        client.reconnect_delay_set(min_delay=self._reconnect[0], max_delay=self._reconnect[1])  # type: ignore[arg-type]
        client.connect_timeout = 5.0
        client.will_set(self.topics.availability, Availability.OFFLINE.value, qos=1, retain=True)
        username = getattr(settings, "username", None)
        if username:
            client.username_pw_set(username, self._password())
        if getattr(settings, "tls", False):
            files: dict[str, str | None] = {}
            for key in ("ca_file", "cert_file", "key_file"):
                value = getattr(settings, key, None)
                if value and not Path(value).is_file():
                    raise ConfigError(f"mqtt.{key}: no such file {value}")
                files[key] = str(value) if value else None
            try:
                client.tls_set(ca_certs=files["ca_file"], certfile=files["cert_file"], keyfile=files["key_file"])
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError(f"mqtt.tls: cannot load the TLS files: {exc}") from None
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _password(self) -> str | None:
        value = getattr(self.settings, "password", None)
        if value is not None and hasattr(value, "get_secret_value"):  # pydantic SecretStr
            value = value.get_secret_value()
        if value:
            return str(value)
        from microexpr import secrets  # read lazily: never at import time

        return secrets.read_secret("mqtt_password", "MICROEXPR_MQTT_PASSWORD")

    def start(self) -> MqttPublisher:
        """Connect in the background; returns at once (events queue meanwhile)."""
        if self._closed:
            raise PublishError(f"mqtt {self.host}:{self.port}: publisher already closed")
        if self._started:
            return self
        self._started = True
        if len(self.outbox):
            log.info("outbox %s: %d message(s) to replay", self.outbox.path, len(self.outbox))
        keepalive = int(getattr(self.settings, "keepalive_s", 30))
        self._client.connect_async(self.host, self.port, keepalive=keepalive)
        self._client.loop_start()
        self._pump = threading.Thread(target=self._pump_main, name="mqtt-pump", daemon=True)
        self._pump.start()
        return self

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- what callers use ------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish_event(self, event: Event) -> None:
        """Commit the event to the outbox and let the pump send it.

        Raises:
            PublishError: the outbox is full and its policy is ``reject_new``.
            OutboxError: the outbox cannot be written (or is already closed).
        """
        self._enqueue(event.event_id, self.topics.event, event.to_json())

    def publish_lifecycle(self, key: str, payload: str) -> None:
        """A lifecycle notice: stored like events (``key``: event id and type), sent in order."""
        self._enqueue(key, self.topics.lifecycle, payload)

    def publish_refined(self, refined: RefinedEvent) -> None:
        """Same path as events: the refinement is stored, then sent with QoS."""
        self._enqueue(refined.event_id, self.topics.refined, refined.to_json())

    def _enqueue(self, event_id: str, topic: str, payload: str) -> None:
        # Even after close() the message is committed: an event spotted during
        # shutdown is replayed at the next start instead of being lost.
        self.outbox.put(event_id, topic, payload, qos=self.qos, retain=False)
        self._wake.set()

    def wake(self) -> None:
        """Something was committed to the outbox by the caller: send it soon."""
        self._wake.set()

    def _undeleted(self) -> int:
        with self._lock:
            return len(self._acked)

    def publish_aus(self, frame: AUFrame) -> bool:
        """Send one AU sample if the stream is enabled, due and the broker is up.

        Samples are a live view: never stored, dropped while disconnected.
        """
        if self._aus_interval <= 0 or not self.connected:
            return False
        now = time.monotonic()
        if now - self._last_aus < self._aus_interval:
            return False
        self._last_aus = now
        payload = dumps(au_stream_payload(frame, device_id=self.device_id))
        return self._send(self.topics.aus, payload, qos=0, retain=False) is not None

    def set_retained(self, topic: str, payload: str) -> None:
        """A retained state (``face``, a switch's state): sent now if connected, and again
        after every reconnect, so the broker always holds the current value."""
        with self._lock:
            if self._retained.get(topic) == payload:
                return
            self._retained[topic] = payload
        if self.connected:
            self._send(topic, payload, qos=1, retain=True)

    def publish_stats(self, stats: Stats) -> bool:
        """Replace the retained stats message (dropped while disconnected)."""
        if not self.connected:
            return False
        return self._send(self.topics.stats, stats.to_json(), qos=0, retain=True) is not None

    def status(self) -> PublisherStatus:
        with self._lock:
            in_flight = len(self._in_flight)
            delivered = self._delivered
        return PublisherStatus(self.connected, len(self.outbox), self.outbox.dropped, in_flight, delivered)

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty; False if it is not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.outbox) - self._undeleted() > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._wake.set()
            time.sleep(min(0.02, remaining))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Flush, publish ``offline``, disconnect and stop threads; idempotent.

        Flushing waits only while connected: with the broker away the
        messages are safe in the outbox and shutdown must stay quick.
        """
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        deadline = time.monotonic() + max(0.0, timeout)
        while self.connected and len(self.outbox) - self._undeleted() > 0 and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._pump is not None:
            self._pump.join(timeout=max(0.1, deadline - time.monotonic()))
        if self.connected:
            info = self._send(self.topics.availability, Availability.OFFLINE.value, qos=1, retain=True)
            if info is not None:
                try:
                    info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
                except (RuntimeError, ValueError) as exc:
                    log.debug("offline not confirmed: %s", exc)
        self._reap(final=True)  # acknowledgements that arrived while stopping
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        log.info(
            "mqtt publisher stopped; %d message(s) stay in outbox %s", len(self.outbox), self.outbox.path
        )

    # --- the pump thread --------------------------------------------------------

    def _pump_main(self) -> None:
        next_stats = time.monotonic()
        while not self._stop.is_set():
            timeout = 1.0
            if self._stats_source is not None and self._stats_interval > 0:
                timeout = max(0.0, min(timeout, next_stats - time.monotonic()))
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set() or not self.connected:
                continue
            try:
                if self._resend_discovery:  # a new connection: always announce
                    self._resend_discovery = False
                    self._announce()
                if self._resend_retained:
                    self._resend_retained = False
                    with self._lock:
                        states = list(self._retained.items())
                    for topic, payload in states:
                        self._send(topic, payload, qos=1, retain=True)
                self._maybe_answer_home_assistant()
                self._pump_outbox()
                if self._stats_source is not None and self._stats_interval > 0 and time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + self._stats_interval
                    self.publish_stats(self._stats_source())
            except Exception:  # keep pumping: a bad stats source must not stop events
                log.exception("mqtt pump: unexpected error (continuing)")

    def _pump_outbox(self) -> None:
        self._reap()
        with self._lock:
            busy = set(self._in_flight)
            acked = set(self._acked)
        room = self._window - len(busy)
        busy |= acked  # delivered already: never re-sent because its delete failed
        if room <= 0:
            return
        sent: list[str] = []
        for message in self.outbox.pending(room, exclude=busy):
            if not self.connected or self._stop.is_set():
                break
            info = self._send(message.topic, message.payload, qos=message.qos, retain=message.retain)
            if info is None:
                continue
            sent.append(message.key)
            with self._lock:
                self._in_flight[message.key] = info
        try:
            self.outbox.mark_attempted(sent)
        except OutboxError as exc:  # attempt counts are bookkeeping: a full disk must not stop delivery
            gate = self._log_throttle.gate("attempts")
            if gate.allowed:
                log.warning("%s (delivery goes on)%s", exc, gate.suffix())
        self._reap()  # QoS 0 messages count as sent once written

    def _reap(self, *, final: bool = False) -> None:
        """Delete from the outbox every message the broker has acknowledged.

        paho marks a message's ``MQTTMessageInfo`` as published when its
        PUBACK (QoS 1) or PUBCOMP (QoS 2) arrives, keeps the same object
        across reconnects and resends, and then calls ``on_publish``, which
        wakes this thread. Tracking the info objects rather than bare message
        ids avoids the race where an acknowledgement arrives before
        ``publish()`` has returned its id, and mids reused after a reconnect.

        A delete that fails (disk full) does not put the message back in
        line: its key is kept in ``_acked`` and the delete retried with
        backoff (``final``: once more, now), so a full disk never turns into a
        resend storm. If the process ends first, the message is sent once
        more at the next start (same ``event_id``): a duplicate, never a loss.
        """
        now = time.monotonic()
        with self._lock:
            done = [key for key, info in self._in_flight.items() if info.is_published()]
            for key in done:
                del self._in_flight[key]
            for key in done:
                self._acked[key] = (now, DELETE_RETRY_MIN_S)
            due = [(key, delay) for key, (at, delay) in self._acked.items() if final or at <= now]
        failed = succeeded = 0
        reason = ""
        for key, delay in due:
            try:
                deleted = self.outbox.delete(key)
            except OutboxError as exc:
                failed += 1
                reason = str(exc)
                with self._lock:
                    self._acked[key] = (now + delay, min(delay * 2, DELETE_RETRY_MAX_S))
                continue
            succeeded += 1
            with self._lock:
                self._acked.pop(key, None)
                if deleted:
                    self._delivered += 1
        if succeeded and failed == 0:
            with self._lock:  # space is back: the others waiting for a retry go now
                for key in self._acked:
                    self._acked[key] = (now, DELETE_RETRY_MIN_S)
        if failed:
            gate = self._log_throttle.gate("delete")
            if gate.allowed:
                log.error(
                    "%s; %d acknowledged message(s) wait for their delete (retried with backoff, not re-sent)%s",
                    reason, self._undeleted(), gate.suffix(),
                )
        if final and self._undeleted():
            log.warning(
                "outbox %s: %d acknowledged message(s) could not be deleted; they are sent once more at the "
                "next start (same event_id)", self.outbox.path, self._undeleted(),
            )

    def _send(self, topic: str, payload: str, *, qos: int, retain: bool) -> paho.MQTTMessageInfo | None:
        """Hand one message to paho; None if paho refused it outright."""
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:  # invalid topic or payload: a bug, not a network state
            log.error("%s: cannot publish: %s", topic, exc)
            return None
        if qos == 0 and info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None  # paho forgets QoS 0 messages it could not send
        # For QoS > 0 a NO_CONN result is fine: paho keeps the message and
        # sends it after the next CONNACK.
        return info

    # --- paho callbacks (paho's network thread) ---------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            self._connected.clear()
            reason = str(reason_code)
            if self._refusal_logged != reason:
                self._refusal_logged = reason
                log.error(
                    "mqtt broker %s:%d refused the connection: %s; events stay in outbox %s",
                    self.host, self.port, reason, self.outbox.path,
                )
            return
        if self._unreachable_logged or self._refusal_logged:
            log.info("mqtt broker %s:%d answers again; sending %d stored message(s)",
                     self.host, self.port, len(self.outbox))
        else:
            log.info("connected to mqtt broker %s:%d as %s", self.host, self.port, self.topics.base)
        self._unreachable_logged = False
        self._refusal_logged = None
        # "online" goes out before anything the pump sends on this connection.
        self._send(self.topics.availability, Availability.ONLINE.value, qos=1, retain=True)
        self._connected.set()
        if self._discovery:
            client.subscribe(self.topics.discovery_status, qos=1)
            self._resend_discovery = True
        if self._on_command is not None:
            client.subscribe(f"{self.topics.set_base}/#", qos=1)
        self._resend_retained = True
        self._wake.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._connected.clear()
        if not self._unreachable_logged:
            self._unreachable_logged = True
            log.warning(
                "no mqtt broker answers at %s:%d; events are kept in outbox %s and sent when one does",
                self.host, self.port, self.outbox.path,
            )

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and not self._stop.is_set() and not self._unreachable_logged:
            self._unreachable_logged = True
            log.warning(
                "lost mqtt broker %s:%d (%s); events are kept in outbox %s, reconnecting",
                self.host, self.port, reason_code, self.outbox.path,
            )

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Any
    ) -> None:
        # The acknowledged message is found by the pump through its
        # MQTTMessageInfo (see _reap); here we only wake it. Never block paho.
        self._wake.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self._on_command is not None and message.topic.startswith(f"{self.topics.set_base}/"):
            try:
                self._on_command(message.topic, bytes(message.payload))
            except Exception:  # a bug in the handler must not reach paho's thread
                log.exception("command on %s: handler failed", message.topic)
            return
        if message.topic == self.topics.discovery_status and message.payload.strip() == b"online":
            with self._lock:
                self._discovery_requests += 1
            self._wake.set()

    def _maybe_answer_home_assistant(self) -> None:
        """Re-publish discovery for Home Assistant's ``online``, at most once per
        :data:`DISCOVERY_MIN_INTERVAL_S` however many arrive (pump thread)."""
        with self._lock:
            requests = self._discovery_requests
        if not requests:
            return
        wait = self._discovery_throttle.due_in("discovery")
        if wait > 0:
            # Served when the interval ends: the pump wakes at least once a second.
            return
        self._discovery_throttle.gate("discovery")
        with self._lock:
            self._discovery_requests = 0
        log.info("home assistant is online: re-sending discovery (%d request(s) since the last one)", requests)
        self._announce()

    def _announce(self) -> None:
        for topic, payload in discovery_messages(self.topics, self.device_id).items():
            self._send(topic, payload, qos=1, retain=True)

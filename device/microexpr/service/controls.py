"""Commands from MQTT (pause/resume, recalibrate, AU stream) and the face-present state.

Messages arrive on paho's network thread; :class:`Controls` only parses
them (:func:`microexpr.mqtt.commands.parse_command`) and queues the accepted
ones. The inference thread takes them before its next frame, so the
pipeline is only ever touched by the threads that own it. A refused message
changes nothing: it is counted and logged, the first few at once and then
at most one line a minute with the running count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from microexpr.mqtt.commands import Command, CommandRejected, parse_command

log = logging.getLogger(__name__)

#: Refusals logged one by one before the log is rate-limited.
LOG_FIRST = 3
LOG_EVERY_S = 60.0


class Controls:
    """The commands waiting for the inference thread, and what was accepted/refused."""

    def __init__(self, set_base: str) -> None:
        self.set_base = set_base
        self._lock = threading.Lock()
        self._pending: deque[Command] = deque(maxlen=64)
        self.accepted = 0
        self.rejected = 0
        self._last_log = float("-inf")
        self._unlogged = 0

    def on_message(self, topic: str, payload: bytes) -> None:
        """paho's thread: parse, queue or refuse. Never raises."""
        try:
            command = parse_command(self.set_base, topic, payload)
        except CommandRejected as exc:
            self._refused(str(exc))
            return
        with self._lock:
            self.accepted += 1
            self._pending.append(command)
        log.info("command %s %s received", command.name.value, "ON" if command.value else "OFF")

    def take(self) -> list[Command]:
        """The inference thread: every command received since the last call, in order."""
        with self._lock:
            commands = list(self._pending)
            self._pending.clear()
        return commands

    def _refused(self, why: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.rejected += 1
            count = self.rejected
            loud = count <= LOG_FIRST or now - self._last_log >= LOG_EVERY_S
            if loud:
                self._last_log = now
                skipped, self._unlogged = self._unlogged, 0
            else:
                self._unlogged += 1
        if loud:
            more = f"; {skipped} more refused since the last line" if skipped else ""
            log.warning("command refused, nothing changed: %s (%d refused so far%s)", why, count, more)


class FacePresence:
    """Whether a face is in view, debounced: a change counts once it has held ``hold_s``
    (one frame without a face is a blink of the tracker, not a person leaving)."""

    def __init__(self, hold_s: float = 0.5) -> None:
        self.hold_s = hold_s
        self.present = False
        self._since: float | None = None

    def update(self, seen: bool, now: float) -> bool:
        """Feed one frame; True when the debounced state changed."""
        if seen == self.present:
            self._since = None
            return False
        if self._since is None:
            self._since = now
        if now - self._since >= self.hold_s:
            self.present, self._since = seen, None
            return True
        return False

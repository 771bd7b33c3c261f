"""systemd notify/watchdog protocol (sd_notify(3)), a no-op outside systemd.

systemd-python's ``daemon.notify`` is used when it is importable; otherwise
the datagram is sent by hand (the protocol is one AF_UNIX datagram of
``KEY=VALUE`` lines to ``$NOTIFY_SOCKET``), so a board without libsystemd
still honours ``Type=notify``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

log = logging.getLogger(__name__)

try:
    from systemd import daemon as _sd_daemon  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - exercised on hosts without libsystemd
    _sd_daemon = None


def _send_raw(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", address, exc)
            return False
    return True


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING; rate-limits the watchdog ping.

    ``WATCHDOG_USEC`` is set by systemd when the unit has ``WatchdogSec=``;
    we ping at a third of it so one slow frame never trips it, while a hung
    inference loop (which is the only caller of ``watchdog()``) does.
    """

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        watchdog_for_us = not pid or pid == str(os.getpid())
        self.watchdog_interval_s = int(usec) / 1e6 / 3 if usec.isdigit() and watchdog_for_us else 0.0
        self._last_ping = 0.0
        self._lock = threading.Lock()

    def send(self, *lines: str) -> bool:
        if not self.enabled:
            return False
        message = "\n".join(lines)
        if _sd_daemon is not None:
            # sd_notify is best effort: a vanished socket must not kill the
            # loop that pings (systemd-python raises OSError, e.g. ECONNREFUSED).
            try:
                return bool(_sd_daemon.notify(message))
            except OSError as exc:
                log.debug("sd_notify failed: %s", exc)
                return False
        return _send_raw(message)

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def reloading(self) -> None:
        # RELOADING=1 must carry MONOTONIC_USEC for Type=notify-reload.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Ping from the loop that must stay alive; cheap when called per frame."""
        if not self.enabled:
            return
        now = time.monotonic()
        interval = self.watchdog_interval_s or 1.0
        with self._lock:
            if now - self._last_ping < interval:
                return
            self._last_ping = now
        self.send("WATCHDOG=1")

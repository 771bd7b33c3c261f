"""systemd notify/watchdog protocol (sd_notify(3)), a no-op outside systemd.

The protocol is one AF_UNIX datagram of ``KEY=VALUE`` lines to
``$NOTIFY_SOCKET``. We send it ourselves, non-blocking, rather than through
systemd-python's ``daemon.notify``: that call blocks when the receiver's
queue is full (Linux queues only ``net.unix.max_dgram_qlen`` = 10 datagrams),
and the caller here is the inference loop itself — a watchdog ping must never
be what stalls the loop it vouches for. A ping that cannot be queued is
dropped; the next one follows within a third of ``WatchdogSec``.
The journal is written by hand too (``journal.py``): no systemd-python.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

log = logging.getLogger(__name__)

def _send_raw(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.send(message.encode(), socket.MSG_DONTWAIT)
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
        return _send_raw("\n".join(lines))

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

"""journald's native protocol by hand, so the device needs no C toolchain.

systemd-python ships only as an sdist: installing it needs gcc, python3-dev,
pkg-config and libsystemd-dev on every device, only for ``JournalHandler``
(notify is already done by hand in ``notify.py``). The native protocol is
documented and small (systemd.journal-fields(7), "Native Journal Protocol"):
one AF_UNIX datagram to ``/run/systemd/journal/socket`` holding ``KEY=value``
lines; a value containing a newline is sent as ``KEY\\n`` + its length as a
64-bit little-endian integer + the bytes + ``\\n``.

A record that cannot be sent (socket gone, datagram too large) is written to
stderr instead — under systemd that is the journal too, without the fields —
and counted in :attr:`JournalHandler.fallbacks`; nothing is dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import threading

JOURNAL_SOCKET = "/run/systemd/journal/socket"

# logging level -> syslog priority (sd-daemon(3)).
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def _priority(levelno: int) -> int:
    for level, prio in _PRIORITY:
        if levelno >= level:
            return prio
    return 7


def _field(key: str, value: object) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
    name = key.encode("ascii")
    if b"\n" in data:
        return name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name + b"=" + data + b"\n"


def _valid_field_name(key: str) -> bool:
    # Journal field names: upper-case letters, digits and underscores, not
    # starting with an underscore (those are trusted fields set by journald).
    return bool(key) and key[0] != "_" and all(c.isupper() or c.isdigit() or c == "_" for c in key) and not key[0].isdigit()


def encode(record: logging.LogRecord, message: str, identifier: str) -> bytes:
    """One journal entry for ``record``: standard fields plus upper-case extras."""
    parts = [
        _field("MESSAGE", message),
        _field("PRIORITY", _priority(record.levelno)),
        _field("SYSLOG_IDENTIFIER", identifier),
        _field("LOGGER", record.name),
        _field("THREAD_NAME", record.threadName),
        _field("CODE_FILE", record.pathname),
        _field("CODE_LINE", record.lineno),
        _field("CODE_FUNC", record.funcName),
    ]
    if record.exc_text:
        parts.append(_field("EXCEPTION_INFO", record.exc_text))
    for key, value in record.__dict__.items():
        if _valid_field_name(key) and key not in {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER"}:
            parts.append(_field(key, value))
    return b"".join(parts)


class JournalHandler(logging.Handler):
    """A ``logging`` handler that writes structured entries to journald."""

    def __init__(self, identifier: str = "microexpr", path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.identifier = identifier
        self.path = path
        self.fallbacks = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._send_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            payload = encode(record, message, self.identifier)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
            return
        try:
            with self._send_lock:
                self._sock.sendto(payload, self.path)
        except OSError:
            # Too large for one datagram or no journald: the plain line still
            # reaches the journal through stderr (JOURNAL_STREAM).
            self.fallbacks += 1
            try:
                sys.stderr.write(f"<{_priority(record.levelno)}>{message}\n")
                sys.stderr.flush()
            except Exception:  # noqa: BLE001
                self.handleError(record)

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            super().close()


def available(path: str = JOURNAL_SOCKET) -> bool:
    """Whether journald's native socket exists here."""
    return os.path.exists(path)

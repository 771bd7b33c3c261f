"""Logging set-up: journald with structured fields under systemd, stderr otherwise.

Modules log through ``logging.getLogger(__name__)`` with %-style arguments and
may pass structured fields as ``extra={"MICROEXPR_EVENT_ID": ...}``; the
journald handler stores upper-case extras as journal fields.
"""

from __future__ import annotations

import logging
import os
import sys


def _under_systemd() -> bool:
    # systemd sets JOURNAL_STREAM when stderr is connected to the journal.
    return bool(os.environ.get("JOURNAL_STREAM")) and bool(os.environ.get("INVOCATION_ID"))


def _journal_handler() -> logging.Handler | None:
    """systemd-python's JournalHandler (Debian's python3-systemd, linked into
    the venv by provisioning/link-systemd.sh); where it cannot be imported,
    the native protocol written by hand in journal.py. None: no journal socket."""
    try:
        from systemd.journal import JournalHandler as SystemdJournalHandler  # type: ignore[import-not-found]
    except ImportError:
        from microexpr.journal import JournalHandler, available

        return JournalHandler("microexpr") if available() else None
    return SystemdJournalHandler(SYSLOG_IDENTIFIER="microexpr")


def setup_logging(level: int = logging.INFO) -> None:
    """Install exactly one handler on the root logger."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler | None = None
    if _under_systemd():
        handler = _journal_handler()
        if handler is not None:
            handler.setFormatter(logging.Formatter("%(message)s"))
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # absl/glog chatter from mediapipe goes to fd 2 directly; keep ours readable.
    logging.getLogger("absl").setLevel(logging.ERROR)

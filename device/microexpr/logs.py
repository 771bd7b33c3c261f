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


def setup_logging(level: int = logging.INFO) -> None:
    """Install exactly one handler on the root logger."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler | None = None
    if _under_systemd():
        # journald's native protocol, written by hand (journal.py): no
        # systemd-python, so no compiler on the device.
        from microexpr.journal import JournalHandler, available

        if available():
            handler = JournalHandler("microexpr")
            handler.setFormatter(logging.Formatter("%(message)s"))
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # absl/glog chatter from mediapipe goes to fd 2 directly; keep ours readable.
    logging.getLogger("absl").setLevel(logging.ERROR)

"""Start a command as a terminal would for Ctrl-C: with SIGINT not ignored.

A shell without job control (a CI script's ``cmd &``, ``nohup … &``) starts
a background job with SIGINT ignored, and an ignored signal stays ignored
across fork and exec: Python then installs no KeyboardInterrupt handler and
the child never sees Ctrl-C (measured: the Ctrl-C tests failed when pytest
ran as such a job — the command finished, or ran on, instead of stopping).
The tests of Ctrl-C's handling start their child with SIGINT *caught* in
the parent for the moment of the spawn (a caught signal is reset to its
default at exec), so they test the command, not the shell that started pytest.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence
from typing import Any


def popen_interruptible(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
    """``subprocess.Popen(args, **kwargs)`` with SIGINT at its default in the child."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(args, **kwargs)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)

"""The CLI dispatcher: every command has --help, errors are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from microexpr.cli import COMMANDS, main


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name, _module, _help in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0, name
        assert name in capsys.readouterr().out


def test_import_needs_no_display() -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no DISPLAY, no WAYLAND_DISPLAY
    out = subprocess.run(
        [sys.executable, "-c", "import microexpr.cli, matplotlib; print(matplotlib.get_backend())"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip().lower() == "agg"

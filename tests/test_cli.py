"""The CLI dispatcher: every command has --help, errors are one line."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from interrupt_support import popen_interruptible

from microexpr.cli import COMMANDS, main
from microexpr.errors import ExitCode


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name, _module, _help in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0, name
        assert name in capsys.readouterr().out


def test_top_level_help_is_written_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "dispatcher" not in out  # was the module docstring's first line
    assert all(name in out for name, _module, _help in COMMANDS)


def test_import_needs_no_display() -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no DISPLAY, no WAYLAND_DISPLAY
    out = subprocess.run(
        [sys.executable, "-c", "import microexpr.cli, matplotlib; print(matplotlib.get_backend())"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip().lower() == "agg"


@pytest.mark.integration
def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path, media_dir: Path) -> None:
    """SIGINT mid-run: no traceback, one line saying so, the documented 130
    (it used to be a silent 130 that README's table did not list)."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(400):  # symlinks: a long input that costs nothing to make
        (frames / f"f{i}.jpg").symlink_to(media_dir / "single_face.jpg")
    proc = popen_interruptible([sys.executable, "-u", "-m", "microexpr", "timeline", str(frames), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("{")  # rows are flowing
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "microexpr: interrupted"


def test_traceback_flag_keeps_the_documented_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--traceback used to re-raise, so every error exited 1 (a unit run with
    it would be restarted on a bad configuration instead of stopping at 78)."""
    bad = tmp_path / "config.toml"
    bad.write_text("[mqtt]\nport = 0\n", encoding="utf-8")
    assert main(["--traceback", "run", "--config", str(bad)]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "microexpr.config." in err
    assert err.strip().splitlines()[-1].startswith("microexpr: error: mqtt.port:")

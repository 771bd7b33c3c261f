"""provisioning/install.sh: dry runs change nothing; a scratch-root install lays out
the tree the unit expects, with the real model verified; a second run changes nothing."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from microexpr import config as cfg
from microexpr import models, secrets

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "provisioning" / "install.sh"
UNIT = ROOT / "services" / "microexpr.service"
EXAMPLE = ROOT / "provisioning" / "config.example.toml"
BROKER_CONF = ROOT / "services" / "mosquitto-microexpr.conf"
VENV = Path(sys.prefix)  # the project venv the tests run in


def install(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def actions(output: str) -> list[str]:
    """The commands the script ran (or would run): lines starting with "+ "."""
    return [line[2:] for line in output.splitlines() if line.startswith("+ ")]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_help_lists_the_options() -> None:
    out = install("--help").stdout
    for option in ("--dry-run", "--root", "--with-mosquitto", "--mirror", "--venv-from", "--skip-venv"):
        assert option in out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--bogus"], "unknown option: --bogus"), (["--mirror", "/nonexistent/mirror"], "--mirror /nonexistent/mirror: not a directory"),
     (["--root"], "--root needs a directory"), (["--venv-from", "/nonexistent"], "--venv-from /nonexistent: no bin/python there")],
)
def test_bad_options_are_one_line_errors(args: list[str], message: str, tmp_path: Path) -> None:
    proc = install("--dry-run", *args, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == f"install.sh: error: {message}"


def test_dry_run_in_a_scratch_root_lists_every_step_and_changes_nothing(tmp_path: Path, model_mirror: Path) -> None:
    out = install("--dry-run", "--root", tmp_path, "--with-mosquitto", "--mirror", model_mirror).stdout
    assert list(tmp_path.iterdir()) == []
    steps = re.findall(r"^# (\d)\. ", out, flags=re.M)
    assert steps == [str(n) for n in range(1, 10)]
    done = actions(out)
    assert f"install -d -m 0700 {tmp_path}/etc/microexpr/credentials" in done
    assert f"python3 -m venv {tmp_path}/opt/microexpr/venv" in done
    assert any(a.endswith(f"--no-deps -r {ROOT}/requirements/mediapipe.txt") for a in done)
    assert (f"{tmp_path}/opt/microexpr/venv/bin/microexpr provision-model --dir "
            f"{tmp_path}/var/lib/microexpr/models --mirror {model_mirror}") in done
    assert f"install -D -m 0644 {EXAMPLE} {tmp_path}/etc/microexpr/config.toml" in done
    assert f"install -D -m 0644 {UNIT} {tmp_path}/etc/systemd/system/microexpr.service" in done
    assert f"install -m 0600 /dev/null {tmp_path}/etc/microexpr/credentials/mqtt_password" in done
    # Live-system actions are only named in a scratch root.
    skipped = [line for line in out.splitlines() if line.startswith("skip (scratch root): ")]
    assert any("useradd --system" in s and "--groups video" in s for s in skipped)
    assert any("apt-get install" in s and "mosquitto" in s and "python3-venv" in s for s in skipped)
    assert any(s.endswith("systemctl enable microexpr.service") for s in skipped)


def test_picamera_option_needs_the_system_packages(tmp_path: Path) -> None:
    done = actions(install("--dry-run", "--root", tmp_path, "--with-picamera").stdout)
    assert f"python3 -m venv --system-site-packages {tmp_path}/opt/microexpr/venv" in done
    out = install("--dry-run", "--root", tmp_path, "--with-picamera").stdout
    assert re.search(r"^skip \(scratch root\): apt-get install .*python3-picamera2", out, flags=re.M)


def test_dry_run_on_this_system_changes_nothing() -> None:
    watched = [Path("/opt/microexpr"), Path("/etc/microexpr"), Path("/etc/systemd/system/microexpr.service"),
               Path("/var/lib/microexpr/outbox.sqlite")]
    before = {p: p.exists() for p in watched}
    out = install("--dry-run", "--skip-model").stdout
    assert {p: p.exists() for p in watched} == before
    assert "(dry run: nothing is changed)" in out
    assert "install -D -m 0644" in out and "microexpr.service" in out


def test_install_recipe_matches_the_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    script = SCRIPT.read_text()
    for requirement in ("requirements/runtime.txt", "--no-deps -r requirements/mediapipe.txt"):
        assert requirement in makefile
    assert '-r "$SRC/requirements/runtime.txt"' in script
    assert '--no-deps -r "$SRC/requirements/mediapipe.txt"' in script


@pytest.mark.integration
def test_scratch_root_install_then_rerun_is_idempotent(tmp_path: Path, model_mirror: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = install("--root", root, "--with-mosquitto", "--mirror", model_mirror, "--venv-from", VENV).stdout
    assert "# configuration is valid" in first

    etc, state = root / "etc" / "microexpr", root / "var" / "lib" / "microexpr"
    assert (etc / "config.toml").read_text() == EXAMPLE.read_text()
    assert mode(etc / "config.toml") == 0o644
    assert mode(etc / "credentials") == 0o700
    for spec in secrets.SECRETS:
        cred = etc / "credentials" / spec.name
        assert cred.read_bytes() == b"" and mode(cred) == 0o600
    assert (root / "etc" / "systemd" / "system" / "microexpr.service").read_text() == UNIT.read_text()
    assert (root / "etc" / "mosquitto" / "conf.d" / "microexpr.conf").read_text() == BROKER_CONF.read_text()
    assert mode(state) == 0o750
    assert (root / "opt" / "microexpr" / "venv").resolve() == VENV.resolve()
    # `microexpr` is on PATH: /usr/local/bin links to the venv's command (the path inside the image).
    link = root / "usr" / "local" / "bin" / "microexpr"
    assert os.readlink(link) == "/opt/microexpr/venv/bin/microexpr"
    assert os.access(root / os.readlink(link).lstrip("/"), os.X_OK)
    next_line = first.strip().splitlines()[-1]
    assert next_line.startswith("#   microexpr check-config --config /etc/microexpr/config.toml")
    assert "/usr/local/bin/microexpr" in (ROOT / "docs" / "deployment.md").read_text()
    # The model the unit's daemon will look for, where it will look, verified against the pin.
    model = models.FACE_LANDMARKER.install_path(state / "models")
    assert models.verify_file(model) == models.FACE_LANDMARKER.sha256
    # The installed config resolves to the service's paths when run with the unit's StateDirectory.
    installed = cfg.load_config(etc / "config.toml", env={"STATE_DIRECTORY": "/var/lib/microexpr"})
    assert installed.outbox.path == Path("/var/lib/microexpr/outbox.sqlite")

    # The admin edits the config and sets a secret; a rerun must keep both.
    layout = tree(root)
    edited = (etc / "config.toml").read_text().replace('level = "info"', 'level = "debug"')
    (etc / "config.toml").write_text(edited)
    (etc / "credentials" / "mqtt_password").write_text("site-password\n")
    second = install("--root", root, "--with-mosquitto", "--mirror", model_mirror, "--venv-from", VENV).stdout
    assert (etc / "config.toml").read_text() == edited
    assert (etc / "credentials" / "mqtt_password").read_text() == "site-password\n"
    assert tree(root) == layout
    assert f"# kept existing: {etc}/config.toml" in second
    assert f"# unchanged: {root}/etc/systemd/system/microexpr.service" in second
    # Nothing is created or replaced again; only the (idempotent) model check runs.
    assert [a.split()[1] for a in actions(second)] == ["provision-model"]
    assert "already installed" in second


@pytest.mark.integration
def test_rerun_replaces_an_outdated_unit_but_not_the_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install("--root", root, "--skip-venv")
    unit = root / "etc" / "systemd" / "system" / "microexpr.service"
    unit.write_text(UNIT.read_text().replace("WatchdogSec=30s", "WatchdogSec=5s"))
    (root / "etc" / "microexpr" / "config.toml").write_text('device_id = "site"\n')
    out = install("--root", root, "--skip-venv").stdout
    assert unit.read_text() == UNIT.read_text()
    assert f"install -D -m 0644 {UNIT} {unit}" in actions(out)
    assert (root / "etc" / "microexpr" / "config.toml").read_text() == 'device_id = "site"\n'
    assert not (root / "opt" / "microexpr" / "venv").exists()
    assert "# 5. model into /var/lib/microexpr/models" in out and "skipped (--skip-model)" in out


def test_script_is_executable_and_strict() -> None:
    assert os.access(SCRIPT, os.X_OK)
    head = SCRIPT.read_text().splitlines()[:40]
    assert "set -euo pipefail" in head
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.integration
def test_the_installed_example_config_starts_the_daemon(tmp_path: Path, model_mirror: Path) -> None:
    """Issue 13: the unit stayed failed (exit 78, no source). The installed example
    watches camera "0"; with no camera the daemon starts, says which key to change,
    keeps retrying, and stops cleanly on SIGTERM."""
    root = tmp_path / "root"
    root.mkdir()
    install("--root", root, "--mirror", model_mirror, "--venv-from", VENV)
    config = root / "etc" / "microexpr" / "config.toml"
    state = root / "var" / "lib" / "microexpr"
    env = {k: v for k, v in os.environ.items()
           if k not in {"NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"}}
    env.update(STATE_DIRECTORY=str(state), CREDENTIALS_DIRECTORY=str(root / "etc" / "microexpr" / "credentials"),
               PYTHONPATH=str(ROOT / "device"))
    command = root / "opt" / "microexpr" / "venv" / "bin" / "microexpr"
    checked = subprocess.run([command, "check-config", "--config", config], env=env, capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    log = tmp_path / "daemon.log"
    with log.open("w") as err:
        proc = subprocess.Popen([command, "run", "--config", config, "--no-print-events"], env=env,
                                stdout=subprocess.DEVNULL, stderr=err, text=True)
    try:
        deadline = time.monotonic() + 120
        wanted = ("source.uri", "first frame processed")  # no camera here (the usual case), or one that answers
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text()
            if "model loaded" in text and any(w in text for w in wanted):
                break
            time.sleep(0.3)
        text = log.read_text()
        assert proc.poll() is None, f"the daemon exited {proc.returncode}:\n{text[-3000:]}"
        assert "model loaded" in text, text[-3000:]
        if "first frame processed" not in text:
            assert re.search(r"retrying in .*set source\.uri", text), text[-3000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in log.read_text()
    assert (state / "outbox.sqlite").exists()  # the service's state directory, as the unit gives it

"""Helpers shared by the fleet tests: daemons started the way the template unit
``microexpr@.service`` starts them, and a second real clip to watch.

A daemon here is ``python -m microexpr`` with the template's ``ExecStart=``
arguments (``%i`` replaced, ``/etc/microexpr`` moved to a scratch folder) and
the environment systemd gives an instance: ``STATE_DIRECTORY`` (its own
folder, created as systemd would), ``MICROEXPR_INSTANCE`` and the template's
other ``Environment=`` lines.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixtures.broker import Broker
from fixtures.toml import toml_text

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "services" / "microexpr@.service"
#: Environment of the test process that systemd would set itself.
SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID",
               "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "MICROEXPR_INSTANCE", "MICROEXPR_MODELS_DIR")


def template_entries(key: str) -> list[str]:
    out = []
    for raw in TEMPLATE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith(f"{key}="):
            out.append(line.split("=", 1)[1])
    return out


@dataclass
class Instance:
    """One ``microexpr@<name>`` process."""

    name: str
    process: subprocess.Popen[bytes]
    state: Path
    out_path: Path
    err_path: Path

    def events(self) -> list[dict[str, Any]]:
        """Event payloads printed on stdout (``--print-events``), in order."""
        out = []
        for line in self.out_path.read_text(errors="replace").splitlines():
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "event_id" in payload and "kind" in payload:
                out.append(payload)
        return out

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def outbox_depth(self) -> int:
        with sqlite3.connect(self.state / "outbox.sqlite") as db:
            return int(db.execute("select count(*) from outbox").fetchone()[0])

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_instance(base: Path, name: str, settings: dict[str, Any], *, extra: tuple[str, ...] = ()) -> Instance:
    """Write ``<base>/etc/microexpr/<name>.toml`` and start the instance the template's way."""
    etc = base / "etc" / "microexpr"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / f"{name}.toml").write_text(toml_text(settings))
    (exec_start,) = template_entries("ExecStart")
    argv = exec_start.replace("%i", name).replace("/etc/microexpr", str(etc)).split()
    assert argv[0].endswith("/bin/microexpr") and argv[1] == "run"
    (state_rel,) = template_entries("StateDirectory")
    state = base / "var" / "lib" / state_rel.replace("%i", name)
    state.mkdir(parents=True, exist_ok=True, mode=0o750)
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ENV}
    for line in template_entries("Environment"):
        key, _, value = line.partition("=")
        env[key] = value.replace("%i", name)
    env["STATE_DIRECTORY"] = str(state)
    env["MICROEXPR_MODELS_DIR"] = str(base / "models")  # the test gives model.path explicitly
    out_path, err_path = base / f"{name}.out", base / f"{name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "microexpr", *argv[1:], "--print-events", *extra],
                                   cwd=ROOT, env=env, stdout=out, stderr=err)
    return Instance(name, process, state, out_path, err_path)


def synth_clip(directory: Path, face_clip: Path, model_path: Path) -> Path:
    """A second real-face clip (the clip's own neutral frames, warped by
    ``microexpr synth``): a smile micro-expression and a brow lowerer."""
    clip = directory / "synth.mp4"
    if clip.exists():
        return clip
    proc = subprocess.run(
        [sys.executable, "-m", "microexpr", "synth", str(face_clip), "--frames", "0-17", "-e", "6+12@1.0/0.3",
         "-e", "4@2.5/0.35", "--model", str(model_path), "-o", str(clip)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return clip


# --------------------------------------------------------------------------
# Brokers configured from the files in services/


SERVICES = ROOT / "services"
#: Global settings the fixture's generated config already has (in its own folder).
_FIXTURE_KEYS = ("persistence ", "persistence_location ", "autosave_interval ", "max_queued_messages ")


class ConfiguredBroker(Broker):
    """A fixture broker plus extra configuration lines (a bridge, an ACL)."""

    def __init__(self, workdir: Path, *, extra: str = "", **kwargs: Any) -> None:
        self.extra = extra
        super().__init__(workdir, **kwargs)

    def _write_config(self) -> None:
        super()._write_config()
        text = self.config_path.read_text()
        if self.extra:
            text += "\nautosave_interval 1\n" + self.extra + "\n"
        self.config_path.write_text(text)

    def reconfigure(self, extra: str) -> None:
        """New extra lines, used from the next start."""
        self.extra = extra
        self._write_config()


def bridge_lines(*, port: int, board: str, password: str, ca_file: Path, restart_timeout: str | None = None) -> str:
    """services/mosquitto-bridge.conf with its placeholders filled for a loopback central broker."""
    out = []
    for raw in (SERVICES / "mosquitto-bridge.conf").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(_FIXTURE_KEYS):
            continue
        key = line.split()[0]
        if key == "address":
            line = f"address 127.0.0.1:{port}"
        elif key == "remote_password":
            line = f"remote_password {password}"
        elif key == "bridge_cafile":
            line = f"bridge_cafile {ca_file}"
        elif key == "restart_timeout" and restart_timeout is not None:
            line = f"restart_timeout {restart_timeout}"
        out.append(line.replace("BOARD", board))
    return "\n".join(out)


def central_acl(directory: Path, board: str, devices: list[str]) -> Path:
    """services/mosquitto-central.acl rewritten for this board's device ids."""
    lines = [f"user {board}"]
    lines += [f"topic write microexpr/{device}/#" for device in devices]
    lines += [f"topic readwrite microexpr-bridge/{board}/#", "", "user fleet-view",
              "topic read microexpr/#", "topic read microexpr-bridge/#"]
    shipped = (SERVICES / "mosquitto-central.acl").read_text()
    assert "user fleet-view" in shipped and "topic write microexpr/board-a-cam0/#" in shipped
    path = directory / "central.acl"
    path.write_text("\n".join(lines) + "\n")
    return path

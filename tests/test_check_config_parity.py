"""``check-config`` refuses exactly what ``run`` refuses (issue 13, item 1), and
one rule for relative paths (item 2): the configuration file's folder.

Each configuration is given to both commands as real subprocesses (the real
model on a real face image for the accepted ones); the exit codes must be
equal, and the refusal lines the same. ``run`` on an accepted file processes
the one image and exits 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fixtures.toml import toml_text

from microexpr import config as cfg
from microexpr.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
_SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")


def _microexpr(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_ENV}
    env["PYTHONPATH"] = str(ROOT / "device")
    env["HOME"] = str(home)  # user state dirs land in the test's folder
    env["XDG_STATE_HOME"] = str(home / "state")
    return subprocess.run([sys.executable, "-m", "microexpr", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("microexpr: error: ")]


# Each case: (name, how to set up the config folder → the config dict, the exit code both must give)
Setup = Callable[[Path, Path, Path], dict[str, Any]]


def _base(folder: Path, model: Path) -> dict[str, Any]:
    return {
        "device_id": f"par-{uuid.uuid4().hex[:8]}",
        "source": {"uri": "face.jpg"},  # relative: the config folder's
        "model": {"path": str(model)},
        "mqtt": {"enabled": False},
        "outbox": {"path": "state/outbox.sqlite"},  # relative too
    }


def _valid(folder: Path, model: Path, face: Path) -> dict[str, Any]:
    shutil.copy(face, folder / "face.jpg")
    return _base(folder, model)


def _no_source(folder: Path, model: Path, face: Path) -> dict[str, Any]:
    data = _valid(folder, model, face)
    data["source"]["uri"] = ""
    return data


def _missing_video(folder: Path, model: Path, face: Path) -> dict[str, Any]:
    data = _base(folder, model)
    data["source"]["uri"] = "clips/missing.mp4"
    return data


def _empty_video(folder: Path, model: Path, face: Path) -> dict[str, Any]:
    (folder / "empty.mp4").write_bytes(b"")
    data = _base(folder, model)
    data["source"]["uri"] = "empty.mp4"
    return data


def _unknown_key(folder: Path, model: Path, face: Path) -> dict[str, Any]:
    data = _valid(folder, model, face)
    data["mqtt"]["hots"] = "broker"
    return data


def _missing_prototypes(folder: Path, model: Path, face: Path) -> dict[str, Any]:
    data = _valid(folder, model, face)
    data["engine"] = {"prototypes": "protos/missing.json"}
    return data


def _wrong_model(folder: Path, model: Path, face: Path) -> dict[str, Any]:
    data = _valid(folder, model, face)
    (folder / "bogus.task").write_bytes(b"not a model")
    data["model"]["path"] = "bogus.task"  # relative, and not the pinned file
    return data


def _missing_ca(folder: Path, model: Path, face: Path) -> dict[str, Any]:
    data = _valid(folder, model, face)
    data["mqtt"] = {"enabled": True, "host": "127.0.0.1", "port": 1, "tls": True, "ca_file": "certs/ca.pem"}
    return data


def _readonly_outbox(folder: Path, model: Path, face: Path) -> dict[str, Any]:
    data = _valid(folder, model, face)
    locked = folder / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    data["outbox"]["path"] = "locked/sub/outbox.sqlite"
    return data


CASES: list[tuple[str, Setup, ExitCode]] = [
    ("valid, relative source and outbox", _valid, ExitCode.OK),
    ("no source", _no_source, ExitCode.CONFIG),
    ("missing video", _missing_video, ExitCode.NO_INPUT),
    ("empty video", _empty_video, ExitCode.DATA_ERROR),
    ("unknown key", _unknown_key, ExitCode.CONFIG),
    ("missing prototypes (relative)", _missing_prototypes, ExitCode.CONFIG),
    ("model not the pinned file", _wrong_model, ExitCode.MODEL_TRUNCATED),
    ("missing TLS CA file", _missing_ca, ExitCode.CONFIG),
    ("outbox folder not writable", _readonly_outbox, ExitCode.IO_ERROR),
]


@pytest.mark.integration
@pytest.mark.parametrize(("name", "setup", "expected"), CASES, ids=[c[0] for c in CASES])
def test_check_config_refuses_exactly_what_run_refuses(
    name: str, setup: Setup, expected: ExitCode, tmp_path: Path, model_path: Path, media_dir: Path
) -> None:
    if name.startswith("outbox") and os.geteuid() == 0:
        pytest.skip("root writes into a 0500 folder: the refusal cannot happen as root")
    folder = tmp_path / "etc"
    folder.mkdir()
    elsewhere = tmp_path / "cwd"  # relative paths must not depend on where the command runs
    elsewhere.mkdir()
    config = folder / "config.toml"
    config.write_text(toml_text(setup(folder, model_path, media_dir / "single_face.jpg")))

    checked = _microexpr(["check-config", "--config", str(config)], elsewhere, tmp_path)
    ran = _microexpr(["run", "--config", str(config), "--no-print-events"], elsewhere, tmp_path)

    assert checked.returncode == int(expected), checked.stderr
    assert ran.returncode == checked.returncode, f"run: {ran.stderr[-2000:]}\ncheck-config: {checked.stderr}"
    assert "Traceback" not in ran.stderr + checked.stderr
    if expected is ExitCode.OK:
        assert _errors(checked.stderr) == []
        assert "1 frame(s), 1 with a face" in ran.stderr  # the relative image was found and read
        assert (folder / "state" / "outbox.sqlite").exists()  # and the relative outbox is the config folder's
        assert not (elsewhere / "state").exists()
    else:
        # run says the first refusal; check-config lists it first (and maybe more)
        assert _errors(ran.stderr) and _errors(checked.stderr)
        assert _errors(checked.stderr)[0].split(" [")[0] == _errors(ran.stderr)[0].split(" [")[0]


def test_an_absent_camera_is_a_note_not_a_refusal(tmp_path: Path, model_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(toml_text({"source": {"uri": "/dev/video-none-here"}, "model": {"path": str(model_path)},
                             "mqtt": {"enabled": False}}))
    checked = _microexpr(["check-config", "--config", str(config)], tmp_path, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "does not exist now; run waits for it" in checked.stdout


def test_relative_paths_are_the_config_folders_for_every_path_key(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    (folder / "protos").mkdir(parents=True)
    (folder / "protos" / "p.json").write_text("{}")
    data = {
        "source": {"uri": "clips/a.mp4"},
        "model": {"path": "m/face.task", "models_dir": "models"},
        "onnx": {"models_dir": "onnx"},
        "engine": {"prototypes": "protos/p.json"},
        "mqtt": {"tls": True, "ca_file": "ca.pem", "cert_file": "c.pem", "key_file": "k.pem"},
        "outbox": {"path": "o.sqlite"},
        "reasoner": {"queue_path": "q.sqlite3"},
    }
    config = cfg.parse_config(data, base_dir=folder, env={})
    paths = {
        "source.uri": Path(config.source.uri), "model.path": config.model.path,
        "model.models_dir": config.model.models_dir, "onnx.models_dir": config.onnx.models_dir,
        "engine.prototypes": config.engine.prototypes, "mqtt.ca_file": config.mqtt.ca_file,
        "mqtt.cert_file": config.mqtt.cert_file, "mqtt.key_file": config.mqtt.key_file,
        "outbox.path": config.outbox.path, "reasoner.queue_path": config.reasoner.queue_path,
    }
    # every path key of the schema is covered here
    path_keys = {key for key in cfg.iter_keys() if key.endswith(("path", "_dir", "_file", "prototypes"))}
    assert path_keys | {"source.uri"} == set(paths)
    for key, value in paths.items():
        assert value is not None and value.is_absolute() and folder in value.parents, (key, value)
    # camera specs and URLs are not paths; replay:FILE is
    for spec in ("0", "12", "/dev/video0", "picamera2", "picamera2:1", "http://cam/stream"):
        assert cfg.resolve_source_uri(spec, folder) == spec
    assert cfg.resolve_source_uri("replay:clip.mp4", folder) == f"replay:{folder / 'clip.mp4'}"
    assert cfg.resolve_source_uri("/abs/clip.mp4", folder) == "/abs/clip.mp4"

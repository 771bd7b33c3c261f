"""Model provisioning: real model bytes, real files, a real loopback HTTP server.

The official URL is pointed at a closed loopback port through
MICROEXPR_MODEL_URL, so no test ever leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from microexpr import models
from microexpr.cli import main
from microexpr.errors import ExitCode, ModelError

SPEC = models.FACE_LANDMARKER


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the user's real models dir or reaches the internet."""
    for name in (models.ENV_MIRROR, models.ENV_MODELS_DIR, "STATE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(models.ENV_URL, f"http://127.0.0.1:{_closed_port()}/face_landmarker.task")
    monkeypatch.setenv(models.ENV_MODELS_DIR, str(tmp_path / "default-models"))
    # The machine may hold a service install in /var/lib: never look there.
    monkeypatch.setattr(models, "SERVICE_MODELS_DIR", tmp_path / "service-models")


@pytest.fixture(scope="session")
def model_bytes(model_path: Path) -> bytes:
    data = model_path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SPEC.sha256, "the shared mirror copy is not the pinned model"
    return data


def _mirror_with(tmp_path: Path, data: bytes) -> Path:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / SPEC.name).write_bytes(data)
    return mirror


def _flip_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _leftovers(models_dir: Path) -> list[Path]:
    return [p for p in models_dir.rglob("*") if p.is_file()] if models_dir.exists() else []


def test_install_from_mirror(tmp_path: Path, model_mirror: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "models"
    assert main(["provision-model", "--mirror", str(model_mirror), "--dir", str(dest), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    installed = dest / "face_landmarker" / "float16-1" / "face_landmarker.task"
    assert out["path"] == str(installed)
    assert out["sha256"] == SPEC.sha256
    assert out["source_kind"] == "mirror"
    assert out["source"] == str(model_mirror / SPEC.name)
    assert out["already_installed"] is False
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == SPEC.sha256
    assert _leftovers(dest) == [installed]  # no temp file left beside it
    assert oct(installed.stat().st_mode & 0o777) == oct(0o644)


def test_second_run_is_idempotent(tmp_path: Path, model_mirror: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "models"
    assert main(["provision-model", "--mirror", str(model_mirror), "--dir", str(dest)]) == 0
    installed = SPEC.install_path(dest)
    before = installed.stat()
    capsys.readouterr()
    # Even with no reachable source the installed, verified file is kept.
    assert main(["provision-model", "--mirror", str(tmp_path / "nowhere"), "--dir", str(dest)]) == 0
    assert "already installed" in capsys.readouterr().out
    after = installed.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_mirror_env_and_default_dir(
    tmp_path: Path, model_mirror: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(models.ENV_MIRROR, str(model_mirror))
    assert main(["provision-model", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["path"] == str(SPEC.install_path(tmp_path / "default-models"))
    assert models.resolve_model_path() == Path(out["path"])


def test_hash_mismatch(tmp_path: Path, model_bytes: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    mirror = _mirror_with(tmp_path, _flip_byte(model_bytes, len(model_bytes) // 2))
    dest = tmp_path / "models"
    code = main(["provision-model", "--mirror", str(mirror), "--dir", str(dest)])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.MODEL_HASH_MISMATCH == 80
    assert len(err.splitlines()) == 1
    last = err.splitlines()[-1]
    assert last.startswith("microexpr: error:") and "sha256" in last and str(mirror / SPEC.name) in last
    assert "Traceback" not in err
    assert _leftovers(dest) == []


def test_truncated_file(tmp_path: Path, model_bytes: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    mirror = _mirror_with(tmp_path, model_bytes[: len(model_bytes) - 1000])
    dest = tmp_path / "models"
    code = main(["provision-model", "--mirror", str(mirror), "--dir", str(dest)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == ExitCode.MODEL_TRUNCATED == 81
    assert f"{SPEC.size - 1000} bytes, expected {SPEC.size}" in last
    assert _leftovers(dest) == []


def test_oversized_file_is_refused(tmp_path: Path, model_bytes: bytes) -> None:
    mirror = _mirror_with(tmp_path, model_bytes + b"\0" * 10)
    assert main(["provision-model", "--mirror", str(mirror), "--dir", str(tmp_path / "m")]) == ExitCode.MODEL_TRUNCATED
    assert _leftovers(tmp_path / "m") == []


def test_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    dest = tmp_path / "models"
    code = main(["provision-model", "--mirror", str(empty), "--dir", str(dest)])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.MODEL_UNAVAILABLE == 69
    assert len(err.splitlines()) == 1
    assert str(empty / SPEC.name) in err and os.environ[models.ENV_URL] in err
    assert not dest.exists()  # no empty version folders left behind


def test_no_source_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(models.ENV_URL, "")  # an empty variable disables the official URL
    assert main(["provision-model", "--dir", str(tmp_path / "m")]) == ExitCode.MODEL_UNAVAILABLE
    assert "no model source" in capsys.readouterr().err


def test_missing_explicit_source_falls_back_to_mirror(
    tmp_path: Path, model_mirror: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "provision-model", "--source", str(tmp_path / "absent.task"),
        "--mirror", str(model_mirror), "--dir", str(tmp_path / "m"), "--json",
    ])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["source_kind"] == "mirror"


def test_bad_mirror_then_good_source_installs(
    tmp_path: Path,
    model_bytes: bytes,
    model_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A corrupt source does not block a good later one; the good one wins."""
    mirror = _mirror_with(tmp_path, _flip_byte(model_bytes, 10))
    monkeypatch.setenv(models.ENV_URL, model_path.as_uri())
    code = main(["provision-model", "--mirror", str(mirror), "--dir", str(tmp_path / "m"), "--json"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == 0 and out["source_kind"] == "official" and out["sha256"] == SPEC.sha256
    assert "skipped model sources" in captured.err and str(mirror / SPEC.name) in captured.err


def test_file_url_and_directory_sources(tmp_path: Path, model_path: Path, model_mirror: Path) -> None:
    assert main(["provision-model", "--source", model_path.as_uri(), "--dir", str(tmp_path / "a")]) == 0
    assert main(["provision-model", "--source", str(model_mirror), "--dir", str(tmp_path / "b")]) == 0
    for sub in ("a", "b"):
        assert models.verify_file(SPEC.install_path(tmp_path / sub)) == SPEC.sha256


def test_unsupported_scheme(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["provision-model", "--source", "ftp://127.0.0.1/x.task", "--dir", str(tmp_path / "m")])
    assert code == ExitCode.USAGE
    assert "unsupported scheme" in capsys.readouterr().err


def test_corrupted_install_is_replaced(tmp_path: Path, model_mirror: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "models"
    installed = SPEC.install_path(dest)
    installed.parent.mkdir(parents=True)
    installed.write_bytes(b"not a model")
    assert main(["provision-model", "--mirror", str(model_mirror), "--dir", str(dest)]) == 0
    assert "installed" in capsys.readouterr().out
    assert models.verify_file(installed) == SPEC.sha256


def test_models_dir_cannot_be_created(tmp_path: Path, model_mirror: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["provision-model", "--mirror", str(model_mirror), "--dir", str(blocker / "models")])
    assert code == ExitCode.IO_ERROR
    assert str(blocker / "models") in capsys.readouterr().err


# --------------------------------------------------------------------------
# A real HTTP server on loopback


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _CutHandler(_QuietHandler):
    """Announces the full length, sends half, then drops the connection."""

    def do_GET(self) -> None:  # noqa: N802
        data = (Path(self.directory) / SPEC.name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


def _serve(handler: type[SimpleHTTPRequestHandler], directory: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http_mirror(model_mirror: Path) -> Iterator[str]:
    yield from _serve(_QuietHandler, model_mirror)


@pytest.fixture
def http_cut(model_mirror: Path) -> Iterator[str]:
    yield from _serve(_CutHandler, model_mirror)


def test_http_source(tmp_path: Path, http_mirror: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"{http_mirror}/{SPEC.name}"
    assert main(["provision-model", "--source", url, "--dir", str(tmp_path / "m"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == url and out["source_kind"] == "explicit"
    assert models.verify_file(Path(out["path"])) == SPEC.sha256


def test_official_url_override(
    tmp_path: Path, http_mirror: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(models.ENV_URL, f"{http_mirror}/{SPEC.name}")
    assert main(["provision-model", "--dir", str(tmp_path / "m"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source_kind"] == "official"


def test_http_404_is_unavailable(tmp_path: Path, http_mirror: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["provision-model", "--source", f"{http_mirror}/missing.task", "--dir", str(tmp_path / "m")])
    assert code == ExitCode.MODEL_UNAVAILABLE
    assert "HTTP 404" in capsys.readouterr().err


def test_http_cut_mid_body_is_truncated(tmp_path: Path, http_cut: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["provision-model", "--source", f"{http_cut}/{SPEC.name}", "--dir", str(tmp_path / "m")])
    assert code == ExitCode.MODEL_TRUNCATED
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert _leftovers(tmp_path / "m") == []


# --------------------------------------------------------------------------
# resolve_model_path: what the tracker calls before loading


def test_resolve_installed_model(tmp_path: Path, model_mirror: Path) -> None:
    assert main(["provision-model", "--mirror", str(model_mirror)]) == 0
    assert models.resolve_model_path() == SPEC.install_path(tmp_path / "default-models")


def test_resolve_not_installed_names_the_command() -> None:
    with pytest.raises(ModelError, match="microexpr provision-model") as exc:
        models.resolve_model_path()
    assert exc.value.exit_code == ExitCode.MODEL_UNAVAILABLE


def test_resolve_refuses_tampered_file(tmp_path: Path, model_bytes: bytes) -> None:
    tampered = tmp_path / "face_landmarker.task"
    tampered.write_bytes(_flip_byte(model_bytes, 1234))
    with pytest.raises(models.ModelHashMismatch) as exc:
        models.resolve_model_path(tampered)
    assert exc.value.exit_code == ExitCode.MODEL_HASH_MISMATCH
    assert str(tampered) in str(exc.value)
    tampered.write_bytes(model_bytes[:100])
    with pytest.raises(models.ModelTruncated):
        models.resolve_model_path(tampered)
    with pytest.raises(ModelError, match="no such file"):
        models.resolve_model_path(tmp_path / "absent.task")


def test_resolve_rechecks_a_replaced_file(tmp_path: Path, model_path: Path, model_bytes: bytes) -> None:
    """The per-process cache must not vouch for a file swapped after a check."""
    target = tmp_path / "model.task"
    shutil.copyfile(model_path, target)
    assert models.resolve_model_path(target) == target
    assert models.resolve_model_path(target) == target  # cached
    bad = tmp_path / "bad.task"
    bad.write_bytes(_flip_byte(model_bytes, 99))
    os.replace(bad, target)
    with pytest.raises(models.ModelHashMismatch):
        models.resolve_model_path(target)


def test_resolve_falls_back_to_service_install(tmp_path: Path, model_mirror: Path) -> None:
    """A user on the appliance finds the model the service installed."""
    assert main(["provision-model", "--mirror", str(model_mirror), "--dir", str(tmp_path / "service-models")]) == 0
    assert models.resolve_model_path() == SPEC.install_path(tmp_path / "service-models")


def test_resolve_tampered_installed_model(tmp_path: Path, model_mirror: Path, model_bytes: bytes) -> None:
    assert main(["provision-model", "--mirror", str(model_mirror)]) == 0
    installed = SPEC.install_path(tmp_path / "default-models")
    bad = tmp_path / "bad"
    bad.write_bytes(_flip_byte(model_bytes, 5000))
    os.replace(bad, installed)
    with pytest.raises(models.ModelHashMismatch, match=str(installed)):
        models.resolve_model_path()


# --------------------------------------------------------------------------
# Where models live


def test_default_models_dir_precedence(tmp_path: Path) -> None:
    assert models.default_models_dir({models.ENV_MODELS_DIR: "/x/m", "STATE_DIRECTORY": "/s"}, euid=0) == Path("/x/m")
    assert models.default_models_dir({"STATE_DIRECTORY": "/var/lib/microexpr:/other"}, euid=1000) == Path(
        "/var/lib/microexpr/models"
    )
    assert models.default_models_dir({}, euid=0) == models.SERVICE_MODELS_DIR
    assert models.default_models_dir({}, euid=0) == tmp_path / "service-models"
    user = models.default_models_dir({"XDG_DATA_HOME": str(tmp_path)}, euid=1000)
    assert user.name == "models" and "microexpr" in user.parts


def test_spec_is_frozen() -> None:
    with pytest.raises(AttributeError):
        SPEC.sha256 = "0" * 64  # type: ignore[misc]
    assert SPEC.install_path(Path("/m")) == Path("/m/face_landmarker/float16-1/face_landmarker.task")


def test_explicit_model_that_is_a_folder_is_named_as_such(
    tmp_path: Path, smile_clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder's st_size must not be reported as a truncated model (exit 81)."""
    with pytest.raises(ModelError, match="is a directory") as exc:
        models.resolve_model_path(tmp_path)
    assert exc.value.exit_code == ExitCode.MODEL_UNAVAILABLE
    assert main(["timeline", str(smile_clip), "--model", str(tmp_path)]) == ExitCode.MODEL_UNAVAILABLE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"microexpr: error: model {tmp_path}: is a directory, not a model file"]


@pytest.mark.parametrize("timeout", ["inf", "-1", "0", "nan", "soon"])
def test_timeout_must_be_a_positive_number(
    timeout: str, tmp_path: Path, model_mirror: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """inf used to overflow in the socket module (internal error, exit 1)."""
    with pytest.raises(SystemExit) as exc:
        main(["provision-model", "--source", "http://127.0.0.1:9/m.task", "--dir", str(tmp_path),
              "--timeout", timeout])
    assert exc.value.code == ExitCode.USAGE
    assert "argument --timeout:" in capsys.readouterr().err
    assert not (tmp_path / "face_landmarker").exists()

"""What ``microexpr run`` refuses before it starts, in one place for ``run`` and ``check-config``.

``check-config`` used to validate the file only, so a configuration it
called valid could still stop ``run`` (``source.uri`` empty, a model not
provisioned, a video that is not there), and the installed unit stayed
failed. Both commands now call :func:`refusals` on the same resolved
configuration: ``run`` raises the first, ``check-config`` lists them all and
exits with the first one's code, so they refuse exactly the same files.

A camera is never opened here: it may be in use by the running daemon, and
a camera that is absent is not a refusal (``run`` waits for it, health
``no_camera``); :func:`notes` says so instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from microexpr.config import Config
from microexpr.errors import ConfigError, MicroexprError
from microexpr.service.options import is_live_spec
from microexpr.tracking import TrackerBackend, resolve_backend

log = logging.getLogger(__name__)

#: What the unit gives the daemon (services/microexpr.service): ``StateDirectory=microexpr``
#: and ``LoadCredential=`` from this folder. ``check-config --as-service`` resolves with these.
SERVICE_STATE_DIR = Path("/var/lib/microexpr")
SERVICE_CREDENTIALS_DIR = Path("/etc/microexpr/credentials")


def service_env() -> dict[str, str]:
    """The environment the systemd unit gives the daemon, as far as paths and secrets go
    (none of the caller's own variables: the service does not see them)."""
    return {"STATE_DIRECTORY": str(SERVICE_STATE_DIR), "CREDENTIALS_DIRECTORY": str(SERVICE_CREDENTIALS_DIR)}


def no_source_error(origin: str | None) -> ConfigError:
    where = f" in {origin}" if origin else ""
    return ConfigError(
        f'source.uri: no source configured{where}; set it to a camera ("0", "/dev/video0", "picamera2"), '
        "a video file or an image folder, or pass --source"
    )


def refusals(config: Config, *, origin: str | None = None, as_service: bool = False) -> list[MicroexprError]:
    """Every reason ``run`` would stop at start-up with this (resolved, valid) configuration.

    In the order ``run`` meets them: the source, the model, the MQTT TLS
    files, the outbox. ``as_service``: the check runs as another user than
    the service's, so file permissions of state paths are not judged.
    """
    problems: list[MicroexprError] = []
    source = _source_refusal(config, origin)
    if source is not None:
        problems.append(source)
    model = _model_refusal(config, as_service=as_service)
    if model is not None:
        problems.append(model)
    problems.extend(_tls_refusals(config))
    if not as_service:
        outbox = _writable_refusal("outbox.path", config.outbox.path)
        if outbox is not None:
            problems.append(outbox)
    return problems


def notes(config: Config, *, as_service: bool = False) -> list[str]:
    """Valid, and ``run`` starts, but worth knowing."""
    out: list[str] = []
    uri = config.source.uri
    if uri and is_live_spec(uri):
        where = f"/dev/video{uri}" if uri.isdigit() else uri
        if where.startswith("/dev/") and not Path(where).exists():
            out.append(f"source.uri {uri!r}: {where} does not exist now; run waits for it (health no_camera) — "
                       "plug a camera in or set source.uri to another one or to a file")
    if as_service:
        out.append("--as-service: paths as the systemd unit resolves them; file permissions are not checked "
                   "(this command does not run as the service's user)")
    return out


def _source_refusal(config: Config, origin: str | None) -> MicroexprError | None:
    uri = config.source.uri
    if not uri:
        return no_source_error(origin)
    if is_live_spec(uri):
        return None
    from microexpr.capture import open_source

    s = config.source
    try:
        # the same call the daemon makes at start; a file is opened and closed, never read through
        opened = open_source(uri, fps=s.fps or None, loop=s.loop, width=s.width or None, height=s.height or None)
    except MicroexprError as exc:
        return exc
    try:
        opened.close()
    except Exception:  # closing a probe must not turn into a refusal
        log.debug("closing the probed source %s failed", uri, exc_info=True)
    return None


def _model_refusal(config: Config, *, as_service: bool) -> MicroexprError | None:
    """The model the daemon would load, found and verified against its pin (as ``build_pipeline`` does)."""
    try:
        if resolve_backend(config.tracker.backend) is TrackerBackend.ONNX:
            from microexpr.tracking.onnx import load_model_files

            load_model_files(config.onnx.variant, config.onnx.models_dir)
            return None
        from microexpr.models import FACE_LANDMARKER, resolve_model_path

        explicit = config.model.path
        if explicit is None and config.model.models_dir is not None:
            installed = FACE_LANDMARKER.install_path(config.model.models_dir)
            if installed.exists() or as_service:
                explicit = installed
        resolve_model_path(explicit)
    except MicroexprError as exc:
        return exc
    return None


def _tls_refusals(config: Config) -> list[MicroexprError]:
    mqtt = config.mqtt
    if not (mqtt.enabled and mqtt.tls):
        return []
    return [
        ConfigError(f"mqtt.{key}: no such file {value}")
        for key, value in (("ca_file", mqtt.ca_file), ("cert_file", mqtt.cert_file), ("key_file", mqtt.key_file))
        if value is not None and not Path(value).is_file()
    ]


def _writable_refusal(key: str, path: Path | None) -> MicroexprError | None:
    """A state file this user could not create or write (the daemon would fail opening it)."""
    if path is None:
        return None
    from microexpr.outbox import OutboxError
    from microexpr.sqlitefile import StorageReadOnlyError

    target = Path(path)
    if target.exists():
        if target.is_dir():
            return OutboxError(f"{target}: cannot open queue: is a directory ({key})")
        where, ok = target, os.access(target, os.R_OK | os.W_OK)
    else:
        where = target.parent
        while not where.exists() and where != where.parent:
            where = where.parent
        ok = where.is_dir() and os.access(where, os.W_OK | os.X_OK)
    # The daemon's own refusal for this (sqlitefile.check_writable): its own exit
    # code, 73, so a read-only mount is not mistaken for a corrupt queue.
    return None if ok else StorageReadOnlyError(
        f"{target}: cannot write the queue: {where} is read-only or not writable by this user ({key})")


def check(config: Config, *, origin: str | None = None) -> None:
    """Raise the first refusal (``run``); log the notes."""
    for note in notes(config):
        log.warning("%s", note)
    problems = refusals(config, origin=origin)
    if problems:
        raise problems[0]

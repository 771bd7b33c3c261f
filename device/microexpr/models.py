"""Model provisioning: fetch, verify and install the pinned FaceLandmarker bundle.

The tracker loads a model only through :func:`resolve_model_path`, which
checks the sha256 pin every time (the bundle is 3.7 MB, hashing it costs
milliseconds), so a file swapped or damaged on disk after installation is
refused rather than run. :func:`provision` fills the versioned model
directory from the first source that can deliver the exact pinned bytes.

Where models live (first that applies):

1. an explicit directory (``--dir``),
2. ``$MICROEXPR_MODELS_DIR``,
3. ``$STATE_DIRECTORY/models`` when systemd runs us with ``StateDirectory=``,
   or ``/var/lib/microexpr/models`` when running as root,
4. the user's data directory (``platformdirs.user_data_dir("microexpr")/models``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from stat import S_ISDIR
from typing import BinaryIO

from microexpr.errors import ExitCode, MicroexprError, ModelError

log = logging.getLogger(__name__)

ENV_MODELS_DIR = "MICROEXPR_MODELS_DIR"
ENV_MIRROR = "MICROEXPR_MODEL_MIRROR"
ENV_URL = "MICROEXPR_MODEL_URL"
SERVICE_MODELS_DIR = Path("/var/lib/microexpr/models")
PROVISION_HINT = "run `microexpr provision-model`"
_CHUNK = 1 << 16

#: Called with the number of bytes just copied (drives an optional progress bar).
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model file pinned by content: the only bytes we will ever load."""

    family: str
    name: str
    version: str
    sha256: str
    size: int
    url: str

    @property
    def version_dir(self) -> str:
        """The version as one path component (``float16/1`` -> ``float16-1``)."""
        return self.version.replace("/", "-")

    def install_path(self, models_dir: Path) -> Path:
        """Where this model lives inside ``models_dir``; versioned so that a
        future pin can be installed beside this one and rolled back."""
        return models_dir / self.family / self.version_dir / self.name


FACE_LANDMARKER = ModelSpec(
    family="face_landmarker",
    name="face_landmarker.task",
    version="float16/1",
    sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    size=3_758_596,
    url=(
        "https://storage.googleapis.com/mediapipe-models/face_landmarker/"
        "face_landmarker/float16/1/face_landmarker.task"
    ),
)


class ModelHashMismatch(ModelError):
    """The bytes are the right length but not the pinned content."""

    exit_code = ExitCode.MODEL_HASH_MISMATCH


class ModelTruncated(ModelError):
    """The file is shorter or longer than the pinned size (a cut download)."""

    exit_code = ExitCode.MODEL_TRUNCATED


class SourceKind(StrEnum):
    """Where the installed bytes came from, reported by ``--json``."""

    EXPLICIT = "explicit"
    MIRROR = "mirror"
    OFFICIAL = "official"
    INSTALLED = "installed"


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """The outcome of :func:`provision`."""

    path: Path
    sha256: str
    source: str
    kind: SourceKind
    already_installed: bool


# --------------------------------------------------------------------------
# Where models live


def default_models_dir(
    env: Mapping[str, str] | None = None, *, euid: int | None = None
) -> Path:
    """The models directory for this process (see the module docstring)."""
    env = os.environ if env is None else env
    explicit = env.get(ENV_MODELS_DIR)
    if explicit:
        return Path(explicit).expanduser()
    state = env.get("STATE_DIRECTORY")
    if state:
        # systemd passes a colon-separated list when several are configured.
        return Path(state.split(":")[0]) / "models"
    if euid is None:
        euid = os.geteuid() if hasattr(os, "geteuid") else -1
    if euid == 0:
        return SERVICE_MODELS_DIR
    from platformdirs import user_data_dir

    return Path(user_data_dir("microexpr")) / "models"


def _search_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """Directories :func:`resolve_model_path` looks in: ours, then the
    service's, so an interactive user on the appliance finds the model the
    service installed."""
    dirs = [default_models_dir(env)]
    if SERVICE_MODELS_DIR not in dirs:
        dirs.append(SERVICE_MODELS_DIR)
    return dirs


# --------------------------------------------------------------------------
# Verification


def _check(path: Path, spec: ModelSpec, size: int, digest: str, what: str) -> None:
    """Raise the error that names what is wrong: size first, then content."""
    if size != spec.size:
        raise ModelTruncated(
            f"{what} {path}: {size} bytes, expected {spec.size} "
            f"(truncated or not the pinned {spec.name} {spec.version})"
        )
    if digest != spec.sha256:
        raise ModelHashMismatch(
            f"{what} {path}: sha256 {digest} is not the pinned {spec.sha256}"
        )


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def verify_file(path: Path, spec: ModelSpec = FACE_LANDMARKER, *, what: str = "model") -> str:
    """Check ``path`` against the pin and return its sha256.

    Raises ModelError if it is missing or unreadable, ModelTruncated on a
    wrong size (checked from ``stat`` before hashing), ModelHashMismatch on
    wrong content.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ModelError(f"{what} {path}: no such file; {PROVISION_HINT}") from None
    except OSError as exc:
        raise ModelError(f"{what} {path}: cannot read: {exc.strerror}") from None
    # Before the size check: a folder's st_size (4096) would otherwise be
    # reported as a truncated model (exit 81) instead of a wrong path.
    if S_ISDIR(stat.st_mode):
        raise ModelError(f"{what} {path}: is a directory, not a model file")
    if stat.st_size != spec.size:
        _check(path, spec, stat.st_size, "", what)
    try:
        size, digest = _hash_file(path)
    except OSError as exc:
        raise ModelError(f"{what} {path}: cannot read: {exc.strerror}") from None
    _check(path, spec, size, digest, what)
    return digest


_verified_lock = threading.Lock()
_verified: set[tuple[object, ...]] = set()


def _verify_cached(path: Path, spec: ModelSpec) -> None:
    """verify_file, remembered per (path, inode, size, mtime, ctime) within
    this process: several trackers in one process should not hash the same
    file again, while a replaced or rewritten file changes the key and is
    checked again (ctime cannot be set back by a user, unlike mtime)."""
    try:
        stat = path.stat()
    except OSError:
        stat = None
    key = (
        (str(path.resolve()), spec.sha256, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if stat
        else None
    )
    if key is not None:
        with _verified_lock:
            if key in _verified:
                return
    verify_file(path, spec)
    if key is not None:
        with _verified_lock:
            _verified.add(key)


def resolve_model_path(explicit: Path | None = None, spec: ModelSpec = FACE_LANDMARKER) -> Path:
    """The verified model file the tracker may load.

    With ``explicit`` only that file is considered (and refused if it is not
    the pinned content). Otherwise the installed copy is looked up in the
    models directory (then the service's). Never returns an unverified path.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        _verify_cached(path, spec)
        return path
    searched = []
    for models_dir in _search_dirs():
        path = spec.install_path(models_dir)
        searched.append(str(path))
        if path.exists():
            _verify_cached(path, spec)
            return path
    raise ModelError(f"model {spec.name} not installed (looked in {', '.join(searched)}); {PROVISION_HINT}")


# --------------------------------------------------------------------------
# Sources


class _Unreachable(Exception):
    """A source that cannot deliver at all; the next source is tried."""


@dataclass(frozen=True, slots=True)
class _Source:
    kind: SourceKind
    location: str  # a path or a URL, as shown to the user

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))


def _local_path(text: str) -> Path:
    if text.startswith("file:"):
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise MicroexprError(f"--source {text}: file URLs must be local", exit_code=ExitCode.USAGE)
        return Path(urllib.request.url2pathname(parsed.path))
    return Path(text).expanduser()


def _plan_sources(
    spec: ModelSpec,
    source: str | Path | None,
    mirror: Path | None,
    url: str | None,
) -> list[_Source]:
    plan: list[_Source] = []
    if source is not None:
        text = str(source)
        scheme = urllib.parse.urlparse(text).scheme.lower()
        if scheme in ("http", "https"):
            plan.append(_Source(SourceKind.EXPLICIT, text))
        elif scheme in ("", "file") or len(scheme) == 1:  # len 1: a Windows drive letter
            path = _local_path(text)
            if path.is_dir():
                path = path / spec.name
            plan.append(_Source(SourceKind.EXPLICIT, str(path)))
        else:
            raise MicroexprError(
                f"--source {text}: unsupported scheme {scheme!r} (use a path, file://, http:// or https://)",
                exit_code=ExitCode.USAGE,
            )
    if mirror is not None:
        flat = mirror / spec.name
        versioned = spec.install_path(mirror)
        # A mirror may be a plain folder or a copy of another models dir.
        chosen = versioned if not flat.exists() and versioned.exists() else flat
        plan.append(_Source(SourceKind.MIRROR, str(chosen)))
    if url:
        # The official URL may be redirected (tests, an offline site) to a file.
        location = str(_local_path(url)) if url.startswith("file:") else url
        plan.append(_Source(SourceKind.OFFICIAL, location))
    return plan


@contextlib.contextmanager
def _open_source(src: _Source, timeout: float) -> Iterator[BinaryIO]:
    if src.is_url:
        request = urllib.request.Request(src.location, headers={"User-Agent": "microexpr-provision"})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (scheme checked)
        except urllib.error.HTTPError as exc:
            raise _Unreachable(f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Unreachable(str(reason)) from None
        except ValueError as exc:  # a malformed URL (bad port, bad host)
            raise _Unreachable(f"invalid URL: {exc}") from None
        with response:
            yield response
        return
    path = Path(src.location)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise _Unreachable("no such file") from None
    except IsADirectoryError:
        raise _Unreachable("is a directory") from None
    except OSError as exc:
        raise _Unreachable(exc.strerror or str(exc)) from None
    with handle:
        yield handle


def _fetch_to(
    src: _Source, spec: ModelSpec, dest: Path, timeout: float, progress: ProgressCallback | None
) -> str:
    """Copy one source into a temp file beside ``dest``, verify, rename.

    The temp file is removed on any failure, so nothing unverified ever sits
    at ``dest``; os.replace makes the switch atomic for a concurrent reader.
    """
    with _open_source(src, timeout) as stream:
        declared = getattr(stream, "headers", {}).get("Content-Length") if src.is_url else None
        if declared is not None and declared.isdigit() and int(declared) != spec.size:
            raise ModelTruncated(
                f"source {src.location}: announces {declared} bytes, expected {spec.size} "
                f"(not the pinned {spec.name} {spec.version})"
            )
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        chunk = stream.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        # A connection cut mid-body: what arrived is short.
                        log.debug("reading %s stopped after %d bytes: %s", src.location, size, exc)
                        break
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > spec.size:  # never buffer an unbounded body
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if size != spec.size or digest.hexdigest() != spec.sha256:
                _raise_for_source(src, spec, size, digest.hexdigest())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
    _fsync_dir(dest.parent)
    return digest.hexdigest()


def _raise_for_source(src: _Source, spec: ModelSpec, size: int, digest: str) -> None:
    if size != spec.size:
        detail = f"more than {spec.size}" if size > spec.size else str(size)
        raise ModelTruncated(
            f"source {src.location}: {detail} bytes, expected {spec.size} "
            f"(truncated or not the pinned {spec.name} {spec.version})"
        )
    raise ModelHashMismatch(f"source {src.location}: sha256 {digest} is not the pinned {spec.sha256}")


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _make_dir(directory: Path) -> list[Path]:
    """Create ``directory``; return the folders that did not exist, deepest first."""
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        hint = " (run as the service user, or pass --dir)" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
        raise MicroexprError(
            f"models directory {directory}: cannot create: {exc.strerror}{hint}", exit_code=ExitCode.IO_ERROR
        ) from None
    if not os.access(directory, os.W_OK):
        raise MicroexprError(
            f"models directory {directory}: not writable (run as the service user, or pass --dir)",
            exit_code=ExitCode.IO_ERROR,
        )
    return created


def provision(
    spec: ModelSpec = FACE_LANDMARKER,
    *,
    models_dir: Path | None = None,
    source: str | Path | None = None,
    mirror: Path | None = None,
    url: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    progress: ProgressCallback | None = None,
) -> ProvisionResult:
    """Install ``spec`` into ``models_dir`` and return where it is.

    Sources are tried in order: ``source``, ``mirror`` (default
    ``$MICROEXPR_MODEL_MIRROR``), then ``url`` (default
    ``$MICROEXPR_MODEL_URL``, else the official URL; an empty variable
    disables it). A source that cannot be reached is skipped; one that
    delivers wrong bytes is skipped too, with a warning, and if no source
    succeeds the most telling error is raised: wrong content before
    "unreachable". An already installed, verified file is kept.
    """
    env = os.environ if env is None else env
    models_dir = models_dir if models_dir is not None else default_models_dir(env)
    if mirror is None and env.get(ENV_MIRROR):
        mirror = Path(env[ENV_MIRROR]).expanduser()
    if url is None:
        url = env.get(ENV_URL, spec.url)
    dest = spec.install_path(models_dir)

    if dest.exists():
        try:
            digest = verify_file(dest, spec, what="installed model")
        except ModelError as exc:
            log.warning("%s; removing it and installing again", exc)
            _remove_bad(dest)
        else:
            return ProvisionResult(dest, digest, str(dest), SourceKind.INSTALLED, True)

    plan = _plan_sources(spec, source, mirror, url)
    if not plan:
        raise ModelError(f"no model source: pass --source or --mirror, or set {ENV_MIRROR} or {ENV_URL}")
    created = _make_dir(dest.parent)
    content_error: ModelError | None = None
    unreachable: list[str] = []
    skipped: list[str] = []
    for src in plan:
        log.debug("fetching %s from %s (%s)", spec.name, src.location, src.kind.value)
        try:
            digest = _fetch_to(src, spec, dest, timeout, progress)
        except _Unreachable as exc:
            log.debug("source %s unreachable: %s", src.location, exc)
            unreachable.append(f"{src.location} ({exc})")
            skipped.append(f"{src.location} ({exc})")
            continue
        except (ModelHashMismatch, ModelTruncated) as exc:
            log.debug("%s", exc)
            content_error = content_error or exc
            skipped.append(str(exc))
            continue
        except OSError as exc:
            raise MicroexprError(
                f"models directory {dest.parent}: cannot write: {exc.strerror}", exit_code=ExitCode.IO_ERROR
            ) from None
        log.debug("installed %s (sha256 %s) at %s", spec.name, digest, dest)
        if skipped:  # on failure the raised error says it; on success, say it once here
            log.warning("skipped model sources: %s", "; ".join(skipped))
        return ProvisionResult(dest, digest, src.location, src.kind, False)
    for directory in created:  # leave no empty version folders behind
        with contextlib.suppress(OSError):
            directory.rmdir()
    if content_error is not None:
        raise content_error
    raise ModelError(f"no model source reachable: {'; '.join(unreachable)}")


def _remove_bad(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise MicroexprError(
            f"installed model {path}: fails verification and cannot be removed: {exc.strerror}",
            exit_code=ExitCode.IO_ERROR,
        ) from None

"""Opening the daemon's SQLite files safely: private, checked, and recovered when corrupt.

The outbox and the reasoner queue live on an appliance's SD card, which
fills, wears out and loses power mid-write. An unattended device must never
stop for good because one of those files is damaged, so on opening:

* the folder is made private (0700) and the database 0600, whoever runs the
  daemon: events are personal data, and the unit's ``UMask=0077`` covers
  only the service, not ``microexpr run`` started by hand;
* a location that cannot be written (read-only mount, no permission) is its
  own error, :class:`StorageReadOnlyError` (exit 73), so it is not mistaken
  for corruption and nobody deletes a good file to "fix" it;
* ``PRAGMA quick_check`` runs (O(N) in pages, no index cross-check: cheap
  enough for a Pi at start-up; the full ``integrity_check`` is what
  ``quick_check`` skips). A file SQLite calls corrupt or "not a database" is
  moved aside as ``<name>.corrupt-<UTC time>`` — never deleted, so a person
  can still look at it — with its ``-wal``/``-shm``, the number of rows it
  held is logged when it can still be read, and a fresh file is created.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from microexpr.errors import ExitCode, MicroexprError

log = logging.getLogger(__name__)

#: SQLite primary result codes (sqlite3.h) that mean "this file is damaged".
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
SQLITE_READONLY = 8
SQLITE_FULL = 13
SQLITE_IOERR = 10
#: Files SQLite keeps next to a WAL-mode database.
SIDE_FILES = ("-wal", "-shm", "-journal")


class StorageError(MicroexprError):
    """A state file cannot be opened, read or written."""

    exit_code = ExitCode.IO_ERROR


class StorageReadOnlyError(StorageError):
    """The state location cannot be written: read-only mount or no permission."""

    exit_code = ExitCode.CANT_CREATE


class CorruptDatabase(Exception):
    """Internal: the file failed to open as a database or failed ``quick_check``."""


def primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_corruption(exc: sqlite3.Error) -> bool:
    return primary_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)


def is_read_only(exc: sqlite3.Error) -> bool:
    return primary_code(exc) == SQLITE_READONLY


def private_dir(folder: Path) -> None:
    """Create ``folder`` 0700, or tighten an existing one we own.

    A folder that is shared on purpose (sticky bit, like /tmp) or owned by
    someone else is left alone: chmod-ing /var/tmp because a database was
    put there would break the machine.
    """
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
        return
    info = folder.stat()
    if info.st_uid != os.geteuid() or info.st_mode & stat.S_ISVTX:
        return
    if stat.S_IMODE(info.st_mode) & 0o077:
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)
            log.info("%s: made private (0700)", folder)


def private_files(path: Path) -> None:
    """The database and its side files 0600 (SQLite copies the database's mode to them)."""
    for candidate in (path, *(path.with_name(path.name + s) for s in SIDE_FILES)):
        with contextlib.suppress(OSError):
            info = candidate.stat()
            if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077:
                os.chmod(candidate, 0o600)


def check_writable(path: Path, what: str) -> None:
    """Raise :class:`StorageReadOnlyError` when ``path`` (or its folder) cannot be written."""
    folder = path.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StorageReadOnlyError(
            f"{path}: cannot write the {what}: folder {folder} is read-only or not writable by this user"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise StorageReadOnlyError(f"{path}: cannot write the {what}: the file is read-only for this user")


def prepare(path: Path, what: str) -> None:
    """Private folder, writable location, a 0600 file: call before connecting."""
    try:
        private_dir(path.parent)
    except OSError as exc:
        if not path.parent.exists():
            raise StorageReadOnlyError(f"{path}: cannot create the folder for the {what}: {exc.strerror}") from None
    check_writable(path, what)
    if not path.exists():
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StorageError(f"{path}: cannot create the {what}: {exc.strerror}") from None
    private_files(path)


def moved_aside_name(path: Path, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return candidate


def move_aside(path: Path) -> Path:
    """Rename a damaged database and its side files; returns the new name of the database."""
    target = moved_aside_name(path)
    os.replace(path, target)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return target


def readable_rows(path: Path, table: str) -> int | None:
    """Rows ``table`` still holds in a damaged file, when SQLite can count them."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        db.close()


def quick_check(db: sqlite3.Connection) -> str:
    """``"ok"`` or SQLite's first complaint."""
    rows = db.execute("PRAGMA quick_check(1)").fetchall()
    return str(rows[0][0]) if rows else "no answer"


def open_checked(
    path: Path,
    *,
    what: str,
    table: str,
    setup: Callable[[sqlite3.Connection], None],
    error: type[MicroexprError] = StorageError,
) -> sqlite3.Connection:
    """Connect, check and set up ``path``; a corrupt file is moved aside and recreated once.

    ``setup`` creates the schema (it may raise ``MicroexprError`` for a
    layout this version cannot read: that is not corruption and is raised).
    ``error`` is the class raised for other failures (the caller's own).
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: cannot open the {what}: it is a folder, not a database file")
    prepare(path, what)
    try:
        return _connect(path, what, setup, error)
    except CorruptDatabase as exc:
        held = readable_rows(path, table)
        try:
            aside = move_aside(path)
        except OSError as move_exc:
            raise error(f"{path}: the {what} is corrupt ({exc}) and cannot be moved aside: {move_exc}") from None
        log.error(
            "%s: the %s is corrupt (%s); moved aside to %s (%s), starting a fresh one",
            path, what, exc, aside.name,
            f"it held {held} row(s)" if held is not None else "its rows could not be counted",
        )
    prepare(path, what)
    try:
        return _connect(path, what, setup, error)
    except CorruptDatabase as exc:  # a fresh file that is corrupt: the medium itself fails
        raise error(f"{path}: a freshly created {what} fails its check ({exc}): the storage is failing") from None


def _connect(
    path: Path, what: str, setup: Callable[[sqlite3.Connection], None], error: type[MicroexprError]
) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    except sqlite3.Error as exc:
        raise error(f"{path}: cannot open the {what}: {exc}") from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        verdict = quick_check(db)
        if verdict != "ok":
            raise CorruptDatabase(f"quick_check: {verdict}")
        setup(db)
    except sqlite3.Error as exc:
        db.close()
        if is_corruption(exc):
            raise CorruptDatabase(str(exc)) from None
        if is_read_only(exc):
            raise StorageReadOnlyError(f"{path}: cannot write the {what}: {exc}") from None
        raise error(f"{path}: cannot open the {what}: {exc}") from None
    except BaseException:
        db.close()
        raise
    private_files(path)
    return db

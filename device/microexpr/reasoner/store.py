"""The reasoner's durable state in one SQLite file: queue, cache, budget.

* ``queue``: one row per ambiguous episode, holding only its AU evidence
  (JSON). A row is pending until answered; the answer is written into the
  row, handed to the ``on_refined`` callback, and the row is deleted only
  after the callback returned, so a crash between the API answer and the
  outbox loses nothing.
* ``cache``: answers by quantised AU signature, bounded (least recently used
  evicted), so identical evidence is never paid for twice, across restarts.
* ``budget``: requests and tokens spent per UTC day, so a restart (or a
  crash loop) cannot reset the daily cap.

WAL journal with ``synchronous=NORMAL``: a commit costs no fsync (the camera
loop's ``submit`` stays cheap) and survives a process crash; a power cut may
lose the last commits before a checkpoint, which for refinements of already
published events is an accepted trade.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from microexpr import sqlitefile
from microexpr.errors import ExitCode

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    evidence TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    invalid_attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    refinement TEXT
);
CREATE INDEX IF NOT EXISTS queue_pending ON queue (due_at, id) WHERE refinement IS NULL;
CREATE TABLE IF NOT EXISTS cache (
    signature TEXT PRIMARY KEY,
    answer TEXT NOT NULL,
    created_at REAL NOT NULL,
    used_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_used ON cache (used_at);
CREATE TABLE IF NOT EXISTS budget (
    day TEXT PRIMARY KEY,
    requests INTEGER NOT NULL,
    tokens INTEGER NOT NULL
);
"""


class StoreError(sqlitefile.StorageError):
    """The reasoner's SQLite file cannot be opened or written."""

    exit_code = ExitCode.IO_ERROR


class Enqueued(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  #: this event id is already queued
    FULL = "full"  #: max_queue rows pending: refused


@dataclass(frozen=True, slots=True)
class QueueItem:
    id: int
    event_id: str
    evidence: str
    attempts: int
    invalid_attempts: int
    enqueued_at: float


class ReasonerStore:
    """Thread-safe access to the file (one connection, one lock; every
    operation is a short transaction, never held across network I/O)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

        def setup(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.path}: reasoner store schema {row[0]}, this version reads {SCHEMA_VERSION}")

        # Private, checked, moved aside and recreated when corrupt (sqlitefile).
        self._db: sqlite3.Connection | None = sqlitefile.open_checked(
            self.path, what="reasoner queue", table="queue", setup=setup, error=StoreError
        )
        try:
            self._pending, self._answered = self._count()
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"{self.path}: cannot open the reasoner queue: {exc}") from exc
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def __enter__(self) -> ReasonerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction under the lock (other processes on the
        same file, such as ``microexpr eval``, are serialised by SQLite)."""
        with self._lock:
            if self._db is None:
                raise StoreError(f"{self.path}: reasoner store is closed")
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: {exc}") from exc
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _count(self) -> tuple[int, int]:
        assert self._db is not None
        pending, answered = self._db.execute(
            "SELECT COALESCE(SUM(refinement IS NULL), 0), COALESCE(SUM(refinement IS NOT NULL), 0) FROM queue"
        ).fetchone()
        return int(pending), int(answered)

    # -- queue ----------------------------------------------------------------

    def enqueue(self, event_id: str, evidence: str, *, now: float, max_queue: int) -> Enqueued:
        with self._tx() as db:
            if self._pending >= max_queue:
                return Enqueued.FULL
            cur = db.execute(
                "INSERT OR IGNORE INTO queue (event_id, evidence, enqueued_at, due_at) VALUES (?, ?, ?, ?)",
                (event_id, evidence, now, now),
            )
            if cur.rowcount == 0:
                return Enqueued.DUPLICATE
            self._pending += 1
            return Enqueued.QUEUED

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def answered_count(self) -> int:
        return self._answered

    def claim(self, *, now: float, exclude: Sequence[int]) -> QueueItem | None:
        """The oldest pending row that is due and not being worked on."""
        marks = ",".join("?" * len(exclude))
        where = f"AND id NOT IN ({marks})" if exclude else ""
        with self._tx() as db:
            row = db.execute(
                "SELECT id, event_id, evidence, attempts, invalid_attempts, enqueued_at FROM queue "
                f"WHERE refinement IS NULL AND due_at <= ? {where} ORDER BY due_at, id LIMIT 1",
                (now, *exclude),
            ).fetchone()
        return None if row is None else QueueItem(*row)

    def next_due(self, *, exclude: Sequence[int]) -> float | None:
        marks = ",".join("?" * len(exclude))
        where = f"AND id NOT IN ({marks})" if exclude else ""
        with self._tx() as db:
            row = db.execute(
                f"SELECT MIN(due_at) FROM queue WHERE refinement IS NULL {where}", tuple(exclude)
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def reschedule(self, item_id: int, *, due_at: float, error: str, invalid: bool) -> int:
        """Record a failed attempt; returns the row's invalid-attempt count."""
        with self._tx() as db:
            db.execute(
                "UPDATE queue SET attempts = attempts + 1, invalid_attempts = invalid_attempts + ?, "
                "due_at = ?, last_error = ? WHERE id = ?",
                (1 if invalid else 0, due_at, error, item_id),
            )
            row = db.execute("SELECT invalid_attempts FROM queue WHERE id = ?", (item_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def answer(self, item_id: int, refinement: str) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE queue SET refinement = ?, attempts = attempts + 1 WHERE id = ? AND refinement IS NULL",
                (refinement, item_id),
            )
            if cur.rowcount:
                self._pending -= 1
                self._answered += 1

    def answered(self, *, limit: int = 100) -> list[tuple[int, str]]:
        """Answers whose delivery to the callback is still outstanding."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, refinement FROM queue WHERE refinement IS NOT NULL ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [(int(i), str(r)) for i, r in rows]

    def delete(self, item_id: int) -> None:
        """Drop a row: delivered, or given up."""
        with self._tx() as db:
            row = db.execute("SELECT refinement IS NULL FROM queue WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return
            db.execute("DELETE FROM queue WHERE id = ?", (item_id,))
            if row[0]:
                self._pending -= 1
            else:
                self._answered -= 1

    # -- cache ----------------------------------------------------------------

    def cache_get(self, signature: str, *, now: float) -> str | None:
        with self._tx() as db:
            row = db.execute("SELECT answer FROM cache WHERE signature = ?", (signature,)).fetchone()
            if row is not None:
                db.execute("UPDATE cache SET used_at = ? WHERE signature = ?", (now, signature))
        return None if row is None else str(row[0])

    def cache_put(self, signature: str, answer: str, *, now: float, limit: int) -> None:
        if limit <= 0:
            return
        with self._tx() as db:
            db.execute(
                "INSERT INTO cache (signature, answer, created_at, used_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (signature) DO UPDATE SET answer = excluded.answer, used_at = excluded.used_at",
                (signature, answer, now, now),
            )
            db.execute(
                "DELETE FROM cache WHERE signature IN (SELECT signature FROM cache ORDER BY used_at DESC "
                "LIMIT -1 OFFSET ?)",
                (limit,),
            )

    def cache_size(self) -> int:
        with self._tx() as db:
            return int(db.execute("SELECT COUNT(*) FROM cache").fetchone()[0])

    # -- budget ---------------------------------------------------------------

    def reserve(self, day: str, *, tokens: int, max_requests: int, max_tokens: int) -> bool:
        """Atomically take one request and ``tokens`` from today's budget, or
        take nothing and return False when either cap would be passed."""
        with self._tx() as db:
            row = db.execute("SELECT requests, tokens FROM budget WHERE day = ?", (day,)).fetchone()
            used_requests, used_tokens = (0, 0) if row is None else (int(row[0]), int(row[1]))
            if used_requests + 1 > max_requests or used_tokens + tokens > max_tokens:
                return False
            db.execute(
                "INSERT INTO budget (day, requests, tokens) VALUES (?, 1, ?) ON CONFLICT (day) DO UPDATE SET "
                "requests = requests + 1, tokens = tokens + excluded.tokens",
                (day, tokens),
            )
            db.execute("DELETE FROM budget WHERE day < date(?, '-31 days')", (day,))
            return True

    def adjust_tokens(self, day: str, delta: int) -> None:
        """Replace the reserved estimate by the reported usage (delta may be <0)."""
        if delta == 0:
            return
        with self._tx() as db:
            db.execute("UPDATE budget SET tokens = MAX(0, tokens + ?) WHERE day = ?", (delta, day))

    def usage(self, day: str) -> tuple[int, int]:
        with self._tx() as db:
            row = db.execute("SELECT requests, tokens FROM budget WHERE day = ?", (day,)).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

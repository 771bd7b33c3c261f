"""Durable, bounded SQLite queues: the MQTT outbox (and the reasoner's queue).

Nothing spotted may be lost to a broker outage, a SIGKILL or a power cut, so
an event is committed here *before* anyone tries to publish it, and deleted
only when the broker has acknowledged it (PUBACK). On start the publisher
replays whatever is left.

Durability choice: WAL journal with ``synchronous=FULL`` by default. In WAL
mode ``NORMAL`` survives a crash of the process but a power cut can roll
back the last commits (the WAL is not fsynced at each commit); ``FULL``
fsyncs the WAL on every commit, so a ``put()`` that returned is on the
storage medium. Events arrive a few times a minute, so one fsync each is
cheap even on an SD card. A queue whose items can be recomputed may pass
``synchronous="NORMAL"``. Deletions (after PUBACK) and attempt counts are
committed with ``NORMAL`` whatever the level: losing one of those to a power
cut only means the message is sent again (same id), never lost, and it
keeps an fsync off paho's acknowledgement path and off the next ``put()``.

When full, the policy is explicit (:class:`WhenFull`): ``drop_oldest``
deletes the oldest item to make room (logged, counted in ``dropped``),
``reject_new`` refuses the new item with :class:`~microexpr.errors.PublishError`.

Thread safety: one connection per queue, guarded by a lock; the inference
thread puts, paho's network thread deletes on PUBACK, the pump thread reads.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, TypeVar

from microexpr import sqlitefile
from microexpr.errors import ExitCode, PublishError

log = logging.getLogger(__name__)

Synchronous = Literal["NORMAL", "FULL", "EXTRA"]
_T = TypeVar("_T")
#: WAL pages before an automatic checkpoint (SQLite's default is 1000, 4 MB):
#: smaller keeps the ``-wal`` file small on an SD card; a checkpoint of a few
#: hundred kilobytes costs little at a few events a minute.
WAL_AUTOCHECKPOINT_PAGES = 100
#: Bytes the ``-wal`` file is truncated to after a checkpoint (it otherwise keeps its high-water size).
WAL_SIZE_LIMIT = 1024 * 1024

#: On-disk layout version (``PRAGMA user_version``); bump with a migration.
_LAYOUT_VERSION = 1
#: Public name of the layout version: release bundles record it (provisioning/bundle.sh)
#: and install.sh refuses to put a release beside a queue file it could not open.
LAYOUT_VERSION = _LAYOUT_VERSION


class OutboxError(sqlitefile.StorageError):
    """The queue file cannot be opened, read or written.

    ``sqlite_code`` is SQLite's primary result code when SQLite said why
    (``sqlitefile.SQLITE_FULL`` for a full disk), else None.
    """

    exit_code = ExitCode.IO_ERROR

    def __init__(self, message: str, *, sqlite_code: int | None = None) -> None:
        super().__init__(message)
        self.sqlite_code = sqlite_code


class WhenFull(StrEnum):
    """What ``put()`` does when the queue holds ``max_items`` already."""

    DROP_OLDEST = "drop_oldest"  #: make room: the newest evidence is worth more
    REJECT_NEW = "reject_new"  #: keep history intact: the caller gets PublishError


class ItemState(StrEnum):
    QUEUED = "queued"  #: committed, never handed to the broker
    SENT = "sent"  #: handed to the broker at least once, no acknowledgement yet


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One stored item; ``fields`` holds the subclass's extra columns."""

    seq: int
    key: str
    payload: str
    created: float
    attempts: int
    state: ItemState
    fields: Mapping[str, Any]


class SqliteQueue:
    """A durable FIFO of text payloads with unique keys.

    ``put`` is idempotent per key (a replayed item is not stored twice).
    Subclasses add typed columns through ``EXTRA_COLUMNS`` and a table name.
    """

    TABLE: ClassVar[str] = "queue"
    #: (name, SQL type) of subclass columns, stored next to the payload.
    EXTRA_COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(
        self,
        path: str | Path,
        *,
        max_items: int = 10_000,
        when_full: WhenFull | str = WhenFull.DROP_OLDEST,
        synchronous: Synchronous = "FULL",
    ) -> None:
        if max_items < 1:
            raise OutboxError(f"{path}: max_items must be >= 1, got {max_items}")
        self.path = Path(path)
        self.max_items = int(max_items)
        self.when_full = WhenFull(when_full)
        self._lock = threading.Lock()
        self._dropped = 0
        self._closed = False
        self._synchronous = synchronous
        self._db = self._open(synchronous)
        self._current_sync: str = synchronous
        with self._lock:
            self._count = int(self._db.execute(f"SELECT COUNT(*) FROM {self.TABLE}").fetchone()[0])
        if self._count:
            log.info("%s: %d item(s) left from a previous run will be replayed", self.path, self._count)

    # --- lifecycle ---------------------------------------------------------

    def _open(self, synchronous: Synchronous) -> sqlite3.Connection:
        """Private, checked, recovered when corrupt (:func:`microexpr.sqlitefile.open_checked`)."""

        def setup(db: sqlite3.Connection) -> None:
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            layout = int(db.execute("PRAGMA user_version").fetchone()[0])
            if layout > _LAYOUT_VERSION:
                raise OutboxError(
                    f"{self.path}: queue layout {layout} is newer than this version understands ({_LAYOUT_VERSION})"
                )
            extra = "".join(f", {name} {sql_type}" for name, sql_type in self.EXTRA_COLUMNS)
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {self.TABLE} ("
                " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " key TEXT NOT NULL UNIQUE,"
                " payload TEXT NOT NULL,"
                " created REAL NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0,"
                f" state TEXT NOT NULL DEFAULT '{ItemState.QUEUED.value}'"
                f"{extra})"
            )
            if layout != _LAYOUT_VERSION:
                db.execute(f"PRAGMA user_version={_LAYOUT_VERSION}")

        return sqlitefile.open_checked(self.path, what="queue", table=self.TABLE, setup=setup, error=OutboxError)

    def close(self) -> None:
        """Close the database; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()

    def __enter__(self) -> SqliteQueue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- operations --------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def depth(self) -> int:
        """Items stored (pending delivery)."""
        return self._count

    @property
    def dropped(self) -> int:
        """Items deleted by the ``drop_oldest`` policy since this queue was opened."""
        return self._dropped

    def put_item(self, key: str, payload: str, *, make_room: bool = False, **fields: Any) -> bool:
        """Store an item durably; returns False if ``key`` is already stored.

        Returns only after the commit, so the item survives a crash from
        then on. ``make_room``: the file must not grow (free space is below
        the reserve, :mod:`microexpr.outbox_guard`): a row that fits in the
        pages the database already has (free room in a page, or pages freed
        by delivered rows) is stored as is; one that would need a new page
        makes the oldest item give way under ``drop_oldest``, counted in
        ``dropped`` (rows are appended, so the file may still take a page or
        two before the pages emptied at the old end are reused).

        Raises:
            PublishError: the queue is full and the policy is ``reject_new``.
            OutboxError: the database cannot be written (disk full, read-only).
        """
        unknown = set(fields) - {name for name, _ in self.EXTRA_COLUMNS}
        if unknown:
            raise TypeError(f"unknown {self.TABLE} column(s): {sorted(unknown)}")
        names = ["key", "payload", "created", *fields]
        values = [key, payload, time.time(), *fields.values()]
        placeholders = ", ".join("?" for _ in names)
        def insert(drop_first: bool) -> int | None:
            """One transaction; -1: the row would grow the file below the reserve (rolled back)."""
            self._db.execute("BEGIN IMMEDIATE")
            try:
                exists = self._db.execute(f"SELECT 1 FROM {self.TABLE} WHERE key = ?", (key,)).fetchone()
                if exists:
                    self._db.execute("ROLLBACK")
                    return None
                pages = self._page_count()
                dropped = self._make_room(key, hold=drop_first)
                self._db.execute(f"INSERT INTO {self.TABLE} ({', '.join(names)}) VALUES ({placeholders})", values)
                if make_room and not drop_first and self._count and self.when_full is WhenFull.DROP_OLDEST \
                        and self._page_count() > pages:
                    self._db.execute("ROLLBACK")
                    return -1
                self._db.execute("COMMIT")
                return dropped
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

        with self._lock:
            self._check_open()
            try:
                self._sync_level(self._synchronous)
                # Below the reserve (make_room) a row that fits in the pages the
                # file already has is stored as is; only one that would grow
                # the file makes the oldest item give way.
                dropped = self._when_full_reclaim(lambda: insert(False))
                if dropped == -1:
                    dropped = self._when_full_reclaim(lambda: insert(True))
                if dropped is None:
                    return False
            except sqlite3.Error as exc:
                raise OutboxError(
                    f"{self.path}: cannot store {key}: {exc}", sqlite_code=sqlitefile.primary_code(exc)
                ) from None
            self._count += 1 - dropped
            self._dropped += dropped
        return True

    def _make_room(self, key: str, *, hold: bool = False) -> int:
        """Apply the full policy inside the open transaction; returns rows dropped.

        ``hold``: keep the depth where it is (low disk space), whatever ``max_items``.
        """
        excess = self._count + 1 - self.max_items
        if hold and self._count and self.when_full is WhenFull.DROP_OLDEST:
            excess = max(excess, 1)
        if excess <= 0:
            return 0
        if self.when_full is WhenFull.REJECT_NEW:
            raise PublishError(
                f"{self.path}: queue full ({self._count} of max {self.max_items}, policy reject_new): {key} refused"
            )
        victims = self._db.execute(
            f"SELECT seq, key FROM {self.TABLE} ORDER BY seq LIMIT ?", (excess,)
        ).fetchall()
        self._db.executemany(f"DELETE FROM {self.TABLE} WHERE seq = ?", [(seq,) for seq, _ in victims])
        total = self._dropped + len(victims)
        # One line for the first drop, then one per hundred: an outage of days
        # must not flood the journal.
        if self._dropped == 0 or total // 100 > self._dropped // 100:
            log.warning(
                "%s: queue full (%s, policy drop_oldest): dropped %s; %d dropped so far",
                self.path, "low disk space" if hold else f"max {self.max_items}",
                ", ".join(k for _, k in victims), total,
            )
        return len(victims)

    def _page_count(self) -> int:
        """Pages of the database as this transaction sees it (grows when a row needs a new page)."""
        return int(self._db.execute("PRAGMA page_count").fetchone()[0])

    def items(self, limit: int, *, exclude: Collection[str] = ()) -> list[QueueItem]:
        """Up to ``limit`` stored items, oldest first, skipping keys in ``exclude``."""
        if limit <= 0:
            return []
        columns = ", ".join(["seq", "key", "payload", "created", "attempts", "state", *self._extra_names()])
        with self._lock:
            self._check_open()
            try:
                rows = self._db.execute(
                    f"SELECT {columns} FROM {self.TABLE} ORDER BY seq LIMIT ?", (limit + len(exclude),)
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: cannot read: {exc}") from None
        found: list[QueueItem] = []
        for row in rows:
            if row[1] in exclude:
                continue
            extra = dict(zip(self._extra_names(), row[6:], strict=True))
            found.append(QueueItem(row[0], row[1], row[2], row[3], row[4], ItemState(row[5]), extra))
            if len(found) == limit:
                break
        return found

    def delete(self, key: str) -> bool:
        """Remove an item once it is delivered; False if it was not stored."""
        with self._lock:
            if self._closed:
                # A late acknowledgement after close: the item stays and is
                # replayed next time (a duplicate with the same key, never a loss).
                return False
            try:
                self._sync_level("NORMAL")
                deleted = self._when_full_reclaim(
                    lambda: self._db.execute(f"DELETE FROM {self.TABLE} WHERE key = ?", (key,)).rowcount
                )
            except sqlite3.Error as exc:
                raise OutboxError(
                    f"{self.path}: cannot delete {key}: {exc}", sqlite_code=sqlitefile.primary_code(exc)
                ) from None
            self._count -= deleted
        return deleted > 0

    def mark_attempted(self, keys: Iterable[str]) -> None:
        """Count one delivery attempt for each key (state ``sent``)."""
        batch = [(ItemState.SENT.value, key) for key in keys]
        if not batch:
            return
        with self._lock:
            self._check_open()
            def update() -> None:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        f"UPDATE {self.TABLE} SET attempts = attempts + 1, state = ? WHERE key = ?", batch
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise

            try:
                self._sync_level("NORMAL")
                self._when_full_reclaim(update)
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxError(f"{self.path}: cannot update: {exc}") from None

    def _when_full_reclaim(self, write: Callable[[], _T]) -> _T:
        """Run ``write``; on "disk full", give back the WAL's space and try once more (lock held).

        In WAL mode every commit appends to the ``-wal`` file, which only a
        checkpoint empties; on a small or nearly full file system the WAL
        itself can be what fills it. ``wal_checkpoint(TRUNCATE)`` copies the
        committed pages into the database and truncates the WAL to zero bytes,
        which is often exactly the room the next commit needs.
        """
        try:
            return write()
        except sqlite3.Error as exc:
            if sqlitefile.primary_code(exc) != sqlitefile.SQLITE_FULL:
                raise
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                raise exc from None
            return write()

    def _sync_level(self, level: str) -> None:
        """Switch the connection's fsync level between transactions (lock held)."""
        if level != self._current_sync:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._current_sync = level

    def _extra_names(self) -> list[str]:
        return [name for name, _ in self.EXTRA_COLUMNS]

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"{self.path}: queue is closed")


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One MQTT message waiting for its acknowledgement."""

    seq: int
    event_id: str
    topic: str
    payload: str
    qos: int
    retain: bool
    created: float
    attempts: int

    @property
    def key(self) -> str:
        return outbox_key(self.event_id, self.topic)


def outbox_key(event_id: str, topic: str) -> str:
    """Unique key of a message: an event and its refinement share the event id,
    so the id alone is unique only per topic. ``#`` cannot occur in a topic
    name, so the key is unambiguous."""
    return f"{topic}#{event_id}"


class Outbox(SqliteQueue):
    """The MQTT outbox: messages stored before publishing, deleted on PUBACK."""

    TABLE = "outbox"
    EXTRA_COLUMNS = (
        ("event_id", "TEXT NOT NULL"),
        ("topic", "TEXT NOT NULL"),
        ("qos", "INTEGER NOT NULL"),
        ("retain", "INTEGER NOT NULL"),
    )

    def put(
        self, event_id: str, topic: str, payload: str, *, qos: int = 1, retain: bool = False, make_room: bool = False
    ) -> bool:
        """Commit a message before it is published; False if already stored."""
        return self.put_item(
            outbox_key(event_id, topic), payload, make_room=make_room,
            event_id=event_id, topic=topic, qos=int(qos), retain=int(retain),
        )

    def pending(self, limit: int = 100, *, exclude: Collection[str] = ()) -> list[OutboxMessage]:
        """Messages not yet acknowledged, oldest first (``exclude``: keys in flight)."""
        return [
            OutboxMessage(
                seq=item.seq,
                event_id=item.fields["event_id"],
                topic=item.fields["topic"],
                payload=item.payload,
                qos=int(item.fields["qos"]),
                retain=bool(item.fields["retain"]),
                created=item.created,
                attempts=item.attempts,
            )
            for item in self.items(limit, exclude=exclude)
        ]

    def mark_sent(self, event_id: str, topic: str) -> bool:
        """The broker acknowledged the message: forget it."""
        return self.delete(outbox_key(event_id, topic))

    def __enter__(self) -> Outbox:
        return self

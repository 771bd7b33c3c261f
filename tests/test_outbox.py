"""The durable SQLite outbox: order, idempotence, bounds, threads, crashes."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from microexpr.errors import ExitCode, PublishError
from microexpr.outbox import ItemState, Outbox, OutboxError, SqliteQueue, WhenFull, outbox_key

TOPIC = "microexpr/kiosk-1/event"
REFINED = "microexpr/kiosk-1/event/refined"


def test_put_pending_mark_sent_round_trip(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        for i in range(5):
            assert outbox.put(f"id-{i}", TOPIC, f'{{"n":{i}}}', qos=1)
        assert len(outbox) == 5
        pending = outbox.pending(3)
        assert [m.event_id for m in pending] == ["id-0", "id-1", "id-2"]
        assert pending[0].payload == '{"n":0}' and pending[0].qos == 1 and pending[0].retain is False
        assert outbox.mark_sent("id-1", TOPIC)
        assert not outbox.mark_sent("id-1", TOPIC)  # already gone
        assert [m.event_id for m in outbox.pending(10)] == ["id-0", "id-2", "id-3", "id-4"]
        skip = {outbox_key("id-0", TOPIC), outbox_key("id-3", TOPIC)}
        assert [m.event_id for m in outbox.pending(10, exclude=skip)] == ["id-2", "id-4"]
        assert [m.event_id for m in outbox.pending(1, exclude=skip)] == ["id-2"]
        assert len(outbox) == 4


def test_put_is_idempotent_per_topic_and_an_event_and_its_refinement_coexist(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        assert outbox.put("same", TOPIC, "{}")
        assert not outbox.put("same", TOPIC, '{"other":1}')
        assert outbox.put("same", REFINED, '{"refined":1}')
        assert {(m.topic, m.payload) for m in outbox.pending()} == {(TOPIC, "{}"), (REFINED, '{"refined":1}')}
        assert outbox.mark_sent("same", TOPIC)
        assert [m.topic for m in outbox.pending()] == [REFINED]


def test_messages_survive_reopening_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.db"  # parent created on demand
    with Outbox(path) as outbox:
        outbox.put("a", TOPIC, "1")
        outbox.put("b", TOPIC, "2", retain=True)
        outbox.mark_attempted([outbox_key("a", TOPIC)])
    with Outbox(path) as reopened:
        pending = reopened.pending()
        assert [(m.event_id, m.attempts, m.retain) for m in pending] == [("a", 1, False), ("b", 0, True)]
        assert reopened.items(1)[0].state is ItemState.SENT
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_drop_oldest_keeps_the_newest_and_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="microexpr.outbox")
    with Outbox(tmp_path / "o.db", max_items=3, when_full="drop_oldest") as outbox:
        for i in range(5):
            assert outbox.put(f"e{i}", TOPIC, "{}")
        assert [m.event_id for m in outbox.pending()] == ["e2", "e3", "e4"]
        assert outbox.dropped == 2 and len(outbox) == 3
    assert "queue full" in caplog.text and "drop_oldest" in caplog.text and f"{TOPIC}#e0" in caplog.text


def test_reject_new_refuses_with_publish_error_and_keeps_history(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", max_items=2, when_full=WhenFull.REJECT_NEW) as outbox:
        outbox.put("e0", TOPIC, "{}")
        outbox.put("e1", TOPIC, "{}")
        with pytest.raises(PublishError) as exc:
            outbox.put("e2", TOPIC, "{}")
        assert "o.db" in str(exc.value) and "reject_new" in str(exc.value) and "e2" in str(exc.value)
        assert exc.value.exit_code == ExitCode.TEMPORARY
        assert [m.event_id for m in outbox.pending()] == ["e0", "e1"] and outbox.dropped == 0
        outbox.mark_sent("e0", TOPIC)
        assert outbox.put("e2", TOPIC, "{}")  # room again
        # A duplicate of a stored key is not "new": no error even when full.
        assert not outbox.put("e1", TOPIC, "{}")


def test_bounds_hold_across_reopen_with_a_smaller_limit(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with Outbox(path) as outbox:
        for i in range(6):
            outbox.put(f"e{i}", TOPIC, "{}")
    with Outbox(path, max_items=4) as smaller:
        smaller.put("e6", TOPIC, "{}")
        assert [m.event_id for m in smaller.pending()] == ["e3", "e4", "e5", "e6"]
        assert smaller.dropped == 3


def test_concurrent_producers_and_acknowledger_stay_consistent(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", synchronous="NORMAL")
    errors: list[BaseException] = []
    acked: list[str] = []

    def produce(worker: int) -> None:
        try:
            for i in range(60):
                outbox.put(f"w{worker}-{i}", TOPIC, "{}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def acknowledge() -> None:
        try:
            for _ in range(200):
                for message in outbox.pending(5):
                    if outbox.mark_sent(message.event_id, message.topic):
                        acked.append(message.event_id)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(w,), name=f"producer-{w}") for w in range(4)]
    threads.append(threading.Thread(target=acknowledge, name="acknowledger"))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    remaining = {m.event_id for m in outbox.pending(1000)}
    assert len(acked) == len(set(acked))
    assert remaining.isdisjoint(acked)
    assert remaining | set(acked) == {f"w{w}-{i}" for w in range(4) for i in range(60)}
    assert len(outbox) == len(remaining) == sqlite3.connect(outbox.path).execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    outbox.close()


def test_close_is_idempotent_and_use_after_close_is_an_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    outbox.put("a", TOPIC, "{}")
    outbox.close()
    outbox.close()
    assert outbox.mark_sent("a", TOPIC) is False  # late PUBACK after close: kept for replay
    with pytest.raises(OutboxError, match="closed"):
        outbox.put("b", TOPIC, "{}")


def test_a_directory_in_place_of_the_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match=str(tmp_path)):
        Outbox(tmp_path)


def test_a_newer_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    Outbox(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(OutboxError, match="layout 99"):
        Outbox(path)


def test_bad_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="max_items"):
        Outbox(tmp_path / "o.db", max_items=0)
    with pytest.raises(ValueError):
        Outbox(tmp_path / "o.db", when_full="drop_newest")


def test_the_generic_queue_serves_other_stages(tmp_path: Path) -> None:
    """The reasoner's durable queue is a plain SqliteQueue (no MQTT columns)."""
    with SqliteQueue(tmp_path / "reasoner.db", max_items=2, when_full="reject_new", synchronous="NORMAL") as queue:
        assert queue.put_item("ev-1", '{"aus":["AU12"]}')
        assert queue.put_item("ev-2", "{}")
        with pytest.raises(PublishError):
            queue.put_item("ev-3", "{}")
        with pytest.raises(TypeError):
            queue.put_item("ev-4", "{}", topic="x")
        first = queue.items(1)[0]
        assert (first.key, first.payload, first.fields) == ("ev-1", '{"aus":["AU12"]}', {})
        assert queue.delete("ev-1") and len(queue) == 1


CHILD = r"""
import sys
from microexpr.outbox import Outbox
outbox = Outbox(sys.argv[1])
i = 0
while True:
    outbox.put(f"e{i}", "microexpr/k/event", '{"n": %d}' % i)
    print(f"e{i}", flush=True)  # printed only after the commit returned
    i += 1
"""


@pytest.mark.integration
def test_every_committed_put_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert child.stdout is not None
    committed = [child.stdout.readline().strip() for _ in range(40)]
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    committed += rest.split()
    assert child.returncode == -signal.SIGKILL
    with Outbox(path) as outbox:
        stored = [m.event_id for m in outbox.pending(100_000)]
    # Everything the child saw committed is there, in order; at most the one
    # put in progress at the kill may be there unprinted.
    assert stored[: len(committed)] == committed
    assert len(stored) - len(committed) in (0, 1)

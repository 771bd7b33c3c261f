"""Storage faults on real parts: a real tmpfs filled to the last byte, a real
read-only bind mount, real damaged SQLite files, a real mosquitto killed with
SIGKILL, a real producer process killed with SIGKILL.

Each delivery scenario reports events produced / received / lost /
duplicated (printed with ``-s``, and asserted): lost is 0 except where a
documented policy drops, and then the count in the guard's stats is exact.
Mounting needs root (CI runs as root); without it those tests are skipped
with the reason. No wall-clock assertions: deadlines are generous waits.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.broker import Broker, wait_until
from test_mqtt import Settings, new_device_id, new_event

from microexpr import cli, sqlitefile
from microexpr.errors import ExitCode, PublishError
from microexpr.mqtt import MqttPublisher
from microexpr.outbox import Outbox, WhenFull
from microexpr.outbox_guard import MB, OutboxGuard, Pending, StorageProblem, StoreOutcome
from microexpr.reasoner.store import ReasonerStore

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# Real file systems


def _mount(*args: str) -> str:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    return "" if result.returncode == 0 else (result.stderr.strip() or f"mount exited {result.returncode}")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount a small tmpfs (size in KiB) under tmp_path; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size_kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI runs as root)")
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        error = _mount("-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(point))
        if error:
            pytest.skip(f"cannot mount a tmpfs here: {error}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write zeros until ENOSPC, like ``dd`` (unbuffered: nothing left to flush at close); returns the file."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


def message(device_id: str, topic: str | None = None) -> Pending:
    event = new_event(device_id)
    return Pending(event.event_id, topic or f"microexpr/{device_id}/event", event.to_json(), 1)


@dataclass(frozen=True, slots=True)
class FaultReport:
    fault: str
    produced: int
    received: int
    lost: int
    duplicated: int
    counted_lost: int

    def line(self) -> str:
        return (f"fault {self.fault}: produced {self.produced}, received {self.received}, lost {self.lost}, "
                f"duplicated {self.duplicated} (counted lost in stats: {self.counted_lost})")


def report(fault: str, produced: list[str], received_ids: list[str], counted_lost: int = 0) -> FaultReport:
    got = set(received_ids)
    result = FaultReport(
        fault, len(produced), len(got & set(produced)), len(set(produced) - got),
        len(received_ids) - len(got), counted_lost,
    )
    print(result.line())
    return result


def ids(messages: list[Any]) -> list[str]:
    return [json.loads(m.payload)["event_id"] for m in messages]


# --------------------------------------------------------------------------
# Private files


def test_state_folder_is_0700_and_databases_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        state = tmp_path / "state" / "microexpr"
        outbox = Outbox(state / "outbox.sqlite")
        outbox.put("e1", "t/event", "{}")
        store = ReasonerStore(state / "reasoner.sqlite3")
        try:
            assert stat.S_IMODE(state.stat().st_mode) == 0o700
            for path in state.iterdir():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert {p.name for p in state.iterdir()} >= {"outbox.sqlite", "outbox.sqlite-wal", "reasoner.sqlite3"}
        finally:
            store.close()
            outbox.close()
        # An existing folder of ours that is too open is tightened; a shared (sticky) one is not.
        loose = tmp_path / "loose"
        loose.mkdir(mode=0o755)
        os.chmod(loose, 0o755)
        Outbox(loose / "o.sqlite").close()
        assert stat.S_IMODE(loose.stat().st_mode) == 0o700
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chmod(shared, 0o1777)
        Outbox(shared / "o.sqlite").close()
        assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
        assert stat.S_IMODE((shared / "o.sqlite").stat().st_mode) == 0o600
    finally:
        os.umask(old)


# --------------------------------------------------------------------------
# Corrupt files: moved aside with a timestamp, counted, recreated


def _outbox_with(path: Path, n: int) -> list[str]:
    made = []
    with Outbox(path) as outbox:
        for i in range(n):
            outbox.put(f"e{i}", "t/event", json.dumps({"i": i, "pad": "x" * 300}))
            made.append(f"e{i}")
    return made


def _damage_random(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _damage_truncated_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:50])


def _damage_overwritten_header(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(b"\xff" * 100)


def _damage_a_page(path: Path) -> None:
    """Scramble the second page (a b-tree page of the table): the header still reads."""
    with sqlite3.connect(path) as db:
        page = int(db.execute("PRAGMA page_size").fetchone()[0])
    with path.open("r+b") as f:
        f.seek(page + 0)
        f.write(b"\x0d" + os.urandom(page - 1))


@pytest.mark.parametrize(
    "damage", [_damage_random, _damage_truncated_header, _damage_overwritten_header, _damage_a_page],
    ids=["random-bytes", "truncated-header", "overwritten-header", "scrambled-page"],
)
def test_corrupt_outbox_is_moved_aside_and_the_daemon_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    path = tmp_path / "outbox.sqlite"
    _outbox_with(path, 40)
    damage(path)
    damaged = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="microexpr.sqlitefile"):
        outbox = Outbox(path)
    try:
        aside = sorted(tmp_path.glob("outbox.sqlite.corrupt-*Z"))
        assert len(aside) == 1 and aside[0].read_bytes() == damaged  # never deleted, unchanged
        assert aside[0].name[len("outbox.sqlite.corrupt-"):].endswith("Z")
        line = next(r.getMessage() for r in caplog.records if "moved aside" in r.getMessage())
        assert str(path) in line and aside[0].name in line
        assert "held" in line or "could not be counted" in line
        assert len(outbox) == 0
        assert outbox.put("new", "t/event", "{}") and len(outbox) == 1
    finally:
        outbox.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_readable_rows_of_a_damaged_file_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.sqlite"
    _outbox_with(path, 40)
    # The table is intact but an index page is not: quick_check fails, COUNT(*) still reads.
    with sqlite3.connect(path) as db:
        root = int(db.execute("SELECT rootpage FROM sqlite_master WHERE type='index'").fetchone()[0])
        page = int(db.execute("PRAGMA page_size").fetchone()[0])
    with path.open("r+b") as f:
        f.seek((root - 1) * page + 8)
        f.write(os.urandom(64))
    with caplog.at_level(logging.ERROR, logger="microexpr.sqlitefile"):
        Outbox(path).close()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "moved aside" in messages
    assert "held 40 row(s)" in messages, messages


# --------------------------------------------------------------------------
# Read-only location: its own message and exit code


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    source = tmp_path / "rw"
    source.mkdir()
    _outbox_with(source / "outbox.sqlite", 3)
    target = tmp_path / "ro"
    target.mkdir()
    error = _mount("--bind", str(source), str(target)) or _mount("-o", "remount,ro,bind", str(target))
    if error:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
        pytest.skip(f"cannot make a read-only bind mount here: {error}")
    yield target
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_read_only_location_is_its_own_error_and_exit_code(
    read_only_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], smile_clip: Path
) -> None:
    for path in (read_only_dir / "outbox.sqlite", read_only_dir / "new.sqlite"):
        with pytest.raises(sqlitefile.StorageReadOnlyError) as exc:
            Outbox(path)
        assert exc.value.exit_code == ExitCode.CANT_CREATE == 73
        assert "read-only" in str(exc.value) and "corrupt" not in str(exc.value)
    with pytest.raises(sqlitefile.StorageReadOnlyError):
        ReasonerStore(read_only_dir / "reasoner.sqlite3")
    # The good file on the read-only mount is untouched (nothing moved aside).
    assert sorted(p.name for p in read_only_dir.iterdir()) == ["outbox.sqlite"]
    # The command line: one line, exit 73, before the model loads.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = cli.main(["run", "--source", str(smile_clip), "--outbox", str(read_only_dir / "outbox.sqlite")])
    finally:  # cli.main points logging at this test's captured stderr: give it back
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err.splitlines()
    assert code == 73
    assert len(err) == 1 and "read-only" in err[0], err


# --------------------------------------------------------------------------
# A full disk: reserve, spill, write-back, exact counts


def test_reserve_policy_drop_oldest_keeps_the_outbox_from_growing(tmpfs: Callable[[int], Path]) -> None:
    disk = tmpfs(4096)
    outbox = Outbox(disk / "outbox.sqlite")
    free = {"bytes": 100 * MB}
    guard = OutboxGuard(outbox, reserve_bytes=16 * MB, free_space=lambda: free["bytes"])
    try:
        for _ in range(5):
            assert guard.store(message("d"))[0] is StoreOutcome.STORED
        pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
        free["bytes"] = 15 * MB  # below the reserve
        outcomes = [guard.store(message("d"))[0] for _ in range(7)]
        assert outcomes == [StoreOutcome.STORED] * 7
        # Rows that fitted were stored; each that needed a new page replaced the
        # oldest one, counted exactly. Rows are appended, so the space a drop
        # frees is at the other end of the table: the file may take a page or
        # two before emptied pages are reused, never one per event.
        assert outbox._db.execute("PRAGMA page_count").fetchone()[0] <= pages + 2
        assert outbox.dropped >= 1 and len(outbox) + outbox.dropped == 12
        kept = len(outbox)
        assert guard.problem is StorageProblem.LOW_SPACE and "below the 16 MB reserve" in guard.reason()
        free["bytes"] = 100 * MB
        assert guard.store(message("d"))[0] is StoreOutcome.STORED
        assert guard.problem is None and len(outbox) == kept + 1
    finally:
        outbox.close()


def test_reject_new_refusals_are_counted_and_logged_at_a_bounded_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", max_items=100, when_full=WhenFull.REJECT_NEW)
    guard = OutboxGuard(outbox, reserve_bytes=0)
    try:
        with caplog.at_level(logging.ERROR):
            outcomes = [guard.store(message("d"))[0] for _ in range(250)]
        assert outcomes.count(StoreOutcome.STORED) == 100
        assert outcomes.count(StoreOutcome.REJECTED) == 150 == guard.counts().rejected
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1  # 150 refusals, one line (then one a minute, with the count)
        with pytest.raises(PublishError):  # the direct path (refinements) still raises for the caller
            guard.store_now(message("d"))
    finally:
        outbox.close()


@pytest.mark.integration
def test_full_tmpfs_spills_in_memory_and_writes_back_without_loss(
    tmpfs: Callable[[int], Path], broker: Broker, make_subscriber: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case 1: 1 MB tmpfs filled with dd-like writes while events keep coming."""
    disk = tmpfs(1024)
    device_id = new_device_id()
    topic = f"microexpr/{device_id}/event"
    sub = make_subscriber(broker, [topic])
    outbox = Outbox(disk / "outbox.sqlite")
    # reserve 0: the commit itself must fail, to exercise the spill (the reserve is tested above)
    guard = OutboxGuard(outbox, reserve_bytes=0, spill_max=1000)
    publisher = MqttPublisher(Settings(broker.host, broker.port), device_id=device_id, outbox=outbox,
                              reconnect_min_s=0.1, reconnect_max_s=0.5)
    printed: list[str] = []  # what the daemon would print: committed only

    def produce(n: int) -> list[StoreOutcome]:
        outcomes = []
        for _ in range(n):
            m = message(device_id, topic)
            outcome, written = guard.store(m)
            printed.extend(w.event_id for w in written)
            if outcome is StoreOutcome.STORED:
                printed.append(m.event_id)
            outcomes.append(outcome)
            publisher.wake()
        return outcomes

    try:
        with caplog.at_level(logging.ERROR):
            produce(10)
            publisher.start()
            filler = fill(disk)
            spill_start = len(printed)
            outcomes = produce(45)
            assert StoreOutcome.SPILLED in outcomes
            spilled = guard.counts().spilled
            assert spilled == outcomes.count(StoreOutcome.SPILLED) > 0
            assert len(printed) - spill_start == outcomes.count(StoreOutcome.STORED)
            assert guard.problem is StorageProblem.WRITE_FAILED
            filler.unlink()  # space returns
            written = guard.drain()
            printed.extend(w.event_id for w in written)
            publisher.wake()
            assert len(written) == spilled and guard.counts().spilled == 0 and guard.problem is None
        produced = list(printed)
        assert len(produced) == 55 == len(set(produced))
        wait_until(lambda: set(produced) <= set(ids(sub.snapshot())), 30, "every event on the broker")
        wait_until(lambda: len(outbox) == 0, 60, "the outbox to empty")
        result = report("tmpfs-full", produced, ids(sub.snapshot()), guard.counts().lost)
        assert result.lost == 0 and guard.counts().lost == 0
        assert len([r for r in caplog.records if "holding it in memory" in r.getMessage()]) == 1
    finally:
        publisher.close(timeout=2)
        outbox.close()


def test_spill_overflow_is_counted_exactly(tmpfs: Callable[[int], Path]) -> None:
    disk = tmpfs(1024)
    outbox = Outbox(disk / "outbox.sqlite")
    guard = OutboxGuard(outbox, reserve_bytes=0, spill_max=5)
    try:
        filler = fill(disk)
        outcomes = [guard.store(message("d"))[0] for _ in range(12)]
        assert outcomes.count(StoreOutcome.STORED) + outcomes.count(StoreOutcome.SPILLED) == 12
        spilled = outcomes.count(StoreOutcome.SPILLED)
        counts = guard.counts()
        assert counts.spilled == min(5, spilled) and counts.lost == max(0, spilled - 5)
        filler.unlink()
        assert len(guard.drain()) == min(5, spilled)
        assert guard.close() == 0 and guard.counts().lost == max(0, spilled - 5)
    finally:
        outbox.close()


# --------------------------------------------------------------------------
# No resend storm when the delete after PUBACK fails


@pytest.mark.integration
def test_failed_delete_after_puback_is_not_a_resend_storm(
    tmpfs: Callable[[int], Path], broker: Broker, make_subscriber: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    disk = tmpfs(2048)
    device_id = new_device_id()
    topic = f"microexpr/{device_id}/event"
    path = disk / "outbox.sqlite"
    with Outbox(path) as outbox:
        stored = [message(device_id, topic) for _ in range(34)]
        for m in stored:
            outbox.put(m.event_id, m.topic, m.payload)
    sub = make_subscriber(broker, [topic])
    outbox = Outbox(path)  # opened first (its -wal and -shm exist), then the disk fills
    filler = fill(disk)
    publisher = MqttPublisher(Settings(broker.host, broker.port), device_id=device_id, outbox=outbox,
                              reconnect_min_s=0.1, reconnect_max_s=0.5)
    try:
        with caplog.at_level(logging.ERROR):
            publisher.start()
            wait_until(lambda: len(ids(sub.snapshot())) >= 34, 30, "the 34 stored events")
            time.sleep(3.0)  # room for a storm to show: the old pump re-sent at once, ~160/s
            received = ids(sub.snapshot())
            assert len(outbox) == 34  # the deletes failed: the disk is full
            assert publisher.status().delivered == 0
        result = report("delete-fails-after-puback", [m.event_id for m in stored], received)
        assert result.lost == 0 and result.duplicated == 0, result
        assert "Traceback" not in caplog.text
        assert len([r for r in caplog.records if "wait for their delete" in r.getMessage()]) == 1
        filler.unlink()
        wait_until(lambda: len(outbox) == 0, 30, "the deletes to succeed once space returns (backoff)")
        assert ids(sub.snapshot()) == received  # still nothing re-sent
    finally:
        publisher.close(timeout=2)
        outbox.close()


# --------------------------------------------------------------------------
# Broker SIGKILL and producer SIGKILL


@pytest.mark.integration
def test_broker_sigkill_loses_nothing(
    tmp_path: Path, make_broker: Callable[..., Broker], make_subscriber: Callable[..., Any]
) -> None:
    # The subscriber's session must outlive each SIGKILL: otherwise, after a
    # restart, the publisher can redeliver before the subscriber has
    # resubscribed, and the broker rightly drops what nobody subscribes to.
    broker = make_broker(save_on_change=True)
    device_id = new_device_id()
    topic = f"microexpr/{device_id}/event"
    sub = make_subscriber(broker, [topic], client_id=f"sub-{device_id}", clean_session=False)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    guard = OutboxGuard(outbox, reserve_bytes=16 * MB)
    publisher = MqttPublisher(Settings(broker.host, broker.port), device_id=device_id, outbox=outbox,
                              reconnect_min_s=0.1, reconnect_max_s=0.5).start()
    produced: list[str] = []
    try:
        assert publisher.wait_connected(10)
        for round_ in range(3):
            for _ in range(10):
                m = message(device_id, topic)
                assert guard.store(m)[0] is StoreOutcome.STORED
                produced.append(m.event_id)
                publisher.wake()
            # What the broker acknowledged is the broker's to keep: a broker
            # SIGKILLed between its PUBACK and forwarding the message loses it
            # whatever the publisher does (this one has no persistence). So the
            # kill comes once the round reached the subscriber; the events
            # produced while the broker is down are what must survive.
            wait_until(lambda: set(produced) <= set(ids(sub.snapshot())), 30, "the round before the kill")
            broker.kill()  # SIGKILL
            for _ in range(5):  # produced while the broker is down
                m = message(device_id, topic)
                assert guard.store(m)[0] is StoreOutcome.STORED
                produced.append(m.event_id)
            broker.start()
        wait_until(lambda: set(produced) <= set(ids(sub.snapshot())), 60, "every event after 3 broker kills")
        result = report("broker-sigkill", produced, ids(sub.snapshot()))
        assert result.lost == 0
        by_id: dict[str, str] = {}
        for m in sub.snapshot():  # duplicates share event_id and content
            assert by_id.setdefault(json.loads(m.payload)["event_id"], m.text) == m.text
    finally:
        publisher.close(timeout=2)
        outbox.close()


_PRODUCER = r"""
import sys, time
from test_mqtt import Settings, new_event
from microexpr.mqtt import MqttPublisher
from microexpr.outbox import Outbox
from microexpr.outbox_guard import OutboxGuard, Pending, StoreOutcome
path, host, port, device_id = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
outbox = Outbox(path)
guard = OutboxGuard(outbox, reserve_bytes=0)
publisher = MqttPublisher(Settings(host, port), device_id=device_id, outbox=outbox).start()
topic = f"microexpr/{device_id}/event"
while True:
    event = new_event(device_id)
    outcome, _ = guard.store(Pending(event.event_id, topic, event.to_json(), 1))
    if outcome is StoreOutcome.STORED:
        print(event.event_id, flush=True)  # printed only after the commit, like the daemon
    publisher.wake()
    time.sleep(0.02)
"""


@pytest.mark.integration
def test_producer_sigkill_loses_nothing_that_was_printed(
    tmp_path: Path, broker: Broker, make_subscriber: Callable[..., Any]
) -> None:
    device_id = new_device_id()
    topic = f"microexpr/{device_id}/event"
    sub = make_subscriber(broker, [topic])
    script = tmp_path / "producer.py"
    script.write_text(_PRODUCER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "device"), str(ROOT / "tests")])}
    path = tmp_path / "outbox.sqlite"
    produced: list[str] = []
    for run in range(3):
        out = tmp_path / f"producer-{run}.out"
        with out.open("w") as handle:
            proc = subprocess.Popen([sys.executable, str(script), str(path), broker.host, str(broker.port), device_id],
                                    stdout=handle, stderr=subprocess.DEVNULL, env=env)
        try:
            wait_until(lambda: len(out.read_text().split()) >= 20, 60, "the producer to commit 20 events")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        produced += out.read_text().split()
    # A last producer run replays what the killed ones left in the outbox.
    out = tmp_path / "producer-final.out"
    with out.open("w") as handle:
        proc = subprocess.Popen([sys.executable, str(script), str(path), broker.host, str(broker.port), device_id],
                                stdout=handle, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_until(lambda: set(produced) <= set(ids(sub.snapshot())), 60, "every printed event after 3 SIGKILLs")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    result = report("producer-sigkill", produced, ids(sub.snapshot()))
    assert result.lost == 0


# --------------------------------------------------------------------------
# The daemon itself: printed only after the commit, degraded with the reason


@pytest.mark.integration
def test_daemon_on_a_full_disk_prints_only_committed_events_and_says_why(
    tmpfs: Callable[[int], Path], smile_clip: Path, model_path: Path
) -> None:
    """The real Service (real model, the real clip replayed live) with its outbox on
    a tmpfs filled to ENOSPC mid-run, then freed."""
    import io
    import threading

    from microexpr.config import parse_config
    from microexpr.events import PayloadKind, validate
    from microexpr.health import Health
    from microexpr.service import Service

    disk = tmpfs(8192)
    config = parse_config({
        "device_id": f"st-{new_device_id()}",
        "source": {"uri": f"replay:{smile_clip}"},
        "model": {"path": str(model_path)},
        "mqtt": {"enabled": False},
        "outbox": {"path": str(disk / "outbox.sqlite"), "reserve_mb": 0.0},
    })
    out = io.StringIO()
    service = Service(config, print_events=True, out=out)
    runner = threading.Thread(target=lambda: service.run(install_signals=False), name="service-under-test")
    runner.start()
    filler: Path | None = None
    try:
        wait_until(lambda: service.metrics.events >= 1, 180, "a first event")
        filler = fill(disk)
        wait_until(lambda: service._guard is not None and service._guard.counts().spilled >= 2, 180,
                   "events held in memory while the disk is full")
        wait_until(lambda: service.health.value is Health.DEGRADED, 30, "health degraded")
        stats = service.stats().to_payload()
        validate(stats, PayloadKind.STATS)
        assert stats["health"] == "degraded" and stats["health_reason"].startswith("write_failed"), stats
        assert stats["outbox"]["spilled"] >= 2
        printed_while_full = [json.loads(line)["event_id"] for line in out.getvalue().splitlines()]
        assert len(printed_while_full) == service.metrics.events  # held events are neither printed nor counted
        filler.unlink()
        filler = None
        wait_until(lambda: service._guard.counts().spilled == 0 and service._guard.counts().written_back >= 2,
                   30, "the held events written back")
        wait_until(lambda: service.health.value is Health.OK, 30, "health ok again")
    finally:
        if filler is not None:
            filler.unlink()
        service.request_stop("test")
        runner.join(60)
    assert not runner.is_alive()
    printed = [json.loads(line)["event_id"] for line in out.getvalue().splitlines()]
    with sqlite3.connect(disk / "outbox.sqlite") as db:
        stored = [row[0] for row in db.execute("SELECT event_id FROM outbox ORDER BY seq")]
    counts = service._guard.counts()
    result = report("daemon-disk-full", printed, stored, counts.lost)
    assert result.lost == 0 and counts.lost == 0 and result.duplicated == 0
    assert printed == stored  # every printed event is in the outbox, in the order it was committed
    assert len(printed) == service.metrics.events


def test_held_events_are_written_back_when_space_returns_but_stays_below_the_reserve(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    free = {"bytes": 100 * MB}
    guard = OutboxGuard(outbox, reserve_bytes=16 * MB, spill_max=10, free_space=lambda: free["bytes"])
    try:
        for _ in range(3):
            guard.store(message("d"))
        outbox.close()  # every commit fails from now on, like a full disk
        free["bytes"] = 0
        held = [message("d") for _ in range(4)]
        assert [guard.store(m)[0] for m in held] == [StoreOutcome.SPILLED] * 4
        outbox = Outbox(tmp_path / "o.sqlite")  # the medium answers again, 8 MB free: below the reserve
        guard.outbox = outbox
        free["bytes"] = 8 * MB
        written = guard.drain()
        assert [m.event_id for m in written] == [m.event_id for m in held]
        assert len(outbox) == 3 and outbox.dropped == 4  # drop_oldest made room for each, counted
        assert guard.problem is StorageProblem.LOW_SPACE and guard.counts().lost == 0
    finally:
        outbox.close()


def test_below_the_reserve_rows_go_into_free_pages_before_anything_is_dropped(tmp_path: Path) -> None:
    """After deliveries, deleted rows leave free pages: storing there does not grow
    the file, so drop_oldest drops nothing until they are used up."""
    path = tmp_path / "o.sqlite"
    outbox = Outbox(path)
    free = {"bytes": 100 * MB}
    guard = OutboxGuard(outbox, reserve_bytes=16 * MB, free_space=lambda: free["bytes"])
    try:
        delivered = [message("d") for _ in range(60)]
        for m in delivered:
            guard.store(m)
        for m in delivered[:-1]:
            outbox.mark_sent(m.event_id, m.topic)  # PUBACK: deleted, their pages go to the freelist
        outbox._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = path.stat().st_size
        free["bytes"] = 1 * MB
        for _ in range(10):
            assert guard.store(message("d"))[0] is StoreOutcome.STORED
        assert outbox.dropped == 0 and len(outbox) == 11
        outbox._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert path.stat().st_size == size  # the file did not grow
        assert guard.problem is StorageProblem.LOW_SPACE
    finally:
        outbox.close()


def test_low_space_is_reported_between_events_and_clears_by_itself(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    free = {"bytes": 100 * MB}
    guard = OutboxGuard(outbox, reserve_bytes=16 * MB, free_space=lambda: free["bytes"])
    try:
        assert guard.drain() == [] and guard.problem is None
        free["bytes"] = 2 * MB  # the disk fills while no event comes
        guard.drain()
        assert guard.problem is StorageProblem.LOW_SPACE and guard.reason().startswith("low_space: 2.0 MB free")
        free["bytes"] = 100 * MB
        guard.drain()
        assert guard.problem is None and guard.reason() == ""
    finally:
        outbox.close()

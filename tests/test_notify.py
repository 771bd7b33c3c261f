"""sd_notify protocol against a real AF_UNIX datagram socket the test owns."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from microexpr.notify import Notifier


@pytest.fixture()
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_ready_status_stopping(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    notifier.ready("fps=30")
    assert notify_socket.recv(4096).decode().split("\n") == ["READY=1", "STATUS=fps=30"]
    notifier.stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_watchdog_is_rate_limited(notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", str(30_000_000))
    notifier = Notifier()
    assert notifier.watchdog_interval_s == pytest.approx(10.0)
    for _ in range(100):
        notifier.watchdog()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    notify_socket.settimeout(0.2)
    with pytest.raises(TimeoutError):
        notify_socket.recv(4096)


def test_without_systemd_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert notifier.send("READY=1") is False
    notifier.watchdog()  # must not raise


def test_a_receiver_that_stops_reading_never_blocks_the_sender(notify_socket: socket.socket) -> None:
    """Linux queues 10 datagrams per unix socket by default; past that a
    blocking sd_notify would stall the inference loop that pings."""
    import threading

    notifier = Notifier()
    done = threading.Event()

    def flood() -> None:
        for _ in range(200):
            notifier.send("WATCHDOG=1")
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(10), "sending blocked on a full notify socket"
    assert notify_socket.recv(4096) == b"WATCHDOG=1"  # what was queued still arrives

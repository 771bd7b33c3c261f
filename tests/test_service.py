"""The daemon end to end: real model on real face pixels, real mosquitto,
real signals to a real ``python -m microexpr run`` process, and a real
``NOTIFY_SOCKET`` bound by the test the way systemd binds it.

Live runs use ``replay:FILE`` (the real clip played at its own rate as a
live, looping source), so the daemon keeps producing events until it is
signalled. Every test has its own device id, so retained messages never
cross tests on the shared session broker. No wall-clock assertions: the
deadlines below are generous waits, not limits.
"""

from __future__ import annotations

import json
import re
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fixtures.broker import Broker, wait_until
from fixtures.openai_server import OpenAIServer, Reply
from fixtures.toml import toml_text

from microexpr import cli
from microexpr.capture import VideoFileSource, open_camera
from microexpr.config import Config, parse_config
from microexpr.errors import ExitCode
from microexpr.events import PayloadKind, validate
from microexpr.health import Health
from microexpr.models import provision
from microexpr.notify import Notifier
from microexpr.service import Service
from microexpr.service.daemon import use_overlap
from microexpr.suppression import Suppression

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
#: Start-up loads the model on a shared, busy machine: wait generously.
START_S = 90.0
EVENT_S = 60.0
STOP_S = 30.0
#: Environment systemd would set; never inherited from the test's own environment.
_SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID",
                "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")


# --------------------------------------------------------------------------
# Helpers


def daemon_config(
    tmp_path: Path, *, device_id: str, source: str, model_path: Path, port: int, **sections: Mapping[str, Any]
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "device_id": device_id,
        "source": {"uri": source, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},
        "model": {"path": str(model_path)},
        "mqtt": {"host": "127.0.0.1", "port": port, "stats_interval_s": 1.0, "keepalive_s": 5},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
    }
    for name, table in sections.items():
        data[name] = {**data.get(name, {}), **table}
    return data


class NotifyListener:
    """What systemd does for ``Type=notify``: bind a datagram socket, record what arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._messages: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append(data.decode().split("\n"))

    def messages(self) -> list[list[str]]:
        with self._lock:
            return [list(m) for m in self._messages]

    def lines(self) -> list[str]:
        return [line for message in self.messages() for line in message]

    def count(self, line: str) -> int:
        return self.lines().count(line)

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float, what: str) -> None:
        wait_until(lambda: predicate(self.lines()), timeout, what)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


class Daemon:
    """``python -m microexpr run ...`` with stdout and stderr in files (never a full pipe)."""

    def __init__(self, workdir: Path, args: list[str], *, env: Mapping[str, str] | None = None, name: str = "daemon") -> None:
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        environment = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_ENV}
        environment.update(env or {})
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "microexpr", *args], cwd=ROOT, env=environment, stdout=out, stderr=err
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = STOP_S) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            pytest.fail(f"daemon did not exit within {timeout} s; stderr:\n{self.stderr()[-3000:]}")

    def stdout_lines(self) -> list[str]:
        return [line for line in self.out_path.read_text(errors="replace").splitlines() if line.strip()]

    def printed(self) -> list[dict[str, Any]]:
        """JSON lines printed so far (a line still being written is left out)."""
        out = []
        for line in self.stdout_lines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        def check() -> bool:
            if not self.alive():
                pytest.fail(f"daemon exited with {self.process.returncode} while waiting for {what}:\n"
                            f"{self.stderr()[-3000:]}")
            return predicate()

        wait_until(check, timeout, what, interval=0.05)

    def close(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def daemons() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(workdir: Path, args: list[str], **kwargs: Any) -> Daemon:
        daemon = Daemon(workdir, args, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def device() -> str:
    return f"svc-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------
# Bad configuration: exit 78, one line


@pytest.mark.parametrize(
    ("content", "extra_args", "key"),
    [
        ('[mqtt]\nport = "1883"\n', [], "mqtt.port"),
        ("[mqtt]\nhots = \"x\"\n", [], "mqtt.hots"),
        ("[source]\nfps = -1.0\n", [], "source.fps"),
        ('[mqtt]\npassword = "hunter2"\n', [], "mqtt.password"),
        ("", [], "source.uri"),  # nothing to watch
        ("", ["--source", "0", "--device-id", "Not An Id"], "device_id"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, extra_args: list[str], key: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(content)
    code = cli.main(["run", "--config", str(path), *extra_args])
    captured = capsys.readouterr()
    assert code == ExitCode.CONFIG
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"microexpr: error: {key}"), lines[0]
    assert captured.out == ""


def test_bad_configuration_in_a_real_process(tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[source]\nuri = "0"\n[engine]\nmicro_max_s = 9.0\n')
    daemon = daemons(tmp_path, ["run", "--config", str(path)])
    assert daemon.wait() == ExitCode.CONFIG
    lines = daemon.stderr().splitlines()
    assert len(lines) == 1, daemon.stderr()
    assert lines[0].startswith("microexpr: error: engine.micro_max_s:")
    assert daemon.stdout_lines() == []


def test_missing_media_file_is_one_line_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.mp4"
    code = cli.main(["run", "--source", str(missing), "--outbox", str(tmp_path / "o.sqlite")])
    lines = capsys.readouterr().err.splitlines()
    assert code == ExitCode.NO_INPUT
    assert len(lines) == 1 and str(missing) in lines[0], lines


# --------------------------------------------------------------------------
# Live daemon: notify protocol, events, availability, stats, SIGHUP, SIGTERM


def _kind(payload: Mapping[str, Any]) -> PayloadKind:
    return PayloadKind.EVENT_REFINED if "agrees_with_local" in payload else PayloadKind.EVENT


def test_live_daemon_notify_events_reasoner_reload_and_sigterm(
    tmp_path: Path,
    broker: Broker,
    make_subscriber: Callable[..., Any],
    notify: NotifyListener,
    daemons: Callable[..., Daemon],
    openai_server: OpenAIServer,
    smile_clip: Path,
    model_path: Path,
) -> None:
    device_id = device()
    base = f"microexpr/{device_id}"
    subscriber = make_subscriber(broker, [f"{base}/#"])
    # Cites no AU: which AUs an episode of the replay holds is the engine's business, not this test's.
    openai_server.default = Reply.answer(label="happiness", confidence=0.7, aus_cited=())
    data = daemon_config(
        tmp_path, device_id=device_id, source=f"replay:{smile_clip}", model_path=model_path, port=broker.port,
        # Every episode counts as ambiguous, so the reasoner is asked about each.
        engine={"ambiguous_confidence": 1.0},
        reasoner={"enabled": True, "base_url": openai_server.base_url,
                  "queue_path": str(tmp_path / "reasoner.sqlite3")},
    )
    config = tmp_path / "config.toml"
    config.write_text(toml_text(data))
    daemon = daemons(
        tmp_path, ["run", "--config", str(config), "--print-events"],
        env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "300000"},
    )

    daemon.wait_until(lambda: "READY=1" in notify.lines(), START_S, "READY=1")
    # READY once the model is loaded and the outbox open; "ok" only after a frame went through.
    ready_message = next(m for m in notify.messages() if "READY=1" in m)
    assert any(line.startswith("STATUS=starting: waiting for the first frame") for line in ready_message), ready_message
    before = notify.lines()[: notify.lines().index("READY=1")]
    assert any(line.startswith("STATUS=starting: loading model") for line in before), before
    assert not any(line.startswith("STATUS=ok") for line in before), before
    daemon.wait_until(lambda: any(line.startswith("STATUS=ok") for line in notify.lines()), EVENT_S, "STATUS=ok")

    # The watchdog is pinged from the inference loop (every WATCHDOG_USEC/3).
    pings = notify.count("WATCHDOG=1")
    daemon.wait_until(lambda: notify.count("WATCHDOG=1") >= pings + 3, EVENT_S, "watchdog pings")

    # Events: on MQTT, valid against the shipped schema, and printed as the same JSON.
    daemon.wait_until(lambda: bool(subscriber.on(f"{base}/event")), EVENT_S, "an event on MQTT")
    received = json.loads(subscriber.on(f"{base}/event")[0].text)
    validate(received, PayloadKind.EVENT)
    assert received["device_id"] == device_id
    daemon.wait_until(lambda: any(p.get("event_id") == received["event_id"] for p in daemon.printed()),
                      EVENT_S, "the event printed on stdout")
    printed = next(p for p in daemon.printed() if p.get("event_id") == received["event_id"] and _kind(p) is PayloadKind.EVENT)
    assert printed == received

    # Availability: retained "online" for a subscriber arriving now; retained stats that validate.
    late = make_subscriber(broker, [f"{base}/availability", f"{base}/stats"])
    late.wait_for(lambda msgs: any(m.topic == f"{base}/stats" for m in msgs), EVENT_S, "retained stats")
    availability = late.on(f"{base}/availability")
    assert availability and availability[0].retain and availability[0].text == "online"
    stats = json.loads(late.on(f"{base}/stats")[-1].text)
    validate(stats, PayloadKind.STATS)
    assert stats["health"] == Health.OK.value and stats["frames"] > 0
    assert "total" in stats["latency_ms"] and "tracker" in stats["latency_ms"]
    assert any(line.startswith("STATUS=ok") and "fps" in line for line in notify.lines())
    assert stats["reasoner"] is not None
    assert set(stats["suppressed"]) == {r.value for r in Suppression}  # why episodes were withheld, per reason
    if use_overlap(parse_config(data).tracker):  # the daemon's own rule (on by default with 2+ cores)
        assert set(stats["analysis"]) == {"promoted", "yielding"} and stats["analysis"]["yielding"] in (0, 1)
    else:
        assert stats["analysis"] == {}

    # The ambiguous episode went to the (local) OpenAI API; its refinement is
    # published on event/refined with the same event id.
    daemon.wait_until(lambda: bool(subscriber.on(f"{base}/event/refined")), EVENT_S, "a refined event")
    refined = json.loads(subscriber.on(f"{base}/event/refined")[0].text)
    validate(refined, PayloadKind.EVENT_REFINED)
    event_ids = {json.loads(m.text)["event_id"] for m in subscriber.on(f"{base}/event")}
    assert refined["event_id"] in event_ids
    assert refined["emotion"] == "happiness" and refined["stage"] == "llm"

    # SIGHUP: live keys are applied (the engine's by the analysis thread at
    # its next frame), a restart key is reported, the daemon runs on.
    data["mqtt"]["stats_interval_s"] = 2.0
    data["mqtt"]["keepalive_s"] = 7
    data["engine"]["micro_max_s"] = 0.4
    config.write_text(toml_text(data))
    daemon.send(signal.SIGHUP)
    daemon.wait_until(lambda: "needs a restart" in daemon.stderr(), EVENT_S, "the reload to be logged")
    daemon.wait_until(lambda: "engine settings applied: micro_max_s 0.4" in daemon.stderr(), EVENT_S,
                      "the engine settings applied by the pipeline")
    err = daemon.stderr()
    assert re.search(r"reload: applied .*engine\.micro_max_s", err), err[-2000:]
    assert re.search(r"reload: applied .*mqtt\.stats_interval_s", err), err[-2000:]
    assert "mqtt.keepalive_s changed; needs a restart" in err
    assert "RELOADING=1" in notify.lines()
    # An invalid file on SIGHUP is logged and the running configuration kept.
    config.write_text('[mqtt]\nport = "nope"\n')
    daemon.send(signal.SIGHUP)
    daemon.wait_until(lambda: "keeping the running configuration" in daemon.stderr(), EVENT_S, "invalid reload logged")
    pings = notify.count("WATCHDOG=1")
    daemon.wait_until(lambda: notify.count("WATCHDOG=1") > pings, EVENT_S, "watchdog after a bad reload")

    # SIGTERM: STOPPING=1, "offline" published (a clean stop, not the will), exit 0.
    daemon.send(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.stderr()[-3000:]
    assert "STOPPING=1" in notify.lines()
    subscriber.wait_for(
        lambda msgs: [m.text for m in msgs if m.topic == f"{base}/availability"][-1:] == ["offline"],
        STOP_S, "offline after SIGTERM",
    )
    # The last retained stats say "stopped" and no count went backwards
    # (dropped_frames once fell from 72 to 2: read after the camera was closed).
    seen = [json.loads(m.text) for m in subscriber.on(f"{base}/stats")]
    final = make_subscriber(broker, [f"{base}/stats"])
    final.wait_for(lambda msgs: bool(msgs), EVENT_S, "the last retained stats")
    last = json.loads(final.on(f"{base}/stats")[-1].text)
    validate(last, PayloadKind.STATS)
    assert last["health"] == Health.STOPPED.value
    assert last["dropped_frames"] >= max(p["dropped_frames"] for p in seen)
    assert last["frames"] >= max(p["frames"] for p in seen)
    assert "Traceback" not in daemon.stderr()
    # Everything printed is a valid event or refinement.
    for payload in daemon.printed():
        validate(payload, _kind(payload))


# --------------------------------------------------------------------------
# Nothing lost: SIGKILL with the broker down, replay after restart; last will


def test_outbox_replayed_after_sigkill_and_last_will_on_kill_9(
    tmp_path: Path,
    make_broker: Callable[..., Broker],
    make_subscriber: Callable[..., Any],
    daemons: Callable[..., Daemon],
    smile_clip: Path,
    model_path: Path,
) -> None:
    broker = make_broker()
    broker.stop()  # the broker is down while the first daemon spots events
    device_id = device()
    base = f"microexpr/{device_id}"
    config = tmp_path / "config.toml"
    # The sequential path (tracker.overlap off): the same guarantees.
    config.write_text(toml_text(daemon_config(tmp_path, device_id=device_id, source=f"replay:{smile_clip}",
                                         model_path=model_path, port=broker.port, tracker={"overlap": False})))

    first = daemons(tmp_path, ["run", "--config", str(config), "--print-events"], name="first")
    first.wait_until(lambda: len(first.printed()) >= 2, START_S + EVENT_S, "two events printed by the first daemon")
    first.send(signal.SIGKILL)
    first.wait()
    lost_ids = {p["event_id"] for p in first.printed()}
    assert "no mqtt broker answers" in first.stderr()
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        stored = {row[0] for row in db.execute("SELECT event_id FROM outbox")}
    assert lost_ids <= stored  # every printed event was committed before it was printed

    broker.start()
    subscriber = make_subscriber(broker, [f"{base}/event", f"{base}/availability"])
    second = daemons(tmp_path, ["run", "--config", str(config), "--no-print-events"], name="second")
    second.wait_until(
        lambda: lost_ids <= {json.loads(m.text)["event_id"] for m in subscriber.on(f"{base}/event")},
        START_S + EVENT_S, f"the {len(lost_ids)} events of the killed daemon",
    )
    payloads = [json.loads(m.text) for m in subscriber.on(f"{base}/event")]
    for payload in payloads:
        validate(payload, PayloadKind.EVENT)
    # Duplicates (at-least-once) may only repeat an id with identical content.
    by_id: dict[str, dict[str, Any]] = {}
    for payload in payloads:
        assert by_id.setdefault(payload["event_id"], payload) == payload
    assert second.stdout_lines() == []

    # kill -9 while connected: the broker publishes the last will.
    subscriber.wait_for(lambda msgs: any(m.topic == f"{base}/availability" and m.text == "online" for m in msgs),
                        EVENT_S, "online from the second daemon")
    second.send(signal.SIGKILL)
    second.wait()
    subscriber.wait_for(
        lambda msgs: [m.text for m in msgs if m.topic == f"{base}/availability"][-1:] == ["offline"],
        EVENT_S, "the last will (offline) after kill -9",
    )


# --------------------------------------------------------------------------
# `make run` without configuration: end of the clip → flush → exit 0


@pytest.fixture(scope="session")
def provisioned_models(tmp_path_factory: pytest.TempPathFactory, model_mirror: Path) -> Path:
    """A models directory as ``microexpr provision-model`` leaves it."""
    directory = tmp_path_factory.mktemp("models")
    provision(models_dir=directory, mirror=model_mirror, url="")
    return directory


def _broker_on_default_port() -> bool:
    try:
        with socket.create_connection(("localhost", 1883), timeout=0.5):
            return True
    except OSError:
        return False


def test_default_run_on_the_clip_prints_events_and_exits_0(
    tmp_path: Path, daemons: Callable[..., Daemon], smile_clip: Path, provisioned_models: Path
) -> None:
    """What `make run` does: no configuration file, a file source, maybe no broker."""
    state = tmp_path / "state"
    broker_present = _broker_on_default_port()
    daemon = daemons(
        tmp_path, ["run", "--source", str(smile_clip)],
        env={"XDG_STATE_HOME": str(state), "MICROEXPR_MODELS_DIR": str(provisioned_models)},
    )
    assert daemon.wait(START_S) == 0, daemon.stderr()[-3000:]
    printed = daemon.printed()
    assert len(printed) == len(daemon.stdout_lines()) >= 1, daemon.stdout_lines()
    for payload in printed:
        validate(payload, PayloadKind.EVENT)
    err = daemon.stderr()
    assert "Traceback" not in err
    outbox = state / "microexpr" / "outbox.sqlite"  # the user state dir, as config.py resolves it
    with sqlite3.connect(outbox) as db:
        waiting = {row[0] for row in db.execute("SELECT event_id FROM outbox")}
    if broker_present:
        # A broker answered on localhost: the events were delivered before exit.
        assert not waiting & {p["event_id"] for p in printed}
    else:
        assert err.count("no mqtt broker answers") == 1, err
        assert {p["event_id"] for p in printed} <= waiting


# --------------------------------------------------------------------------
# Camera loss (in-process, fake capture device serving real face frames)


class RecordingNotifier(Notifier):
    """The real Notifier's logic with its datagrams recorded instead of sent."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.watchdog_interval_s = 0.05
        self.sent: list[str] = []
        self._sent_lock = threading.Lock()

    def send(self, *lines: str) -> bool:
        with self._sent_lock:
            self.sent.extend(lines)
        return True

    def lines(self) -> list[str]:
        with self._sent_lock:
            return list(self.sent)


class FakeCamera:
    """A capture device that can be unplugged: serves the real clip's frames at ~30 fps."""

    def __init__(self, images: list[Any]) -> None:
        self.images = images
        self.plugged = threading.Event()
        self.opens = 0
        self._index = 0

    def factory(self) -> FakeCamera.Device:
        self.opens += 1
        return FakeCamera.Device(self, self.plugged.is_set())

    class Device:
        def __init__(self, camera: FakeCamera, opened: bool) -> None:
            self.camera = camera
            self.opened = opened

        def read(self) -> tuple[bool, Any]:
            time.sleep(1 / 30)
            if not self.camera.plugged.is_set():
                return False, None
            camera = self.camera
            image = camera.images[camera._index % len(camera.images)]
            camera._index += 1
            return True, image

        def isOpened(self) -> bool:  # noqa: N802
            return self.opened

        def release(self) -> None:
            self.opened = False


def test_camera_absent_then_lost_then_back(tmp_path: Path, smile_clip: Path, model_path: Path) -> None:
    with VideoFileSource(smile_clip) as clip:
        images = [frame.image for frame in clip]
    camera = FakeCamera(images)
    config: Config = parse_config(
        {
            "device_id": device(),
            "source": {"uri": "0", "reconnect_initial_s": 0.1, "reconnect_max_s": 0.4},
            "model": {"path": str(model_path)},
            "mqtt": {"enabled": False},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        }
    )
    notifier = RecordingNotifier()
    service = Service(
        config,
        source_opener=lambda: open_camera(0, factory=camera.factory, read_timeout=2.0, max_read_failures=3),
        notifier=notifier,
    )
    outcome: list[int] = []
    runner = threading.Thread(target=lambda: outcome.append(service.run(install_signals=False)), name="service-under-test")
    runner.start()
    try:
        # No camera at start: READY once the model is loaded and the outbox open (boot
        # ordering must not wait on a camera), the absence a STATUS= line and health
        # no_camera; retried with backoff while the watchdog keeps being fed.
        wait_until(lambda: camera.opens >= 4, START_S, "reconnect attempts with no camera")
        assert service.health.value is Health.NO_CAMERA
        lines = notifier.lines()
        assert lines.count("READY=1") == 1
        assert lines[lines.index("READY=1") + 1].startswith("STATUS=no_camera"), lines
        assert lines.count("WATCHDOG=1") >= 2
        assert not any(line.startswith("EXTEND_TIMEOUT_USEC=") for line in lines)
        assert service.stats().health == Health.NO_CAMERA.value
        delays = [line.rsplit("retrying in ", 1)[1] for line in lines if "retrying in" in line]
        assert "0.4 s" in delays and "0.1 s" not in delays[1:], delays  # doubled up to reconnect_max_s

        camera.plugged.set()
        wait_until(lambda: service.health.value is Health.OK, START_S, "health ok after the first frame")
        wait_until(lambda: any(line.startswith("STATUS=ok") for line in notifier.lines()), EVENT_S, "STATUS=ok")
        frames = service.metrics.frames

        camera.plugged.clear()  # unplugged mid-stream
        wait_until(lambda: service.health.value is Health.NO_CAMERA, EVENT_S, "health no_camera")
        opens = camera.opens
        pings = notifier.lines().count("WATCHDOG=1")
        wait_until(lambda: camera.opens >= opens + 2, EVENT_S, "reconnect attempts after the loss")
        assert notifier.lines().count("WATCHDOG=1") > pings  # a lost camera does not starve the watchdog
        assert any(line.startswith("STATUS=no_camera") for line in notifier.lines())

        camera.plugged.set()
        wait_until(lambda: service.health.value is Health.OK and service.metrics.frames > frames + 5,
                   EVENT_S, "frames after the camera is back")
        assert notifier.lines().count("READY=1") == 1
        assert service.stats().health == Health.OK.value
        validate(service.stats().to_payload(), PayloadKind.STATS)
    finally:
        service.request_stop("test")
        runner.join(STOP_S)
    assert not runner.is_alive()
    assert outcome == [0]
    assert "STOPPING=1" in notifier.lines()
    assert service.health.value is Health.STOPPED


def test_notifier_failure_never_reaches_the_loops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notify socket that went away (ECONNREFUSED) is ignored: the inference
    loop pings the watchdog on every frame and must not die of it."""
    gone = tmp_path / "gone.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(gone))  # bound, then closed: the path stays, nobody listens
    monkeypatch.setenv("NOTIFY_SOCKET", str(gone))
    monkeypatch.setenv("WATCHDOG_USEC", "3000")
    notifier = Notifier()
    assert notifier.send("STATUS=x") is False
    notifier.watchdog()
    notifier.stopping()


# --------------------------------------------------------------------------
# The last stats after a stop (issue 13 item 5)


class _DroppingCamera:
    """A live source that has dropped frames; its count must survive close()."""

    name = "camera 0"
    is_live = True

    def __init__(self, dropped: int) -> None:
        self.dropped_frames = dropped
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.dropped_frames += 1  # the reader thread dropped one more while stopping


def test_last_stats_keep_the_closed_cameras_drops_and_say_stopped(tmp_path: Path) -> None:
    config = parse_config({"device_id": device(), "source": {"uri": "0"}, "mqtt": {"enabled": False},
                           "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
    service = Service(config)
    camera = _DroppingCamera(72)
    service._source = camera  # type: ignore[assignment]
    service.metrics.queue_drop()
    assert service.stats().dropped_frames == 73
    service._close_source()  # what the shutdown does before the last stats
    assert camera.closed and service._source is None
    assert service.stats().dropped_frames == 74
    assert service.health.set(Health.STOPPING)
    assert not service.health.set(Health.OK)  # stopping is not undone by a late frame
    assert service.health.set(Health.STOPPED)
    assert not service.health.set(Health.STOPPING) and not service.health.set(Health.OK)
    payload = service.stats().to_payload()
    validate(payload, PayloadKind.STATS)
    assert payload["health"] == "stopped"


def test_docs_stats_example_has_the_payloads_keys(tmp_path: Path) -> None:
    """docs/mqtt.md's ``stats`` example shows the keys the daemon sends (it once showed ``queues.episodes``)."""
    text = (ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")
    example = json.loads(re.search(r"<!-- payload: stats -->\s*```json\n(.*?)```", text, flags=re.S).group(1))
    config = parse_config({"device_id": device(), "mqtt": {"enabled": False},
                           "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
    payload = Service(config).stats().to_payload()
    assert set(example) == set(payload)
    # "reasoner" is added to queues when the reasoner is on (the example shows it on)
    assert set(example["queues"]) == set(payload["queues"]) | {"reasoner"}

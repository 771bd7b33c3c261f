"""The status page and ``/metrics`` (issue 13): real HTTP, real pipeline output, headless Chromium.

The server is fed what the real pipeline produces on the real smile clip
(frames, timings, AU frames, events), scraped with a real HTTP client and
parsed with ``prometheus_client.parser``. Bad requests go over a raw socket
so nothing in the client tidies them up. The daemon test runs the real
:class:`~microexpr.service.Service` on a real-time replay of the clip and
looks at the page in headless Chromium while it plays.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.broker import wait_until
from fixtures.chromium import Chromium
from microexpr.capture import Frame, open_source
from microexpr.config import Config, config_problems, parse_config
from microexpr.errors import ConfigError
from microexpr.events import Event, LatencyStats, ReasonerStats, Stats
from microexpr.health import Health
from microexpr.pipeline import Pipeline, PipelineResult
from microexpr.service import Service
from microexpr.service.items import emitted_episodes
from microexpr.status import BrokerState, StatusServer, StatusSources, open_status_server
from microexpr.status.auth import BasicAuth


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_config(tmp_path: Path, **status: Any) -> Config:
    return parse_config({
        "device_id": "status-test",
        "mqtt": {"enabled": False},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        "reasoner": {"max_requests_per_day": 123},
        "status": {"enabled": True, "port": free_port(), **status},
    })


# --------------------------------------------------------------------------
# The real pipeline on the real clip, once per module


@dataclass(frozen=True)
class Played:
    frames: tuple[Frame, ...]
    results: tuple[PipelineResult, ...]
    events: tuple[Event, ...]
    #: (episode, decision) of each event, to build more events like it.
    spotted: tuple[tuple[Any, Any], ...]


@pytest.fixture(scope="module")
def played(smile_clip: Path, model_path: Path) -> Played:
    frames: list[Frame] = []
    results: list[PipelineResult] = []
    spotted = []
    with Pipeline.create(model_path=model_path) as pipeline, open_source(smile_clip) as source:
        for frame in source:
            result = pipeline.process(frame)
            frames.append(frame)
            results.append(result)
            spotted.extend(result.episodes)
        spotted.extend(pipeline.finish())
    emitted = emitted_episodes(spotted)
    events = tuple(Event.from_episode(e.episode, e.decision, device_id="status-test") for e in emitted)
    assert events, "the smile clip must give at least one episode"
    return Played(tuple(frames), tuple(results), events, tuple((e.episode, e.decision) for e in emitted))


class FakeDaemonState:
    """The daemon side of StatusSources: a real Stats built from what was fed."""

    def __init__(self) -> None:
        self.frames = 0
        self.health = Health.OK.value
        self.outbox_depth = 3
        self.broker = BrokerState.OFFLINE
        self.calls = 0
        self.analysis = {"promoted": 11, "yielding": 1}

    def stats(self) -> Stats:
        self.calls += 1
        return Stats(
            device_id="status-test", uptime_s=12.5, fps=29.5, frames=self.frames, dropped_frames=4,
            latency={"total": LatencyStats.from_seconds([0.010, 0.012, 0.020])}, queues={"frames": 1},
            outbox_depth=self.outbox_depth, outbox_dropped=2, events=1, health=self.health,
            reasoner=ReasonerStats(state="idle", queue_depth=1, requests_today=7, tokens_today=900),
            suppressed={"blink": 5}, flow={"ran": 40, "skipped": 60, "backfilled": 2},
            analysis=self.analysis,
        )

    def sources(self) -> StatusSources:
        return StatusSources(stats=self.stats, broker=lambda: self.broker)


def feed(server: StatusServer, played: Played, state: FakeDaemonState) -> None:
    for frame, result in zip(played.frames, played.results):
        timings = result.timings.as_seconds()
        timings["total"] = sum(timings.values())
        server.on_frame(timings, bool(result.observation.faces), result.aus, frame)
        state.frames += 1
    for event in played.events:
        server.on_event(event)


@pytest.fixture
def state() -> FakeDaemonState:
    return FakeDaemonState()


@pytest.fixture
def server(tmp_path: Path, played: Played, state: FakeDaemonState) -> Iterator[StatusServer]:
    srv = StatusServer(status_config(tmp_path, preview=True), state.sources()).start()
    try:
        feed(srv, played, state)
        yield srv
    finally:
        srv.close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` parsed: sample name → {sorted labels: value}."""
    code, head, body = get(url + "metrics", headers)
    assert code == 200 and head["Content-Type"].startswith("text/plain"), (code, head)
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def raw(port: int, data: bytes) -> tuple[int, bytes]:
    """Send bytes as they are; the status code and the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    return int(answer.split(b" ", 2)[1]), answer


# --------------------------------------------------------------------------
# Configuration


def test_status_is_off_and_loopback_by_default() -> None:
    config = Config()
    assert config.status.enabled is False and config.status.bind == "127.0.0.1" and not config.status.preview


@pytest.mark.parametrize(("section", "problem"), [
    ({"bind": "0.0.0.0"}, "status.bind: 0.0.0.0 is not a loopback address; set status.allow_remote = true"),
    ({"bind": "192.0.2.7", "allow_remote": True, "preview": True}, "status.preview: camera pixels are served on a loopback bind only"),
    ({"bind": "localhost"}, 'status.bind: must be an IP address'),
    ({"username": "a:b"}, "status.username: must not contain ':'"),
    ({"port": 0}, "status.port: must be 1..65535, got 0"),
    ({"live_interval_s": 0.0}, "status.live_interval_s: must be a number 0.05..10"),
])
def test_exposure_mistakes_are_one_line_each(section: dict[str, Any], problem: str) -> None:
    problems = config_problems({"status": section})
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_remote_bind_is_accepted_when_said_twice() -> None:
    assert config_problems({"status": {"bind": "0.0.0.0", "allow_remote": True, "username": "op"}}) == []
    assert config_problems({"status": {"bind": "::1", "preview": True}}) == []


def test_a_user_without_a_password_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("MICROEXPR_STATUS_PASSWORD", raising=False)
    assert BasicAuth.from_secret("") is None
    with pytest.raises(ConfigError, match="status.username is set but no password is: put the status page password"):
        BasicAuth.from_secret("op")
    with ExitStack() as stack, pytest.raises(ConfigError):
        open_status_server(status_config(tmp_path, username="op"), FakeDaemonState().sources(), stack)
    (tmp_path / "status_password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    auth = BasicAuth.from_secret("op")
    assert auth is not None
    assert auth.check("Basic " + base64.b64encode(b"op:from-credential").decode())


def test_a_taken_port_leaves_the_daemon_without_its_page(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = status_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", config.status.port))
        taken.listen(1)
        with ExitStack() as stack:
            assert open_status_server(config, FakeDaemonState().sources(), stack) is None
    assert f"cannot listen on 127.0.0.1:{config.status.port}" in caplog.text


# --------------------------------------------------------------------------
# /metrics, JSON, event stream


def test_metrics_scrape_parses_and_counts_what_was_fed(server: StatusServer, played: Played,
                                                        state: FakeDaemonState) -> None:
    samples = scrape(server.url)
    n = len(played.frames)
    faces = sum(bool(r.observation.faces) for r in played.results)
    assert samples["microexpr_frames_total"][()] == n
    assert samples["microexpr_frames_with_face_total"][()] == faces
    for stage in ("tracker", "aus", "motion", "baseline", "spotter", "classify", "total"):
        assert samples["microexpr_stage_latency_seconds_count"][(("stage", stage),)] == n
    tracker_sum = sum(r.timings.tracker_ns for r in played.results) / 1e9
    assert samples["microexpr_stage_latency_seconds_sum"][(("stage", "tracker"),)] == pytest.approx(tracker_sum)
    inf = samples["microexpr_stage_latency_seconds_bucket"][(("le", "+Inf"), ("stage", "total"))]
    assert inf == n
    by_label: dict[tuple[str, str], int] = {}
    for event in played.events:
        key = (event.kind.value, event.emotion.value)
        by_label[key] = by_label.get(key, 0) + 1
    episodes = samples["microexpr_episodes_total"]
    assert {(dict(k)["kind"], dict(k)["label"]): v for k, v in episodes.items()} == by_label
    assert samples["microexpr_ambiguous_episodes_total"][()] == sum(e.ambiguous for e in played.events)
    # read at scrape time from the daemon's stats
    assert samples["microexpr_outbox_depth"][()] == 3
    assert samples["microexpr_dropped_frames_total"][()] == 4
    assert samples["microexpr_suppressed_total"][(("reason", "blink"),)] == 5
    assert samples["microexpr_health"][(("state", "ok"),)] == 1 and samples["microexpr_health"][(("state", "degraded"),)] == 0
    assert samples["microexpr_broker"][(("state", "offline"),)] == 1
    assert samples["microexpr_reasoner_requests_today"][()] == 7
    assert samples["microexpr_reasoner_budget_requests_per_day"][()] == 123
    assert samples["microexpr_reasoner_budget_exhausted"][()] == 0
    assert {dict(k)["decision"]: v for k, v in samples["microexpr_flow_frames_total"].items()} == {
        "ran": 40, "skipped": 60, "backfilled": 2}
    assert samples["microexpr_analysis_promoted_total"][()] == 11 and samples["microexpr_analysis_yielding"][()] == 1
    # the values move with the daemon's state; no analysis series without an analysis thread
    state.outbox_depth, state.health, state.broker = 9, Health.DEGRADED.value, BrokerState.CONNECTED
    state.analysis = {}
    again = scrape(server.url)
    assert "microexpr_analysis_promoted_total" not in again and "microexpr_analysis_yielding" not in again
    assert again["microexpr_outbox_depth"][()] == 9
    assert again["microexpr_health"][(("state", "degraded"),)] == 1
    assert again["microexpr_broker"][(("state", "connected"),)] == 1


def test_each_server_has_its_own_registry(tmp_path: Path, played: Played) -> None:
    a, b = FakeDaemonState(), FakeDaemonState()
    first = StatusServer(status_config(tmp_path), a.sources()).start()
    second = StatusServer(status_config(tmp_path), b.sources()).start()
    try:
        feed(first, played, a)
        assert scrape(first.url)["microexpr_frames_total"][()] == len(played.frames)
        assert scrape(second.url)["microexpr_frames_total"][()] == 0
    finally:
        first.close()
        second.close()


def test_json_routes_show_health_latency_and_episodes_with_explanation(server: StatusServer, played: Played) -> None:
    code, head, body = get(server.url + "api/status")
    assert code == 200 and head["Content-Type"] == "application/json"
    status = json.loads(body)
    assert status["health"] == "ok" and status["broker"] == "offline" and status["fps"] == 29.5
    assert status["latency_ms"]["total"]["count"] == 3 and status["reasoner"]["state"] == "idle"
    code, _head, body = get(server.url + "api/episodes")
    episodes = json.loads(body)["episodes"]
    assert [e["event_id"] for e in episodes] == [e.event_id for e in reversed(played.events)]
    first = played.events[0]
    shown = episodes[-1]
    assert shown["emotion"] == first.emotion.value and shown["explanation"] == first.explanation
    assert [a["au"] for a in shown["aus"]] == [a.au.code for a in first.aus]
    code, head, body = get(server.url)
    assert code == 200 and head["Content-Type"].startswith("text/html")
    assert b"new EventSource(\"events\")" in body and b"http://" not in body and b"https://" not in body


def test_recent_episodes_are_bounded(tmp_path: Path, played: Played) -> None:
    state = FakeDaemonState()
    srv = StatusServer(status_config(tmp_path, recent_episodes=2), state.sources()).start()
    try:
        event = played.events[0]
        ids = []
        for i in range(5):
            copy = Event.from_episode(*_episode_of(played), device_id="status-test", event_id=f"id-{i}")
            srv.on_event(copy)
            ids.append(copy.event_id)
        assert [e["event_id"] for e in srv.feed.episodes()] == ["id-4", "id-3"]
        assert event.event_id not in ids
        counted = scrape(srv.url)["microexpr_episodes_total"]
        assert sum(counted.values()) == 5  # the page forgets, the counter does not
    finally:
        srv.close()


def _episode_of(played: Played) -> tuple[Any, Any]:
    return played.spotted[0]


def read_events(response: http.client.HTTPResponse, wanted: set[str], timeout_s: float) -> dict[str, list[dict[str, Any]]]:
    """Server-sent events off an open stream until each wanted name arrived."""
    seen: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout_s
    name = ""
    while not wanted <= set(seen) and time.monotonic() < deadline:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            seen.setdefault(name, []).append(json.loads(line[6:]))
    return seen


def test_event_stream_sends_status_live_aus_and_new_episodes(server: StatusServer, played: Played) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/events")
    response = conn.getresponse()
    try:
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
        seen = read_events(response, {"status", "aus", "episode"}, 10)
        assert seen["status"][0]["frames"] == len(played.frames)
        last = played.results[-1].aus
        assert seen["aus"][0]["frame"] == last.frame_index
        assert {a["au"] for a in seen["aus"][0]["aus"]} == {au.code for au in last.intensity}
        assert len(seen["episode"]) == len(played.events)
        # a frame and an episode that arrive later reach the open stream
        frame, result = played.frames[10], played.results[10]
        server.on_frame(result.timings.as_seconds(), True, result.aus, frame)
        newer = Event.from_episode(*_episode_of(played), device_id="status-test", event_id="late-one")
        server.on_event(newer)
        later = read_events(response, {"episode", "aus"}, 10)
        assert later["episode"][0]["event_id"] == "late-one"
        assert later["aus"][-1]["frame"] == result.aus.frame_index
    finally:
        conn.close()


def test_preview_is_the_latest_frame_and_off_unless_enabled(server: StatusServer, played: Played,
                                                             tmp_path: Path) -> None:
    code, head, body = get(server.url + "preview.jpg")
    assert code == 200 and head["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == played.frames[-1].image.shape
    assert float(np.abs(image.astype(int) - played.frames[-1].image.astype(int)).mean()) < 8  # JPEG of that frame
    state = FakeDaemonState()
    plain = StatusServer(status_config(tmp_path), state.sources()).start()
    try:
        feed(plain, played, state)
        assert plain.feed.latest_frame() is None  # not even kept
        assert get(plain.url + "preview.jpg")[0] == 404
    finally:
        plain.close()


# --------------------------------------------------------------------------
# Bad input


BAD_REQUESTS = [
    ("unknown path", b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ("traversal", b"GET /../../microexpr/status/page.html HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ("post", b"POST /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 405),
    ("delete", b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ("made-up method", b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ("body on get", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 413),
    ("chunked body", b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 413),
    ("long request line", b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("huge headers", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"v" * 1000) for i in range(20)) + b"\r\n", 431),
    ("too many headers", b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n", 400),
    ("no path", b"GET\r\n\r\n", 400),
    ("http/0.9", b"GET /\r\n\r\n", 400),
]


def test_bad_requests_are_4xx_counted_and_change_nothing(server: StatusServer, played: Played) -> None:
    before_status = json.loads(get(server.url + "api/status")[2])
    before_episodes = get(server.url + "api/episodes")[2]
    before = scrape(server.url)
    expected: dict[str, int] = {}
    for name, request, code in BAD_REQUESTS:
        got, answer = raw(server.port, request)
        assert got == code, (name, answer[:200])
        assert b"Traceback" not in answer
        expected[str(code)] = expected.get(str(code), 0) + 1
    got, answer = raw(server.port, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got == 405 and b"Allow: GET, HEAD" in answer
    expected["405"] += 1
    # the server still answers, and nothing it shows changed
    after = scrape(server.url)
    for key in ("microexpr_frames_total", "microexpr_episodes_total", "microexpr_stage_latency_seconds_count"):
        assert after[key] == before[key], key
    assert get(server.url + "api/episodes")[2] == before_episodes
    assert json.loads(get(server.url + "api/status")[2])["frames"] == before_status["frames"]
    rejected = {dict(k)["code"]: v for k, v in after["microexpr_status_rejected_requests_total"].items()}
    assert rejected == expected


def test_a_silent_client_does_not_hold_the_server(server: StatusServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\n")  # never finishes its headers
        assert get(server.url + "api/status")[0] == 200


def test_wrong_credentials_are_401_and_right_ones_pass(tmp_path: Path, played: Played,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("MICROEXPR_STATUS_PASSWORD", "s3cret pass")
    state = FakeDaemonState()
    config = status_config(tmp_path, username="operator")
    with ExitStack() as stack:
        srv = open_status_server(config, state.sources(), stack)
        assert srv is not None
        feed(srv, played, state)
        good = {"Authorization": "Basic " + base64.b64encode(b"operator:s3cret pass").decode()}
        for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"operator:wrong").decode()},
                        {"Authorization": "Basic " + base64.b64encode(b"intruder:s3cret pass").decode()},
                        {"Authorization": "Basic !!!not-base64"}, {"Authorization": "Bearer abc"}):
            for path in ("", "metrics", "api/status", "events", "no-such-page"):
                code, head, _body = get(srv.url + path, headers)
                assert code == 401, (headers, path)
                assert head["WWW-Authenticate"].startswith('Basic realm="microexpr"')
        assert get(srv.url, good)[0] == 200
        samples = scrape(srv.url, good)
        assert samples["microexpr_frames_total"][()] == len(played.frames)
        assert samples["microexpr_status_rejected_requests_total"][(("code", "401"),)] == 25
        assert get(srv.url + "no-such-page", good)[0] == 404


# --------------------------------------------------------------------------
# The daemon: off means not even imported; on, the page in headless Chromium


@pytest.mark.integration
def test_disabled_status_is_not_even_imported(tmp_path: Path, smile_clip: Path, model_path: Path) -> None:
    """The real service over the real clip with [status] off: neither our
    server nor prometheus_client is in sys.modules afterwards."""
    script = f"""
import sys
from microexpr.config import parse_config
from microexpr.service import Service
config = parse_config({{"device_id": "off", "source": {{"uri": {str(smile_clip)!r}}},
                        "model": {{"path": {str(model_path)!r}}}, "mqtt": {{"enabled": False}},
                        "outbox": {{"path": {str(tmp_path / 'o.sqlite')!r}}}}})
assert Service(config).run(install_signals=False) == 0
loaded = sorted(m for m in sys.modules if m.startswith(("microexpr.status", "prometheus_client")))
print("LOADED", loaded)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                          env={"PYTHONPATH": str(ROOT / "device"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LOADED []" in done.stdout, done.stdout


@pytest.mark.integration
def test_daemon_page_in_headless_chromium_moves_while_the_clip_plays(
    tmp_path: Path, smile_clip: Path, model_path: Path, chromium: Chromium,
) -> None:
    config = parse_config({
        "device_id": "status-page",
        "source": {"uri": f"replay:{smile_clip}"},
        "model": {"path": str(model_path)},
        "mqtt": {"enabled": False},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        "status": {"enabled": True, "port": free_port(), "live_interval_s": 0.1},
    })
    service = Service(config)
    outcome: list[int] = []
    runner = threading.Thread(target=lambda: outcome.append(service.run(install_signals=False)), name="service-under-test")
    runner.start()
    url = f"http://127.0.0.1:{config.status.port}/"
    try:
        wait_until(lambda: service.metrics.frames > 0, 120, "the first frame")
        chromium.open(url)
        read = """JSON.stringify({
            frames: Number(document.getElementById("frames").textContent),
            health: document.getElementById("health").textContent,
            auFrame: Number(document.body.dataset.lastAuFrame || -1),
            bars: [...document.querySelectorAll("#aus .fill")].map((b) => b.style.width),
            episodes: document.querySelectorAll("#episodes li[data-event-id]").length,
            firstEpisode: (document.querySelector("#episodes li[data-event-id]") || {}).textContent || "",
            statusUpdates: Number(document.body.dataset.statusUpdates),
            ausUpdates: Number(document.body.dataset.ausUpdates)})"""
        wait_until(lambda: json.loads(chromium.evaluate(read))["ausUpdates"] > 0, 30, "the first AU update on the page", interval=0.2)
        first = json.loads(chromium.evaluate(read))
        wait_until(lambda: json.loads(chromium.evaluate(read))["statusUpdates"] >= first["statusUpdates"] + 2,
                   30, "two more status updates", interval=0.2)
        wait_until(lambda: json.loads(chromium.evaluate(read))["episodes"] >= 1, 60, "an episode on the page", interval=0.2)
        later = json.loads(chromium.evaluate(read))
        shot = chromium.screenshot(tmp_path / "status_page.png")
        print(f"status page screenshot: {shot}")
        assert later["health"] == "ok"
        assert later["frames"] > first["frames"] > 0
        assert later["auFrame"] > first["auFrame"] >= 0
        assert later["ausUpdates"] > first["ausUpdates"]
        assert len(later["bars"]) >= 10 and later["bars"] != first["bars"]
        assert "AUs:" in later["firstEpisode"] and "evidence" in later["firstEpisode"]
        image = cv2.imread(str(shot))
        assert image is not None and image.shape[0] >= 600 and image.shape[1] >= 1000
        assert image.std() > 10  # a rendered page, not a blank one
        # the same server's /metrics, from the real daemon
        samples = scrape(url)
        assert samples["microexpr_frames_total"][()] >= later["frames"] > 0
        assert sum(samples["microexpr_episodes_total"].values()) >= 1
        assert samples["microexpr_stage_latency_seconds_count"][(("stage", "tracker"),)] > 0
        # bad requests against the live daemon: refused, and it keeps running
        frames = service.metrics.frames
        events = service.metrics.events
        for _name, request, code in BAD_REQUESTS:
            assert raw(config.status.port, request)[0] == code
        wait_until(lambda: service.metrics.frames > frames + 10, 30, "frames after the bad requests")
        assert service.health.value is Health.OK and runner.is_alive()
        assert service.metrics.events >= events
    finally:
        service.request_stop("test")
        runner.join(30)
    assert outcome == [0]
    with pytest.raises(OSError):  # the port is closed with the daemon
        socket.create_connection(("127.0.0.1", config.status.port), timeout=2).close()


def test_bench_cost_scenario_times_both_arms_on_the_same_frames(smile_clip: Path, model_path: Path) -> None:
    """``microexpr bench``'s status scenario: one pass off, one on, the server
    really serving a stream and scrapes meanwhile; no wall-clock assertion."""
    from microexpr.bench import load_frames
    from microexpr.status.cost import measure_status_cost

    frames = load_frames(smile_clip)
    cost = measure_status_cost(frames, model_path=model_path, passes=1)
    report = cost.report()
    assert len(cost.off) == len(cost.on) == len(cost.hooks) == len(frames)
    assert all(h < f for h, f in zip(cost.hooks, cost.on))  # the hooks are part of the timed frame
    assert cost.stream_bytes > 0  # the event stream was open and sent something
    assert report["episodes"]["on"] == report["episodes"]["off"] >= 1  # same frames, same episodes
    assert 0 < report["hooks_share_of_frame"] < 1
    assert report["ratio_p50_on_vs_off"] > 0 and report["ratio_cpu_per_frame_on_vs_off"] > 0


def test_head_has_no_body_and_streams_are_capped(server: StatusServer) -> None:
    from microexpr.status.server import MAX_STREAMS

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("HEAD", "/metrics")
    response = conn.getresponse()
    assert response.status == 200 and int(response.getheader("Content-Length")) > 0 and response.read() == b""
    conn.close()
    streams = []
    try:
        for _ in range(MAX_STREAMS):
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            c.request("GET", "/events")
            r = c.getresponse()
            assert r.status == 200
            # Keep the response: with "Connection: close" it owns the socket,
            # and a freed response closes it, which frees the server's slot.
            streams.append((c, r))
        assert get(server.url + "events")[0] == 503
        assert get(server.url + "api/status")[0] == 200  # the rest of the page still answers
    finally:
        for c, r in streams:
            r.close()
            c.close()
    wait_until(lambda: _stream_opens(server), 10,
               "a stream slot after the others closed", interval=0.2)


def _stream_opens(server: StatusServer) -> bool:
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        c.request("GET", "/events")
        return c.getresponse().status == 200
    finally:
        c.close()


@pytest.mark.integration
def test_run_refuses_a_status_user_without_password_with_exit_78(tmp_path: Path, smile_clip: Path) -> None:
    """The real command: one line, exit 78 (systemd does not restart it), before the model loads."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'device_id = "no-pass"\n[source]\nuri = {json.dumps(str(smile_clip))}\n[mqtt]\nenabled = false\n'
        f'[outbox]\npath = {json.dumps(str(tmp_path / "o.sqlite"))}\n'
        f'[status]\nenabled = true\nport = {free_port()}\nusername = "operator"\n'
    )
    env = {"PYTHONPATH": str(ROOT / "device"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "microexpr", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 78, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "status.username is set but no password is" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "model loaded" not in done.stderr
    assert done.stdout == ""


def test_refinement_joins_its_episode_and_failures_are_counted(server: StatusServer, played: Played,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from microexpr.events import RefinedEvent
    from microexpr.facs import AU, Emotion

    event = played.events[0]
    refined = RefinedEvent(event_id=event.event_id, device_id="status-test", emotion=Emotion.HAPPINESS,
                           confidence=0.8, rationale="AU6 with AU12: a felt smile", aus_cited=(AU(12),),
                           local_emotion=event.emotion, model="test-model")
    server.on_refined(refined)
    stranger = RefinedEvent(event_id="not-listed", device_id="status-test", emotion=Emotion.SURPRISE,
                            confidence=0.5, rationale="r", aus_cited=(), local_emotion=Emotion.FEAR, model="m")
    server.on_refined(stranger)
    shown = {e["event_id"]: e for e in json.loads(get(server.url + "api/episodes")[2])["episodes"]}
    assert shown[event.event_id]["refined"] == {
        "emotion": "happiness", "confidence": 0.8, "rationale": "AU6 with AU12: a felt smile",
        "agrees_with_local": event.emotion is Emotion.HAPPINESS, "model": "test-model"}
    assert "not-listed" not in shown
    server.on_store_failed("event")
    server.on_store_failed("refined")
    server.on_store_failed("refined")
    samples = scrape(server.url)
    refined_counts = {tuple(sorted(dict(k).items())): v for k, v in samples["microexpr_refined_episodes_total"].items()}
    assert sum(refined_counts.values()) == 2
    assert refined_counts[(("agrees", "false"), ("label", "surprise"))] == 1
    failures = {dict(k)["reason"]: v for k, v in samples["microexpr_publish_failures_total"].items()}
    assert failures == {"event": 1, "refined": 2}
    # a hook given nonsense logs (bounded) and never raises into the frame loop
    server.on_frame({"tracker": "not a number"}, True, played.results[0].aus, None)  # type: ignore[dict-item]
    server.on_frame({"tracker": "still not"}, True, played.results[0].aus, None)  # type: ignore[dict-item]
    assert caplog.text.count("status: on_frame failed") == 1

"""What the status page and ``/metrics`` cost the frame path (``microexpr bench``).

One run, two arms on the same decoded frames, each with its own pipeline:

* **off**: ``pipeline.process(frame)`` alone — the daemon with ``[status]``
  disabled, which does not even import this package;
* **on**: the same call plus the daemon's hooks (:meth:`StatusServer.on_frame`,
  :meth:`StatusServer.on_event`), with the server running and used harder
  than a person would: one open event stream (a browser tab) and a scraper
  fetching ``/metrics`` and ``/api/status`` every second (a Prometheus
  scrape interval of 1 s instead of the usual 15 s).

Whole passes alternate in ABBA order (off, on, on, off, ...) so that drift
on a shared machine hits both arms alike, and the server with its clients
runs only during the "on" passes — during "off" passes it is closed, so
its threads cannot hide in both arms. Reported: the ratio of per-frame
wall time p50 and mean (on / off), the ratio of process CPU time per frame
(which counts the server's threads wherever they run), the ratio of the
frame thread's own CPU time per frame (p50; blind to other processes, so
the steadiest number on a shared machine), and the hooks' own share of the
frame time (timed directly around the hook calls).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from microexpr.capture import Frame
from microexpr.config import Config
from microexpr.events import LatencyStats, Stats
from microexpr.status.feed import BrokerState, StatusSources
from microexpr.status.server import StatusServer

log = logging.getLogger(__name__)

#: The scraper's period in the "on" arm, seconds.
SCRAPE_EVERY_S = 1.0


@dataclass
class StatusCost:
    """Per-frame samples of both arms and what the clients saw."""

    off: list[float] = field(default_factory=list)
    on: list[float] = field(default_factory=list)
    hooks: list[float] = field(default_factory=list)
    #: CPU time of the frame-path thread per frame (``time.thread_time``):
    #: blind to other processes on a shared machine, unlike wall time.
    thread_cpu_off: list[float] = field(default_factory=list)
    thread_cpu_on: list[float] = field(default_factory=list)
    cpu_off_s: float = 0.0
    cpu_on_s: float = 0.0
    scrapes: int = 0
    stream_bytes: int = 0
    episodes_on: int = 0
    episodes_off: int = 0

    def report(self) -> dict[str, object]:
        def ms(samples: Sequence[float]) -> dict[str, float]:
            s = LatencyStats.from_seconds(samples)
            mean = 1000.0 * sum(samples) / len(samples) if samples else float("nan")
            return {"n": s.count, "p50": round(s.p50_ms, 3), "p95": round(s.p95_ms, 3), "mean": round(mean, 3)}

        off, on = ms(self.off), ms(self.on)
        cpu_off, cpu_on = ms(self.thread_cpu_off), ms(self.thread_cpu_on)
        n_off, n_on = max(1, len(self.off)), max(1, len(self.on))
        return {
            "frame_ms_status_off": off,
            "frame_ms_status_on": on,
            "hooks_ms": ms(self.hooks),
            "frame_thread_cpu_ms_status_off": cpu_off,
            "frame_thread_cpu_ms_status_on": cpu_on,
            "ratio_thread_cpu_p50_on_vs_off": round(cpu_on["p50"] / cpu_off["p50"], 4) if cpu_off["p50"] else None,
            "ratio_p50_on_vs_off": round(on["p50"] / off["p50"], 4) if off["p50"] else None,
            "ratio_mean_on_vs_off": round(on["mean"] / off["mean"], 4) if off["mean"] else None,
            "ratio_cpu_per_frame_on_vs_off": round((self.cpu_on_s / n_on) / (self.cpu_off_s / n_off), 4)
            if self.cpu_off_s else None,
            "hooks_share_of_frame": round(sum(self.hooks) / sum(self.on), 5) if self.on else None,
            "scrapes": self.scrapes,
            "event_stream_bytes": self.stream_bytes,
            "episodes": {"off": self.episodes_off, "on": self.episodes_on},
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Clients:
    """An open event stream and a 1 s scraper against one server, on threads."""

    def __init__(self, url: str, cost: StatusCost) -> None:
        self._url = url
        self._cost = cost
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._stream, name="bench-status-stream", daemon=True),
                         threading.Thread(target=self._scrape, name="bench-status-scrape", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _stream(self) -> None:
        try:
            with urllib.request.urlopen(self._url + "events", timeout=10) as response:
                while not self._stop.is_set():
                    chunk = response.read1(65536)
                    if not chunk:
                        return
                    self._cost.stream_bytes += len(chunk)
        except OSError as exc:
            if not self._stop.is_set():
                log.warning("bench: status event stream ended: %s", exc)

    def _scrape(self) -> None:
        while not self._stop.wait(SCRAPE_EVERY_S):
            try:
                for path in ("metrics", "api/status"):
                    with urllib.request.urlopen(self._url + path, timeout=10) as response:
                        response.read()
                self._cost.scrapes += 1
            except OSError as exc:
                log.warning("bench: status scrape failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(12)


def measure_status_cost(
    frames: Sequence[Frame], *, model_path: Path, passes: int, progress: Callable[[], None] = lambda: None,
) -> StatusCost:
    """Run ``2 * passes`` passes over ``frames``: half with the status server on, half without."""
    from microexpr.events import Event
    from microexpr.pipeline import Pipeline

    cost = StatusCost()
    config = Config.model_validate({"device_id": "bench", "status": {"enabled": True, "port": _free_port()}})
    counted = {"frames": 0}

    def stats() -> Stats:
        return Stats(device_id="bench", uptime_s=0.0, fps=0.0, frames=counted["frames"], dropped_frames=0,
                     latency={}, queues={}, outbox_depth=0, outbox_dropped=0, events=cost.episodes_on,
                     health="ok")

    sources = StatusSources(stats=stats, broker=lambda: BrokerState.DISABLED)
    duration = frames[-1].timestamp - frames[0].timestamp + 1.0
    order = [("off", "on", "on", "off")[i % 4] for i in range(2 * passes)]
    with ExitStack() as stack:
        pipelines = {arm: Pipeline.create(model_path=model_path) for arm in ("off", "on")}
        for pipeline in pipelines.values():
            stack.callback(pipeline.close)
        done = {"off": 0, "on": 0}
        for arm in order:
            pipeline = pipelines[arm]
            offset = done[arm] * duration
            done[arm] += 1
            server = clients = None
            if arm == "on":
                server = StatusServer(config, sources).start()
                clients = _Clients(server.url, cost)
                time.sleep(0.5)  # the stream is open before the first frame
            cpu0 = time.process_time()
            for frame in frames:
                shifted = Frame(frame.index, frame.timestamp + offset, frame.image)
                c0 = time.thread_time()
                t0 = time.perf_counter()
                result = pipeline.process(shifted)
                # The daemon builds each event whether or not the page is on.
                events = [Event.from_episode(s.episode, s.decision, device_id="bench")
                          for s in result.episodes if s.decision is not None]
                if server is not None:
                    h0 = time.perf_counter()
                    timings = result.timings.as_seconds()
                    timings["total"] = h0 - t0
                    server.on_frame(timings, bool(result.observation.faces), result.aus, shifted)
                    for event in events:
                        server.on_event(event)
                    t1 = time.perf_counter()
                    cost.thread_cpu_on.append(time.thread_time() - c0)
                    cost.hooks.append(t1 - h0)
                    cost.on.append(t1 - t0)
                    cost.episodes_on += len(events)
                    counted["frames"] += 1
                else:
                    cost.off.append(time.perf_counter() - t0)
                    cost.thread_cpu_off.append(time.thread_time() - c0)
                    cost.episodes_off += len(events)
                progress()
            cpu = time.process_time() - cpu0
            if arm == "on":
                cost.cpu_on_s += cpu
            else:
                cost.cpu_off_s += cpu
            for spotted in pipeline.finish():  # the episode still open at the clip's end
                if server is not None and spotted.decision is not None:
                    server.on_event(Event.from_episode(spotted.episode, spotted.decision, device_id="bench"))
                    cost.episodes_on += 1
                elif server is None:
                    cost.episodes_off += 1
            pipeline.reset()
            if clients is not None:
                clients.close()
            if server is not None:
                server.close()
    return cost

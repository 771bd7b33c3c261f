"""On-device benchmarks behind ``microexpr bench``.

Absolute milliseconds on a shared or thermally throttled board say little,
so every scenario is reported next to the bare MediaPipe call measured in
the same run, on the same frames, interleaved pass by pass: the ratios are
what a reader should compare across machines. Results are written as JSON,
a Markdown summary and PNG plots under ``benchmarks/results/<machine>/``,
with the machine described (CPU, cores, Python, package versions).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from microexpr.capture import Frame, open_source
from microexpr.errors import ExitCode, MicroexprError, NoFaceError, SourceError
from microexpr.events import LatencyStats

log = logging.getLogger(__name__)

#: Packages whose versions matter to the numbers.
_PACKAGES = ("microexpr", "mediapipe", "numpy", "opencv-python-headless", "onnxruntime", "paho-mqtt", "openai")


# --------------------------------------------------------------------------
# Statistics and machine description


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of one scenario, in milliseconds."""

    n: int
    p50: float
    p95: float
    p99: float
    mean: float

    @classmethod
    def of(cls, samples_s: Sequence[float]) -> Latency:
        """Same nearest-rank percentiles as the daemon's ``stats`` payload, so
        bench and a running device report comparable numbers."""
        if not samples_s:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"))
        stats = LatencyStats.from_seconds(samples_s)
        mean_ms = 1000.0 * float(np.mean(samples_s))
        return cls(stats.count, round(stats.p50_ms, 3), round(stats.p95_ms, 3), round(stats.p99_ms, 3), round(mean_ms, 3))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu_model": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": commit,
    }


def machine_slug(machine: dict[str, Any]) -> str:
    """A stable folder name: ``x86_64-2c-intel-xeon-platinum-8375c``."""
    model = re.sub(r"\((r|tm)\)|cpu|@.*|processor", "", str(machine["cpu_model"]).lower())
    model = re.sub(r"[^a-z0-9]+", "-", model).strip("-")[:40]
    return f"{machine['arch']}-{machine['cores']}c-{model}".strip("-")


def venv_size_mb(prefix: Path | None = None) -> float:
    """Disk used by the running interpreter's environment (site-packages and all)."""
    root = Path(prefix or sys.prefix)
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return round(total / 2**20, 1)


def _rss_mb(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# Scenarios


def load_frames(spec: str | Path, limit: int | None = None) -> list[Frame]:
    """Decode a file source once so decoding does not count in any scenario."""
    frames: list[Frame] = []
    with open_source(spec) as source:
        if source.is_live:
            raise SourceError(f"bench: {spec} is a live source; give a video file or image folder")
        for frame in source:
            frames.append(frame)
            if limit is not None and len(frames) >= limit:
                break
    if not frames:
        raise SourceError(f"bench: {spec} holds no frames")
    return frames


class _BareMediaPipe:
    """The MediaPipe call alone (RGB conversion and image wrap excluded):
    the denominator of every ratio."""

    def __init__(self, model_path: Path) -> None:
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core import base_options

        options = vision.FaceLandmarkerOptions(
            base_options=base_options.BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=1,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        from microexpr.tracking.mediapipe import _native_stderr_silenced

        with _native_stderr_silenced():  # MediaPipe's start-up chatter, as in the tracker
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._last_ms = -1
        self._first = True

    def time_frame(self, frame: Frame, offset_s: float) -> float:
        import cv2
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB))
        ts = max(self._last_ms + 1, int(round((frame.timestamp + offset_s) * 1000)))
        self._last_ms = ts
        if self._first:  # the graph prints more on its first frame
            self._first = False
            from microexpr.tracking.mediapipe import _native_stderr_silenced

            with _native_stderr_silenced():
                start = time.perf_counter()
                self._landmarker.detect_for_video(image, ts)
                return time.perf_counter() - start
        start = time.perf_counter()
        self._landmarker.detect_for_video(image, ts)
        return time.perf_counter() - start

    def close(self) -> None:
        self._landmarker.close()


def _shifted(frame: Frame, offset_s: float) -> Frame:
    return Frame(frame.index, frame.timestamp + offset_s, frame.image)


@dataclass
class InProcessResult:
    bare: list[float] = field(default_factory=list)
    timeline: list[float] = field(default_factory=list)
    pipeline: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    model_load_s: float = float("nan")
    episodes: int = 0
    pipeline_error: str | None = None
    #: Timeline-path frames in which the tracker found a face.
    frames_with_face: int = 0


def run_in_process(
    frames: Sequence[Frame], *, model_path: Path, passes: int, progress: Callable[[], None] = lambda: None
) -> InProcessResult:
    """Bare MediaPipe vs the timeline path (tracker + AUs) vs the full
    pipeline, interleaved pass by pass so machine noise hits all three."""
    from microexpr.aus import AUEstimator
    from microexpr.tracking import create_tracker

    result = InProcessResult()
    duration = frames[-1].timestamp - frames[0].timestamp + 1.0
    with ExitStack() as stack:
        start = time.perf_counter()
        bare = _BareMediaPipe(model_path)
        result.model_load_s = round(time.perf_counter() - start, 3)
        stack.callback(bare.close)
        tracker = stack.enter_context(create_tracker("mediapipe", model_path=model_path))
        estimator = AUEstimator()
        pipeline = None
        try:
            from microexpr.pipeline import Pipeline

            pipeline = Pipeline.create(model_path=model_path)
            stack.callback(pipeline.close)
        except (ImportError, AttributeError) as exc:
            result.pipeline_error = f"pipeline unavailable: {exc}"
        for p in range(passes):
            offset = p * duration
            for frame in frames:
                result.bare.append(bare.time_frame(frame, offset))
                shifted = _shifted(frame, offset)
                t0 = time.perf_counter()
                observation = tracker.process(shifted)
                estimator.estimate(observation)
                result.timeline.append(time.perf_counter() - t0)
                result.frames_with_face += bool(observation.faces)
                if pipeline is not None:
                    t0 = time.perf_counter()
                    out = pipeline.process(shifted)
                    result.pipeline.append(time.perf_counter() - t0)
                    result.episodes += len(out.episodes)
                    for stage, seconds in out.timings.as_seconds().items():
                        result.stages.setdefault(stage, []).append(seconds)
                progress()
            if pipeline is not None:
                result.episodes += len(pipeline.finish())
                pipeline.reset()
    return result


@dataclass
class StreamResult:
    """Frames fed back to back, as a camera faster than the board would.

    ``interval_*``: seconds between consecutive finished frames (what
    decides the frame rate a board sustains); ``overlap_latency``: from
    handing a frame in to its result, with ``tracker.overlap``.
    """

    interval_bare: list[float] = field(default_factory=list)
    interval_sequential: list[float] = field(default_factory=list)
    interval_overlap: list[float] = field(default_factory=list)
    overlap_latency: list[float] = field(default_factory=list)
    fps: dict[str, list[float]] = field(default_factory=dict)
    identical_episodes: bool = True
    #: each pass's overlapped / bare interval p50: how far one pass is from
    #: the pooled ratio says how much to trust it
    overlap_vs_bare_by_pass: list[float] = field(default_factory=list)


def run_streams(
    frames: Sequence[Frame], *, model_path: Path, passes: int, progress: Callable[[], None] = lambda: None
) -> StreamResult:
    """Bare MediaPipe vs the pipeline (sequential) vs the pipeline with the
    tracker and the analysis overlapped (``microexpr.overlap``), one whole
    pass of the clip each, in a rotating order so drift hits all three."""
    from microexpr.overlap import OverlappedPipeline
    from microexpr.pipeline import Pipeline, PipelineResult

    result = StreamResult()
    duration = frames[-1].timestamp - frames[0].timestamp + 1.0
    with ExitStack() as stack:
        bare = _BareMediaPipe(model_path)
        stack.callback(bare.close)
        sequential = Pipeline.create(model_path=model_path)
        stack.callback(sequential.close)
        overlapped = Pipeline.create(model_path=model_path)
        stack.callback(overlapped.close)
        done: list[float] = []
        latency: list[float] = []
        episodes: list[tuple[int, int, int]] = []

        def on_result(started: float, _frame: Frame, out: PipelineResult) -> None:
            now = time.perf_counter()
            done.append(now)
            latency.append(now - started)
            episodes.extend((e.episode.onset_frame, e.episode.apex_frame, e.episode.offset_frame) for e in out.episodes)

        runner: OverlappedPipeline[float] = OverlappedPipeline(overlapped, on_result, name="bench-analysis")
        stack.callback(runner.close)

        def stream_bare(offset: float) -> None:
            t0 = time.perf_counter()
            for frame in frames:
                result.interval_bare.append(bare.time_frame(frame, offset))
                progress()
            result.fps.setdefault("bare", []).append(len(frames) / (time.perf_counter() - t0))

        def stream_sequential(offset: float) -> list[tuple[int, int, int]]:
            spotted: list[tuple[int, int, int]] = []
            t0 = last = time.perf_counter()
            for frame in frames:
                out = sequential.process(_shifted(frame, offset))
                now = time.perf_counter()
                result.interval_sequential.append(now - last)
                last = now
                spotted += [(e.episode.onset_frame, e.episode.apex_frame, e.episode.offset_frame) for e in out.episodes]
                progress()
            result.fps.setdefault("sequential", []).append(len(frames) / (time.perf_counter() - t0))
            spotted += [(e.episode.onset_frame, e.episode.apex_frame, e.episode.offset_frame) for e in sequential.finish()]
            sequential.reset()
            return spotted

        def stream_overlap(offset: float) -> list[tuple[int, int, int]]:
            done.clear()
            episodes.clear()
            t0 = time.perf_counter()
            for frame in frames:
                runner.submit(_shifted(frame, offset), time.perf_counter())
                progress()
            tail = runner.finish(timeout=60)
            result.fps.setdefault("overlap", []).append(len(frames) / (done[-1] - t0) if done else 0.0)
            result.interval_overlap.extend(np.diff(done).tolist())
            result.overlap_latency.extend(latency)
            latency.clear()
            spotted = episodes + [(e.episode.onset_frame, e.episode.apex_frame, e.episode.offset_frame) for e in tail]
            overlapped.reset()
            return spotted

        for p in range(passes):
            offset = p * duration
            seq_eps: list[tuple[int, int, int]] = []
            ovl_eps: list[tuple[int, int, int]] = []
            n_bare, n_ovl = len(result.interval_bare), len(result.interval_overlap)
            order = [0, 1, 2][p % 3:] + [0, 1, 2][: p % 3]
            for which in order:
                if which == 0:
                    stream_bare(offset)
                elif which == 1:
                    seq_eps = stream_sequential(offset)
                else:
                    ovl_eps = stream_overlap(offset)
            result.identical_episodes &= seq_eps == ovl_eps
            pass_bare, pass_ovl = result.interval_bare[n_bare:], result.interval_overlap[n_ovl:]
            if pass_bare and pass_ovl:
                result.overlap_vs_bare_by_pass.append(float(np.median(pass_ovl) / np.median(pass_bare)))
    return result


# --------------------------------------------------------------------------
# Daemon scenarios: cold start to READY, sustained live rate, CPU, RSS, e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _mosquitto(workdir: Path) -> Iterator[int | None]:
    """A throwaway loopback broker, or None when mosquitto is not installed."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        yield None
        return
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@dataclass
class DaemonResult:
    cold_start_to_ready_s: float = float("nan")
    seconds: float = 0.0
    cpu_percent: float = float("nan")
    rss_mb_mean: float = float("nan")
    rss_mb_max: float = float("nan")
    e2e_frame_to_subscriber: list[float] = field(default_factory=list)
    event_offset_to_subscriber: list[float] = field(default_factory=list)
    frames_published: int = 0
    events: int = 0
    fps: float = float("nan")
    dropped_frames: int | None = None
    #: The daemon's own per-stage latency (its last retained ``stats``).
    daemon_latency_ms: dict[str, Any] = field(default_factory=dict)
    daemon_fps: float | None = None
    error: str | None = None


def run_daemon(source: Path, *, seconds: float, workdir: Path) -> DaemonResult:
    """Start ``microexpr run`` on a real-time replay of ``source`` against a
    loopback broker; time READY, sample CPU/RSS, and time frames and
    events from capture to a subscriber."""
    import paho.mqtt.client as mqtt

    result = DaemonResult()
    with _mosquitto(workdir) as port:
        if port is None:
            result.error = "mosquitto not installed: daemon scenarios skipped"
            return result
        device_id = "bench"
        config = workdir / "config.toml"
        config.write_text(
            f'device_id = "{device_id}"\n'
            # Absolute: the daemon reads a relative path from its config's folder
            # (workdir), not from here (`make bench` gives ../shared/...).
            f"[source]\nuri = {json.dumps(f'replay:{Path(source).resolve()}')}\n"  # JSON string = TOML basic string
            f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\naus_stream = true\naus_interval_s = 0.05\n'
            f"stats_interval_s = 2.0\n"
            f"[outbox]\npath = {json.dumps(str(workdir / 'outbox.sqlite'))}\n"
        )
        lock = threading.Lock()
        stats: dict[str, Any] = {}

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            now = time.monotonic()
            try:
                payload = json.loads(msg.payload)
            except ValueError:
                return
            with lock:
                if msg.topic.endswith("/aus"):
                    result.e2e_frame_to_subscriber.append(now - float(payload["monotonic_s"]))
                    result.frames_published += 1
                elif msg.topic.endswith("/event"):
                    result.events += 1
                    result.event_offset_to_subscriber.append(now - float(payload["monotonic"]["offset_s"]))
                elif msg.topic.endswith("/stats"):
                    stats.update(payload)

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="microexpr-bench-sub")
        sub.on_message = on_message
        sub.connect("127.0.0.1", port)
        sub.subscribe(f"microexpr/{device_id}/#", qos=1)
        sub.loop_start()
        notify_path = workdir / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(0.5)
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
        started = time.monotonic()
        # stderr to a file, never an undrained pipe: a full pipe would block
        # the daemon's logging and with it the very loop being measured.
        stderr_path = workdir / "daemon.stderr"
        stderr_file = stderr_path.open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "microexpr", "run", "--config", str(config), "--no-print-events"],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr_file,
        )
        try:
            while time.monotonic() - started < 60:
                try:
                    message = notify.recv(4096).decode()
                except TimeoutError:
                    if proc.poll() is not None:
                        tail = stderr_path.read_text(errors="replace").strip().splitlines()[-1:]
                        raise MicroexprError(f"bench: daemon exited with {proc.returncode}: {' '.join(tail)}")
                    continue
                if "READY=1" in message.split("\n"):
                    result.cold_start_to_ready_s = round(time.monotonic() - started, 3)
                    break
            # Keep reading the notify socket, as systemd does, so the
            # daemon's STATUS/WATCHDOG datagrams never queue up.
            def drain() -> None:
                while proc.poll() is None:
                    try:
                        notify.recv(4096)
                    except (TimeoutError, OSError):
                        continue

            threading.Thread(target=drain, name="bench-notify-drain", daemon=True).start()
            with lock:
                result.e2e_frame_to_subscriber.clear()
                result.frames_published = 0
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            rss: list[float] = []
            while time.monotonic() - t0 < seconds and proc.poll() is None:
                time.sleep(1.0)
                rss.append(_rss_mb(proc.pid))
            elapsed = time.monotonic() - t0
            result.seconds = round(elapsed, 1)
            result.cpu_percent = round(100 * (_cpu_seconds(proc.pid) - cpu0) / elapsed, 1)
            result.rss_mb_mean = round(float(np.nanmean(rss)), 1) if rss else float("nan")
            result.rss_mb_max = round(float(np.nanmax(rss)), 1) if rss else float("nan")
            with lock:
                result.fps = round(result.frames_published / elapsed, 2)
                result.dropped_frames = stats.get("dropped_frames")
                result.daemon_latency_ms = dict(stats.get("latency_ms") or {})
                result.daemon_fps = stats.get("fps")
        except MicroexprError as exc:
            result.error = str(exc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            sub.loop_stop()
            sub.disconnect()
            notify.close()
            stderr_file.close()
    return result


# --------------------------------------------------------------------------
# Report


def _ratio(a: Latency, b: Latency, attr: str) -> float | None:
    num, den = getattr(a, attr), getattr(b, attr)
    if not (den and np.isfinite(num) and np.isfinite(den)):
        return None
    return round(num / den, 3)


def build_report(
    *, machine: dict[str, Any], source: Path, frames: int, passes: int, inproc: InProcessResult,
    daemon: DaemonResult | None, quick: bool, streams: StreamResult | None = None,
    status_cost: dict[str, Any] | None = None, activity: Any = None,
) -> dict[str, Any]:
    bare, timeline, pipeline = Latency.of(inproc.bare), Latency.of(inproc.timeline), Latency.of(inproc.pipeline)
    report: dict[str, Any] = {
        "benchmark": "microexpr bench",
        "mode": "quick" if quick else "full",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "source": str(source),
        "frames_per_pass": frames,
        "passes": passes,
        "model_load_s": inproc.model_load_s,
        "venv_size_mb": venv_size_mb(),
        "latency_ms": {
            "bare_mediapipe": asdict(bare),
            "timeline_path": asdict(timeline),
            "pipeline": asdict(pipeline),
            "pipeline_stages": {k: asdict(Latency.of(v)) for k, v in inproc.stages.items()},
        },
        "ratios": {
            "timeline_vs_bare_p50": _ratio(timeline, bare, "p50"),
            "timeline_vs_bare_p95": _ratio(timeline, bare, "p95"),
            "pipeline_vs_bare_p50": _ratio(pipeline, bare, "p50"),
            "pipeline_vs_bare_p95": _ratio(pipeline, bare, "p95"),
        },
        "episodes_spotted": inproc.episodes,
        "notes": [n for n in (inproc.pipeline_error,) if n],
    }
    if streams is not None:
        s_bare, s_seq = Latency.of(streams.interval_bare), Latency.of(streams.interval_sequential)
        s_ovl, s_lat = Latency.of(streams.interval_overlap), Latency.of(streams.overlap_latency)
        report["streams"] = {
            "interval_ms": {"bare_mediapipe": asdict(s_bare), "pipeline_sequential": asdict(s_seq),
                            "pipeline_overlap": asdict(s_ovl)},
            "overlap_latency_ms": asdict(s_lat),
            "fps_median": {k: round(float(np.median(v)), 1) for k, v in streams.fps.items()},
            "identical_episodes": streams.identical_episodes,
            "overlap_vs_bare_p50_by_pass": [round(r, 3) for r in streams.overlap_vs_bare_by_pass],
        }
        report["ratios"].update({
            "stream_sequential_vs_bare_p50": _ratio(s_seq, s_bare, "p50"),
            "stream_overlap_vs_bare_p50": _ratio(s_ovl, s_bare, "p50"),
            "stream_overlap_vs_bare_p95": _ratio(s_ovl, s_bare, "p95"),
            "overlap_latency_vs_bare_p50": _ratio(s_lat, s_bare, "p50"),
        })
    if status_cost is not None:
        # microexpr.status.cost: the status page and /metrics on vs off, same frames, one run.
        report["status_cost"] = status_cost
        report["ratios"].update({
            "status_on_vs_off_p50": status_cost["ratio_p50_on_vs_off"],
            "status_on_vs_off_cpu_per_frame": status_cost["ratio_cpu_per_frame_on_vs_off"],
            "status_on_vs_off_frame_thread_cpu_p50": status_cost["ratio_thread_cpu_p50_on_vs_off"],
            "status_hooks_share_of_frame": status_cost["hooks_share_of_frame"],
        })
    if activity is not None:
        from microexpr.bench_activity import report_section

        report["activity"], activity_ratios = report_section(activity)
        report["ratios"].update(activity_ratios)
    if daemon is not None:
        e2e = Latency.of(daemon.e2e_frame_to_subscriber)
        report["daemon"] = {
            "cold_start_to_ready_s": daemon.cold_start_to_ready_s,
            "seconds": daemon.seconds,
            "cpu_percent": daemon.cpu_percent,
            "rss_mb_mean": daemon.rss_mb_mean,
            "rss_mb_max": daemon.rss_mb_max,
            "aus_samples_per_s": daemon.fps,
            "processed_fps": daemon.daemon_fps,
            "inference_latency_ms": daemon.daemon_latency_ms,
            "dropped_frames": daemon.dropped_frames,
            "e2e_frame_to_subscriber_ms": asdict(e2e),
            "event_offset_to_subscriber_ms": asdict(Latency.of(daemon.event_offset_to_subscriber)),
            "events": daemon.events,
        }
        total = daemon.daemon_latency_ms.get("total")
        if total and total.get("p95"):
            report["ratios"]["e2e_vs_daemon_inference_p95"] = round(e2e.p95 / float(total["p95"]), 3)
        report["ratios"]["e2e_vs_bare_p95"] = _ratio(e2e, bare, "p95")
        if daemon.error:
            report["notes"].append(daemon.error)
    return report


def markdown_summary(report: dict[str, Any]) -> str:
    m = report["machine"]
    lat = report["latency_ms"]
    lines = [
        f"# microexpr bench — {report['time']} ({report['mode']})",
        "",
        f"Machine: {m['cpu_model']} ({m['arch']}, {m['cores']} cores), Python {m['python']}, "
        f"mediapipe {m['packages'].get('mediapipe')}, commit {m['git_commit']}.",
        f"Source: `{Path(report['source']).name}`, {report['frames_per_pass']} frames × {report['passes']} passes "
        "(scenarios interleaved frame by frame).",
        "",
        "| scenario | n | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    rows = [("bare MediaPipe call", lat["bare_mediapipe"]), ("timeline path (tracker + AUs)", lat["timeline_path"]),
            ("full pipeline", lat["pipeline"])]
    rows += [(f"  stage: {k}", v) for k, v in lat["pipeline_stages"].items()]
    if "daemon" in report:
        rows.append(("e2e frame → MQTT subscriber (daemon)", report["daemon"]["e2e_frame_to_subscriber_ms"]))
    for name, s in rows:
        lines.append(f"| {name} | {s['n']} | {s['p50']} | {s['p95']} | {s['p99']} |")
    if "streams" in report:
        st = report["streams"]
        lines += [
            "",
            "Streams: the clip fed back to back, one whole pass per scenario in rotating order; "
            "interval = time between consecutive finished frames (sets the sustainable frame rate).",
            "",
            "| stream | n | p50 ms | p95 ms | p99 ms | median fps |",
            "|---|---|---|---|---|---|",
        ]
        for key, name, fps_key in (("bare_mediapipe", "bare MediaPipe", "bare"),
                                   ("pipeline_sequential", "pipeline, sequential", "sequential"),
                                   ("pipeline_overlap", "pipeline, tracker ∥ analysis (tracker.overlap)", "overlap")):
            v = st["interval_ms"][key]
            lines.append(f"| {name} | {v['n']} | {v['p50']} | {v['p95']} | {v['p99']} | {st['fps_median'].get(fps_key)} |")
        v = st["overlap_latency_ms"]
        lines.append(f"| latency of a frame with overlap (in → result) | {v['n']} | {v['p50']} | {v['p95']} | {v['p99']} | |")
        lines.append("")
        lines.append(f"Overlapped and sequential spotted identical episodes: {st['identical_episodes']}.")
        by_pass = st.get("overlap_vs_bare_p50_by_pass")  # not in reports from before it was kept
        if by_pass and len(by_pass) > 1:
            lines.append(f"Overlapped / bare interval p50, pass by pass: median {np.median(by_pass):.3f}, "
                         f"{min(by_pass):.3f}-{max(by_pass):.3f}, sd {np.std(by_pass, ddof=1):.3f} over "
                         f"{len(by_pass)} passes (the pooled ratio below is steadier by about the square root of "
                         "their number).")
    if "status_cost" in report:
        sc = report["status_cost"]
        lines += [
            "",
            "Status page + /metrics (`[status]` on, one open event stream, /metrics and /api/status scraped "
            "every second) vs off, whole passes in ABBA order on the same frames:",
            "",
            "| arm | n | p50 ms | p95 ms | mean ms |",
            "|---|---|---|---|---|",
        ]
        for key, name in (("frame_ms_status_off", "status off"), ("frame_ms_status_on", "status on"),
                          ("hooks_ms", "  of which the daemon's status hooks"),
                          ("frame_thread_cpu_ms_status_off", "frame thread CPU, status off"),
                          ("frame_thread_cpu_ms_status_on", "frame thread CPU, status on")):
            v = sc[key]
            lines.append(f"| {name} | {v['n']} | {v['p50']} | {v['p95']} | {v['mean']} |")
        lines.append(f"\nScrapes {sc['scrapes']}, event-stream bytes {sc['event_stream_bytes']}; "
                     f"CPU per frame on/off {sc['ratio_cpu_per_frame_on_vs_off']}.")
    if "activity" in report:
        from microexpr.bench_activity import markdown

        lines += markdown(report["activity"])
    from microexpr.cores import bench_note

    lines += bench_note(report["machine"].get("cores"))
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["ratios"].items()]
    lines += ["", f"Model load: {report['model_load_s']} s. Venv size: {report['venv_size_mb']} MB (the venv this "
              "ran in, with the test and bench tools; a device install is pruned by install.sh: "
              "provisioning/venv-prune-check.sh measures it)."]
    if "daemon" in report:
        d = report["daemon"]
        lines.append(
            f"Daemon on a real-time replay ({d['seconds']} s): cold start to READY {d['cold_start_to_ready_s']} s, "
            f"CPU {d['cpu_percent']} %, RSS mean {d['rss_mb_mean']} MB / max {d['rss_mb_max']} MB, "
            f"processed {d['processed_fps']} fps (AU samples published {d['aus_samples_per_s']}/s), "
            f"dropped frames {d['dropped_frames']}, events {d['events']}."
        )
    if report["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def write_plots(report: dict[str, Any], inproc: InProcessResult, daemon: DaemonResult | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    series = [("bare MediaPipe", inproc.bare), ("timeline path", inproc.timeline), ("full pipeline", inproc.pipeline)]
    if daemon is not None:
        series.append(("e2e frame→subscriber", daemon.e2e_frame_to_subscriber))
    for name, samples in series:
        if samples:
            ms = np.sort(np.asarray(samples) * 1000)
            ax.plot(ms, np.arange(1, len(ms) + 1) / len(ms), label=name)
    ax.set_xlabel("latency per frame (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Latency CDF")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=110)
    plt.close(fig)

    stages = report["latency_ms"]["pipeline_stages"]
    if stages:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        names = list(stages)
        ax.barh(names, [stages[n]["p50"] for n in names], label="p50")
        ax.barh(names, [stages[n]["p95"] - stages[n]["p50"] for n in names],
                left=[stages[n]["p50"] for n in names], alpha=0.5, label="p95")
        ax.set_xlabel("ms per frame")
        ax.set_title("Pipeline stages")
        ax.invert_yaxis()
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "stages.png", dpi=110)
        plt.close(fig)


class LineProgress:
    """Progress as plain lines (stderr not a terminal: CI logs, ``make bench | tee``):
    frames done of the total, at most one line every ``interval_s``, so a
    long run is never silent and a log is not flooded."""

    def __init__(self, total: int, *, stream: Any = None, interval_s: float = 2.0) -> None:
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval_s
        self._started = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._interval or self.done >= self.total:
            self._last = now
            self.say(f"{self.done}/{self.total} frames ({100 * self.done / max(1, self.total):.0f} %), "
                     f"{now - self._started:.0f} s")

    def say(self, text: str) -> None:
        print(f"bench: {text}", file=self._stream, flush=True)

    def close(self) -> None:
        pass


def _grow(bar: Any) -> Callable[[int], None]:
    """Add frames to a progress bar's total once a scenario knows how many it will run."""
    def grow(n: int) -> None:
        bar.total += n
        if hasattr(bar, "refresh"):  # tqdm
            bar.refresh()
    return grow


def run_bench(
    source: Path, *, model_path: Path, out_root: Path, quick: bool, daemon_seconds: float | None = None,
    show_progress: bool = False, progress_lines: bool = False,
) -> tuple[dict[str, Any], Path]:
    """Run every scenario and write the results; returns (report, folder).

    ``show_progress``: a tqdm bar (a terminal); ``progress_lines``: plain
    lines (:class:`LineProgress`) otherwise.
    """
    machine = describe_machine()
    # The output folder is made first, so an unwritable --out fails at once
    # (exit 74) rather than as an internal error after minutes of measuring.
    out = out_root / machine_slug(machine)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MicroexprError(f"--out {out_root}: cannot write: {exc.strerror or exc}",
                             exit_code=ExitCode.IO_ERROR) from None
    frames = load_frames(source)
    if len(frames) < 2:
        # One frame gives no frame intervals and a report of NaNs.
        raise MicroexprError(f"bench: {source}: 1 frame; give a video or a folder of images",
                             exit_code=ExitCode.USAGE)
    seconds = daemon_seconds if daemon_seconds is not None else (10.0 if quick else 60.0)
    if seconds > 0 and not Path(source).is_file():
        # The soak replays the source as a camera (replay:FILE, a video):
        # refuse a folder now, not after minutes of in-process measuring.
        raise MicroexprError(f"bench: {source}: the daemon soak replays a video file; give one, "
                             "or --daemon-seconds 0 to measure a folder in-process only", exit_code=ExitCode.USAGE)
    passes = 2 if quick else 8
    # Whole passes of the streams: one pass of the shared clip's overlapped /
    # bare ratio spreads 0.94-1.12 on the 2-core x86 machine (16 in one
    # process, benchmarks/results/x86_64-2c-amd-epyc/bench-activity-idle.md);
    # 4 passes read 1.05-1.11 from run to run, 16 take ~20 s there.
    stream_passes = 3 if quick else 2 * passes
    bar: Any = None
    total = (passes + 3 * stream_passes + 2 * passes) * len(frames)  # + status on/off passes
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="bench", unit="frame")
    elif progress_lines:
        bar = LineProgress(total)
        bar.say(f"{source}: {len(frames)} frames, {passes} in-process passes + {stream_passes} of 3 streams, then "
                f"{seconds:g} s daemon soak")
    try:
        inproc = run_in_process(frames, model_path=model_path, passes=passes,
                                progress=(bar.update if bar is not None else lambda: None))
        if not inproc.frames_with_face:
            # Without a face MediaPipe runs the detector only: fast, plausible-looking and
            # meaningless. Said after the first scenario, not after all of them (the still
            # face's 25-s warm-up alone is minutes on a Pi).
            raise NoFaceError(f"bench: {source}: no face in any of its {len(frames)} frame(s); "
                              "give a clip of a real face")
        streams = run_streams(frames, model_path=model_path, passes=stream_passes,
                              progress=(bar.update if bar is not None else lambda: None))
        from microexpr.status.cost import measure_status_cost  # imports the status server: bench only

        status_cost = measure_status_cost(frames, model_path=model_path, passes=passes,
                                          progress=(bar.update if bar is not None else lambda: None)).report()
        from microexpr.bench_activity import run_activity

        activity = run_activity(frames, model_path=model_path, passes=1 if quick else 2, clip_plays=1 if quick else 4,
                                progress=(bar.update if bar is not None else lambda: None),
                                expect=(_grow(bar) if bar is not None else lambda n: None))
    finally:
        if bar is not None:
            bar.close()
    daemon = None
    if seconds > 0:
        if progress_lines:
            print(f"bench: daemon soak, {seconds:g} s", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="microexpr-bench-") as tmp:
            daemon = run_daemon(source, seconds=seconds, workdir=Path(tmp))
    report = build_report(machine=machine, source=source, frames=len(frames), passes=passes, inproc=inproc,
                          daemon=daemon, quick=quick, streams=streams, status_cost=status_cost,
                          activity=activity)
    name = "bench-quick" if quick else "bench"
    try:
        (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / f"{name}.md").write_text(markdown_summary(report))
        write_plots(report, inproc, daemon, out)
    except OSError as exc:
        raise MicroexprError(f"--out {out}: cannot write: {exc.strerror or exc}",
                             exit_code=ExitCode.IO_ERROR) from None
    return report, out

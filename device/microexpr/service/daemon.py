"""The :class:`Service`: owns the daemon's threads and the stages they drive.

See :mod:`microexpr.service` for the thread map and docs/service.md for
signals, health states and shutdown guarantees.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from microexpr import config as cfg
from microexpr.capture import Frame, FrameSource, open_source
from microexpr.config import Config, TrackerConfig
from microexpr.errors import ConfigError, ExitCode, MicroexprError, SourceError
from microexpr.events import Event, RefinedEvent, Stats
from microexpr.health import Health, HealthState
from microexpr.mqtt import MqttPublisher, Topics
from microexpr.notify import Notifier
from microexpr.outbox import Outbox
from microexpr.outbox_guard import MB, OutboxGuard, Pending, StoreOutcome
from microexpr.service import preflight
from microexpr.service.build import build_pipeline, logs_on_own_stderr
from microexpr.service.controls import Controls, FacePresence
from microexpr.service.items import (
    CaptureItem,
    Emitted,
    EndOfStream,
    FrameItem,
    SourceLost,
    SourceRestored,
    emitted_episodes,
)
from microexpr.service.lifecycle import LifecycleNotice, LifecycleTracker
from microexpr.service.metrics import Metrics
from microexpr.service.options import RunOptions, is_live_spec, load_run_config, stdout_is_journal
from microexpr.service.stats import reasoner_stats, suppression_counts

if TYPE_CHECKING:  # heavy imports (mediapipe, openai) stay lazy at run time
    from microexpr.overlap import OverlappedPipeline
    from microexpr.pipeline import EpisodeInProgress, Pipeline, PipelineResult
    from microexpr.reasoner import Reasoner, Refinement
    from microexpr.status import StatusServer

log = logging.getLogger(__name__)

#: Frames waiting between capture and inference. Small on purpose: for live
#: sources a long queue is only latency; for files it is read-ahead.
FRAME_QUEUE_SIZE = 4
#: At shutdown, how long the publisher may try to hand pending events to a
#: connected broker. With no broker it does not wait at all: the events are
#: safe in the outbox and are replayed at the next start.
FLUSH_TIMEOUT_S = 3.0
#: How often systemd's STATUS= line is refreshed (the MQTT stats have their own interval).
STATUS_INTERVAL_S = 2.0
#: Longest the inference loop blocks on an empty queue before it pings the watchdog again.
MAX_IDLE_WAIT_S = 0.5
#: Joins at shutdown: a thread still alive after this is reported and abandoned (daemon threads).
JOIN_TIMEOUT_S = 5.0
#: At the end of a file, how long queued ambiguous episodes may still be
#: refined before shutdown (at most the reasoner's own request timeout).
END_OF_INPUT_REASONER_WAIT_S = 10.0


SourceOpener = Callable[[], FrameSource]


def use_overlap(tracker: TrackerConfig, cores: int | None = None) -> bool:
    """Whether the analysis runs on its own thread (``tracker.overlap``).

    Left at its default, the core count decides (``cores.profile_for``, the
    Pi profile): off with one core, where the two threads only take turns.
    Set explicitly, it is obeyed, with a warning when it is on with one
    core."""
    from microexpr.cores import available_cores, profile_for

    n = available_cores() if cores is None else cores
    if "overlap" not in tracker.model_fields_set:
        if tracker.overlap and not profile_for(n).overlap:
            log.info("tracker.overlap off: %d core available (its default follows the core count, cores.py; "
                     "set tracker.overlap = true to force it)", n)
            return False
        return tracker.overlap
    if tracker.overlap and n == 1:
        log.warning("tracker.overlap is on with 1 core available: the two threads take turns "
                    "(set tracker.overlap = false on a single-core board)")
    return tracker.overlap


class Service:
    """Owns every stage of a running daemon; :meth:`run` returns the exit code.

    ``source_opener`` replaces :func:`open_source` (tests: a fake capture
    device); ``config_loader`` re-reads the configuration on SIGHUP;
    ``pipeline_factory`` builds the pipeline (default: :func:`build_pipeline`).
    """

    def __init__(
        self,
        config: Config,
        *,
        print_events: bool = False,
        out: TextIO | None = None,
        config_loader: Callable[[], Config] | None = None,
        source_opener: SourceOpener | None = None,
        pipeline_factory: Callable[[Config], Pipeline] | None = None,
        notifier: Notifier | None = None,
        flush_timeout_s: float = FLUSH_TIMEOUT_S,
        keep_log_level: bool = False,
    ) -> None:
        self.config = config
        self.device_id = config.device_id
        self.topics = Topics.build(config.mqtt.topic_prefix, config.device_id, config.mqtt.discovery_prefix)
        self.print_events = print_events
        self._out = out if out is not None else sys.stdout
        self._out_lock = threading.Lock()
        self._config_loader = config_loader
        self._source_opener = source_opener or self._open_configured_source
        self._pipeline_factory = pipeline_factory or build_pipeline
        self.notifier = notifier or Notifier()
        self.flush_timeout_s = flush_timeout_s
        #: ``-v`` was given: a reload does not lower the level from debug.
        self.keep_log_level = keep_log_level

        self.health = HealthState()
        self.metrics = Metrics()
        self._stop = threading.Event()
        #: Set by every stop request, even one made while already stopping
        #: (a SIGTERM cuts the end-of-input wait for the reasoner short).
        self._interrupt = threading.Event()
        self._reload = threading.Event()
        self._finished = threading.Event()  # the inference loop ended (stop or end of input)
        self._frames: queue.Queue[CaptureItem] = queue.Queue(maxsize=FRAME_QUEUE_SIZE)
        self._source_lock = threading.Lock()
        self._source: FrameSource | None = None
        #: Frames the closed source dropped: read before it is closed, so the
        #: last ``stats`` (published after the camera is closed) still counts them.
        self._closed_source_dropped = 0
        self._source_live = is_live_spec(config.source.uri)
        self._pipeline: Pipeline | None = None
        #: tracker.overlap: the analysis thread that follows the tracker.
        self._runner: OverlappedPipeline[FrameItem] | None = None
        self._outbox: Outbox | None = None
        #: The only way events reach the outbox: reserve, spill, exact counts (outbox_guard).
        self._guard: OutboxGuard | None = None
        #: Ambiguous events held in the guard's memory spill, for the reasoner once written back.
        self._spilled_emitted: dict[str, Emitted] = {}
        #: Held from an outbox commit to its stdout line, so lines come in commit order
        #: (the stats thread writes back held events while inference emits new ones).
        self._commit_lock = threading.Lock()
        #: READY=1 was sent (model loaded, outbox open): reloads end with READY=1 again.
        self._notified_ready = False
        self._publisher: MqttPublisher | None = None
        self._reasoner: Reasoner | None = None
        #: status.enabled: the page and /metrics (microexpr.status, imported only then).
        self._status: StatusServer | None = None
        self._threads: list[threading.Thread] = []
        self._fatal: MicroexprError | None = None
        self._ready = False
        self._last_aus = float("-inf")
        self._stopping_reason = ""
        #: mqtt.event_lifecycle: new/update/end notices (service.lifecycle)
        self._lifecycle = LifecycleTracker(config.device_id) if config.mqtt.event_lifecycle else None
        #: MQTT commands (service.controls), applied by the inference thread
        self.controls = Controls(self.topics.set_base)
        self.paused = False
        self.paused_frames = 0
        self._face = FacePresence()

    # -- opening -------------------------------------------------------------

    def _open_configured_source(self) -> FrameSource:
        s = self.config.source
        return open_source(
            s.uri,
            fps=s.fps or None,
            loop=s.loop,
            width=s.width or None,
            height=s.height or None,
        )

    def _open_source_at_start(self) -> None:
        """Open the source now so a bad file fails before the model loads; a
        camera that is not there yet is retried by the capture thread."""
        try:
            self._source = self._source_opener()
        except SourceError as exc:
            if not self._source_live:
                raise
            log.warning("%s; retrying in %g s (health no_camera: plug the camera in, or set source.uri "
                        "in the configuration to another camera or a file)", exc, self.config.source.reconnect_initial_s)
            self.health.set(Health.NO_CAMERA)
            self._source = None
            return
        self._source_live = self._source.is_live

    def _open_outbox(self, stack: ExitStack) -> Outbox:
        c = self.config.outbox
        assert c.path is not None  # resolved by config.resolve
        outbox = Outbox(c.path, max_items=c.max_events, when_full=c.when_full)
        stack.callback(outbox.close)
        log.info("outbox %s (%d waiting)", outbox.path, len(outbox))
        self._guard = OutboxGuard(outbox, reserve_bytes=int(c.reserve_mb * MB), spill_max=c.spill_max)
        stack.callback(self._close_guard)  # before outbox.close (LIFO): a last write-back
        return outbox

    def _close_guard(self) -> None:
        """Write back what the spill still holds (printing it), count the rest as lost."""
        if self._guard is None:
            return
        self._drain_spill()
        self._guard.close()

    def _open_publisher(self, stack: ExitStack, outbox: Outbox) -> MqttPublisher | None:
        if not self.config.mqtt.enabled:
            log.info("mqtt.enabled is false: events are kept in outbox %s only", outbox.path)
            return None
        # The service throttles the AU stream itself (its interval reloads
        # live); the publisher's own throttle is set to the lowest allowed value.
        # aus_stream True: the service decides (the key reloads live, the switch toggles it).
        settings = self.config.mqtt.model_copy(update={"aus_interval_s": 0.05, "aus_stream": True})
        publisher = MqttPublisher(
            settings,
            device_id=self.device_id,
            outbox=outbox,
            reconnect_min_s=1.0,
            reconnect_max_s=30.0,
            on_command=self.controls.on_message,
        )
        publisher.set_retained(self.topics.face, "OFF")
        publisher.set_retained(self.topics.state("paused"), "OFF")
        publisher.set_retained(self.topics.state("aus_stream"), "ON" if self.config.mqtt.aus_stream else "OFF")
        stack.callback(lambda: publisher.close(timeout=self.flush_timeout_s))
        publisher.start()
        return publisher

    def _open_reasoner(self, stack: ExitStack) -> Reasoner | None:
        if not self.config.reasoner.enabled:
            return None
        try:
            from microexpr.reasoner import Reasoner
        except ImportError as exc:
            # A venv built without the runtime set's openai (e.g. by hand):
            # one line and exit 78, not a traceback.
            if exc.name != "openai":
                raise
            raise ConfigError("reasoner.enabled = true needs the openai package, which is not installed "
                              "(pip install -r requirements/runtime.txt)") from None

        reasoner = Reasoner(self.config.reasoner, on_refined=self._on_refined)
        # Closed before the publisher (ExitStack order), with a short timeout:
        # an in-flight API request must not hold up shutdown; its episode
        # stays queued and is asked again after the restart.
        stack.callback(lambda: reasoner.close(timeout=1.0))
        reasoner.start()
        return reasoner

    def _open_status(self, stack: ExitStack) -> StatusServer | None:
        if not self.config.status.enabled:
            return None  # not even imported
        from microexpr.status import BrokerState, StatusSources, open_status_server

        def broker() -> BrokerState:
            if self._publisher is None:
                return BrokerState.DISABLED
            return BrokerState.CONNECTED if self._publisher.connected else BrokerState.OFFLINE

        return open_status_server(self.config, StatusSources(stats=self.stats, broker=broker), stack)

    # -- running -------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Start everything, supervise until stopped or the input ends, shut down.

        Returns 0 after a clean stop or the end of a file. Raises the
        ``MicroexprError`` of a fatal start-up problem (bad file, model) or of
        a file that turned out to be corrupt mid-way, after a clean shutdown.
        """
        restore = self._install_signals() if install_signals else None
        try:
            with ExitStack() as stack:
                self._start(stack)
                try:
                    self._supervise()
                finally:
                    self._shutdown()
                # leaving the stack: reasoner, pipeline, publisher (flush + offline), outbox, source
        finally:
            if restore is not None:
                restore()
        if self._fatal is not None:
            raise self._fatal
        m = self.metrics
        if self._stopping_reason == "end of input" and m.frames and not m.frames_with_face:
            # A file with no face ends quietly otherwise: exit 0, nothing printed.
            log.warning("no face in any of the %d frame(s) of %s: nothing to spot", m.frames, self.config.source.uri)
        log.info("stopped%s: %d frame(s), %d with a face, %d event(s)",
                 f" ({self._stopping_reason})" if self._stopping_reason else "", m.frames, m.frames_with_face, m.events)
        return int(ExitCode.OK)

    def _start(self, stack: ExitStack) -> None:
        self.notifier.status("starting: opening source")
        self._open_source_at_start()
        stack.callback(self._close_source)
        self._status = self._open_status(stack)
        self._outbox = self._open_outbox(stack)
        # Connect while the model loads: by the first event the broker has
        # answered (or been reported absent, once).
        self._publisher = self._open_publisher(stack, self._outbox)
        self.notifier.status("starting: loading model")
        started = time.monotonic()
        pipeline = self._pipeline = self._pipeline_factory(self.config)
        stack.callback(pipeline.close)
        if use_overlap(self.config.tracker):
            from microexpr.overlap import OverlappedPipeline

            self._runner = OverlappedPipeline(pipeline, self._on_result, self._on_failure)
            stack.callback(self._runner.close)  # before pipeline.close (LIFO)
        log.info("model loaded in %.2f s", time.monotonic() - started)
        self._reasoner = self._open_reasoner(stack)
        source_name = self._source.name if self._source is not None else self.config.source.uri
        self.notifier.status(f"starting: waiting for the first frame from {source_name}")
        for name, target in (("capture", self._capture_main), ("inference", self._inference_main),
                             ("stats", self._stats_main)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        log.info("running: device %s, source %s", self.device_id, source_name)
        # The service can serve now: the model is loaded and the outbox open.
        # A camera that is absent is a STATUS= line and health no_camera, not
        # a start that never finishes (boot ordering must not wait on it).
        self._notified_ready = True
        waiting = (f"no_camera: {source_name} not available; retrying" if self.health.value is Health.NO_CAMERA
                   else f"starting: waiting for the first frame from {source_name}")
        self.notifier.ready(waiting)

    def _supervise(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(0.2)
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if self._finished.is_set():  # end of input, or the inference loop gave up
                break

    def request_stop(self, reason: str = "") -> None:
        """Ask the daemon to stop (signal handlers, tests); returns at once."""
        self._interrupt.set()
        if not self._stop.is_set():
            self._stopping_reason = reason
            self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def _install_signals(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stop.is_set():
                log.info("%s again: already stopping", name)
                return
            self.request_stop(name)

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self.request_reload()

        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop), (signal.SIGHUP, on_hup))
        }

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _shutdown(self) -> None:
        """Stop capture, let inference finish the pipeline into the outbox, stop the rest.

        The outbox, publisher, reasoner and pipeline are closed afterwards by
        the ExitStack, in reverse order of opening.
        """
        self._stop.set()
        if self.health.set(Health.STOPPING):
            log.info("stopping%s", f" ({self._stopping_reason})" if self._stopping_reason else "")
        self.notifier.stopping()
        self.notifier.status("stopping: flushing events")
        if self._source_live:
            self._close_source()  # wakes a capture thread blocked on the camera
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("thread %s did not stop within %g s; abandoning it", thread.name, JOIN_TIMEOUT_S)
        if self._stopping_reason == "end of input":
            self._await_reasoner()
        self.health.set(Health.STOPPED)
        self._publish_stats()  # the last retained stats: "stopped", with every count final

    def _await_reasoner(self) -> None:
        """A file has ended: its last episodes were emitted a moment ago, so
        give the reasoner a bounded chance to refine them before it closes
        (otherwise a file's last ambiguous event is refined only on the next
        start). Bounded by the reasoner's timeout and END_OF_INPUT_REASONER_WAIT_S;
        a stop request ends it; what is left stays queued, durably."""
        reasoner = self._reasoner
        if reasoner is None or not reasoner.settings.enabled or not reasoner.queue_depth:
            return
        limit = min(reasoner.settings.timeout_s, END_OF_INPUT_REASONER_WAIT_S)
        log.info("end of input: waiting up to %g s for the reasoner (%d episode(s) queued)",
                 limit, reasoner.queue_depth)
        deadline = time.monotonic() + limit
        while reasoner.queue_depth and time.monotonic() < deadline and not self._interrupt.is_set():
            self._interrupt.wait(0.05)
        if reasoner.queue_depth:
            log.info("reasoner: %d episode(s) stay queued for the next start", reasoner.queue_depth)

    def _close_source(self) -> None:
        with self._source_lock:
            source, self._source = self._source, None
        if source is not None:
            try:
                source.close()
            except Exception:
                log.exception("closing source %s failed", source.name)
            # after close(): a live source's reader thread may drop one more
            self._closed_source_dropped += int(getattr(source, "dropped_frames", 0) or 0)

    # -- capture thread ------------------------------------------------------

    def _post(self, item: CaptureItem) -> bool:
        """Hand an item to inference. Frames of a live source replace the
        oldest waiting one when the queue is full; everything else waits
        (back-pressure). False once stopping."""
        live_frame = isinstance(item, FrameItem) and self._source_live
        while not self._stop.is_set():
            try:
                self._frames.put(item, timeout=0.2)
                return True
            except queue.Full:
                if live_frame:
                    with contextlib.suppress(queue.Empty):
                        self._frames.get_nowait()
                        self.metrics.queue_drop()
        return False

    def _capture_main(self) -> None:
        initial = self.config.source.reconnect_initial_s
        delay = initial
        broken = self._source is None  # a camera that was not there at start
        if broken:
            self._post(SourceLost("not available at start", delay))
        while not self._stop.is_set():
            if broken:
                if not self._reconnect_wait(delay):
                    return
                try:
                    name = self._reconnect()
                except Exception as exc:  # SourceError, or a driver's own exception
                    delay = min(delay * 2, self.config.source.reconnect_max_s)
                    if isinstance(exc, SourceError):
                        log.warning("%s; retrying in %g s", exc, delay)
                    else:
                        log.exception("reopening the camera failed; retrying in %g s", delay)
                    self._post(SourceLost(str(exc) or type(exc).__name__, delay))
                    continue
                if name is None:  # stopping
                    return
                log.info("camera %s is back", name)
                broken, delay = False, initial
                self._post(SourceRestored(name))
                continue
            source = self._source
            if source is None:  # closed by the shutdown
                return
            try:
                frame = source.read()
            except SourceError as exc:
                if self._stop.is_set():
                    return
                if not source.is_live:
                    log.error("%s", exc)
                    self._post(EndOfStream(exc))
                    return
                log.warning("%s; reconnecting in %g s", exc, delay)
                broken = True
                self._post(SourceLost(str(exc), delay))
                continue
            except Exception:  # a bug in a source: one frame lost, not the daemon
                log.exception("reading %s failed", source.name)
                if self._stop.wait(0.1):
                    return
                continue
            if frame is None:
                if not source.is_live and not self._stop.is_set():
                    log.info("end of %s", source.name)
                    self._post(EndOfStream())
                return
            self._post(FrameItem(frame, time.monotonic()))

    def _reconnect(self) -> str | None:
        """Open the camera (absent at start) or reopen it (lost); None when stopping.

        Under the source lock, so a shutdown never races a reopening.
        """
        with self._source_lock:
            if self._stop.is_set():
                return None
            if self._source is None:
                self._source = self._source_opener()
            else:
                self._source.reopen()
            return self._source.name

    def _reconnect_wait(self, delay: float) -> bool:
        """Wait before a reconnect (READY=1 was sent at start: nothing to extend)."""
        return not self._stop.wait(delay)

    # -- inference thread ----------------------------------------------------

    def _idle_wait(self) -> float:
        interval = self.notifier.watchdog_interval_s
        return min(MAX_IDLE_WAIT_S, interval / 2) if interval > 0 else MAX_IDLE_WAIT_S

    def _inference_main(self) -> None:
        wait = self._idle_wait()
        try:
            while not self._stop.is_set():
                self.notifier.watchdog()
                self._apply_commands()
                try:
                    item = self._frames.get(timeout=wait)
                except queue.Empty:
                    continue
                if isinstance(item, EndOfStream):
                    if item.error is not None:
                        self._fatal = item.error
                    self._stopping_reason = "end of input" if item.error is None else "input error"
                    break
                try:
                    self._handle(item)
                except Exception:  # a bug around one item must not end the loop
                    log.exception("inference: unexpected error on %s (continuing)", type(item).__name__)
            self._flush_pipeline()
        finally:
            self._finished.set()

    def _handle(self, item: FrameItem | SourceLost | SourceRestored) -> None:
        if isinstance(item, FrameItem):
            self._process(item)
        elif isinstance(item, SourceLost):
            self._on_source_lost(item)
        elif self.health.set(Health.OK if self._ready else Health.STARTING):
            self._status_now()

    def _process(self, item: FrameItem) -> None:
        """Track the frame here; analyse it here too, or hand it to the
        analysis thread (``tracker.overlap``), which calls ``_on_result``."""
        frame = item.frame
        assert self._pipeline is not None
        if self.paused:  # read and dropped, counted (stats controls.paused_frames)
            self.paused_frames += 1
            return
        try:
            if self._runner is not None:
                self._runner.submit(frame, item)
                return
            result = self._pipeline.process(frame)
        except Exception as exc:
            self._on_failure(item, frame, exc)
            return
        self._on_result(item, frame, result)

    def _on_failure(self, item: FrameItem, frame: Frame, exc: Exception) -> None:
        now = time.monotonic()
        self.metrics.frame_failed(now)
        count = self.metrics.errors
        if count <= 3 or count % 100 == 0:  # a persistent fault must not flood the journal
            if isinstance(exc, MicroexprError):
                log.warning("frame %d: %s (%d failures so far; continuing)", frame.index, exc, count)
            else:
                log.error("frame %d: pipeline failed (%d failures so far; continuing)", frame.index, count,
                          exc_info=exc)
        self._update_health(now)

    def _on_result(self, item: FrameItem, frame: Frame, result: PipelineResult) -> None:
        """A frame went through every stage: metrics, events, AU stream, readiness.

        Runs on the inference thread, or on the analysis thread with
        ``tracker.overlap`` (then the inference thread only tracks).
        """
        now = time.monotonic()
        timings = result.timings.as_seconds()
        start = frame.timestamp if self._source_live else item.received
        timings["total"] = max(0.0, now - start)
        self.metrics.frame_done(now, timings)
        if result.observation.faces:
            self.metrics.frames_with_face += 1
        if self._status is not None:
            self._status.on_frame(timings, bool(result.observation.faces), result.aus, frame)
        self._emit_all(list(emitted_episodes(result.episodes)), getattr(result, "in_progress", ()), frame.timestamp)
        self._maybe_publish_aus(result, now)
        if self._face.update(bool(result.observation.faces), now) and self._publisher is not None:
            self._publisher.set_retained(self.topics.face, "ON" if self._face.present else "OFF")
        if not self._ready:
            self._ready = True
            self.health.set(Health.OK)
            log.info("first frame processed")
            self._update_health(now)
            self._status_now()
        else:
            self._update_health(now)

    def _apply_commands(self) -> None:
        """Inference thread: apply the MQTT commands received since the last frame."""
        for command in self.controls.take():
            try:
                self._apply_command(command.name.value, command.value)
            except Exception:  # a failing command must not end the loop
                log.exception("command %s failed (continuing)", command.name.value)

    def _apply_command(self, name: str, value: bool) -> None:
        word = "ON" if value else "OFF"
        if name == "paused":
            if value and not self.paused:
                self._flush_pipeline()  # what was open is emitted, not lost
                self.paused = True
                log.info("paused by command: frames are read and dropped (counted) until resumed")
            elif not value and self.paused:
                self._reset_pipeline()  # the face may have changed meanwhile: learn it again
                self.paused = False
                log.info("resumed by command after %d dropped frame(s)", self.paused_frames)
            self._status_now()
        elif name == "recalibrate":
            self._flush_pipeline()
            self._reset_pipeline()
            log.info("recalibrate by command: the resting face is learnt again from the next frames")
        elif name == "aus_stream":
            self.config = self.config.model_copy(
                update={"mqtt": self.config.mqtt.model_copy(update={"aus_stream": value})})
            log.info("AU stream %s by command", "on" if value else "off")
        if name != "recalibrate" and self._publisher is not None:
            self._publisher.set_retained(self.topics.state(name), word)

    def _reset_pipeline(self) -> None:
        """Forget every subject (its resting face); the pipeline is idle (flushed) here."""
        reset = getattr(self._pipeline, "reset", None)
        if callable(reset):
            if self._runner is not None:
                self._runner.drain(JOIN_TIMEOUT_S)
            reset()

    def _update_health(self, now: float) -> None:
        if not self._ready:
            return
        storage = self._guard.problem if self._guard is not None else None
        wanted = Health.DEGRADED if self.metrics.failing(now) or storage is not None else Health.OK
        current = self.health.value
        if current in (Health.OK, Health.DEGRADED) and current is not wanted and self.health.set(wanted):
            log.info("health: %s%s", wanted.value, f" ({self._guard.reason()})" if storage and self._guard else "")
            self._status_now()

    def _on_source_lost(self, item: SourceLost) -> None:
        changed = self.health.set(Health.NO_CAMERA)
        # An episode in progress cannot finish without frames: emit what is
        # pending now rather than after the camera returns.
        if changed and self._ready:
            self._flush_pipeline()
        self.notifier.status(f"no_camera: {item.reason}; retrying in {item.retry_in_s:g} s")

    def _flush_pipeline(self) -> None:
        """Emit the episodes the pipeline still holds (end of input, stop, camera loss)."""
        try:
            assert self._pipeline is not None
            # with overlap, the frames already tracked are analysed first
            pending = self._runner.finish(JOIN_TIMEOUT_S) if self._runner is not None else self._pipeline.finish()
        except Exception:
            log.exception("finishing the pipeline failed; its pending episodes are lost")
            return
        self._emit_all(list(emitted_episodes(pending)), (), float("inf"))

    def _emit_all(self, emitted: list[Emitted], in_progress: tuple[EpisodeInProgress, ...], now_s: float) -> None:
        """The frame's finished episodes as events, with the lifecycle notices (when on) around them."""
        ids: list[str | None] = [None] * len(emitted)
        if self._lifecycle is not None:
            notices, given = self._lifecycle.step(in_progress, emitted, now_s)
            for notice in notices:
                self._store_notice(notice)
            ids = list(given)
        for item, event_id in zip(emitted, ids, strict=True):
            self._emit(item, event_id)

    def _store_notice(self, notice: LifecycleNotice | None) -> None:
        """A lifecycle notice takes the events' way: committed to the outbox, then sent in order."""
        if notice is None:
            return
        assert self._guard is not None
        try:
            self._guard.store_now(Pending(notice.key, self.topics.lifecycle, notice.to_json(), self.config.mqtt.qos))
        except MicroexprError as exc:
            log.error("lifecycle %s of %s not stored: %s", notice.type.value, notice.event_id, exc)
            return
        if self._publisher is not None:
            self._publisher.wake()

    def _emit(self, emitted: Emitted, event_id: str | None = None) -> None:
        """Commit the event to the outbox; only once committed print it, count it
        and queue it for the reasoner (durable means durable: outbox_guard)."""
        try:
            event = Event.from_episode(emitted.episode, emitted.decision, device_id=self.device_id, event_id=event_id)
        except MicroexprError as exc:
            log.error("episode at frame %d cannot become an event: %s", emitted.episode.apex_frame, exc)
            if self._lifecycle is not None and event_id is not None:
                self._store_notice(self._lifecycle.discard(event_id, f"cannot become an event: {exc}"))
            return
        assert self._guard is not None
        message = Pending(event.event_id, self.topics.event, event.to_json(), self.config.mqtt.qos)
        with self._commit_lock:
            try:
                outcome, written = self._guard.store(message)
            except Exception:  # a bug in the guard must not end the loop
                log.exception("event %s: storing failed unexpectedly", event.event_id)
                if self._status is not None:
                    self._status.on_store_failed("event")
                return
            self._committed(written)
            if outcome is StoreOutcome.SPILLED and self._reasoner is not None and event.ambiguous:
                self._spilled_emitted[event.event_id] = emitted
                while len(self._spilled_emitted) > max(1, self._guard.spill_max):
                    self._spilled_emitted.pop(next(iter(self._spilled_emitted)))
            if outcome not in (StoreOutcome.STORED, StoreOutcome.DUPLICATE):
                if outcome is StoreOutcome.REJECTED and self._status is not None:
                    self._status.on_store_failed("event")
                self._update_health(time.monotonic())
                return  # held in memory (reported when written back) or refused (counted)
            if self._lifecycle is not None:
                self._store_notice(self._lifecycle.end_notice(event))
            self.metrics.event_emitted()
            if self._status is not None:
                self._status.on_event(event)
            log.info(
                "event %s: %s %s (%.2f, stage %s)%s", event.event_id, event.kind.value, event.emotion.value,
                event.confidence, event.stage.value, " ambiguous" if event.ambiguous else "",
                extra={"MICROEXPR_EVENT_ID": event.event_id},
            )
            self._print(event.to_json())
        if self._publisher is not None:
            self._publisher.wake()
        if self._reasoner is not None and event.ambiguous:
            self._reasoner.submit(event.event_id, emitted.episode, emitted.decision, emitted.context)

    def _committed(self, written: list[Pending]) -> None:
        """Events the guard held in memory and has now committed: report them as new."""
        for message in written:
            self.metrics.event_emitted()
            log.info("event %s: committed after being held in memory", message.event_id,
                     extra={"MICROEXPR_EVENT_ID": message.event_id})
            self._print(message.payload)
            emitted = self._spilled_emitted.pop(message.event_id, None)
            if emitted is not None and self._reasoner is not None:
                self._reasoner.submit(message.event_id, emitted.episode, emitted.decision, emitted.context)
        if written and self._publisher is not None:
            self._publisher.wake()

    def _drain_spill(self) -> None:
        if self._guard is None:
            return
        try:
            with self._commit_lock:
                self._committed(self._guard.drain())
        except Exception:
            log.exception("writing back held events failed unexpectedly (continuing)")

    def _store(self, message: Event | RefinedEvent) -> None:
        """Commit one message to the outbox or raise (the publisher's pump sends it from there)."""
        assert self._guard is not None
        topic = self.topics.event if isinstance(message, Event) else self.topics.refined
        self._guard.store_now(Pending(message.event_id, topic, message.to_json(), self.config.mqtt.qos))
        if self._publisher is not None:
            self._publisher.wake()

    def _print(self, line: str) -> None:
        if not self.print_events:
            return
        with self._out_lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                self.print_events = False
                log.warning("stdout closed (%s): no longer printing events", exc)

    def _maybe_publish_aus(self, result: PipelineResult, now: float) -> None:
        mqtt = self.config.mqtt
        if self._publisher is None or not mqtt.aus_stream:
            return
        if now - self._last_aus < mqtt.aus_interval_s:
            return
        if self._publisher.publish_aus(result.aus):
            self._last_aus = now

    def _on_refined(self, refinement: Refinement) -> None:
        """Called on a reasoner worker thread: the refined event goes the same
        way as events (outbox first). Raising keeps it in the reasoner's queue."""
        refined = RefinedEvent(
            event_id=refinement.event_id,
            device_id=self.device_id,
            emotion=refinement.label,
            confidence=refinement.confidence,
            rationale=refinement.rationale,
            aus_cited=tuple(refinement.aus_cited),
            local_emotion=refinement.local_label,
            model=refinement.model,
        )
        try:
            self._store(refined)
        except MicroexprError:
            if self._status is not None:
                self._status.on_store_failed("refined")
            raise
        if self._status is not None:
            self._status.on_refined(refined)
        self._print(refined.to_json())

    # -- stats thread --------------------------------------------------------

    def _stats_main(self) -> None:
        next_stats = time.monotonic() + min(2.0, self.config.mqtt.stats_interval_s)
        while not self._stop.wait(STATUS_INTERVAL_S):
            try:
                self._drain_spill()
                self._update_health(time.monotonic())
                if self._ready or self.health.value is not Health.STARTING:
                    self._status_now()
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = now + self.config.mqtt.stats_interval_s
                    self._publish_stats()
            except Exception:
                log.exception("stats: unexpected error (continuing)")

    def _status_now(self) -> None:
        self.notifier.status(self._status_text())

    def _status_text(self) -> str:
        now = time.monotonic()
        health = self.health.value
        total = self.metrics.latency().get("total")
        reason = self._guard.reason() if self._guard is not None else ""
        paused = " (paused)" if self.paused else ""
        parts = [f"{health.value}{f' ({reason})' if reason else ''}{paused}: {self.metrics.fps(now):.1f} fps"]
        if total is not None and total.count:
            parts.append(f"latency p50 {total.p50_ms:.0f} ms p95 {total.p95_ms:.0f} ms")
        parts.append(f"{self.metrics.events} events")
        if self._outbox is not None:
            parts.append(f"outbox {len(self._outbox)}")
        if self._publisher is not None:
            parts.append("broker connected" if self._publisher.connected else "broker offline")
        return ", ".join(parts)

    def stats(self) -> Stats:
        now = time.monotonic()
        source = self._source
        dropped = (self.metrics.dropped_queue + self._closed_source_dropped
                   + (source.dropped_frames if source is not None else 0))
        queues = {"frames": self._frames.qsize()}
        reasoner = reasoner_stats(self._reasoner) if self._reasoner is not None else None
        if reasoner is not None:
            queues["reasoner"] = reasoner.queue_depth
        outbox = self._outbox
        guard = self._guard.counts() if self._guard is not None else None
        runner = self._runner
        return Stats(
            device_id=self.device_id,
            uptime_s=now - self.metrics.started,
            fps=self.metrics.fps(now),
            frames=self.metrics.frames,
            dropped_frames=dropped,
            latency=self.metrics.latency(),
            queues=queues,
            outbox_depth=len(outbox) if outbox is not None else 0,
            outbox_dropped=outbox.dropped if outbox is not None else 0,
            outbox_counts={} if guard is None else {
                "rejected": guard.rejected, "spilled": guard.spilled,
                "written_back": guard.written_back, "lost": guard.lost,
            },
            health_reason=self._guard.reason() if self._guard is not None else "",
            events=self.metrics.events,
            health=self.health.value.value,
            reasoner=reasoner,
            suppressed=suppression_counts(self._pipeline),
            controls={"paused": int(self.paused), "paused_frames": self.paused_frames,
                      "commands_accepted": self.controls.accepted, "commands_rejected": self.controls.rejected},
            flow={key: int(getattr(self._pipeline, f"flow_{key}", 0) or 0) for key in ("ran", "skipped", "backfilled")},
            analysis={} if runner is None else {"promoted": runner.promoted, "yielding": int(runner.yielding)},
        )

    def _publish_stats(self) -> None:
        if self._publisher is None:
            return
        try:
            self._publisher.publish_stats(self.stats())
        except Exception:
            log.exception("publishing stats failed")

    # -- reload --------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: apply the keys that are safe live, log the ones that need a restart.

        An invalid file is logged (one line) and the running configuration
        is kept: exit code 78 is for start-up only.
        """
        if self._config_loader is None:
            log.info("reload requested, but this daemon has no configuration file to re-read")
            return
        self.notifier.reloading()
        try:
            try:
                new = self._config_loader()
            except MicroexprError as exc:
                log.error("reload: %s; keeping the running configuration", exc)
                return
            plan = cfg.plan_reload(self.config, new)
            if not plan.changed:
                log.info("reload: configuration unchanged")
                return
            live, restart, effective = list(plan.live), list(plan.restart), plan.effective
            if not callable(getattr(self._pipeline, "configure", None)):
                # This pipeline reads its thresholds once: say so rather than
                # claim a change that did not happen.
                engine = [key for key in live if key.startswith("engine.")]
                live = [key for key in live if key not in engine]
                restart += engine
                effective = effective.model_copy(update={"engine": self.config.engine})
            elif any(key.startswith("engine.") for key in live):
                # Before the configuration is committed: settings the pipeline
                # refuses must not be reported as applied, nor kept in
                # self.config as if they were running (the next reload would
                # then compare against values that never ran).
                try:
                    self._pipeline.configure(effective.engine)  # type: ignore[union-attr]
                except ValueError as exc:
                    log.error("reload: engine settings not applied: %s; keeping the running ones", exc)
                    live = [key for key in live if not key.startswith("engine.")]
                    effective = effective.model_copy(update={"engine": self.config.engine})
            self.config = effective
            self._apply_live(frozenset(key.split(".")[0] for key in live))
            if live:
                log.info("reload: applied %s", ", ".join(live))
            if restart:
                log.warning("reload: %s changed; needs a restart (systemctl restart microexpr)", ", ".join(restart))
        finally:
            # READY=1 ends the reload for systemd (sent once start-up is done).
            self.notifier.send(*(["READY=1"] if self._notified_ready else []), f"STATUS={self._status_text()}")

    def _apply_live(self, sections: frozenset[str]) -> None:
        if "logging" in sections and not self.keep_log_level:
            logging.getLogger().setLevel(self.config.log_level())
        # engine.*: handed to the pipeline by reload(), before committing.
        if "reasoner" in sections and self._reasoner is not None:
            self._reasoner.apply_live(self.config.reasoner)
        # mqtt.stats_interval_s, aus_stream, aus_interval_s are read from
        # self.config by the stats and inference threads: nothing to do.


def run(options: RunOptions) -> int:
    """``microexpr run``: load the configuration, build the service, run it."""
    config = load_run_config(options)
    path = cfg.find_config_file(options.config_path)
    preflight.check(config, origin=str(path) if path is not None else None)  # what check-config also refuses
    if not options.verbose:
        logging.getLogger().setLevel(config.log_level())
    print_events = options.print_events if options.print_events is not None else not stdout_is_journal()
    service = Service(
        config,
        print_events=print_events,
        config_loader=lambda: load_run_config(options),
        keep_log_level=options.verbose,
    )
    with logs_on_own_stderr():
        return service.run()

"""Track frame t+1 while frame t is analysed: the pipeline on two cores.

The tracker (MediaPipe or ONNX Runtime, both releasing the GIL while they
infer) is most of a frame's cost; the analysis after it (AUs, the dense
optical flow of ``motion``, baseline, spotting, classification) is most of
the rest, and OpenCV's flow also runs without the GIL. Run one after the
other they add up; run as a two-stage pipeline, a frame costs roughly the
larger of the two, which is what decides the frame rate a board sustains.
A Pi 4 or 5 has four cores.

What does not change: every frame goes through both stages in order, the
tracker's state is touched only by the caller's thread and the analysis
state only by the worker, so the results are exactly those of
``Pipeline.process`` (tested). What it costs: a frame's result is ready
when its analysis ends — the same latency as sequential — but the tracker
may already be one frame further, so up to two frames are in flight.

Results go to ``on_result`` on the worker thread, as soon as each is ready
(no waiting for the next frame); a failure in the analysis goes to
``on_error`` and the worker carries on with the next frame.

The worker yields the cores to the tracker while it keeps up (Linux
``SCHED_IDLE``, its own thread only). On two cores MediaPipe splits each
layer between two inference threads; an analysis thread of equal weight
that holds one of the cores delays half of every layer, so the tracker's
stream slowed by about the analysis's own CPU time even though the board
had a core's worth of time to spare (measured: a still face's stream
1.04-1.05x the bare tracker's at p50 with the worker at normal priority,
1.00-1.01x at ``SCHED_IDLE``; nice 19 gave 1.03; docs/benchmarks.md). A
thread at ``SCHED_IDLE`` runs only on what other threads leave; so that a
busy board cannot starve it, the caller's thread gives it its normal
priority back as soon as ``submit`` finds the analysis a whole frame behind
(the queue full), and the worker yields again once it has caught up. That
return needs ``RLIMIT_NICE`` to allow nice 0 (``LimitNICE=+0`` in the
unit) or root: without it, and where the policy cannot be set (a seccomp
filter, another OS), the worker keeps its normal priority (one INFO line).
A thread or process started from the worker would inherit ``SCHED_IDLE``
for good: ``on_result`` must not start any (the daemon starts its MQTT,
reasoner and status threads at start-up, on the main thread).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from microexpr.capture import Frame
from microexpr.pipeline import Pipeline, PipelineResult, SpottedEpisode
from microexpr.tracking.base import FaceObservation

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often a blocked ``submit`` re-checks that the runner is still open.
_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class _Work(Generic[T]):
    frame: Frame
    observation: FaceObservation
    tracker_ns: int
    tag: T


_STOP = object()


def can_yield() -> bool:
    """Whether the worker may yield (``SCHED_IDLE``) and still be given
    its normal priority back: Linux, and root or an ``RLIMIT_NICE`` that
    allows this thread's nice value (an unprivileged thread may leave
    ``SCHED_IDLE`` only then)."""
    if not hasattr(os, "SCHED_IDLE") or not hasattr(os, "sched_setscheduler"):
        return False
    if os.geteuid() == 0:
        return True
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NICE)
    return soft == resource.RLIM_INFINITY or soft >= 20 - os.getpriority(os.PRIO_PROCESS, 0)


class OverlappedPipeline(Generic[T]):
    """Drives a :class:`Pipeline` as tracker (caller's thread) → analysis (worker).

    ``submit(frame, tag)`` tracks ``frame`` now and queues its analysis;
    ``on_result(tag, frame, result)`` runs on the worker when it is done.
    ``tag`` is the caller's own bookkeeping for the frame (e.g. when it was
    received). The runner does not own the pipeline: ``close()`` stops the
    worker, the pipeline is closed by whoever created it.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        on_result: Callable[[T, Frame, PipelineResult], None],
        on_error: Callable[[T, Frame, Exception], None] | None = None,
        *,
        name: str = "analysis",
        yield_to_tracker: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self._on_result = on_result
        self._on_error = on_error
        #: the worker's policy: True while it yields (``SCHED_IDLE``)
        self.yielding = False
        #: times ``submit`` found the analysis a frame behind and gave the
        #: worker its normal priority back
        self.promoted = 0
        self._yield = yield_to_tracker and can_yield()
        self._tid = 0
        # One frame waiting while one is analysed: the tracker runs at most
        # one frame ahead, so a slow analysis pushes back on the caller
        # (and, in the daemon, on the frame queue that drops old frames).
        self._queue: queue.Queue[_Work[T] | object] = queue.Queue(maxsize=1)
        self._closed = False
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    # -- caller's thread
    def submit(self, frame: Frame, tag: T) -> FaceObservation:
        """Track ``frame`` and queue its analysis; returns the observation.

        Blocks while the analysis is more than one frame behind. A tracker
        failure is raised here, to the caller, and nothing is queued.
        """
        if self._closed:
            raise RuntimeError("OverlappedPipeline is closed")
        t0 = time.perf_counter_ns()
        obs = self.pipeline.track(frame)
        work = _Work(frame, obs, time.perf_counter_ns() - t0, tag)
        try:
            self._queue.put_nowait(work)
            return obs
        except queue.Full:
            if self._yield and self.yielding:
                # a frame behind: the worker gets its share back until it catches up
                # (not retried once refused: _set_policy logs that once and stops yielding)
                self._set_policy(False)
                self.promoted += 1
        while True:
            try:
                self._queue.put(work, timeout=_POLL_S)
                return obs
            except queue.Full:
                if self._closed or not self._worker.is_alive():
                    raise RuntimeError("OverlappedPipeline closed while a frame was waiting") from None

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted frame has been analysed; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def finish(self, timeout: float | None = None) -> tuple[SpottedEpisode, ...]:
        """End of stream: analyse what is queued, then flush open episodes.

        The flush runs on the caller's thread once the worker is idle (the
        queue hand-over orders it after the last analysis).
        """
        if not self.drain(timeout):
            # The worker still holds the analysis state: flushing it from
            # this thread would race it. Its open episodes are given up.
            log.error("analysis still busy after %s s: open episodes not flushed", timeout)
            return ()
        return self.pipeline.finish()

    def close(self, timeout: float = 5.0) -> None:
        """Analyse what is queued, stop the worker; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("analysis worker busy for %g s at close: abandoning it", timeout)
            return
        self._worker.join(timeout)
        if self._worker.is_alive():
            log.warning("analysis worker did not stop within %g s; abandoning it", timeout)

    def __enter__(self) -> OverlappedPipeline[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _set_policy(self, idle: bool) -> None:
        """The worker thread's scheduling policy (from either thread: a
        thread id is enough on Linux)."""
        try:
            os.sched_setscheduler(self._tid, os.SCHED_IDLE if idle else os.SCHED_OTHER, os.sched_param(0))
        except OSError as exc:
            self._yield = False
            log.info("analysis thread: the %s scheduling policy was refused (%s); it no longer yields to the tracker",
                     "idle" if idle else "normal", exc)
            return
        self.yielding = idle

    # -- worker thread
    def _run(self) -> None:
        self._tid = threading.get_native_id()
        if self._yield:
            self._set_policy(True)
        while True:
            work = self._queue.get()
            try:
                if work is _STOP:
                    return
                assert isinstance(work, _Work)
                self._analyse(work)
            finally:
                self._queue.task_done()
            if self._yield and not self.yielding and self._queue.empty():
                self._set_policy(True)  # caught up

    def _analyse(self, work: _Work[T]) -> None:
        try:
            result = self.pipeline.analyse(work.frame, work.observation, tracker_ns=work.tracker_ns)
        except Exception as exc:  # one bad frame must not end the worker
            if self._on_error is None:
                log.exception("frame %d: analysis failed (continuing)", work.frame.index)
                return
            try:
                self._on_error(work.tag, work.frame, exc)
            except Exception:
                log.exception("frame %d: error handler failed (continuing)", work.frame.index)
            return
        try:
            self._on_result(work.tag, work.frame, result)
        except Exception:
            log.exception("frame %d: result handler failed (continuing)", work.frame.index)

"""Tracker and analysis on two threads (``microexpr.overlap``): the same
results as ``Pipeline.process``, failures contained, clean shutdown; and
``Pipeline.configure`` (the ``[engine]`` settings a SIGHUP applies live)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from microexpr.capture import Frame, open_source
from microexpr.config import EngineConfig
from microexpr import overlap
from microexpr.overlap import OverlappedPipeline, can_yield
from microexpr.pipeline import Pipeline, PipelineResult
from microexpr.spotting import EpisodeKind
from microexpr.synth import SynthSpec, parse_event, write_clip
from microexpr.tracking import create_tracker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smile_frames(smile_clip: Path) -> list[Frame]:
    with open_source(smile_clip) as src:
        return list(src)


@pytest.fixture(scope="module")
def micro_frames(model_path: Path, media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    """A 200 ms half-intensity smile on the real video's neutral frames."""
    path = tmp_path_factory.mktemp("overlap") / "micro.mp4"
    spec = SynthSpec(media_dir / "single_face.mp4", 30.0, 2.0, (parse_event("12@1.0/0.2*0.6"),), base_frames=(5, 14))
    with create_tracker(model_path=model_path) as tracker:
        write_clip(spec, tracker, path)
    with open_source(path) as src:
        return list(src)


@pytest.fixture()
def pipeline(model_path: Path) -> Iterator[Pipeline]:
    with Pipeline.create(model_path=model_path) as p:
        yield p


def _summary(result: PipelineResult) -> tuple:
    """What a frame's result says, comparable across runs."""
    ev = result.evidence
    return (
        result.observation.frame_index,
        result.observation.face is not None,
        sorted(result.aus.intensity.items()),
        None if ev is None else (ev.ready, ev.gated, ev.activity, ev.activity_raw, sorted(ev.au_z.items())),
        tuple((s.episode.onset_frame, s.episode.apex_frame, s.episode.offset_frame, s.episode.kind,
               s.decision.label if s.decision else None) for s in result.episodes),
    )


def _overlapped(pipeline: Pipeline, frames: list[Frame]) -> tuple[list[PipelineResult], list[str]]:
    results: list[PipelineResult] = []
    threads: list[str] = []

    def on_result(tag: int, frame: Frame, result: PipelineResult) -> None:
        assert tag == frame.index
        threads.append(threading.current_thread().name)
        results.append(result)

    with OverlappedPipeline(pipeline, on_result) as runner:
        for frame in frames:
            runner.submit(frame, frame.index)
        flushed = runner.finish(timeout=30)
    if flushed:
        results.append(PipelineResult(results[-1].observation, results[-1].aus, None, None, flushed, results[-1].timings))
    return results, threads


def test_same_results_as_sequential(model_path: Path, smile_frames: list[Frame], micro_frames: list[Frame]) -> None:
    for frames in (smile_frames, micro_frames):
        with Pipeline.create(model_path=model_path) as seq:
            sequential = [seq.process(f) for f in frames]
            tail = seq.finish()
        if tail:
            last = sequential[-1]
            sequential.append(PipelineResult(last.observation, last.aus, None, None, tail, last.timings))
        with Pipeline.create(model_path=model_path) as p:
            overlapped, threads = _overlapped(p, frames)
        assert [_summary(r) for r in overlapped] == [_summary(r) for r in sequential]
        assert set(threads) == {"analysis"}  # the results came from the worker
        assert sum(len(r.episodes) for r in overlapped) >= 1
        # the tracker's time is carried to the result
        assert all(r.timings.tracker_ns > 0 for r in overlapped)


def test_analysis_failure_is_reported_and_the_worker_goes_on(pipeline: Pipeline, smile_frames: list[Frame]) -> None:
    real = pipeline.estimator.estimate
    bad = {5, 6}

    def flaky(obs):  # a fault injected into one stage: the rest is real
        if obs.frame_index in bad:
            raise ValueError(f"broken frame {obs.frame_index}")
        return real(obs)

    pipeline.estimator.estimate = flaky  # type: ignore[method-assign]
    failed: list[tuple[int, str]] = []
    done: list[int] = []
    with OverlappedPipeline(pipeline, lambda tag, f, r: done.append(tag),
                            lambda tag, f, exc: failed.append((tag, str(exc)))) as runner:
        for frame in smile_frames[:12]:
            runner.submit(frame, frame.index)
        assert runner.drain(timeout=30)
    assert failed == [(5, "broken frame 5"), (6, "broken frame 6")]
    assert done == [i for i in range(12) if i not in bad]


def test_tracker_failure_is_raised_to_the_caller(pipeline: Pipeline, smile_frames: list[Frame]) -> None:
    done: list[int] = []
    with OverlappedPipeline(pipeline, lambda tag, f, r: done.append(tag)) as runner:
        runner.submit(smile_frames[0], 0)
        broken = Frame(1, smile_frames[1].timestamp, np.zeros((0, 0, 3), np.uint8))
        with pytest.raises(Exception):
            runner.submit(broken, 1)
        runner.submit(smile_frames[2], 2)
        assert runner.drain(timeout=30)
    assert done == [0, 2]


def test_close_is_idempotent_and_final(pipeline: Pipeline, smile_frames: list[Frame]) -> None:
    runner: OverlappedPipeline[int] = OverlappedPipeline(pipeline, lambda tag, f, r: None)
    runner.submit(smile_frames[0], 0)
    runner.close()
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        runner.submit(smile_frames[1], 1)
    assert not any(t.name == "analysis" and t.is_alive() for t in threading.enumerate())


def test_configure_applies_engine_settings_at_the_next_frame(pipeline: Pipeline, micro_frames: list[Frame]) -> None:
    """A 200 ms smile: micro under the default 0.5 s limit, macro under a
    0.1 s one, and emitted sooner with no emission delay."""

    def run(offset: float) -> list[tuple[int, EpisodeKind]]:
        pipeline.reset()
        out = []
        for f in micro_frames:
            result = pipeline.process(Frame(f.index, f.timestamp + offset, f.image))
            out += [(f.index, s.episode.kind) for s in result.episodes]
        return out + [(-1, s.episode.kind) for s in pipeline.finish()]

    default = run(0.0)
    assert [kind for _, kind in default] == [EpisodeKind.MICRO]
    pipeline.configure(EngineConfig(micro_max_s=0.1))
    assert pipeline.config.spotter.micro_max_s == 0.5  # not before the next frame
    stricter = run(10.0)
    assert pipeline.config.spotter.micro_max_s == 0.1
    assert stricter == [(default[0][0], EpisodeKind.MACRO)]
    pipeline.configure(EngineConfig(emit_delay_s=0.0))
    sooner = run(20.0)
    assert len(sooner) == 1 and 0 <= sooner[0][0] < default[0][0]


def test_configure_rejects_bad_values_and_keeps_the_old(pipeline: Pipeline) -> None:
    before = pipeline.config
    with pytest.raises(ValueError):
        pipeline.configure(EngineConfig.model_construct(micro_max_s=-1.0, emit_delay_s=0.2, min_evidence_z=3.0,
                                                        ambiguous_confidence=0.5, ambiguous_margin=0.15))
    assert pipeline.config is before and pipeline._pending is None


def test_finish_gives_up_rather_than_race_a_hung_analysis(pipeline: Pipeline, smile_frames: list[Frame]) -> None:
    release = threading.Event()
    real = pipeline.estimator.estimate

    def stuck(obs):  # the analysis of frame 1 hangs until released
        if obs.frame_index == 1:
            release.wait(10)
        return real(obs)

    pipeline.estimator.estimate = stuck  # type: ignore[method-assign]
    done: list[int] = []
    runner: OverlappedPipeline[int] = OverlappedPipeline(pipeline, lambda tag, f, r: done.append(tag))
    try:
        for frame in smile_frames[:3]:
            runner.submit(frame, frame.index)
        assert runner.drain(timeout=0.2) is False
        assert runner.finish(timeout=0.2) == ()
    finally:
        release.set()
        runner.close()
    assert done == [0, 1, 2]  # released, the worker finished every frame in order


def _policy(runner: OverlappedPipeline) -> int:
    return os.sched_getscheduler(runner._tid)


@pytest.mark.skipif(not can_yield(), reason="SCHED_IDLE with a way back needs Linux and root or RLIMIT_NICE")
def test_the_worker_yields_while_it_keeps_up_and_gets_its_share_back_when_behind(
        pipeline: Pipeline, smile_frames: list[Frame]) -> None:
    """At SCHED_IDLE while the analysis keeps up; a submit that finds it a
    whole frame behind gives it SCHED_OTHER back, and once caught up it
    yields again. The results are the same frames in the same order."""
    release, entered = threading.Event(), threading.Event()
    real = pipeline.estimator.estimate

    def slow(obs):  # the analysis of frame 1 waits until released
        if obs.frame_index == 1:
            entered.set()
            release.wait(10)
        return real(obs)

    pipeline.estimator.estimate = slow  # type: ignore[method-assign]
    done: list[int] = []
    with OverlappedPipeline(pipeline, lambda tag, f, r: done.append(tag)) as runner:
        runner.submit(smile_frames[0], 0)
        assert runner.drain(timeout=10)
        assert runner.yielding and _policy(runner) == os.SCHED_IDLE
        runner.submit(smile_frames[1], 1)  # the worker takes it and waits
        assert entered.wait(10)
        runner.submit(smile_frames[2], 2)  # queued
        assert runner.promoted == 0
        blocked = threading.Thread(target=runner.submit, args=(smile_frames[3], 3))
        blocked.start()  # finds the queue full: a frame behind
        deadline = time.monotonic() + 10
        while runner.promoted == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.promoted == 1 and not runner.yielding and _policy(runner) == os.SCHED_OTHER
        release.set()
        blocked.join(10)
        assert runner.drain(timeout=10)
        deadline = time.monotonic() + 10
        while not runner.yielding and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.yielding and _policy(runner) == os.SCHED_IDLE
    assert done == [0, 1, 2, 3]


def test_the_worker_keeps_normal_priority_when_asked_or_refused(
        pipeline: Pipeline, smile_frames: list[Frame], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    with OverlappedPipeline(pipeline, lambda tag, f, r: None, yield_to_tracker=False) as runner:
        runner.submit(smile_frames[0], 0)
        assert runner.drain(timeout=10)
        assert not runner.yielding and _policy(runner) == os.SCHED_OTHER

    def refuse(*_args):  # as the unit's seccomp filter answers without sched_setscheduler
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(overlap, "can_yield", lambda: True)
    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level("INFO", logger="microexpr.overlap"), \
            OverlappedPipeline(pipeline, lambda tag, f, r: None) as runner:
        for k in range(3):
            runner.submit(smile_frames[k], k)
        assert runner.drain(timeout=10)
        assert not runner.yielding and runner.promoted == 0
    refused = [r for r in caplog.records if "scheduling policy was refused" in r.getMessage()]
    assert len(refused) == 1



@pytest.mark.parametrize(("euid", "rlimit_nice", "nice", "expected"), [
    (0, 0, 0, True),       # root may always come back
    (999, 20, 0, True),    # LimitNICE=+0: back to nice 0
    (999, 0, 0, False),    # the default limit: SCHED_IDLE would be for good
    (999, 10, 10, True),   # a unit run at Nice=10 needs only RLIMIT_NICE 10
    (999, 10, 0, False),
])
def test_can_yield_only_where_the_way_back_is_allowed(monkeypatch: pytest.MonkeyPatch, euid: int, rlimit_nice: int,
                                                       nice: int, expected: bool) -> None:
    """sched(7): since Linux 2.6.39 an unprivileged thread may leave
    SCHED_IDLE for SCHED_OTHER only if its nice value is within what
    RLIMIT_NICE permits (20 - limit): ``can_yield`` asks that first, so an
    unprivileged worker never yields for good."""
    import resource

    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (rlimit_nice, rlimit_nice))
    monkeypatch.setattr(os, "getpriority", lambda which, who: nice)
    assert can_yield() is (expected and hasattr(os, "SCHED_IDLE"))

def test_the_units_allow_the_way_back() -> None:
    """What ``can_yield`` needs under systemd: the policy call through the
    seccomp filter and RLIMIT_NICE 20, in both units."""
    services = Path(__file__).resolve().parents[1] / "services"
    for unit in ("microexpr.service", "microexpr@.service"):
        lines = (services / unit).read_text().splitlines()
        assert "LimitNICE=+0" in lines, unit
        denied = lines.index("SystemCallFilter=~@privileged @resources")
        assert "SystemCallFilter=sched_setscheduler" in lines[denied + 1:], unit


@pytest.mark.skipif(not can_yield(), reason="SCHED_IDLE with a way back needs Linux and root or RLIMIT_NICE")
def test_a_refused_way_back_is_said_once_not_at_every_full_queue(
        pipeline: Pipeline, smile_frames: list[Frame], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    real_set, real_estimate = os.sched_setscheduler, pipeline.estimator.estimate

    def no_way_back(tid, policy, param):  # SCHED_IDLE granted, SCHED_OTHER refused
        if policy == os.SCHED_OTHER:
            raise PermissionError(1, "Operation not permitted")
        return real_set(tid, policy, param)

    def slow(obs):  # the analysis falls behind: the queue is full at most submits
        time.sleep(0.05)
        return real_estimate(obs)

    monkeypatch.setattr(os, "sched_setscheduler", no_way_back)
    pipeline.estimator.estimate = slow  # type: ignore[method-assign]
    done: list[int] = []
    with caplog.at_level("INFO", logger="microexpr.overlap"), \
            OverlappedPipeline(pipeline, lambda tag, f, r: done.append(tag)) as runner:
        for k in range(8):
            runner.submit(smile_frames[k], k)
        assert runner.drain(timeout=30)
    refused = [r for r in caplog.records if "scheduling policy was refused" in r.getMessage()]
    assert len(refused) == 1 and runner.promoted == 1
    assert done == list(range(8))

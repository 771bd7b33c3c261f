"""The per-frame engine: frame → tracker → AUs → motion → baseline → spotter → classifier.

One ``Pipeline`` is what ``microexpr run``, the daemon and the benchmarks
drive: ``process(frame)`` once per frame, in order, and ``finish()`` at the
end of a stream to flush an episode still open. It owns the tracker (and
closes it), and keeps per-subject state — motion reference, baseline,
spotter, ``SubjectContext`` — keyed by ``Face.subject_id``:

* a subject unseen for ``lost_reset_s`` starts over (it may be someone
  else, and the lighting or pose may have changed); "unseen" means frames
  came without it for that long, not that no frame came (a consumer
  starved under load delivers nothing, and the face never left);
* a new subject id gets fresh state (the tracker assigns ids).

Only the primary face is analysed (the appliance watches one person).
Frames outside episodes feed the subject's context with the AUs active in
them, so that habitual AUs weigh less in the classifier.

Each stage is timed with ``perf_counter_ns`` (``StageTimings``) for the
benchmarks; the cost of timing is two clock reads per stage.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import numpy as np

from microexpr.activity import ActivityConfig, ActivityGate
from microexpr.aus import AUEstimator, AUFrame
from microexpr.baseline import BaselineConfig, Evidence, SubjectBaseline
from microexpr.capture import Frame
from microexpr.errors import DataError
from microexpr.facs import AU, AUActivation
from microexpr.motion import MotionAnalyzer, MotionConfig, MotionFrame
from microexpr.spotting import Episode, OpenEpisode, Rejection, Spotter, SpotterConfig, activations_at, active_aus
from microexpr.suppression import Suppression, SuppressionLog
from microexpr.tracking.base import Face, FaceObservation, FaceTracker

if TYPE_CHECKING:
    from microexpr.classify.context import SubjectContext
    from microexpr.classify.decide import Decision

log = logging.getLogger(__name__)


class EngineSettings(Protocol):
    """The ``[engine]`` settings ``configure`` takes (``config.EngineConfig``)."""

    micro_max_s: float
    emit_delay_s: float
    min_evidence_z: float
    ambiguous_confidence: float
    ambiguous_margin: float


class EpisodeClassifier(Protocol):
    """What the pipeline needs from ``classify.decide.Classifier``."""

    def classify(self, activations: Sequence[AUActivation], context: SubjectContext | None = None) -> Decision: ...


@dataclass(frozen=True, slots=True)
class StageTimings:
    """Nanoseconds spent in each stage for one frame (0 when skipped)."""

    tracker_ns: int = 0
    aus_ns: int = 0
    motion_ns: int = 0
    baseline_ns: int = 0
    spotter_ns: int = 0
    classify_ns: int = 0

    @property
    def total_ns(self) -> int:
        return self.tracker_ns + self.aus_ns + self.motion_ns + self.baseline_ns + self.spotter_ns + self.classify_ns

    def as_seconds(self) -> dict[str, float]:
        return {
            "tracker": self.tracker_ns / 1e9,
            "aus": self.aus_ns / 1e9,
            "motion": self.motion_ns / 1e9,
            "baseline": self.baseline_ns / 1e9,
            "spotter": self.spotter_ns / 1e9,
            "classify": self.classify_ns / 1e9,
        }


@dataclass(frozen=True, slots=True)
class SpottedEpisode:
    """An episode and the classifier's decision on it (None without a
    classifier), with the subject's context for the reasoner."""

    episode: Episode
    decision: Decision | None
    context: SubjectContext | None = None


@dataclass(frozen=True, slots=True)
class EpisodeInProgress:
    """An episode the spotter has open after this frame: what subscribers can
    be told before it ends (the event lifecycle's ``new``/``update``)."""

    subject_id: int
    episode: OpenEpisode
    #: AUs active at this frame (the classifier's view of "now")
    activations: tuple[AUActivation, ...] = ()


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """Everything the pipeline produced for one frame."""

    observation: FaceObservation
    aus: AUFrame
    motion: MotionFrame | None
    evidence: Evidence | None
    episodes: tuple[SpottedEpisode, ...]
    timings: StageTimings
    #: Episodes still open after this frame (at most one per subject); read
    #: from the spotter, which it does not change.
    in_progress: tuple[EpisodeInProgress, ...] = ()
    #: Earlier frames (indices) the activity gate had skipped and whose
    #: flow was computed now, from the ring buffer (a movement began).
    backfilled: tuple[int, ...] = ()


@dataclass(slots=True)
class _Subject:
    """Per-subject state."""

    subject_id: int
    motion: MotionAnalyzer
    baseline: SubjectBaseline
    spotter: Spotter
    context: SubjectContext | None
    last_seen: float = 0.0
    #: Timestamp of the first frame since ``last_seen`` that came without
    #: this subject (None while it is in every frame that arrives).
    absent_since: float | None = None
    #: First seen in a marked lower-face display (see ``PipelineConfig``):
    #: watching for the face to come to rest; when it does, since when.
    watch_until: float = -math.inf
    rest_since: float | None = None
    #: The strongest entry AU when the watch began.
    entry_level: float = 0.0
    #: The baseline has given evidence once: its resting face is learnt.
    ready_once: bool = False
    #: Started over from a face at rest: never watched again.
    rest_checked: bool = False
    #: The strongest spotting region is above ``on_z`` (until it falls below
    #: ``off_z``): one candidate per crossing for the suppression counts.
    above_on: bool = False
    #: A new motion reference was asked for while the face showed an
    #: expression: taken once it is back at rest.
    rebase_deferred: bool = False
    #: The spotter's rejection counts already recorded.
    rejected_seen: dict[Rejection, int] = field(default_factory=dict)
    #: When the dense flow runs (activity.py), and its last output.
    gate: ActivityGate = field(default_factory=ActivityGate)
    last_motion: MotionFrame | None = None
    #: Frames the gate skipped, waiting for the next flowed frame (at most
    #: ``quiet_stride`` − 1): frame, face, AUs, and their motion once known.
    waiting: list[tuple[Frame, Face, AUFrame, MotionFrame | None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    motion: MotionConfig = field(default_factory=MotionConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    spotter: SpotterConfig = field(default_factory=SpotterConfig)
    #: When the dense ROI flow runs: every frame while anything moves, one
    #: in ``idle_stride`` at rest (activity.py).
    activity: ActivityConfig = field(default_factory=ActivityConfig)
    #: A subject absent from the frames that arrive for this long starts
    #: over (a gap with no frame at all does not count: see ``_forget_lost``).
    lost_reset_s: float = 1.0
    #: First sight in mid-expression. The baseline takes a new face as its
    #: resting face, which is wrong for a visitor who walks up smiling (or a
    #: ``replay:`` that joins a clip late): the smile becomes "neutral", its
    #: release reads as an expression (corners pulled down) and the next
    #: smile as nothing. So a subject showing a broad lower-face display
    #: while its resting face is being learnt (before its first evidence) —
    #: any of ``entry_aus`` at FACS "marked" (C, 0.5 on the estimator's 0..1
    #: scale, which comes from population-calibrated blendshapes) or more —
    #: is watched for ``rest_watch_s`` (by default for as long as it takes:
    #: a laugh or a cry may last minutes): once all of
    #: them stay below ``rest_max_intensity`` (trace level) for
    #: ``rest_hold_s``, the subject starts over from that resting face and
    #: the episode the release opened is dropped, not emitted. A face that
    #: never relaxes (a habitual expression) is left as it is. AU15 is there
    #: for a face first seen crying (corners pulled down, EMFACS sadness).
    entry_aus: tuple[AU, ...] = (AU.UPPER_LIP_RAISER, AU.LIP_CORNER_PULLER, AU.LIP_CORNER_DEPRESSOR,
                                 AU.LIP_STRETCHER, AU.JAW_DROP)
    entry_min_intensity: float = 0.5
    rest_max_intensity: float = 0.25
    rest_hold_s: float = 0.2
    rest_watch_s: float = math.inf
    #: A new motion reference (the resting face) is never taken while an
    #: expressive AU is this far (FACS trace) above the subject's neutral.
    rebase_max_rise: float = 0.25


class _InputWatch:
    """Says (at a bounded rate) when the input changes character: the
    frame rate changes, or frames repeat exactly (a frozen camera, or a
    decoder concealing undecodable frames — FFmpeg repeats the last good
    MJPEG frame). Every stage works in seconds, so neither breaks the
    engine; both explain odd results."""

    #: A rate is reported again once the median interval moved this much.
    RATE_CHANGE = 0.3
    LOG_INTERVAL_S = 60.0
    #: Rate changes logged per ``LOG_INTERVAL_S`` at most; the rest are
    #: counted into the next line. A consumer under load takes frames at
    #: irregular gaps, and its median rate flips between 10 and 15 fps
    #: every few frames: measured, 10 lines in 3.4 s of a loaded replay.
    RATE_LINES = 3

    def __init__(self) -> None:
        self._dts: deque[float] = deque(maxlen=15)
        self._last_t: float | None = None
        self._rate_dt: float | None = None
        self._rate_lines: deque[float] = deque()
        self._rate_unlogged = 0
        self._previous: tuple[tuple[int, ...], bytes] | None = None
        self._repeats = 0
        self._repeats_logged_at = -math.inf

    def _rate_changed(self, was: float, now: float, t: float) -> None:
        lines = self._rate_lines
        while lines and (t - lines[0] >= self.LOG_INTERVAL_S or t < lines[0]):
            lines.popleft()
        if len(lines) >= self.RATE_LINES:
            self._rate_unlogged += 1
            return
        lines.append(t)
        more = (f"; {self._rate_unlogged} more change(s) since the last line" if self._rate_unlogged else "")
        self._rate_unlogged = 0
        log.info("input frame rate changed from %.1f to %.1f fps at %.2f s (timings are in seconds: the engine "
                 "follows)%s; at most %d such lines a minute", was, now, t, more, self.RATE_LINES)

    def observe(self, frame: Frame) -> bool:
        """Record one frame; True when it repeats the previous one exactly."""
        t = frame.timestamp
        if self._last_t is not None and t > self._last_t:
            self._dts.append(t - self._last_t)
            if len(self._dts) == self._dts.maxlen:
                # the standard library's median: the same middle value of 15,
                # without np.median's cost on a short deque (0.02 ms a frame)
                dt = float(statistics.median(self._dts))
                if self._rate_dt is None:
                    self._rate_dt = dt
                elif abs(dt - self._rate_dt) > self.RATE_CHANGE * self._rate_dt:
                    self._rate_changed(1.0 / self._rate_dt, 1.0 / dt, t)
                    self._rate_dt = dt
        self._last_t = t
        image = frame.image
        # every 7th row, whole: exact equality of 1/7 of the image is a
        # repeat (sensor noise alone changes that many pixels); whole rows
        # are one block copy each and compared as bytes (one memcmp). Every
        # 7th pixel of them instead cost ten times as much (a strided
        # gather of 3-byte pixels: 0.03 ms a frame, measured)
        sample = (image.shape, image[::7].tobytes()) if isinstance(image, np.ndarray) and image.ndim >= 2 else None
        repeated = sample is not None and sample == self._previous
        self._previous = sample
        if repeated:
            self._repeats += 1
            if t - self._repeats_logged_at >= self.LOG_INTERVAL_S or t < self._repeats_logged_at:
                log.info("%d input frame(s) repeated the one before exactly (a frozen camera, or undecodable frames "
                         "the decoder replaced by the last good one); next line in %.0f s at most",
                         self._repeats, self.LOG_INTERVAL_S)
                self._repeats_logged_at = t
                self._repeats = 0
        return repeated


def _new_context() -> SubjectContext | None:
    try:
        from microexpr.classify.context import SubjectContext
    except ImportError:  # classifier stage not installed in this build
        return None
    return SubjectContext()


def default_classifier(*, ambiguous_confidence: float | None = None, ambiguous_margin: float | None = None,
                       label_profile: str = "generic", prototypes: Path | None = None) -> EpisodeClassifier | None:
    """The shipped classifier for a label profile (``[engine] label_profile``,
    optionally with a fit-prototypes file); rules only (with a warning) when
    the prototypes cannot be loaded; None when the stage is absent."""
    try:
        from microexpr.classify.decide import Classifier
        from microexpr.classify.profiles import get_profile
    except ImportError as exc:
        log.warning("classifier unavailable (%s): episodes are spotted but not labelled", exc)
        return None
    kwargs: dict[str, float] = {}
    if ambiguous_confidence is not None:
        kwargs["ambiguous_confidence"] = ambiguous_confidence
    if ambiguous_margin is not None:
        kwargs["ambiguous_margin"] = ambiguous_margin
    profile = get_profile(label_profile)
    try:
        return profile.classifier(prototypes, **kwargs)
    except DataError as exc:
        log.warning("%s: classifying with the FACS rules only", exc)
        return Classifier(use_prototypes=False, labels=profile.labels, **kwargs)


class Pipeline:
    """The engine for one video stream.

    Not thread-safe beyond this: ``track`` is called from one thread,
    ``analyse`` (or ``finish``) from one thread, each in frame order;
    ``process`` does both on the caller's thread. ``configure`` may be
    called from any thread.

    ``tracker`` is owned (closed by ``close()``); ``classifier`` may be None
    (episodes then carry no decision).
    """

    def __init__(
        self,
        tracker: FaceTracker,
        *,
        estimator: AUEstimator | None = None,
        classifier: EpisodeClassifier | None = None,
        config: PipelineConfig | None = None,
    ) -> None:
        self.tracker = tracker
        self.estimator = estimator or AUEstimator()
        self.classifier = classifier
        self.config = config or PipelineConfig()
        self._subjects: dict[int, _Subject] = {}
        self._closed = False
        self._pending: tuple[PipelineConfig, float, float] | None = None
        self._pending_lock = threading.Lock()
        self.frames = 0
        #: Candidate episodes dropped, withheld or relabelled, per reason
        #: (the daemon's ``stats.suppressed``), logged at a bounded rate.
        self.suppressed = SuppressionLog()
        #: Frames identical to the one before (a frozen camera, or a decoder
        #: concealing undecodable frames by repeating the last good one).
        self.repeated_frames = 0
        #: Frames with a face on which the dense flow ran / was skipped at
        #: rest (activity.py; the daemon's ``stats.flow``).
        self.flow_ran = 0
        self.flow_skipped = 0
        #: Skipped frames flowed later, when the next flowed frame showed a
        #: movement had begun (so frames with flow = ran + backfilled).
        self.flow_backfilled = 0
        self._backfilled: list[int] = []
        self._input = _InputWatch()

    @classmethod
    def create(
        cls,
        *,
        model_path: Path | None = None,
        backend: str = "mediapipe",
        micro_max_s: float | None = None,
        emit_delay_s: float | None = None,
        min_evidence_z: float | None = None,
        ambiguous_confidence: float | None = None,
        ambiguous_margin: float | None = None,
        classify: bool = True,
        config: PipelineConfig | None = None,
        label_profile: str = "generic",
        prototypes: Path | None = None,
        **tracker_options: object,
    ) -> Pipeline:
        """Open the tracker (verified model) and build the whole chain.

        The ``[engine]`` settings (``micro_max_s``, ``emit_delay_s``,
        ``min_evidence_z``, ``ambiguous_*``) override the defaults.
        """
        from dataclasses import replace

        from microexpr.tracking import create_tracker

        config = config or PipelineConfig()
        spot = config.spotter
        overrides = {
            k: v for k, v in (("micro_max_s", micro_max_s), ("emit_delay_s", emit_delay_s),
                              ("min_evidence_z", min_evidence_z)) if v is not None
        }
        if overrides:
            spot = replace(spot, **overrides)  # type: ignore[arg-type]
            config = replace(config, spotter=spot)
        classifier = default_classifier(ambiguous_confidence=ambiguous_confidence, ambiguous_margin=ambiguous_margin,
                                        label_profile=label_profile, prototypes=prototypes) if classify else None
        tracker = create_tracker(backend, model_path=model_path, **tracker_options)  # type: ignore[arg-type]
        from microexpr.cores import apply_opencv_threads

        apply_opencv_threads()  # the Pi profile: OpenCV's pool off (cores.py)
        return cls(tracker, classifier=classifier, config=config)

    # -- lifecycle
    def close(self) -> None:
        """Close the tracker; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.tracker.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def reset(self) -> None:
        """Forget every subject (a new stream starts); the tracker stays."""
        self._subjects.clear()
        self.estimator.reset()
        self._input = _InputWatch()

    # -- state
    def _subject(self, subject_id: int, *, at_rest: bool = False) -> _Subject:
        """The subject's state, made on first sight. ``at_rest``: a subject
        starting over from a face that came to rest: the tracker has already
        converged on it (no settling time), and it is not watched again."""
        state = self._subjects.get(subject_id)
        if state is None:
            c = self.config
            baseline = replace(c.baseline, track_settle_s=0.0) if at_rest else c.baseline
            state = _Subject(
                subject_id,
                MotionAnalyzer(c.motion),
                SubjectBaseline(subject_id, baseline),
                Spotter(c.spotter),
                _new_context(),
                rest_checked=at_rest,
                gate=ActivityGate(c.activity),
            )
            self._subjects[subject_id] = state
            log.debug("new subject %d", subject_id)
        return state

    def _came_to_rest(self, state: _Subject, au: AUFrame, now: float) -> bool:
        """Track a subject first seen mid-expression; True once it has been
        at rest for ``rest_hold_s`` (it then starts over)."""
        c = self.config
        if now > state.watch_until:
            state.rest_since = None
            return False
        if any(au.intensity.get(a, 0.0) >= c.rest_max_intensity for a in c.entry_aus):
            state.rest_since = None
            return False
        if state.rest_since is None:
            state.rest_since = now
        return now - state.rest_since >= c.rest_hold_s

    def _forget_lost(self, now: float, present: int | None = None) -> list[SpottedEpisode]:
        """Close and drop subjects absent for ``lost_reset_s``.

        Absent is measured from the first frame that came without the
        subject, not from the last one with it: a stall (no frame for a
        second, as a starved consumer sees under load) followed by the same
        face is not a face that left, and restarting it there threw away its
        baseline and the next smile (issue 12's loaded replays)."""
        out: list[SpottedEpisode] = []
        for sid, state in list(self._subjects.items()):
            if sid == present:
                continue
            if state.absent_since is None:
                state.absent_since = now
            if now - state.absent_since >= self.config.lost_reset_s:
                out.extend(self._flush_waiting(state))
                out.extend(self._decide(state, state.spotter.finish()))
                self._count_rejections(state, now)
                del self._subjects[sid]
                self.estimator.reset(sid)
                log.info("subject %d not seen for %.1f s: its resting face is learnt again when a face returns",
                         sid, now - state.last_seen)
        return out

    def _decide(self, state: _Subject, episodes: Sequence[Episode]) -> list[SpottedEpisode]:
        out = []
        for ep in episodes:
            decision = None
            if self.classifier is not None and ep.activations:
                decision = self.classifier.classify(ep.activations, state.context)
            elif self.classifier is not None:
                decision = self.classifier.classify((), state.context)
            if decision is None:
                self.suppressed.record(Suppression.UNLABELLED, ep.emitted_ts, "no classifier in this build")
            elif getattr(decision.stage, "value", decision.stage) == "context":
                self.suppressed.record(Suppression.CONTEXT, ep.emitted_ts,
                                       f"episode at {ep.onset_ts:.2f} s labelled {decision.label.value} by the subject context")
            out.append(SpottedEpisode(ep, decision, state.context))
            log.info(
                "episode %s %.3f-%.3f s (apex %.3f) %s%s",
                ep.kind.value, ep.onset_ts, ep.offset_ts, ep.apex_ts,
                "+".join(str(a) for a in ep.activations) or "no AU",
                f" → {decision.label.value} ({decision.confidence:.2f})" if decision else "",
            )
        return out

    # -- live settings
    def configure(self, engine: EngineSettings) -> None:
        """Take new ``[engine]`` thresholds (SIGHUP) without a restart.

        Validated here, on the caller's thread (a bad value raises
        ``ValueError`` and changes nothing); applied by the thread that runs
        the stages, at the start of its next frame, so a frame is never
        analysed with half of the old settings and half of the new. Spotters
        read their settings per frame: an episode already open ends under
        the new ones.
        """
        from dataclasses import replace

        spotter = replace(
            self.config.spotter,
            micro_max_s=engine.micro_max_s,
            emit_delay_s=engine.emit_delay_s,
            min_evidence_z=engine.min_evidence_z,
        )
        if not 0.0 <= engine.ambiguous_confidence <= 1.0 or not 0.0 <= engine.ambiguous_margin <= 1.0:
            raise ValueError("ambiguous_confidence and ambiguous_margin must be in 0..1")
        with self._pending_lock:
            self._pending = (replace(self.config, spotter=spotter), engine.ambiguous_confidence, engine.ambiguous_margin)

    def _apply_pending(self) -> None:
        with self._pending_lock:  # a configure() between the read and the clear is not lost
            pending, self._pending = self._pending, None
        if pending is None:
            return
        config, confidence, margin = pending
        self.config = config
        for state in self._subjects.values():
            state.spotter.config = config.spotter
        if self.classifier is not None and hasattr(self.classifier, "ambiguous_confidence"):
            self.classifier.ambiguous_confidence = confidence  # type: ignore[attr-defined]
            self.classifier.ambiguous_margin = margin  # type: ignore[attr-defined]
        log.info(
            "engine settings applied: micro_max_s %g, emit_delay_s %g, min_evidence_z %g, ambiguous below %g / margin %g",
            config.spotter.micro_max_s, config.spotter.emit_delay_s, config.spotter.min_evidence_z, confidence, margin,
        )

    # -- per frame
    def process(self, frame: Frame) -> PipelineResult:
        """Run every stage on one frame."""
        t0 = time.perf_counter_ns()
        obs = self.track(frame)
        return self.analyse(frame, obs, tracker_ns=time.perf_counter_ns() - t0)

    def track(self, frame: Frame) -> FaceObservation:
        """The tracker stage alone.

        ``process`` is ``analyse(frame, track(frame))``. The two halves share
        no state, so a caller may track frame t+1 on one thread while another
        analyses frame t (``microexpr.overlap``): the tracker sees frames in
        order, the analysis sees observations in order, and the results are
        the same as ``process``'s.
        """
        return self.tracker.process(frame)

    def analyse(self, frame: Frame, obs: FaceObservation, *, tracker_ns: int = 0) -> PipelineResult:
        """Every stage after the tracker, on ``frame``'s observation."""
        if self._pending is not None:
            self._apply_pending()
        ns = time.perf_counter_ns
        t1 = ns()
        au = self.estimator.estimate(obs)
        t2 = ns()
        self.frames += 1
        if self._input.observe(frame):
            self.repeated_frames += 1
        face = obs.face
        episodes: list[SpottedEpisode] = []
        motion_frame: MotionFrame | None = None
        evidence: Evidence | None = None
        t3 = t4 = t5 = t6 = t2
        in_progress: tuple[EpisodeInProgress, ...] = ()
        if face is None:
            # an episode the face's disappearance ends is emitted (it used
            # to be dropped here: a smile held until the face left the frame
            # was never reported)
            ended: list[tuple[_Subject, list[Episode]]] = []
            for state in self._subjects.values():
                episodes.extend(self._flush_waiting(state))
                gone = Evidence(state.subject_id, frame.index, frame.timestamp, False, False, False, 0.0, 0.0)
                ended.append((state, state.spotter.update(gone)))
                self._count_suppressed(state, gone)
            t5 = ns()
            for state, closed in ended:
                episodes.extend(self._decide(state, closed))
            closing = self._forget_lost(frame.timestamp)
            t6 = ns()
            episodes.extend(closing)
        else:
            closing = self._forget_lost(frame.timestamp, face.subject_id) if self._subjects else []
            state = self._subject(face.subject_id)
            if not state.ready_once and not state.rest_checked:
                if state.watch_until == -math.inf and any(
                        au.intensity.get(a, 0.0) >= self.config.entry_min_intensity for a in self.config.entry_aus):
                    state.watch_until = frame.timestamp + self.config.rest_watch_s
                    state.entry_level = max(au.intensity.get(a, 0.0) for a in self.config.entry_aus)
                    log.info("subject %d first seen mid-expression: its resting face is taken when it relaxes",
                             face.subject_id)
            elif self._came_to_rest(state, au, frame.timestamp):
                dropped = state.spotter.busy
                if dropped:
                    self.suppressed.record(Suppression.FIRST_SIGHT, frame.timestamp,
                                           f"subject {face.subject_id} came to rest: the release of its first expression is not an episode")
                del self._subjects[face.subject_id]
                state = self._subject(face.subject_id, at_rest=True)
                log.info("subject %d came to rest: starting over from this face%s", face.subject_id,
                         " (the open episode was the release of the first expression: dropped)" if dropped else "")
            # another subject took the primary place: close the others' episodes
            for sid, other in list(self._subjects.items()):
                if sid != face.subject_id and other.waiting:
                    closing.extend(self._flush_waiting(other))
                if sid != face.subject_id and other.spotter.busy:
                    closing.extend(self._decide(other, other.spotter.finish()))
                    self._count_rejections(other, frame.timestamp)
            state.last_seen = frame.timestamp
            state.absent_since = None
            motion_frame = self._motion(state, frame, face, au)
            if motion_frame is None:
                # at rest: the frame waits in the ring buffer (its evidence
                # comes with the next flowed frame's)
                t3 = t4 = t5 = ns()
                episodes.extend(closing)
                t6 = ns()
            else:
                waiting, state.waiting = state.waiting, []
                t3 = ns()
                spent = [0, 0, 0]  # baseline, spotter, classify ns of the waiting frames
                for w_frame, w_face, w_au, w_motion in waiting:
                    if w_motion is None:  # not reached: _motion gave every waiting frame its motion
                        w_motion = self._carried(state, w_frame)
                    _, done = self._after_motion(state, w_frame, w_face, w_au, w_motion, spent)
                    episodes.extend(done)
                evidence, done = self._after_motion(state, frame, face, au, motion_frame, spent,
                                                    closing=closing)
                episodes.extend(done)
                t4 = t3 + spent[0]
                t5 = t4 + spent[1]
                t6 = t5 + spent[2]
                open_episode = state.spotter.in_progress
                if open_episode is not None:
                    now = activations_at(evidence, self.config.spotter) if evidence.ready and not evidence.gated else ()
                    in_progress = (EpisodeInProgress(state.subject_id, open_episode, now),)
        timings = StageTimings(tracker_ns, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)
        backfilled, self._backfilled = tuple(self._backfilled), []
        return PipelineResult(obs, au, motion_frame, evidence, tuple(episodes), timings, in_progress, backfilled)

    def _after_motion(self, state: _Subject, frame: Frame, face: Face, au: AUFrame, motion_frame: MotionFrame,
                      spent: list[int], *, closing: Sequence[SpottedEpisode] = ()) -> tuple[Evidence, list[SpottedEpisode]]:
        """Baseline, spotter and classifier on one frame whose motion is
        known; ``spent`` accumulates their nanoseconds. ``closing``: other
        subjects' episodes ended by this frame (emitted first)."""
        ns = time.perf_counter_ns
        t3 = ns()
        evidence = state.baseline.update(motion_frame, au, face, busy=state.spotter.busy)
        state.ready_once = state.ready_once or evidence.ready
        t4 = ns()
        spotted = state.spotter.update(evidence)
        self._count_suppressed(state, evidence)
        self._renew_reference(state, evidence, state.spotter.take_rebase_request())
        # Only frames at rest are "outside episodes": the tail of a
        # released expression and a hold after a cap are the expression
        # itself (fed to the context, a looped smile became "habitual"
        # AU12 and was classified `others`).
        if state.context is not None and state.spotter.at_rest and evidence.ready and not evidence.gated:
            state.context.observe(active_aus(evidence, self.config.spotter))
        t5 = ns()
        out = list(closing)
        out.extend(self._decide(state, self._drop_releases(state, spotted)))
        t6 = ns()
        spent[0] += t4 - t3
        spent[1] += t5 - t4
        spent[2] += t6 - t5
        return evidence, out

    def _flush_waiting(self, state: _Subject) -> list[SpottedEpisode]:
        """Analyse the frames still waiting in ``state``'s ring buffer with
        the last flowed result carried to them (the face is lost, another
        face took the primary place, or the stream ends)."""
        waiting, state.waiting = state.waiting, []
        out: list[SpottedEpisode] = []
        spent = [0, 0, 0]
        for frame, face, au, motion_frame in waiting:
            if motion_frame is None:
                motion_frame = self._carried(state, frame)
            out.extend(self._after_motion(state, frame, face, au, motion_frame, spent)[1])
        return out

    def _carried(self, state: _Subject, frame: Frame) -> MotionFrame:
        held = state.last_motion
        assert held is not None
        return replace(held, frame_index=frame.index, timestamp=frame.timestamp,
                       valid=bool(held.regions), rebased=False)

    def _motion(self, state: _Subject, frame: Frame, face: Face, au: AUFrame) -> MotionFrame | None:
        """The ROI motion of this frame, or None when it waits.

        The activity gate decides. When it lets the flow run, the frames
        waiting in the ring buffer since the last flowed one (at most
        ``idle_stride`` − 1, ~0.07 s at 30 fps) get their motion first: their
        own flow when the gate saw a movement begin (``backfill``: onset and
        apex are where the flow on every frame puts them), else the last
        flowed result carried to them (the face changed less than the
        detector can tell from noise). When it skips, the frame joins the
        buffer and None is returned: the spotter is at rest, so no episode
        can be emitted by it meanwhile."""
        decision = state.gate.decide(
            frame.image, np.asarray(face.landmarks, dtype=np.float64), frame.timestamp,
            needs_reference=state.last_motion is None or state.motion.rebase_pending,
            warming_up=not state.ready_once, episode=not state.spotter.at_rest)
        if not decision.run and state.last_motion is not None:
            self.flow_skipped += 1
            state.waiting.append((frame, face, au, None))
            return None
        self.flow_ran += 1
        for k, (w_frame, w_face, w_au, _) in enumerate(state.waiting):
            if decision.backfill:
                self.flow_backfilled += 1
                self._backfilled.append(w_frame.index)
                motion = state.motion.process(w_frame, w_face)
            else:
                motion = self._carried(state, w_frame)
            state.waiting[k] = (w_frame, w_face, w_au, motion)
        state.last_motion = state.motion.process(frame, face)
        return state.last_motion

    def _drop_releases(self, state: _Subject, spotted: list[Episode]) -> list[Episode]:
        """While a subject first seen mid-expression is watched, its
        resting face is that expression: a movement toward rest (at its
        apex, the entry display at least ``rest_max_intensity`` weaker than
        when the face was first seen) reads as corners "pulled down" (AU15,
        "repression") or a jaw closing, and is not an expression. Such
        episodes are dropped and counted; movements with the display still
        on (a new expression over it) are emitted as usual."""
        if not spotted or state.rest_checked or state.watch_until == -math.inf:
            return spotted
        c = self.config
        kept = []
        for ep in spotted:
            at_apex = max((ep.apex_intensity.get(a, 0.0) for a in c.entry_aus), default=0.0)
            if ep.emitted_ts <= state.watch_until and at_apex <= state.entry_level - c.rest_max_intensity:
                self.suppressed.record(Suppression.FIRST_SIGHT, ep.emitted_ts,
                                       f"subject {state.subject_id}: episode at {ep.onset_ts:.2f} s moves toward rest from "
                                       "the expression it was first seen in")
                continue
            kept.append(ep)
        return kept

    def _renew_reference(self, state: _Subject, ev: Evidence, spotter_asks: bool) -> None:
        """Take a new motion reference when the baseline or the spotter asks
        — but never while the face shows an expression over its neutral
        (``Evidence.expression_rise`` ≥ ``rebase_max_rise``): the reference
        is the resting face, and a smile held through a head turn or a
        long hold must not become it. A deferred renewal happens at the
        first frame the face is back at rest."""
        if not (ev.rebase or spotter_asks or state.rebase_deferred):
            return
        if ev.ready and ev.expression_rise >= self.config.rebase_max_rise:
            if not state.rebase_deferred:
                log.debug("subject %d: new reference deferred, the face shows an expression (rise %.2f)",
                          state.subject_id, ev.expression_rise)
            state.rebase_deferred = True
            return
        state.rebase_deferred = False
        state.motion.rebase()

    def _count_rejections(self, state: _Subject, now: float) -> None:
        """Record the spotter's rejections since the last call (also those
        of ``finish()``: an episode the end of the stream closes can be
        rejected too, and must be counted)."""
        for reason, n in state.spotter.rejected.items():
            for _ in range(n - state.rejected_seen.get(reason, 0)):
                self.suppressed.record(Suppression(reason.value), now, "rejected by the spotter")
            state.rejected_seen[reason] = n

    def _count_suppressed(self, state: _Subject, ev: Evidence) -> None:
        """Record what kept a movement from becoming an episode this frame:
        a spotter rejection, or an onset crossing the spotter could not take
        (head gated, not re-armed after the last episode, a capped
        expression still held)."""
        spotter = state.spotter
        self._count_rejections(state, ev.timestamp)
        c = self.config.spotter
        top = ev.top_region
        level = ev.region_z.get(top, 0.0) if (top is not None and ev.ready) else 0.0
        if level < c.off_z:
            state.above_on = False
            return
        if level < c.on_z or state.above_on:
            return
        state.above_on = True
        if spotter.active:
            return
        if ev.gated:
            self.suppressed.record(Suppression.GATED, ev.timestamp,
                                   f"head moving ({ev.head_speed_dps:.0f} °/s) or {ev.pose_drift_deg:.1f}° from the reference pose")
        elif spotter.holding:
            self.suppressed.record(Suppression.HELD, ev.timestamp, "an expression capped at max_episode_s is still held")
        elif not spotter.at_rest:
            self.suppressed.record(Suppression.NOT_REARMED, ev.timestamp,
                                   f"{top.value if top else 'a region'} rose before the face came back to rest")

    def finish(self) -> tuple[SpottedEpisode, ...]:
        """End of stream: emit every episode still open."""
        if self._pending is not None:
            self._apply_pending()
        out: list[SpottedEpisode] = []
        for state in self._subjects.values():
            out.extend(self._flush_waiting(state))
            out.extend(self._decide(state, state.spotter.finish()))
            self._count_rejections(state, state.last_seen)
        self.suppressed.flush()
        return tuple(out)

    def run(self, frames: Iterable[Frame]) -> list[SpottedEpisode]:
        """Process an iterable of frames to the end; every episode, in order."""
        out: list[SpottedEpisode] = []
        for frame in frames:
            out.extend(self.process(frame).episodes)
        out.extend(self.finish())
        return out

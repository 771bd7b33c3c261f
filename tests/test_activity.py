"""The activity gate (when the dense ROI flow runs), on real pixels.

Unit level: the gate learns the subject's resting change on real resting
frames, skips the flow on a still face at the reduced rate, and runs it at
once on a frame of the real smile. Engine level: on synthetic
micro-expressions (exact ground truth) after a stretch of rest, the gated
pipeline skips frames at rest and spots exactly the same episodes (onset,
apex, offset frames) as the pipeline with the flow on every frame.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from microexpr import mesh
from microexpr.activity import (
    ActivityConfig,
    ActivityGate,
    FlowReason,
    _cell_means,
    _centred,
    _mean_removed,
    _similarity_to,
)
from microexpr.capture import Frame, open_source
from microexpr.flowmorph import Distortion, MorphClip, micro
from microexpr.motion import _similarity
from microexpr.pipeline import Pipeline, PipelineConfig
from microexpr.synth import SynthSpec, parse_event, score_episodes, write_clip
from microexpr.tracking import FaceObservation, create_tracker
from microexpr.videocodec import Codec, write_video


def _grey_frames(clip: Path) -> list[np.ndarray]:
    with open_source(clip) as src:
        return [cv2.cvtColor(f.image, cv2.COLOR_BGR2GRAY) for f in src]


def _landmarks(obs: FaceObservation) -> np.ndarray:
    assert obs.face is not None
    return np.asarray(obs.face.landmarks, dtype=np.float64)


def test_still_face_is_skipped_and_the_smile_runs_the_flow(
        smile_clip: Path, smile_observations: tuple[FaceObservation, ...]) -> None:
    grey = _grey_frames(smile_clip)
    gate = ActivityGate(ActivityConfig(idle_stride=3, quiet_stride=3, hold_s=0.1))
    t = 0.0
    # warm-up on real resting frames (the clip's neutral stretch)
    for i in range(5, 15):
        d = gate.decide(grey[i], _landmarks(smile_observations[i]), t, needs_reference=(i == 5),
                        warming_up=True, episode=False)
        assert d.run
        t += 1 / 30
    # the same face held still: the flow runs on one frame in three
    still = [gate.decide(grey[14], _landmarks(smile_observations[14]), t + k / 30, needs_reference=False,
                         warming_up=False, episode=False) for k in range(9)]
    t += 10 / 30
    assert gate.learnt
    assert [d.reason for d in still].count(FlowReason.STRIDE) == 3
    assert [d.run for d in still] == [False, False, True] * 3
    # the apex of the real smile: a sign of movement, the flow runs now and
    # keeps running for hold_s
    d = gate.decide(grey[40], _landmarks(smile_observations[40]), t, needs_reference=False,
                    warming_up=False, episode=False)
    assert d.run and d.reason is FlowReason.CHANGE and d.change >= gate.config.change_z
    assert not d.backfill  # the stride frame just before it was flowed: nothing waits
    d = gate.decide(grey[40], _landmarks(smile_observations[40]), t + 1 / 30, needs_reference=False,
                    warming_up=False, episode=False)
    assert d.run and d.reason is FlowReason.HOLD
    assert gate.skipped == 6 and gate.ran == 10 + 3 + 2


def test_a_quiet_face_lengthens_the_stride(smile_clip: Path, smile_observations: tuple[FaceObservation, ...]) -> None:
    """Still frames at 30 fps: the gap between flowed frames grows by one
    frame per quiet stride, 3 → 6 frames (0.1 → 0.2 s), and a movement
    brings it back to 3."""
    grey = _grey_frames(smile_clip)
    gate = ActivityGate(ActivityConfig(idle_stride=3, quiet_stride=6, hold_s=0.0))
    for i in range(5, 15):
        gate.decide(grey[i], _landmarks(smile_observations[i]), (i - 5) / 30, needs_reference=(i == 5),
                    warming_up=True, episode=False)
    runs = [gate.decide(grey[14], _landmarks(smile_observations[14]), (10 + k) / 30, needs_reference=False,
                        warming_up=False, episode=False).run for k in range(30)]
    flowed = [k for k, r in enumerate(runs) if r]
    assert np.diff(flowed).tolist()[:4] == [4, 5, 6, 6]
    t = 40 / 30
    assert gate.decide(grey[40], _landmarks(smile_observations[40]), t, needs_reference=False,
                       warming_up=False, episode=False).reason is FlowReason.CHANGE
    after = [gate.decide(grey[40], _landmarks(smile_observations[40]), t + (k + 1) / 30, needs_reference=False,
                         warming_up=False, episode=False).run for k in range(3)]
    assert after == [False, False, True]


def test_the_default_stride_grows_to_a_third_of_a_second(
        smile_clip: Path, smile_observations: tuple[FaceObservation, ...]) -> None:
    """The shipped settings: on a still face at 30 fps the gap between
    flowed frames grows 3 → 10 frames (0.1 → 0.33 s) and stays there; the
    cost a still face pays (docs/benchmarks.md "A longer quiet stride")."""
    grey = _grey_frames(smile_clip)
    gate = ActivityGate(ActivityConfig(hold_s=0.0))
    assert (gate.config.idle_stride, gate.config.quiet_stride) == (3, 10)
    for i in range(5, 15):
        gate.decide(grey[i], _landmarks(smile_observations[i]), (i - 5) / 30, needs_reference=(i == 5),
                    warming_up=True, episode=False)
    runs = [gate.decide(grey[14], _landmarks(smile_observations[14]), (10 + k) / 30, needs_reference=False,
                        warming_up=False, episode=False).run for k in range(90)]
    gaps = np.diff([k for k, r in enumerate(runs) if r]).tolist()
    assert gaps[:7] == [4, 5, 6, 7, 8, 9, 10]
    assert set(gaps[7:]) == {10}


def test_frames_skipped_before_a_movement_get_their_own_flow(
        smile_clip: Path, smile_observations: tuple[FaceObservation, ...]) -> None:
    """The ring buffer: frames skipped at rest are flowed after all
    (``backfill``) when the next flowed frame shows the face moved."""
    grey = _grey_frames(smile_clip)
    gate = ActivityGate(ActivityConfig(idle_stride=3))
    for i in range(5, 15):
        gate.decide(grey[i], _landmarks(smile_observations[i]), (i - 5) / 30, needs_reference=(i == 5),
                    warming_up=True, episode=False)
    rest = [gate.decide(grey[14], _landmarks(smile_observations[14]), (10 + k) / 30, needs_reference=False,
                        warming_up=False, episode=False) for k in range(5)]
    assert [d.run for d in rest] == [False, False, True, False, False]
    assert not rest[2].backfill, "nothing moved: the two waiting frames carry the flowed result"
    d = gate.decide(grey[40], _landmarks(smile_observations[40]), 15 / 30, needs_reference=False,
                    warming_up=False, episode=False)
    assert d.run and d.backfill and d.reason is FlowReason.CHANGE
    assert gate.backfilled == 2 and gate.skipped == 4


def test_pipeline_at_rest_defers_and_spots_as_without_the_gate(
        model_path: Path, smile_clip: Path, smile_observations: tuple[FaceObservation, ...]) -> None:
    """The real clip's resting frames played back and forth for 3 s, then its
    smile: skipped frames return no motion and no evidence (they wait), and
    the episode is the one the flow on every frame finds."""
    with open_source(smile_clip) as src:
        images = [f.image for f in src]
    order = [5 + abs((k + 9) % 18 - 9) for k in range(90)] + list(range(15, len(images)))
    runs = {}
    for enabled in (False, True):
        config = PipelineConfig(activity=ActivityConfig(enabled=enabled))
        with Pipeline(create_tracker(model_path=model_path), config=config) as pipeline:
            results = [pipeline.analyse(Frame(n, n / 30, images[i]), smile_observations[i])
                       for n, i in enumerate(order)]
            episodes = [s.episode for r in results for s in r.episodes] + [s.episode for s in pipeline.finish()]
            runs[enabled] = (results, [(e.onset_frame, e.apex_frame, e.offset_frame) for e in episodes],
                             pipeline.flow_ran, pipeline.flow_skipped)
    (plain, plain_eps, plain_ran, _), (gated, gated_eps, ran, skipped) = runs[False], runs[True]
    assert plain_eps and gated_eps == plain_eps
    assert all(r.evidence is not None for r in plain)
    waiting = [r for r in gated if r.evidence is None]
    assert skipped > 0 and len(waiting) == skipped and ran + skipped == plain_ran
    assert all(r.motion is None and not r.episodes for r in waiting)


def test_at_low_frame_rates_the_flow_is_not_skipped(
        smile_clip: Path, smile_observations: tuple[FaceObservation, ...]) -> None:
    """Never more than idle_max_gap_s (0.1 s) between flowed frames: at 15 fps
    one frame in two is skipped, at 6 fps none."""
    grey = _grey_frames(smile_clip)
    for fps, pattern in ((15.0, [False, True] * 3), (6.0, [True] * 6)):
        gate = ActivityGate(ActivityConfig(idle_stride=3))
        for i in range(5, 15):
            gate.decide(grey[i], _landmarks(smile_observations[i]), (i - 5) / fps, needs_reference=(i == 5),
                        warming_up=True, episode=False)
        runs = [gate.decide(grey[14], _landmarks(smile_observations[14]), (10 + k) / fps, needs_reference=False,
                            warming_up=False, episode=False).run for k in range(6)]
        assert runs == pattern, fps


def test_disabled_gate_runs_every_frame(smile_clip: Path, smile_observations: tuple[FaceObservation, ...]) -> None:
    grey = _grey_frames(smile_clip)
    gate = ActivityGate(ActivityConfig(enabled=False))
    out = [gate.decide(grey[14], _landmarks(smile_observations[14]), k / 30, needs_reference=False,
                       warming_up=False, episode=False) for k in range(6)]
    assert all(d.run and d.reason is FlowReason.DISABLED for d in out)


@pytest.mark.slow
@pytest.mark.parametrize("event", ["L12@2.6/0.2*0.5", "4@2.6/0.3*0.75", "1+2@2.8/0.1*0.75"])
def test_gated_pipeline_spots_the_same_episodes(model_path: Path, media_dir: Path, tmp_path: Path, event: str) -> None:
    spec = SynthSpec(media_dir / "astronaut.png", 30.0, 4.0, (parse_event(event),))
    clip = tmp_path / "clip.mp4"
    with create_tracker(model_path=model_path) as tracker:
        write_clip(spec, tracker, clip)
    results = {}
    for enabled in (False, True):
        config = PipelineConfig(activity=ActivityConfig(enabled=enabled))
        with Pipeline.create(model_path=model_path, config=config) as pipeline, open_source(clip) as src:
            frames = [Frame(f.index, f.timestamp, f.image) for f in src]
            episodes = pipeline.run(frames)
            results[enabled] = ([(e.episode.onset_frame, e.episode.apex_frame, e.episode.offset_frame)
                                 for e in episodes], pipeline.flow_ran, pipeline.flow_skipped)
    (plain, ran_plain, skipped_plain), (gated, ran_gated, skipped_gated) = results[False], results[True]
    assert skipped_plain == 0 and ran_plain == ran_gated + skipped_gated
    assert plain, "the ungated pipeline spots the event"
    assert gated == plain
    assert skipped_gated > 0, "the rest before the event is gated"


@pytest.mark.slow
def test_bench_activity_regimes_on_the_real_clip(model_path: Path, smile_clip: Path) -> None:
    from microexpr.bench import load_frames
    from microexpr.bench_activity import STREAM_CHUNK, STREAM_FILL, markdown, report_section, run_activity

    frames = load_frames(smile_clip)
    calls: list[int] = []
    expected: list[int] = []
    res = run_activity(frames, model_path=model_path, passes=1, rest_s=1.0, warmup_s=1.0, still_warmup_s=2.0,
                       clip_plays=2, progress=lambda: calls.append(1), expect=expected.append)
    assert expected == [len(calls)], "the progress bar is told how many frames will come"
    assert res.expression_frames > 0 and res.rest_frames >= 2
    # during an episode the flow runs on every frame, by the policy
    assert res.expression.flow_skipped == 0 and res.expression.flow_ran == len(res.expression.pipeline_cpu)
    assert res.rest.flow_ran + res.rest.flow_skipped == len(res.rest.pipeline_cpu) == 30
    assert res.still.flow_ran + res.still.flow_skipped == len(res.still.pipeline_cpu) == len(res.still.bare_cpu) == 30
    # the streams in turns (one of 30 frames here), each without the
    # turn's first frames, as many for both
    for regime in (res.rest, res.still):
        assert len(regime.bare_interval) == len(regime.overlap_interval) == 30 - 1 - STREAM_FILL
    # the whole clip's mix: every frame of both plays, its streams in the
    # same turns (the last one shorter), the expression frames among them
    n = len(frames)
    assert len(res.clip.pipeline_cpu) == len(res.clip.bare_cpu) == 2 * n
    in_turns = sum(max(min(STREAM_CHUNK, n - s) - 1 - STREAM_FILL, 0) for s in range(0, n, STREAM_CHUNK))
    assert len(res.clip.bare_interval) == len(res.clip.overlap_interval) == 2 * in_turns
    assert len(res.expression.overlap_interval) < 2 * in_turns
    assert len(res.expression.pipeline_cpu) == 2 * res.expression_frames
    assert set(res.expression.pipeline_cpu) <= set(res.clip.pipeline_cpu)
    assert res.expression.flow_ran <= res.clip.flow_ran and res.clip.flow_ran + res.clip.flow_skipped <= 2 * n
    section, ratios = report_section(res)
    assert section["still_warmup_s"] == 2.0
    assert section["expression"]["flow_share"] == 1.0
    assert 0.0 < section["rest"]["flow_share"] <= 1.0
    # the still face (a resting frame held, sensor noise, MPEG-4): the gate
    # lets the flow rest on most frames once the baseline is learnt
    assert 0.0 < section["still"]["flow_share"] < 0.5
    assert all(ratios[f"{r}_cpu_vs_bare_mean"] is not None for r in ("rest", "still", "expression", "clip"))
    assert ratios["clip_stream_overlap_vs_bare_p50"] is not None
    lines = markdown(section)
    assert all(any(f"| {r} |" in line for line in lines) for r in ("rest", "still", "expression", "clip"))


def test_the_still_face_is_a_held_frame_with_fresh_noise_through_mpeg4(smile_clip: Path) -> None:
    from microexpr.bench import load_frames
    from microexpr.bench_activity import STILL_NOISE, still_face

    frame = load_frames(smile_clip, limit=1)[0]
    still = still_face(frame, fps=30.0, frames=12)
    assert len(still) == 12 and still[0].image.shape == frame.image.shape
    base = frame.image.astype(np.float64)
    errors = [float(np.abs(f.image - base).mean()) for f in still]
    steps = [float(np.abs(a.image.astype(np.float64) - b.image).mean()) for a, b in zip(still, still[1:])]
    # the same picture (codec and noise error of a few grey levels, not another frame) ...
    assert max(errors) < 4 * STILL_NOISE
    # ... and no two frames alike (a frozen picture would let the repeated-frame
    # check drop them; MPEG-4 keeps less and less of the noise's change on a
    # still scene, 0.3 grey levels a pixel after the key frame, 0.1 later)
    assert min(steps) > 0.0


# -- the gate's arithmetic, bit for bit ----------------------------------------------------------


class _PlainGate(ActivityGate):
    """The gate's per-frame arithmetic written the plain way (numpy means,
    a full similarity fit, a fresh pixel grid per basis): what the gate
    computed before its per-frame cost was cut. Kept here, not in the
    product, as the reference the cheaper gate must equal."""

    def _coarse(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        up = 2
        stable = landmarks[list(mesh.STABLE_POINTS), :2]
        if self._template is None:  # the first frame's mapping, which the cut did not touch
            a = self._take_template(landmarks, stable, up)
        else:
            a = _similarity(stable, self._template)
        big = cv2.warpAffine(image, a, (up * self._size[0], up * self._size[1]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        if big.ndim == 3:
            big = cv2.cvtColor(big, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(big, self._size, interpolation=cv2.INTER_AREA).astype(np.float32)
        return small - float(small.mean())

    def _cells(self, coarse: np.ndarray) -> np.ndarray | None:
        if self._last is None:
            return None
        k = self.config.cell_px
        diff = coarse - self._last
        if self.config.align:
            diff = self._unjitter(diff)
        diff = np.abs(diff)
        h, w = diff.shape
        hh, ww = h // k * k, w // k * k
        cells = diff[:hh, :ww].reshape(hh // k, k, ww // k, k).mean(axis=(1, 3))
        return cells[self._mask] if self._mask is not None else cells.ravel()

    def _unjitter(self, diff: np.ndarray) -> np.ndarray:
        if self._basis is None:
            assert self._last is not None
            gx = cv2.Sobel(self._last, cv2.CV_32F, 1, 0, ksize=3) / 8.0
            gy = cv2.Sobel(self._last, cv2.CV_32F, 0, 1, ksize=3) / 8.0
            h, w = self._last.shape
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            xx -= w / 2.0
            yy -= h / 2.0
            basis = np.stack([gx.ravel(), gy.ravel(), (xx * gx + yy * gy).ravel(), (xx * gy - yy * gx).ravel()], axis=1)
            normal = basis.T.astype(np.float64) @ basis
            normal += np.eye(4) * (1e-6 * float(np.trace(normal)) + 1e-9)
            self._basis = (basis, np.linalg.solve(normal, basis.T.astype(np.float64)).astype(np.float32))
        b, pinv = self._basis
        d = diff.ravel()
        return (d - b @ (pinv @ d)).reshape(diff.shape)

    def _learn(self, cells: np.ndarray, dt: float) -> None:
        c = self.config
        assert self._mean is not None and self._dev is not None
        alpha = 1.0 - float(np.exp(-max(dt, 0.0) / c.noise_tau_s))
        x = np.minimum(cells, self._mean + c.backfill_z * self._dev)
        self._mean += alpha * (x - self._mean)
        self._dev += alpha * (np.abs(x - self._mean) - self._dev)
        np.maximum(self._dev, c.noise_floor, out=self._dev)


def _same_bits(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_the_gate_computes_what_its_plain_form_computes_bit_for_bit(
        smile_clip: Path, smile_observations: tuple[FaceObservation, ...]) -> None:
    """The gate's cheaper arithmetic (template half of the fit done once,
    the mean from the integer sum, cell sums in numpy's order, the basis
    grid cached) against ``_PlainGate`` on the real clip, BGR and grey:
    the neutral stretch held still (skips, strides, learning), the smile
    (changes, holds, backfills), an episode, a reset. Every decision, the
    cells' resting statistics and the reference crop are the same bits."""
    with open_source(smile_clip) as src:
        bgr = [f.image for f in src]
    order = list(range(15)) + [14] * 12 + list(range(15, 72)) + [71] * 8
    for grey in (False, True):
        fast, plain = ActivityGate(), _PlainGate()
        reasons = set()
        for step, i in enumerate(order):
            image = cv2.cvtColor(bgr[i], cv2.COLOR_BGR2GRAY) if grey else bgr[i]
            if step == 60:
                fast.reset()
                plain.reset()
            flags = {"needs_reference": step in (0, 60), "warming_up": step < 10 or 60 <= step < 66,
                     "episode": 50 <= step < 53}
            lm = _landmarks(smile_observations[i])
            a = fast.decide(image, lm, step / 30, **flags)
            b = plain.decide(image, lm, step / 30, **flags)
            assert (a.run, a.reason, a.backfill, a.change.hex()) == (b.run, b.reason, b.backfill, b.change.hex())
            assert _same_bits(fast._mean, plain._mean) and _same_bits(fast._dev, plain._dev)
            assert _same_bits(fast._last, plain._last)
            reasons.add(a.reason)
        # the paths the comparison went through
        assert reasons >= {FlowReason.SKIPPED, FlowReason.STRIDE, FlowReason.CHANGE, FlowReason.EPISODE}, reasons
        assert fast.learnt and fast.skipped > 0 and fast.backfilled > 0
        assert (fast.ran, fast.skipped, fast.backfilled) == (plain.ran, plain.skipped, plain.backfilled)


def test_the_gate_helpers_equal_numpy_on_odd_inputs() -> None:
    """The helpers on random points and crops (shapes, signs and scales a
    face does not give): the fit equals ``motion._similarity``, the mean
    removal numpy's float32 mean, the cell means numpy's reshaped mean."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(3, 40))
        src = rng.normal(0, 10 ** rng.uniform(-2, 3), (n, 2))
        dst = rng.normal(0, 10 ** rng.uniform(-2, 3), (n, 2))
        assert _similarity_to(src, *_centred(dst)).tobytes() == _similarity(src, dst).tobytes()
        h, w = (int(v) for v in rng.integers(6, 60, 2))
        u8 = rng.integers(0, 256, (h, w), dtype=np.uint8)
        plain = u8.astype(np.float32)
        assert _same_bits(_mean_removed(u8), plain - float(plain.mean()))
        diff = np.abs(rng.normal(0, 10 ** rng.uniform(-3, 3), (h, w))).astype(np.float32)
        for k in (2, 3, 5):
            hh, ww = h // k * k, w // k * k
            assert _same_bits(_cell_means(diff, k), diff[:hh, :ww].reshape(hh // k, k, ww // k, k).mean(axis=(1, 3)))


@pytest.mark.slow
def test_a_weak_smile_after_a_still_stretch_is_spotted_as_without_the_gate(
        model_path: Path, smile_clip: Path, smile_observations: tuple[FaceObservation, ...], tmp_path: Path) -> None:
    """The case the reduced rate at rest risks: the real face held still for
    5 s (sensor noise, through MJPEG as a webcam sends it), so the flow is
    down to one frame in ten, then a weak (0.35) micro smile of 0.2 s
    morphed in by dense flow (not the landmark warps the gate was tuned
    on). Spotted, apex within a frame of where the flow on every frame puts
    it."""
    with open_source(smile_clip) as src:
        frames = [f.image for f in src]
    clip = MorphClip(frames, 30.0, 6.5, (micro(5.23, 0.2, 0.35),), Distortion(noise_sigma=2.0), seed=5,
                     neutral=(10, 10),  # the reference frame held still
                     face_points=_landmarks(smile_observations[10]), smile_points=_landmarks(smile_observations[40]),
                     stable_points=mesh.STABLE_POINTS)
    truth = clip.truth()
    written = write_video(clip, tmp_path / "still", 30.0, Codec.MJPEG, 70)
    onset = truth.events[0].onset_frame
    found = {}
    for enabled in (False, True):
        config = PipelineConfig(activity=ActivityConfig(enabled=enabled))
        with Pipeline.create(model_path=model_path, config=config) as pipeline, open_source(written.path) as src:
            results = [pipeline.process(Frame(f.index, f.timestamp, f.image)) for f in src]
            episodes = [s.episode for r in results for s in r.episodes] + [s.episode for s in pipeline.finish()]
        score = score_episodes(truth, episodes)
        assert (score.tp, score.fp, score.fn) == (1, 0, 0), (enabled, episodes)
        found[enabled] = score.matches[0]
        if enabled:
            flowed = [n for n, r in enumerate(results) if r.motion is not None and n < onset]
            assert max(np.diff(flowed)) == ActivityConfig().quiet_stride, "the stride reached its cap before the onset"
    assert abs(found[True].apex_error) <= 2
    assert abs(found[True].apex_frame - found[False].apex_frame) <= 1

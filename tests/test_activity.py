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

from microexpr.activity import ActivityConfig, ActivityGate, FlowReason
from microexpr.capture import Frame, open_source
from microexpr.pipeline import Pipeline, PipelineConfig
from microexpr.synth import SynthSpec, parse_event, write_clip
from microexpr.tracking import FaceObservation, create_tracker


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
    from microexpr.bench_activity import markdown, report_section, run_activity

    res = run_activity(load_frames(smile_clip), model_path=model_path, passes=1, rest_s=1.0, warmup_s=1.0)
    assert res.expression_frames > 0 and res.rest_frames >= 2
    # during an episode the flow runs on every frame, by the policy
    assert res.expression.flow_skipped == 0 and res.expression.flow_ran == len(res.expression.pipeline_cpu)
    assert res.rest.flow_ran + res.rest.flow_skipped == len(res.rest.pipeline_cpu) == 30
    assert res.still.flow_ran + res.still.flow_skipped == len(res.still.pipeline_cpu) == len(res.still.bare_cpu) == 30
    section, ratios = report_section(res)
    assert section["expression"]["flow_share"] == 1.0
    assert 0.0 < section["rest"]["flow_share"] <= 1.0
    # the still face (a resting frame held, sensor noise, MPEG-4): the gate
    # lets the flow rest on most frames once the baseline is learnt
    assert 0.0 < section["still"]["flow_share"] < 0.5
    assert all(ratios[f"{r}_cpu_vs_bare_mean"] is not None for r in ("rest", "still", "expression"))
    lines = markdown(section)
    assert any("| rest |" in line for line in lines) and any("| still |" in line for line in lines)


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

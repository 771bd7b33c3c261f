"""The whole engine on real pixels: synthetic micro-expressions played by
real faces (exact ground truth), distractors that must stay silent, the
real smile clip, and the pipeline's API (timings, flush, close, reset).

Clips are small (≤ 2.5 s; one 1.6 s clip at 200 fps) and rendered once per
session; they go through mp4 and back, like a recorded video.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from microexpr.capture import Frame, open_source
from microexpr.facs import AU, Emotion, Side
from microexpr.pipeline import Pipeline, SpottedEpisode, StageTimings
from microexpr.spotting import EpisodeKind
from microexpr.synth import GroundTruth, SynthSpec, parse_event, score_episodes, write_clip
from microexpr.tracking import create_tracker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(model_path: Path) -> Iterator[Pipeline]:
    with Pipeline.create(model_path=model_path) as p:
        yield p


@pytest.fixture(scope="module")
def clips(model_path: Path, media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, GroundTruth]]:
    """name → (mp4, ground truth), rendered once."""
    out = tmp_path_factory.mktemp("clips")
    astronaut = media_dir / "astronaut.png"
    plans = {
        # a 200 ms left smile at half intensity, 30 fps
        "l12_30": SynthSpec(astronaut, 30.0, 2.0, (parse_event("L12@1.0/0.2*0.5"),)),
        # the same parameters at 200 fps: a right smile
        "r12_200": SynthSpec(astronaut, 200.0, 1.6, (parse_event("R12@0.9/0.2*0.5"),)),
        # blinks only
        "blinks": SynthSpec(astronaut, 30.0, 2.5, (parse_event("blink@0.9/0.15"), parse_event("blink@1.6/0.25"))),
        # head turn there and back only
        "turns": SynthSpec(astronaut, 30.0, 2.5, (parse_event("turn@0.8/0.4"), parse_event("turn@1.6/0.4*-1"))),
        # one-sided dimpler (contempt's AU) on the real video's neutral frames
        "r14_video": SynthSpec(media_dir / "single_face.mp4", 30.0, 2.0, (parse_event("R14@1.0/0.3*0.8"),),
                               base_frames=(5, 14)),
    }
    with create_tracker(model_path=model_path) as tracker:
        return {name: (out / f"{name}.mp4", write_clip(spec, tracker, out / f"{name}.mp4")) for name, spec in plans.items()}


_clock = [0.0]


def _run(pipeline: Pipeline, path: Path) -> list[SpottedEpisode]:
    """Run a clip as a new stream (the shared tracker needs increasing time)."""
    pipeline.reset()
    offset = _clock[0] + 1.0
    spotted: list[SpottedEpisode] = []
    with open_source(path) as src:
        for frame in src:
            shifted = Frame(frame.index, frame.timestamp + offset, frame.image)
            _clock[0] = shifted.timestamp
            spotted.extend(pipeline.process(shifted).episodes)
    spotted.extend(pipeline.finish())
    return spotted


def test_short_one_sided_smile_is_spotted(pipeline: Pipeline, clips) -> None:
    path, truth = clips["l12_30"]
    spotted = _run(pipeline, path)
    score = score_episodes(truth, [s.episode for s in spotted])
    assert (score.tp, score.fp) == (1, 0), [s.episode for s in spotted]
    (match,) = score.matches
    assert match.iou >= 0.5 and abs(match.apex_error) <= 2
    ep = spotted[0].episode
    assert ep.kind is EpisodeKind.MICRO
    assert (AU.LIP_CORNER_PULLER, Side.LEFT) in {(a.au, a.side) for a in ep.activations}
    assert spotted[0].decision is not None


def test_same_parameters_at_200fps(pipeline: Pipeline, clips) -> None:
    path, truth = clips["r12_200"]
    spotted = _run(pipeline, path)
    score = score_episodes(truth, [s.episode for s in spotted])
    assert (score.tp, score.fp) == (1, 0), [s.episode for s in spotted]
    (match,) = score.matches
    assert match.iou >= 0.5 and abs(match.apex_error) <= 2
    ep = spotted[0].episode
    assert ep.kind is EpisodeKind.MICRO
    assert (AU.LIP_CORNER_PULLER, Side.RIGHT) in {(a.au, a.side) for a in ep.activations}
    assert ep.emitted_ts - ep.offset_ts <= pipeline.config.spotter.emit_delay_s + 1 / 200 + 1e-9


@pytest.mark.parametrize("name", ["blinks", "turns"])
def test_distractors_alone_give_no_episode(pipeline: Pipeline, clips, name: str) -> None:
    path, _truth = clips[name]
    assert _run(pipeline, path) == []


def test_one_sided_dimpler_on_real_video(pipeline: Pipeline, clips) -> None:
    path, truth = clips["r14_video"]
    spotted = _run(pipeline, path)
    score = score_episodes(truth, [s.episode for s in spotted])
    assert (score.tp, score.fp) == (1, 0), [s.episode for s in spotted]
    ep = spotted[0].episode
    assert (AU.DIMPLER, Side.RIGHT) in {(a.au, a.side) for a in ep.activations}


def test_real_smile_is_one_macro_happiness_episode(pipeline: Pipeline, smile_clip: Path) -> None:
    spotted = _run(pipeline, smile_clip)
    assert len(spotted) == 1
    ep, decision = spotted[0].episode, spotted[0].decision
    assert ep.kind is EpisodeKind.MACRO
    # the smile starts around frame 16-20 and is held to the end (frame 71)
    assert 12 <= ep.onset_frame <= 21 and ep.offset_frame >= 65
    assert AU.LIP_CORNER_PULLER in {a.au for a in ep.activations}
    assert decision is not None and decision.label is Emotion.HAPPINESS
    # a clear AU12 smile is decided locally, not sent to the reasoner
    assert not decision.ambiguous, decision


def test_weak_movement_below_the_noise_is_not_invented(pipeline: Pipeline, model_path: Path,
                                                       media_dir: Path, tmp_path: Path) -> None:
    """Honest limit: a 0.05-intensity smile (corner travel ≈0.008 IOD, half a
    pixel here) on the real video's neutral frames is not spotted — and
    nothing else is reported instead."""
    spec = SynthSpec(media_dir / "single_face.mp4", 30.0, 2.0, (parse_event("12@1.0/0.2*0.05"),), base_frames=(5, 14))
    with create_tracker(model_path=model_path) as tracker:
        truth = write_clip(spec, tracker, tmp_path / "weak.mp4")
    spotted = _run(pipeline, tmp_path / "weak.mp4")
    score = score_episodes(truth, [s.episode for s in spotted])
    assert score.fp == 0
    assert score.tp == 0


def test_timings_flush_reset_close(model_path: Path, clips) -> None:
    path, _truth = clips["l12_30"]
    p = Pipeline.create(model_path=model_path)
    with open_source(path) as src:
        frames = list(src)
    # stop right after the apex: the episode is still open, finish() flushes it
    results = [p.process(f) for f in frames[:36]]
    assert all(isinstance(r.timings, StageTimings) for r in results)
    assert all(r.timings.tracker_ns > 0 and r.timings.total_ns >= r.timings.tracker_ns for r in results)
    assert any(r.timings.motion_ns > 0 for r in results)
    assert set(results[-1].timings.as_seconds()) == {"tracker", "aus", "motion", "baseline", "spotter", "classify"}
    assert not any(r.episodes for r in results)
    flushed = p.finish()
    assert len(flushed) == 1 and flushed[0].episode.apex_frame <= 36
    assert p.finish() == ()
    p.reset()
    p.close()
    p.close()  # idempotent


def test_first_seen_mid_smile_the_smile_is_not_taken_as_neutral(pipeline: Pipeline, smile_clip: Path) -> None:
    """A live camera may first see a face in the middle of a broad smile (a
    kiosk visitor, or `replay:` joining the clip late). The resting face the
    baseline learns must not be that smile: else the return to rest reads
    as an expression (corners "pulled down": AU15) and the next smile as
    nothing. Here: the clip joined at frame 30 (smiling), then played again
    from the start (neutral, then the smile)."""
    with open_source(smile_clip) as src:
        frames = list(src)
    fps = 30.0
    joined = [frames[i] for i in range(30, len(frames))] + frames
    stream = [Frame(k, k / fps, f.image) for k, f in enumerate(joined)]
    pipeline.reset()
    offset = _clock[0] + 1.0
    spotted: list[SpottedEpisode] = []
    for frame in stream:
        shifted = Frame(frame.index, frame.timestamp + offset, frame.image)
        _clock[0] = shifted.timestamp
        spotted.extend(pipeline.process(shifted).episodes)
    spotted.extend(pipeline.finish())
    second_smile = len(frames) - 30 + 16  # where the replayed smile starts
    assert [s.decision.label for s in spotted if s.decision] == [Emotion.HAPPINESS], [
        (s.episode.onset_frame, s.episode.offset_frame, [str(a) for a in s.episode.activations]) for s in spotted]
    assert spotted[0].episode.onset_frame >= second_smile - 6


def test_a_face_that_never_relaxes_is_left_as_it_is(pipeline: Pipeline, smile_clip: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The other side: first seen mid-smile and smiling to the end (a
    habitual expression, or a still photo of a smile): no start-over, and
    the held smile itself is not an episode."""
    with open_source(smile_clip) as src:
        frames = list(src)[30:]
    pipeline.reset()
    offset = _clock[0] + 1.0
    spotted: list[SpottedEpisode] = []
    with caplog.at_level("INFO", logger="microexpr.pipeline"):
        for k, f in enumerate(frames):
            shifted = Frame(k, k / 30.0 + offset, f.image)
            _clock[0] = shifted.timestamp
            spotted.extend(pipeline.process(shifted).episodes)
        spotted.extend(pipeline.finish())
    assert "first seen mid-expression" in caplog.text
    assert "came to rest" not in caplog.text
    # (the clip's last frames hold a small real movement of their own)
    assert all(s.episode.onset_frame > 20 for s in spotted), [s.episode for s in spotted]

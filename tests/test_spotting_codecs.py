"""Spotting on real pixels through the codecs a camera delivers.

The real neutral stretch of ``single_face.mp4`` (frames 5-14: a real face
at rest with its natural small motion) played back and forth, written as
MJPEG (a USB webcam's stream) and MPEG-4 Part 2 (``mp4v``), read back and
run through the whole engine: no episode may come out of it. A smile
morphed in by dense optical flow toward the same man's own smile
(``flowmorph``: made without ``synth.py``'s landmark warps) must be found,
with its apex, and named happiness, at 0.75 and at weak (0.35) strength
(at 1.0 the tracker reads the morph as a 4.8° pitch and the spotter drops
it as head motion: docs/spotting.md "Through real codecs").
Before the whole-face rigid fit (docs/spotting.md "Motion") the mp4v
neutral clip gave an episode every 1.2 s (AU1+R2+R5+R7+R9+R12+L14).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from microexpr import mesh
from microexpr.capture import Frame, open_source
from microexpr.flowmorph import Distortion, MorphClip, micro
from microexpr.pipeline import Pipeline, SpottedEpisode
from microexpr.synth import score_episodes
from microexpr.tracking import create_tracker
from microexpr.videocodec import Codec, jpeg_roundtrip, write_video

FPS = 30.0


@pytest.fixture(scope="module")
def source(smile_clip: Path, model_path: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The real clip's frames and the tracker's landmarks in its neutral
    reference (10) and smile (40) frames."""
    with open_source(smile_clip) as src:
        frames = [f.image for f in src]
    tracker = create_tracker(model_path=model_path)
    try:
        pts = []
        for k, i in enumerate((10, 40)):
            face = None
            for attempt in range(3):
                face = tracker.process(Frame(3 * k + attempt, (3 * k + attempt) / FPS, frames[i])).face
            assert face is not None
            pts.append(np.asarray(face.landmarks, dtype=np.float64))
    finally:
        tracker.close()
    return frames, pts[0], pts[1]


@pytest.fixture(scope="module")
def pipeline(model_path: Path):
    with Pipeline.create(model_path=model_path) as p:
        yield p


def _clip(source, seconds: float, events=(), distortion: Distortion = Distortion(), phase_s: float = 0.0) -> MorphClip:
    frames, ref_pts, smile_pts = source
    return MorphClip(frames, FPS, seconds, events, distortion, seed=3, face_points=ref_pts, smile_points=smile_pts,
                     stable_points=mesh.STABLE_POINTS, phase_s=phase_s)


_T = [0.0]


def _run(pipeline: Pipeline, path: Path) -> list[SpottedEpisode]:
    """A new stream through the pipeline (timestamps kept increasing: the
    tracker runs in VIDEO mode and stays warm, as on a device)."""
    pipeline.reset()
    out: list[SpottedEpisode] = []
    offset = _T[0] + 1.0
    with open_source(path) as src:
        for frame in src:
            _T[0] = frame.timestamp + offset
            out.extend(pipeline.process(Frame(frame.index, _T[0], frame.image)).episodes)
    out.extend(pipeline.finish())
    return out


def test_mjpeg_writer_takes_the_quality_and_mp4v_bitrate_is_measured(source, tmp_path: Path) -> None:
    clip = _clip(source, 1.0)
    low = write_video(clip, tmp_path / "q60", FPS, Codec.MJPEG, 60)
    high = write_video(clip, tmp_path / "q95", FPS, Codec.MJPEG, 95)
    avi = write_video(clip, tmp_path / "a", FPS, Codec.MJPEG_AVI)
    mp4 = write_video(clip, tmp_path / "m", FPS, Codec.MP4V)
    assert low.path.is_dir() and avi.path.suffix == ".avi" and mp4.path.suffix == ".mp4"
    assert low.frames == high.frames == avi.frames == mp4.frames == 30
    assert high.size_bytes > 1.5 * low.size_bytes  # the quality reached the encoder
    assert 0.05 < mp4.bitrate_mbps < 5.0 < high.bitrate_mbps
    for written in (low, avi, mp4):
        with open_source(written.path) as src:
            assert sum(1 for _ in src) == 30
    with open_source(low.path) as src:
        first = next(iter(src)).image
    # the folder holds exactly what a per-frame encode at that quality gives
    assert np.array_equal(first, jpeg_roundtrip(clip.render(0), 60))


def test_h264_is_written_at_the_bitrate_asked_and_decodes(source, tmp_path: Path) -> None:
    """H.264 through the ffmpeg program (installed by `system-deps.sh --test`):
    the bitrate reaches the encoder, OpenCV's FFmpeg decodes every frame."""
    clip = _clip(source, 2.0)
    low = write_video(clip, tmp_path / "low", FPS, Codec.H264, 300)
    high = write_video(clip, tmp_path / "high", FPS, Codec.H264, 3000)
    assert low.frames == high.frames == 60
    assert high.size_bytes > 3 * low.size_bytes
    assert 0.1 < low.bitrate_mbps < 0.6
    with open_source(low.path) as src:
        decoded = [f.image for f in src]
    assert len(decoded) == 60
    error = np.abs(decoded[30].astype(int) - clip.render(30).astype(int)).mean()
    assert 0.0 < error < 12.0  # lossy, and still the same picture


def test_h264_bad_bitrate_and_missing_ffmpeg_are_clear_errors(source, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="bitrate must be > 0"):
        write_video(_clip(source, 0.2), tmp_path / "zero", FPS, Codec.H264, 0)
    monkeypatch.setattr("microexpr.videocodec.shutil.which", lambda _name: None)
    with pytest.raises(RuntimeError, match="needs the ffmpeg program"):
        write_video(_clip(source, 0.2), tmp_path / "none", FPS, Codec.H264)


def test_morph_truth_and_timing(source) -> None:
    clip = _clip(source, 2.0, [micro(0.5, 0.3, 0.6)])
    truth = clip.truth()
    (ev,) = truth.events
    assert (ev.onset_frame, ev.offset_frame) == (15, 24) and ev.apex_frame in (19, 20)
    assert clip.level(0.65) == pytest.approx(0.6)
    moved = np.abs(clip.render(ev.apex_frame).astype(int) - _clip(source, 2.0).render(ev.apex_frame).astype(int))
    assert moved.max() > 20  # the smile changes the picture…
    assert moved[:40].max() == 0  # …and not the background above the head


@pytest.mark.parametrize("codec,quality,phase_s", [
    (Codec.MJPEG, 70, 0.0), (Codec.MJPEG, 70, 0.2), (Codec.MP4V, None, 0.0), (Codec.MP4V, None, 0.2),
    (Codec.H264, 1000, 0.0),  # one phase: the benchmark runs three per kind (codec_spotting.py)
])
def test_real_neutral_played_back_and_forth_gives_no_episode(pipeline, source, tmp_path: Path, codec: Codec,
                                                             quality: int | None, phase_s: float) -> None:
    written = write_video(_clip(source, 6.0, phase_s=phase_s), tmp_path / "neutral", FPS, codec, quality)
    spotted = _run(pipeline, written.path)
    assert [(s.episode.onset_frame, "+".join(map(str, s.episode.activations))) for s in spotted] == []


@pytest.mark.parametrize("codec,quality", [(Codec.MJPEG, 80), (Codec.MP4V, None), (Codec.H264, 1000)])
def test_morphed_micro_smiles_are_found_and_named_happiness(pipeline, source, tmp_path: Path, codec: Codec,
                                                            quality: int | None) -> None:
    clip = _clip(source, 5.0, [micro(1.2, 0.3, 0.75), micro(3.0, 0.3, 0.35)], Distortion(noise_sigma=1.0))
    written = write_video(clip, tmp_path / "smiles", FPS, codec, quality)
    spotted = _run(pipeline, written.path)
    score = score_episodes(clip.truth(), [s.episode for s in spotted])
    assert score.tp == 2 and score.fp == 0, [(s.episode.onset_frame, s.episode.offset_frame) for s in spotted]
    assert all(abs(m.apex_error) <= 2 for m in score.matches)
    labels = [s.decision.label.value for s in spotted if s.decision is not None]
    assert labels == ["happiness", "happiness"], [("+".join(map(str, s.episode.activations)), s.decision.label.value)
                                                  for s in spotted if s.decision]


def test_synth_cli_writes_mjpeg_avi_and_refuses_a_mismatched_suffix(media_dir: Path, model_path: Path,
                                                                     tmp_path: Path) -> None:
    from microexpr.cli import main

    bad = main(["synth", str(media_dir / "astronaut.png"), "-o", str(tmp_path / "x.mp4"), "--codec", "mjpeg",
                "--duration", "0.2", "--model", str(model_path)])
    assert bad == 2 and not (tmp_path / "x.mp4").exists()
    out = tmp_path / "x.avi"
    ok = main(["synth", str(media_dir / "astronaut.png"), "-o", str(out), "--codec", "mjpeg", "--duration", "0.3",
               "-e", "12@0.05/0.2", "--model", str(model_path)])
    assert ok == 0
    with open_source(out) as src:
        assert sum(1 for _ in src) == 9
    assert out.with_suffix(".json").exists()


def test_side_mix_is_one_sided_aus_on_both_sides() -> None:
    from microexpr.facs import AU, AUActivation, Side
    from microexpr.spotting import _side_mix

    def acts(*items: tuple[AU, Side]) -> tuple[AUActivation, ...]:
        return tuple(AUActivation(au, side, 0.5) for au, side in items)

    # issue 12's codec artefact: right brow up, left dimple in
    assert _side_mix(acts((AU.OUTER_BROW_RAISER, Side.RIGHT), (AU.DIMPLER, Side.LEFT)))
    # contempt (one-sided AU14), a lopsided smile (AU6 both + R12), a smile
    assert not _side_mix(acts((AU.DIMPLER, Side.LEFT),))
    assert not _side_mix(acts((AU.CHEEK_RAISER, Side.BOTH), (AU.LIP_CORNER_PULLER, Side.RIGHT)))
    assert not _side_mix(acts((AU.CHEEK_RAISER, Side.BOTH), (AU.LIP_CORNER_PULLER, Side.BOTH)))


@pytest.mark.parametrize("codec,quality", [(Codec.MJPEG, 80), (Codec.MP4V, None)])
def test_full_strength_morphed_smiles_are_not_taken_for_head_motion(pipeline, source, tmp_path: Path, codec: Codec,
                                                                    quality: int | None) -> None:
    """The tracker reads a broad smile with the skull still as a 4-5° nod
    (its pose is fitted to the whole mesh); the skull's pitch comes from the
    pixels, so the smiles are found, not dropped as head motion."""
    clip = _clip(source, 5.0, [micro(1.2, 0.2, 1.0), micro(3.0, 0.4, 1.0)], Distortion(noise_sigma=1.0))
    written = write_video(clip, tmp_path / "full", FPS, codec, quality)
    before = pipeline.suppressed.snapshot()["head_motion"]
    spotted = _run(pipeline, written.path)
    score = score_episodes(clip.truth(), [s.episode for s in spotted])
    assert score.tp == 2 and score.fp == 0, [(s.episode.onset_frame, s.episode.offset_frame) for s in spotted]
    assert all(abs(m.apex_error) <= 2 for m in score.matches)
    assert [s.decision.label.value for s in spotted if s.decision] == ["happiness", "happiness"]
    assert pipeline.suppressed.snapshot()["head_motion"] == before


def _nod_frames(source, degrees: float, n_rest: int, n_nod: int) -> list[np.ndarray]:
    """The calm frames, then the head pitched by ``degrees``: the tracker's
    own 3D mesh rotated about its horizontal axis and projected back
    (orthographic), rendered by the synthesiser's piecewise-affine warp —
    a rotation with parallax, unlike a planar homography."""
    from microexpr.synth import dense_field, warp

    frames, ref_pts, _ = source
    centre = ref_pts.mean(axis=0)
    q = ref_pts - centre
    th = np.radians(degrees)
    moved_y = q[:, 1] * np.cos(th) - q[:, 2] * np.sin(th)
    disp = np.stack([np.zeros(len(q)), moved_y - q[:, 1]], axis=1)
    base = frames[10]
    field = dense_field(ref_pts, disp, base.shape[1], base.shape[0])
    return [base] * n_rest + [warp(base, field)] * n_nod


def test_skull_pitch_is_read_from_the_parallax_of_the_rigid_anchors(pipeline, source) -> None:
    """A true 4° nod reads as most of 4° of parallax pitch; the full-strength
    morphed smile, which moves the tracker's pitch by degrees, reads as
    almost none."""
    pipeline.reset()
    nod = [r.motion.parallax_deg[0] for r in
           (pipeline.process(Frame(k, 100.0 + k / FPS, image)) for k, image in enumerate(_nod_frames(source, 4.0, 20, 10)))
           if r.motion is not None and r.motion.valid]
    assert max(abs(p) for p in nod[:10]) < 0.5  # at rest
    assert 2.5 <= float(np.median(nod[-5:])) <= 5.0, nod[-5:]
    pipeline.reset()
    clip = _clip(source, 2.5, [micro(1.2, 0.4, 1.0)])
    tracker_pitch, parallax = [], []
    for k, image in enumerate(clip):
        r = pipeline.process(Frame(k, 200.0 + k / FPS, image))
        if r.motion is not None and r.motion.valid and r.observation.face is not None:
            tracker_pitch.append(r.observation.face.pose.pitch)
            parallax.append(r.motion.parallax_deg[0])
    assert float(np.ptp(tracker_pitch)) > 3.0  # the tracker reads the smile as a nod…
    assert max(abs(p) for p in parallax) < 1.5  # …the anchors do not move

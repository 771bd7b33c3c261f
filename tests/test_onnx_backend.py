"""The ONNX Runtime backend on real faces, against the MediaPipe backend.

Uses the ONNX files committed under provisioning/onnx (verified by the
manifest pin); TensorFlow is never needed. Parity margins here are looser
than the benchmark's gates (benchmarks/onnx_parity.py) so that a test fails
on a real regression, not on rounding.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from microexpr.capture import Frame
from microexpr.errors import ConfigError, ModelError
from microexpr.tracking import create_tracker
from microexpr.tracking import onnx as ox
from microexpr.tracking.base import FaceObservation


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="session")
def clip_frames(smile_clip: Path) -> list[np.ndarray]:
    frames = _frames(smile_clip)
    assert len(frames) == 72
    return frames


@pytest.fixture(scope="session")
def onnx_tracker():
    with ox.OnnxTracker(variant="fp32", threads=1) as tracker:
        yield tracker


def _track(tracker, frames: list[np.ndarray]) -> list[FaceObservation]:
    return [tracker.process(Frame(index=i, timestamp=i / 30.0, image=f)) for i, f in enumerate(frames)]


@pytest.fixture(scope="session")
def onnx_clip(onnx_tracker, clip_frames) -> tuple[list[FaceObservation], int]:
    onnx_tracker.reset()
    before = onnx_tracker.detections
    obs = _track(onnx_tracker, clip_frames)
    return obs, onnx_tracker.detections - before


@pytest.fixture(scope="session")
def mediapipe_clip(model_path: Path, clip_frames) -> list[FaceObservation]:
    with create_tracker("mediapipe", model_path=model_path) as tracker:
        return _track(tracker, clip_frames)


# -- real faces ----------------------------------------------------------------


def test_finds_one_face_in_astronaut(onnx_tracker, media_dir: Path) -> None:
    image = cv2.imread(str(media_dir / "astronaut.png"))
    onnx_tracker.reset()
    obs = onnx_tracker.process(Frame(index=0, timestamp=0.0, image=image))
    assert len(obs.faces) == 1
    face = obs.face
    assert face.landmarks.shape == (478, 3) and face.landmarks.dtype == np.float32
    assert face.confidence > 0.9
    # The face of the portrait sits in the upper middle of the 512x512 image.
    xs, ys = face.landmarks[:, 0], face.landmarks[:, 1]
    assert 100 < xs.min() < xs.max() < 400 and 20 < ys.min() < ys.max() < 350
    assert len(face.blendshapes) == 51 and "_neutral" not in face.blendshapes
    assert all(0.0 <= v <= 1.0 for v in face.blendshapes.values())
    assert abs(face.pose.yaw) < 30 and abs(face.pose.roll) < 30


def test_tracks_the_clip_like_video_mode(onnx_clip) -> None:
    obs, detector_runs = onnx_clip
    assert all(len(o.faces) == 1 for o in obs)
    # Tracking reuses the last landmarks' region: the detector ran once.
    assert detector_runs == 1
    smile = [(o.face.blendshapes["mouthSmileLeft"] + o.face.blendshapes["mouthSmileRight"]) / 2 for o in obs]
    assert max(smile[:15]) < 0.2  # neutral
    assert min(smile[25:66]) > 0.5  # broad smile (it relaxes in the last frames, for MediaPipe too)


def test_redetects_after_losing_the_face(onnx_tracker, clip_frames) -> None:
    onnx_tracker.reset()
    blank = np.zeros_like(clip_frames[0])
    sequence = [clip_frames[5], blank, clip_frames[6]]
    before = onnx_tracker.detections
    obs = _track(onnx_tracker, sequence)
    assert [len(o.faces) for o in obs] == [1, 0, 1]
    # frame 0: detect; frame 1: tracked region empty -> detect -> nothing;
    # frame 2: no region -> detect again.
    assert onnx_tracker.detections - before == 3


def test_blank_image_is_an_empty_result(onnx_tracker) -> None:
    onnx_tracker.reset()
    obs = onnx_tracker.process(Frame(index=3, timestamp=0.1, image=np.full((480, 640, 3), 127, np.uint8)))
    assert obs.faces == () and obs.face is None
    assert (obs.width, obs.height, obs.frame_index) == (640, 480, 3)


# -- parity with the MediaPipe backend ----------------------------------------


def test_landmarks_and_blendshapes_match_mediapipe(onnx_clip, mediapipe_clip) -> None:
    obs, _ = onnx_clip
    lm_err, bs_err, pose_err = [], [], []
    for ours, ref in zip(obs, mediapipe_clip):
        assert ref.face is not None and ours.face is not None
        side = ox.roi_from_landmarks(ref.face.landmarks.astype(np.float64)).width
        lm_err.append(np.linalg.norm(ours.face.landmarks[:, :2] - ref.face.landmarks[:, :2], axis=1).mean() * 256 / side)
        names = sorted(ref.face.blendshapes)
        assert sorted(ours.face.blendshapes) == names
        bs_err.append(np.mean([abs(ours.face.blendshapes[n] - ref.face.blendshapes[n]) for n in names]))
        a, b = ours.face.pose, ref.face.pose
        pose_err.append(max(abs(a.pitch - b.pitch), abs(a.yaw - b.yaw), abs(a.roll - b.roll)))
    # Measured here: 0.01 px, 0.0002, < 0.1 degree (benchmarks/results/onnx);
    # the gates of issue 7 are 1.0 px and 0.02.
    assert np.mean(lm_err) < 0.1
    assert np.mean(bs_err) < 0.002
    assert np.percentile(pose_err, 95) < 0.5
    # z is in the same scale as x (pixels), like the MediaPipe backend's.
    z_ours = np.concatenate([o.face.landmarks[:, 2] for o in obs])
    z_ref = np.concatenate([o.face.landmarks[:, 2] for o in mediapipe_clip])
    assert np.corrcoef(z_ours, z_ref)[0, 1] > 0.95


def test_a_turned_face_in_a_wide_frame_keeps_mediapipes_depth_scale(model_path: Path, clip_frames) -> None:
    """MediaPipe's depth grows with the crop's turn in a non-square frame; ours follows."""
    h, w = clip_frames[5].shape[:2]
    turned = cv2.warpAffine(clip_frames[5], cv2.getRotationMatrix2D((w / 2, h / 2), 30, 1.0), (w, h),
                            borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    frame = Frame(index=0, timestamp=0.0, image=turned)
    with create_tracker("mediapipe", model_path=model_path) as tracker:
        ref = tracker.process(frame).face
    with ox.OnnxTracker() as tracker:
        got = tracker.process(frame).face
    scale = float(got.landmarks[:, 2] @ ref.landmarks[:, 2] / (got.landmarks[:, 2] @ got.landmarks[:, 2]))
    assert abs(scale - 1.0) < 0.02
    assert abs(got.pose.roll - ref.pose.roll) < 0.5 and abs(got.pose.pitch - ref.pose.pitch) < 0.5


def test_pose_from_mediapipe_landmarks_matches_its_matrix(onnx_tracker, mediapipe_clip) -> None:
    """Our geometry pipeline fed MediaPipe's own landmarks gives MediaPipe's pose."""
    for obs in mediapipe_clip[::20]:
        pose, _ = onnx_tracker.pose(obs.face.landmarks.astype(np.float64), obs.width, obs.height)
        ref = obs.face.pose
        assert abs(pose.pitch - ref.pitch) < 0.05 and abs(pose.yaw - ref.yaw) < 0.05 and abs(pose.roll - ref.roll) < 0.05
        assert np.allclose(pose.translation, ref.translation, atol=0.01)


# -- model files ----------------------------------------------------------------


def _copy_models(tmp_path: Path) -> Path:
    directory = tmp_path / "onnx"
    shutil.copytree(ox.REPO_ONNX_DIR, directory)
    return directory


def test_tampered_onnx_file_is_refused(tmp_path: Path) -> None:
    directory = _copy_models(tmp_path)
    victim = directory / "face_landmarks_detector.onnx"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ModelError) as err:
        ox.OnnxTracker(model_dir=directory)
    message = str(err.value)
    assert "\n" not in message and str(victim) in message and "sha256" in message


def test_edited_manifest_is_refused(tmp_path: Path) -> None:
    directory = _copy_models(tmp_path)
    manifest = directory / ox.MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('"schema": 1', '"schema": 2'))
    with pytest.raises(ModelError, match="manifest.*sha256"):
        ox.OnnxTracker(model_dir=directory)


def test_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    directory = _copy_models(tmp_path)
    (directory / "face_detector.onnx").unlink()
    with pytest.raises(ModelError, match="face_detector.onnx: no such file"):
        ox.OnnxTracker(model_dir=directory)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="onnx.variant"):
        ox.OnnxTracker(variant="int4")
    with pytest.raises(ConfigError, match="tracker.threads"):
        ox.OnnxTracker(threads=-1)


# -- pure geometry ----------------------------------------------------------------


def test_anchor_layout_matches_the_detector_output() -> None:
    anchors = ox.ssd_anchors()
    assert anchors.shape == (896, 2)
    assert anchors.min() > 0 and anchors.max() < 1
    assert np.allclose(anchors[0], [1 / 32, 1 / 32]) and np.allclose(anchors[512], [1 / 16, 1 / 16])


def test_weighted_procrustes_recovers_a_similarity() -> None:
    rng = np.random.default_rng(3)
    source = rng.normal(size=(50, 3))
    angle = math.radians(25)
    rot = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    target = 1.7 * source @ rot.T + np.array([1.0, -2.0, 3.0])
    weights = rng.uniform(0.1, 1.0, size=50)
    m = ox.weighted_procrustes(source, target, weights)
    assert np.allclose(m[:3, :3], 1.7 * rot, atol=1e-9) and np.allclose(m[:3, 3], [1.0, -2.0, 3.0], atol=1e-9)


def test_roi_maps_crop_corners_onto_the_rotated_rectangle() -> None:
    roi = ox.Roi(cx=100.0, cy=50.0, width=40.0, height=40.0, angle=math.radians(90))
    affine = roi.crop_to_image(256)
    corner = affine @ np.array([0.0, 0.0, 1.0])
    centre = affine @ np.array([128.0, 128.0, 1.0])
    assert np.allclose(centre, [100, 50])
    # Turned 90°: the crop's top-left corner lands at the frame's top-right of the box.
    assert np.allclose(corner, [120, 30])


def test_create_tracker_opens_the_onnx_backend() -> None:
    with create_tracker("onnx", variant="fp32", threads=2) as tracker:
        assert isinstance(tracker, ox.OnnxTracker) and tracker.threads == 2
    assert tracker.closed
    tracker.close()  # idempotent
    with pytest.raises(ConfigError, match="tracker.num_faces"):
        create_tracker("onnx", num_faces=2)


# -- provisioning through the CLI ---------------------------------------------


def test_provision_model_onnx_installs_verified_files(tmp_path: Path, capsys) -> None:
    from microexpr.cli import main

    assert main(["provision-model", "--onnx", "--dir", str(tmp_path), "--json"]) == 0
    installed = tmp_path / ox.ONNX_SUBDIR
    assert (installed / ox.MANIFEST_NAME).is_file()
    with ox.OnnxTracker(model_dir=installed) as tracker:
        assert tracker.model_dir == installed
    # A second run keeps what is there.
    assert main(["provision-model", "--onnx", "--dir", str(tmp_path), "--json"]) == 0
    assert '"installed": []' in capsys.readouterr().out.splitlines()[-1]


def test_provision_model_onnx_refuses_a_tampered_source(tmp_path: Path, capsys) -> None:
    from microexpr.cli import main
    from microexpr.errors import ExitCode

    source = _copy_models(tmp_path)
    victim = source / "face_detector.onnx"
    victim.write_bytes(victim.read_bytes()[:-10])
    code = main(["provision-model", "--onnx", "--source", str(source), "--dir", str(tmp_path / "models")])
    assert code == ExitCode.MODEL_UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "face_detector.onnx" in err
    assert not (tmp_path / "models" / ox.ONNX_SUBDIR / ox.MANIFEST_NAME).exists()


def test_int8_variant_keeps_the_landmarks_and_stays_close_on_blendshapes(onnx_tracker, clip_frames) -> None:
    """The shipped int8 variant quantizes only the blendshape MLP."""
    frame = Frame(index=0, timestamp=0.0, image=clip_frames[40])
    onnx_tracker.reset()
    ref = onnx_tracker.process(frame).face
    with ox.OnnxTracker(variant="int8") as tracker:
        assert tracker.variant == "int8"
        got = tracker.process(frame).face
    assert np.array_equal(got.landmarks, ref.landmarks)
    diffs = [abs(got.blendshapes[n] - ref.blendshapes[n]) for n in ref.blendshapes]
    assert 0 < np.mean(diffs) < 0.03
    assert got.blendshapes["mouthSmileLeft"] > 0.5  # the broad smile survives quantization


def test_smoothing_steadies_a_still_face_without_lagging_motion(onnx_clip, clip_frames) -> None:
    """The one-euro filter of VIDEO mode, against the same pipeline unsmoothed."""
    smooth, _ = onnx_clip
    with ox.OnnxTracker(smooth=False) as plain:
        raw = _track(plain, clip_frames)
    gap = [np.linalg.norm(a.face.landmarks[:, :2] - b.face.landmarks[:, :2], axis=1).mean() for a, b in zip(smooth, raw)]
    assert gap[0] == 0.0  # the first frame passes through
    assert max(gap) < 3.0  # never far behind, even while the smile forms

    def jitter(obs: list[FaceObservation]) -> float:
        pts = np.stack([o.face.landmarks[:, :2] for o in obs[5:15]])  # the still, neutral stretch
        return float(np.abs(np.diff(pts, axis=0)).mean())

    assert jitter(smooth) < jitter(raw)

    def onset(obs: list[FaceObservation]) -> int:
        return next(i for i, o in enumerate(obs) if o.face.blendshapes["mouthSmileLeft"] > 0.5)

    assert abs(onset(smooth) - onset(raw)) <= 1


def test_provision_model_onnx_into_an_unwritable_place_is_an_io_error(tmp_path: Path, capsys) -> None:
    from microexpr.cli import main
    from microexpr.errors import ExitCode

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["provision-model", "--onnx", "--dir", str(blocker)])
    assert code == ExitCode.IO_ERROR
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(blocker) in err

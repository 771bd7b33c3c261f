"""The MediaPipe tracker on real face pixels, and the backend factory."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from microexpr.capture import Frame
from microexpr.errors import ConfigError, ExitCode, ModelError
from microexpr.tracking import FaceObservation, create_tracker
from microexpr.tracking.mediapipe import NUM_LANDMARKS, _refuse_arm_cpu_without_lse, _SubjectAssigner, rotation_to_euler

GL_TO_CV = np.diag([1.0, -1.0, -1.0])


def track_still(image: np.ndarray, model_path: Path, num_faces: int = 1) -> FaceObservation:
    """One still through a fresh tracker (no tracking state from other images)."""
    with create_tracker(model_path=model_path, num_faces=num_faces) as tracker:
        return tracker.process(Frame(0, 0.0, image))


@pytest.fixture(scope="module")
def portrait(media_dir: Path) -> np.ndarray:
    """single_face.jpg: a real face turned ~7° (enough yaw for a sign test)."""
    image = cv2.imread(str(media_dir / "single_face.jpg"))
    assert image is not None
    return image


# -- the real clip (one shared run) -------------------------------------------


def test_a_face_in_every_frame_of_the_clip(smile_observations: tuple[FaceObservation, ...]) -> None:
    assert len(smile_observations) == 72
    for obs in smile_observations:
        assert len(obs.faces) == 1, f"frame {obs.frame_index}"
        face = obs.faces[0]
        assert face.landmarks.shape == (NUM_LANDMARKS, 3)
        xs, ys = face.landmarks[:, 0], face.landmarks[:, 1]
        # pixels, not normalised coordinates: the face spans tens of pixels
        assert 0 <= xs.min() < xs.max() <= obs.width and 0 <= ys.min() < ys.max() <= obs.height
        assert xs.max() - xs.min() > 50
        assert face.confidence == 1.0
        assert all(math.isfinite(v) for v in (face.pose.pitch, face.pose.yaw, face.pose.roll))


def test_frames_keep_index_timestamp_and_size(smile_observations: tuple[FaceObservation, ...]) -> None:
    assert [o.frame_index for o in smile_observations] == list(range(72))
    assert smile_observations[30].timestamp == pytest.approx(1.0)
    assert {(o.width, o.height) for o in smile_observations} == {(640, 360)}


def test_blendshapes_are_named_and_neutral_is_dropped(smile_observations: tuple[FaceObservation, ...]) -> None:
    names = set(smile_observations[0].faces[0].blendshapes)
    assert "_neutral" not in names
    # 52 categories = _neutral + 51 ARKit names (no tongueOut)
    assert len(names) == 51
    assert {"mouthSmileLeft", "mouthSmileRight", "jawOpen", "eyeBlinkLeft"} <= names
    scores = list(smile_observations[0].faces[0].blendshapes.values())
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_pose_is_stable_on_a_still_head(smile_observations: tuple[FaceObservation, ...]) -> None:
    yaws = [o.faces[0].pose.yaw for o in smile_observations]
    assert max(yaws) - min(yaws) < 10.0  # the man keeps his head still; degrees, not radians


# -- stills ----------------------------------------------------------------------


def test_astronaut_gives_exactly_one_face(media_dir: Path, model_path: Path) -> None:
    image = cv2.imread(str(media_dir / "astronaut.png"))
    obs = track_still(image, model_path, num_faces=3)
    assert len(obs.faces) == 1
    assert (obs.width, obs.height) == (512, 512)


def test_no_face_is_a_normal_result(model_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    obs = track_still(noise, model_path)
    assert obs.faces == () and obs.face is None


def test_mirroring_flips_yaw_and_roll_not_pitch(portrait: np.ndarray, model_path: Path) -> None:
    pose = track_still(portrait, model_path).faces[0].pose
    mirrored = track_still(np.ascontiguousarray(portrait[:, ::-1]), model_path).faces[0].pose
    assert abs(pose.yaw) > 4.0, "the test needs a face that is visibly turned"
    assert math.copysign(1, pose.yaw) != math.copysign(1, mirrored.yaw)
    assert mirrored.yaw == pytest.approx(-pose.yaw, abs=2.5)
    assert mirrored.roll == pytest.approx(-pose.roll, abs=2.5)
    assert mirrored.pitch == pytest.approx(pose.pitch, abs=2.5)


def test_yaw_sign_matches_where_the_nose_points(portrait: np.ndarray, model_path: Path) -> None:
    """Documented convention: yaw > 0 turns the face toward the image's left."""
    face = track_still(portrait, model_path).faces[0]
    nose_x = face.landmarks[1, 0]
    cheeks_mid_x = (face.landmarks[234, 0] + face.landmarks[454, 0]) / 2
    nose_points_left = nose_x < cheeks_mid_x
    assert (face.pose.yaw > 0) == nose_points_left


def test_counter_clockwise_picture_rotation_lowers_roll(portrait: np.ndarray, model_path: Path) -> None:
    h, w = portrait.shape[:2]
    turned = cv2.warpAffine(portrait, cv2.getRotationMatrix2D((w / 2, h / 2), 12.0, 1.0), (w, h))
    before = track_still(portrait, model_path).faces[0].pose.roll
    after = track_still(turned, model_path).faces[0].pose.roll
    assert after - before == pytest.approx(-12.0, abs=3.0)


def test_two_faces_get_distinct_stable_subject_ids(media_dir: Path, portrait: np.ndarray, model_path: Path) -> None:
    def face_crop(image: np.ndarray) -> np.ndarray:
        # the short-range detector wants faces that fill a good part of the
        # frame, so each still is cropped around its face before pairing
        points = track_still(image, model_path).faces[0].landmarks[:, :2]
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        half = 0.8 * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        crop = image[max(0, int(cy - half)) : int(cy + half), max(0, int(cx - half)) : int(cx + half)]
        return cv2.resize(crop, (200, 200))

    astronaut = cv2.imread(str(media_dir / "astronaut.png"))
    pair = np.ascontiguousarray(np.hstack([face_crop(astronaut), face_crop(portrait)]))
    with create_tracker(model_path=model_path, num_faces=2) as tracker:
        first = tracker.process(Frame(0, 0.0, pair))
        second = tracker.process(Frame(1, 1 / 30, pair))
    assert len(first.faces) == 2 and len(second.faces) == 2

    def ids_by_x(obs: FaceObservation) -> list[int]:
        return [f.subject_id for f in sorted(obs.faces, key=lambda f: float(f.landmarks[:, 0].mean()))]

    assert sorted(ids_by_x(first)) == [0, 1]
    assert ids_by_x(second) == ids_by_x(first)


# -- timestamps and lifecycle ---------------------------------------------------------


def test_equal_or_backward_timestamps_are_accepted(portrait: np.ndarray, model_path: Path) -> None:
    with create_tracker(model_path=model_path) as tracker:
        for index, ts in enumerate((0.5, 0.5, 0.5004, 0.2)):
            obs = tracker.process(Frame(index, ts, portrait))
            assert obs.timestamp == ts  # the frame's own time is reported unchanged
            assert len(obs.faces) == 1


def test_close_is_idempotent_and_final(portrait: np.ndarray, model_path: Path) -> None:
    tracker = create_tracker(model_path=model_path)
    with tracker:
        tracker.process(Frame(0, 0.0, portrait))
    tracker.close()
    tracker.close()
    with pytest.raises(RuntimeError):
        tracker.process(Frame(1, 0.1, portrait))


# -- model and options ------------------------------------------------------------------


def test_a_tampered_model_is_never_loaded(model_path: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "face_landmarker.task"
    shutil.copyfile(model_path, tampered)
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelError) as exc:
        create_tracker(model_path=tampered)
    assert exc.value.exit_code == ExitCode.MODEL_HASH_MISMATCH
    assert str(tampered) in str(exc.value)


def test_a_missing_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as exc:
        create_tracker(model_path=tmp_path / "nope.task")
    assert exc.value.exit_code == ExitCode.MODEL_UNAVAILABLE


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"backend": "tensorflow"}, "tracker.backend"),
        ({"num_faces": 0}, "tracker.num_faces"),
        ({"min_detection_confidence": 1.5}, "tracker.min_detection_confidence"),
    ],
)
def test_bad_tracker_options_are_config_errors(kwargs: dict[str, object], key: str, model_path: Path) -> None:
    with pytest.raises(ConfigError, match=key):
        create_tracker(model_path=model_path, **kwargs)  # type: ignore[arg-type]


# -- pure functions ---------------------------------------------------------------------


def _rot(pitch: float, yaw: float, roll: float) -> np.ndarray:
    a, b, c = (math.radians(v) for v in (pitch, yaw, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


@pytest.mark.parametrize("angles", [(10.0, -20.0, 5.0), (-35.0, 40.0, -15.0), (0.0, 0.0, 0.0), (5.0, 60.0, 30.0)])
def test_euler_decomposition_round_trips(angles: tuple[float, float, float]) -> None:
    rotation_gl = GL_TO_CV @ _rot(*angles) @ GL_TO_CV
    assert rotation_to_euler(rotation_gl) == pytest.approx(angles, abs=1e-6)
    # a uniform scale in the matrix (canonical model fitted to the face) does not matter
    assert rotation_to_euler(1.7 * rotation_gl) == pytest.approx(angles, abs=1e-6)


def test_subject_assigner_follows_faces_across_frames() -> None:
    def square(cx: float) -> np.ndarray:
        return np.array([[cx - 50, 0, 0], [cx + 50, 100, 0]], dtype=np.float32)

    assigner = _SubjectAssigner()
    assert assigner.assign([square(100), square(500)]) == [0, 1]
    # the same two faces reported in the other order, slightly moved
    assert assigner.assign([square(510), square(95)]) == [1, 0]
    # a new face far away gets a new id
    assert assigner.assign([square(95), square(900)]) == [0, 2]


_LOAD_WITH_A_CHATTY_THREAD = """
import logging, sys, threading, time
from pathlib import Path
from microexpr.capture import open_source
from microexpr.service.build import logs_on_own_stderr
from microexpr.tracking import create_tracker

# As the daemon does (cli.setup_logging, service.run): records go through a
# stderr handler, which logs_on_own_stderr points at a private copy of fd 2.
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
log = logging.getLogger("chatter")
stop = threading.Event()
def chatter():
    n = 0
    while not stop.is_set():
        log.info("other thread line %d", n)
        n += 1
        time.sleep(0.005)
with logs_on_own_stderr():
    thread = threading.Thread(target=chatter)
    thread.start()
    with create_tracker(model_path=Path(sys.argv[1])) as tracker, open_source(sys.argv[2]) as src:
        for frame in src:
            tracker.process(frame)
            break
    stop.set()
    thread.join()
print("done", file=sys.stderr)
"""


@pytest.mark.integration
@pytest.mark.parametrize("native_logs", ["", "1"])
def test_model_load_hides_native_chatter_but_not_other_threads(model_path: Path, smile_clip: Path,
                                                               native_logs: str) -> None:
    """MediaPipe prints glog/TFLite lines to fd 2 while its graph starts;
    they are filtered out, and what other threads write meanwhile (our log
    records) still reaches stderr, in full lines and in order."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MICROEXPR_NATIVE_LOGS": native_logs}
    proc = subprocess.run([sys.executable, "-c", _LOAD_WITH_A_CHATTY_THREAD, str(model_path), str(smile_clip)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    if native_logs:
        # Unfiltered, the native library writes a line in pieces ("INFO: ", the text, "\n")
        # straight to fd 2, so one of them may sit in front of one of our (whole) lines;
        # nothing can prevent that without the filter, which is what "1" turns off.
        ours = [int(n) for n in re.findall(r"other thread line (\d+)\n", proc.stderr)]
    else:
        # Filtered: native lines reach stderr whole (or not at all), ours whole: no line is shared.
        ours = [int(line.removeprefix("other thread line ")) for line in lines if line.startswith("other thread line ")]
        assert len(ours) == proc.stderr.count("other thread line ")
    assert ours == list(range(len(ours))) and len(ours) >= 3  # none lost, none torn, in order
    assert lines[-1] == "done"
    native = [line for line in lines if "XNNPACK" in line or "InitGoogle" in line or "] " in line and line[:1] in "IW"]
    if native_logs:
        assert native, "with MICROEXPR_NATIVE_LOGS=1 the native lines are shown"
    else:
        assert native == [], native[:5]


# -- the ARMv8.0 guard (MediaPipe's aarch64 library needs LSE atomics) -------------


@pytest.mark.parametrize("machine, hwcap", [("x86_64", 0), ("aarch64", 1 << 8 | 0xFF), ("arm64", 1 << 8)])
def test_cpus_that_can_run_mediapipe_pass(machine: str, hwcap: int) -> None:
    _refuse_arm_cpu_without_lse(machine, hwcap)


def test_an_armv8_0_core_gets_one_line_and_the_backend_that_runs() -> None:
    # The HWCAP bits of a Cortex-A72 (Pi 4) under qemu: fp, asimd, aes, pmull, sha1, sha2, crc32 — no atomics.
    a72 = 0b1 | 0b10 | 0b1000 | 0b10000 | 0b100000 | 0b1000000 | 0b10000000
    with pytest.raises(ModelError) as caught:
        _refuse_arm_cpu_without_lse("aarch64", a72)
    assert caught.value.exit_code == ExitCode.MODEL_UNAVAILABLE
    assert "\n" not in str(caught.value) and 'backend = "onnx"' in str(caught.value)


def test_auto_backend_picks_what_the_cpu_can_run() -> None:
    """`[tracker] backend = "auto"` (the default): MediaPipe on x86_64 and on
    an aarch64 core with LSE atomics, ONNX Runtime on an ARMv8.0 core (Pi 4)."""
    from microexpr.config import TrackerConfig
    from microexpr.tracking import TrackerBackend, resolve_backend

    a72 = 0b1 | 0b10 | 0b1000 | 0b10000 | 0b100000 | 0b1000000 | 0b10000000
    a76 = a72 | (1 << 8)
    assert TrackerConfig().backend == "auto"
    assert resolve_backend("auto", machine="x86_64") is TrackerBackend.MEDIAPIPE
    assert resolve_backend("auto", machine="aarch64", hwcap=a76) is TrackerBackend.MEDIAPIPE
    assert resolve_backend("auto", machine="aarch64", hwcap=a72) is TrackerBackend.ONNX
    assert resolve_backend("mediapipe", machine="aarch64", hwcap=a72) is TrackerBackend.MEDIAPIPE
    with pytest.raises(ConfigError, match="known: auto, mediapipe, onnx"):
        resolve_backend("tflite")


def test_the_direct_result_reader_equals_the_public_api_bit_for_bit(smile_clip: Path, model_path: Path) -> None:
    """The tracker reads MediaPipe's C result straight into numpy (0.5 ms a
    frame less than the Python API's objects); on the same C result of real
    frames, both readings give the same Face, bit for bit."""
    import ctypes

    from mediapipe.tasks.python.vision import face_landmarker as fl

    from microexpr.tracking.mediapipe import MediaPipeTracker, face_from_arrays, face_from_mediapipe

    cap = cv2.VideoCapture(str(smile_clip))
    images = [cap.read()[1] for _ in range(12)]
    cap.release()
    with MediaPipeTracker(model_path=model_path) as tracker:
        reader = tracker._direct
        assert reader is not None, "the direct reader must be active with the pinned MediaPipe"
        lm = tracker._landmarker
        for k, image in enumerate(images):
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            mp_image = tracker._image_cls(image_format=tracker._srgb, data=rgb)
            res = fl.MpFaceLandmarkerResultC()
            lm._lib.MpFaceLandmarkerDetectForVideo(lm._handle, mp_image._image_ptr, None, 1000 + 33 * k,
                                                   ctypes.byref(res))
            try:
                public = fl.FaceLandmarkerResult.from_ctypes(res)
                direct = reader.read(res)
            finally:
                lm._lib.MpFaceLandmarkerCloseResult(ctypes.byref(res))
            assert len(direct) == len(public.face_landmarks) == 1
            h, w = image.shape[:2]
            a = face_from_mediapipe(public.face_landmarks[0], public.face_blendshapes[0],
                                    public.facial_transformation_matrixes[0], w, h)
            b = face_from_arrays(*direct[0], w, h)
            assert a.landmarks.dtype == b.landmarks.dtype and np.array_equal(a.landmarks, b.landmarks)
            assert a.blendshapes == b.blendshapes and len(b.blendshapes) == 51
            assert a.pose == b.pose
        # and the tracker's own call goes through it
        obs = tracker.process(Frame(0, 10.0, images[0]))
        assert len(obs.faces) == 1 and obs.faces[0].landmarks.shape == (NUM_LANDMARKS, 3)


def test_the_public_api_path_is_kept_when_asked(portrait: np.ndarray, model_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from microexpr.tracking.mediapipe import MediaPipeTracker

    direct = track_still(portrait, model_path).faces[0]
    monkeypatch.setenv("MICROEXPR_MEDIAPIPE_PUBLIC_API", "1")
    with MediaPipeTracker(model_path=model_path) as tracker:
        assert tracker._direct is None
        public = tracker.process(Frame(0, 0.0, portrait)).faces[0]
    assert np.array_equal(direct.landmarks, public.landmarks)
    assert direct.blendshapes == public.blendshapes and direct.pose == public.pose

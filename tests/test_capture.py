"""Frame sources on real media; live-source logic with a fake capture device.

There is no camera on the test machines, so the latest-frame / drop-counting
logic runs against an object with the ``read()/isOpened()/release()``
surface of ``cv2.VideoCapture`` (the one fake these tests allow).
"""

from __future__ import annotations

import os
import sys
import threading
import types
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from microexpr.capture import (
    Frame,
    FrameSource,
    ImageFilesSource,
    LiveSource,
    VideoFileSource,
    open_camera,
    open_source,
)
from microexpr.errors import ExitCode, SourceError

CLIP_FRAMES = 72
CLIP_FPS = 30.0


@pytest.fixture(scope="module")
def clip_frames(smile_clip: Path) -> list[Frame]:
    with open_source(smile_clip) as source:
        return list(source)


# --------------------------------------------------------------------------
# Video file


def test_real_clip_every_frame_with_index_timestamps(smile_clip: Path, clip_frames: list[Frame]) -> None:
    with open_source(smile_clip) as source:
        assert isinstance(source, VideoFileSource)
        assert source.fps == pytest.approx(CLIP_FPS)
        assert source.is_live is False
        assert source.frame_count == CLIP_FRAMES
        assert source.name == str(smile_clip)
    assert len(clip_frames) == CLIP_FRAMES
    for i, frame in enumerate(clip_frames):
        assert frame.index == i
        assert frame.timestamp == pytest.approx(i / CLIP_FPS)
        assert frame.image.dtype == np.uint8 and frame.image.ndim == 3 and frame.image.shape[2] == 3
    stamps = [f.timestamp for f in clip_frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    # Real pixels: the face moves (neutral -> smile), so frames differ.
    assert not np.array_equal(clip_frames[0].image, clip_frames[-1].image)


def test_loop_keeps_indices_and_timestamps_increasing(smile_clip: Path, clip_frames: list[Frame]) -> None:
    with open_source(smile_clip, loop=True) as source:
        frames = [source.read() for _ in range(CLIP_FRAMES + 5)]
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == list(range(CLIP_FRAMES + 5))  # type: ignore[union-attr]
    assert frames[CLIP_FRAMES].timestamp == pytest.approx(CLIP_FRAMES / CLIP_FPS)  # type: ignore[union-attr]
    assert np.array_equal(frames[CLIP_FRAMES].image, clip_frames[0].image)  # type: ignore[union-attr]


def test_fps_override_and_resize(smile_clip: Path, clip_frames: list[Frame]) -> None:
    with open_source(smile_clip, fps=10, width=320) as source:
        first, second = source.read(), source.read()
    assert first is not None and second is not None
    h, w = clip_frames[0].image.shape[:2]
    assert first.image.shape == (round(h * 320 / w), 320, 3)
    assert second.timestamp == pytest.approx(0.1)


def test_close_is_idempotent_and_stops_iteration(smile_clip: Path) -> None:
    source = open_source(smile_clip)
    assert source.read() is not None
    source.close()
    source.close()
    assert source.read() is None
    assert list(source) == []


# --------------------------------------------------------------------------
# Image folder and single image


def _write_pngs(folder: Path, frames: list[Frame], names: list[str]) -> None:
    folder.mkdir()
    for frame, name in zip(frames, names, strict=True):
        assert cv2.imwrite(str(folder / name), frame.image)


def test_image_folder_natural_order(tmp_path: Path, clip_frames: list[Frame]) -> None:
    picked = clip_frames[:11]
    names = [f"frame{i}.png" for i in range(11)]  # frame10 must come after frame9
    folder = tmp_path / "frames"
    _write_pngs(folder, picked, names)
    (folder / "notes.txt").write_text("ignored")
    (folder / "sub").mkdir()
    with open_source(folder) as source:
        assert isinstance(source, ImageFilesSource)
        assert source.fps == 30.0 and source.frame_count == 11 and not source.is_live
        got = list(source)
    assert [f.index for f in got] == list(range(11))
    assert [f.timestamp for f in got] == pytest.approx([i / 30.0 for i in range(11)])
    for frame, original in zip(got, picked, strict=True):
        assert np.array_equal(frame.image, original.image)  # PNG is lossless


def test_image_folder_fps_and_suffix_case(tmp_path: Path, clip_frames: list[Frame]) -> None:
    folder = tmp_path / "frames"
    _write_pngs(folder, clip_frames[:3], ["a.PNG", "b.jpg", "c.webp"])
    with open_source(str(folder), fps=12.5) as source:
        got = list(source)
    assert len(got) == 3
    assert got[2].timestamp == pytest.approx(2 / 12.5)


def test_single_image(media_dir: Path) -> None:
    with open_source(media_dir / "astronaut.png") as source:
        frames = list(source)
    assert len(frames) == 1 and frames[0].timestamp == 0.0 and frames[0].image.shape[2] == 3


# --------------------------------------------------------------------------
# Bad input: one clear error, the documented exit code


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match="no such file") as exc:
        open_source(missing)
    assert exc.value.exit_code == ExitCode.NO_INPUT
    assert str(missing) in str(exc.value)


def test_corrupt_video(tmp_path: Path) -> None:
    bad = tmp_path / "random.mp4"
    bad.write_bytes(np.random.default_rng(7).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError) as exc:
        open_source(bad)
    assert exc.value.exit_code == ExitCode.DATA_ERROR
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


def test_truncated_video(tmp_path: Path, smile_clip: Path) -> None:
    """The first kilobytes of a real mp4 (header without frames)."""
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(smile_clip.read_bytes()[:2000])
    with pytest.raises(SourceError) as exc:
        open_source(cut)
    assert exc.value.exit_code == ExitCode.DATA_ERROR
    assert str(cut) in str(exc.value)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(SourceError) as exc:
        open_source(empty)
    assert exc.value.exit_code == ExitCode.DATA_ERROR


def test_empty_image_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no images") as exc:
        open_source(tmp_path)
    assert exc.value.exit_code == ExitCode.NO_INPUT
    assert str(tmp_path) in str(exc.value)


def test_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    with pytest.raises(SourceError, match=r"no images .* \(2 other files\)") as exc:
        open_source(tmp_path)
    assert exc.value.exit_code == ExitCode.NO_INPUT


def test_corrupt_image_in_folder(tmp_path: Path, clip_frames: list[Frame]) -> None:
    folder = tmp_path / "frames"
    _write_pngs(folder, clip_frames[:1], ["0.png"])
    (folder / "1.png").write_bytes(b"\x89PNG not really")
    with open_source(folder) as source:
        assert source.read() is not None
        with pytest.raises(SourceError) as exc:
            source.read()
    assert exc.value.exit_code == ExitCode.DATA_ERROR
    assert str(folder / "1.png") in str(exc.value)


def test_image_gone_from_folder_is_one_error_and_no_opencv_warning(
    tmp_path: Path, clip_frames: list[Frame], capfd: pytest.CaptureFixture[str]
) -> None:
    """A file removed (or unreadable) after the folder was listed: our
    SourceError only, not also OpenCV's "can't open/read file" WARN line."""
    folder = tmp_path / "frames"
    _write_pngs(folder, clip_frames[:2], ["0.png", "1.png"])
    with open_source(folder) as source:
        assert source.read() is not None
        (folder / "1.png").unlink()
        with pytest.raises(SourceError, match="cannot read image") as exc:
            source.read()
    assert exc.value.exit_code == ExitCode.NO_INPUT
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("spec", [9, "9", "/dev/video9"])
def test_camera_that_does_not_exist(spec: int | str) -> None:
    with pytest.raises(SourceError, match="video9") as exc:
        open_source(spec)
    assert exc.value.exit_code == ExitCode.NO_INPUT


def test_device_path_that_is_not_a_camera(tmp_path: Path) -> None:
    plain = tmp_path / "video0"
    plain.write_text("x")
    with pytest.raises(SourceError, match="not a video device") as exc:
        open_camera(str(plain))
    assert exc.value.exit_code == ExitCode.NO_INPUT


def test_char_device_that_is_not_a_camera() -> None:
    with pytest.raises(SourceError, match="cannot be opened") as exc:
        open_source("/dev/null")
    assert exc.value.exit_code == ExitCode.NO_INPUT


def test_picamera2_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import now raises ImportError
    with pytest.raises(SourceError, match="picamera2 module is not installed") as exc:
        open_source("picamera2:1")
    assert exc.value.exit_code == ExitCode.NO_INPUT


@pytest.mark.parametrize("kwargs", [{"fps": 0}, {"fps": float("nan")}, {"width": 0}, {"height": -5}])
def test_bad_options(smile_clip: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(SourceError) as exc:
        open_source(smile_clip, **kwargs)
    assert exc.value.exit_code == ExitCode.USAGE


# --------------------------------------------------------------------------
# Live sources with a fake capture device


def _image(n: int) -> np.ndarray:
    """A tiny frame whose pixels carry its production number."""
    return np.full((4, 6, 3), n % 256, dtype=np.uint8)


class GatedCamera:
    """Delivers a frame only when the test hands one over.

    ``entered_after`` is how many frames had been served when the capture
    thread last came back to ``read()``: once it equals n, frame n-1 has
    been put into the source's queue. Without a pending frame ``read()``
    reports a failed read after a short wait, so the thread stays
    stoppable.
    """

    def __init__(self, opened: bool = True, idle_wait: float = 0.05) -> None:
        self.opened = opened
        self.idle_wait = idle_wait
        self.cond = threading.Condition()
        self.pending: list[np.ndarray | None] = []
        self.served = 0
        self.entered_after = -1
        self.released = 0

    def feed(self, *items: np.ndarray | None) -> None:
        with self.cond:
            self.pending.extend(items)
            self.cond.notify_all()

    def wait_entered_after(self, n: int, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.entered_after >= n, timeout), f"capture thread never served {n}"

    def read(self) -> tuple[bool, np.ndarray | None]:
        with self.cond:
            self.entered_after = self.served
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: bool(self.pending), timeout=self.idle_wait):
                return False, None
            item = self.pending.pop(0)
            if item is None:
                return False, None
            self.served += 1
            return True, item

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def release(self) -> None:
        self.released += 1


def _live(camera: Any, **kwargs: Any) -> LiveSource:
    kwargs.setdefault("max_read_failures", 10**9)  # idle waits are not failures here
    kwargs.setdefault("failure_pause", 0.0)
    return open_camera(0, factory=lambda: camera, **kwargs)


def test_live_delivers_latest_frame_and_counts_drops() -> None:
    camera = GatedCamera()
    with _live(camera) as source:
        assert source.is_live and source.fps == 30.0 and source.dropped_frames == 0
        camera.feed(*(_image(n) for n in range(5)))
        camera.wait_entered_after(5)
        frame = source.read(timeout=5)
        assert frame is not None
        assert frame.index == 4 and int(frame.image[0, 0, 0]) == 4  # the newest
        assert source.dropped_frames == 4  # frames 0-3 were replaced unread
        camera.feed(*(_image(n) for n in range(5, 8)))
        camera.wait_entered_after(8)
        frame2 = source.read(timeout=5)
        assert frame2 is not None and frame2.index == 7 and int(frame2.image[0, 0, 0]) == 7
        assert source.dropped_frames == 6
        assert frame2.timestamp > frame.timestamp  # monotonic clock at capture
        threads = [t for t in threading.enumerate() if t.name == "capture:/dev/video0"]
        assert len(threads) == 1
    assert camera.released == 1
    assert not threads[0].is_alive()


def test_live_consumer_keeping_up_drops_nothing() -> None:
    camera = GatedCamera()
    with _live(camera) as source:
        seen = []
        for n in range(5):
            camera.feed(_image(n))
            frame = source.read(timeout=5)
            assert frame is not None
            seen.append(frame.index)
        assert seen == list(range(5)) and source.dropped_frames == 0


def test_live_read_failure_raises_then_reopen_recovers() -> None:
    # Idle waits long enough never to count as failures under load.
    cameras = [GatedCamera(idle_wait=1.0), GatedCamera(idle_wait=1.0)]
    made: list[GatedCamera] = []

    def factory() -> GatedCamera:
        made.append(cameras[len(made)])
        return made[-1]

    source = open_camera(0, factory=factory, max_read_failures=3, failure_pause=0.0)
    try:
        cameras[0].feed(_image(0))
        first = source.read(timeout=5)
        assert first is not None and first.index == 0
        cameras[0].feed(None, None, None)
        with pytest.raises(SourceError, match="3 reads in a row failed") as exc:
            source.read(timeout=5)
        assert exc.value.exit_code == ExitCode.NO_INPUT
        with pytest.raises(SourceError):  # stays failed until reopened
            source.read(timeout=0.05)
        source.reopen()
        assert cameras[0].released == 1
        cameras[1].feed(_image(1))
        again = source.read(timeout=5)
        assert again is not None and again.index == 1  # indices carry on
    finally:
        source.close()
    assert cameras[1].released == 1


def test_live_device_that_does_not_open() -> None:
    camera = GatedCamera(opened=False)
    with pytest.raises(SourceError, match="cannot be opened") as exc:
        _live(camera)
    assert exc.value.exit_code == ExitCode.NO_INPUT
    assert camera.released == 1


def test_live_read_timeout() -> None:
    camera = GatedCamera()
    with _live(camera) as source:
        with pytest.raises(SourceError, match="no frame for"):
            source.read(timeout=0.1)


def test_live_close_wakes_a_blocked_reader() -> None:
    camera = GatedCamera()
    source = _live(camera, read_timeout=30.0)
    result: list[Frame | None | str] = []
    reader = threading.Thread(target=lambda: result.append(source.read()), name="test-reader")
    reader.start()
    camera.wait_entered_after(0)
    source.close()
    reader.join(timeout=10)
    assert not reader.is_alive() and result == [None]
    source.close()
    assert camera.released == 1
    assert list(source) == []


def test_live_iteration_stops_at_close() -> None:
    camera = GatedCamera()
    source = _live(camera)
    camera.feed(_image(0))
    got: list[int] = []
    for frame in source:  # ends by itself once closed
        got.append(frame.index)
        if len(got) == 3:
            source.close()
        else:
            camera.feed(_image(len(got)))
    assert got == [0, 1, 2] and source.dropped_frames == 0


def test_picamera2_adapter_with_fake_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Pi camera path, through a stand-in for the picamera2 API."""
    calls: dict[str, Any] = {}

    class FakePicamera2:
        def __init__(self, camera_num: int = 0) -> None:
            calls["camera_num"] = camera_num
            self.n = 0

        def create_video_configuration(self, main: dict[str, Any], controls: dict[str, Any]) -> dict[str, Any]:
            return {"main": main, "controls": controls}

        def configure(self, config: dict[str, Any]) -> None:
            calls["config"] = config

        def start(self) -> None:
            calls["started"] = True

        def capture_array(self, stream: str) -> np.ndarray:
            self.n += 1
            threading.Event().wait(0.002)
            return _image(self.n)

        def stop(self) -> None:
            calls["stopped"] = True

        def close(self) -> None:
            calls["closed"] = True

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    with open_source("picamera2:1", fps=15, width=6, height=4) as source:
        assert source.name == "picamera2:1" and source.is_live and source.fps == 15.0
        frame = source.read(timeout=5)
        assert frame is not None and frame.image.shape == (4, 6, 3)
    assert calls["camera_num"] == 1
    assert calls["config"]["main"] == {"format": "RGB888", "size": (6, 4)}
    assert calls["config"]["controls"] == {"FrameRate": 15.0}
    assert calls["started"] and calls["stopped"] and calls["closed"]


def test_picamera2_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []

    class BusyPicamera2:
        def __init__(self, camera_num: int = 0) -> None:
            pass

        def create_video_configuration(self, **kwargs: Any) -> dict[str, Any]:
            return kwargs

        def configure(self, config: dict[str, Any]) -> None:
            raise RuntimeError("Device or resource busy")

        def close(self) -> None:
            closed.append(True)

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=BusyPicamera2))
    with pytest.raises(SourceError, match="busy") as exc:
        open_source("picamera2")
    assert exc.value.exit_code == ExitCode.NO_INPUT and closed == [True]


def test_every_source_is_a_frame_source(smile_clip: Path, media_dir: Path) -> None:
    for spec in (smile_clip, media_dir / "astronaut.png"):
        with open_source(spec) as source:
            assert isinstance(source, FrameSource) and source.dropped_frames == 0


@pytest.mark.integration
def test_bad_media_prints_nothing_of_its_own(tmp_path: Path, smile_clip: Path) -> None:
    """FFmpeg/OpenCV must not add their own stderr lines to our one-line errors."""
    import subprocess

    cut = tmp_path / "cut.mp4"
    cut.write_bytes(smile_clip.read_bytes()[:2000])
    code = (
        "import sys\n"
        "from microexpr.capture import open_source\n"
        "from microexpr.errors import SourceError\n"
        "for spec in sys.argv[1:]:\n"
        "    try:\n"
        "        open_source(spec)\n"
        "    except SourceError as exc:\n"
        "        print(int(exc.exit_code))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(cut), "/dev/video9", "/dev/null"],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )
    assert out.stdout.split() == ["65", "66", "66"]
    assert out.stderr == ""


def test_replay_is_a_live_source_with_the_file_rate(smile_clip) -> None:
    """``replay:FILE`` delivers the clip's frames through the latest-frame
    path at the file's rate: a consumer that sleeps sees drops, not a backlog."""
    import time as _time

    from microexpr.capture import open_source

    with open_source(f"replay:{smile_clip}") as source:
        assert source.is_live
        assert source.fps == pytest.approx(30.0)
        first = source.read(timeout=5)
        assert first is not None and first.image.shape[:2] == (360, 640)
        _time.sleep(0.5)  # ~15 frames arrive meanwhile; only the newest is kept
        later = source.read(timeout=5)
        assert later is not None and later.index > first.index + 1
        assert source.dropped_frames >= 1
        assert later.timestamp > first.timestamp


def test_replay_of_a_missing_file_is_one_line_error(tmp_path) -> None:
    from microexpr.capture import open_source
    from microexpr.errors import ExitCode, SourceError

    with pytest.raises(SourceError) as exc:
        open_source(f"replay:{tmp_path / 'nope.mp4'}")
    assert exc.value.exit_code == ExitCode.NO_INPUT
    assert "nope.mp4" in str(exc.value)

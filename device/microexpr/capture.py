"""Frame sources: video file, image folder, V4L2/USB camera, Pi camera.

Two kinds, with different promises:

* **File sources** (a video file, a folder of images, one image) deliver
  every frame, in order, with ``timestamp = index / fps``. Results then do
  not depend on how fast the machine decodes, and a rerun is identical.
* **Live sources** (a V4L2/USB camera through OpenCV, the Pi camera module
  through ``picamera2``) deliver the *latest* frame: a named capture thread
  keeps a queue of one, a stale frame is replaced and counted in
  ``dropped_frames``, and timestamps are ``time.monotonic()`` at capture.
  A slow consumer then sees fresh frames and gaps instead of a growing lag.

``open_source`` picks the kind from the spec; every source is an iterable of
``Frame``, a context manager, and has an idempotent ``close()``.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

# FFmpeg writes its own complaints ("moov atom not found") straight to
# stderr, which would break our one-line errors; we report the problem
# ourselves. Read lazily by OpenCV at the first open; set the variable
# yourself (e.g. 16 for errors) to see FFmpeg's messages when debugging.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from microexpr.errors import ExitCode, SourceError  # noqa: E402

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
DEFAULT_IMAGE_FPS = 30.0
#: Live sources report this when neither the device nor the caller knows.
NOMINAL_LIVE_FPS = 30.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One image from a source.

    ``timestamp`` is seconds on a monotonic clock: for files it is
    ``index / fps`` (so results do not depend on how fast we decode); for
    live sources it is ``time.monotonic()`` at capture. ``image`` is BGR
    uint8 (OpenCV's order), HxWx3.
    """

    index: int
    timestamp: float
    image: np.ndarray


class FrameSource(ABC):
    """Common surface of every source.

    Attributes: ``name`` (what the user passed, for messages), ``fps``,
    ``is_live``, ``dropped_frames`` (always 0 for files), ``frame_count``
    (frames in a file when known, else None: drives progress bars).
    """

    name: str
    fps: float
    is_live: bool
    dropped_frames: int = 0
    frame_count: int | None = None

    @abstractmethod
    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None at the end (files) / after close()."""

    @abstractmethod
    def close(self) -> None:
        """Release the device or file; safe to call more than once."""

    def reopen(self) -> None:
        """Open the underlying device again after a failure (live sources)."""
        raise SourceError(f"{self.name}: cannot be reopened")

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} fps={self.fps:g} live={self.is_live}>"


def _resize(image: np.ndarray, width: int | None, height: int | None) -> np.ndarray:
    """Scale to the requested size; with one side given, keep the aspect."""
    if width is None and height is None:
        return image
    h, w = image.shape[:2]
    if width is None:
        width = max(1, round(w * height / h))  # type: ignore[operator]
    elif height is None:
        height = max(1, round(h * width / w))
    if (w, h) == (width, height):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Normalise a decoded image to HxWx3 uint8 BGR."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings while probing a device or file: a
    failure becomes one SourceError, not a WARN line plus our message."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _check_fps(fps: float | None) -> None:
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise SourceError(f"fps must be a positive number, got {fps}", exit_code=ExitCode.USAGE)


# --------------------------------------------------------------------------
# File sources


class VideoFileSource(FrameSource):
    """Every frame of a video file, timestamps from index and fps.

    ``fps`` overrides the container's rate (useful when a file carries a
    wrong one); without it the container's rate is used.
    """

    is_live = False

    def __init__(
        self,
        path: Path,
        *,
        fps: float | None = None,
        loop: bool = False,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        _check_fps(fps)
        self.path = path
        self.name = str(path)
        self._loop = loop
        self._size = (width, height)
        self._index = 0
        self._closed = False
        #: Frames skipped because they could not be decoded.
        self.undecodable = 0
        self._cap = self._open()
        container_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if fps is None and not (math.isfinite(container_fps) and 0 < container_fps <= 1000):
            log.warning("%s: no usable frame rate in the container (%s); assuming %g", path, container_fps, DEFAULT_IMAGE_FPS)
            container_fps = DEFAULT_IMAGE_FPS
        self.fps = float(fps) if fps is not None else container_fps
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None
        # Decode the first frame now: a file OpenCV "opens" but cannot decode
        # must fail here, naming the path, not halfway through a pipeline.
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise SourceError(f"{path}: no decodable video frames (corrupt or unsupported file)", exit_code=ExitCode.DATA_ERROR)
        self._pending: np.ndarray | None = first

    def _open(self) -> cv2.VideoCapture:
        with _quiet_opencv():
            cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.path}: cannot open as video (corrupt or unsupported file)", exit_code=ExitCode.DATA_ERROR)
        return cap

    def read(self, timeout: float | None = None) -> Frame | None:
        if self._closed:
            return None
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self._cap.read()
            # An undecodable frame inside a file of known length is skipped
            # (its index, hence the timing of the frames after it, is kept):
            # a file whose frames are mostly corrupt still gives its good ones.
            while (not ok or image is None) and self.frame_count is not None and self._index < self.frame_count - 1:
                self._index += 1
                self.undecodable += 1
                if self.undecodable == 1 or self.undecodable in (10, 100, 1000, 10000):
                    log.warning("%s: frame %d cannot be decoded: skipped (%d so far; the rest of the file is still read)",
                                self.path, self._index - 1, self.undecodable)
                ok, image = self._cap.read()
            if not ok or image is None:
                if not self._loop or self._index == 0:
                    if self.undecodable:
                        log.warning("%s: %d of %d frames could not be decoded and were skipped", self.path,
                                    self.undecodable, self.frame_count or self._index)
                    return None
                self._cap.release()
                self._cap = self._open()
                ok, image = self._cap.read()
                if not ok or image is None:
                    return None
        frame = Frame(self._index, self._index / self.fps, _resize(_as_bgr(image), *self._size))
        self._index += 1
        return frame

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending = None
            self._cap.release()


_DIGITS = re.compile(r"(\d+)")


def _natural_key(path: Path) -> tuple[tuple[int, int | str], ...]:
    """'img2.png' before 'img10.png'; digit runs compare as numbers."""
    parts = _DIGITS.split(path.name.lower())
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


class ImageFilesSource(FrameSource):
    """A folder of images (natural order) or a single image, one frame each.

    Files are decoded lazily, so a large folder costs no memory up front; a
    file that does not decode raises SourceError (DATA_ERROR) naming it.
    """

    is_live = False

    def __init__(
        self,
        files: list[Path],
        *,
        name: str,
        fps: float | None = None,
        loop: bool = False,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        _check_fps(fps)
        self.name = name
        self.files = files
        self.fps = float(fps) if fps is not None else DEFAULT_IMAGE_FPS
        self.frame_count = len(files)
        self._loop = loop
        self._size = (width, height)
        self._index = 0
        self._closed = False

    @classmethod
    def from_folder(cls, folder: Path, **kwargs: Any) -> ImageFilesSource:
        try:
            entries = [p for p in folder.iterdir() if p.is_file()]
        except PermissionError:
            raise SourceError(f"{folder}: permission denied") from None
        images = sorted((p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not images:
            kinds = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
            other = f" ({len(entries)} other files)" if entries else ""
            raise SourceError(f"{folder}: no images ({kinds}) in folder{other}")
        return cls(images, name=str(folder), **kwargs)

    def read(self, timeout: float | None = None) -> Frame | None:
        if self._closed:
            return None
        n = len(self.files)
        if self._index >= n and not self._loop:
            return None
        path = self.files[self._index % n]
        with _quiet_opencv():  # an unreadable file is our one line below, not also an OpenCV WARN line
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            if not os.access(path, os.R_OK):
                raise SourceError(f"{path}: cannot read image (permission denied or removed)")
            raise SourceError(f"{path}: cannot decode image (corrupt or unsupported)", exit_code=ExitCode.DATA_ERROR)
        frame = Frame(self._index, self._index / self.fps, _resize(image, *self._size))
        self._index += 1
        return frame

    def close(self) -> None:
        self._closed = True


# --------------------------------------------------------------------------
# Live sources


class CaptureDevice(Protocol):
    """The slice of ``cv2.VideoCapture`` a live source needs (so the Pi
    camera adapter and test fakes can stand in for it)."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's spelling)

    def release(self) -> None: ...


#: Opens the device; called again by reopen().
DeviceFactory = Callable[[], CaptureDevice]

_CLOSED = object()  # wakes a blocked reader after close()
_FAILED = object()  # the capture thread gave up; the error is in _error


class LiveSource(FrameSource):
    """Latest-frame delivery from a capture device on a named thread.

    The thread reads as fast as the device delivers and keeps only the
    newest frame (queue of one); each frame it overwrites before the
    consumer took it is counted in ``dropped_frames``. ``Frame.index`` is
    the capture count, so gaps in delivered indices are the drops.

    After ``max_read_failures`` consecutive failed reads the thread stops
    and the next ``read()`` raises SourceError; the owner may ``reopen()``
    (with its own back-off) and keep iterating.
    """

    is_live = True

    def __init__(
        self,
        factory: DeviceFactory,
        *,
        name: str,
        fps: float | None = None,
        read_timeout: float = 5.0,
        max_read_failures: int = 5,
        failure_pause: float = 0.02,
    ) -> None:
        _check_fps(fps)
        self.name = name
        self._factory = factory
        self._requested_fps = fps
        self.fps = float(fps) if fps is not None else NOMINAL_LIVE_FPS
        self.read_timeout = read_timeout
        self.max_read_failures = max_read_failures
        self._failure_pause = failure_pause
        self.dropped_frames = 0
        self._captured = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._device: CaptureDevice | None = None
        self._error: SourceError | None = None
        self._closed = False
        self._start()

    # -- lifecycle ---------------------------------------------------------

    def _start(self) -> None:
        device = self._factory()
        if not device.isOpened():
            device.release()
            raise SourceError(f"camera {self.name}: cannot be opened")
        get = getattr(device, "get", None)
        if self._requested_fps is None and callable(get):
            reported = float(get(cv2.CAP_PROP_FPS) or 0.0)
            if math.isfinite(reported) and 0 < reported <= 1000:
                self.fps = reported
        self._device = device
        self._error = None
        self._stop.clear()
        self._drain()
        self._thread = threading.Thread(
            target=self._capture_loop, args=(device,), name=f"capture:{self.name}", daemon=True
        )
        self._thread.start()
        log.info("capturing from %s at %g fps", self.name, self.fps)

    def _stop_thread(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(2.0, self.read_timeout))
            if thread.is_alive():
                log.warning("capture thread for %s did not stop within its timeout", self.name)
        device, self._device = self._device, None
        if device is not None:
            try:
                device.release()
            except Exception:  # a release failure must not mask the close
                log.exception("releasing %s failed", self.name)

    def reopen(self) -> None:
        """Release the device and open it again (after a read failure).

        Counters carry on, so indices stay increasing across reopenings.
        """
        if self._closed:
            raise SourceError(f"camera {self.name}: source is closed")
        self._stop_thread()
        self._start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_thread()
        self._put(_CLOSED, count_drop=False)

    # -- producer ------------------------------------------------------------

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def _put(self, item: object, *, count_drop: bool) -> None:
        """Replace whatever waits in the queue with ``item``, counting a
        replaced frame as dropped. Called by the capture thread and close()."""
        with self._lock:  # get+put as one step, even if close() races a stuck thread
            try:
                stale = self._queue.get_nowait()
            except queue.Empty:
                stale = None
            if count_drop and isinstance(stale, Frame):
                self.dropped_frames += 1
            self._queue.put_nowait(item)

    def _capture_loop(self, device: CaptureDevice) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                ok, image = device.read()
            except Exception as exc:  # drivers raise on unplug
                log.warning("%s: read raised %s", self.name, exc)
                ok, image = False, None
            if self._stop.is_set():
                break
            if not ok or image is None:
                failures += 1
                if failures >= self.max_read_failures:
                    self._error = SourceError(f"camera {self.name}: {failures} reads in a row failed (disconnected?)")
                    log.warning("%s", self._error)
                    self._put(_FAILED, count_drop=True)
                    return
                self._stop.wait(self._failure_pause)
                continue
            failures = 0
            frame = Frame(self._captured, time.monotonic(), _as_bgr(image))
            self._captured += 1
            self._put(frame, count_drop=True)

    # -- consumer ------------------------------------------------------------

    def read(self, timeout: float | None = None) -> Frame | None:
        """Block for the newest frame. Raises SourceError after a device
        failure or when no frame arrives within ``timeout`` (default
        ``read_timeout``); returns None once closed."""
        if self._closed:
            return None
        wait = self.read_timeout if timeout is None else timeout
        try:
            item = self._queue.get(timeout=wait)
        except queue.Empty:
            if self._closed:
                return None
            if self._error is not None:
                raise self._error from None
            raise SourceError(f"camera {self.name}: no frame for {wait:g} s") from None
        if item is _CLOSED:
            return None
        if item is _FAILED:
            assert self._error is not None
            raise self._error
        assert isinstance(item, Frame)
        return item


def _v4l2_factory(device: int | str, fps: float | None, width: int | None, height: int | None) -> DeviceFactory:
    def factory() -> CaptureDevice:
        with _quiet_opencv():
            cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if cap.isOpened():
            if width is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height is not None:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if fps is not None:
                cap.set(cv2.CAP_PROP_FPS, fps)
        return cap

    return factory


def _check_device_node(node: Path, label: str) -> None:
    try:
        st = node.stat()
    except FileNotFoundError:
        raise SourceError(f"camera {label}: {node} does not exist") from None
    if not stat.S_ISCHR(st.st_mode):
        raise SourceError(f"camera {label}: {node} is not a video device")
    if not os.access(node, os.R_OK | os.W_OK):
        raise SourceError(f"camera {label}: permission denied on {node} (add the user to the 'video' group)")


def open_camera(
    device: int | str,
    *,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    factory: DeviceFactory | None = None,
    **live_kwargs: Any,
) -> LiveSource:
    """A V4L2/USB camera by index or device path. ``factory`` replaces the
    OpenCV device (tests; other capture APIs)."""
    label = f"/dev/video{device}" if isinstance(device, int) else str(device)
    if factory is None:
        if os.name == "posix":
            _check_device_node(Path(label), str(device))
        factory = _v4l2_factory(device, fps, width, height)
    return LiveSource(factory, name=label, fps=fps, **live_kwargs)


class _PiCameraDevice:
    """``picamera2`` behind the CaptureDevice protocol.

    The "RGB888" format of libcamera is B, G, R in memory, which is what
    OpenCV and the tracker expect, so frames need no conversion.
    """

    def __init__(self, camera_num: int, fps: float | None, width: int | None, height: int | None) -> None:
        from picamera2 import Picamera2  # type: ignore[import-not-found]

        try:
            self._camera = Picamera2(camera_num=camera_num)
        except (IndexError, RuntimeError, OSError) as exc:
            raise SourceError(f"camera picamera2:{camera_num}: cannot be opened ({exc})") from None
        main: dict[str, Any] = {"format": "RGB888"}
        if width is not None and height is not None:
            main["size"] = (width, height)
        controls = {"FrameRate": float(fps)} if fps is not None else {}
        try:
            self._camera.configure(self._camera.create_video_configuration(main=main, controls=controls))
            self._camera.start()
        except Exception as exc:  # busy (another process holds it), bad size/rate
            self._camera.close()
            raise SourceError(f"camera picamera2:{camera_num}: cannot be started ({exc})") from None
        self._open = True

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            return True, self._camera.capture_array("main")
        except Exception as exc:
            log.warning("picamera2 capture failed: %s", exc)
            return False, None

    def isOpened(self) -> bool:  # noqa: N802
        return self._open

    def release(self) -> None:
        if self._open:
            self._open = False
            try:
                self._camera.stop()
            finally:
                self._camera.close()


def open_picamera(
    camera_num: int = 0,
    *,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    **live_kwargs: Any,
) -> LiveSource:
    """The Pi camera module (libcamera), which OpenCV cannot read."""
    try:
        import picamera2  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        raise SourceError(
            f"camera picamera2:{camera_num}: the picamera2 module is not installed "
            "(on Raspberry Pi OS: apt install python3-picamera2, and create the venv with --system-site-packages)"
        ) from None
    return LiveSource(
        lambda: _PiCameraDevice(camera_num, fps, width, height), name=f"picamera2:{camera_num}", fps=fps, **live_kwargs
    )


class _ReplayDevice:
    """A media file played back in real time, behind the CaptureDevice protocol.

    Used as ``replay:PATH``: a kiosk demo or a benchmark gets a camera's
    timing (frames arrive at the file's rate whatever the consumer does, and
    a slow consumer sees drops) from real recorded pixels. Loops forever.
    """

    def __init__(self, path: Path, fps: float | None, width: int | None, height: int | None) -> None:
        self._source: FrameSource = VideoFileSource(path, fps=fps, loop=True, width=width, height=height)
        self._period = 1.0 / self._source.fps
        self._next = time.monotonic()
        self._open = True

    def get(self, prop: int) -> float:
        return 1.0 / self._period if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next + self._period, time.monotonic() - self._period)
        frame = self._source.read()
        return (frame is not None), (frame.image if frame is not None else None)

    def isOpened(self) -> bool:  # noqa: N802
        return self._open

    def release(self) -> None:
        if self._open:
            self._open = False
            self._source.close()


def open_replay(
    path: str | Path,
    *,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    **live_kwargs: Any,
) -> LiveSource:
    """A video file replayed at its own rate as a live (latest-frame) source."""
    if not str(path):
        raise SourceError("replay: names no file (replay:FILE plays a video file in real time)",
                          exit_code=ExitCode.USAGE)
    media = Path(path).expanduser()
    if media.is_dir():
        raise SourceError(f"replay {media}: is a folder; replay:FILE plays a video file")
    if not media.is_file():
        raise SourceError(f"replay {media}: no such file")
    probe = VideoFileSource(media, fps=fps)  # fails early, with the file's own error
    probe.close()
    return LiveSource(lambda: _ReplayDevice(media, fps, width, height), name=f"replay:{media}", fps=fps, **live_kwargs)


# --------------------------------------------------------------------------
# Dispatch


_PICAMERA = re.compile(r"picamera2(?::(\d+))?")


def open_source(
    spec: str | Path | int,
    *,
    fps: float | None = None,
    loop: bool = False,
    width: int | None = None,
    height: int | None = None,
) -> FrameSource:
    """Open what ``spec`` names.

    ``spec`` may be a video file, a folder of images, one image, a camera
    index (``0`` or ``"0"``), a V4L2 device path (``/dev/video0``), or
    ``picamera2`` / ``picamera2:N``, or ``replay:FILE`` (a video played in
    real time as a live source). An existing path always wins over the
    other readings. ``fps`` sets the rate of file timestamps (default: the
    container's, or 30 for images) and is requested from cameras; ``loop``
    restarts file sources at their end (indices and timestamps keep
    increasing); ``width``/``height`` resize file frames and are requested
    from cameras.
    """
    _check_fps(fps)
    for label, value in (("width", width), ("height", height)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise SourceError(f"{label} must be a positive integer, got {value!r}", exit_code=ExitCode.USAGE)
    if isinstance(spec, bool):
        raise SourceError(f"source {spec!r}: not a path or camera index", exit_code=ExitCode.USAGE)
    if isinstance(spec, int):
        return open_camera(spec, fps=fps, width=width, height=height)
    text = str(spec)
    if not text:
        raise SourceError("source: empty", exit_code=ExitCode.USAGE)
    if text.startswith("replay:"):
        return open_replay(text.removeprefix("replay:"), fps=fps, width=width, height=height)
    if isinstance(spec, str) and (match := _PICAMERA.fullmatch(text)):
        return open_picamera(int(match.group(1) or 0), fps=fps, width=width, height=height)
    path = Path(text).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise SourceError(f"{path}: cannot access: {exc.strerror}") from None
    if st is None:
        if text.isdigit():
            return open_camera(int(text), fps=fps, width=width, height=height)
        if text.startswith("/dev/"):
            raise SourceError(f"camera {text}: does not exist")
        # A spec that looks like another kind is named in the user's own
        # spelling (Path folds "http://x" to "http:/x"), with what is accepted.
        if "://" in text:
            raise SourceError(f"{text}: no such file or folder (URLs are not a frame source; give a file, "
                              "a folder, a camera index, /dev/videoN, picamera2[:N] or replay:FILE)")
        if text.lower().startswith("picamera"):
            raise SourceError(f"{text}: no such file or folder, nor a Pi camera (picamera2 or picamera2:N)")
        raise SourceError(f"{path}: no such file or folder")
    file_kwargs: dict[str, Any] = {"fps": fps, "loop": loop, "width": width, "height": height}
    if stat.S_ISDIR(st.st_mode):
        return ImageFilesSource.from_folder(path, **file_kwargs)
    if stat.S_ISCHR(st.st_mode):
        return open_camera(text, fps=fps, width=width, height=height)
    if not os.access(path, os.R_OK):
        raise SourceError(f"{path}: permission denied")
    if st.st_size == 0:
        raise SourceError(f"{path}: empty file", exit_code=ExitCode.DATA_ERROR)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFilesSource([path], name=str(path), **file_kwargs)
    return VideoFileSource(path, **file_kwargs)

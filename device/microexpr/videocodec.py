"""Write frames through the codecs a camera delivers (test material).

Why: a spotter that reads sub-pixel skin motion is judged on what a real
camera sends, not on lossless frames. USB webcams send MJPEG (every frame
an independent JPEG, 8x8 blocks that flicker with the content); IP cameras
and recorded files are MPEG-4 Part 2 / H.264, whose motion-compensated
blocks drift and snap at every change of the picture. Both add noise that
is spatially blocky and temporally structured, unlike Gaussian sensor
noise.

What the local OpenCV can write (checked, OpenCV 5.0 with its bundled
FFmpeg): MJPEG as per-frame ``cv2.imencode`` JPEGs at a chosen quality
(a folder of .jpg: what the webcam sends, decoded by the same libjpeg),
or in .avi through FFmpeg's MJPG writer at its default quality (OpenCV's
own MJPEG writer takes ``VIDEOWRITER_PROP_QUALITY`` only when set after
opening, and its scale is not libjpeg's: "70" gave three quarters of libjpeg
70's error at 2.4x the size); MPEG-4 Part 2 (``mp4v``) in .mp4 through
FFmpeg, whose bitrate cannot be set from OpenCV (neither a writer
parameter nor ``OPENCV_FFMPEG_WRITER_OPTIONS`` changed it: 0.84 Mbit/s at
640x360 on the real clip either way), so the achieved bitrate is measured
and reported. H.264 cannot be written through OpenCV here (it finds only
the ``h264_v4l2m2m`` hardware encoder, which has no device), so ``H264`` is
written by the ``ffmpeg`` program (Debian's package, libx264) when it is
installed: constant bitrate (default 1 Mbit/s, what an IP camera streams at
640x360), a key frame every 2 s, no B-frames (cameras stream with low
latency), yuv420p. OpenCV's bundled FFmpeg decodes it. ``LOSSLESS`` writes a
PNG folder, the control.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)


class Codec(StrEnum):
    LOSSLESS = "lossless"  #: PNG folder: the control
    #: every frame ``cv2.imencode``d at a set JPEG quality (libjpeg's scale),
    #: kept as a folder of .jpg: the bytes a USB webcam's MJPEG stream carries
    MJPEG = "mjpeg"
    #: .avi through OpenCV's FFmpeg MJPG writer at its default quality
    #: (≈ libjpeg quality 50 on the real clip: same error, 3.9 Mbit/s)
    MJPEG_AVI = "mjpeg_avi"
    MP4V = "mp4v"  #: .mp4, MPEG-4 Part 2 through FFmpeg (bitrate as OpenCV sets it)
    #: .mp4, H.264 (libx264) through the ``ffmpeg`` program at a set bitrate
    H264 = "h264"

    @property
    def suffix(self) -> str:
        return {Codec.LOSSLESS: "", Codec.MJPEG: "", Codec.MJPEG_AVI: ".avi", Codec.MP4V: ".mp4",
                Codec.H264: ".h264.mp4"}[self]


#: H.264 bitrate when none is given: about what an IP camera streams at 640x360.
H264_DEFAULT_KBPS = 1000


def h264_available() -> bool:
    """Whether ``Codec.H264`` can be written (the ``ffmpeg`` program is installed)."""
    return shutil.which("ffmpeg") is not None


@dataclass(frozen=True, slots=True)
class WrittenVideo:
    """What was written: path (a folder for LOSSLESS), frames and the
    achieved bitrate (bits per second of video)."""

    path: Path
    codec: Codec
    quality: int | None
    frames: int
    fps: float
    size_bytes: int

    @property
    def bitrate_mbps(self) -> float:
        seconds = self.frames / self.fps if self.fps > 0 else 0.0
        return 8.0 * self.size_bytes / seconds / 1e6 if seconds > 0 else 0.0


def write_video(frames: Iterable[np.ndarray], path: Path, fps: float, codec: Codec,
                quality: int | None = None) -> WrittenVideo:
    """Write BGR frames to ``path`` (its suffix is replaced by the codec's;
    LOSSLESS makes a folder of PNGs). ``quality``: JPEG quality 1-100 for
    MJPEG (default 80); for H264 the bitrate in kbit/s (default 1000)."""
    path = Path(path)
    out = path.with_suffix(codec.suffix)
    count = 0
    if codec is Codec.H264:
        return _write_h264(frames, out, fps, int(quality if quality is not None else H264_DEFAULT_KBPS))
    if codec in (Codec.LOSSLESS, Codec.MJPEG):
        q = None if codec is Codec.LOSSLESS else int(quality if quality is not None else 80)
        if q is not None and not 1 <= q <= 100:
            raise ValueError(f"JPEG quality must be 1..100, got {q}")
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        size = 0
        for count, image in enumerate(frames, start=1):
            if q is None:
                ok, buf = cv2.imencode(".png", image)
            else:
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                raise RuntimeError(f"{out}: cannot encode frame {count - 1}")
            (out / f"{count - 1:06d}{'.png' if q is None else '.jpg'}").write_bytes(buf.tobytes())
            size += len(buf)
        return WrittenVideo(out, codec, q, count, fps, size)
    writer: cv2.VideoWriter | None = None
    q = None
    try:
        for image in frames:
            if writer is None:
                h, w = image.shape[:2]
                fourcc = "MJPG" if codec is Codec.MJPEG_AVI else "mp4v"
                writer = cv2.VideoWriter(str(out), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
                if not writer.isOpened():
                    raise RuntimeError(f"{out}: cannot open a {codec.value} video writer")
            writer.write(image)
            count += 1
    finally:
        if writer is not None:
            writer.release()
    size = out.stat().st_size if out.exists() else 0
    written = WrittenVideo(out, codec, q, count, fps, size)
    log.debug("wrote %s: %d frames, %s, %.2f Mbit/s", out, count, codec.value, written.bitrate_mbps)
    return written


def _write_h264(frames: Iterable[np.ndarray], out: Path, fps: float, kbps: int) -> WrittenVideo:
    """Pipe raw BGR frames into ``ffmpeg`` (libx264, constant bitrate)."""
    program = shutil.which("ffmpeg")
    if program is None:
        raise RuntimeError("H.264 needs the ffmpeg program (Debian package ffmpeg); it is not installed")
    if kbps <= 0:
        raise ValueError(f"H.264 bitrate must be > 0 kbit/s, got {kbps}")
    proc: subprocess.Popen[bytes] | None = None
    count = 0
    try:
        for image in frames:
            if proc is None:
                h, w = image.shape[:2]
                gop = max(1, round(2 * fps))
                cmd = [program, "-hide_banner", "-loglevel", "error", "-y",
                       "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-",
                       "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", str(gop),
                       "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k",
                       "-pix_fmt", "yuv420p", str(out)]
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdin is not None
            proc.stdin.write(np.ascontiguousarray(image).tobytes())
            count += 1
    finally:
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            if proc.wait() != 0:
                raise RuntimeError(f"{out}: ffmpeg failed: {err.splitlines()[-1] if err else proc.returncode}")
    size = out.stat().st_size if out.exists() else 0
    written = WrittenVideo(out, Codec.H264, kbps, count, fps, size)
    log.debug("wrote %s: %d frames, h264 %d kbit/s, %.2f Mbit/s", out, count, kbps, written.bitrate_mbps)
    return written


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """One frame as a webcam's MJPEG stream delivers it (encode + decode)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)

"""Write frames through the codecs a camera delivers (test material).

Why: a spotter that reads sub-pixel skin motion is judged on what a real
camera sends, not on lossless frames. USB webcams send MJPEG (every frame
an independent JPEG, 8x8 blocks that flicker with the content); IP cameras
and recorded files are MPEG-4 Part 2 / H.264, whose motion-compensated
blocks drift and snap at every change of the picture. Both add noise that
is spatially blocky and temporally structured, unlike Gaussian sensor
noise.

What the local OpenCV can write (checked, OpenCV 5.0 with its bundled
FFmpeg): MJPEG in .avi through OpenCV's own MJPEG writer, whose JPEG
quality can be set (``VIDEOWRITER_PROP_QUALITY``, set after opening: the
open-time parameter is ignored); MPEG-4 Part 2 (``mp4v``) in .mp4 through
FFmpeg, whose bitrate cannot be set from OpenCV (neither a writer
parameter nor ``OPENCV_FFMPEG_WRITER_OPTIONS`` changed it: 0.84 Mbit/s at
640x360 on the real clip either way), so the achieved bitrate is measured
and reported; H.264 cannot be written here (OpenCV finds only the
``h264_v4l2m2m`` hardware encoder, which has no device). ``LOSSLESS``
writes a PNG folder, the control.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)


class Codec(StrEnum):
    LOSSLESS = "lossless"  #: PNG folder: the control
    MJPEG = "mjpeg"  #: .avi, OpenCV's MJPEG writer at a set JPEG quality
    MP4V = "mp4v"  #: .mp4, MPEG-4 Part 2 through FFmpeg (bitrate as OpenCV sets it)

    @property
    def suffix(self) -> str:
        return {Codec.LOSSLESS: "", Codec.MJPEG: ".avi", Codec.MP4V: ".mp4"}[self]


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
    MJPEG (default 80)."""
    path = Path(path)
    out = path.with_suffix(codec.suffix) if codec is not Codec.LOSSLESS else path.with_suffix("")
    count = 0
    if codec is Codec.LOSSLESS:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for count, image in enumerate(frames, start=1):
            cv2.imwrite(str(out / f"{count - 1:06d}.png"), image)
        size = sum(p.stat().st_size for p in out.iterdir())
        return WrittenVideo(out, codec, None, count, fps, size)
    writer: cv2.VideoWriter | None = None
    q = None
    try:
        for image in frames:
            if writer is None:
                h, w = image.shape[:2]
                if codec is Codec.MJPEG:
                    q = int(quality if quality is not None else 80)
                    if not 1 <= q <= 100:
                        raise ValueError(f"JPEG quality must be 1..100, got {q}")
                    writer = cv2.VideoWriter(str(out), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
                    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, q)
                    if int(writer.get(cv2.VIDEOWRITER_PROP_QUALITY)) != q:
                        raise RuntimeError(f"{out}: the MJPEG writer did not take quality {q}")
                else:
                    writer = cv2.VideoWriter(str(out), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
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


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """One frame as a webcam's MJPEG stream delivers it (encode + decode)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)

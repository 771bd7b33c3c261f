"""Frame sources: video file, image folder, V4L2/USB camera, Pi camera.

(Interface fixed; implementation in progress — see issue 3.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

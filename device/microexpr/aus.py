"""Blendshapes + landmarks → FACS Action Unit intensities.

(Interface fixed; implementation in progress — see issue 3.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from microexpr.facs import AU
from microexpr.tracking.base import HeadPose


@dataclass(frozen=True, slots=True)
class AUFrame:
    """AU intensities (0..1) of the primary face in one frame.

    ``left``/``right`` are per side of the subject's face for AUs that can
    act one-sidedly; ``intensity`` is the bilateral value (the stronger
    side). Only AUs the estimator measures appear as keys. With no face,
    ``face_found`` is False and the maps are empty.
    """

    frame_index: int
    timestamp: float
    face_found: bool
    confidence: float
    intensity: Mapping[AU, float]
    left: Mapping[AU, float]
    right: Mapping[AU, float]
    pose: HeadPose | None

"""ROI motion on real pixels: the right region moves the right way, rigid
in-plane motion is aligned away, the reference can be renewed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from microexpr.capture import Frame
from microexpr.motion import REGIONS, MotionAnalyzer, Region, region_points
from microexpr.synth import Renderer, SynthSpec, parse_event
from microexpr.tracking import create_tracker


@pytest.fixture(scope="module")
def astronaut_frames(model_path: Path, media_dir: Path) -> list[Frame]:
    with create_tracker(model_path=model_path) as tracker:
        spec = SynthSpec(media_dir / "astronaut.png", 30.0, 1.2, (parse_event("L12@0.5/0.4*0.6"),), noise_sigma=1.0)
        return list(Renderer(spec, tracker))


def _motion(frames: list[Frame], model_path: Path) -> list:
    out = []
    with create_tracker(model_path=model_path) as tracker:
        analyzer = MotionAnalyzer()
        for frame in frames:
            out.append(analyzer.process(frame, tracker.process(frame).face))
    return out


def test_every_region_has_landmarks_and_a_side() -> None:
    for region in REGIONS:
        assert region_points(region)
    assert Region.MOUTH_CORNER_L.side.value == "L" and Region.CHIN.side.value == "B"
    # mirrored regions use mirrored points
    assert region_points(Region.MOUTH_CORNER_R)[0] == 61 and region_points(Region.MOUTH_CORNER_L)[0] == 291


def test_left_corner_moves_up_and_out_only(astronaut_frames: list[Frame], model_path: Path) -> None:
    motion = _motion(astronaut_frames, model_path)
    assert motion[0].rebased and not motion[0].valid
    apex = motion[int(0.66 * 30)]
    neutral = motion[10]
    left, right = apex.get(Region.MOUTH_CORNER_L), apex.get(Region.MOUTH_CORNER_R)
    assert left.dx > 0.01 and left.dy > 0.01  # outward and up, in IOD
    assert abs(right.dx) < 0.3 * left.dx and abs(right.dy) < 0.3 * left.dy
    far = [apex.get(r) for r in (Region.BROW_INNER_L, Region.BROW_OUTER_R, Region.GLABELLA)]
    assert all(np.hypot(m.dx, m.dy) < 0.005 for m in far)
    assert all(np.hypot(m.dx, m.dy) < 0.005 for m in neutral.regions)


def test_in_plane_head_motion_is_aligned_away(astronaut_frames: list[Frame], model_path: Path) -> None:
    """Rotate (roll 6°), shift and scale the whole picture: after the
    alignment no region reads as moving."""
    still = astronaut_frames[0].image
    h, w = still.shape[:2]
    frames = []
    for i in range(20):
        k = min(i / 10.0, 1.0)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 6.0 * k, 1.0 + 0.05 * k)
        m[:, 2] += (6.0 * k, -4.0 * k)
        frames.append(Frame(i, i / 30.0, cv2.warpAffine(still, m, (w, h), borderMode=cv2.BORDER_REFLECT)))
    motion = _motion(frames, model_path)
    moved = max(np.hypot(r.dx, r.dy) for f in motion[15:] for r in f.regions)
    assert moved < 0.006  # below a third of a weak (0.2) smile's corner travel


def test_rebase_and_reset(astronaut_frames: list[Frame], model_path: Path) -> None:
    with create_tracker(model_path=model_path) as tracker:
        analyzer = MotionAnalyzer()
        faces = [tracker.process(f).face for f in astronaut_frames[:4]]
        analyzer.process(astronaut_frames[0], faces[0])
        assert analyzer.has_reference and analyzer.reference_index == 0
        analyzer.rebase()
        again = analyzer.process(astronaut_frames[2], faces[2])
        assert again.rebased and analyzer.reference_index == 2
        assert analyzer.process(astronaut_frames[3], None).valid is False
        analyzer.reset()
        assert not analyzer.has_reference


def test_the_short_median_equals_numpys() -> None:
    """``_robust_similarity``'s median by one sort: numpy's value, bit for
    bit, for odd and even counts and ties; NaN as numpy gives it."""
    from microexpr.motion import _median

    rng = np.random.default_rng(5)
    for k in range(3000):
        values = rng.normal(0, 1, int(rng.integers(1, 40))) * rng.choice([1e-3, 1.0, 1e3])
        if k % 4 == 0:
            values = np.round(values, 1)
        assert _median(values) == float(np.median(values))
    assert np.isnan(_median(np.array([1.0, np.nan, 2.0])))

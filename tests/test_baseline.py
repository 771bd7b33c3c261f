"""The subject baseline on hand-made motion/AU streams: warm-up, robust
z-scores, floors, head-motion gating and rebasing, blink handling,
temporal smoothing at 30 and 200 fps.

Motion measured on real pixels is covered by test_pipeline.py.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pytest

from microexpr.aus import AUFrame
from microexpr.baseline import BaselineConfig, SubjectBaseline
from microexpr.facs import AU
from microexpr.motion import REGIONS, MotionFrame, Region, RegionMotion
from microexpr.tracking.base import Face, HeadPose

_RNG_LANDMARKS = np.random.default_rng(7).uniform(100, 300, size=(478, 3)).astype(np.float32)


class Stream:
    """Feeds a baseline with motion frames built from per-region displacements."""

    def __init__(self, fps: float, *, noise: float = 0.002, seed: int = 0, config: BaselineConfig | None = None) -> None:
        self.fps = fps
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.baseline = SubjectBaseline(0, config)
        self.index = 0
        self.rebased_next = False
        self.reference_pose = HeadPose(0.0, 0.0, 0.0)
        self.ref_moves: dict[Region, tuple[float, float]] = {}

    def step(
        self,
        moves: dict[Region, tuple[float, float]] | None = None,
        *,
        pose: HeadPose | None = None,
        blink: float = 0.0,
        busy: bool = False,
    ):
        t = self.index / self.fps
        pose = pose or HeadPose(0.0, 0.0, 0.0)
        regions = []
        if self.rebased_next:  # like the motion stage: displacements restart from this frame
            self.ref_moves = dict(moves or {})
        for r in REGIONS:
            dx, dy = (moves or {}).get(r, (0.0, 0.0))
            rx, ry = self.ref_moves.get(r, (0.0, 0.0))
            dx, dy = dx - rx, dy - ry
            nx, ny = self.rng.normal(0.0, self.noise, 2) if self.noise > 0 else (0.0, 0.0)
            regions.append(RegionMotion(r, dx + nx, dy + ny, float(np.hypot(dx + nx, dy + ny))))
        rebased = self.rebased_next
        if rebased:
            self.reference_pose = pose
        motion = MotionFrame(self.index, t, not rebased, tuple(regions), rebased=rebased,
                             reference_index=0, reference_pose=self.reference_pose, iod_px=60.0)
        intensity = {AU.LIP_CORNER_PULLER: 0.0, AU.BLINK: blink}
        au = AUFrame(self.index, t, True, 1.0, MappingProxyType(intensity), MappingProxyType(dict(intensity)),
                     MappingProxyType(dict(intensity)), pose)
        face = Face(landmarks=_RNG_LANDMARKS, blendshapes={}, pose=pose, confidence=1.0)
        ev = self.baseline.update(motion, au, face, busy=busy)
        self.rebased_next = ev.rebase
        self.index += 1
        return ev

    def run(self, seconds: float, **kwargs):
        return [self.step(**kwargs) for _ in range(int(round(seconds * self.fps)))]


def test_settle_then_warmup_then_ready() -> None:
    s = Stream(30.0)
    evs = s.run(1.0)
    c = BaselineConfig()
    first_ready = next(e.timestamp for e in evs if e.ready)
    assert first_ready >= c.track_settle_s + c.warmup_s - 1e-9
    assert first_ready <= c.track_settle_s + c.warmup_s + 0.15
    assert any(e.rebase for e in evs if e.timestamp <= c.track_settle_s + 0.05)
    assert all(e.activity == 0.0 for e in evs if not e.ready)


def test_weak_movement_is_amplified_and_sided() -> None:
    s = Stream(30.0, noise=0.002)
    s.run(3.0)
    # a 0.02 IOD up-and-out pull of the left mouth corner: ~1 px on a webcam face
    ev = s.step({Region.MOUTH_CORNER_L: (0.014, 0.014)})
    assert ev.ready and not ev.gated
    assert ev.region_z[Region.MOUTH_CORNER_L] >= 6.0
    assert ev.activity >= 6.0
    assert ev.au_z_left[AU.LIP_CORNER_PULLER] >= 6.0
    assert ev.au_z_right.get(AU.LIP_CORNER_PULLER, 0.0) < 3.0
    # the same pull downward reads as AU15, not AU12
    s.run(1.0)
    ev = s.step({Region.MOUTH_CORNER_L: (0.0, -0.02)})
    assert ev.au_z_left[AU.LIP_CORNER_DEPRESSOR] >= 6.0
    assert ev.au_z_left.get(AU.LIP_CORNER_PULLER, 0.0) < 3.0


def test_noise_prior_and_floor_on_a_still_image() -> None:
    """A still picture has no motion noise: early on the prior noise level
    keeps a tiny movement from looking large; after long exposure the scale
    reaches the floor and no further (z stays finite and proportional)."""
    s = Stream(30.0, noise=0.0)
    s.run(2.0)
    early = s.step({Region.BROW_INNER_L: (0.0, 0.003)}).region_z[Region.BROW_INNER_L]
    assert early < 3.0
    s.run(40.0)
    late = s.step({Region.BROW_INNER_L: (0.0, 0.003)}).region_z[Region.BROW_INNER_L]
    floor = BaselineConfig().motion_floor_iod
    assert np.isfinite(late)
    assert late == pytest.approx(0.003 / floor, rel=0.25)
    twice = s.step({Region.BROW_INNER_L: (0.0, 0.006)}).region_z[Region.BROW_INNER_L]
    assert twice == pytest.approx(2 * late, rel=0.25)


def test_fast_head_turn_is_gated_and_a_slow_nod_is_not() -> None:
    slow = Stream(30.0)
    slow.run(2.0)
    # 20 degrees/s of pitch (the real smile clip's nod peaks at ~21), 2 degrees in all
    nod = [slow.step(pose=HeadPose(20.0 * k / 30.0, 0.0, 0.0)) for k in range(3)]
    assert not any(e.gated for e in nod)
    fast = Stream(30.0)
    fast.run(2.0)
    # 120 degrees/s of yaw while every region appears to move
    turn = [fast.step({r: (0.03, 0.0) for r in REGIONS}, pose=HeadPose(0.0, 120.0 * k / 30.0, 0.0)) for k in range(6)]
    assert any(e.gated for e in turn)
    assert all(e.activity == 0.0 for e in turn if e.gated)


def test_settled_new_pose_gets_a_new_reference() -> None:
    s = Stream(30.0)
    s.run(2.0)
    turned = HeadPose(0.0, 8.0, 0.0)
    evs = s.run(1.0, pose=turned)
    assert evs[0].gated  # stale reference right away (and the jump is fast)
    rebases = [e for e in evs if e.rebase]
    assert len(rebases) == 1
    after = [e for e in evs if e.timestamp > rebases[0].timestamp + 0.1]
    assert after and not any(e.gated for e in after)
    assert all(e.pose_drift_deg < 1.0 for e in after)


def test_blink_flag_keeps_lids_out_of_activity() -> None:
    s = Stream(30.0)
    s.run(2.0)
    lids_down = {Region.UPPER_LID_L: (0.0, -0.05), Region.UPPER_LID_R: (0.0, -0.05)}
    ev = s.step(lids_down, blink=0.8)
    assert ev.blink
    assert ev.region_z[Region.UPPER_LID_L] > 10.0
    assert ev.activity < 6.0


def test_a_frown_drags_the_lids_but_is_not_a_blink() -> None:
    s = Stream(30.0)
    s.run(2.0)
    frown = {Region.BROW_INNER_L: (-0.011, -0.019), Region.BROW_INNER_R: (-0.011, -0.019),
             Region.UPPER_LID_L: (0.0, -0.010), Region.UPPER_LID_R: (0.0, -0.010)}
    ev = s.step(frown)
    assert not ev.blink
    assert ev.activity >= 7.0 and ev.top_region in (Region.BROW_INNER_L, Region.BROW_INNER_R)
    s.run(1.0)
    blink = {Region.UPPER_LID_L: (0.0, -0.010), Region.UPPER_LID_R: (0.0, -0.010),
             Region.BROW_INNER_L: (0.0, -0.001), Region.BROW_INNER_R: (0.0, -0.001)}
    assert s.step(blink).blink


def test_lids_alone_never_spot_and_a_lasting_lid_shift_renews_the_reference() -> None:
    """A gaze resting on a new target displaces the lids for good; that is
    not an expression."""
    s = Stream(30.0)
    s.run(2.0)
    lids = {Region.UPPER_LID_L: (0.0, 0.02), Region.LOWER_LID_L: (0.0, 0.015)}
    evs = s.run(1.0, moves=lids)
    assert evs[0].region_z[Region.UPPER_LID_L] > 6.0
    assert max(e.activity for e in evs) < 6.0
    rebases = [e.timestamp - evs[0].timestamp for e in evs if e.rebase]
    assert len(rebases) == 1 and 0.45 <= rebases[0] <= 0.7
    after = s.run(0.5, moves=lids)
    assert max(e.region_z[Region.UPPER_LID_L] for e in after[2:]) < 3.0


def test_busy_frames_are_not_learned() -> None:
    s = Stream(30.0)
    s.run(2.0)
    before = s.baseline.sample_count
    s.run(1.0, moves={Region.CHIN: (0.0, 0.05)}, busy=True)
    assert s.baseline.sample_count <= before
    ev = s.step({Region.CHIN: (0.0, 0.05)})
    assert ev.region_z[Region.CHIN] > 10.0  # still an expression, not the new neutral


@pytest.mark.parametrize(("fps", "frames", "keep"), [(30.0, 1, 0.85), (30.0, 2, 0.95), (200.0, 8, 0.7)])
def test_smoothing_keeps_short_events(fps: float, frames: int, keep: float) -> None:
    """A 1- or 2-frame step at 30 fps and a 40 ms step at 200 fps keep most
    of the height the same step reaches when held."""
    def run(n: int) -> list[float]:
        # statistics frozen after the warm-up, so only the smoothing differs
        s = Stream(fps, noise=0.0005, seed=1, config=BaselineConfig(refresh_s=1000.0))
        s.run(2.0)
        return [s.step({Region.CHIN: (0.0, 0.03)}).region_z[Region.CHIN] for _ in range(n)]

    held = float(np.median(run(int(fps))[int(fps) // 2:]))
    assert max(run(frames)) >= keep * held


def test_lost_face_and_reset() -> None:
    s = Stream(30.0)
    s.run(1.0)
    t = s.index / 30.0
    motion = MotionFrame(s.index, t, False, ())
    ev = s.baseline.update(motion, AUFrame.no_face(s.index, t), None)
    assert not ev.face_found and not ev.ready and ev.activity == 0.0
    s.baseline.reset()
    assert s.baseline.sample_count == 0


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        BaselineConfig(smooth_s=0.0)
    with pytest.raises(ValueError):
        BaselineConfig(min_samples=1)


def test_old_reference_is_renewed_at_a_quiet_moment_and_recentred() -> None:
    s = Stream(30.0, noise=0.001)
    # a slow posture drift of the chin region, within the neutral range
    evs = [s.step({Region.CHIN: (0.0, 0.004 * min(k / 900.0, 1.0))}) for k in range(int(70 * 30))]
    rebases = [e.timestamp for e in evs if e.rebase]
    assert rebases[0] <= 0.25  # the first reference, after the tracker settled
    later = [t for t in rebases if t > 1.0]
    assert len(later) == 1 and later[0] >= BaselineConfig().reference_max_age_s
    after = [e for e in evs if e.timestamp > later[0] + 0.5]
    # the drift is now part of the reference and the learnt spread still applies
    assert after and max(e.region_z[Region.CHIN] for e in after) < 3.0


def test_direction_maths_equal_one_numpy_call_per_direction() -> None:
    """``update`` computes the regions' norms and their projections on the
    AU directions in two numpy calls per frame; they equal, bit for bit, the
    per-direction ``np.hypot(*v)`` and ``v @ direction`` they replaced."""
    from microexpr.baseline import _Layout

    lay = _Layout(tuple(AU)[:5])
    rng = np.random.default_rng(3)
    for _ in range(300):
        disp = rng.normal(0, 0.01, (lay.n_regions, 2)) * rng.choice([1e-3, 1.0, 30.0], (lay.n_regions, 1))
        norms = np.hypot(disp[:, 0], disp[:, 1]).tolist()
        dots = np.matmul(disp[lay.dir_region][:, None, :], lay.dir_col)[:, 0, 0].tolist()
        for k, ri in enumerate(lay.dir_region_list):
            assert norms[ri] == float(np.hypot(*disp[ri]))
            assert dots[k] == float(disp[ri] @ lay.dir_vec[k])


def test_the_statistics_refresh_equals_numpys_median_bit_for_bit() -> None:
    """The robust statistics sort each feature's samples instead of calling
    np.median (cheaper at rest, where they refresh every 0.25 s over up to
    600 samples); the median and MAD are numpy's, bit for bit, for odd and
    even counts, with ties, and with a NaN (which np.median propagates)."""
    from microexpr.baseline import _RobustStats

    rng = np.random.default_rng(11)
    size = 20
    priors, floors = np.full(size, 0.01), np.full(size, 1e-4)
    for trial in range(60):
        n = int(rng.integers(1, 90))
        rows = [rng.normal(0, 1, size) * rng.choice([1e-3, 1.0, 1e3], size) for _ in range(n)]
        if trial % 3 == 0:
            rows = [np.round(x, 1) for x in rows]
        if trial % 10 == 5:
            rows[0][3] = np.nan
        stats = _RobustStats(size, BaselineConfig())
        stats.frame_dt = 1 / 30
        for k, x in enumerate(rows):
            stats.add(k / 30, x.copy())
        stats.refresh(10.0, priors, floors, force=True)
        data = np.stack(rows)
        median = np.median(data, axis=0)
        mad = 1.4826 * np.median(np.abs(data - median), axis=0)
        span = stats._covered_s()
        w = BaselineConfig().prior_s
        scale = np.maximum(np.sqrt((span * mad**2 + w * priors**2) / max(span + w, 1e-9)), floors)
        assert np.array_equal(stats.median, median, equal_nan=True)
        assert np.array_equal(stats.scale, scale, equal_nan=True)


def test_the_middle_deviation_equals_the_sorted_deviations_middle_bit_for_bit() -> None:
    """The MAD's order statistics found in the two runs of a sorted row are
    the ones sorting ``|x - median|`` gives: one sample, odd and even counts,
    every value equal, half the row one repeated value (a face the activity
    gate let rest repeats its motion features), values on one side only."""
    from microexpr.baseline import _middle, _middle_deviation

    rng = np.random.default_rng(5)
    for trial in range(2000):
        size, n = int(rng.integers(1, 12)), int(rng.integers(1, 70))
        rows = rng.normal(0, 1, (size, n)) * rng.choice([1e-4, 1.0, 1e4])
        match trial % 6:
            case 1:
                rows = np.round(rows, 1)
            case 2:
                rows[:, : n // 2] = rows[:, :1]
            case 3:
                rows[:] = 0.25
            case 4:
                rows[:, n // 3:] = rows[:, -1:]
            case 5:
                rows = np.abs(rows)
        rows.sort(axis=1)
        centre = _middle(rows)
        expected = _middle(np.sort(np.abs(rows - centre[:, None]), axis=1))
        assert np.array_equal(_middle_deviation(rows, centre), expected), (trial, size, n)


@pytest.mark.parametrize(("fps", "count"), [(30.0, 1500), (10.0, 1400)])
def test_the_statistics_keep_the_samples_a_list_would_through_window_thinning_and_recentring(
        fps: float, count: int) -> None:
    """The samples live in one preallocated matrix (no stacking at every
    refresh); through 50 s of samples at 30 fps (the 30-s window and the
    600-sample thinning both at work) and 140 s at 10 fps (the window alone:
    the live block reaches the matrix's end and is moved back to its start),
    with reference renewals, it holds what a plain list of vectors under the
    documented rules holds, and its median/MAD are numpy's on them."""
    from microexpr.baseline import _RobustStats

    config = BaselineConfig()
    rng = np.random.default_rng(3)
    size = 12
    columns = np.array([0, 1, 5, 11])
    priors, floors = np.full(size, 0.01), np.full(size, 1e-4)
    stats = _RobustStats(size, config)
    stats.frame_dt = 1 / fps
    moved = 0
    ref: list[tuple[float, np.ndarray]] = []
    ref_w: list[float] = []
    for k in range(count):
        t = k / fps + (0.5 if k > 900 else 0.0)  # a gap too
        moved += stats._start + len(stats) == stats._data.shape[1]
        x = rng.normal(0, 1, size)
        step = stats.frame_dt
        ref_w.append(min(step, t - ref[-1][0]) if ref else step)
        ref.append((t, x.copy()))
        stats.add(t, x)
        while ref and t - ref[0][0] > config.window_s:
            ref.pop(0)
            ref_w.pop(0)
        if len(ref) > config.max_samples:
            half = len(ref) // 2
            kept = [sum(ref_w[i:min(i + 2, half)]) for i in range(0, half, 2)]
            ref = ref[:half:2] + ref[half:]
            ref_w = kept + ref_w[half:]
        if k % 400 == 399:
            data = np.stack([v for _, v in ref])
            shift = np.median(data[:, columns], axis=0)
            for _, v in ref:
                v[columns] -= shift
            stats.recentre(columns)
        if k % 97 == 0 or k == count - 1:
            assert len(stats) == len(ref)
            assert list(stats.times) == [t for t, _ in ref] and list(stats.weights) == ref_w
            assert np.array_equal(stats.data, np.stack([v for _, v in ref], axis=1))
    stats.refresh(100.0, priors, floors, force=True)
    data = np.stack([v for _, v in ref])
    assert np.array_equal(stats.median, np.median(data, axis=0))
    assert 250 < len(ref) <= config.max_samples
    assert moved > 0 or fps > 10  # the move back to column 0 happened (at 10 fps)

"""Per-subject neutral baseline: motion and AU intensities → robust evidence.

A micro-expression is a small, brief departure from *this person's* resting
face. The baseline learns what "resting" looks like — per feature, the
median and the median absolute deviation (MAD) over recent frames judged
neutral — and turns every frame into robust z-scores (deviation / scaled
MAD). That is the "amplification" of the method: a 0.02 IOD movement of a
mouth corner is invisible in blendshapes (dead zone) but is ten noise
units away from the corner's own resting jitter.

Features (all relative to the subject's neutral face):

* per motion region, dx and dy (IOD units, from ``motion.py``);
* per AU and side, the motion projected on the AU's direction of pull
  (``AU_DIRECTIONS``, e.g. AU12 = mouth corner up and outward);
* per AU and side, the estimator's intensity (blendshapes + geometry);
* gaze: iris centre within the eye (a fraction of the eye's width), from
  its position in the motion reference frame.

Rules that keep the evidence honest:

* **Neutral frames only.** A frame joins the statistics when the spotter
  is idle, the head is still and no region is above ``neutral_max_z``; it
  is held back ``commit_delay_s`` so that the rising edge of an episode
  (below threshold for a few frames) is dropped when the episode opens.
  The first ``warmup_s`` after a (re)start are taken as neutral
  (the subject is assumed at rest when first seen); no evidence before.
* **A prior on the noise, and floors.** Half a second of neutral frames
  is a small sample: a MAD from it can be far too small (it saw a still
  moment of a face that sways), and every later sway then looks like an
  expression. The scale is therefore shrunk toward a prior noise level
  (``motion_prior_iod`` = 0.002 IOD, the per-region jitter measured on the
  real clip's neutral frames) with the weight of ``prior_s`` seconds of
  data: ``scale² = (T·mad_scale² + prior_s·prior²) / (T + prior_s)`` for
  ``T`` seconds of neutral history (one frame interval per sample: sparse
  samples do not count the gaps between them). Weights are in seconds, not samples, so
  200 fps does not count as more evidence than 30 fps. After a minute the
  subject's own noise dominates; it never goes below the floors
  (``motion_floor_iod``, about the noise of a still image with sensor
  noise), so a perfectly still picture does not make z-scores explode.
* **Head motion.** Rigid alignment removes in-plane motion; out-of-plane
  rotation cannot be removed from a 2D crop, so while the head's angular
  speed (over ``head_speed_span_s``) exceeds ``head_speed_dps`` the frame
  is *gated*: evidence is not used for spotting, nor for the baseline
  (held ``gate_hold_s`` after). When the head settles in a pose more than
  ``rebase_pose_deg`` from the motion reference's, the baseline asks for a
  new reference (``Evidence.rebase``).
* **Smoothing** is a causal exponential filter with a time constant in
  seconds (``smooth_s`` = 15 ms): no smoothing at 25–30 fps (a two-frame
  event keeps its full height), ~3 frames at 200 fps (a 40 ms event keeps
  most of its height while frame noise halves).
* **Blinks and gaze.** The lid regions never open an episode: blinks
  (15–20 a minute) and gaze shifts move them far more often than any
  expression, and eyes resting on a new target displace them for good.
  They still name AU5/AU7 once another region has opened an episode. A
  blink (upper lids moving down, or the estimator's blink rising) flags the
  frame and keeps the brows out of the activity too while it lasts (the
  squeeze reaches the brows' lower edge); a gaze shift (iris moving in the
  eye) flags it as well. Lids displaced for
  0.5 s while the rest of the face is quiet, or a gaze that settled
  elsewhere, make the baseline ask for a new reference. A reference older than a minute is
  renewed at the next quiet second (posture and light drift). On every new
  reference the stored motion samples are re-centred on zero: the spread
  learnt so far stays valid.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from microexpr import mesh
from microexpr.aus import AUFrame
from microexpr.facs import AU, Side
from microexpr.motion import REGIONS, MotionFrame, Region, RegionGroup
from microexpr.tracking.base import Face, HeadPose

log = logging.getLogger(__name__)

_EMPTY: Mapping = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Direction:
    """An AU's pull on one motion region: unit vector (out, up) in face axes."""

    au: AU
    region: Region
    out: float
    up: float


def _unit(out: float, up: float) -> tuple[float, float]:
    n = math.hypot(out, up)
    return out / n, up / n


def _directions() -> tuple[Direction, ...]:
    """AU pull directions per region (FACS appearance changes, frontal view).

    Per region, the AU whose direction best matches the observed movement
    takes the evidence; competing pulls (AU12 up-and-out, AU20 out, AU14
    in, AU15 down on the mouth corner) are thus told apart by direction.
    """
    lateral: list[tuple[str, AU, float, float]] = [
        ("brow_inner", AU.INNER_BROW_RAISER, 0.0, 1.0),
        ("brow_inner", AU.BROW_LOWERER, -0.6, -0.8),
        ("brow_outer", AU.OUTER_BROW_RAISER, 0.0, 1.0),
        ("brow_outer", AU.BROW_LOWERER, -0.3, -0.95),
        ("upper_lid", AU.UPPER_LID_RAISER, 0.0, 1.0),
        ("upper_lid", AU.BLINK, 0.0, -1.0),
        ("lower_lid", AU.LID_TIGHTENER, 0.0, 1.0),
        ("cheek", AU.CHEEK_RAISER, 0.2, 0.98),
        ("nose", AU.NOSE_WRINKLER, 0.1, 1.0),
        ("mouth_corner", AU.LIP_CORNER_PULLER, 0.77, 0.64),
        ("mouth_corner", AU.DIMPLER, -0.95, 0.3),
        ("mouth_corner", AU.LIP_CORNER_DEPRESSOR, 0.15, -0.99),
        ("mouth_corner", AU.LIP_STRETCHER, 0.98, -0.2),
    ]
    midline: list[tuple[Region, AU, float, float]] = [
        (Region.GLABELLA, AU.BROW_LOWERER, 0.0, -1.0),
        (Region.GLABELLA, AU.INNER_BROW_RAISER, 0.0, 1.0),
        (Region.UPPER_LIP, AU.UPPER_LIP_RAISER, 0.0, 1.0),
        (Region.LOWER_LIP, AU.CHIN_RAISER, 0.0, 1.0),
        (Region.LOWER_LIP, AU.LIPS_PART, 0.0, -1.0),
        (Region.CHIN, AU.CHIN_RAISER, 0.0, 1.0),
        (Region.CHIN, AU.JAW_DROP, 0.0, -1.0),
    ]
    out = []
    for base, au, o, u in lateral:
        for suffix in ("_l", "_r"):
            out.append(Direction(au, Region(base + suffix), *_unit(o, u)))
    for region, au, o, u in midline:
        out.append(Direction(au, region, *_unit(o, u)))
    return tuple(out)


AU_DIRECTIONS: tuple[Direction, ...] = _directions()

#: Movement (IOD) we call full intensity (1.0) when the estimator is in its
#: dead zone: the real broad smile of single_face.mp4 moves the corners by
#: ≈0.17 IOD; other regions travel less (brows, lids, nose ≈0.06–0.08).
FULL_SCALE_IOD: Mapping[RegionGroup, float] = MappingProxyType({
    RegionGroup.MOUTH: 0.15, RegionGroup.CHEEKS: 0.07, RegionGroup.NOSE: 0.06,
    RegionGroup.BROWS: 0.07, RegionGroup.LIDS: 0.04, RegionGroup.CHIN: 0.06,
})

#: Estimator AUs that do not make an expression (lids: blinks, gaze).
_NOT_EXPRESSION = frozenset({AU.BLINK, AU.EYES_CLOSED, AU.UPPER_LID_RAISER, AU.LID_TIGHTENER})

#: Regions whose movement a blink or a gaze shift explains.
LID_REGIONS = frozenset(r for r in REGIONS if r.group is RegionGroup.LIDS)
#: Regions a blink also moves a little (left out of the activity during one).
BROW_REGIONS = frozenset(r for r in REGIONS if r.group is RegionGroup.BROWS)


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    """All times in seconds, all thresholds in robust-z units or physical
    units; nothing in frames, so one configuration serves 25–200 fps."""

    window_s: float = 30.0  #: neutral history kept per subject
    max_samples: int = 600  #: cap (older samples thinned) to bound the median's cost
    track_settle_s: float = 0.2  #: the tracker converges this long on a new face before the reference is taken
    warmup_s: float = 0.3  #: first stretch after the reference taken as neutral
    #: At least this many neutral frames before evidence, or any once
    #: ``warmup_s`` is over (the reference frame itself is the first): at a
    #: low frame rate (6 fps: four frames in five undecodable) 8 frames took
    #: 1.3 s, and a smile that started after the reference was learnt as the
    #: resting face. The prior (``prior_s``) carries the scale while the
    #: sample is small; at 25 fps and above the warm-up brings 8 frames.
    min_samples: int = 8
    #: During the warm-up a frame is taken as neutral only if no region has
    #: moved from the reference by this many prior noise scales
    #: (``motion_prior_iod``): the face was at rest when the reference was
    #: taken, and a frame that has moved as far as an onset (the spotter's
    #: ``on_z``) is an expression starting, not the resting face.
    warmup_max_z: float = 7.0
    #: A reference most warm-up frames did not come near (they moved
    #: ``warmup_max_z`` from it) while they held still among themselves (at
    #: least half of them within ``warmup_max_z`` of their own median) and
    #: showed no expression the reference lacked (the estimator's expressive
    #: AUs risen by less than FACS "marked", ``retake_max_rise``, in the
    #: median frame) is not the resting face: it was taken at a moment the
    #: face was moving (the end of a movement, a lip settling, a tracker
    #: snap). The reference is taken again and the warm-up restarts, at most
    #: ``max_retakes`` times in a row. Before, such a reference stayed: the
    #: looped synthetic clip joined mid-smile restarted from one of the two
    #: frames where its played-back neutral stretch turns (the mouth corners
    #: already moving), every other frame read as z ≈ 30 (AU15), the episode
    #: was capped after 4 s and held for good: the device fell silent
    #: (issue 12).
    retake_max_rise: float = 0.5
    max_retakes: int = 3
    refresh_s: float = 0.25  #: statistics recomputed at most this often
    commit_delay_s: float = 0.3  #: a neutral frame joins the stats this late
    neutral_max_z: float = 3.0  #: frames above this (any region) are not neutral
    motion_prior_iod: float = 0.002  #: prior noise scale of motion features (IOD)
    intensity_prior: float = 0.05  #: prior noise scale of estimator intensities
    gaze_prior: float = 0.01  #: prior noise scale of iris position (eye widths)
    prior_s: float = 2.0  #: the prior weighs as much as this many seconds of data
    motion_floor_iod: float = 0.0005  #: lowest scale for motion features (IOD)
    intensity_floor: float = 0.02  #: lowest scale for estimator intensities
    gaze_floor: float = 0.003  #: lowest scale for iris position (eye widths)
    smooth_s: float = 0.015  #: causal smoothing time constant
    head_speed_dps: float = 40.0  #: angular speed above which frames are gated
    head_speed_span_s: float = 0.1  #: speed measured over this span (jitter-proof)
    gate_hold_s: float = 0.15  #: gating lasts this long after the head slows
    #: Out-of-plane rotation (pitch or yaw) from the reference pose beyond
    #: which the reference is stale: frames are gated until a new one is
    #: taken. The real smile of single_face.mp4 tilts the head by 2.6° (both
    #: the tracker and a 3D fit on the upper-face points agree), so a
    #: expression with a natural head movement stays below it.
    rebase_pose_deg: float = 3.0
    #: Pitch gets a wider margin: brow and mouth actions move the mesh the
    #: pose is fitted to, and read as pitch (measured on synthetic AU4+7:
    #: 2.5°, AU1+2: -1.8°, with the head still), while yaw stays within 0.3°.
    rebase_pitch_deg: float = 6.0
    #: The head's pitch is read from the pixels (``MotionFrame.parallax_deg``:
    #: the depth-dependent shift of the nasal bridge, inner eye corners and
    #: temples), not from the tracker, whose pose is fitted to the whole mesh
    #: and reads a broad smile as a nod: a flow-morphed smile with the skull
    #: still moved the tracker's pitch by 4.9° (parallax 0.75°); a 3D nod of
    #: 4° rendered on the mesh read 3.3° of parallax (tracker 2.1°). The
    #: tracker's pitch still counts beyond this much: no expression moved it
    #: further, and a large nod can defeat the flow at the anchors.
    expression_pitch_deg: float = 5.0
    settle_speed_dps: float = 10.0  #: the head counts as still below this speed…
    settle_s: float = 0.2  #: …held this long before a stale reference is renewed
    blink_z: float = 3.5  #: lid-down evidence above this flags a blink…
    blink_lid_over_brow: float = 2.0  #: …when the lid drops this many times more than the brow
    blink_intensity: float = 0.35  #: or the estimator's AU45/43 rising this much above neutral
    gaze_z: float = 6.0  #: iris movement (from the reference frame) above this flags a gaze shift
    flag_hold_s: float = 0.12  #: blink/gaze flags last this long after the cause
    lid_settle_s: float = 0.5  #: lids displaced this long, the rest quiet → new reference
    reference_max_age_s: float = 60.0  #: an older motion reference is renewed…
    quiet_for_refresh_s: float = 1.0  #: …at the end of a quiet stretch this long
    #: Regions excluded from ``activity`` (lids: blinks and gaze move them)
    #: while a blink/gaze flag is up.
    direction_min_cos: float = 0.5  #: a region's movement names an AU only if this well aligned

    def __post_init__(self) -> None:
        for name in ("window_s", "warmup_s", "warmup_max_z", "smooth_s", "head_speed_span_s", "motion_floor_iod",
                     "intensity_floor", "gaze_floor", "refresh_s", "motion_prior_iod", "intensity_prior",
                     "gaze_prior"):
            if not getattr(self, name) > 0:
                raise ValueError(f"baseline.{name}: must be > 0, got {getattr(self, name)!r}")
        if self.prior_s < 0:
            raise ValueError(f"baseline.prior_s: must be >= 0, got {self.prior_s!r}")
        if self.min_samples < 3:
            raise ValueError(f"baseline.min_samples: must be >= 3, got {self.min_samples}")
        if not self.retake_max_rise > 0 or self.max_retakes < 0:
            raise ValueError(f"baseline: need retake_max_rise > 0 and max_retakes >= 0, got {self.retake_max_rise!r}, "
                             f"{self.max_retakes!r}")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One frame of amplified evidence for the spotter.

    ``activity`` is the spotting signal: the largest region z-score among
    the regions that spot (all but the lids; 0 when not ``ready`` or
    ``gated``). ``activity_raw``
    is the same before temporal smoothing (the spotter locates apex and
    boundaries on it, after the fact, without the filter's lag);
    ``region_z_raw`` likewise per region.
    ``au_z``/``au_z_left``/``au_z_right`` are per-AU evidence (≥ 0), the
    larger of the motion and the estimator evidence;
    ``intensity*`` the estimator's values passed through; ``motion_amount``
    the AU-aligned movement in IOD per AU (for intensity when the estimator
    is in its dead zone).
    """

    subject_id: int
    frame_index: int
    timestamp: float
    face_found: bool
    ready: bool
    gated: bool
    activity: float
    activity_raw: float
    region_z: Mapping[Region, float] = field(default_factory=lambda: _EMPTY)
    region_z_raw: Mapping[Region, float] = field(default_factory=lambda: _EMPTY)
    au_z: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    au_z_left: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    au_z_right: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    #: The motion part of the AU evidence alone (region movement along each
    #: AU's pull), per side.
    motion_z_left: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    motion_z_right: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    motion_amount: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    intensity: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    intensity_left: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    intensity_right: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    #: Estimator intensity above the subject's neutral median, per side (≥ 0):
    #: a person who smiles at rest does not get a full-intensity AU12 for a
    #: small extra pull.
    rise_left: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    rise_right: Mapping[AU, float] = field(default_factory=lambda: _EMPTY)
    blink: bool = False
    gaze: bool = False
    head_speed_dps: float = 0.0
    pose_drift_deg: float = 0.0
    #: The head pose in this frame (the spotter rejects episodes during
    #: which the head rotated): the tracker's yaw and roll, the pitch read
    #: from the pixels (``BaselineConfig.expression_pitch_deg``).
    pose: HeadPose | None = None
    neutral: bool = False  #: this frame was queued for the neutral statistics
    rebase: bool = False  #: asks the motion stage for a new neutral reference

    @property
    def expression_rise(self) -> float:
        """The estimator's largest rise over the subject's neutral among the
        AUs that make expressions (lids left out: blinks and gaze move them).
        The blendshapes are calibrated on real faces, so a rise of FACS
        "trace" (0.25) or more says the face is not at its resting state —
        what tells a held expression from a stale motion reference (posture,
        light), which moves pixels and no AU."""
        rises = [v for m in (self.rise_left, self.rise_right) for a, v in m.items() if a not in _NOT_EXPRESSION]
        return max(rises, default=0.0)

    @property
    def top_region(self) -> Region | None:
        """The region with the largest z among those that spot (not the lids)."""
        spotting = [r for r in self.region_z if r not in LID_REGIONS]
        if not spotting:
            return None
        return max(spotting, key=lambda r: self.region_z[r])


def _pose_vec(pose: HeadPose | None) -> np.ndarray | None:
    if pose is None:
        return None
    return np.array([pose.pitch, pose.yaw, pose.roll], dtype=np.float64)


class _Layout:
    """Column layout of the feature vector (built once)."""

    def __init__(self, intensity_aus: tuple[AU, ...]) -> None:
        self.n_regions = len(REGIONS)
        self.region_index = {r: i for i, r in enumerate(REGIONS)}
        # columns: region dx, dy | AU projections | intensity L, R per AU | gaze x, y per eye
        self.proj_start = 2 * self.n_regions
        self.directions = AU_DIRECTIONS
        self.int_start = self.proj_start + len(self.directions)
        self.intensity_aus = intensity_aus
        self.gaze_start = self.int_start + 2 * len(intensity_aus)
        self.size = self.gaze_start + 4
        self.dir_region = np.array([self.region_index[d.region] for d in self.directions])
        self.dir_region_list: list[int] = self.dir_region.tolist()
        #: per direction: its AU, and whether it counts for the left / the
        #: right side (a midline region counts for both); looked up once
        #: here, not per frame (``Region.side`` parses the name)
        self.dir_au: list[AU] = [d.au for d in self.directions]
        #: positions in ``intensity_aus`` of the estimator's blink AUs
        self.blink_ks: list[int] = [intensity_aus.index(a) for a in (AU.BLINK, AU.EYES_CLOSED) if a in intensity_aus]
        self.dir_to_left: list[bool] = [d.region.side is not Side.RIGHT for d in self.directions]
        self.dir_to_right: list[bool] = [d.region.side is not Side.LEFT for d in self.directions]
        self.dir_vec = np.array([(d.out, d.up) for d in self.directions])
        #: (n_dirs, 2, 1): each direction's unit vector as a column, for one
        #: batched matmul (equal bit for bit to one ``@`` per direction)
        self.dir_col = np.ascontiguousarray(self.dir_vec[:, :, None])
        #: the regions that count toward ``activity``: without the lids, and
        #: without the brows too while a blink is flagged
        self.counts = np.ones(self.n_regions, bool)
        for r in LID_REGIONS:
            self.counts[self.region_index[r]] = False
        self.counts_blink = self.counts.copy()
        for r in BROW_REGIONS:
            self.counts_blink[self.region_index[r]] = False
        self.motion_cols = np.arange(0, self.int_start)
        #: features measured from the motion reference (motion and gaze)
        self.relative_cols = np.concatenate([self.motion_cols, np.arange(self.gaze_start, self.size)])
        self.floors_kind = np.zeros(self.size, np.int8)  # 0 motion, 1 intensity, 2 gaze
        self.floors_kind[self.int_start:self.gaze_start] = 1
        self.floors_kind[self.gaze_start:] = 2


def _middle(rows: np.ndarray) -> np.ndarray:
    """The median of each row of an array whose rows are sorted."""
    n = rows.shape[1]
    h = n // 2
    return rows[:, h].copy() if n % 2 else (rows[:, h - 1] + rows[:, h]) / 2.0


def _middle_deviation(rows: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``_middle`` of each row's sorted ``|rows - centre|``, from rows that
    are sorted, without sorting the deviations (that sort was half of a
    refresh's cost). Below ``centre`` the deviations fall, from it they
    rise: two sorted runs, ``a[i]`` = centre - rows[p-1-i] and
    ``b[j]`` = rows[p+j] - centre. The middle order statistics of the two
    runs merged are found by a binary search on how many of them come from
    ``a``, every row at once (log2 n steps over the rows instead of a pass
    over every sample). The differences are the same floats ``np.abs``
    gives (IEEE subtraction rounds symmetrically), so the result is equal
    bit for bit (tests/test_baseline.py)."""
    size, n = rows.shape
    flat = np.ascontiguousarray(rows).ravel()
    p = np.count_nonzero(rows < centre[:, None], axis=1)  # a's length; b's is n - p
    below = np.arange(size) * n + p - 1  # flat index of a[0] (the value just below the centre)

    def a_at(i: np.ndarray) -> np.ndarray:
        return centre - flat[below - i]

    def b_at(j: np.ndarray) -> np.ndarray:
        return flat[below + 1 + j] - centre

    taken = (n - 1) // 2 + 1  # the first middle value is the taken-th smallest
    lo, hi = np.maximum(0, taken - (n - p)), np.minimum(taken, p)
    while (lo < hi).any():
        # where lo == hi already, mid == lo, both stay put and the values
        # read (in range of ``flat``, if not of the row) are not used
        mid = (lo + hi) // 2
        more = a_at(mid) < b_at(taken - 1 - mid)  # a's next is below b's last taken: take more of a
        lo = np.minimum(np.where(more, mid + 1, lo), hi)
        hi = np.where(more, hi, mid)
    i, j = lo, taken - lo
    first = np.maximum(np.where(i > 0, a_at(np.minimum(i, p) - 1), -np.inf),
                       np.where(j > 0, b_at(np.maximum(j, 1) - 1), -np.inf))
    if n % 2:
        return first
    # the value after the first middle one: the next of either run (a run
    # already used up gives +inf)
    second = np.minimum(np.where(i < p, a_at(np.minimum(i, p - 1)), np.inf),
                        np.where(j < n - p, b_at(np.minimum(j, n - p - 1)), np.inf))
    return (first + second) / 2.0


class _RobustStats:
    """Median/MAD over a rolling, time-bounded sample of neutral vectors.

    The samples are the columns of one preallocated matrix (oldest first,
    from ``_start``), not a deque of vectors: the refresh sorted a copy
    stacked from 600 separate vectors every 0.25 s at rest, and the stacking
    cost more than the sort (0.33 of 0.9 ms, measured). Twice the capacity
    is allocated so that dropping the oldest sample is a moved start, and
    the live block is moved back to column 0 only when it reaches the end."""

    def __init__(self, size: int, config: BaselineConfig) -> None:
        self.config = config
        self._data = np.empty((size, 2 * (config.max_samples + 1)))
        self._start = 0
        #: each sample's time, and the seconds of neutral face it stands for
        self.times: deque[float] = deque()
        self.weights: deque[float] = deque()
        self.median = np.zeros(size)
        self.scale = np.ones(size)
        self.computed_at = -math.inf
        self.dirty = False
        #: The stream's typical frame interval (set by the baseline).
        self.frame_dt = 0.0

    @property
    def data(self) -> np.ndarray:
        """The samples, one column each, oldest first (a view)."""
        return self._data[:, self._start:self._start + len(self.times)]

    def add(self, t: float, x: np.ndarray) -> None:
        # each sample stands for one frame interval of neutral face (less
        # if frames came faster); thinning hands a dropped sample's share to
        # its kept neighbour
        n = len(self.times)
        prev = self.times[-1] if n else None
        step = self.frame_dt if self.frame_dt > 0 else 0.0
        if self._start + n == self._data.shape[1]:
            self._data[:, :n] = self._data[:, self._start:self._start + n]
            self._start = 0
        self._data[:, self._start + n] = x
        self.times.append(t)
        self.weights.append(min(step, t - prev) if prev is not None and step > 0 else step)
        self.dirty = True
        while self.times and t - self.times[0] > self.config.window_s:
            self.times.popleft()
            self.weights.popleft()
            self._start += 1
        n = len(self.times)
        if n > self.config.max_samples:
            # thin the older half: keep every other one
            half = n // 2
            weights = list(self.weights)
            kept = [sum(weights[i:min(i + 2, half)]) for i in range(0, half, 2)]
            keep = np.concatenate([np.arange(0, half, 2), np.arange(half, n)])
            times = list(self.times)
            self._data[:, :len(keep)] = self.data[:, keep]
            self._start = 0
            self.times = deque(times[i] for i in keep.tolist())
            self.weights = deque(kept + weights[half:])

    def __len__(self) -> int:
        return len(self.times)

    def recentre(self, columns: np.ndarray) -> None:
        """Shift the samples of ``columns`` so their median is 0 (the motion
        reference was renewed: displacements restart from zero, their
        spread stays what it was)."""
        if not self.times:
            return
        data = self.data
        shift = np.median(data[columns], axis=1)
        data[columns] -= shift[:, None]
        self.median[columns] -= shift
        self.dirty = True

    def _covered_s(self) -> float:
        """Seconds of neutral face the samples stand for: one frame interval
        each (``frame_dt``), not the span between the first and the last.
        The span counts the gaps: a face that rests 0.4 s between smiles
        (the looped real clip) kept one sample per loop, 25 samples "covered"
        30 s, the prior lost its weight and the scale shrank to the spread of
        near-identical frames — resting frames then read as z 5-10, were
        never admitted again and kept the spotter from re-arming (silence)."""
        if len(self.times) < 2:
            return 0.0
        span = self.times[-1] - self.times[0]
        return min(span, float(sum(self.weights))) if self.frame_dt > 0 else span

    def refresh(self, t: float, priors: np.ndarray, floors: np.ndarray, force: bool = False) -> None:
        if not self.dirty or (not force and t - self.computed_at < self.config.refresh_s):
            return
        # One row per feature, sorted: its middle is np.median's value (the
        # same order statistics; the mean of the two middle ones for an even
        # count, computed as numpy does), at a third to a quarter of
        # np.median's cost (its partition is slower than numpy's sort here:
        # 4.6 ms → 3.3 ms with 600 samples, 1.7 → 0.4 ms with 250, measured;
        # this runs every ``refresh_s`` at rest). Equal bit for bit
        # (tests/test_baseline.py); a NaN, which np.median propagates and a
        # sort would not, takes np.median's path.
        data = self.data.copy()
        if np.isnan(data).any():
            self.median = np.median(data, axis=1)
            mad = 1.4826 * np.median(np.abs(data - self.median[:, None]), axis=1)
        else:
            data.sort(axis=1)
            self.median = _middle(data)
            # |x - median| of a sorted row falls, then rises: its middle is
            # found in the two runs without sorting them (0.16 ms against
            # 0.7 ms for the merge sort it replaces, 100 features x 600
            # samples, measured)
            mad = 1.4826 * _middle_deviation(data, self.median)
        span = self._covered_s()
        w = self.config.prior_s
        shrunk = np.sqrt((span * mad**2 + w * priors**2) / max(span + w, 1e-9))
        self.scale = np.maximum(shrunk, floors)
        self.computed_at = t
        self.dirty = False


class SubjectBaseline:
    """The baseline of one subject. ``update`` once per frame, in order."""

    def __init__(self, subject_id: int = 0, config: BaselineConfig | None = None) -> None:
        self.subject_id = subject_id
        self.config = config or BaselineConfig()
        self._layout: _Layout | None = None
        self._stats: _RobustStats | None = None
        self._floors: np.ndarray | None = None
        self._priors: np.ndarray | None = None
        #: References taken again because most warm-up frames did not come
        #: near them (``BaselineConfig.retake_max_rise``), over this baseline's life.
        self.retakes = 0
        self.reset()

    def reset(self) -> None:
        """Start over (face lost for long, new subject)."""
        self._stats = None
        self._layout = None
        self._first_t: float | None = None
        self._settled = False
        self._start_t: float | None = None
        self._smooth: np.ndarray | None = None
        self._last_t: float | None = None
        self._dts: deque[float] = deque(maxlen=31)
        self._pending: deque[tuple[float, np.ndarray]] = deque()
        #: the reference frame's features at a (re)start (see ``min_samples``)
        self._ref_sample: tuple[float, np.ndarray] | None = None
        #: every warm-up frame's features (to judge the reference: ``retake_max_rise``)
        self._warm_frames: list[np.ndarray] = []
        self._judging = False
        self._judged_ref: np.ndarray | None = None
        self._retakes_in_row = 0
        self._poses: deque[tuple[float, np.ndarray]] = deque()
        self._gate_until = -math.inf
        self._slow_since: float | None = None
        self._blink_until = -math.inf
        self._gaze_until = -math.inf
        self._rebase_requested_at = -math.inf
        self._gaze_ref: np.ndarray | None = None
        self._gaze_since: float | None = None
        self._reference_t = -math.inf
        self._quiet_since: float | None = None
        self._lids_since: float | None = None
        #: the last motion regions seen and their feature columns (``_features``)
        self._motion_regions: tuple | None = None
        self._motion_cols = np.zeros(0)

    @property
    def sample_count(self) -> int:
        return len(self._stats) if self._stats is not None else 0

    def _ensure_layout(self, au: AUFrame) -> _Layout:
        if self._layout is None:
            aus = tuple(sorted(set(au.left) | set(au.right) | set(au.intensity)))
            self._layout = _Layout(aus)
            floors = np.empty(self._layout.size)
            priors = np.empty(self._layout.size)
            kinds = self._layout.floors_kind
            c = self.config
            for kind, floor, prior in ((0, c.motion_floor_iod, c.motion_prior_iod), (1, c.intensity_floor, c.intensity_prior),
                                       (2, c.gaze_floor, c.gaze_prior)):
                floors[kinds == kind] = floor
                priors[kinds == kind] = prior
            self._floors = floors
            self._priors = priors
            self._stats = _RobustStats(self._layout.size, self.config)
        return self._layout

    # -- features
    def _features(self, motion: MotionFrame, au: AUFrame, face: Face | None, lay: _Layout) -> np.ndarray:
        x = np.zeros(lay.size)
        if motion.regions is not self._motion_regions:
            # a frame the activity gate let wait carries the last flowed
            # frame's regions (the same tuple): their columns are computed
            # once (the tuple is held, so ``is`` cannot match a new one)
            arr = motion.as_array()
            cols = np.empty(lay.int_start)
            cols[0 : 2 * lay.n_regions] = arr[:, :2].ravel()
            cols[lay.proj_start : lay.int_start] = (arr[lay.dir_region, :2] * lay.dir_vec).sum(axis=1)
            self._motion_regions, self._motion_cols = motion.regions, cols
        x[0 : lay.int_start] = self._motion_cols
        both, left, right = au.intensity, au.left, au.right
        sided: list[float] = []
        for a in lay.intensity_aus:
            b = both.get(a, 0.0)
            sided += (left.get(a, b), right.get(a, b))
        x[lay.int_start:lay.gaze_start] = sided
        if face is not None:
            iris = _iris_positions(np.asarray(face.landmarks))
            if self._gaze_ref is None:
                self._gaze_ref = iris
            x[lay.gaze_start : lay.gaze_start + 4] = iris - self._gaze_ref
        return x

    def _reference_is_odd(self, lay: _Layout) -> bool:
        """At the end of a warm-up in which most frames did not come near the reference:
        True when the warm-up frames held still among themselves and showed
        no marked expression the reference lacked — the reference, not the
        face, is the odd one (``BaselineConfig.retake_max_rise``). A face
        that moved into an expression after a good reference either keeps
        moving (a rise) or shows the expression to the estimator (a held
        smile rises ≈ 0.9), and keeps its reference."""
        c = self.config
        frames = self._warm_frames
        if self._judged_ref is None or len(frames) < 2 or self._retakes_in_row >= c.max_retakes:
            return False
        n = lay.n_regions
        motion = np.stack([x[0:2 * n] for x in frames])
        centre = np.median(motion, axis=0)
        spread = np.hypot(*(motion - centre).reshape(len(frames), n, 2).transpose(2, 0, 1)) / c.motion_prior_iod
        still = float(np.mean(np.max(spread, axis=1) < c.warmup_max_z))
        ref = self._judged_ref
        expressive = [k for k, a in enumerate(lay.intensity_aus) if a not in _NOT_EXPRESSION]
        cols = np.array([lay.int_start + 2 * k + side for k in expressive for side in (0, 1)], dtype=int)
        rise = float(np.median([np.max(x[cols] - ref[cols], initial=0.0) for x in frames])) if len(cols) else 0.0
        return still >= 0.5 and rise < c.retake_max_rise

    def _retake(self, motion: MotionFrame, t: float) -> Evidence:
        """Drop an odd reference: ask for a new one and restart the warm-up from it."""
        self.retakes += 1
        self._retakes_in_row += 1
        log.info("subject %d: most warm-up frames did not come near the motion reference taken at %.2f s while "
                 "the face held still: it was not the resting face; taking a new one (%d in a row)", self.subject_id,
                 self._reference_t, self._retakes_in_row)
        assert self._layout is not None
        self._stats = _RobustStats(self._layout.size, self.config)
        self._ref_sample = None
        self._warm_frames = []
        self._start_t = None
        self._smooth = None
        self._pending.clear()
        self._rebase_requested_at = t
        return Evidence(self.subject_id, motion.frame_index, t, True, False, False, 0.0, 0.0, rebase=True)

    def skull_pose(self, pose: HeadPose | None, motion: MotionFrame) -> HeadPose | None:
        """The tracker's pose with its pitch replaced by the one the pixels
        show (``expression_pitch_deg``): the head's own rotation, not the
        mesh's response to a smile or a brow raise. Yaw and roll stay the
        tracker's (expressions moved them by at most 1°, measured)."""
        ref = motion.reference_pose
        if pose is None or ref is None or not motion.valid:
            return pose
        tracked = pose.pitch - ref.pitch
        seen = motion.parallax_deg[0]
        excess = max(abs(tracked) - self.config.expression_pitch_deg, 0.0)
        delta = seen if abs(seen) >= excess else math.copysign(excess, tracked)
        return replace(pose, pitch=ref.pitch + delta)

    def _head(self, t: float, pose: HeadPose | None, ref_pose: HeadPose | None) -> tuple[float, float]:
        """(angular speed °/s over the span, out-of-plane drift from the
        reference pose in yaw-equivalent degrees). Roll is left out of the
        drift: the alignment removes in-plane rotation."""
        vec = _pose_vec(pose)
        if vec is None:
            return 0.0, 0.0
        self._poses.append((t, vec))
        span = self.config.head_speed_span_s
        while len(self._poses) > 2 and t - self._poses[1][0] >= span:
            self._poses.popleft()
        t0, v0 = self._poses[0]
        speed = float(np.linalg.norm(vec - v0) / max(t - t0, span)) if t > t0 else 0.0
        ref = _pose_vec(ref_pose)
        if ref is None:
            return speed, 0.0
        # drift in units of the yaw threshold: pitch counts with its wider margin
        c = self.config
        pitch, yaw = abs(vec[0] - ref[0]), abs(vec[1] - ref[1])
        drift = max(yaw, pitch * c.rebase_pose_deg / c.rebase_pitch_deg)
        return speed, float(drift)

    def update(self, motion: MotionFrame, au: AUFrame, face: Face | None, *, busy: bool = False) -> Evidence:
        """Evidence for this frame. ``busy``: the spotter has an episode open
        (the frame must not be learned as neutral)."""
        c = self.config
        t = motion.timestamp
        if not au.face_found or face is None or not motion.regions:
            self._smooth = None
            self._pending.clear()
            return Evidence(self.subject_id, motion.frame_index, t, False, False, False, 0.0, 0.0)
        lay = self._ensure_layout(au)
        assert self._stats is not None and self._floors is not None
        if self._first_t is None:
            self._first_t = t
        if not self._settled:
            # MediaPipe's mesh converges over the first ~0.2 s of a new face
            # (measured: 1-2 degrees of pose creep): take the reference after.
            self._settled = t - self._first_t >= c.track_settle_s
            if not (self._settled and motion.rebased):
                return Evidence(self.subject_id, motion.frame_index, t, True, False, False, 0.0, 0.0, rebase=self._settled)
            # settled on the frame the reference was just taken from (no
            # settling time: a subject starting over from a face at rest):
            # that frame is the reference. Asking for another took the next
            # frame instead, 0.17 s later at 6 fps, with a smile under way.
        if motion.rebased:
            # the reference frame itself: zero flow by construction, not a
            # sample; gaze is measured from here on, like the motion
            self._smooth = None
            self._pending.clear()
            self._gaze_ref = _iris_positions(np.asarray(face.landmarks))
            self._gaze_since = None
            self._stats.recentre(lay.relative_cols)
            self._reference_t = t
            if self._start_t is None:
                self._start_t = t
            if not len(self._stats):
                # a (re)start: the reference is the resting face; kept as the
                # neutral sample of last resort (at 6 fps it may be the only
                # one before a movement begins)
                self._ref_sample = (t, self._features(motion, au, face, lay))
                self._judged_ref = self._ref_sample[1]
                self._warm_frames = []
                self._judging = True
            return Evidence(self.subject_id, motion.frame_index, t, True, False, False, 0.0, 0.0)
        if self._start_t is None:
            self._start_t = t
        raw = self._features(motion, au, face, lay)
        # causal smoothing with a time constant in seconds
        if self._smooth is None or self._last_t is None:
            self._smooth = raw.copy()
        else:
            dt = max(t - self._last_t, 1e-6)
            self._dts.append(dt)
            # the standard library's median: np.median on a 31-long deque cost
            # more than the rest of this method at rest (measured, cProfile)
            self._stats.frame_dt = float(statistics.median(self._dts))
            alpha = 1.0 - math.exp(-dt / c.smooth_s)
            self._smooth += alpha * (raw - self._smooth)
        self._last_t = t
        smooth = self._smooth

        pose = self.skull_pose(au.pose or face.pose, motion)
        speed, drift = self._head(t, pose, motion.reference_pose)
        if speed > c.head_speed_dps:
            self._gate_until = t + c.gate_hold_s
        if speed > c.settle_speed_dps:
            self._slow_since = None
        elif self._slow_since is None:
            self._slow_since = t
        stale = drift > c.rebase_pose_deg
        gated = t <= self._gate_until or stale

        warm = (t - self._start_t) < c.warmup_s
        if warm and self._judging:
            self._warm_frames.append(raw.copy())
        elif self._judging:
            # the warm-up is over: were its frames like the reference? (the
            # statistics hold the warm-up's admitted frames only)
            self._judging = False
            if len(self._stats) < 0.5 * len(self._warm_frames) and self._reference_is_odd(lay):
                return self._retake(motion, t)
            self._retakes_in_row = 0
            self._warm_frames = []
        if not warm and not len(self._stats) and self._ref_sample is not None:
            self._stats.add(*self._ref_sample)
        self._ref_sample = None if len(self._stats) else self._ref_sample
        stats_ready = len(self._stats) >= c.min_samples or (not warm and len(self._stats) >= 1)
        if stats_ready:
            self._stats.refresh(t, self._priors, self._floors, force=len(self._stats) < 4 * c.min_samples)
        ready = stats_ready and not warm
        z_raw = (raw - self._stats.median) / self._stats.scale if stats_ready else np.zeros(lay.size)
        z = (smooth - self._stats.median) / self._stats.scale if stats_ready else np.zeros(lay.size)

        n = lay.n_regions
        zr = np.hypot(z[0:2 * n:2], z[1:2 * n:2])
        zr_raw = np.hypot(z_raw[0:2 * n:2], z_raw[1:2 * n:2])

        # per-AU evidence from motion: each region's movement goes to the AU
        # whose pull it matches best (and only if it matches well enough)
        disp = (smooth[0:2 * n] - self._stats.median[0:2 * n]).reshape(n, 2) if stats_ready else np.zeros((n, 2))
        au_left: dict[AU, float] = {}
        au_right: dict[AU, float] = {}
        amount: dict[AU, float] = {}
        # numpy once per frame, then plain floats: a numpy call per direction
        # and per AU cost most of this method at rest (0.2 ms a frame). The
        # same values: np.hypot of the rows is the same libm hypot, and the
        # batched matmul the same 2-term dot as one ``@`` per row (checked
        # bit for bit, tests/test_baseline.py)
        proj_z = z[lay.proj_start:lay.int_start].tolist()
        norms = np.hypot(disp[:, 0], disp[:, 1]).tolist()
        dots = np.matmul(disp[lay.dir_region][:, None, :], lay.dir_col)[:, 0, 0].tolist()
        best: dict[int, tuple[float, int]] = {}
        min_cos = c.direction_min_cos
        for k, ri in enumerate(lay.dir_region_list):
            norm = norms[ri]
            cos = dots[k] / norm if norm > 0 else 0.0
            if cos >= min_cos and (ri not in best or cos > best[ri][0]):
                best[ri] = (cos, k)
        for _cos, k in best.values():
            a = lay.dir_au[k]
            val = max(0.0, proj_z[k])
            if lay.dir_to_left[k]:
                au_left[a] = max(au_left.get(a, 0.0), val)
            if lay.dir_to_right[k]:
                au_right[a] = max(au_right.get(a, 0.0), val)
            amount[a] = max(amount.get(a, 0.0), max(0.0, dots[k]))

        motion_left, motion_right = dict(au_left), dict(au_right)
        # estimator intensities as evidence too (strong expressions)
        int_left: dict[AU, float] = {}
        int_right: dict[AU, float] = {}
        rise_left: dict[AU, float] = {}
        rise_right: dict[AU, float] = {}
        int_both: dict[AU, float] = dict(au.intensity)
        i0, i1 = lay.int_start, lay.gaze_start
        raw_i = raw[i0:i1].tolist()
        med_i = self._stats.median[i0:i1].tolist() if stats_ready else []
        z_i = z[i0:i1].tolist() if stats_ready else []
        aus = lay.intensity_aus
        int_left.update(zip(aus, raw_i[0::2]))
        int_right.update(zip(aus, raw_i[1::2]))
        if stats_ready:
            for a, lv, rv, ml, mr, zl, zr_ in zip(aus, raw_i[0::2], raw_i[1::2], med_i[0::2], med_i[1::2], z_i[0::2],
                                                 z_i[1::2]):
                rise_left[a] = max(0.0, lv - ml)
                rise_right[a] = max(0.0, rv - mr)
                au_left[a] = max(au_left.get(a, 0.0), zl, 0.0)
                au_right[a] = max(au_right.get(a, 0.0), zr_, 0.0)
        au_both = {a: max(au_left.get(a, 0.0), au_right.get(a, 0.0)) for a in set(au_left) | set(au_right)}

        # blink / gaze flags
        # A blink drops the upper lid far more than the brow above it; a
        # frown (AU4) drags the lid region down too, but less than the brow
        # (measured: blink lid -8 / brow -0.6 mIOD; AU4 lid -10 / brow -19).
        blink_motion = 0.0
        for side_map, lid, brow in ((au_left, Region.UPPER_LID_L, Region.BROW_INNER_L),
                                    (au_right, Region.UPPER_LID_R, Region.BROW_INNER_R)):
            lid_down = -float(disp[lay.region_index[lid], 1])
            brow_down = -float(disp[lay.region_index[brow], 1])
            if lid_down > c.blink_lid_over_brow * max(brow_down, 0.0):
                blink_motion = max(blink_motion, side_map.get(AU.BLINK, 0.0))
        blink_int = 0.0
        if stats_ready:
            # the estimator's intensities are finite (clamped to 0..1), so
            # Python's max of the two sides is numpy's
            for k in lay.blink_ks:
                blink_int = max(blink_int, raw_i[2 * k] - med_i[2 * k], raw_i[2 * k + 1] - med_i[2 * k + 1])
        if ready and (blink_motion >= c.blink_z or blink_int >= c.blink_intensity):
            self._blink_until = t + c.flag_hold_s
        gaze_z = float(np.max(np.abs(z[lay.gaze_start:]))) if stats_ready else 0.0
        if ready and gaze_z >= c.gaze_z:
            self._gaze_until = t + c.flag_hold_s
        blink = t <= self._blink_until
        gaze = t <= self._gaze_until
        if gaze_z >= c.gaze_z:
            self._gaze_since = t if self._gaze_since is None else self._gaze_since
        else:
            self._gaze_since = None

        # Lid regions never open an episode: blinks (15-20 a minute) and gaze
        # shifts move them far more often than any expression does, and a
        # gaze that stays elsewhere displaces them for good. They still
        # name AU5/AU7 once another region has opened the episode.
        # (while blinking: a blink's squeeze reaches the brows' lower edge,
        # orbicularis)
        counts = lay.counts_blink if blink else lay.counts
        zr_counted = float(zr[counts].max())
        zr_top = float(zr.max())
        usable = ready and not gated
        activity = zr_counted if usable else 0.0
        activity_raw = float(zr_raw[counts].max()) if usable else 0.0

        # neutral bookkeeping (delayed commit; dropped when an episode opens)
        if warm or not stats_ready:
            moved = np.hypot(raw[0:2 * n:2], raw[1:2 * n:2]) / c.motion_prior_iod
            at_rest = float(np.max(moved)) < c.warmup_max_z
        else:
            at_rest = zr_top < c.neutral_max_z
        neutral_now = not busy and not gated and at_rest
        if busy:
            self._pending.clear()
        elif neutral_now:
            self._pending.append((t, smooth.copy()))
        commit_delay = 0.0 if (warm or not stats_ready) else c.commit_delay_s
        while self._pending and t - self._pending[0][0] >= commit_delay:
            self._stats.add(*self._pending.popleft())

        # new reference when the head settled in another pose
        rebase = False
        quiet_elsewhere = ready and max(zr_counted, 0.0) < c.neutral_max_z
        if ready and not gated and not busy and not blink and not gaze and zr_top < c.neutral_max_z:
            self._quiet_since = t if self._quiet_since is None else self._quiet_since
        else:
            self._quiet_since = None
        lids_displaced = ready and not gated and not busy and not blink and quiet_elsewhere and float(
            np.max(zr[~counts])) >= c.neutral_max_z
        if lids_displaced:
            self._lids_since = t if self._lids_since is None else self._lids_since
        else:
            self._lids_since = None
        if (not busy and stale and t > self._gate_until and self._slow_since is not None
                and t - self._slow_since >= c.settle_s and t - self._rebase_requested_at > c.settle_s):
            rebase = True
            log.debug("subject %d: pose drifted %.1f° from the reference, rebasing", self.subject_id, drift)
        elif (not busy and not gated and self._gaze_since is not None and t - self._gaze_since >= c.settle_s
                and quiet_elsewhere and t - self._rebase_requested_at > c.settle_s):
            # the eyes stay on a new target: the lids and eye regions moved
            # with them, and the reference must follow (lids are out of the
            # activity meanwhile)
            rebase = True
            log.debug("subject %d: gaze settled elsewhere, rebasing", self.subject_id)
        elif self._lids_since is not None and t - self._lids_since >= c.lid_settle_s and t - self._rebase_requested_at > c.settle_s:
            # the lids stay displaced while the face is otherwise quiet: the
            # eyes rest on another target (or the lids on another level)
            rebase = True
            log.debug("subject %d: lids displaced for %.1f s, rebasing", self.subject_id, t - self._lids_since)
        elif (not busy and not gated and self._quiet_since is not None and t - self._quiet_since >= c.quiet_for_refresh_s
                and t - self._reference_t >= c.reference_max_age_s and t - self._rebase_requested_at > c.settle_s):
            # an old reference drifts away from the face (posture, light):
            # renew it at a quiet moment
            rebase = True
            log.debug("subject %d: reference %.0f s old, renewing it", self.subject_id, t - self._reference_t)
        if rebase:
            self._rebase_requested_at = t

        return Evidence(
            subject_id=self.subject_id,
            frame_index=motion.frame_index,
            timestamp=t,
            face_found=True,
            ready=ready,
            gated=gated,
            activity=activity,
            activity_raw=activity_raw,
            region_z=MappingProxyType(dict(zip(REGIONS, zr.tolist()))) if stats_ready else _EMPTY,
            region_z_raw=MappingProxyType(dict(zip(REGIONS, zr_raw.tolist()))) if stats_ready else _EMPTY,
            au_z=MappingProxyType(au_both),
            au_z_left=MappingProxyType(au_left),
            au_z_right=MappingProxyType(au_right),
            motion_z_left=MappingProxyType(motion_left),
            motion_z_right=MappingProxyType(motion_right),
            motion_amount=MappingProxyType(amount),
            intensity=MappingProxyType(int_both),
            intensity_left=MappingProxyType(int_left),
            intensity_right=MappingProxyType(int_right),
            rise_left=MappingProxyType(rise_left),
            rise_right=MappingProxyType(rise_right),
            blink=blink,
            gaze=gaze,
            head_speed_dps=speed,
            pose_drift_deg=drift,
            pose=pose,
            neutral=neutral_now,
            rebase=rebase,
        )


def _iris_positions(pts: np.ndarray) -> np.ndarray:
    """Iris centre of each eye relative to the eye's corners: (x, y) as a
    fraction of the eye's width, right eye then left eye."""
    if len(pts) < 478:
        return np.zeros(4)
    out = []
    for iris, (a, b) in ((mesh.RIGHT_IRIS, (mesh.RIGHT_EYE_OUTER, mesh.RIGHT_EYE_INNER)),
                         (mesh.LEFT_IRIS, (mesh.LEFT_EYE_INNER, mesh.LEFT_EYE_OUTER))):
        pa, pb = pts[a, :2], pts[b, :2]
        axis = pb - pa
        width = float(np.hypot(*axis)) or 1.0
        ux = axis / width
        uy = np.array([-ux[1], ux[0]])
        rel = pts[iris[0], :2] - (pa + pb) / 2.0
        out += [float(rel @ ux) / width, float(rel @ uy) / width]
    return np.array(out)

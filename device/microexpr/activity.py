"""Compute follows activity: when the dense ROI flow runs.

The ROI optical flow (``motion.py``) is the costliest stage after the
tracker (2.5 ms p50 of a 9.8 ms frame on the 2-core x86 bench) and a face at
rest is most of an appliance's day. This module decides, per frame, whether
the flow runs now, later (the frame waits in the pipeline's ring buffer and
is flowed when the next flowed frame shows a movement began), or not at all
(the last flowed result is carried to it). It never changes what the flow,
the baseline or the spotter compute from a flowed frame.

The detector is cheap and always on: the face is mapped (a robust
similarity on landmarks no action moves, as the motion crop) into a coarse
grey crop (``crop_iod_px`` between the outer eye corners, averaged down with
``INTER_AREA``) and compared, cell by cell (``cell_px`` cells,
mean-normalised), with the coarse crop of the last frame on which the flow
ran, so a slow onset accumulates instead of hiding under a per-frame
threshold. Each cell's difference is scored against that cell's own noise:
a running mean and mean absolute deviation of its difference at rest
(learnt on the baseline's warm-up, then followed with a ``noise_tau_s`` time
constant on quiet frames). Codec noise and the face's own small motion are
not spread evenly: the eyes, the hairline and the mouth's edges flicker
through MJPEG/MPEG-4 several times more than the cheeks (measured,
docs/benchmarks.md), so one global threshold on the largest cell fired on
most resting frames. The frame's *change* is the largest per-cell score.

Policy (in order; the first that holds runs the flow now):

1. no motion reference yet, or a new one asked for (the analyser must see
   the frame);
2. the baseline has not given evidence yet (its resting statistics are
   learnt on real samples only);
3. the spotter is not at rest (an episode is open, held or not re-armed);
4. the change is at least ``change_z`` (a sign of movement): full rate from
   this frame on, for ``hold_s`` after the last such frame, and the frames
   waiting since the last flowed frame are flowed too (``backfill``);
5. ``idle_stride`` frames, or ``idle_max_gap_s``, since the flow last ran
   (the reduced rate at rest; up to ``quiet_stride`` while the face stays
   quiet); the waiting frames are flowed too when the change reached
   ``backfill_z`` (a movement under way but still small).

Otherwise the frame waits (``SKIPPED``): the pipeline analyses it when the
next flowed frame comes, with its own flow (backfill) or with the last
flowed result carried to it (the face changed less than the detector can
tell from noise since then). Skips and backfills are counted (``skipped``,
``backfilled``) for the daemon's stats and the benchmark's share of frames
with flow.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from microexpr import mesh
from microexpr.motion import REGIONS, _similarity, region_points

log = logging.getLogger(__name__)

#: Skipped frames are summarised in one INFO line per this many seconds.
LOG_INTERVAL_S = 60.0
#: At most this many warm-up frames' cell differences are kept (the last ones).
WARM_SAMPLES = 300
#: The stable points as an index array, built once (a list of 25 ints was
#: converted on every frame).
_STABLE = np.array(mesh.STABLE_POINTS, dtype=np.intp)
_EYE4 = np.eye(4)


class FlowReason(StrEnum):
    """Why the flow ran (or ``SKIPPED``) on a frame."""

    REFERENCE = "reference"
    WARMUP = "warmup"
    EPISODE = "episode"
    CHANGE = "change"
    HOLD = "hold"
    STRIDE = "stride"
    DISABLED = "disabled"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class ActivityConfig:
    """Gate settings. ``idle_stride`` 1 (or ``enabled`` False) runs the flow
    on every frame, as before the gate existed."""

    enabled: bool = True
    #: At rest the flow runs on one frame in ``idle_stride``, and never more
    #: than ``idle_max_gap_s`` after the last flowed frame: at 30 fps and
    #: above the stride decides (every 0.1 s or sooner); below, the gate
    #: skips less, and at 10 fps or less not at all (a 6 fps stream with a
    #: flow every 0.5 s changed what was spotted; measured, docs/benchmarks.md).
    idle_stride: int = 3
    idle_max_gap_s: float = 0.1
    #: While the face stays quiet (no stride frame showing even a small
    #: movement, ``backfill_z``), the stride grows by one frame each time up
    #: to ``quiet_stride`` (its gap in proportion), at 30 fps and above only;
    #: the first stirring brings it back to ``idle_stride``. A still face
    #: then costs a flow every 0.33 s; a face that sways keeps 0.1 s. The
    #: gate, not the stride, is what finds a movement: with no stride flow
    #: at all every episode of the quick spotting benchmark came out the same
    #: (onset, apex, offset, label); 10 (was 6) keeps a flowed frame inside
    #: every micro-expression longer than 1/3 s all the same, and took the
    #: still face from 1.17x to 1.13x the bare tracker's CPU (measured,
    #: docs/benchmarks.md "A longer quiet stride").
    quiet_stride: int = 10
    #: Full rate for this long after the last frame with a sign of movement
    #: (the frames skipped before it are flowed too: the ring buffer).
    hold_s: float = 0.1
    #: A sign of movement: some cell's difference from the last flowed frame
    #: at least ``change_z`` of its own noise units above its resting mean
    #: (units: the cell's mean absolute deviation at rest). ``backfill_z``:
    #: at a stride frame, the waiting frames get their own flow from this
    #: level on.
    change_z: float = 8.0
    backfill_z: float = 6.0
    #: Each cell's resting statistics follow quiet frames with this time
    #: constant (light and codec drift), never faster; ``noise_floor`` (grey
    #: levels) keeps a noiseless synthetic picture from dividing by zero.
    noise_tau_s: float = 5.0
    noise_floor: float = 0.25
    #: Coarse crop: this fraction of the motion crop's 64-px IOD, in cells
    #: of ``cell_px`` coarse pixels.
    crop_iod_px: float = 16.0
    cell_px: int = 3
    #: Cells count when within this radius (IOD) of a flow region's
    #: landmarks (``motion.MotionConfig.region_radius_iod``).
    region_radius_iod: float = 0.14
    #: Remove the small similarity between the crops before differencing.
    align: bool = True
    half_width_iod: float = 1.15
    above_iod: float = 0.85
    below_iod: float = 1.75


@dataclass(frozen=True, slots=True)
class FlowDecision:
    """``run``: flow this frame now. ``backfill``: flow the frames waiting
    since the last flowed one too (else they carry its result)."""

    run: bool
    reason: FlowReason
    change: float
    backfill: bool = False


class ActivityGate:
    """Per-subject decision whether the dense flow runs on this frame."""

    def __init__(self, config: ActivityConfig | None = None) -> None:
        self.config = config or ActivityConfig()
        c = self.config
        self._size = (int(round(2 * c.half_width_iod * c.crop_iod_px)),
                      int(round((c.above_iod + c.below_iod) * c.crop_iod_px)))
        self._last: np.ndarray | None = None
        self._template: np.ndarray | None = None
        #: the template's centroid and centred points (complex), as ``_similarity`` computes them
        self._template_centred: tuple[np.ndarray, np.ndarray] | None = None
        self._mask: np.ndarray | None = None
        #: flat indices of the region cells (``_mask``), for ``take``
        self._mask_flat: np.ndarray | None = None
        self._basis: tuple[np.ndarray, np.ndarray] | None = None
        #: the crop's pixel coordinates about its centre (x, y), which every basis uses
        self._grid: tuple[np.ndarray, np.ndarray] | None = None
        #: the last (dt, alpha) of ``_learn`` (the frame interval rarely changes)
        self._alpha: tuple[float, float] = (float("nan"), 0.0)
        self._since_flow = 0
        self._stride = self.config.idle_stride
        self._last_flow_ts = -np.inf
        self._last_ts = -np.inf
        self._hot_until = -np.inf
        #: warm-up samples, bounded (a warm-up that never ends must not grow it)
        self._warm: deque[np.ndarray] = deque(maxlen=WARM_SAMPLES)
        #: per-cell resting mean and mean absolute deviation of the difference
        self._mean: np.ndarray | None = None
        self._dev: np.ndarray | None = None
        self.ran = 0
        self.skipped = 0
        self.backfilled = 0
        self._log_from = -np.inf
        self._log_counts = (0, 0, 0)

    @property
    def learnt(self) -> bool:
        """The cells' resting noise is known (after the warm-up)."""
        return self._mean is not None

    def reset(self) -> None:
        self._last = None
        self._template = None
        self._template_centred = None
        self._mask = self._mask_flat = None
        self._last_flow_ts = -np.inf
        self._last_ts = -np.inf
        self._warm.clear()
        self._mean = self._dev = None
        self._since_flow = 0
        self._stride = self.config.idle_stride
        self._hot_until = -np.inf

    def _coarse(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The face in the coarse crop, aligned like the motion crop: a
        similarity on the outer eye corners for the first frame, then a
        least-squares fit of the stable points (which no facial action
        moves much) onto where they were then. Not the motion crop's robust
        refit: what jitter is left, ``_unjitter`` takes out of the
        difference."""
        up = 2  # warp at 2x the coarse size, then average down (INTER_AREA)
        stable = landmarks[_STABLE, :2]
        if self._template is None:
            a = self._take_template(landmarks, stable, up)
        elif stable.dtype == np.float64 and self._template_centred is not None:
            a = _similarity_to(stable, *self._template_centred)
        else:
            a = _similarity(stable, self._template)
        big = cv2.warpAffine(image, a, (up * self._size[0], up * self._size[1]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        if big.ndim == 3:  # grey levels of the small crop only, not of the whole frame
            big = cv2.cvtColor(big, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(big, self._size, interpolation=cv2.INTER_AREA)
        return _mean_removed(small)

    def _take_template(self, landmarks: np.ndarray, stable: np.ndarray, up: int) -> np.ndarray:
        """The first frame's mapping into the coarse crop (at ``up`` times
        its size): a similarity on the outer eye corners. Keeps where the
        stable points land (the template later frames are fitted to) and
        the cells the flow's regions cover."""
        c = self.config
        right, left = landmarks[mesh.RIGHT_EYE_OUTER, :2], landmarks[mesh.LEFT_EYE_OUTER, :2]
        centre = (right + left) / 2.0
        d = left - right
        scale = up * c.crop_iod_px / max(float(np.hypot(*d)), 1e-6)
        ang = -np.arctan2(d[1], d[0])
        ca, sa = np.cos(ang) * scale, np.sin(ang) * scale
        a = np.array([[ca, -sa, 0.0], [sa, ca, 0.0]])
        target = np.array([up * self._size[0] / 2.0, up * c.above_iod * c.crop_iod_px])
        a[:, 2] = target - a[:, :2] @ centre
        self._template = stable @ a[:, :2].T + a[:, 2]
        self._template_centred = _centred(self._template)
        self._mask = self._region_cells(landmarks[:, :2] @ a[:, :2].T / up + a[:, 2] / up)
        self._mask_flat = np.flatnonzero(self._mask)
        return a

    def _region_cells(self, pts: np.ndarray) -> np.ndarray:
        """The cells the flow's regions cover (discs of ``region_radius_iod``
        around their landmarks, ``pts`` in coarse-crop pixels), plus the
        cells they touch. The face's outline, the hairline and the
        background beside the face are left out: head sway moves them
        against the stable points (parallax) far more than any action moves
        a region (measured on the real clip's resting frames: they were the
        largest cells 3 times in 4), and the flow's regions never see them."""
        c = self.config
        k = c.cell_px
        h, w = self._size[1] // k, self._size[0] // k
        cy, cx = (np.mgrid[0:h, 0:w] + 0.5) * k
        reach = (c.region_radius_iod * c.crop_iod_px + k / np.sqrt(2.0)) ** 2
        mask = np.zeros((h, w), bool)
        for region in REGIONS:
            for i in region_points(region):
                mask |= (cx - pts[i, 0]) ** 2 + (cy - pts[i, 1]) ** 2 <= reach
        return mask

    def _cells(self, coarse: np.ndarray) -> np.ndarray | None:
        """Per-cell mean |Δgrey| against the last flowed frame."""
        if self._last is None:
            return None
        diff = coarse - self._last
        if self.config.align:
            diff = self._unjitter(diff)
        cells = _cell_means(np.abs(diff, out=diff), self.config.cell_px)
        return cells.take(self._mask_flat) if self._mask_flat is not None else cells.ravel()

    def _unjitter(self, diff: np.ndarray) -> np.ndarray:
        """The difference without the small similarity (shift, rotation,
        scale) that best explains it: one Gauss-Newton step on the last
        flowed crop's gradients. The tracker's landmarks jitter by a
        fraction of a pixel from frame to frame; aligned on them, the whole
        crop moves by ~0.1 coarse pixel, which on the edges of brows, lids
        and lips (20-30 grey levels a pixel) reads as a change there. The
        flow removes the same residual by its own rigid fit."""
        if self._basis is None:
            assert self._last is not None
            last = self._last
            # scale 1/8 in the filter: a power of two, so the same numbers as dividing after
            gx = cv2.Sobel(last, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
            gy = cv2.Sobel(last, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
            if self._grid is None or self._grid[0].shape != last.shape:
                h, w = last.shape
                yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
                xx -= w / 2.0
                yy -= h / 2.0
                self._grid = (xx, yy)
            xx, yy = self._grid
            basis = np.empty((gx.size, 4), np.float32)
            basis[:, 0] = gx.ravel()
            basis[:, 1] = gy.ravel()
            basis[:, 2] = (xx * gx + yy * gy).ravel()
            basis[:, 3] = (xx * gy - yy * gx).ravel()
            # least squares by the 4x4 normal equations (an SVD pseudo-inverse
            # of the 1554x4 basis cost 0.3 ms a flowed frame); the small ridge
            # keeps a flat (textureless) crop solvable
            columns = basis.T.astype(np.float64)
            normal = columns @ basis
            normal += _EYE4 * (1e-6 * float(np.trace(normal)) + 1e-9)
            self._basis = (basis, np.linalg.solve(normal, columns).astype(np.float32))
        b, pinv = self._basis
        d = diff.ravel()
        return (d - b @ (pinv @ d)).reshape(diff.shape)

    def _score(self, cells: np.ndarray | None) -> float:
        if cells is None:
            return float("inf")
        if self._mean is None or self._dev is None:
            return 0.0
        return float(np.maximum.reduce((cells - self._mean) / self._dev))  # .max() without its wrapper

    def _learn(self, cells: np.ndarray, dt: float) -> None:
        """Follow the cells' resting noise on a quiet frame; a difference
        counts at most ``backfill_z`` noise units above the mean, so a slow
        movement is not learnt as noise."""
        c = self.config
        assert self._mean is not None and self._dev is not None
        dt = max(dt, 0.0)
        if dt == self._alpha[0]:
            alpha = self._alpha[1]
        else:
            alpha = 1.0 - float(np.exp(-dt / c.noise_tau_s))
            self._alpha = (dt, alpha)
        # x = min(cells, mean + backfill_z * dev); mean += alpha * (x - mean);
        # dev += alpha * (|x - mean| - dev): the same operations, in two buffers
        x = np.multiply(self._dev, c.backfill_z)
        np.add(self._mean, x, out=x)
        np.minimum(cells, x, out=x)
        step = np.subtract(x, self._mean)
        step *= alpha
        self._mean += step
        np.subtract(x, self._mean, out=step)
        np.abs(step, out=step)
        step -= self._dev
        step *= alpha
        self._dev += step
        np.maximum(self._dev, c.noise_floor, out=self._dev)

    def decide(self, image: np.ndarray, landmarks: np.ndarray, timestamp: float, *,
               needs_reference: bool, warming_up: bool, episode: bool) -> FlowDecision:
        """Whether the flow runs on this frame (counted in ``ran``/``skipped``).
        ``image``: the frame, BGR or grey."""
        c = self.config
        coarse = self._coarse(image, landmarks)
        cells = self._cells(coarse)
        if warming_up:
            if cells is not None:
                self._warm.append(cells)
        elif self._mean is None and self._warm:
            warm = np.stack(self._warm)
            self._mean = np.median(warm, axis=0)
            self._dev = np.maximum(np.median(np.abs(warm - self._mean), axis=0), c.noise_floor)
            self._warm.clear()
            log.debug("activity gate: cells' resting difference median %.2f, deviation median %.2f",
                      float(np.median(self._mean)), float(np.median(self._dev)))
        change = self._score(cells)
        moving = change >= c.change_z
        stirring = change >= c.backfill_z
        reason = FlowReason.SKIPPED
        if not c.enabled or c.idle_stride <= 1:
            reason = FlowReason.DISABLED
        elif needs_reference:
            reason = FlowReason.REFERENCE
        elif warming_up or self._mean is None:
            reason = FlowReason.WARMUP
        elif episode:
            reason = FlowReason.EPISODE
        elif moving:
            reason = FlowReason.CHANGE
        elif timestamp < self._hot_until:
            reason = FlowReason.HOLD
        elif (self._since_flow + 1 >= self._stride
              or timestamp - self._last_flow_ts >= c.idle_max_gap_s * self._stride / c.idle_stride - 1e-6):
            reason = FlowReason.STRIDE
        fast = timestamp - self._last_ts <= 1.1 * c.idle_max_gap_s / c.idle_stride  # 30 fps or more
        if reason is FlowReason.STRIDE and not stirring and fast:
            self._stride = min(self._stride + 1, max(c.quiet_stride, c.idle_stride))
        elif reason is not FlowReason.SKIPPED or stirring or not fast:
            self._stride = c.idle_stride
        if moving:
            self._hot_until = timestamp + c.hold_s
        elif (cells is not None and self._mean is not None and not episode and not stirring
              and timestamp > self._hot_until):
            self._learn(cells, timestamp - self._last_ts)
        self._last_ts = timestamp
        run = reason is not FlowReason.SKIPPED
        backfill = run and self._since_flow > 0 and (moving or stirring or reason is not FlowReason.STRIDE)
        if run:
            self._last = coarse
            self._basis = None
            self.backfilled += self._since_flow if backfill else 0
            self._since_flow = 0
            self._last_flow_ts = timestamp
            self.ran += 1
        else:
            self._since_flow += 1
            self.skipped += 1
        self._log_rate(timestamp)
        return FlowDecision(run, reason, change, backfill)

    def _log_rate(self, timestamp: float) -> None:
        """One INFO line a minute (stream time) with the frames skipped in it."""
        if timestamp - self._log_from < LOG_INTERVAL_S:
            return
        ran0, skipped0, back0 = self._log_counts
        ran, skipped, back = self.ran - ran0, self.skipped - skipped0, self.backfilled - back0
        if skipped and np.isfinite(self._log_from):
            log.info("dense flow skipped on %d of %d frames in the last %.0f s (face at rest; %d of them flowed "
                     "later, when a movement began)", skipped, ran + skipped, timestamp - self._log_from, back)
        self._log_from = timestamp
        self._log_counts = (self.ran, self.skipped, self.backfilled)


def _centred(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centroid of (n, 2) float64 points and the points about it as
    complex numbers, as ``motion._similarity`` forms them (the same
    subtraction; x + iy by viewing the pairs as complex instead of
    building them by arithmetic, which only differs in the sign of a zero)."""
    mu = np.add.reduce(points, axis=0)  # points.mean(axis=0) without its Python wrapper: the
    np.true_divide(mu, np.intp(len(points)), out=mu, casting="unsafe")  # same sum, the same division
    return mu, (points - mu).view(np.complex128).ravel()


def _similarity_to(src: np.ndarray, mu_d: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``motion._similarity(src, dst)`` with ``dst`` already centred
    (``_centred``): the template does not change between frames, so its
    half of the fit is done once. The same operations in the same order,
    so the same 2x3 matrix bit for bit (tests/test_activity.py)."""
    mu_s, s = _centred(src)
    var = float(np.vdot(s, s).real)
    k = complex(np.vdot(s, d)) / var if var > 0 else 1.0 + 0j
    out = np.array([[k.real, -k.imag, 0.0], [k.imag, k.real, 0.0]])
    out[:, 2] = mu_d - out[:, :2] @ mu_s
    return out


def _mean_removed(small: np.ndarray) -> np.ndarray:
    """``small - small.mean()`` in float32, in one pass for an 8-bit crop.

    numpy's float32 mean of whole grey levels is exact (every partial sum
    is an integer below 2**24, so the summation order does not matter),
    then divided in float64 and rounded to float32; the integer sum from
    ``cv2.sumElems`` and the same division give the same number. Other
    inputs take numpy's own path."""
    if small.dtype == np.uint8 and small.size * 255 < 2**24:
        mean = np.float32(float(cv2.sumElems(small)[0]) / small.size)
        return np.subtract(small, mean, dtype=np.float32)
    grey = small.astype(np.float32)
    return grey - float(grey.mean())


def _cell_means(diff: np.ndarray, k: int) -> np.ndarray:
    """The mean of each k x k cell of ``diff`` (whole cells only), float32.

    The same numbers as ``diff[:hh, :ww].reshape(hh // k, k, ww // k, k)
    .mean(axis=(1, 3))``, at a third of its cost: numpy's reduction adds
    each cell's rows in turn, each row's k values summed on their own first
    (left to right, below 8 values), then divides the float32 sum in
    float64 by the count. Non-negative input (``diff`` is an absolute
    difference), so no sign of zero is at stake. Wider cells take numpy's
    own path (pairwise sums from 8 values on), and so does a grid one cell
    wide (numpy drops that axis and adds in another order; found by
    tests/test_activity.py)."""
    h, w = diff.shape
    hh, ww = h // k * k, w // k * k
    if not 2 <= k < 8 or ww < 2 * k:
        return diff[:hh, :ww].reshape(hh // k, k, ww // k, k).mean(axis=(1, 3))
    pixels = diff[:hh, :ww].reshape(hh, ww // k, k)
    rows = np.add(pixels[:, :, 0], pixels[:, :, 1])
    for j in range(2, k):
        rows += pixels[:, :, j]
    rows = rows.reshape(hh // k, k, ww // k)
    cells = np.add(rows[:, 0], rows[:, 1])
    for i in range(2, k):
        cells += rows[:, i]
    return np.true_divide(cells, np.intp(k * k), out=cells, casting="unsafe")

"""Compute follows activity: when the dense ROI flow runs.

The ROI optical flow (``motion.py``) is the costliest stage after the
tracker (2.5 ms p50 of a 9.8 ms frame on the 2-core x86 bench) and a face at
rest is most of an appliance's day. This module decides, per frame, whether
the flow runs; it never changes what the flow, the baseline or the spotter
compute.

The detector is cheap and always on: the face is mapped (a similarity on the
outer eye corners, as the motion crop) into a coarse grey crop
(``scale`` × the motion crop, averaged with ``INTER_AREA``) and compared,
cell by cell (``cell_px`` cells, mean-normalised), with the coarse crop of
the last frame on which the flow ran. The largest mean absolute difference
over the cells is the frame's *change*; skin moved by a facial action
changes a cell's shading long before it is a visible displacement, and the
comparison is against the last flowed frame, not the previous one, so a slow
onset accumulates instead of hiding under a per-frame threshold.

Policy (in order; the first that holds runs the flow):

1. no motion reference yet, or a new one asked for (the analyser must see
   the frame);
2. the baseline has not given evidence yet (its resting statistics are
   learnt on real samples only);
3. the spotter is not at rest (an episode is open, held or not re-armed);
4. the change is at least the subject's threshold (a sign of movement): full
   rate from this frame on, for ``hold_s`` after the last such frame;
5. ``idle_stride`` frames, or ``idle_max_gap_s``, since the flow last ran
   (the reduced rate at rest).

On a skipped frame the caller repeats the last flowed ``MotionFrame`` with
the new index and timestamp: the face did not change more than the
threshold since it. Skips are counted (``skipped``/``ran``) for the
daemon's stats and the benchmark's share of frames with flow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from microexpr import mesh
from microexpr.motion import _robust_similarity

log = logging.getLogger(__name__)

#: Skipped frames are summarised in one INFO line per this many seconds.
LOG_INTERVAL_S = 60.0


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
    #: Full rate for this long after the last frame with a sign of movement.
    hold_s: float = 0.3
    #: A sign of movement: the change (largest per-cell mean |Δgrey|, 0–255,
    #: mean-normalised) at least ``change_factor`` × the subject's own
    #: resting change (the median over its warm-up, when the flow runs on
    #: every frame anyway) and at least ``change_floor``. Relative, because
    #: sensor noise, codec and lighting set the resting level (measured ~2
    #: on the real mp4 clip, where a smile's onset reads 6–11).
    change_factor: float = 1.5
    change_floor: float = 0.5
    #: Coarse crop: this fraction of the motion crop's 64-px IOD, in cells
    #: of ``cell_px`` coarse pixels.
    crop_iod_px: float = 16.0
    cell_px: int = 3
    half_width_iod: float = 1.15
    above_iod: float = 0.85
    below_iod: float = 1.75


@dataclass(frozen=True, slots=True)
class FlowDecision:
    run: bool
    reason: FlowReason
    change: float


class ActivityGate:
    """Per-subject decision whether the dense flow runs on this frame."""

    def __init__(self, config: ActivityConfig | None = None) -> None:
        self.config = config or ActivityConfig()
        c = self.config
        self._size = (int(round(2 * c.half_width_iod * c.crop_iod_px)),
                      int(round((c.above_iod + c.below_iod) * c.crop_iod_px)))
        self._last: np.ndarray | None = None
        self._template: np.ndarray | None = None
        self._since_flow = 0
        self._last_flow_ts = -np.inf
        self._hot_until = -np.inf
        self._rest_changes: list[float] = []
        self.threshold = float("inf")  # learnt at the end of the warm-up
        self.ran = 0
        self.skipped = 0
        self._log_from = -np.inf
        self._log_counts = (0, 0)

    def reset(self) -> None:
        self._last = None
        self._template = None
        self._last_flow_ts = -np.inf
        self._rest_changes = []
        self.threshold = float("inf")
        self._since_flow = 0
        self._hot_until = -np.inf

    def _coarse(self, grey: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The face in the coarse crop, aligned like the motion crop: a
        similarity on the outer eye corners for the first frame, then a
        robust fit of the stable points (which no facial action moves much)
        onto where they were then, so landmark jitter does not read as
        change."""
        c = self.config
        up = 4  # warp at 4x the coarse size, then average down (INTER_AREA)
        stable = landmarks[list(mesh.STABLE_POINTS), :2]
        if self._template is None:
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
        else:
            a = _robust_similarity(stable, self._template)
        big = cv2.warpAffine(grey, a, (up * self._size[0], up * self._size[1]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        small = cv2.resize(big, self._size, interpolation=cv2.INTER_AREA).astype(np.float32)
        return small - float(small.mean())

    def _change(self, coarse: np.ndarray) -> float:
        if self._last is None:
            return float("inf")
        k = self.config.cell_px
        diff = cv2.absdiff(coarse, self._last)
        h, w = diff.shape
        hh, ww = h // k * k, w // k * k
        cells = diff[:hh, :ww].reshape(hh // k, k, ww // k, k).mean(axis=(1, 3))
        return float(cells.max())

    def decide(self, grey: np.ndarray, landmarks: np.ndarray, timestamp: float, *,
               needs_reference: bool, warming_up: bool, episode: bool) -> FlowDecision:
        """Whether the flow runs on this frame (counted in ``ran``/``skipped``)."""
        c = self.config
        coarse = self._coarse(grey, landmarks)
        change = self._change(coarse)
        if warming_up:
            if np.isfinite(change):
                self._rest_changes.append(change)
        elif not np.isfinite(self.threshold) and self._rest_changes:
            self.threshold = max(c.change_floor, c.change_factor * float(np.median(self._rest_changes)))
            log.debug("activity gate: resting change %.2f, threshold %.2f",
                      float(np.median(self._rest_changes)), self.threshold)
        moving = change >= self.threshold
        reason = FlowReason.SKIPPED
        if not c.enabled or c.idle_stride <= 1:
            reason = FlowReason.DISABLED
        elif needs_reference:
            reason = FlowReason.REFERENCE
        elif warming_up:
            reason = FlowReason.WARMUP
        elif episode:
            reason = FlowReason.EPISODE
        elif moving:
            reason = FlowReason.CHANGE
        elif timestamp < self._hot_until:
            reason = FlowReason.HOLD
        elif self._since_flow + 1 >= c.idle_stride or timestamp - self._last_flow_ts >= c.idle_max_gap_s - 1e-6:
            reason = FlowReason.STRIDE
        if moving:
            self._hot_until = timestamp + c.hold_s
        run = reason is not FlowReason.SKIPPED
        if run:
            self._last = coarse
            self._since_flow = 0
            self._last_flow_ts = timestamp
            self.ran += 1
        else:
            self._since_flow += 1
            self.skipped += 1
        self._log_rate(timestamp)
        return FlowDecision(run, reason, change)

    def _log_rate(self, timestamp: float) -> None:
        """One INFO line a minute (stream time) with the frames skipped in it."""
        if timestamp - self._log_from < LOG_INTERVAL_S:
            return
        ran0, skipped0 = self._log_counts
        ran, skipped = self.ran - ran0, self.skipped - skipped0
        if skipped and np.isfinite(self._log_from):
            log.info("dense flow skipped on %d of %d frames in the last %.0f s (face at rest; threshold %.2f)",
                     skipped, ran + skipped, timestamp - self._log_from, self.threshold)
        self._log_from = timestamp
        self._log_counts = (self.ran, self.skipped)

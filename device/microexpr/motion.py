"""Pixel motion in Action-Unit regions, relative to the subject's neutral face.

Why pixels and not blendshapes: the blendshape model has a dead zone (a
real smile at a third of its strength scores 0.00, DESIGN.md "Known limits"),
and micro-expressions are mostly that weak. Dense optical flow sees
sub-pixel skin movement, so spotting runs on it and blendshapes only name
the AUs afterwards.

Per frame:

1. **Rigid alignment.** A similarity transform fitted (robustly) on
   landmarks that no facial action moves much (inner eye corners, nasal
   root and bridge, forehead, temples, upper face oval) maps the
   face into a small canonical grey crop (``crop_iod_px`` pixels between the
   outer eye corners). In-plane head motion, scale and roll disappear; what
   remains is non-rigid (expressions) plus out-of-plane rotation (which the
   baseline gates on head-pose speed).
2. **Dense flow** (OpenCV DIS, fast preset tuned below) from a *reference
   crop* to the current crop. The reference is a neutral frame of the same
   subject: the flow is then the displacement from neutral, which rises at
   onset, peaks at apex and falls at offset — the shape the spotter needs,
   at any frame rate (a frame-to-frame flow would shrink with fps).
3. **Residual rigid motion**: the flow sampled at anchor points that
   expressions move least (nasal root and bridge, inner eye corners,
   temples) is the alignment's remaining error — the tracker's mesh lags a
   moving head by a frame or so, which as a 1° roll error would move the
   chin region by ~0.02 IOD. A similarity fitted (robustly) to those flows
   and to the 18 region means (trimmed: the few regions a muscle moves
   fall out; the whole face moving as one piece is never a muscle, but a
   codec snapping the mesh at a key frame is) is subtracted from the whole
   field.
4. **Region means**: mean (dx, dy) and mean magnitude of the flow over
   landmark-anchored regions (inner/outer brows, glabella, upper/lower lids,
   cheeks, nose wings, upper lip, mouth corners, lower lip, chin), in IOD
   units with face axes: ``dx`` positive away from the midline for lateral
   regions (toward the subject's left for midline ones), ``dy`` positive up.

The reference is renewed by the caller (``rebase``) when the face is
neutral and the baseline says so, or when the head settled in a new pose.
Costs a few milliseconds per frame (see benchmarks/results/spotting).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from microexpr import mesh
from microexpr.capture import Frame
from microexpr.facs import Side
from microexpr.tracking.base import Face, HeadPose

log = logging.getLogger(__name__)


class RegionGroup(StrEnum):
    """Coarse face areas; the spotter reasons on them (a blink moves only
    LIDS, a smile MOUTH and CHEEKS...)."""

    BROWS = "brows"
    LIDS = "lids"
    CHEEKS = "cheeks"
    NOSE = "nose"
    MOUTH = "mouth"
    CHIN = "chin"


class Region(StrEnum):
    """Motion regions. ``_L``/``_R`` are the subject's sides."""

    BROW_INNER_L = "brow_inner_l"
    BROW_INNER_R = "brow_inner_r"
    BROW_OUTER_L = "brow_outer_l"
    BROW_OUTER_R = "brow_outer_r"
    GLABELLA = "glabella"
    UPPER_LID_L = "upper_lid_l"
    UPPER_LID_R = "upper_lid_r"
    LOWER_LID_L = "lower_lid_l"
    LOWER_LID_R = "lower_lid_r"
    CHEEK_L = "cheek_l"
    CHEEK_R = "cheek_r"
    NOSE_L = "nose_l"
    NOSE_R = "nose_r"
    UPPER_LIP = "upper_lip"
    MOUTH_CORNER_L = "mouth_corner_l"
    MOUTH_CORNER_R = "mouth_corner_r"
    LOWER_LIP = "lower_lip"
    CHIN = "chin"

    @property
    def side(self) -> Side:
        if self.value.endswith("_l"):
            return Side.LEFT
        if self.value.endswith("_r"):
            return Side.RIGHT
        return Side.BOTH

    @property
    def group(self) -> RegionGroup:
        return _GROUPS[self]


_GROUPS: dict[Region, RegionGroup] = {
    Region.BROW_INNER_L: RegionGroup.BROWS, Region.BROW_INNER_R: RegionGroup.BROWS,
    Region.BROW_OUTER_L: RegionGroup.BROWS, Region.BROW_OUTER_R: RegionGroup.BROWS,
    Region.GLABELLA: RegionGroup.BROWS,
    Region.UPPER_LID_L: RegionGroup.LIDS, Region.UPPER_LID_R: RegionGroup.LIDS,
    Region.LOWER_LID_L: RegionGroup.LIDS, Region.LOWER_LID_R: RegionGroup.LIDS,
    Region.CHEEK_L: RegionGroup.CHEEKS, Region.CHEEK_R: RegionGroup.CHEEKS,
    Region.NOSE_L: RegionGroup.NOSE, Region.NOSE_R: RegionGroup.NOSE,
    Region.UPPER_LIP: RegionGroup.MOUTH, Region.MOUTH_CORNER_L: RegionGroup.MOUTH,
    Region.MOUTH_CORNER_R: RegionGroup.MOUTH, Region.LOWER_LIP: RegionGroup.MOUTH,
    Region.CHIN: RegionGroup.CHIN,
}

#: Landmarks whose neighbourhood forms each region (subject's-left indices
#: for lateral regions; the right side uses their mirrors).
_LEFT_REGION_POINTS: dict[str, tuple[int, ...]] = {
    "brow_inner": (336, 296, 285, 295),
    "brow_outer": (300, 293, 276, 283),
    "upper_lid": (386, 385, 387, 258, 257, 259),
    "lower_lid": (374, 373, 380, 450, 449),
    "cheek": (330, 347, 280),
    "nose": (358, 327, 437, 429),
    "mouth_corner": (291, 287, 409, 375),
}
_MIDLINE_REGION_POINTS: dict[Region, tuple[int, ...]] = {
    Region.GLABELLA: (9, 8),
    Region.UPPER_LIP: (0, 267, 37),
    Region.LOWER_LIP: (17, 314, 84),
    Region.CHIN: (18, 200, 199),
}


def region_points(region: Region) -> tuple[int, ...]:
    """The landmark indices that anchor ``region``."""
    if region in _MIDLINE_REGION_POINTS:
        return _MIDLINE_REGION_POINTS[region]
    base = region.value[:-2]
    left = _LEFT_REGION_POINTS[base]
    return left if region.side is Side.LEFT else tuple(mesh.MIRROR[i] for i in left)


REGIONS: tuple[Region, ...] = tuple(Region)


@dataclass(frozen=True, slots=True)
class RegionMotion:
    """Displacement of one region from the neutral reference, in IOD units.

    ``dx`` > 0 away from the face's midline (lateral regions) or toward the
    subject's left (midline regions); ``dy`` > 0 toward the forehead;
    ``magnitude`` is the mean length of the per-pixel displacement (≥ the
    length of the mean, larger when the region deforms without moving as a
    whole).
    """

    region: Region
    dx: float
    dy: float
    magnitude: float


@dataclass(frozen=True, slots=True)
class MotionFrame:
    """Region motion of the primary face in one frame.

    ``valid`` is False when there is no face (then ``regions`` is empty) or
    the frame became the new reference (all zero by construction, and
    flagged by ``rebased``). ``rigid_shift`` is the residual alignment error
    measured on the nasal root and removed from every region (IOD units);
    ``reference_index``/``reference_pose`` say which neutral frame the
    displacements are measured from.
    """

    frame_index: int
    timestamp: float
    valid: bool
    regions: tuple[RegionMotion, ...]
    #: Residual rigid motion removed: translation (IOD, dx right / dy up in
    #: the crop), rotation (degrees) and scale change (fraction).
    rigid_shift: tuple[float, float] = (0.0, 0.0)
    rigid_rotation_deg: float = 0.0
    rigid_scale: float = 0.0
    rebased: bool = False
    reference_index: int = -1
    reference_pose: HeadPose | None = None
    #: Face size in pixels (outer eye corners) in this frame.
    iod_px: float = 0.0
    #: Out-of-plane rotation of the skull from the reference, (pitch, yaw)
    #: in degrees, read from the pixels alone: the shift of the rigid anchors
    #: that grows with their depth (parallax). The tracker's pose is fitted
    #: to the whole mesh, mouth included, and reads a broad smile as a 4-5°
    #: nod; the nasal bridge, inner eye corners and temples do not move
    #: with a smile, so their parallax does not (docs/spotting.md "Motion").
    parallax_deg: tuple[float, float] = (0.0, 0.0)

    def get(self, region: Region) -> RegionMotion | None:
        for item in self.regions:
            if item.region is region:
                return item
        return None

    def as_array(self) -> np.ndarray:
        """(len(REGIONS), 3) array of dx, dy, magnitude in REGIONS order."""
        if not self.regions:
            return np.zeros((len(REGIONS), 3))
        return np.array([(r.dx, r.dy, r.magnitude) for r in self.regions], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class MotionConfig:
    """Crop geometry and flow settings.

    ``crop_iod_px``: outer-eye-corner distance in the canonical crop. 64 px
    keeps sub-pixel motion of a 60–100 px face (webcam distance) without
    upsampling much, and DIS runs in ~1–2 ms on the 150x180 crop.
    ``region_radius_iod``: radius of the disc around each region landmark.
    """

    crop_iod_px: float = 64.0
    region_radius_iod: float = 0.14
    #: Gaussian weight (σ, IOD) around the region's landmarks inside the
    #: disc; 0 = uniform. σ 0.05 raised the peak z of weak synthetic AUs by
    #: 10-20 % over a uniform 0.12 IOD disc at the same noise (measured on
    #: the real video base: 99.9th percentile 5.4 vs 5.6).
    region_sigma_iod: float = 0.05
    #: crop extent around the eye centre, in IOD: left/right, above, below
    half_width_iod: float = 1.15
    above_iod: float = 0.85
    below_iod: float = 1.75
    #: DIS optical flow: finest pyramid level, patch size and stride,
    #: variational refinement iterations. OpenCV's "fast" preset stops at
    #: level 2 (quarter resolution) and loses weak motion; on this small
    #: crop the full-resolution level without refinement keeps a weak
    #: (0.3) brow lowering 2-4x larger at ~2 ms on one core (measured,
    #: docs/spotting.md); refinement cost more and smoothed weak motion away.
    dis_finest_scale: int = 0
    dis_patch_size: int = 8
    dis_patch_stride: int = 4
    dis_refine_iters: int = 0
    blur_sigma_px: float = 0.0
    #: Fit the residual rigid motion on the anchors *and* the 18 region
    #: centres (trimmed): see docs/spotting.md "Motion".
    rigid_from_regions: bool = True


def _median(values: np.ndarray) -> float:
    """``float(np.median(values))`` of a short 1-D array, by one sort: the
    same value (the middle one, or the mean of the two middle ones as numpy
    computes it) without np.median's overhead, which was most of its cost
    on 25-30 points (it runs up to four times a flowed frame)."""
    if values.size == 0 or np.isnan(values).any():  # numpy's own answer (nan)
        return float(np.median(values))
    s = np.sort(values)
    h = len(s) // 2
    return float(s[h]) if len(s) % 2 else float((s[h - 1] + s[h]) / 2.0)


def _robust_similarity(src: np.ndarray, dst: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Similarity fitted, then refitted without the points whose residual
    exceeds 2.5x the median: a point an expression or the tracker moved
    does not drag the alignment."""
    keep = np.ones(len(src), bool)
    a = _similarity(src, dst)
    for _ in range(rounds):
        res = np.hypot(*((src @ a[:, :2].T + a[:, 2]) - dst).T)
        limit = 2.5 * max(_median(res), 1e-3)
        new_keep = res <= limit
        if new_keep.all() or new_keep.sum() < 4 or (new_keep == keep).all():
            break
        keep = new_keep
        a = _similarity(src[keep], dst[keep])
    return a


def _parallax_solver(anchors: np.ndarray, depth: np.ndarray) -> np.ndarray | None:
    """Rows that turn the anchors' flow (x of every anchor, then y) into the
    parallax slopes (kx, ky): the least-squares fit of a similarity plus a
    shift proportional to depth, ``flow = s(p) + k·z``. A rotation by θ
    (radians) out of the image plane moves a point at depth z by z·θ across
    it, on top of what a similarity can absorb; so k is θ, about the
    vertical axis (yaw) for kx and the horizontal one (pitch) for ky. None
    when the anchors' depths are too alike to tell (a flat mesh)."""
    n = len(anchors)
    xy = anchors - anchors.mean(axis=0)
    z = depth - depth.mean()
    if float(np.std(z)) < 1.0:  # crop pixels: the anchors span ~20 px of depth
        return None
    design = np.zeros((2 * n, 6))
    design[:n, 0], design[:n, 1], design[:n, 2], design[:n, 4] = xy[:, 0], -xy[:, 1], 1.0, z
    design[n:, 0], design[n:, 1], design[n:, 3], design[n:, 5] = xy[:, 1], xy[:, 0], 1.0, z
    return np.linalg.pinv(design)[4:6]


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping
    src → dst, as 2x3.

    In the plane a similarity is multiplication by one complex number, so
    the fit is closed-form: ``k = Σ conj(s)·d / Σ |s|²`` on centred points.
    It is Umeyama's solution without the SVD (the same rotation and scale:
    for 2x2 covariances σ1 + sign(det)·σ2 = |tr + i·skew|; equal to 1e-13
    on random point sets, reflections included), at half the cost — it
    runs several times a frame.
    """
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s = (src[:, 0] - mu_s[0]) + 1j * (src[:, 1] - mu_s[1])
    d = (dst[:, 0] - mu_d[0]) + 1j * (dst[:, 1] - mu_d[1])
    var = float(np.vdot(s, s).real)
    k = complex(np.vdot(s, d)) / var if var > 0 else 1.0 + 0j
    out = np.empty((2, 3))
    out[0, 0], out[0, 1] = k.real, -k.imag
    out[1, 0], out[1, 1] = k.imag, k.real
    out[:, 2] = mu_d - out[:, :2] @ mu_s
    return out


class MotionAnalyzer:
    """Region motion of one subject's face against its neutral reference.

    Not thread-safe; one per subject. ``rebase()`` makes the next face frame
    the reference; ``reset()`` forgets the subject (face lost, new subject).
    """

    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig()
        c = self.config
        self._size = (
            int(round(2 * c.half_width_iod * c.crop_iod_px)),
            int(round((c.above_iod + c.below_iod) * c.crop_iod_px)),
        )
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self._dis.setFinestScale(c.dis_finest_scale)
        self._dis.setPatchSize(c.dis_patch_size)
        self._dis.setPatchStride(c.dis_patch_stride)
        self._dis.setVariationalRefinementIterations(c.dis_refine_iters)
        self._dis.setUseMeanNormalization(True)
        self._ref_crop: np.ndarray | None = None
        self._template: np.ndarray | None = None  # stable points in crop coords
        #: the crop's pixels (flat indices) any region or anchor weighs
        self._support: np.ndarray = np.zeros(0, np.intp)
        self._weights: np.ndarray | None = None  # (n_regions, len(_support))
        self._anchor_weights: np.ndarray | None = None  # (n_anchors, len(_support))
        self._anchor_pts: np.ndarray | None = None
        self._centres: np.ndarray | None = None  # (n_regions, 2) weighted centres in the crop
        self._parallax: np.ndarray | None = None  # (2, 2 * n_anchors): anchor flow → (kx, ky)
        self._gx: np.ndarray | None = None
        self._gy: np.ndarray | None = None
        self._signs: np.ndarray = np.ones(len(REGIONS))
        self._ref_index = -1
        self._ref_pose: HeadPose | None = None
        self._rebase_pending = False

    # -- reference management
    def rebase(self) -> None:
        """Take the next frame with a face as the new neutral reference."""
        self._rebase_pending = True

    def reset(self) -> None:
        """Forget the reference (face lost for long, or a new subject)."""
        self._ref_crop = None
        self._template = None
        self._weights = None
        self._ref_index = -1
        self._ref_pose = None
        self._rebase_pending = False

    @property
    def rebase_pending(self) -> bool:
        """A new reference is asked for: the next face frame must be processed."""
        return self._rebase_pending

    @property
    def has_reference(self) -> bool:
        return self._ref_crop is not None

    @property
    def reference_index(self) -> int:
        return self._ref_index

    # -- geometry
    def _canonical_transform(self, pts: np.ndarray) -> np.ndarray:
        """Similarity putting the eye centre at the crop's eye line, the eye
        axis horizontal and the IOD at ``crop_iod_px``."""
        c = self.config
        right, left = pts[mesh.RIGHT_EYE_OUTER, :2], pts[mesh.LEFT_EYE_OUTER, :2]
        centre = (right + left) / 2.0
        d = left - right
        scale = c.crop_iod_px / max(float(np.hypot(*d)), 1e-6)
        ang = -np.arctan2(d[1], d[0])
        ca, sa = np.cos(ang) * scale, np.sin(ang) * scale
        a = np.array([[ca, -sa, 0.0], [sa, ca, 0.0]])
        target = np.array([self._size[0] / 2.0, c.above_iod * c.crop_iod_px])
        a[:, 2] = target - a[:, :2] @ centre
        return a

    def _build_reference(self, grey: np.ndarray, pts: np.ndarray, frame: Frame, pose: HeadPose) -> None:
        c = self.config
        a = self._canonical_transform(pts)
        crop_pts = pts[:, :2] @ a[:, :2].T + a[:, 2]
        self._template = crop_pts[list(mesh.STABLE_POINTS)].copy()
        self._ref_crop = self._warp(grey, a)
        w, h = self._size
        yy, xx = np.mgrid[0:h, 0:w]
        r2 = (c.region_radius_iod * c.crop_iod_px) ** 2

        def disc_union(indices: tuple[int, ...]) -> np.ndarray:
            mask = np.zeros((h, w), bool)
            for i in indices:
                x, y = crop_pts[i]
                mask |= (xx - x) ** 2 + (yy - y) ** 2 <= r2
            return mask.ravel()

        weights = np.zeros((len(REGIONS), h * w), np.float32)
        sigma2 = (c.region_sigma_iod * c.crop_iod_px) ** 2
        for k, region in enumerate(REGIONS):
            mask = disc_union(region_points(region))
            if c.region_sigma_iod > 0:
                # Gaussian weights around the region's landmarks: a narrow
                # pull (a dimpler) is not averaged away by the disc's rim
                d2 = np.min([(xx - crop_pts[i][0]) ** 2 + (yy - crop_pts[i][1]) ** 2 for i in region_points(region)], axis=0)
                wk = np.exp(-d2.ravel() / (2 * sigma2)) * mask
            else:
                wk = mask.astype(np.float64)
            weights[k] = wk / max(float(wk.sum()), 1e-9)
        anchor_r2 = (0.06 * c.crop_iod_px) ** 2
        anchors = np.zeros((len(mesh.FLOW_ANCHORS), h * w), np.float32)
        for k, i in enumerate(mesh.FLOW_ANCHORS):
            x, y = crop_pts[i]
            mask = ((xx - x) ** 2 + (yy - y) ** 2 <= anchor_r2).ravel()
            anchors[k, mask] = 1.0 / max(int(mask.sum()), 1)
        self._anchor_pts = crop_pts[list(mesh.FLOW_ANCHORS)].copy()
        self._parallax = _parallax_solver(self._anchor_pts, pts[list(mesh.FLOW_ANCHORS), 2] * float(np.hypot(*a[:, 0])))
        # Only the pixels some region or anchor weighs are read: about a
        # quarter of the crop (6.6 of 24.4 thousand on the astronaut). The
        # weighted sums over them are the sums over the whole crop without
        # its zero terms (equal but for float32 rounding), at a quarter of
        # the cost: seven of them a flowed frame took 0.5 ms.
        support = np.flatnonzero((weights != 0).any(axis=0) | (anchors != 0).any(axis=0))
        self._support = support
        self._anchor_weights = np.ascontiguousarray(anchors[:, support])
        self._gx = np.ascontiguousarray(xx.ravel()[support], dtype=np.float32)
        self._gy = np.ascontiguousarray(yy.ravel()[support], dtype=np.float32)
        self._weights = np.ascontiguousarray(weights[:, support])
        self._centres = np.stack([self._weights @ self._gx, self._weights @ self._gy], axis=1).astype(np.float64)
        # dx sign: away from the midline for lateral regions; the crop's +x
        # is toward the subject's left.
        self._signs = np.array([-1.0 if r.side is Side.RIGHT else 1.0 for r in REGIONS])
        self._ref_index = frame.index
        self._ref_pose = pose
        self._rebase_pending = False
        log.debug("motion reference set at frame %d", frame.index)

    def _warp(self, grey: np.ndarray, a: np.ndarray) -> np.ndarray:
        crop = cv2.warpAffine(grey, a, self._size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if self.config.blur_sigma_px > 0:
            crop = cv2.GaussianBlur(crop, (0, 0), self.config.blur_sigma_px)
        return crop

    # -- per frame
    def process(self, frame: Frame, face: Face | None) -> MotionFrame:
        """Region displacements of ``face`` in ``frame`` from the reference."""
        if face is None:
            return MotionFrame(frame.index, frame.timestamp, False, ())
        pts = np.asarray(face.landmarks, dtype=np.float64)
        iod_px = float(np.hypot(*(pts[mesh.LEFT_EYE_OUTER, :2] - pts[mesh.RIGHT_EYE_OUTER, :2])))
        image = frame.image
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        if self._ref_crop is None or self._rebase_pending:
            self._build_reference(grey, pts, frame, face.pose)
            zeros = tuple(RegionMotion(r, 0.0, 0.0, 0.0) for r in REGIONS)
            return MotionFrame(frame.index, frame.timestamp, False, zeros, rebased=True,
                               reference_index=self._ref_index, reference_pose=self._ref_pose, iod_px=iod_px)
        assert self._template is not None and self._weights is not None
        assert self._anchor_weights is not None and self._anchor_pts is not None
        assert self._gx is not None and self._gy is not None
        a = _robust_similarity(pts[list(mesh.STABLE_POINTS), :2], self._template)
        crop = self._warp(grey, a)
        flow = self._dis.calc(self._ref_crop, crop, None)
        # matrix-vector products only: a (regions x pixels) @ (pixels x 2)
        # product went through a threaded BLAS path that cost 40x more on a
        # busy machine (measured 4 ms vs 0.1 ms)
        read = flow.reshape(-1, 2)[self._support]  # the weighed pixels' (dx, dy)
        fx = np.ascontiguousarray(read[:, 0])
        fy = np.ascontiguousarray(read[:, 1])
        # residual rigid motion, measured by the flow at the anchors and, when
        # ``rigid_from_regions``, at every region's centre too (trimmed fit:
        # a muscle moves a few regions, which fall out as outliers)
        anchor_flow = np.stack([self._anchor_weights @ fx, self._anchor_weights @ fy], axis=1)
        if self.config.rigid_from_regions and self._centres is not None:
            region_flow = np.stack([self._weights @ fx, self._weights @ fy], axis=1)
            pts_fit = np.concatenate([self._anchor_pts, self._centres])
            rigid = _robust_similarity(pts_fit, pts_fit + np.concatenate([anchor_flow, region_flow]))
        else:
            rigid = _robust_similarity(self._anchor_pts, self._anchor_pts + anchor_flow)
        lin = (rigid[:, :2] - np.eye(2)).astype(np.float32)
        gx, gy = self._gx, self._gy
        fx -= gx * lin[0, 0] + gy * lin[0, 1] + np.float32(rigid[0, 2])
        fy -= gx * lin[1, 0] + gy * lin[1, 1] + np.float32(rigid[1, 2])
        means = np.stack([self._weights @ fx, self._weights @ fy], axis=1)  # (n_regions, 2)
        mags = self._weights @ np.sqrt(fx * fx + fy * fy)
        k = 1.0 / self.config.crop_iod_px
        regions = tuple(
            RegionMotion(r, float(self._signs[i] * means[i, 0] * k), float(-means[i, 1] * k), float(mags[i] * k))
            for i, r in enumerate(REGIONS)
        )
        centre = self._anchor_pts.mean(axis=0)
        shift = centre @ lin.T + rigid[:, 2]
        parallax = (0.0, 0.0)
        if self._parallax is not None:
            kx, ky = self._parallax @ anchor_flow.T.ravel()
            parallax = (float(np.degrees(-ky)), float(np.degrees(kx)))
        return MotionFrame(
            frame.index, frame.timestamp, True, regions,
            rigid_shift=(float(shift[0] * k), float(-shift[1] * k)),
            rigid_rotation_deg=float(np.degrees(np.arctan2(rigid[1, 0], rigid[0, 0]))),
            rigid_scale=float(np.hypot(rigid[0, 0], rigid[1, 0]) - 1.0),
            reference_index=self._ref_index, reference_pose=self._ref_pose, iod_px=iod_px,
            parallax_deg=parallax,
        )

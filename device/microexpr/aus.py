"""Blendshapes + landmarks → FACS Action Unit intensities (0..1).

Two kinds of evidence, combined per AU and per side of the face:

* **Blendshapes**: the FaceLandmarker's 52 categories are ``_neutral`` plus
  51 ARKit-style names (``tongueOut`` is not produced). ``BLENDSHAPE_AU`` maps
  each name we use to one AU and side; several names for the same AU/side
  combine by their maximum. Names are the real ones; where the paper's
  printed table uses a name that does not exist or pairs a name with the
  wrong AU, ``DEVIATIONS`` says what we do instead and why. Every one of the
  51 names is either mapped or listed in ``UNUSED`` with a reason.
* **Geometry**: some blendshapes barely leave zero on real faces (measured:
  cheekSquint 0.00 through a broad smile, noseSneer and eyeWide ≈ 0), so AU5,
  AU6, AU9, AU1/AU4 and AU25 also read distances between landmarks. The
  landmarks are first rotated back to a frontal view with the tracker's head
  pose (so a head tilt is not read as a brow movement), then divided by the
  inter-ocular distance (IOD, between the eye centres; ≈ 63 mm on adults)
  so that face size and camera distance cancel.

Geometry depends on the face (a person with hooded eyes has a small eye
aperture at rest), so every geometric cue except the lip gap is a *change
from the subject's own reference*: the estimator keeps, per subject, an
exponential running mean of each raw distance with a time constant of
``reference_tau_s`` (10 s by default: 20x the longest micro-expression and
longer than most posed expressions, so an expression barely moves it while
slow drifts of posture and lighting are followed). The reference starts at
the first frame in which the subject's face is seen, so the subject is
assumed to be near neutral then; ``calibrate()`` sets it from a known
neutral frame instead. The later baseline stage subtracts its own robust
per-subject neutral from the AU values as well; this one only has to make
geometry comparable with blendshapes.

A change becomes an intensity through ``ramp(change, dead_band, full)``:
zero up to a noise floor, rising linearly to 1 at an excursion we take as
the maximum (FACS level E), clamped to 0..1. The noise floors come from the
landmark jitter measured on the still, neutral frames of the real test clip
(s.d. 0.003-0.007 IOD); the full-scale excursions are anatomical orders of
magnitude (a few millimetres of brow, cheek or nose-wing travel), not values
fitted to any clip. Both are in ``GEOMETRY_CUES`` and docs/aus.md.
"""

# The per-frame path writes max/min of two floats out as comparisons (Python's own
# definition; a call per value cost a third of AU estimation at rest), hence:
# ruff: noqa: PLR1730, FURB136

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

import numpy as np

from microexpr.facs import AU, Side
from microexpr.tracking.base import Face, FaceObservation, HeadPose


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
    #: Which tracked face (``Face.subject_id``); 0 with a single face.
    subject_id: int = 0

    @classmethod
    def no_face(cls, frame_index: int, timestamp: float) -> AUFrame:
        """The frame in which no face was found."""
        return cls(frame_index, timestamp, False, 0.0, _EMPTY, _EMPTY, _EMPTY, None)


_EMPTY: Mapping[AU, float] = MappingProxyType({})

# ---------------------------------------------------------------------------
# The tables


#: Every blendshape we read, keyed on the real FaceLandmarker name: (AU, side).
#: Side is the *subject's* side (MediaPipe's ``...Left`` is the subject's
#: left, which a non-mirrored camera shows on the image's right). Names with
#: ``Side.BOTH`` have no left/right variant and feed the bilateral value.
BLENDSHAPE_AU: Mapping[str, tuple[AU, Side]] = MappingProxyType(
    {
        "browInnerUp": (AU.INNER_BROW_RAISER, Side.BOTH),
        "browOuterUpLeft": (AU.OUTER_BROW_RAISER, Side.LEFT),
        "browOuterUpRight": (AU.OUTER_BROW_RAISER, Side.RIGHT),
        "browDownLeft": (AU.BROW_LOWERER, Side.LEFT),
        "browDownRight": (AU.BROW_LOWERER, Side.RIGHT),
        "eyeWideLeft": (AU.UPPER_LID_RAISER, Side.LEFT),
        "eyeWideRight": (AU.UPPER_LID_RAISER, Side.RIGHT),
        "cheekSquintLeft": (AU.CHEEK_RAISER, Side.LEFT),
        "cheekSquintRight": (AU.CHEEK_RAISER, Side.RIGHT),
        "eyeSquintLeft": (AU.LID_TIGHTENER, Side.LEFT),
        "eyeSquintRight": (AU.LID_TIGHTENER, Side.RIGHT),
        "noseSneerLeft": (AU.NOSE_WRINKLER, Side.LEFT),
        "noseSneerRight": (AU.NOSE_WRINKLER, Side.RIGHT),
        "mouthUpperUpLeft": (AU.UPPER_LIP_RAISER, Side.LEFT),
        "mouthUpperUpRight": (AU.UPPER_LIP_RAISER, Side.RIGHT),
        "mouthSmileLeft": (AU.LIP_CORNER_PULLER, Side.LEFT),
        "mouthSmileRight": (AU.LIP_CORNER_PULLER, Side.RIGHT),
        "mouthDimpleLeft": (AU.DIMPLER, Side.LEFT),
        "mouthDimpleRight": (AU.DIMPLER, Side.RIGHT),
        "mouthFrownLeft": (AU.LIP_CORNER_DEPRESSOR, Side.LEFT),
        "mouthFrownRight": (AU.LIP_CORNER_DEPRESSOR, Side.RIGHT),
        "mouthLowerDownLeft": (AU.LOWER_LIP_DEPRESSOR, Side.LEFT),
        "mouthLowerDownRight": (AU.LOWER_LIP_DEPRESSOR, Side.RIGHT),
        "mouthShrugLower": (AU.CHIN_RAISER, Side.BOTH),
        "mouthStretchLeft": (AU.LIP_STRETCHER, Side.LEFT),
        "mouthStretchRight": (AU.LIP_STRETCHER, Side.RIGHT),
        "mouthPucker": (AU.LIP_TIGHTENER, Side.BOTH),
        "mouthPressLeft": (AU.LIP_PRESSOR, Side.LEFT),
        "mouthPressRight": (AU.LIP_PRESSOR, Side.RIGHT),
        "jawOpen": (AU.JAW_DROP, Side.BOTH),
        "mouthRollLower": (AU.LIP_SUCK, Side.BOTH),
        "mouthRollUpper": (AU.LIP_SUCK, Side.BOTH),
        "jawForward": (AU.JAW_THRUST, Side.BOTH),
        # FACS codes a jaw moved to the subject's left as L30.
        "jawLeft": (AU.JAW_SIDEWAYS, Side.LEFT),
        "jawRight": (AU.JAW_SIDEWAYS, Side.RIGHT),
        "eyeBlinkLeft": (AU.BLINK, Side.LEFT),
        "eyeBlinkRight": (AU.BLINK, Side.RIGHT),
    }
)

#: Real names we deliberately do not turn into an AU, and why.
UNUSED: Mapping[str, str] = MappingProxyType(
    {
        **{
            f"eyeLook{d}{s}": "gaze direction (AU61-64 territory), not a facial muscle action"
            for d in ("Up", "Down", "In", "Out")
            for s in ("Left", "Right")
        },
        "cheekPuff": "AU34 cheek puff: no emotion rule uses it",
        "mouthFunnel": "AU22 lip funneler: no emotion rule uses it",
        "mouthClose": "lips closed with the jaw open: a configuration (AU26 without AU25), not an AU",
        "mouthLeft": "whole mouth shifted sideways: no single FACS AU",
        "mouthRight": "whole mouth shifted sideways: no single FACS AU",
        "mouthShrugUpper": "upper-lip push that accompanies AU17; AU17 is read from mouthShrugLower",
    }
)

#: The AU ← blendshape table as printed in the paper (Sălăgean et al. 2025,
#: Appl. Sci. 15:6417), kept to check our deviations against.
PAPER_TABLE: Mapping[AU, tuple[str, ...]] = MappingProxyType(
    {
        AU.INNER_BROW_RAISER: ("browInnerUp", "browInnerUpLeft", "browInnerUpRight", "browInnerRaiser"),
        AU.OUTER_BROW_RAISER: ("browOuterUpLeft", "browOuterUpRight"),
        AU.BROW_LOWERER: ("browDown", "browDownLeft", "browDownRight", "browLowerer", "browFurrower"),
        AU.UPPER_LID_RAISER: ("eyeLookUpLeft", "eyeLookUpRight", "eyeWideLeft", "eyeWideRight", "upperLidRaiser"),
        AU.CHEEK_RAISER: ("cheekSquintLeft", "cheekSquintRight", "cheekRaiser"),
        AU.LID_TIGHTENER: ("lidTightener", "eyeSquintLeft", "eyeSquintRight"),
        AU.NOSE_WRINKLER: ("noseSneerLeft", "noseSneerRight", "noseWrinkler"),
        AU.UPPER_LIP_RAISER: ("mouthUpperUpLeft", "mouthUpperUpRight", "upperLipRaiser"),
        AU.LIP_CORNER_PULLER: (
            "lipCornerPuller",
            "lipCornerPullerLeft",
            "lipCornerPullerRight",
            "mouthSmileLeft",
            "mouthSmileRight",
        ),
        AU.DIMPLER: ("mouthDimpleLeft", "mouthDimpleRight"),
        AU.LIP_CORNER_DEPRESSOR: (
            "lipCornerDepressor",
            "lipCornerDepressorLeft",
            "lipCornerDepressorRight",
            "mouthFrownLeft",
            "mouthFrownRight",
        ),
        AU.LOWER_LIP_DEPRESSOR: ("mouthLowerDownLeft", "mouthLowerDownRight"),
        AU.CHIN_RAISER: ("chinRaiser",),
        AU.LIP_STRETCHER: ("mouthStretchLeft", "mouthStretchRight", "lipStretcher"),
        AU.LIP_TIGHTENER: ("lipsTogether",),
        AU.LIP_PRESSOR: ("lipPressLeft", "lipPressRight"),
        AU.LIPS_PART: ("lipsPart",),
        AU.JAW_DROP: ("jawOpen", "mouthOpen"),
        AU.LIP_SUCK: ("jawLeft", "jawRight"),
        AU.JAW_THRUST: ("jawForward",),
        AU.BLINK: ("eyeBlinkLeft", "eyeBlinkRight"),
    }
)

_NOT_A_NAME = "not a FaceLandmarker output"

#: Every departure from PAPER_TABLE, keyed on the name involved (printed
#: names we cannot use, and real names we assign where the paper does not).
DEVIATIONS: Mapping[str, str] = MappingProxyType(
    {
        "browInnerUpLeft": f"{_NOT_A_NAME}; AU1 reads the bilateral browInnerUp and gets its sides from "
        "inner-brow height (geometry)",
        "browInnerUpRight": f"{_NOT_A_NAME}; see browInnerUpLeft",
        "browInnerRaiser": f"{_NOT_A_NAME} (a FACS muscle name); AU1 uses browInnerUp",
        "browDown": f"{_NOT_A_NAME}; only browDownLeft/Right exist",
        "browLowerer": f"{_NOT_A_NAME} (FACS name); AU4 uses browDownLeft/Right plus inner-brow lowering",
        "browFurrower": f"{_NOT_A_NAME}; AU4 uses browDownLeft/Right plus inner-brow lowering",
        "eyeLookUpLeft": "gaze, not a lid action: looking up raises the upper lid with the eye, relaxed; "
        "AU5 is read from eyeWide and eye-aperture widening instead",
        "eyeLookUpRight": "gaze, not AU5; see eyeLookUpLeft",
        "upperLidRaiser": f"{_NOT_A_NAME} (FACS name); AU5 uses eyeWide plus eye-aperture widening",
        "cheekRaiser": f"{_NOT_A_NAME} (FACS name); AU6 uses cheekSquint plus cheek rise with eye narrowing",
        "lidTightener": f"{_NOT_A_NAME} (FACS name); AU7 uses eyeSquintLeft/Right",
        "noseWrinkler": f"{_NOT_A_NAME} (FACS name); AU9 uses noseSneer plus nose-wing rise",
        "upperLipRaiser": f"{_NOT_A_NAME} (FACS name); AU10 uses mouthUpperUpLeft/Right",
        "lipCornerPuller": f"{_NOT_A_NAME} (FACS name); AU12 uses mouthSmileLeft/Right",
        "lipCornerPullerLeft": f"{_NOT_A_NAME}; AU12 uses mouthSmileLeft",
        "lipCornerPullerRight": f"{_NOT_A_NAME}; AU12 uses mouthSmileRight",
        "lipCornerDepressor": f"{_NOT_A_NAME} (FACS name); AU15 uses mouthFrownLeft/Right",
        "lipCornerDepressorLeft": f"{_NOT_A_NAME}; AU15 uses mouthFrownLeft",
        "lipCornerDepressorRight": f"{_NOT_A_NAME}; AU15 uses mouthFrownRight",
        "chinRaiser": f"{_NOT_A_NAME}; AU17 (mentalis pushes chin boss and lower lip up) is read from "
        "mouthShrugLower, the upward push of the lower lip",
        "mouthShrugLower": "assigned to AU17: the chin raiser's visible effect is the lower lip pushed up",
        "lipStretcher": f"{_NOT_A_NAME} (FACS name); AU20 uses mouthStretchLeft/Right",
        "lipsTogether": f"{_NOT_A_NAME}; AU23 (lip tightener: orbicularis oris narrows the red of the "
        "lips) is read from mouthPucker",
        "mouthPucker": "assigned to AU23: ARKit defines it as contraction and compression of both closed "
        "lips, the orbicularis oris action FACS calls AU23 (AU18's pucker shares the muscle; AU18 is not "
        "estimated). mouthPress is the pressing of AU24, not the narrowing of AU23",
        "lipPressLeft": f"{_NOT_A_NAME}; AU24 uses mouthPressLeft",
        "lipPressRight": f"{_NOT_A_NAME}; AU24 uses mouthPressRight",
        "mouthPressLeft": "assigned to AU24 (lip presser), the real name behind the printed lipPressLeft",
        "mouthPressRight": "assigned to AU24, the real name behind the printed lipPressRight",
        "lipsPart": f"{_NOT_A_NAME}; AU25 is read from the inner-lip gap (geometry)",
        "mouthOpen": f"{_NOT_A_NAME}; AU26 uses jawOpen",
        "jawLeft": "jaw moved sideways is AU30 (jaw sideways), not AU28 (lip suck); kept as L30",
        "jawRight": "jaw moved sideways is AU30, not AU28; kept as R30",
        "mouthRollLower": "assigned to AU28 (lip suck: the lips are drawn in over the teeth), which the "
        "paper mapped to jawLeft/Right",
        "mouthRollUpper": "assigned to AU28 with mouthRollLower",
        "eyeBlinkLeft": "the paper lists AU45; one frame cannot tell a blink (AU45) from closed eyes "
        "(AU43), so per-frame closure is reported as AU45 and the spotter tells them apart by duration",
        "eyeBlinkRight": "see eyeBlinkLeft",
    }
)


class CueSource(StrEnum):
    """Where an AU's value comes from (for docs and the test of the table)."""

    BLENDSHAPE = "blendshape"
    GEOMETRY = "geometry"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class GeometryCue:
    """One landmark measurement turned into an AU intensity.

    ``dead_band`` and ``full`` are in IOD units (or a fraction of the
    subject's reference for the eye aperture); ``relative`` cues are changes
    from the per-subject reference, the others absolute values.
    """

    au: AU
    what: str
    dead_band: float
    full: float
    relative: bool = True


#: The geometric cues (see the module docstring for the units and why).
GEOMETRY_CUES: tuple[GeometryCue, ...] = (
    GeometryCue(AU.INNER_BROW_RAISER, "inner-brow height above the inner eye corner rises", 0.01, 0.12),
    GeometryCue(AU.BROW_LOWERER, "inner-brow height above the inner eye corner falls", 0.01, 0.12),
    GeometryCue(AU.UPPER_LID_RAISER, "eye aperture (upper to lower lid) widens, fraction of reference", 0.05, 0.50),
    GeometryCue(
        AU.CHEEK_RAISER,
        "cheek (malar) points rise toward the inner eye corner AND the lower lid rises: geometric mean",
        0.01,
        0.12,
    ),
    GeometryCue(
        AU.NOSE_WRINKLER,
        "nose wing rises toward the inner eye corner, discounted by how much the lip corner rose (AU12)",
        0.01,
        0.10,
    ),
    GeometryCue(AU.LIPS_PART, "inner-lip gap (absolute, not relative)", 0.02, 0.20, relative=False),
)

#: Length of the opening window whose median starts a subject's reference:
#: twice the longest micro-expression (0.5 s), so one at the very start of a
#: stream cannot become the reference.
OPENING_WINDOW_S = 1.0

#: Lower-lid rise that counts toward AU6, as a fraction of the reference eye
#: aperture (dead band, full). AU6 narrows the eye from below; a blink
#: closes it from above and leaves the lower lid where it was (measured on
#: the test clip's blink), so the lower lid, not the aperture, is read. Dead
#: band: 3 s.d. of the neutral jitter (0.0014 IOD ≈ 1 % of the aperture);
#: full: a quarter of the aperture, the lower lid's share of an eye squeezed
#: to half its height.
LOWER_LID_RISE = (0.03, 0.25)

#: Mouth-corner rise (IOD; dead band, full) that explains nose-wing rise as
#: AU12's drag rather than AU9. Dead band above the corner's neutral jitter
#: (s.d. up to 0.017 IOD on the test clip); full ≈ 9 mm, a broad smile.
CORNER_RISE = (0.02, 0.15)

#: The AUs the estimator reports, in CSV column order.
AU_COLUMNS: tuple[AU, ...] = (
    AU.INNER_BROW_RAISER,
    AU.OUTER_BROW_RAISER,
    AU.BROW_LOWERER,
    AU.UPPER_LID_RAISER,
    AU.CHEEK_RAISER,
    AU.LID_TIGHTENER,
    AU.NOSE_WRINKLER,
    AU.UPPER_LIP_RAISER,
    AU.LIP_CORNER_PULLER,
    AU.DIMPLER,
    AU.LIP_CORNER_DEPRESSOR,
    AU.LOWER_LIP_DEPRESSOR,
    AU.CHIN_RAISER,
    AU.LIP_STRETCHER,
    AU.LIP_TIGHTENER,
    AU.LIP_PRESSOR,
    AU.LIPS_PART,
    AU.JAW_DROP,
    AU.LIP_SUCK,
    AU.JAW_THRUST,
    AU.JAW_SIDEWAYS,
    AU.BLINK,
)


def _sources() -> Mapping[AU, str]:
    from_blend = {au for au, _side in BLENDSHAPE_AU.values()}
    from_geo = {cue.au for cue in GEOMETRY_CUES}
    out = {}
    for au in AU_COLUMNS:
        if au in from_blend and au in from_geo:
            out[au] = CueSource.BOTH
        elif au in from_geo:
            out[au] = CueSource.GEOMETRY
        else:
            out[au] = CueSource.BLENDSHAPE
    return MappingProxyType(out)


#: For each reported AU: blendshape, geometry or both.
AU_SOURCES: Mapping[AU, str] = _sources()

#: AUs reported per side (the others only have a bilateral value).
SIDED_AUS: frozenset[AU] = frozenset(
    {au for au, side in BLENDSHAPE_AU.values() if side is not Side.BOTH}
    | {AU.INNER_BROW_RAISER, AU.BROW_LOWERER, AU.UPPER_LID_RAISER, AU.CHEEK_RAISER, AU.NOSE_WRINKLER}
)

# ---------------------------------------------------------------------------
# Geometry

#: Landmark indices of the 478-point mesh, per subject side. The subject's
#: right eye is the one a non-mirrored camera shows on the image's left.
_SIDES = {
    Side.RIGHT: {
        "outer": (33,),
        "inner": (133,),
        "upper_lid": (159, 158, 160),
        "lower_lid": (145, 144, 153),
        "inner_brow": (107, 55, 66, 65),
        "ala": (98,),
        "cheek": (50, 205),
        "mouth_corner": (61,),
    },
    Side.LEFT: {
        "outer": (263,),
        "inner": (362,),
        "upper_lid": (386, 385, 387),
        "lower_lid": (374, 373, 380),
        "inner_brow": (336, 285, 296, 295),
        "ala": (327,),
        "cheek": (280, 425),
        "mouth_corner": (291,),
    },
}
_INNER_LIP_UPPER = (13,)
_INNER_LIP_LOWER = (14,)

#: Order of the raw per-side measurements in ``Geometry``.
MEASUREMENTS = ("aperture", "brow", "cheek", "ala", "lower_lid", "corner")


def rotation_from_pose(pose: HeadPose) -> np.ndarray:
    """The 3x3 rotation ``Rx(pitch) @ Ry(yaw) @ Rz(roll)`` (OpenCV camera
    axes), the inverse of the tracker's decomposition. The three factors
    are built in one array (one allocation, not three: it runs every frame)."""
    a, b, c = (math.radians(v) for v in (pose.pitch, pose.yaw, pose.roll))
    ca, sa, cb, sb, cc, sc = math.cos(a), math.sin(a), math.cos(b), math.sin(b), math.cos(c), math.sin(c)
    rx, ry, rz = np.array([
        [[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]],
        [[cb, 0.0, sb], [0.0, 1.0, 0.0], [-sb, 0.0, cb]],
        [[cc, -sc, 0.0], [sc, cc, 0.0], [0.0, 0.0, 1.0]],
    ])
    return rx @ ry @ rz


def frontalize(landmarks: np.ndarray, pose: HeadPose) -> np.ndarray:
    """Landmarks rotated back to a frontal view, centred, in pixels.

    Landmark x, y are pixels and z has the scale of x (weak perspective), so
    undoing the head rotation about the centroid leaves the face's own shape.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    centred = points - points.mean(axis=0)
    return centred @ rotation_from_pose(pose)  # row-vector form of R^T p


@dataclass(frozen=True, slots=True)
class Geometry:
    """Raw per-side measurements of one face, in IOD units (y grows downward).

    Per side, in ``MEASUREMENTS`` order: aperture (upper to lower lid), brow
    (inner brow above the inner eye corner), cheek (malar points below the
    inner eye corner), ala (nose wing to inner eye corner), lower_lid (lower
    lid below the inner eye corner), corner (mouth corner below the inner
    eye corner). ``lip_gap``: inner upper to inner lower lip.
    """

    left: tuple[float, ...]
    right: tuple[float, ...]
    lip_gap: float
    iod_px: float

    def side(self, side: Side) -> tuple[float, ...]:
        return self.left if side is Side.LEFT else self.right


#: Every landmark ``measure`` reads, and where each sits in that list.
_MEASURED = tuple(sorted({i for ix in _SIDES.values() for group in ix.values() for i in group}
                         | set(_INNER_LIP_UPPER) | set(_INNER_LIP_LOWER)))
_ROW = {i: k for k, i in enumerate(_MEASURED)}
_MEASURED_INDEX = np.array(_MEASURED, dtype=np.intp)
#: Per side (right, then left: ``_SIDES`` order), each group's rows in the measured list.
_SIDE_ROWS = tuple((side, {name: tuple(_ROW[i] for i in group) for name, group in _SIDES[side].items()})
                   for side in (Side.RIGHT, Side.LEFT))
_LIP_ROWS = (tuple(_ROW[i] for i in _INNER_LIP_LOWER), tuple(_ROW[i] for i in _INNER_LIP_UPPER))


def measure(face: Face) -> Geometry:
    """The raw geometric measurements of one face (pose-corrected, / IOD).

    Plain Python on the 32 landmarks it reads (one fancy index, one
    ``tolist``): 22 numpy means of 1-4 rows cost 0.15 ms a frame, the
    largest part of AU estimation at rest. Only those 32 rows are turned
    to the frontal view: a row of ``frontalize``'s product is that row
    alone times the rotation (three products each, the same arithmetic),
    about the centroid of all 478. The arithmetic is numpy's, in numpy's
    order (a mean adds the rows in turn, then divides; a 2-vector's norm
    is the square root of numpy's dot product, which may fuse the
    multiply-add), so the values are the same bit for bit
    (tests/test_aus.py compares with the array form)."""
    points = np.asarray(face.landmarks, dtype=np.float64)
    centre = np.add.reduce(points, axis=0)  # points.mean(axis=0) without its Python wrapper: the
    np.true_divide(centre, np.intp(len(points)), out=centre, casting="unsafe")  # same sum and division
    rows = ((points[_MEASURED_INDEX] - centre) @ rotation_from_pose(face.pose)).tolist()

    def xy(group: tuple[int, ...]) -> tuple[float, float]:
        x, y, _ = rows[group[0]]
        for i in group[1:]:
            r = rows[i]
            x += r[0]
            y += r[1]
        n = len(group)
        return x / n, y / n

    def y_of(group: tuple[int, ...]) -> float:
        y = rows[group[0]][1]
        for i in group[1:]:
            y += rows[i][1]
        return y / len(group)

    inner_of = []
    centres = []
    for _side, ix in _SIDE_ROWS:  # right, then left
        o, i = xy(ix["outer"]), xy(ix["inner"])
        inner_of.append(i)
        centres.append(((o[0] + i[0]) / 2.0, (o[1] + i[1]) / 2.0))
    (crx, cry), (clx, cly) = centres
    lo, up = xy(_LIP_ROWS[0]), xy(_LIP_ROWS[1])
    # the four 2-vectors whose length is read, in one array; each length is
    # the square root of numpy's dot product (BLAS; it may fuse the
    # multiply-add), as np.linalg.norm computes it
    vectors = [(clx - crx, cly - cry), (lo[0] - up[0], lo[1] - up[1])]
    for (_side, ix), inner in zip(_SIDE_ROWS, inner_of, strict=True):
        ala_x, ala_y = xy(ix["ala"])
        vectors.append((ala_x - inner[0], ala_y - inner[1]))
    rows2 = np.array(vectors)
    lengths = [math.sqrt(float(v.dot(v))) for v in rows2]
    iod = max(lengths[0], 1e-6)
    per_side = []
    for (_side, ix), inner, ala_length in zip(_SIDE_ROWS, inner_of, lengths[2:], strict=True):
        inner_y = inner[1]
        lower = y_of(ix["lower_lid"])
        aperture = (lower - y_of(ix["upper_lid"])) / iod
        brow = (inner_y - y_of(ix["inner_brow"])) / iod
        cheek = (y_of(ix["cheek"]) - inner_y) / iod
        ala = ala_length / iod
        lower_lid = (lower - inner_y) / iod
        corner = (y_of(ix["mouth_corner"]) - inner_y) / iod
        per_side.append((aperture, brow, cheek, ala, lower_lid, corner))
    gap = lengths[1] / iod
    return Geometry(left=per_side[1], right=per_side[0], lip_gap=gap, iod_px=iod)


def ramp(value: float, dead_band: float, full: float) -> float:
    """0 up to ``dead_band``, linear to 1 at ``full``, clamped."""
    if full <= dead_band:
        raise ValueError("full must exceed dead_band")
    return min(1.0, max(0.0, (value - dead_band) / (full - dead_band)))


@dataclass(slots=True)
class _Reference:
    """Per-subject reference of the raw geometry (rows left, right)."""

    values: np.ndarray
    timestamp: float
    start: float
    #: Frames of the opening window while it is open; None once settled.
    window: list[np.ndarray] | None


def _geometry_matrix(geo: Geometry) -> np.ndarray:
    return np.array([geo.left, geo.right], dtype=np.float64)


# ---------------------------------------------------------------------------
# The estimator

_CUE = {cue.au: cue for cue in GEOMETRY_CUES}
#: ``AU_COLUMNS`` in order, each with whether it is reported per side.
_COLUMNS_SIDED = tuple((au, au in SIDED_AUS) for au in AU_COLUMNS)
#: ``BLENDSHAPE_AU`` in order as (name, AU, 0 left / 1 right / 2 both).
_BLENDSHAPE_SLOTS = tuple((name, au, (Side.LEFT, Side.RIGHT, Side.BOTH).index(side))
                          for name, (au, side) in BLENDSHAPE_AU.items())
#: The relative geometric cues in the order ``_geometric`` returns them.
_GEOMETRIC_ORDER = (AU.INNER_BROW_RAISER, AU.BROW_LOWERER, AU.UPPER_LID_RAISER, AU.CHEEK_RAISER, AU.NOSE_WRINKLER)
#: (dead band, full - dead band) of a cue: ``ramp`` without its check.
_RAMP = {au: (cue.dead_band, cue.full - cue.dead_band) for au, cue in _CUE.items()}


def _names(au: AU, side: Side) -> tuple[str, ...]:
    return tuple(name for name, (a, s) in BLENDSHAPE_AU.items() if a is au and s is side)


#: Per reported AU, in ``AU_COLUMNS`` order: (AU, sided, its blendshape
#: names on the left, on the right, bilateral (each in ``BLENDSHAPE_AU``
#: order), where it sits in ``_geometric``'s result or -1). What
#: ``blendshape_aus`` and the geometric cues' dicts did per frame, as a table.
_PLAN = tuple(
    (au, au in SIDED_AUS, _names(au, Side.LEFT), _names(au, Side.RIGHT), _names(au, Side.BOTH),
     _GEOMETRIC_ORDER.index(au) if au in _GEOMETRIC_ORDER else -1)
    for au in AU_COLUMNS
)
_SMILE_NAMES = (_names(AU.LIP_CORNER_PULLER, Side.LEFT), _names(AU.LIP_CORNER_PULLER, Side.RIGHT))


class AUEstimator:
    """Turns each ``FaceObservation`` into an ``AUFrame``.

    Stateful only through the per-subject geometry reference (see the
    module docstring); one estimator per stream, not shared between streams.
    """

    def __init__(self, *, reference_tau_s: float = 10.0) -> None:
        if not (math.isfinite(reference_tau_s) and reference_tau_s > 0):
            raise ValueError(f"reference_tau_s must be a positive number, got {reference_tau_s}")
        self.reference_tau_s = reference_tau_s
        self._refs: dict[int, _Reference] = {}

    # -- reference ---------------------------------------------------------

    def reset(self, subject_id: int | None = None) -> None:
        """Forget the reference of one subject (or all)."""
        if subject_id is None:
            self._refs.clear()
        else:
            self._refs.pop(subject_id, None)

    def calibrate(self, face: Face, timestamp: float = 0.0) -> None:
        """Use this face (known to be neutral) as the subject's reference."""
        values = _geometry_matrix(measure(face))
        self._refs[face.subject_id] = _Reference(values, timestamp, timestamp, None)

    def reference(self, subject_id: int = 0) -> np.ndarray | None:
        """The current raw reference (rows left, right; columns as
        ``MEASUREMENTS``), or None before the subject was seen."""
        ref = self._refs.get(subject_id)
        return None if ref is None else ref.values.copy()

    def _update_reference(self, subject_id: int, geo: Geometry, timestamp: float) -> list[list[float]]:
        """The reference to compare this frame with (rows left, right); the
        frame is folded in.

        Opening window (``OPENING_WINDOW_S``): the reference is the
        element-wise median of the subject's frames so far, so neither the
        first frame after a detection (measured to sit up to 0.03 IOD off
        the following ones) nor an expression shorter than half the window
        becomes the reference. After it: an exponential running mean with
        time constant ``reference_tau_s``. A subject unseen for longer than
        that starts over (it may be someone else).
        """
        ref = self._refs.get(subject_id)
        if ref is None or timestamp - ref.timestamp > self.reference_tau_s:
            current = _geometry_matrix(geo)
            self._refs[subject_id] = _Reference(current.copy(), timestamp, timestamp, [current.copy()])
            return current.tolist()
        if ref.window is not None:
            ref.window.append(_geometry_matrix(geo))
            ref.values = np.median(np.stack(ref.window), axis=0)
            ref.timestamp = max(ref.timestamp, timestamp)
            if timestamp - ref.start >= OPENING_WINDOW_S:
                ref.window = None
            return ref.values.tolist()
        before = ref.values.tolist()
        dt = max(0.0, timestamp - ref.timestamp)
        alpha = 1.0 - math.exp(-dt / self.reference_tau_s)
        # ``values += alpha * (current - values)`` element by element in
        # plain Python: the same float64 operations in the same order, on
        # twelve numbers (four numpy calls cost more than the arithmetic)
        ref.values = np.array([[v + alpha * (x - v) for v, x in zip(row, side, strict=True)]
                               for row, side in zip(before, (geo.left, geo.right), strict=True)])
        ref.timestamp = max(ref.timestamp, timestamp)
        return before

    # -- estimation ----------------------------------------------------------

    def estimate(self, obs: FaceObservation) -> AUFrame:
        """AUs of the primary face; a no-face frame gives ``face_found=False``."""
        face = obs.face
        if face is None:
            return AUFrame.no_face(obs.frame_index, obs.timestamp)
        return self.estimate_face(obs, face)

    def estimate_all(self, obs: FaceObservation) -> tuple[AUFrame, ...]:
        """One AUFrame per tracked face (one no-face frame when there is none)."""
        if not obs.faces:
            return (AUFrame.no_face(obs.frame_index, obs.timestamp),)
        return tuple(self.estimate_face(obs, face) for face in obs.faces)

    def estimate_face(self, obs: FaceObservation, face: Face) -> AUFrame:
        """AUs of one face of ``obs``.

        Per AU and side: the largest of its blendshapes (each name in
        ``BLENDSHAPE_AU`` order, from 0), then of that and its geometric
        cue, then of that and the bilateral value, clamped to 0..1; the
        bilateral AU is the stronger side. Read straight from the
        ``_PLAN`` table: the same comparisons in the same order as
        ``blendshape_aus`` and ``geometric_aus`` with their per-AU dicts
        and ``max`` calls, at a third of the cost (tests/test_aus.py
        compares the two forms, not-finite blendshapes included)."""
        get = face.blendshapes.get
        geo = measure(face)
        ref = self._update_reference(face.subject_id, geo, obs.timestamp)
        # Python's max(a, b) is ``b if b > a else a`` and min(a, b) is
        # ``b if b < a else a`` (NaN included: a comparison with NaN is
        # false); written out, they cost no call
        smiles = []
        for names in _SMILE_NAMES:
            value = 0.0
            for name in names:
                score = get(name)
                if score is not None:
                    score = float(score)
                    if score > value:
                        value = score
            smiles.append(value)
        cue_left = _geometric(geo.left, ref[0], smiles[0])
        cue_right = _geometric(geo.right, ref[1], smiles[1])
        lips = _RAMP[AU.LIPS_PART]
        lips_part = min(1.0, max(0.0, (geo.lip_gap - lips[0]) / lips[1]))

        intensity: dict[AU, float] = {}
        side_left: dict[AU, float] = {}
        side_right: dict[AU, float] = {}
        isfinite = math.isfinite
        for au, sided, left_names, right_names, both_names, cue in _PLAN:
            if au is AU.LIPS_PART:
                bilateral = lips_part
            else:
                bilateral = 0.0
                for name in both_names:
                    score = get(name)
                    if score is not None:
                        score = float(score)
                        if score > bilateral:
                            bilateral = score
            if not sided:  # clamped to 0..1, 0 when not finite
                intensity[au] = ((0.0 if not bilateral > 0.0 else bilateral if bilateral < 1.0 else 1.0)
                                 if isfinite(bilateral) else 0.0)
                continue
            lv = rv = 0.0
            for name in left_names:
                score = get(name)
                if score is not None:
                    score = float(score)
                    if score > lv:
                        lv = score
            for name in right_names:
                score = get(name)
                if score is not None:
                    score = float(score)
                    if score > rv:
                        rv = score
            if cue >= 0:
                value = cue_left[cue]
                if value > lv:
                    lv = value
                value = cue_right[cue]
                if value > rv:
                    rv = value
            if bilateral > lv:
                lv = bilateral
            if bilateral > rv:
                rv = bilateral
            lc = (0.0 if not lv > 0.0 else lv if lv < 1.0 else 1.0) if isfinite(lv) else 0.0
            rc = (0.0 if not rv > 0.0 else rv if rv < 1.0 else 1.0) if isfinite(rv) else 0.0
            side_left[au] = lc
            side_right[au] = rc
            intensity[au] = rc if rc > lc else lc
        return AUFrame(
            frame_index=obs.frame_index,
            timestamp=obs.timestamp,
            face_found=True,
            confidence=face.confidence,
            intensity=MappingProxyType(intensity),
            left=MappingProxyType(side_left),
            right=MappingProxyType(side_right),
            pose=face.pose,
            subject_id=face.subject_id,
        )


def blendshape_aus(
    blendshapes: Mapping[str, float],
) -> tuple[dict[AU, float], dict[AU, float], dict[AU, float]]:
    """(left, right, bilateral) AU values from blendshapes alone (max per AU)."""
    left: dict[AU, float] = {}
    right: dict[AU, float] = {}
    both: dict[AU, float] = {}
    buckets = (left, right, both)
    for name, au, slot in _BLENDSHAPE_SLOTS:  # no enum hashing per entry
        score = blendshapes.get(name)
        if score is None:
            continue
        bucket = buckets[slot]
        bucket[au] = max(bucket.get(au, 0.0), float(score))
    return left, right, both


def geometric_aus(current: np.ndarray, reference: np.ndarray, *, smile: float = 0.0) -> dict[AU, float]:
    """The relative geometric cues of one side.

    ``current``/``reference``: one side's ``MEASUREMENTS`` in IOD units.
    ``smile`` is that side's AU12 from blendshapes. A lip-corner pull drags
    the nasolabial skin and the nose wing upward (FACS warns that strong
    AU12 mimics AU6/AU9 appearance changes), while AU9 lifts the nose wing
    with little corner rise; so nose-wing rise counts toward AU9 only in
    proportion to how little the corner rose. The corner's own rise is used
    next to the blendshape because mouthSmile stays at 0 for weak and
    starting smiles (measured), when the nose wing already moves.
    """
    values = _geometric([float(v) for v in current], [float(v) for v in reference], smile)
    return dict(zip(_GEOMETRIC_ORDER, values, strict=True))


def _geometric(current: Sequence[float], reference: Sequence[float], smile: float) -> tuple[float, ...]:
    """``geometric_aus`` on plain floats, in ``_GEOMETRIC_ORDER`` (no dict:
    the estimator reads them by position)."""
    aperture, brow, cheek, ala, lower_lid, corner = current
    ref_aperture, ref_brow, ref_cheek, ref_ala, ref_lower_lid, ref_corner = reference
    rel_aperture = aperture / ref_aperture - 1.0 if ref_aperture > 1e-6 else 0.0
    brow_change = brow - ref_brow
    lid_rise = (ref_lower_lid - lower_lid) / ref_aperture if ref_aperture > 1e-6 else 0.0
    # each ramp(value, dead_band, full): min(1.0, max(0.0, (value - dead_band) / span))
    raiser = _unit((brow_change - _R1[0]) / _R1[1])
    lowerer = _unit((-brow_change - _R4[0]) / _R4[1])
    lid_raiser = _unit((rel_aperture - _R5[0]) / _R5[1])
    cheek_rise = _unit((ref_cheek - cheek - _R6[0]) / _R6[1])
    cheek_raiser = math.sqrt(_unit((lid_rise - _LID[0]) / _LID[1]) * cheek_rise)
    smile = 0.0 if not math.isfinite(smile) else _unit(smile)
    corner_rise = _unit((ref_corner - corner - _CORNER[0]) / _CORNER[1])
    explained = corner_rise if corner_rise > smile else smile
    wrinkler = _unit((ref_ala - ala - _R9[0]) / _R9[1]) * (1.0 - explained)
    return raiser, lowerer, lid_raiser, cheek_raiser, wrinkler


def _unit(value: float) -> float:
    """``min(1.0, max(0.0, value))`` (NaN gives 0.0, as there)."""
    value = value if value > 0.0 else 0.0
    return value if value < 1.0 else 1.0


_R1, _R4, _R5, _R6, _R9 = (_RAMP[au] for au in _GEOMETRIC_ORDER)
_LID = (LOWER_LID_RISE[0], LOWER_LID_RISE[1] - LOWER_LID_RISE[0])
_CORNER = (CORNER_RISE[0], CORNER_RISE[1] - CORNER_RISE[0])

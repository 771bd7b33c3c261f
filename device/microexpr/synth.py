"""Synthetic micro-expression clips from real faces, with exact ground truth.

Why: no micro-expression video with frame-exact onset/apex/offset can ship
with the project, yet spotting must be tested and benchmarked on real
pixels. We take a real face (a still, or the neutral frames of a real
video), track its 478 landmarks with the real model, and deform it:

* **Action Units** move chosen landmarks (mouth corners, brows, lids,
  cheeks, nose wings, lips, chin) by a displacement given in inter-ocular
  distances (IOD) along the face's own axes; nearby landmarks follow with a
  Gaussian fall-off. The landmark displacements are spread over the whole
  image by a **piecewise-affine warp** on the Delaunay triangulation of the
  mesh plus a ring of fixed points (the background does not move), computed
  once per (base frame, event) as a dense field; each output frame is one
  ``cv2.remap`` with that field scaled by the event's temporal profile.
* **Distractors**: blinks (upper-lid margin moved onto the lower lid), gaze
  shifts (the iris points moved inside the eye), head turns (a homography
  of the whole frame: yaw-like perspective, roll and shift), and slow macro
  expressions (the same AU warps with a long rise and a hold).
* Sensor noise (Gaussian, per frame) keeps a still from being unnaturally
  static; mp4 encoding adds compression noise on top.

The temporal profile rises as a raised cosine from onset to apex, holds
(``hold_s``, macro only) and falls back to zero at the offset, so the
ground truth is exact: ``onset_frame`` is the last frame before any
movement, ``offset_frame`` the first frame after it has ended and
``apex_frame`` the frame of largest deformation.

Full-intensity amplitudes are grounded in one measurement: in
``single_face.mp4`` the broad smile moves the mouth corners by
≈0.14 IOD outward and ≈0.10 IOD up, the cheeks by ≈0.05/0.04 and the
upper lip by ≈0.06 IOD (landmarks after a similarity alignment on eye
corners and nose bridge, frame 10 vs 40). The other AUs use amplitudes of
the same order (0.03–0.08 IOD), following the movement descriptions of the
FACS manual (Ekman, Friesen & Hager 2002); "intensity" scales them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from microexpr import mesh
from microexpr.capture import Frame, open_source
from microexpr.errors import ConfigError, DataError, ExitCode, MicroexprError, NoFaceError, SourceError
from microexpr.facs import AU, AUActivation, Side
from microexpr.tracking.base import Face, FaceTracker
from microexpr.videocodec import Codec

log = logging.getLogger(__name__)

GROUND_TRUTH_SCHEMA = "microexpr.synth/1"
#: Events up to this long are micro-expressions (same default as the spotter).
MICRO_MAX_S = 0.5
#: Frame rates a clip may have (the spotter is tested from 30 to 200 fps).
MIN_FPS, MAX_FPS = 1.0, 1000.0
#: Most frames one clip may have: one hour at 30 fps. Rendering streams
#: (one frame in memory at a time), but every frame still costs a warp, an
#: encode and disk: about 10 ms and 5 kB for a 512x512 still on the 2-core
#: x86 development machine, so the cap is about 20 min and 0.5 GB. The
#: longest benchmark clip is 1 800 frames (60 s at 30 fps); a longer
#: request (``--duration 1e9``) is a typo, refused before any work instead
#: of running for years or exhausting memory in the ground-truth sampling.
MAX_FRAMES = 108_000

# Landmark vocabulary: microexpr.mesh ("L" = the subject's left).
MIRROR = mesh.MIRROR
MESH_POINTS = mesh.MESH_POINTS


class Band(StrEnum):
    """Which landmarks an anchor may move (keeps the upper lip from dragging
    the lower one, the brows from dragging the lids)."""

    ANY = "any"
    BROW = "brow"  #: above the upper-lid crease
    UPPER_LID = "upper_lid"  #: between brow and eye line
    LOWER_FACE_UPPER_LIP = "upper_lip"  #: above the mouth line, below the eyes
    LOWER_LIP = "lower_lip"  #: below the mouth line
    BELOW_EYES = "below_eyes"


@dataclass(frozen=True, slots=True)
class Anchor:
    """One landmark driven by an AU, in IOD units at full intensity.

    ``out`` is along the face's horizontal axis, positive away from the
    midline on the anchor's side (for a midline point: toward the subject's
    left); ``up`` is toward the forehead. ``sigma`` (IOD) spreads the
    movement to neighbouring landmarks within ``band``. ``landmark`` is the
    subject's-left index for lateral points (its mirror moves on the right).
    """

    landmark: int
    out: float
    up: float
    sigma: float = 0.10
    band: Band = Band.ANY


#: AU → anchors. Bilateral AUs move both sides; an AUActivation with side
#: L or R moves only that side's anchors (midline anchors then move at half
#: amplitude, as a one-sided pull drags the midline part-way).
AU_ANCHORS: dict[AU, tuple[Anchor, ...]] = {
    AU.INNER_BROW_RAISER: (
        Anchor(336, -0.005, 0.075, 0.10, Band.BROW), Anchor(285, -0.005, 0.07, 0.08, Band.BROW),
        Anchor(296, 0.0, 0.05, 0.08, Band.BROW),
    ),
    AU.OUTER_BROW_RAISER: (
        Anchor(300, 0.0, 0.07, 0.10, Band.BROW), Anchor(293, 0.0, 0.07, 0.08, Band.BROW),
        Anchor(276, 0.0, 0.06, 0.08, Band.BROW),
    ),
    AU.BROW_LOWERER: (
        Anchor(336, -0.035, -0.045, 0.10, Band.BROW), Anchor(285, -0.035, -0.045, 0.08, Band.BROW),
        Anchor(296, -0.025, -0.04, 0.10, Band.BROW), Anchor(334, -0.01, -0.03, 0.10, Band.BROW),
        Anchor(9, 0.0, -0.015, 0.06, Band.BROW),
    ),
    AU.UPPER_LID_RAISER: (
        Anchor(386, 0.0, 0.03, 0.05, Band.UPPER_LID), Anchor(385, 0.0, 0.025, 0.05, Band.UPPER_LID),
        Anchor(387, 0.0, 0.025, 0.05, Band.UPPER_LID),
    ),
    AU.CHEEK_RAISER: (
        Anchor(280, 0.01, 0.045, 0.14, Band.BELOW_EYES), Anchor(330, 0.005, 0.045, 0.12, Band.BELOW_EYES),
        Anchor(347, 0.0, 0.035, 0.10, Band.BELOW_EYES), Anchor(374, 0.0, 0.015, 0.05, Band.BELOW_EYES),
    ),
    AU.LID_TIGHTENER: (
        Anchor(374, 0.0, 0.03, 0.05, Band.BELOW_EYES), Anchor(373, 0.0, 0.025, 0.05, Band.BELOW_EYES),
        Anchor(380, 0.0, 0.025, 0.05, Band.BELOW_EYES), Anchor(386, 0.0, -0.01, 0.04, Band.UPPER_LID),
    ),
    AU.NOSE_WRINKLER: (
        Anchor(358, 0.005, 0.05, 0.08), Anchor(327, 0.005, 0.045, 0.08),
        Anchor(437, 0.0, 0.035, 0.08), Anchor(399, 0.0, 0.02, 0.06), Anchor(0, 0.0, 0.015, 0.06, Band.LOWER_FACE_UPPER_LIP),
    ),
    AU.UPPER_LIP_RAISER: (
        Anchor(0, 0.0, 0.05, 0.10, Band.LOWER_FACE_UPPER_LIP), Anchor(267, 0.0, 0.055, 0.08, Band.LOWER_FACE_UPPER_LIP),
        Anchor(269, 0.005, 0.05, 0.08, Band.LOWER_FACE_UPPER_LIP),
    ),
    AU.LIP_CORNER_PULLER: (
        Anchor(291, 0.12, 0.10, 0.12), Anchor(425, 0.04, 0.035, 0.14, Band.BELOW_EYES),
    ),
    AU.DIMPLER: (
        Anchor(291, -0.05, 0.02, 0.07), Anchor(287, -0.02, 0.005, 0.07),
    ),
    AU.LIP_CORNER_DEPRESSOR: (
        Anchor(291, 0.01, -0.06, 0.10), Anchor(287, 0.0, -0.03, 0.10),
    ),
    AU.CHIN_RAISER: (
        Anchor(18, 0.0, 0.05, 0.14, Band.LOWER_LIP), Anchor(200, 0.0, 0.045, 0.14, Band.LOWER_LIP),
        Anchor(17, 0.0, 0.025, 0.08, Band.LOWER_LIP),
    ),
    AU.LIP_STRETCHER: (
        Anchor(291, 0.09, -0.015, 0.12), Anchor(287, 0.05, -0.01, 0.10),
    ),
    AU.LIP_TIGHTENER: (
        Anchor(291, -0.02, 0.0, 0.06), Anchor(0, 0.0, -0.012, 0.06, Band.LOWER_FACE_UPPER_LIP),
        Anchor(17, 0.0, 0.012, 0.06, Band.LOWER_LIP),
    ),
    AU.LIP_PRESSOR: (
        Anchor(0, 0.0, -0.015, 0.07, Band.LOWER_FACE_UPPER_LIP), Anchor(17, 0.0, 0.02, 0.07, Band.LOWER_LIP),
        Anchor(14, 0.0, 0.015, 0.05, Band.LOWER_LIP),
    ),
    AU.LIPS_PART: (
        Anchor(17, 0.0, -0.04, 0.08, Band.LOWER_LIP), Anchor(14, 0.0, -0.04, 0.06, Band.LOWER_LIP),
    ),
    AU.JAW_DROP: (
        Anchor(17, 0.0, -0.08, 0.20, Band.LOWER_LIP), Anchor(152, 0.0, -0.08, 0.30, Band.LOWER_LIP),
    ),
}


def synthesisable_aus() -> tuple[AU, ...]:
    """The AUs ``synth`` can play (besides blink and gaze distractors)."""
    return tuple(AU_ANCHORS)


# --------------------------------------------------------------------------
# Events and ground truth


class EventKind(StrEnum):
    EXPRESSION = "expression"  #: AU warp; micro or macro by duration
    BLINK = "blink"
    GAZE = "gaze"
    HEAD_TURN = "head_turn"


class TruthKind(StrEnum):
    """The ground-truth label of an event: what a spotter should report."""

    MICRO = "micro"
    MACRO = "macro"
    BLINK = "blink"  #: distractor: must not be spotted
    GAZE = "gaze"  #: distractor
    HEAD_TURN = "head_turn"  #: distractor


def raised_cosine(u: float, rise_s: float, hold_s: float, fall_s: float) -> float:
    """0..1 level ``u`` seconds after the onset: a raised-cosine rise over
    ``rise_s``, ``hold_s`` at the apex, a raised-cosine fall over ``fall_s``,
    0 before and after. Smooth at both ends, as a muscle starts and stops."""
    if u <= 0.0:
        return 0.0
    if u < rise_s:
        return 0.5 - 0.5 * math.cos(math.pi * u / rise_s)
    if u <= rise_s + hold_s:
        return 1.0
    v = u - rise_s - hold_s
    if fall_s <= 0.0 or v >= fall_s:
        return 0.0
    return 0.5 + 0.5 * math.cos(math.pi * v / fall_s)


@dataclass(frozen=True, slots=True)
class SynthEvent:
    """One scripted movement.

    ``rise_s`` is onset→apex; ``hold_s`` keeps the apex (macro expressions);
    ``fall_s`` is apex→offset. For head turns ``intensity`` scales the
    default turn (``turn_yaw_deg`` of perspective yaw, ``turn_roll_deg`` of
    roll, ``turn_shift_iod`` of sideways shift) and the head stays turned
    unless ``fall_s`` > 0 brings it back. Gaze: ``intensity`` 1 moves the
    iris by a third of the eye width toward the subject's left (negative:
    right), and it stays there unless ``fall_s`` > 0.
    """

    kind: EventKind
    onset_s: float
    rise_s: float
    fall_s: float
    hold_s: float = 0.0
    intensity: float = 1.0
    aus: tuple[AUActivation, ...] = ()
    turn_yaw_deg: float = 12.0
    turn_roll_deg: float = 6.0
    turn_shift_iod: float = 0.25

    @property
    def apex_s(self) -> float:
        return self.onset_s + self.rise_s

    @property
    def offset_s(self) -> float:
        return self.onset_s + self.rise_s + self.hold_s + self.fall_s

    @property
    def duration_s(self) -> float:
        return self.offset_s - self.onset_s

    def level(self, t: float) -> float:
        """0..1 deformation at time ``t`` (raised-cosine rise and fall)."""
        if self.fall_s <= 0.0 and self.kind in (EventKind.HEAD_TURN, EventKind.GAZE) and t > self.apex_s:
            return 1.0  # turned or looking away for good
        return raised_cosine(t - self.onset_s, self.rise_s, self.hold_s, self.fall_s)

    def truth_kind(self, micro_max_s: float = MICRO_MAX_S) -> TruthKind:
        if self.kind is EventKind.EXPRESSION:
            return TruthKind.MICRO if self.duration_s <= micro_max_s + 1e-9 else TruthKind.MACRO
        return TruthKind(self.kind.value)


@dataclass(frozen=True, slots=True)
class TruthEvent:
    """One event of a rendered clip, in frames and source seconds."""

    kind: TruthKind
    aus: str  #: dataset notation, e.g. "6+L12"; empty for distractors
    onset_frame: int
    apex_frame: int
    offset_frame: int
    onset_ts: float
    apex_ts: float
    offset_ts: float
    duration_s: float
    intensity: float
    #: True when a spotter should report it (micro and macro expressions).
    expect_episode: bool


@dataclass(frozen=True, slots=True)
class GroundTruth:
    source: str
    fps: float
    frame_count: int
    width: int
    height: int
    noise_sigma: float
    seed: int
    events: tuple[TruthEvent, ...]
    schema: str = GROUND_TRUTH_SCHEMA

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str, *, name: str = "ground truth") -> GroundTruth:
        try:
            data = json.loads(text)
            if data.get("schema") != GROUND_TRUTH_SCHEMA:
                raise DataError(f"{name}: schema {data.get('schema')!r} is not {GROUND_TRUTH_SCHEMA}")
            events = tuple(
                TruthEvent(**{**e, "kind": TruthKind(e["kind"])}) for e in data.pop("events")
            )
            return cls(**data, events=events)
        except DataError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DataError(f"{name}: not a synth ground-truth file: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc.strerror}") from None
        return cls.from_json(text, name=str(path))


def format_aus(aus: Sequence[AUActivation]) -> str:
    return "+".join(str(a) for a in aus)


_AU_TOKEN = re.compile(r"([LR]?)(\d+)")


def parse_aus(text: str, *, what: str = "AUs") -> tuple[AUActivation, ...]:
    """``"6+L12"`` → activations (only the AUs this module can play)."""
    out: list[AUActivation] = []
    for token in text.replace(" ", "").split("+"):
        match = _AU_TOKEN.fullmatch(token.upper())
        if not match:
            raise ConfigError(f"{what}: cannot read AU {token!r} in {text!r} (write e.g. 12, L12, 1+2)")
        try:
            au = AU(int(match.group(2)))
        except ValueError:
            raise ConfigError(f"{what}: AU{match.group(2)} is not a FACS Action Unit") from None
        if au not in AU_ANCHORS:
            known = ", ".join(str(a.value) for a in AU_ANCHORS)
            raise ConfigError(f"{what}: AU{au.value} cannot be synthesised (known: {known}, plus blink, gaze, turn)")
        side = Side(match.group(1)) if match.group(1) else Side.BOTH
        out.append(AUActivation(au, side, 1.0))
    return tuple(out)


_EVENT = re.compile(
    r"(?P<what>[A-Za-z0-9+ ]+?)@(?P<start>[0-9.]+)/(?P<dur>[0-9.]+)(?:\*(?P<int>-?[0-9.]+))?(?:,hold=(?P<hold>[0-9.]+))?"
)


def parse_event(spec: str, *, apex_fraction: float = 0.4) -> SynthEvent:
    """Parse the command-line event mini-language.

    ``WHAT@START/DURATION[*INTENSITY][,hold=S]``: WHAT is an AU list
    (``12``, ``L12``, ``1+2``, ``6+12``), ``blink``, ``gaze`` or ``turn``;
    START and DURATION in seconds; INTENSITY 0..1 (default 1). For
    expressions the apex falls at ``apex_fraction`` of the duration
    excluding the hold; a head turn or a gaze shift moves over DURATION and
    stays.
    """
    match = _EVENT.fullmatch(spec.strip())
    if not match:
        raise ConfigError(f"--event {spec!r}: expected WHAT@START/DURATION[*INTENSITY][,hold=S], e.g. L12@1.0/0.2*0.5")
    what = match.group("what").strip().lower()

    def number(group: str, default: float) -> float:
        text = match.group(group)
        if not text:
            return default
        try:
            value = float(text)  # the pattern lets "1.2.3" through
        except ValueError:
            raise ConfigError(f"--event {spec!r}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"--event {spec!r}: {text[:20]}... is too large")
        return value

    start, dur = number("start", 0.0), number("dur", 0.0)
    intensity, hold = number("int", 1.0), number("hold", 0.0)
    if dur <= 0:
        raise ConfigError(f"--event {spec!r}: duration must be > 0")
    if what in ("turn", "gaze"):
        if not 0.0 < abs(intensity) <= 3.0:
            raise ConfigError(f"--event {spec!r}: a {what} intensity must be within -3..3 and not 0, got {intensity}")
        kind = EventKind.HEAD_TURN if what == "turn" else EventKind.GAZE
        return SynthEvent(kind, start, dur, 0.0, 0.0, intensity)
    if not 0.0 < intensity <= 1.5:
        raise ConfigError(f"--event {spec!r}: intensity must be in (0, 1.5], got {intensity}")
    if what == "blink":
        return SynthEvent(EventKind.BLINK, start, dur * 0.4, dur * 0.6, 0.0, intensity)
    moving = max(dur - hold, 1e-3)
    return SynthEvent(
        EventKind.EXPRESSION, start, moving * apex_fraction, moving * (1.0 - apex_fraction), hold, intensity,
        aus=parse_aus(what, what=f"--event {spec!r}"),
    )


def truth_for(events: Sequence[SynthEvent], fps: float, frame_count: int, micro_max_s: float = MICRO_MAX_S) -> tuple[TruthEvent, ...]:
    """Frame-exact ground truth of ``events`` sampled at ``fps``."""
    out = []
    for ev in events:
        times = np.arange(frame_count) / fps
        levels = np.array([ev.level(float(t)) for t in times])
        moving = np.nonzero(levels > 0.0)[0]
        if moving.size == 0:
            continue  # falls between frames or outside the clip: nothing to see
        onset = int(max(moving[0] - 1, 0))
        offset = int(min(moving[-1] + 1, frame_count - 1))
        if ev.kind in (EventKind.HEAD_TURN, EventKind.GAZE) and ev.fall_s <= 0:
            # the head (or the gaze) stays where it went: the event is the movement
            offset = int(min(math.ceil(ev.offset_s * fps), frame_count - 1))
        apex = int(moving[np.argmax(levels[moving])])
        kind = ev.truth_kind(micro_max_s)
        out.append(TruthEvent(
            kind=kind, aus=format_aus(ev.aus), onset_frame=onset, apex_frame=apex, offset_frame=offset,
            onset_ts=onset / fps, apex_ts=apex / fps, offset_ts=offset / fps,
            duration_s=round(ev.duration_s, 6), intensity=ev.intensity,
            expect_episode=kind in (TruthKind.MICRO, TruthKind.MACRO),
        ))
    return tuple(out)


# --------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True, slots=True)
class FaceAxes:
    """The face's own frame in pixels: origin between the eyes, ``x`` toward
    the subject's left, ``up`` toward the forehead, ``iod`` in pixels."""

    origin: np.ndarray
    x: np.ndarray
    up: np.ndarray
    iod: float

    @classmethod
    def from_landmarks(cls, pts: np.ndarray) -> FaceAxes:
        right, left = pts[33, :2].astype(np.float64), pts[263, :2].astype(np.float64)
        d = left - right
        iod = float(np.hypot(*d))
        if iod < 4.0:
            raise NoFaceError(f"face too small to warp (inter-ocular distance {iod:.1f} px)")
        x = d / iod
        up = np.array([x[1], -x[0]])
        return cls((left + right) / 2.0, x, up, iod)

    def to_face(self, pts: np.ndarray) -> np.ndarray:
        """Pixel points → (x, up) in IOD units."""
        rel = pts[:, :2].astype(np.float64) - self.origin
        return np.stack([rel @ self.x, rel @ self.up], axis=1) / self.iod

    def vector(self, along_x: float, up: float) -> np.ndarray:
        return self.iod * (along_x * self.x + up * self.up)


def _side_of(landmark: int) -> Side:
    if landmark in mesh.MIDLINE:
        return Side.BOTH
    if landmark in MIRROR:
        return Side.LEFT
    return Side.RIGHT


def _band_mask(band: Band, face_pts: np.ndarray) -> np.ndarray:
    """Which mesh points an anchor of ``band`` may move (face units, up > 0)."""
    up = face_pts[:, 1]
    eye_line = 0.0
    brow_floor = float(np.mean(face_pts[[27, 257, 28, 258], 1]))  # upper-lid crease
    mouth_line = float(np.mean(face_pts[[13, 14, 61, 291], 1]))
    if band is Band.ANY:
        return np.ones(len(face_pts), bool)
    if band is Band.BROW:
        return up >= brow_floor - 0.02
    if band is Band.UPPER_LID:
        return (up > eye_line - 0.02) & (up < brow_floor + 0.02)
    if band is Band.BELOW_EYES:
        return up < eye_line + 0.01
    if band is Band.LOWER_FACE_UPPER_LIP:
        return (up > mouth_line + 0.002) & (up < eye_line - 0.15)
    if band is Band.LOWER_LIP:
        return up < mouth_line - 0.002
    raise AssertionError(band)


def expression_displacements(pts: np.ndarray, aus: Sequence[AUActivation], intensity: float) -> np.ndarray:
    """Landmark displacements (pixels, (N, 2)) of ``aus`` at ``intensity``."""
    axes = FaceAxes.from_landmarks(pts)
    face_pts = axes.to_face(pts[:MESH_POINTS])
    disp = np.zeros((MESH_POINTS, 2))
    for act in aus:
        # Within one AU, overlapping fall-offs are averaged, not summed, so
        # a point between two anchors moves as far as they do, not twice;
        # different AUs add up.
        num = np.zeros((MESH_POINTS, 2))
        den = np.zeros(MESH_POINTS)
        for anchor in AU_ANCHORS[act.au]:
            targets: list[tuple[int, float, float]] = []  # (landmark, sign of x, amplitude factor)
            if _side_of(anchor.landmark) is Side.BOTH:
                factor = 1.0 if act.side is Side.BOTH else 0.5
                targets.append((anchor.landmark, 1.0, factor))
            else:
                if act.side in (Side.BOTH, Side.LEFT):
                    targets.append((anchor.landmark, 1.0, 1.0))
                if act.side in (Side.BOTH, Side.RIGHT):
                    targets.append((MIRROR[anchor.landmark], -1.0, 1.0))
            mask = _band_mask(anchor.band, face_pts)
            for lm, sign, factor in targets:
                r2 = np.sum((face_pts - face_pts[lm]) ** 2, axis=1)
                w = np.exp(-r2 / (2.0 * anchor.sigma**2)) * mask
                if anchor.band is not Band.ANY and not mask[lm]:
                    w[lm] = 1.0
                # lateral fall-off stays on the anchor's side of the face
                side = _side_of(lm)
                if side is Side.LEFT:
                    w = w * np.clip(0.5 + face_pts[:, 0] / 0.1, 0.0, 1.0)
                elif side is Side.RIGHT:
                    w = w * np.clip(0.5 - face_pts[:, 0] / 0.1, 0.0, 1.0)
                vec = axes.vector(sign * anchor.out, anchor.up) * factor * intensity * act.intensity
                num += w[:, None] * vec[None, :]
                den += w
        disp += num / np.maximum(den, 1.0)[:, None]
    return disp


def blink_displacements(pts: np.ndarray, intensity: float) -> np.ndarray:
    disp = np.zeros((MESH_POINTS, 2))
    closure = 0.95 * intensity
    for upper, lower in mesh.BLINK_PAIRS:
        disp[upper] = (pts[lower, :2] - pts[upper, :2]) * closure
    for crease, margin in mesh.LID_CREASE.items():
        disp[crease] = 0.3 * disp[margin]
    return disp


def gaze_displacements(pts: np.ndarray, intensity: float) -> np.ndarray:
    """Iris points moved sideways (returns (478, 2): the iris is included)."""
    axes = FaceAxes.from_landmarks(pts)
    disp = np.zeros((len(pts), 2))
    corners = ((mesh.RIGHT_EYE_OUTER, mesh.RIGHT_EYE_INNER), (mesh.LEFT_EYE_INNER, mesh.LEFT_EYE_OUTER))
    for iris, (a, b) in zip((mesh.RIGHT_IRIS, mesh.LEFT_IRIS), corners):
        width = float(np.linalg.norm(pts[a, :2] - pts[b, :2]))
        disp[list(iris)] = axes.x * width * intensity / 3.0
    return disp


def _fixed_ring(pts: np.ndarray, width: int, height: int) -> np.ndarray:
    """Points that never move: the image border and a ring around the face,
    so the background stays put and the warp stays local to the face."""
    hull = cv2.convexHull(pts[:MESH_POINTS, :2].astype(np.float32)).reshape(-1, 2)
    centre = pts[:MESH_POINTS, :2].mean(axis=0)
    ring = centre + (hull - centre) * 1.35
    border = []
    for f in np.linspace(0.0, 1.0, 9):
        border += [(f * (width - 1), 0), (f * (width - 1), height - 1), (0, f * (height - 1)), (width - 1, f * (height - 1))]
    pts_all = np.vstack([ring, np.array(border, float)])
    pts_all[:, 0] = np.clip(pts_all[:, 0], 0, width - 1)
    pts_all[:, 1] = np.clip(pts_all[:, 1], 0, height - 1)
    return pts_all


def _triangulate(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Delaunay triangles as (M, 3) indices into ``points``."""
    subdiv = cv2.Subdiv2D((0, 0, width + 1, height + 1))
    index = {}
    for i, (x, y) in enumerate(points):
        key = (round(float(x), 3), round(float(y), 3))
        if key in index:
            continue
        index[key] = i
        subdiv.insert((float(x), float(y)))
    tris = []
    for x1, y1, x2, y2, x3, y3 in subdiv.getTriangleList():
        ids = [index.get((round(float(x), 3), round(float(y), 3))) for x, y in ((x1, y1), (x2, y2), (x3, y3))]
        if None in ids:
            continue  # a corner of Subdiv2D's virtual outer triangle
        tris.append(ids)
    return np.array(tris, dtype=np.int64)


def dense_field(pts: np.ndarray, disp: np.ndarray, width: int, height: int) -> np.ndarray:
    """Piecewise-affine interpolation of landmark displacements to every
    pixel: (H, W, 2) float32, zero away from the face."""
    n = len(disp)
    src = np.vstack([pts[:n, :2].astype(np.float64), _fixed_ring(pts, width, height)])
    d = np.vstack([disp, np.zeros((len(src) - n, 2))])
    tris = _triangulate(src, width, height)
    labels = np.full((height, width), -1, np.int32)
    bary = np.zeros((len(tris), 3, 3))
    keep = []
    for t, (a, b, c) in enumerate(tris):
        m = np.array([[src[a, 0], src[b, 0], src[c, 0]], [src[a, 1], src[b, 1], src[c, 1]], [1.0, 1.0, 1.0]])
        if abs(np.linalg.det(m)) < 1e-6:
            continue
        bary[t] = np.linalg.inv(m)
        keep.append(t)
        if np.any(d[[a, b, c]]):
            cv2.fillConvexPoly(labels, np.round(src[[a, b, c]]).astype(np.int32), int(t))
    field_ = np.zeros((height, width, 2), np.float32)
    ys, xs = np.nonzero(labels >= 0)
    if ys.size == 0:
        return field_
    t = labels[ys, xs]
    homog = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float64)
    lam = np.einsum("nij,nj->ni", bary[t], homog)
    lam = np.clip(lam, 0.0, 1.0)
    lam /= np.maximum(lam.sum(axis=1, keepdims=True), 1e-9)
    vals = np.einsum("ni,nik->nk", lam, d[tris[t]])
    field_[ys, xs] = vals.astype(np.float32)
    return field_


def warp(image: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Move the pixels of ``image`` by the forward field (backward mapping
    with three fixed-point steps: exact enough for fields of a few pixels)."""
    h, w = image.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    back = forward.copy()
    for _ in range(3):
        back = cv2.remap(forward, gx - back[..., 0], gy - back[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return cv2.remap(image, gx - back[..., 0], gy - back[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def head_turn_matrix(axes: FaceAxes, width: int, height: int, yaw_deg: float, roll_deg: float, shift_iod: float) -> np.ndarray:
    """A homography that turns the (planar) image about the face centre:
    perspective yaw about the vertical axis, roll in the image plane, and a
    sideways shift. Focal length ≈ the image width, as for a webcam."""
    f = float(max(width, height))
    cx, cy = float(axes.origin[0]), float(axes.origin[1])
    k = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
    yaw = math.radians(yaw_deg)
    ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    homography = k @ ry @ np.linalg.inv(k)
    roll = cv2.getRotationMatrix2D((cx, cy), roll_deg, 1.0)
    roll3 = np.vstack([roll, [0, 0, 1]])
    shift = np.eye(3)
    shift[:2, 2] = axes.x * shift_iod * axes.iod
    return shift @ roll3 @ homography


# --------------------------------------------------------------------------
# Rendering


@dataclass(slots=True)
class _Base:
    """One base frame of the real face, with its landmarks and cached fields."""

    image: np.ndarray
    landmarks: np.ndarray
    fields: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SynthSpec:
    """What to render. ``source`` is an image or a video; for a video,
    ``base_frames`` (first, last) picks its neutral stretch, played back and
    forth at its own rate to make a neutral background of any length."""

    source: Path
    fps: float
    duration_s: float
    events: tuple[SynthEvent, ...]
    noise_sigma: float = 2.0
    seed: int = 0
    base_frames: tuple[int, int] | None = None
    micro_max_s: float = MICRO_MAX_S


def clip_frame_count(fps: float, duration_s: float, *, fps_name: str = "synth.fps",
                     duration_name: str = "synth.duration") -> int:
    """Frames of a clip of ``duration_s`` at ``fps``, checked against
    ``MIN_FPS``..``MAX_FPS`` and ``MAX_FRAMES``; a ConfigError names the
    value by ``fps_name`` / ``duration_name`` (the CLI passes its options)."""
    if not (MIN_FPS <= fps <= MAX_FPS):  # also false for NaN
        raise ConfigError(f"{fps_name}: must be within {MIN_FPS:g}..{MAX_FPS:g}, got {fps:g}")
    if not duration_s > 0:
        raise ConfigError(f"{duration_name}: must be > 0, got {duration_s:g}")
    frames = duration_s * fps
    if not frames <= MAX_FRAMES:  # also false for inf and NaN
        raise ConfigError(f"{duration_name}: {duration_s:g} s at {fps:g} fps is {frames:.3g} frames; a clip has "
                          f"at most {MAX_FRAMES} frames ({MAX_FRAMES / 30 / 3600:g} h at 30 fps)")
    return max(1, int(round(frames)))


def _load_base_images(spec: SynthSpec) -> tuple[list[np.ndarray], float]:
    """The base frames of ``spec``: all of an image or folder, or the
    ``base_frames`` stretch of a video (refused when it runs past the end,
    naming the video's frame count, rather than silently cut short)."""
    with open_source(spec.source) as src:
        if src.is_live:
            raise SourceError(f"{spec.source}: a camera cannot be a synth source; give an image or a video file",
                              exit_code=ExitCode.USAGE)
        images: list[np.ndarray] = []
        first, last = spec.base_frames if spec.base_frames else (0, 10**9)
        seen = 0
        for frame in src:
            seen = frame.index + 1
            if frame.index < first:
                continue
            if frame.index > last:
                break
            images.append(frame.image)
        base_fps = float(src.fps) if not math.isnan(src.fps) else 30.0
    if spec.base_frames and seen <= last:
        count = f"{seen} frame" + ("" if seen == 1 else "s")
        raise SourceError(f"{spec.source}: base frames {first}-{last} asked for, but it has {count}"
                          + (f" (0-{seen - 1})" if seen > 1 else ""), exit_code=ExitCode.USAGE)
    if not images:
        raise SourceError(f"{spec.source}: no frames in {spec.base_frames}")
    return images, base_fps


def _track_bases(images: list[np.ndarray], tracker: FaceTracker, base_fps: float, source: Path) -> list[_Base]:
    """Landmarks of every base frame. A tracker in VIDEO mode that was
    following another face needs a call or two to detect this one, so a
    frame without a face is offered again (three tries) before giving up."""
    bases: list[_Base] = []
    for i, image in enumerate(images):
        face: Face | None = None
        for attempt in range(3):
            face = tracker.process(Frame(i, (3 * i + attempt) / base_fps, image)).face
            if face is not None:
                break
        if face is None:
            raise NoFaceError(f"{source}: no face in base frame {i}")
        bases.append(_Base(image, np.asarray(face.landmarks, dtype=np.float64)))
    return bases


class Renderer:
    """Renders the frames of a ``SynthSpec``; iterate for ``Frame`` objects.

    ``tracker`` finds the landmarks of the base frames (the real model).
    """

    def __init__(self, spec: SynthSpec, tracker: FaceTracker) -> None:
        self.frame_count = clip_frame_count(spec.fps, spec.duration_s)
        self.spec = spec
        images, self.base_fps = _load_base_images(spec)
        self._bases = _track_bases(images, tracker, self.base_fps, spec.source)
        self.height, self.width = self._bases[0].image.shape[:2]
        self.truth = GroundTruth(
            source=str(spec.source), fps=spec.fps, frame_count=self.frame_count, width=self.width,
            height=self.height, noise_sigma=spec.noise_sigma, seed=spec.seed,
            events=truth_for(spec.events, spec.fps, self.frame_count, spec.micro_max_s),
        )
        self._rng = np.random.default_rng(spec.seed)

    def _base_index(self, t: float) -> int:
        n = len(self._bases)
        if n == 1:
            return 0
        k = int(t * self.base_fps)
        period = 2 * (n - 1)
        k %= period
        return k if k < n else period - k

    def _field(self, base: _Base, event_no: int) -> np.ndarray:
        cached = base.fields.get(event_no)
        if cached is None:
            ev = self.spec.events[event_no]
            pts = base.landmarks
            if ev.kind is EventKind.EXPRESSION:
                disp = expression_displacements(pts, ev.aus, ev.intensity)
            elif ev.kind is EventKind.BLINK:
                disp = blink_displacements(pts, ev.intensity)
            elif ev.kind is EventKind.GAZE:
                disp = gaze_displacements(pts, ev.intensity)
            else:
                raise AssertionError(ev.kind)
            cached = dense_field(pts, disp, self.width, self.height)
            base.fields[event_no] = cached
        return cached

    def render(self, index: int) -> np.ndarray:
        """Frame ``index`` of the clip (BGR uint8)."""
        t = index / self.spec.fps
        base = self._bases[self._base_index(t)]
        total = np.zeros((self.height, self.width, 2), np.float32)
        matrix = np.eye(3)
        axes = FaceAxes.from_landmarks(base.landmarks)
        for no, ev in enumerate(self.spec.events):
            level = ev.level(t)
            if level <= 0.0:
                continue
            if ev.kind is EventKind.HEAD_TURN:
                # turns compose: each one that has started adds its share
                k = ev.intensity * level
                matrix = head_turn_matrix(axes, self.width, self.height, ev.turn_yaw_deg * k,
                                          ev.turn_roll_deg * k, ev.turn_shift_iod * k) @ matrix
            else:
                total += self._field(base, no) * np.float32(level)
        image = warp(base.image, total) if np.any(total) else base.image.copy()
        if not np.allclose(matrix, np.eye(3)):
            image = cv2.warpPerspective(image, matrix, (self.width, self.height), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT)
        if self.spec.noise_sigma > 0:
            noise = self._rng.normal(0.0, self.spec.noise_sigma, image.shape).astype(np.float32)
            image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        return image

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.frame_count):
            yield Frame(i, i / self.spec.fps, self.render(i))


ProgressFn = Callable[[int, int], None]


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:  # one of them does not exist yet
        return False


def check_outputs(source: Path | str, out_video: Path | str, out_truth: Path | str | None = None) -> tuple[Path, Path]:
    """The (video, ground truth) paths a clip of ``source`` will be written
    to, checked before any work: neither may be the source or the other
    (the rename at the end would replace it), both folders must exist or be
    creatable and be writable, neither path may be a folder. Returns the
    truth path resolved to its default (the video's path with ``.json``).
    Clobbering is a usage error (exit 2), an unwritable place exit 74."""
    out_video = Path(out_video)
    out_truth = Path(out_truth) if out_truth else out_video.with_suffix(".json")
    source = Path(source)
    for what, path in (("output", out_video), ("ground truth", out_truth)):
        if _same_file(path, source):
            raise MicroexprError(f"{what} {path}: is the input media; refusing to overwrite it", exit_code=ExitCode.USAGE)
    if _same_file(out_video, out_truth):
        raise MicroexprError(f"ground truth {out_truth}: is also the output video; give two files",
                             exit_code=ExitCode.USAGE)
    for what, path in (("output", out_video), ("ground truth", out_truth)):
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # it, or a parent, is a file
            raise MicroexprError(f"{what} {path}: {folder} is not a folder", exit_code=ExitCode.IO_ERROR) from None
        except OSError as exc:
            raise MicroexprError(f"{what} {path}: cannot create folder {folder}: {exc.strerror}",
                                 exit_code=ExitCode.IO_ERROR) from None
        if path.is_dir():
            raise MicroexprError(f"{what} {path}: is a folder, not a file", exit_code=ExitCode.IO_ERROR)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise MicroexprError(f"{what} {path}: folder {folder} is not writable", exit_code=ExitCode.IO_ERROR)
    return out_video, out_truth


@contextlib.contextmanager
def _staged(*targets: Path) -> Iterator[tuple[Path, ...]]:
    """Temporary files beside ``targets`` (same folder, so the rename is
    atomic), created now to prove they can be written; renamed over the
    targets only when the body succeeds, removed on any failure (Ctrl-C
    included). The video and its ground truth thus appear together or not
    at all: if the second rename fails, the first target is removed again."""
    temps = tuple(t.parent / f".{t.stem}.{os.getpid()}.part{t.suffix}" for t in targets)  # suffix: picks the container
    made: list[Path] = []
    placed: list[Path] = []
    try:
        for target, tmp in zip(targets, temps):
            try:
                tmp.open("wb").close()  # honours the umask, unlike mkstemp
            except OSError as exc:
                raise MicroexprError(f"{target}: cannot write: {exc.strerror}", exit_code=ExitCode.IO_ERROR) from None
            made.append(tmp)
        yield temps
        for target, tmp in zip(targets, temps):
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise MicroexprError(f"{target}: cannot write: {exc.strerror}", exit_code=ExitCode.IO_ERROR) from None
            placed.append(target)
    except BaseException:
        for path in (*made, *placed):
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def write_clip(spec: SynthSpec, tracker: FaceTracker, out_video: Path, out_truth: Path | None = None,
               progress: ProgressFn | None = None, codec: Codec = Codec.MP4V) -> GroundTruth:
    """Render ``spec`` to ``out_video`` (mp4, codec mp4v; or ``Codec.MJPEG_AVI``:
    a webcam's MJPEG in .avi) and its ground truth to ``out_truth``
    (default: the video's path with ``.json``).

    Both are written to temporary files beside them and renamed into place
    together at the end, so a failure (an unwritable truth folder, a full
    disk, Ctrl-C) leaves neither half a video nor a video without truth.
    """
    clip_frame_count(spec.fps, spec.duration_s)  # before any file is touched
    out_video, out_truth = check_outputs(spec.source, out_video, out_truth)
    with _staged(out_video, out_truth) as (tmp_video, tmp_truth):
        renderer = Renderer(spec, tracker)
        if codec not in (Codec.MP4V, Codec.MJPEG_AVI):
            raise ValueError(f"write_clip writes one video file: mp4v or mjpeg_avi, not {codec.value}")
        fourcc = "MJPG" if codec is Codec.MJPEG_AVI else "mp4v"
        writer = cv2.VideoWriter(str(tmp_video), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), spec.fps,
                                 (renderer.width, renderer.height))
        if not writer.isOpened():
            raise MicroexprError(f"{out_video}: cannot open a video writer ({fourcc})", exit_code=ExitCode.IO_ERROR)
        try:
            for frame in renderer:
                writer.write(frame.image)
                if progress:
                    progress(frame.index + 1, renderer.frame_count)
        finally:
            writer.release()
        if not tmp_video.stat().st_size:
            raise MicroexprError(f"{out_video}: the video writer wrote nothing", exit_code=ExitCode.IO_ERROR)
        try:
            tmp_truth.write_text(renderer.truth.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            raise MicroexprError(f"{out_truth}: cannot write: {exc.strerror}", exit_code=ExitCode.IO_ERROR) from None
    log.info("wrote %s (%d frames at %g fps) and %s", out_video, renderer.frame_count, spec.fps, out_truth)
    return renderer.truth


# --------------------------------------------------------------------------
# Scoring spotted episodes against the ground truth


@dataclass(frozen=True, slots=True)
class Match:
    """A ground-truth event and the episode matched to it (or None)."""

    truth: TruthEvent
    onset_frame: int | None = None
    apex_frame: int | None = None
    offset_frame: int | None = None
    kind: str | None = None
    iou: float = 0.0

    @property
    def apex_error(self) -> int | None:
        return None if self.apex_frame is None else self.apex_frame - self.truth.apex_frame


@dataclass(frozen=True, slots=True)
class SpotScore:
    """Episode-level scores of one clip (or several, summed).

    An episode matches an expected event (micro or macro) when their frame
    intervals overlap with IoU ≥ ``min_iou``; each side is matched at most
    once, best IoU first. Unmatched episodes are false positives, whatever
    they overlap (a blink, a head turn, nothing).
    """

    tp: int
    fp: int
    fn: int
    matches: tuple[Match, ...]
    false_episodes: tuple[tuple[int, int, int], ...]  #: (onset, apex, offset) frames
    duration_s: float

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_per_minute(self) -> float:
        return 60.0 * self.fp / self.duration_s if self.duration_s > 0 else 0.0

    def __add__(self, other: SpotScore) -> SpotScore:
        return SpotScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                         self.matches + other.matches, self.false_episodes + other.false_episodes,
                         self.duration_s + other.duration_s)


def interval_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """IoU of two inclusive frame intervals."""
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def score_episodes(truth: GroundTruth, episodes: Sequence[Any], *, min_iou: float = 0.5) -> SpotScore:
    """Match ``episodes`` (anything with onset/apex/offset_frame and kind)
    to the clip's expected events."""
    expected = [t for t in truth.events if t.expect_episode]
    pairs = sorted(
        ((interval_iou((e.onset_frame, e.offset_frame), (t.onset_frame, t.offset_frame)), i, j)
         for i, e in enumerate(episodes) for j, t in enumerate(expected)),
        reverse=True,
    )
    used_e: set[int] = set()
    matched: dict[int, Match] = {}
    for iou, i, j in pairs:
        if iou < min_iou or i in used_e or j in matched:
            continue
        e = episodes[i]
        used_e.add(i)
        matched[j] = Match(expected[j], e.onset_frame, e.apex_frame, e.offset_frame, str(getattr(e.kind, "value", e.kind)), round(iou, 3))
    matches = tuple(matched.get(j, Match(t)) for j, t in enumerate(expected))
    false = tuple((e.onset_frame, e.apex_frame, e.offset_frame) for i, e in enumerate(episodes) if i not in used_e)
    return SpotScore(len(matched), len(false), len(expected) - len(matched), matches, false,
                     truth.frame_count / truth.fps)

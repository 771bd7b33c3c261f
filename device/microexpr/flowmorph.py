"""Held-out test clips made another way than ``synth.py``: a dense-flow morph.

Why: rules tuned on ``synth.py``'s landmark warps could learn that
generator's quirks (its piecewise-affine triangles, its Gaussian fall-off
around chosen landmarks). These clips are made without landmarks at all:
the dense optical flow (Farnebäck, OpenCV) from a real person's own smile
frame back to his neutral frame says where every pixel of the smile came
from; scaling it by ``intensity x level(t)`` and resampling the neutral
frame there (``cv2.remap``) gives a smile of any strength with a
raised-cosine time course. The background is the real clip's calm
stretch played back and forth: a real face at rest with its natural small
motion and reversals, which the spotter must not report.

Camera distractors applied on top of any clip (``Distortion``): Gaussian
sensor noise, auto-exposure flicker (global gain steps and ramps), and a
face sliding into and out of the frame. The codecs are ``videocodec``'s.

Ground truth uses ``synth``'s ``TruthEvent``/``GroundTruth`` so the same
scoring (``synth.score_episodes``) applies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from microexpr.synth import GroundTruth, TruthEvent, TruthKind, raised_cosine

#: single_face.mp4: frames 5-14 are at rest (the head settles in 0-4, the
#: mouth corners start to move at 16), the smile's apex is near frame 40.
NEUTRAL_FRAMES = (5, 14)
SMILE_FRAME = 40
REFERENCE_FRAME = 10


@dataclass(frozen=True, slots=True)
class MorphEvent:
    """A smile morph: raised-cosine rise to ``intensity`` over ``rise_s``,
    optional hold, raised-cosine fall over ``fall_s``."""

    onset_s: float
    rise_s: float
    fall_s: float
    intensity: float = 1.0
    hold_s: float = 0.0

    @property
    def offset_s(self) -> float:
        return self.onset_s + self.rise_s + self.hold_s + self.fall_s

    @property
    def duration_s(self) -> float:
        return self.offset_s - self.onset_s

    def level(self, t: float) -> float:
        return raised_cosine(t - self.onset_s, self.rise_s, self.hold_s, self.fall_s)


def micro(onset_s: float, duration_s: float, intensity: float) -> MorphEvent:
    """A micro smile: apex at the middle (rise = fall = duration / 2)."""
    return MorphEvent(onset_s, duration_s / 2, duration_s / 2, intensity)


@dataclass(frozen=True, slots=True)
class Distortion:
    """Camera effects applied per frame after the morph.

    ``noise_sigma``: Gaussian sensor noise (grey levels). ``flicker``:
    auto-exposure gain changes: a step of ±``flicker`` every
    ``flicker_period_s`` alternating with a linear ramp of the same size
    over half a period. ``enter_leave``: the face slides in from the left
    edge over 0.5 s at the start and out over 0.5 s ``enter_leave`` s before
    the end (no face in the first and last 0.4 s)."""

    noise_sigma: float = 0.0
    flicker: float = 0.0
    flicker_period_s: float = 1.3
    enter_leave: float = 0.0

    def gain(self, t: float) -> float:
        """1 ± ``flicker``, alternating sign every period; the change is a
        step in two periods out of four and a ramp over half a period in
        the others (auto-exposure does both)."""
        if self.flicker <= 0:
            return 1.0
        k, u = divmod(t, self.flicker_period_s)
        k = int(k)
        level = 1.0 if k % 2 == 0 else -1.0
        if k % 4 >= 2 and k > 0:
            ramp = min(1.0, u / (self.flicker_period_s / 2))
            level = -level + 2 * level * ramp
        return 1.0 + self.flicker * level


def _face_only(flow: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The flow inside the face's hull, fading to zero over ~12 px outside
    it: the background and hair must not move."""
    h, w = flow.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(pts[:468].astype(np.float32)).astype(np.int32)
    cv2.fillConvexPoly(mask, hull, 255)
    mask = cv2.erode(mask, np.ones((9, 9), np.uint8))
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 6.0)
    return flow * soft[..., None]


class MorphClip:
    """Frames of a morphed clip of ``single_face.mp4``-like material.

    ``frames``: all frames of the source video (BGR). The flow from the
    smile frame to the reference neutral frame is computed once.
    ``neutral``: the base frames the face sways through, back and forth;
    one frame (``(i, i)``) holds the face still.
    ``phase_s`` starts the back-and-forth of the base frames that far in
    (where in its sway the face is when the stream starts decides which
    frame becomes the spotter's neutral reference).
    ``face_points``/``smile_points``: the tracker's landmarks in the
    reference and smile frames, used only to take the head's rigid motion
    out (a similarity on ``stable_points``) and to keep the flow on the face;
    the deformation itself is the measured flow, not a landmark warp."""

    def __init__(self, frames: Sequence[np.ndarray], fps: float, duration_s: float,
                 events: Sequence[MorphEvent] = (), distortion: Distortion = Distortion(), seed: int = 0,
                 *, neutral: tuple[int, int] = NEUTRAL_FRAMES, smile: int = SMILE_FRAME,
                 reference: int = REFERENCE_FRAME, base_fps: float = 30.0,
                 face_points: np.ndarray | None = None, smile_points: np.ndarray | None = None,
                 stable_points: Sequence[int] = (), phase_s: float = 0.0) -> None:
        self.fps = float(fps)
        self.phase_s = phase_s
        self.frame_count = max(1, int(round(duration_s * fps)))
        self.events = tuple(events)
        self.distortion = distortion
        self.base_fps = base_fps
        self._bases = [np.ascontiguousarray(f) for f in frames[neutral[0]:neutral[1] + 1]]
        self.height, self.width = self._bases[0].shape[:2]
        smile_image = frames[smile]
        if face_points is not None and smile_points is not None and len(stable_points):
            # take the head's own motion out first: the real smile comes with
            # a nod and a shift that a micro-expression at that speed would
            # not carry (similarity on upper-face points, smile -> neutral)
            m, _ = cv2.estimateAffinePartial2D(np.asarray(smile_points)[list(stable_points), :2].astype(np.float32),
                                               np.asarray(face_points)[list(stable_points), :2].astype(np.float32))
            smile_image = cv2.warpAffine(smile_image, m, (self.width, self.height), borderMode=cv2.BORDER_REPLICATE)
        grey_ref = cv2.cvtColor(frames[reference], cv2.COLOR_BGR2GRAY)
        grey_smile = cv2.cvtColor(smile_image, cv2.COLOR_BGR2GRAY)
        # where each pixel of the smile comes from in the neutral face: a
        # smooth field (skin moves smoothly; the opened mouth has no match)
        flow = cv2.calcOpticalFlowFarneback(grey_smile, grey_ref, None, 0.5, 4, 25, 5, 7, 1.5,
                                            cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
        flow = cv2.GaussianBlur(flow, (0, 0), 4.0)
        if face_points is not None:
            flow = _face_only(flow, np.asarray(face_points, dtype=np.float64)[:, :2])
        self._flow = np.ascontiguousarray(flow)
        yy, xx = np.mgrid[0:self.height, 0:self.width].astype(np.float32)
        self._xx, self._yy = xx, yy
        self._rng = np.random.default_rng(seed)

    @classmethod
    def from_video(cls, path: Path, fps: float, duration_s: float, events: Sequence[MorphEvent] = (),
                   distortion: Distortion = Distortion(), seed: int = 0, *,
                   face_points: np.ndarray | None = None, smile_points: np.ndarray | None = None,
                   stable_points: Sequence[int] = ()) -> MorphClip:
        cap = cv2.VideoCapture(str(path))
        frames = []
        try:
            while True:
                ok, image = cap.read()
                if not ok:
                    break
                frames.append(image)
        finally:
            cap.release()
        if len(frames) <= SMILE_FRAME:
            raise ValueError(f"{path}: {len(frames)} frames, need more than {SMILE_FRAME}")
        return cls(frames, fps, duration_s, events, distortion, seed, base_fps=30.0,
                   face_points=face_points, smile_points=smile_points, stable_points=stable_points)

    def _base(self, t: float) -> np.ndarray:
        n = len(self._bases)
        if n == 1:  # neutral=(i, i): the face held still
            return self._bases[0]
        period = 2 * (n - 1)
        k = int(t * self.base_fps) % period
        return self._bases[k if k < n else period - k]

    def level(self, t: float) -> float:
        return max((ev.intensity * ev.level(t) for ev in self.events), default=0.0)

    def render(self, index: int) -> np.ndarray:
        t = index / self.fps
        image = self._base(t + self.phase_s)
        a = np.float32(self.level(t))
        if a > 0:
            image = cv2.remap(image, self._xx + a * self._flow[..., 0], self._yy + a * self._flow[..., 1],
                              cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        d = self.distortion
        if d.enter_leave > 0:
            image = self._slide(image, t)
        if d.flicker > 0 or d.noise_sigma > 0:
            out = image.astype(np.float32) * np.float32(d.gain(t))
            if d.noise_sigma > 0:
                out += self._rng.normal(0.0, d.noise_sigma, out.shape).astype(np.float32)
            image = np.clip(out, 0, 255).astype(np.uint8)
        return image

    def _slide(self, image: np.ndarray, t: float) -> np.ndarray:
        """Shift the picture so the face is outside at the ends of the clip."""
        end = self.frame_count / self.fps
        out_t, move = 0.4, 0.5
        if t < out_t or t > end - out_t:
            frac = 1.0
        elif t < out_t + move:
            frac = 1.0 - (t - out_t) / move
        elif t > end - out_t - move:
            frac = (t - (end - out_t - move)) / move
        else:
            return image
        shift = frac * self.width
        m = np.float32([[1, 0, -shift], [0, 1, 0]])
        return cv2.warpAffine(image, m, (self.width, self.height), borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 40))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.frame_count):
            yield self.render(i)

    def truth(self, source: str = "single_face.mp4 (flow morph)", micro_max_s: float = 0.5) -> GroundTruth:
        times = np.arange(self.frame_count) / self.fps
        events = []
        for ev in self.events:
            levels = np.array([ev.level(float(t)) for t in times])
            moving = np.nonzero(levels > 0)[0]
            if moving.size == 0:
                continue
            onset, offset = int(max(moving[0] - 1, 0)), int(min(moving[-1] + 1, self.frame_count - 1))
            apex = int(moving[np.argmax(levels[moving])])
            kind = TruthKind.MICRO if ev.duration_s <= micro_max_s + 1e-9 else TruthKind.MACRO
            events.append(TruthEvent(kind, "6+12", onset, apex, offset, onset / self.fps, apex / self.fps,
                                     offset / self.fps, round(ev.duration_s, 6), ev.intensity, True))
        return GroundTruth(source, self.fps, self.frame_count, self.width, self.height,
                           self.distortion.noise_sigma, 0, tuple(events))

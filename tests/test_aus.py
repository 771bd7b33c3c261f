"""AU estimation: the mapping table, left/right, geometric cues, real pixels."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pytest

from microexpr.aus import (
    _INNER_LIP_LOWER,
    _INNER_LIP_UPPER,
    _SIDES,
    AU_COLUMNS,
    AU_SOURCES,
    BLENDSHAPE_AU,
    CORNER_RISE,
    DEVIATIONS,
    GEOMETRY_CUES,
    LOWER_LID_RISE,
    PAPER_TABLE,
    SIDED_AUS,
    UNUSED,
    AUEstimator,
    AUFrame,
    CueSource,
    Geometry,
    _Reference,
    blendshape_aus,
    geometric_aus,
    measure,
    ramp,
)
from microexpr.capture import Frame
from microexpr.facs import AU, Side
from microexpr.tracking import Face, FaceObservation, create_tracker
from microexpr.tracking.base import HeadPose

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 16, 17, 20, 23, 24, 25, 26, 28}


@pytest.fixture(scope="module")
def neutral_face(smile_observations: tuple[FaceObservation, ...]) -> Face:
    """A real neutral face (frame 10 of the clip: before the smile)."""
    face = smile_observations[10].faces[0]
    assert face.blendshapes["mouthSmileLeft"] < 0.05
    return face


@pytest.fixture(scope="module")
def real_names(smile_observations: tuple[FaceObservation, ...]) -> set[str]:
    """The blendshape names a real FaceLandmarker result carries."""
    return set(smile_observations[0].faces[0].blendshapes)


def observe(face: Face, index: int = 0, timestamp: float = 0.0) -> FaceObservation:
    return FaceObservation(index, timestamp, 640, 360, (face,))


def with_blendshapes(face: Face, **scores: float) -> Face:
    """The face with every blendshape at 0 except the ones given."""
    shapes = {name: 0.0 for name in face.blendshapes}
    shapes.update(scores)
    return dataclasses.replace(face, blendshapes=shapes)


def moved(face: Face, shifts: Mapping[tuple[int, ...], float]) -> Face:
    """The face with landmark groups moved down (+) or up (-) by a fraction of IOD."""
    iod = measure(face).iod_px
    points = face.landmarks.copy()
    for indices, dy in shifts.items():
        points[list(indices), 1] += dy * iod
    return dataclasses.replace(face, landmarks=points)


def estimate_against(neutral: Face, changed: Face) -> AUFrame:
    estimator = AUEstimator()
    estimator.calibrate(neutral)
    return estimator.estimate(observe(changed, 1, 0.04))


# -- the table -------------------------------------------------------------------


def test_every_name_in_the_table_is_a_real_blendshape(real_names: set[str]) -> None:
    assert set(BLENDSHAPE_AU) <= real_names, set(BLENDSHAPE_AU) - real_names
    assert set(UNUSED) <= real_names, set(UNUSED) - real_names


def test_every_real_blendshape_is_mapped_or_explained(real_names: set[str]) -> None:
    assert set(BLENDSHAPE_AU).isdisjoint(UNUSED)
    assert set(BLENDSHAPE_AU) | set(UNUSED) == real_names


def test_required_aus_are_estimated_in_column_order() -> None:
    numbers = [au.value for au in AU_COLUMNS]
    assert REQUIRED <= set(numbers)
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert {45} & set(numbers) or {43} & set(numbers)


def test_left_and_right_names_keep_their_side() -> None:
    for name, (au, side) in BLENDSHAPE_AU.items():
        if name.endswith("Left"):
            assert side is Side.LEFT, name
            assert BLENDSHAPE_AU[name[:-4] + "Right"] == (au, Side.RIGHT), name
        elif not name.endswith("Right"):
            assert side is Side.BOTH, name


def test_every_departure_from_the_paper_is_explained(real_names: set[str]) -> None:
    for au, printed in PAPER_TABLE.items():
        for name in printed:
            kept = BLENDSHAPE_AU.get(name, (None, None))[0] is au
            assert kept or name in DEVIATIONS, f"{au.code}: printed {name} neither used as printed nor explained"
            if name not in real_names:
                assert name in DEVIATIONS, name
    for name, (au, _side) in BLENDSHAPE_AU.items():
        if name not in PAPER_TABLE.get(au, ()):
            assert name in DEVIATIONS, f"{name} -> {au.code} is not in the paper's table and not explained"


def test_docs_carry_the_table_and_every_deviation() -> None:
    text = (ROOT / "docs" / "aus.md").read_text(encoding="utf-8")
    for name in DEVIATIONS:
        assert name in text, f"docs/aus.md does not mention {name}"
    for name in BLENDSHAPE_AU:
        assert name in text, f"docs/aus.md does not list {name}"
    for au in AU_COLUMNS:
        assert re.search(rf"\bAU{au.value}\b", text), au.code


def test_sources_say_which_aus_use_geometry() -> None:
    geometric = {cue.au for cue in GEOMETRY_CUES}
    assert geometric == {
        AU.INNER_BROW_RAISER, AU.BROW_LOWERER, AU.UPPER_LID_RAISER, AU.CHEEK_RAISER, AU.NOSE_WRINKLER, AU.LIPS_PART,
    }
    assert AU_SOURCES[AU.LIPS_PART] == CueSource.GEOMETRY
    assert AU_SOURCES[AU.CHEEK_RAISER] == CueSource.BOTH
    assert AU_SOURCES[AU.LIP_CORNER_PULLER] == CueSource.BLENDSHAPE


# -- left / right ---------------------------------------------------------------------


def test_a_left_smile_is_au12_on_the_left_only(neutral_face: Face) -> None:
    face = with_blendshapes(neutral_face, mouthSmileLeft=0.9)
    frame = estimate_against(neutral_face, face)
    assert frame.left[AU.LIP_CORNER_PULLER] == pytest.approx(0.9)
    assert frame.right[AU.LIP_CORNER_PULLER] < 0.05
    assert frame.intensity[AU.LIP_CORNER_PULLER] == pytest.approx(0.9)


def test_a_one_sided_dimple_stays_one_sided(neutral_face: Face) -> None:
    frame = estimate_against(neutral_face, with_blendshapes(neutral_face, mouthDimpleRight=0.7))
    assert frame.right[AU.DIMPLER] == pytest.approx(0.7)
    assert frame.left[AU.DIMPLER] < 0.05


def test_bilateral_only_aus_have_no_sides(neutral_face: Face) -> None:
    frame = estimate_against(neutral_face, with_blendshapes(neutral_face, jawOpen=0.6, mouthShrugLower=0.5))
    assert frame.intensity[AU.JAW_DROP] == pytest.approx(0.6)
    assert frame.intensity[AU.CHIN_RAISER] == pytest.approx(0.5)
    for au in (AU.JAW_DROP, AU.CHIN_RAISER, AU.LIPS_PART, AU.LIP_TIGHTENER, AU.LIP_SUCK):
        assert au not in frame.left and au not in frame.right
    assert set(frame.left) == set(frame.right) == {au for au in AU_COLUMNS if au in SIDED_AUS}


def test_every_column_is_reported_within_0_and_1(smile_au_frames: tuple[AUFrame, ...]) -> None:
    for frame in smile_au_frames:
        assert set(frame.intensity) == set(AU_COLUMNS)
        for values in (frame.intensity, frame.left, frame.right):
            assert all(0.0 <= v <= 1.0 for v in values.values())
        for au in frame.left:
            assert frame.intensity[au] == max(frame.left[au], frame.right[au])


# -- geometry on a real face, moved by known amounts ------------------------------------

RIGHT_LOWER_LID, LEFT_LOWER_LID = (145, 144, 153), (374, 373, 380)
RIGHT_UPPER_LID, LEFT_UPPER_LID = (159, 158, 160), (386, 385, 387)
RIGHT_CHEEK, LEFT_CHEEK = (50, 205), (280, 425)
RIGHT_BROW, LEFT_BROW = (107, 55, 66, 65), (336, 285, 296, 295)
RIGHT_ALA, LEFT_ALA = (98,), (327,)


def test_cheek_and_lower_lid_rising_together_is_au6(neutral_face: Face) -> None:
    raised = moved(neutral_face, {RIGHT_CHEEK + LEFT_CHEEK: -0.08, RIGHT_LOWER_LID + LEFT_LOWER_LID: -0.02})
    frame = estimate_against(neutral_face, with_blendshapes(raised))
    assert frame.left[AU.CHEEK_RAISER] > 0.3 and frame.right[AU.CHEEK_RAISER] > 0.3


def test_cheek_rise_alone_or_a_blink_is_not_au6(neutral_face: Face) -> None:
    cheeks_only = moved(neutral_face, {RIGHT_CHEEK + LEFT_CHEEK: -0.08})
    assert estimate_against(neutral_face, with_blendshapes(cheeks_only)).intensity[AU.CHEEK_RAISER] == 0.0
    # a blink closes the eye from above: the upper lid drops onto the lower one
    aperture = measure(neutral_face).left[0]
    blink = moved(neutral_face, {RIGHT_UPPER_LID + LEFT_UPPER_LID: 0.9 * aperture, RIGHT_CHEEK + LEFT_CHEEK: -0.03})
    frame = estimate_against(neutral_face, with_blendshapes(blink, eyeBlinkLeft=0.8, eyeBlinkRight=0.8))
    assert frame.intensity[AU.CHEEK_RAISER] == 0.0
    assert frame.intensity[AU.UPPER_LID_RAISER] == 0.0
    assert frame.intensity[AU.BLINK] == pytest.approx(0.8)


def test_one_brow_lowered_is_au4_on_that_side(neutral_face: Face) -> None:
    frame = estimate_against(neutral_face, with_blendshapes(moved(neutral_face, {LEFT_BROW: 0.08})))
    assert frame.left[AU.BROW_LOWERER] > 0.4
    assert frame.right[AU.BROW_LOWERER] < 0.1
    assert frame.intensity[AU.INNER_BROW_RAISER] < 0.1


def test_inner_brows_raised_are_au1(neutral_face: Face) -> None:
    frame = estimate_against(neutral_face, with_blendshapes(moved(neutral_face, {RIGHT_BROW + LEFT_BROW: -0.08})))
    assert frame.left[AU.INNER_BROW_RAISER] > 0.4 and frame.right[AU.INNER_BROW_RAISER] > 0.4
    assert frame.intensity[AU.BROW_LOWERER] < 0.1


def test_widened_eyes_are_au5(neutral_face: Face) -> None:
    aperture = measure(neutral_face).left[0]
    wide = moved(neutral_face, {RIGHT_UPPER_LID + LEFT_UPPER_LID: -0.4 * aperture})
    assert estimate_against(neutral_face, with_blendshapes(wide)).intensity[AU.UPPER_LID_RAISER] > 0.6


def test_nose_wings_raised_are_au9_unless_a_smile_explains_them(neutral_face: Face) -> None:
    sneer = moved(neutral_face, {RIGHT_ALA + LEFT_ALA: -0.07})
    assert estimate_against(neutral_face, with_blendshapes(sneer)).intensity[AU.NOSE_WRINKLER] > 0.5
    smiling = with_blendshapes(sneer, mouthSmileLeft=1.0, mouthSmileRight=1.0)
    assert estimate_against(neutral_face, smiling).intensity[AU.NOSE_WRINKLER] == 0.0
    # a smile too weak for the blendshape still explains it through the corners' rise
    corners_up = with_blendshapes(moved(sneer, {(61, 291): -0.15}))
    assert estimate_against(neutral_face, corners_up).intensity[AU.NOSE_WRINKLER] < 0.05


def test_lips_apart_are_au25(neutral_face: Face) -> None:
    closed = estimate_against(neutral_face, with_blendshapes(neutral_face))
    assert closed.intensity[AU.LIPS_PART] == 0.0
    parted = moved(neutral_face, {(14,): 0.15})
    assert estimate_against(neutral_face, with_blendshapes(parted)).intensity[AU.LIPS_PART] > 0.5


def test_turning_the_picture_does_not_create_geometric_aus(media_dir: Path, model_path: Path) -> None:
    image = cv2.imread(str(media_dir / "astronaut.png"))
    h, w = image.shape[:2]
    turned = cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), 15.0, 1.0), (w, h))
    faces = []
    for picture in (image, turned):
        with create_tracker(model_path=model_path) as tracker:
            faces.append(tracker.process(Frame(0, 0.0, picture)).faces[0])
    upright, rotated = (measure(f) for f in faces)
    for side in (Side.LEFT, Side.RIGHT):
        cues = geometric_aus(np.array(rotated.side(side)), np.array(upright.side(side)))
        assert max(cues.values()) < 0.2, (side, cues)


# -- the reference ------------------------------------------------------------------------


def test_first_sight_of_a_subject_has_no_geometric_change(neutral_face: Face) -> None:
    raised = with_blendshapes(moved(neutral_face, {RIGHT_BROW + LEFT_BROW: -0.08}))
    frame = AUEstimator().estimate(observe(raised))
    assert frame.intensity[AU.INNER_BROW_RAISER] == 0.0


def test_one_odd_frame_at_the_start_does_not_become_the_reference(neutral_face: Face) -> None:
    odd = moved(neutral_face, {RIGHT_BROW + LEFT_BROW: -0.08})
    estimator = AUEstimator()
    estimator.estimate(observe(odd, 0, 0.0))
    for i in range(1, 5):
        estimator.estimate(observe(neutral_face, i, i / 30))
    reference = estimator.reference(0)
    assert reference is not None
    assert np.allclose(reference, np.array([measure(neutral_face).left, measure(neutral_face).right]))


def test_the_reference_follows_slowly_and_restarts_after_a_long_absence(neutral_face: Face) -> None:
    estimator = AUEstimator(reference_tau_s=10.0)
    raised = with_blendshapes(moved(neutral_face, {RIGHT_BROW + LEFT_BROW: -0.08}))
    t = 0.0
    for i in range(45):  # 1.5 s neutral: the opening window closes
        t = i / 30
        estimator.estimate(observe(neutral_face, i, t))
    first = estimator.estimate(observe(raised, 45, t + 1 / 30)).intensity[AU.INNER_BROW_RAISER]
    for i in range(46, 76):  # one more second held
        last = estimator.estimate(observe(raised, i, i / 30)).intensity[AU.INNER_BROW_RAISER]
    assert first > 0.4
    assert 0.8 * first < last < first  # about exp(-1/10) of it remains after 1 s
    assert estimator.estimate(FaceObservation(99, 60.0, 640, 360, ())).face_found is False
    again = estimator.estimate(observe(raised, 100, 100.0))  # unseen for longer than tau: a new reference
    assert again.intensity[AU.INNER_BROW_RAISER] == 0.0


def test_subjects_have_their_own_reference(neutral_face: Face) -> None:
    raised = with_blendshapes(moved(neutral_face, {RIGHT_BROW + LEFT_BROW: -0.08}))
    other = dataclasses.replace(raised, subject_id=1)
    estimator = AUEstimator()
    estimator.calibrate(neutral_face)
    frames = estimator.estimate_all(FaceObservation(1, 0.04, 640, 360, (raised, other)))
    assert [f.subject_id for f in frames] == [0, 1]
    assert frames[0].intensity[AU.INNER_BROW_RAISER] > 0.4
    assert frames[1].intensity[AU.INNER_BROW_RAISER] == 0.0  # subject 1 starts its own reference


def test_no_face_gives_an_empty_frame() -> None:
    frame = AUEstimator().estimate(FaceObservation(7, 0.25, 640, 360, ()))
    assert (frame.frame_index, frame.timestamp, frame.face_found, frame.confidence) == (7, 0.25, False, 0.0)
    assert not frame.intensity and not frame.left and not frame.right and frame.pose is None
    assert len(AUEstimator().estimate_all(FaceObservation(7, 0.25, 640, 360, ()))) == 1


def test_a_bad_time_constant_is_refused() -> None:
    with pytest.raises(ValueError):
        AUEstimator(reference_tau_s=0.0)


# -- the real clip ---------------------------------------------------------------------------


def _mean(frames: tuple[AUFrame, ...], au: AU, side: str = "intensity") -> float:
    return float(np.mean([getattr(f, side)[au] for f in frames]))


def test_the_smile_raises_au12_and_au6_on_both_sides(smile_au_frames: tuple[AUFrame, ...]) -> None:
    first, apex = smile_au_frames[:6], smile_au_frames[30:70]
    assert all(f.face_found for f in smile_au_frames)
    for side in ("left", "right"):
        assert _mean(apex, AU.LIP_CORNER_PULLER, side) > _mean(first, AU.LIP_CORNER_PULLER, side) + 0.5
        assert _mean(apex, AU.CHEEK_RAISER, side) > _mean(first, AU.CHEEK_RAISER, side) + 0.15
    # lips part in the toothy smile, and not before it
    assert _mean(apex, AU.LIPS_PART) > _mean(first, AU.LIPS_PART) + 0.5


def test_the_smile_does_not_read_as_a_frown(smile_au_frames: tuple[AUFrame, ...]) -> None:
    apex = smile_au_frames[30:70]
    assert _mean(apex, AU.LIP_CORNER_DEPRESSOR) < 0.1
    assert _mean(apex, AU.NOSE_WRINKLER) < 0.3  # nose-wing rise explained by AU12
    assert _mean(apex, AU.BROW_LOWERER) < 0.3


def test_measure_equals_its_array_form_bit_for_bit(smile_observations: tuple[FaceObservation, ...]) -> None:
    """``measure`` computes in plain Python for speed; on real faces (and
    the same faces with landmark noise) it gives exactly what the numpy
    array form it replaced gives: the same means, in the same order, and
    numpy's own 2-vector norm (``_plain_measure`` below)."""
    from microexpr.aus import measure

    rng = np.random.default_rng(7)
    for obs in smile_observations[::6]:
        face = obs.faces[0]
        for k in range(40):
            noisy = face if k == 0 else dataclasses.replace(
                face, landmarks=(face.landmarks + rng.normal(0, 3, face.landmarks.shape)).astype(np.float32))
            assert measure(noisy) == _plain_measure(noisy)


# -- the estimator's arithmetic, bit for bit -------------------------------------------------------


def _plain_rotation(pose: HeadPose) -> np.ndarray:
    a, b, c = (math.radians(v) for v in (pose.pitch, pose.yaw, pose.roll))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _plain_measure(face: Face) -> Geometry:
    """``measure`` in array form: every landmark turned frontal, numpy means."""
    points = np.asarray(face.landmarks, dtype=np.float64)
    pts = (points - points.mean(axis=0)) @ _plain_rotation(face.pose)

    def at(indices: tuple[int, ...]) -> np.ndarray:
        return pts[list(indices)].mean(axis=0)

    centres = {side: (at(ix["outer"]) + at(ix["inner"])) / 2.0 for side, ix in _SIDES.items()}
    iod = max(float(np.linalg.norm((centres[Side.LEFT] - centres[Side.RIGHT])[:2])), 1e-6)
    per_side = {}
    for side, ix in _SIDES.items():
        inner = at(ix["inner"])
        per_side[side] = (
            float((at(ix["lower_lid"])[1] - at(ix["upper_lid"])[1]) / iod),
            float((inner[1] - at(ix["inner_brow"])[1]) / iod),
            float((at(ix["cheek"])[1] - inner[1]) / iod),
            float(np.linalg.norm((at(ix["ala"]) - inner)[:2])) / iod,
            float((at(ix["lower_lid"])[1] - inner[1]) / iod),
            float((at(ix["mouth_corner"])[1] - inner[1]) / iod),
        )
    gap = float(np.linalg.norm((at(_INNER_LIP_LOWER) - at(_INNER_LIP_UPPER))[:2])) / iod
    return Geometry(left=per_side[Side.LEFT], right=per_side[Side.RIGHT], lip_gap=gap, iod_px=iod)


def _plain_cues(current: np.ndarray, reference: np.ndarray, smile: float) -> dict[AU, float]:
    """The relative geometric cues through ``ramp``, one dict entry each."""
    cue = {c.au: c for c in GEOMETRY_CUES}
    aperture, brow, cheek, ala, lower_lid, corner = (float(v) for v in current)
    ref_aperture, ref_brow, ref_cheek, ref_ala, ref_lower_lid, ref_corner = (float(v) for v in reference)
    rel_aperture = aperture / ref_aperture - 1.0 if ref_aperture > 1e-6 else 0.0
    lid_rise = (ref_lower_lid - lower_lid) / ref_aperture if ref_aperture > 1e-6 else 0.0

    def by(au: AU, value: float) -> float:
        return ramp(value, cue[au].dead_band, cue[au].full)

    smile_clamped = 0.0 if not math.isfinite(smile) else min(1.0, max(0.0, smile))
    explained = max(smile_clamped, ramp(ref_corner - corner, *CORNER_RISE))
    return {
        AU.INNER_BROW_RAISER: by(AU.INNER_BROW_RAISER, brow - ref_brow),
        AU.BROW_LOWERER: by(AU.BROW_LOWERER, -(brow - ref_brow)),
        AU.UPPER_LID_RAISER: by(AU.UPPER_LID_RAISER, rel_aperture),
        AU.CHEEK_RAISER: math.sqrt(ramp(lid_rise, *LOWER_LID_RISE) * by(AU.CHEEK_RAISER, ref_cheek - cheek)),
        AU.NOSE_WRINKLER: by(AU.NOSE_WRINKLER, ref_ala - ala) * (1.0 - explained),
    }


class _PlainEstimator(AUEstimator):
    """The estimator written the plain way: per-side dicts from
    ``blendshape_aus``, geometric cues merged by ``max``, the reference as
    a numpy running mean. What it computed before its per-frame cost was
    cut; the reference the estimator must equal."""

    def estimate_face(self, obs: FaceObservation, face: Face) -> AUFrame:
        left, right, both = blendshape_aus(face.blendshapes)
        geo = _plain_measure(face)
        current = np.array([geo.left, geo.right], dtype=np.float64)
        ref = self._plain_reference(face.subject_id, current, obs.timestamp)
        for row, target in ((0, left), (1, right)):
            for au, value in _plain_cues(current[row], ref[row], target.get(AU.LIP_CORNER_PULLER, 0.0)).items():
                target[au] = max(target.get(au, 0.0), value)
        lips = next(c for c in GEOMETRY_CUES if c.au is AU.LIPS_PART)
        both[AU.LIPS_PART] = ramp(geo.lip_gap, lips.dead_band, lips.full)

        def clamp(v: float) -> float:
            return 0.0 if not math.isfinite(v) else min(1.0, max(0.0, v))

        intensity, side_left, side_right = {}, {}, {}
        for au in AU_COLUMNS:
            bilateral = both.get(au, 0.0)
            if au in SIDED_AUS:
                side_left[au] = clamp(max(left.get(au, 0.0), bilateral))
                side_right[au] = clamp(max(right.get(au, 0.0), bilateral))
                intensity[au] = max(side_left[au], side_right[au])
            else:
                intensity[au] = clamp(bilateral)
        return AUFrame(obs.frame_index, obs.timestamp, True, face.confidence, intensity, side_left, side_right,
                       face.pose, face.subject_id)

    def _plain_reference(self, subject_id: int, current: np.ndarray, timestamp: float) -> np.ndarray:
        ref = self._refs.get(subject_id)
        if ref is None or timestamp - ref.timestamp > self.reference_tau_s:
            self._refs[subject_id] = _Reference(current.copy(), timestamp, timestamp, [current.copy()])
            return current
        if ref.window is not None:
            ref.window.append(current.copy())
            ref.values = np.median(np.stack(ref.window), axis=0)
            ref.timestamp = max(ref.timestamp, timestamp)
            if timestamp - ref.start >= 1.0:
                ref.window = None
            return ref.values.copy()
        before = ref.values.copy()
        alpha = 1.0 - math.exp(-max(0.0, timestamp - ref.timestamp) / self.reference_tau_s)
        ref.values += alpha * (current - ref.values)
        ref.timestamp = max(ref.timestamp, timestamp)
        return before


def _bits(frame: AUFrame) -> tuple[object, ...]:
    """Everything an AUFrame carries, floats as their exact bits, keys in order."""
    def side(m: Mapping[AU, float]) -> list[tuple[AU, str]]:
        return [(au, float(v).hex()) for au, v in m.items()]

    return (frame.frame_index, frame.timestamp, frame.face_found, frame.confidence, side(frame.intensity),
            side(frame.left), side(frame.right), frame.pose, frame.subject_id)


def test_the_estimator_computes_what_its_plain_form_computes_bit_for_bit(
        smile_observations: tuple[FaceObservation, ...]) -> None:
    """The estimator's table-driven path (``_PLAN``, cues by position, the
    32 measured rows turned frontal, the reference updated in plain
    Python) against ``_PlainEstimator`` on the real clip: the opening
    window, the running mean, the smile, a second subject, a return after
    a long absence, landmark noise, and blendshapes missing or not finite.
    Every intensity, side value, pose and the reference: the same bits."""
    rng = np.random.default_rng(5)
    fast, plain = AUEstimator(), _PlainEstimator()
    faces = [obs.faces[0] for obs in smile_observations]
    stream: list[tuple[Face, float]] = []
    for k, face in enumerate(faces):
        stream.append((face, k / 30))
        if k % 5 == 0:  # a second subject, the same face with landmark noise
            noisy = (face.landmarks + rng.normal(0, 2, face.landmarks.shape)).astype(np.float32)
            stream.append((dataclasses.replace(face, landmarks=noisy, subject_id=1), k / 30))
    odd = dict(faces[40].blendshapes)
    del odd["mouthSmileLeft"], odd["browInnerUp"]
    odd["mouthRollUpper"] = float("nan")
    odd["mouthPucker"] = float("inf")
    odd["jawOpen"] = -0.25
    stream.append((dataclasses.replace(faces[40], blendshapes=odd), 72 / 30))
    stream += [(face, 30.0 + k / 30) for k, face in enumerate(faces[:20])]  # back after 27 s: a new reference
    for k, (face, t) in enumerate(stream):
        obs = FaceObservation(k, t, 640, 360, (face,))
        assert _bits(fast.estimate(obs)) == _bits(plain.estimate(obs))
        for sid in (0, 1):
            a, b = fast.reference(sid), plain.reference(sid)
            assert (a is None and b is None) or (a is not None and b is not None and a.tobytes() == b.tobytes())
    assert fast.estimate(FaceObservation(0, 0.0, 640, 360, ())) == plain.estimate(FaceObservation(0, 0.0, 640, 360, ()))

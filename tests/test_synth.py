"""Synthetic clips from real faces: the event language, frame-exact ground
truth, the warp seen by the real model, the mp4 + JSON output and the
command's errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from microexpr.capture import Frame, open_source
from microexpr.cli import main
from microexpr.errors import ConfigError, DataError
from microexpr.facs import AU, Side
from microexpr.synth import (
    EventKind,
    GroundTruth,
    Renderer,
    SynthSpec,
    TruthKind,
    parse_aus,
    parse_event,
    score_episodes,
    truth_for,
    write_clip,
)
from microexpr.tracking import create_tracker


@pytest.fixture(scope="module")
def tracker(model_path: Path):
    with create_tracker(model_path=model_path) as t:
        yield t


def test_event_language() -> None:
    ev = parse_event("L12@1.0/0.2*0.5")
    assert ev.kind is EventKind.EXPRESSION
    assert [(a.au, a.side) for a in ev.aus] == [(AU.LIP_CORNER_PULLER, Side.LEFT)]
    assert ev.onset_s == 1.0 and ev.intensity == 0.5
    assert ev.duration_s == pytest.approx(0.2) and ev.apex_s == pytest.approx(1.08)
    assert ev.truth_kind().value == "micro"
    macro = parse_event("6+12@1.0/2.0,hold=1.0")
    assert macro.truth_kind().value == "macro" and macro.hold_s == 1.0
    assert parse_event("blink@2/0.15").kind is EventKind.BLINK
    turn = parse_event("turn@3/0.4*-1")
    assert turn.kind is EventKind.HEAD_TURN and turn.intensity == -1
    assert turn.level(10.0) == 1.0  # a head turn stays
    assert [a.au.value for a in parse_aus("1+2+R14")] == [1, 2, 14]
    for bad in ("12@1.0", "L33@1/0.2", "12@1/0", "12@1/0.2*2", "X12@1/0.2", "turn@1/0.2*0"):
        with pytest.raises(ConfigError):
            parse_event(bad)


def test_truth_is_frame_exact() -> None:
    ev = parse_event("12@1.0/0.3")
    (t,) = truth_for([ev], 30.0, 90)
    assert (t.onset_frame, t.apex_frame, t.offset_frame) == (30, 34, 39)
    assert ev.level(t.onset_frame / 30) == 0.0 and ev.level(t.offset_frame / 30) == 0.0
    assert ev.level((t.onset_frame + 1) / 30) > 0.0 and ev.level((t.offset_frame - 1) / 30) > 0.0
    levels = [ev.level(i / 30) for i in range(90)]
    assert int(np.argmax(levels)) == t.apex_frame
    # a 67 ms movement at 30 fps is a 2-frame event; at 200 fps it spans 13 frames
    (short,) = truth_for([parse_event("12@1.0/0.067")], 30.0, 60)
    assert short.offset_frame - short.onset_frame - 1 == 2
    (fast,) = truth_for([parse_event("12@1.0/0.067")], 200.0, 400)
    assert fast.offset_frame - fast.onset_frame - 1 == 13
    # distractors are not expected episodes
    (blink,) = truth_for([parse_event("blink@0.5/0.2")], 30.0, 60)
    assert blink.kind is TruthKind.BLINK and not blink.expect_episode


def _mouth_corners(tracker, image: np.ndarray, index: int) -> np.ndarray:
    face = tracker.process(Frame(index, index / 30.0, image)).face
    assert face is not None
    pts = np.asarray(face.landmarks)
    return pts[[291, 61], :2], pts


def test_warp_moves_the_face_the_real_model_sees(tracker, media_dir: Path) -> None:
    spec = SynthSpec(media_dir / "astronaut.png", 30.0, 1.0, (parse_event("L12@0.2/0.4"), parse_event("blink@0.7/0.2")), noise_sigma=0.0)
    r = Renderer(spec, tracker)
    smile, blink = r.truth.events
    neutral = r.render(0)
    apex = r.render(smile.apex_frame)
    # only the face moves: the background corner is untouched
    assert np.array_equal(neutral[:40, :40], apex[:40, :40])
    base = r._bases[0].landmarks  # landmarks the warp was built on
    iod = float(np.linalg.norm(base[263, :2] - base[33, :2]))
    moved = r.render(smile.apex_frame)
    corners_after, pts = _mouth_corners(tracker, moved, 100)
    left_shift = (corners_after[0] - base[291, :2]) / iod
    right_shift = (corners_after[1] - base[61, :2]) / iod
    # the subject's left corner (image right) goes up and out; the right one stays
    assert left_shift[1] < -0.03 and left_shift[0] > 0.03
    assert np.hypot(*right_shift) < 0.5 * np.hypot(*left_shift)
    # blink: the model sees the eyes more closed at the blink's apex (it
    # regresses lids from the whole eye's look: the squeezed eye still shows
    # a lash line, so it reports about a third closed)
    def aperture(p: np.ndarray) -> float:
        return float(np.linalg.norm(p[159, :2] - p[145, :2]) + np.linalg.norm(p[386, :2] - p[374, :2]))
    _c, open_pts = _mouth_corners(tracker, neutral, 200)
    _c, shut_pts = _mouth_corners(tracker, r.render(blink.apex_frame), 300)
    assert aperture(shut_pts) < 0.85 * aperture(open_pts)


def test_head_turn_changes_pose(model_path: Path, media_dir: Path) -> None:
    with create_tracker(model_path=model_path) as tracker:
        r = Renderer(SynthSpec(media_dir / "astronaut.png", 30.0, 1.0, (parse_event("turn@0.2/0.3"),), noise_sigma=0.0), tracker)
    with create_tracker(model_path=model_path) as tracker:
        poses = [tracker.process(frame).face.pose for frame in r]
    (turn,) = r.truth.events
    before, after = poses[turn.onset_frame], poses[-1]
    assert abs(after.roll - before.roll) > 3.0


def test_write_clip_round_trip(tracker, media_dir: Path, tmp_path: Path) -> None:
    events = (parse_event("R14@0.3/0.2*0.6"), parse_event("blink@0.8/0.15"))
    spec = SynthSpec(media_dir / "single_face.mp4", 30.0, 1.2, events, base_frames=(0, 5), seed=3)
    truth = write_clip(spec, tracker, tmp_path / "clip.mp4")
    loaded = GroundTruth.load(tmp_path / "clip.json")
    assert loaded == truth
    assert [e.kind for e in loaded.events] == [TruthKind.MICRO, TruthKind.BLINK]
    assert loaded.events[0].aus == "R14"
    with open_source(tmp_path / "clip.mp4") as src:
        frames = list(src)
    assert len(frames) == truth.frame_count == 36
    assert frames[0].image.shape == (truth.height, truth.width, 3)


def test_scoring() -> None:
    truth = GroundTruth("x", 30.0, 300, 10, 10, 0.0, 0, truth_for(
        [parse_event("12@1.0/0.3"), parse_event("4@5.0/0.3"), parse_event("blink@8/0.2")], 30.0, 300))

    class Ep:
        def __init__(self, on: int, ap: int, off: int) -> None:
            self.onset_frame, self.apex_frame, self.offset_frame, self.kind = on, ap, off, "micro"

    score = score_episodes(truth, [Ep(31, 34, 38), Ep(240, 242, 245)])
    assert (score.tp, score.fp, score.fn) == (1, 1, 1)
    assert score.matches[0].apex_error == 0
    assert score.false_per_minute == pytest.approx(6.0)
    assert score.f1 == pytest.approx(0.5)


def test_ground_truth_rejects_other_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "something/1"}))
    with pytest.raises(DataError):
        GroundTruth.load(bad)


def test_command(model_path: Path, media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.mp4"
    code = main(["synth", str(media_dir / "astronaut.png"), "-o", str(out), "--model", str(model_path),
                 "-e", "L12@0.3/0.2*0.5", "--duration", "0.8", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["events"][0]["aus"] == "L12"
    assert out.exists() and out.with_suffix(".json").exists()


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["-e", "L33@0.3/0.2"], 2, "AU33"),
        (["-e", "12@5.0/0.2", "--duration", "1"], 2, "after the clip's end"),
        (["-e", "12@0.3/0.2", "--apex-fraction", "1.5"], 2, "--apex-fraction"),
    ],
)
def test_command_bad_arguments(args: list[str], code: int, words: str, model_path: Path, media_dir: Path,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["synth", str(media_dir / "astronaut.png"), "-o", str(tmp_path / "c.mp4"), "--model", str(model_path), *args])
    err = capsys.readouterr().err
    assert rc == code
    assert words in err and err.count("\n") == 1


def test_command_bad_inputs(model_path: Path, media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path / "missing.png"), "-o", str(tmp_path / "c.mp4"), "--model", str(model_path),
                 "-e", "12@0.3/0.2"]) == 66
    assert "missing.png" in capsys.readouterr().err
    assert main(["synth", str(media_dir / "astronaut.png"), "-o", str(tmp_path / "c.avi"), "-e", "12@0.3/0.2"]) == 2
    assert ".mp4" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    assert main(["synth", str(blank), "-o", str(tmp_path / "c.mp4"), "--model", str(model_path), "-e", "12@0.3/0.2"]) == 3
    assert "no face" in capsys.readouterr().err

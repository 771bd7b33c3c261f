"""``microexpr timeline``: per-frame AU rows, JSON lines, the plot, bad input."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from microexpr.aus import AU_COLUMNS, AUFrame
from microexpr.cli import build_parser, main
from microexpr.errors import ExitCode, MicroexprError
from microexpr.facs import AU
from microexpr.timeline import (
    PRESENCE_THRESHOLD,
    OutputFormat,
    TimelineWriter,
    check_plot_path,
    header,
    json_record,
    plot_timeline,
)

LEADING = ["frame", "timestamp", "success", "confidence", "pose_Rx", "pose_Ry", "pose_Rz"]


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("microexpr:")]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory, smile_clip: Path) -> Path:
    """Five frames of the real clip as an image folder (neutral and smiling)."""
    folder = tmp_path_factory.mktemp("frames")
    capture = cv2.VideoCapture(str(smile_clip))
    index = 0
    kept = 0
    while kept < 5:
        ok, image = capture.read()
        assert ok
        if index in (0, 2, 40, 42, 44):
            cv2.imwrite(str(folder / f"frame{index}.png"), image)
            kept += 1
        index += 1
    capture.release()
    return folder


@pytest.fixture(scope="module")
def faceless_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short real video file with noise and blank frames, no face."""
    path = tmp_path_factory.mktemp("noface") / "noise.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    rng = np.random.default_rng(1)
    for i in range(6):
        frame = np.zeros((120, 160, 3), np.uint8) if i % 2 else rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        writer.write(frame)
    writer.release()
    assert path.stat().st_size > 0
    return path


# -- the row format -------------------------------------------------------------------


def test_columns_follow_openface() -> None:
    cols = header()
    assert cols[:7] == LEADING
    assert cols[7:] == [f"AU{au.value:02d}_r" for au in AU_COLUMNS] + [f"AU{au.value:02d}_c" for au in AU_COLUMNS]
    assert header(face_id=True)[:2] == ["frame", "face_id"]
    assert "AU12_left" in header(sides=True) and "AU25_left" not in header(sides=True)


def test_csv_rows_of_the_real_clip(smile_au_frames: tuple[AUFrame, ...]) -> None:
    out = io.StringIO()
    writer = TimelineWriter(out, OutputFormat.CSV, sides=True)
    for frame in smile_au_frames:
        writer.write(frame)
    rows = rows_of(out.getvalue())
    assert len(rows) == len(smile_au_frames)
    assert [int(r["frame"]) for r in rows] == list(range(len(rows)))
    assert float(rows[30]["timestamp"]) == pytest.approx(1.0)
    for row in rows:
        assert row["success"] == "1" and float(row["confidence"]) == 1.0
        for au in AU_COLUMNS:
            r = float(row[f"AU{au.value:02d}_r"])
            assert 0.0 <= r <= 5.0
            assert row[f"AU{au.value:02d}_c"] == ("1" if r >= PRESENCE_THRESHOLD else "0")
    apex = rows[30:70]
    assert np.mean([float(r["AU12_r"]) for r in apex]) > 3.0  # on the 0..5 scale
    assert all(r["AU12_c"] == "1" for r in apex)
    assert all(r["AU12_c"] == "0" for r in rows[:10])
    assert float(rows[50]["AU12_left"]) > 3.0 and float(rows[50]["AU12_right"]) > 3.0


def test_a_frame_without_a_face_has_empty_fields() -> None:
    out = io.StringIO()
    TimelineWriter(out, OutputFormat.CSV).write(AUFrame.no_face(3, 0.1))
    (row,) = rows_of(out.getvalue())
    assert (row["frame"], row["success"], row["confidence"]) == ("3", "0", "0.00")
    assert row["pose_Rx"] == "" and row["AU12_r"] == "" and row["AU12_c"] == ""
    record = json_record(AUFrame.no_face(3, 0.1))
    assert record["success"] is False and record["au_r"] is None and record["pose_Rx"] is None


def test_json_lines_carry_the_same_values_and_the_sides(smile_au_frames: tuple[AUFrame, ...]) -> None:
    out = io.StringIO()
    writer = TimelineWriter(out, OutputFormat.JSONL)
    for frame in smile_au_frames[:40]:
        writer.write(frame)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 40
    apex = records[35]
    assert set(apex["au_r"]) == {f"AU{au.value:02d}" for au in AU_COLUMNS}
    assert apex["au_r"]["AU12"] == pytest.approx(5 * smile_au_frames[35].intensity[AU.LIP_CORNER_PULLER], abs=0.006)
    assert apex["au_left"]["AU14"] == pytest.approx(5 * smile_au_frames[35].left[AU.DIMPLER], abs=0.006)
    assert "AU25" not in apex["au_left"]  # measured only as a whole
    assert apex["pose_Ry"] == pytest.approx(smile_au_frames[35].pose.yaw, abs=1e-3)  # type: ignore[union-attr]
    assert "face_id" not in apex


def test_the_plot_is_a_legible_png(smile_au_frames: tuple[AUFrame, ...], tmp_path: Path) -> None:
    frames = list(smile_au_frames)
    frames[10] = AUFrame.no_face(10, frames[10].timestamp)  # a gap is drawn, not a crash
    path = tmp_path / "aus.png"
    plot_timeline(frames, path, title="single_face.mp4")
    image = cv2.imread(str(path))
    assert image is not None
    height, width = image.shape[:2]
    assert width >= 1000 and height >= 800
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # curves, not a blank canvas


def test_plot_paths_are_checked_before_work(tmp_path: Path) -> None:
    with pytest.raises(MicroexprError) as exc:
        check_plot_path(tmp_path / "aus.bmpx")
    assert exc.value.exit_code == ExitCode.USAGE
    with pytest.raises(MicroexprError) as exc:
        check_plot_path(tmp_path / "missing" / "aus.png")
    assert exc.value.exit_code == ExitCode.IO_ERROR


# -- through the CLI ---------------------------------------------------------------------


def test_cli_on_an_image_to_a_file(media_dir: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "astronaut.csv"
    code = main(["timeline", str(media_dir / "astronaut.png"), "--model", str(model_path), "-o", str(out)])
    assert code == 0
    (row,) = rows_of(out.read_text())
    assert row["success"] == "1"
    assert float(row["AU12_r"]) > 2.0  # she smiles
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left


def test_cli_on_a_folder_as_json_with_a_plot(
    clip_folder: Path, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "folder.png"
    code = main(["timeline", str(clip_folder), "--model", str(model_path), "--json", "--plot", str(plot), "--fps", "30"])
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4]  # natural order of frame0, frame2, frame40...
    assert all(r["success"] for r in records)
    assert records[-1]["au_r"]["AU12"] > records[0]["au_r"]["AU12"] + 2.0
    assert plot.stat().st_size > 10_000


def test_cli_with_several_faces_adds_face_id(media_dir: Path, model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["timeline", str(media_dir / "astronaut.png"), "--model", str(model_path), "--num-faces", "2"])
    assert code == 0
    (row,) = rows_of(capsys.readouterr().out)
    assert row["face_id"] == "0"


def test_cli_onnx_backend_gives_the_mediapipe_aus(
    clip_folder: Path, model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same five real frames through either backend: docs/onnx.md holds
    the blendshapes to 0.0002, so AU intensities (2 decimals) agree to a
    rounding step or two, and the smile is there in both."""
    assert main(["timeline", str(clip_folder), "--model", str(model_path), "--json", "--fps", "30"]) == 0
    reference = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["timeline", str(clip_folder), "--backend", "onnx", "--json", "--fps", "30"]) == 0
    onnx = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["success"] for r in onnx] == [True] * 5
    assert onnx[-1]["au_r"]["AU12"] > onnx[0]["au_r"]["AU12"] + 2.0
    for a, b in zip(reference, onnx):
        assert a["au_r"].keys() == b["au_r"].keys()
        worst = max(abs(a["au_r"][k] - b["au_r"][k]) for k in a["au_r"])
        assert worst <= 0.05, (a["frame"], worst)


@pytest.mark.parametrize("extra", [["--num-faces", "2"], ["--model", "x.task"]])
def test_onnx_backend_refuses_what_it_cannot_honour(
    extra: list[str], media_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["timeline", str(media_dir / "astronaut.png"), "--backend", "onnx", *extra])
    assert code == ExitCode.USAGE
    assert extra[0] in one_line_error(capsys.readouterr().err)


def test_missing_media_is_66(tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.mp4"
    assert main(["timeline", str(missing), "--model", str(model_path)]) == ExitCode.NO_INPUT
    assert str(missing) in one_line_error(capsys.readouterr().err)


def test_corrupt_media_is_65(tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(np.random.default_rng(2).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    assert main(["timeline", str(corrupt), "--model", str(model_path)]) == ExitCode.DATA_ERROR
    assert str(corrupt) in one_line_error(capsys.readouterr().err)


def test_a_folder_without_images_is_66(tmp_path: Path, model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    assert main(["timeline", str(empty), "--model", str(model_path)]) == ExitCode.NO_INPUT
    assert str(empty) in one_line_error(capsys.readouterr().err)


def test_a_video_without_a_face_is_no_face(
    faceless_video: Path, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "noface.csv"
    code = main(["timeline", str(faceless_video), "--model", str(model_path), "-o", str(out)])
    assert code == ExitCode.NO_FACE == 3
    assert "no face" in one_line_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def test_a_wrong_model_hash_is_80(
    media_dir: Path, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tampered = tmp_path / "face_landmarker.task"
    shutil.copyfile(model_path, tampered)
    with tampered.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0x5A]))
    code = main(["timeline", str(media_dir / "astronaut.png"), "--model", str(tampered)])
    assert code == ExitCode.MODEL_HASH_MISMATCH == 80
    assert "sha256" in one_line_error(capsys.readouterr().err)


def test_output_into_a_missing_folder_is_74(media_dir: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "x.csv"
    assert main(["timeline", str(media_dir / "astronaut.png"), "--model", str(model_path), "-o", str(out)]) == 74


def test_outputs_never_overwrite_the_input_or_each_other(
    media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``timeline clip.mp4 -o clip.mp4`` used to replace the video with its CSV."""
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(media_dir / "single_face.mp4", clip)
    before = clip.read_bytes()
    (tmp_path / "link.mp4").hardlink_to(clip)
    cases = [
        (["-o", str(clip)], "--output"),
        (["-o", str(tmp_path / "." / "clip.mp4")], "--output"),
        (["-o", str(tmp_path / "link.mp4")], "--output"),
        (["--plot", str(clip)], "--plot"),
        (["-o", str(tmp_path / "x.png"), "--plot", str(tmp_path / "x.png")], "--plot"),
    ]
    for extra, flag in cases:
        assert main(["timeline", str(clip), *extra]) == ExitCode.USAGE, extra
        assert one_line_error(capsys.readouterr().err).startswith(f"microexpr: error: {flag} "), extra
    assert clip.read_bytes() == before
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("value", ["0", "5", "1000", "two"])
def test_bad_num_faces_is_a_usage_error(value: str, media_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--num-faces 1000 used to be accepted while tracker.num_faces stops at 4."""
    with pytest.raises(SystemExit) as exc:
        main(["timeline", str(media_dir / "astronaut.png"), "--num-faces", value])
    assert exc.value.code == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "error:" in line]
    expected = "must be an integer, got 'two'" if value == "two" else f"must be within 1..4 (as tracker.num_faces), got {value}"
    assert line == f"microexpr timeline: error: argument --num-faces: {expected}"


def test_num_faces_range_is_the_configs() -> None:
    """One source of truth: the option's bounds are the ones the config
    validator enforces, value for value at both edges."""
    from pydantic import ValidationError

    from microexpr.commands.timeline import MAX_FACES, MIN_FACES
    from microexpr.config import TrackerConfig

    parser = build_parser()
    for n in (MIN_FACES, MAX_FACES):
        assert TrackerConfig(num_faces=n).num_faces == n
        assert parser.parse_args(["timeline", "x", "--num-faces", str(n)]).num_faces == n
    for n in (MIN_FACES - 1, MAX_FACES + 1):
        with pytest.raises(ValidationError):
            TrackerConfig(num_faces=n)


def test_a_camera_that_does_not_exist_is_66(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["timeline", "63"]) == ExitCode.NO_INPUT
    assert "camera" in one_line_error(capsys.readouterr().err)

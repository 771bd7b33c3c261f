"""``microexpr synth`` on bad input: refused up front with one line and the
documented exit code, and never a half-written or orphan output.

Cases that must fail before any work pass ``--model`` pointing at nothing:
had the command got as far as loading the model it would exit 69, not the
code asserted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from interrupt_support import popen_interruptible

from microexpr.cli import main
from microexpr.errors import ExitCode, MicroexprError
from microexpr.synth import MAX_FRAMES, SynthSpec, _load_base_images, parse_event, write_clip
from microexpr.tracking import create_tracker

#: single_face.mp4 holds 72 frames (0-71).
VIDEO_FRAMES = 72


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("microexpr:")]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]


def listing(folder: Path) -> list[str]:
    """Every file under ``folder``, hidden temporaries included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def tracker(model_path: Path):
    with create_tracker(model_path=model_path) as t:
        yield t


@pytest.fixture()
def clip(media_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the real video, so a test may try to overwrite it."""
    out = tmp_path / "clip.mp4"
    shutil.copyfile(media_dir / "single_face.mp4", out)
    return out


def synth(media: Path, *args: str) -> list[str]:
    return ["synth", str(media), "-e", "12@0.3/0.2", *args]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--duration", "1e9"], ["--duration:", "3e+10 frames", f"at most {MAX_FRAMES} frames"]),
        (["--duration", "3601"], ["--duration:", "1.08e+05 frames"]),  # one second over the hour at 30 fps
        (["--duration", "600", "--fps", "200"], ["600 s at 200 fps is 1.2e+05 frames"]),
        (["-e", "L12@1/100000000"], ["--duration (default: the last event's end", "3e+09 frames"]),
        (["-e", "12@1/" + "9" * 400], ["is too large"]),  # parses to inf
        (["--fps", "5000"], ["--fps: must be within 1..1000"]),
        (["-e", "blink@1.2.3/0.1"], ["'1.2.3' is not a number"]),
    ],
)
def test_an_impossible_clip_length_is_refused_before_any_work(
    args: list[str], words: list[str], media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--duration 1e9`` used to end in MemoryError (exit 1) after loading the model."""
    out = tmp_path / "out" / "c.mp4"
    rc = main(synth(media_dir / "astronaut.png", "-o", str(out), "--model", str(tmp_path / "no-model.task"), *args))
    line = one_line_error(capsys.readouterr().err)
    assert rc == ExitCode.USAGE, line
    for word in words:
        assert word in line
    assert not (tmp_path / "out").exists()


def test_the_frame_cap_is_inclusive(media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exactly one hour at 30 fps passes the length check (and then fails on
    the missing model, proving it got that far)."""
    rc = main(synth(media_dir / "astronaut.png", "-o", str(tmp_path / "c.mp4"), "--model",
                    str(tmp_path / "no-model.task"), "--duration", str(MAX_FRAMES / 30)))
    assert rc == ExitCode.MODEL_UNAVAILABLE, capsys.readouterr().err
    assert listing(tmp_path) == []


@pytest.mark.parametrize("how", ["same", "dot", "hard link"])
def test_the_output_may_not_be_the_input(how: str, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = clip.read_bytes()
    target = {"same": clip, "dot": clip.parent / "." / clip.name, "hard link": clip.parent / "link.mp4"}[how]
    if how == "hard link":
        os.link(clip, target)
    rc = main(synth(clip, "-o", str(target), "--model", str(clip.parent / "no-model.task")))
    line = one_line_error(capsys.readouterr().err)
    assert rc == ExitCode.USAGE
    assert line.startswith(f"microexpr: error: output {target}: is the input media; refusing to overwrite it")
    assert clip.read_bytes() == before
    assert not clip.with_suffix(".json").exists()


@pytest.mark.parametrize(
    ("truth", "expected"),
    [
        ("clip.mp4", "ground truth {truth}: is the input media; refusing to overwrite it"),
        ("out.mp4", "ground truth {truth}: is also the output video; give two files"),
    ],
)
def test_the_truth_may_be_neither_the_input_nor_the_output(
    truth: str, expected: str, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = clip.read_bytes()
    path = clip.parent / truth
    rc = main(synth(clip, "-o", str(clip.parent / "out.mp4"), "--truth", str(path),
                    "--model", str(clip.parent / "no-model.task")))
    line = one_line_error(capsys.readouterr().err)
    assert rc == ExitCode.USAGE
    assert line == "microexpr: error: " + expected.format(truth=path)
    assert clip.read_bytes() == before
    assert listing(clip.parent) == ["clip.mp4"]


@pytest.mark.parametrize("where", ["under a file", "a folder"])
def test_an_unwritable_truth_is_refused_before_the_video_is_made(
    where: str, media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to be found only after the whole mp4 was written, which stayed
    behind as an orphan (exit 74 either way, now without the orphan)."""
    (tmp_path / "plain").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    truth = tmp_path / "plain" / "t.json" if where == "under a file" else tmp_path / "folder"
    out = tmp_path / "c.mp4"
    rc = main(synth(media_dir / "astronaut.png", "-o", str(out), "--truth", str(truth),
                    "--model", str(tmp_path / "no-model.task")))
    line = one_line_error(capsys.readouterr().err)
    assert rc == ExitCode.IO_ERROR
    assert line.startswith(f"microexpr: error: ground truth {truth}: ")
    assert ("is not a folder" if where == "under a file" else "is a folder, not a file") in line
    assert listing(tmp_path) == ["folder", "plain"]


@pytest.mark.parametrize(
    ("frames", "ok"), [("0-71", True), ("70-72", False), ("60-100", False), ("100-120", False)]
)
def test_base_frames_past_the_end_of_the_video(frames: str, ok: bool, clip: Path) -> None:
    """``--frames 60-100`` on a 72-frame video was silently cut to 60-71."""
    first, last = (int(x) for x in frames.split("-"))
    spec = SynthSpec(clip, 30.0, 1.0, (), base_frames=(first, last))
    if ok:
        images, _fps = _load_base_images(spec)
        assert len(images) == last - first + 1
        return
    with pytest.raises(MicroexprError) as exc:
        _load_base_images(spec)
    assert exc.value.exit_code == ExitCode.USAGE
    assert str(exc.value).endswith(f"it has {VIDEO_FRAMES} frames (0-{VIDEO_FRAMES - 1})")


def test_frames_past_the_end_through_the_command(clip: Path, model_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(synth(clip, "-o", str(clip.parent / "out.mp4"), "--model", str(model_path), "--frames", "60-100"))
    line = one_line_error(capsys.readouterr().err)
    assert rc == ExitCode.USAGE
    assert line == f"microexpr: error: {clip}: base frames 60-100 asked for, but it has 72 frames (0-71)"
    assert listing(clip.parent) == ["clip.mp4"]


def test_a_still_has_one_frame(media_dir: Path) -> None:
    with pytest.raises(MicroexprError, match=r"base frames 0-5 asked for, but it has 1 frame$"):
        _load_base_images(SynthSpec(media_dir / "astronaut.png", 30.0, 1.0, (), base_frames=(0, 5)))


def test_a_failed_truth_write_leaves_no_video(tracker, media_dir: Path, tmp_path: Path) -> None:
    """The truth's folder vanishes while the video renders: the write fails
    at the very end, and neither file (nor a temporary) is left."""
    video_dir, truth_dir = tmp_path / "video", tmp_path / "truth"
    spec = SynthSpec(media_dir / "astronaut.png", 30.0, 0.3, (parse_event("12@0.05/0.2"),), seed=1)

    def progress(done: int, total: int) -> None:
        if done == 3:
            shutil.rmtree(truth_dir)

    with pytest.raises(MicroexprError) as exc:
        write_clip(spec, tracker, video_dir / "c.mp4", truth_dir / "c.json", progress=progress)
    assert exc.value.exit_code == ExitCode.IO_ERROR
    assert str(truth_dir / "c.json") in str(exc.value)
    assert listing(tmp_path) == ["video"]


def test_interrupting_the_render_leaves_nothing(tracker, media_dir: Path, tmp_path: Path) -> None:
    previous = tmp_path / "c.mp4"
    previous.write_bytes(b"an earlier clip")
    spec = SynthSpec(media_dir / "astronaut.png", 30.0, 0.3, (parse_event("12@0.05/0.2"),), seed=1)

    def progress(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_clip(spec, tracker, previous, progress=progress)
    assert listing(tmp_path) == ["c.mp4"]
    assert previous.read_bytes() == b"an earlier clip"


def test_both_files_appear_together(tracker, media_dir: Path, tmp_path: Path) -> None:
    """While rendering only hidden temporaries exist; at the end both files."""
    seen: list[list[str]] = []
    spec = SynthSpec(media_dir / "astronaut.png", 30.0, 0.2, (parse_event("12@0.05/0.1"),), seed=1)
    truth = write_clip(spec, tracker, tmp_path / "c.mp4",
                       progress=lambda done, total: seen.append(listing(tmp_path)) if done == 1 else None)
    assert seen and seen[0] and all(name.startswith(".c.") and ".part." in name for name in seen[0])
    assert listing(tmp_path) == ["c.json", "c.mp4"]
    assert truth.frame_count == 6


@pytest.mark.integration
def test_ctrl_c_through_the_command_leaves_nothing(media_dir: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = popen_interruptible(
        [sys.executable, "-m", "microexpr", "synth", str(media_dir / "astronaut.png"), "-o", str(out / "c.mp4"),
         "-e", "12@1/0.2", "--duration", "120", "--model", str(model_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120  # a bound on waiting, not a timing assertion
        while not any(p.name.startswith(".c.") and p.suffix == ".mp4" and p.stat().st_size > 0
                      for p in (out.iterdir() if out.is_dir() else ())):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "microexpr: interrupted"
    assert listing(out) == []

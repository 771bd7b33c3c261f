"""``microexpr timeline MEDIA``: per-frame Action Units as CSV or JSON lines.

The work is in ``microexpr.timeline``; this module parses options, opens
the output and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from microexpr.commands._args import config_bounds, int_in, positive_float
from microexpr.config import TrackerConfig
from microexpr.errors import ExitCode, MicroexprError
from microexpr.timeline import PRESENCE_THRESHOLD, OutputFormat, run_timeline
from microexpr.tracking import TrackerBackend

#: --num-faces takes what the configuration's tracker.num_faces takes.
MIN_FACES, MAX_FACES = config_bounds(TrackerConfig, "num_faces")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("media", metavar="MEDIA", help="a video file, a folder of images, or one image")
    parser.add_argument("-o", "--output", metavar="FILE", type=Path,
                        help="write here instead of stdout (written whole or not at all)")
    parser.add_argument("--json", action="store_true", help="JSON lines (one object per row) instead of CSV")
    parser.add_argument("--plot", metavar="FILE.png", type=Path, help="also draw the AU curves over time")
    parser.add_argument("--model", metavar="PATH", type=Path,
                        help="FaceLandmarker bundle to use (verified by sha256; default: the provisioned one)")
    parser.add_argument("--num-faces", type=int_in(MIN_FACES, MAX_FACES, key="tracker.num_faces"), default=1,
                        metavar="N", help=f"track up to N faces, {MIN_FACES}..{MAX_FACES}; with N > 1 rows carry "
                        "a face_id column (default 1)")
    parser.add_argument("--backend", choices=[b.value for b in TrackerBackend], default=TrackerBackend.MEDIAPIPE.value,
                        help="face tracker: mediapipe (default, the reference) or onnx (the same networks under "
                        "ONNX Runtime, docs/onnx.md); the onnx backend tracks one face")
    parser.add_argument("--fps", type=positive_float, metavar="FPS",
                        help="frame rate for timestamps (default: the video's, or 30 for images)")
    parser.add_argument("--sides", action="store_true",
                        help="add AUxx_left/AUxx_right columns for AUs measured per side")
    parser.epilog = (
        f"AUxx_r is on 0..5 (1 = FACS trace, 5 = maximum); AUxx_c is 1 from AUxx_r >= {PRESENCE_THRESHOLD:g}. "
        "Pose angles are degrees. Exit 3 when no frame holds a face."
    )


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    """stdout, or a temporary file beside ``path`` renamed into place only
    when the run succeeds, so a failed run never leaves half a file."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise MicroexprError(f"--output {path}: folder {folder} does not exist", exit_code=ExitCode.IO_ERROR)
    if path.is_dir():
        raise MicroexprError(f"--output {path}: is a folder, not a file", exit_code=ExitCode.IO_ERROR)
    tmp = folder / f".{path.name}.{os.getpid()}.part"
    try:
        handle = tmp.open("w", encoding="utf-8", newline="")  # honours the umask, unlike mkstemp
    except OSError as exc:
        raise MicroexprError(f"--output {path}: cannot write: {exc.strerror}", exit_code=ExitCode.IO_ERROR) from None
    try:
        with handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:  # one of them does not exist yet
        return False


def _refuse_clobbering(args: argparse.Namespace) -> None:
    """``-o clip.mp4`` once replaced the input video with the CSV; ``-o x.png
    --plot x.png`` wrote one output over the other."""
    media = Path(args.media)
    for flag, path in (("--output", args.output), ("--plot", args.plot)):
        if path is not None and _same_file(path, media):
            raise MicroexprError(f"{flag} {path}: is the input MEDIA; refusing to overwrite it",
                                 exit_code=ExitCode.USAGE)
    if args.output is not None and args.plot is not None and _same_file(args.output, args.plot):
        raise MicroexprError(f"--plot {args.plot}: is also --output; give two files", exit_code=ExitCode.USAGE)


def _check_backend(args: argparse.Namespace) -> None:
    """Options the onnx backend cannot honour are refused, not ignored: it
    tracks one face and loads its own manifest-pinned files, not --model."""
    if args.backend != TrackerBackend.ONNX.value:
        return
    if args.num_faces != 1:
        raise MicroexprError("--num-faces: the onnx backend tracks one face", exit_code=ExitCode.USAGE)
    if args.model is not None:
        raise MicroexprError("--model: applies to the mediapipe backend (the onnx files are pinned by their manifest)",
                             exit_code=ExitCode.USAGE)


def run(args: argparse.Namespace) -> int:
    _refuse_clobbering(args)
    _check_backend(args)
    with _output(args.output) as out:
        run_timeline(
            args.media,
            out,
            fmt=OutputFormat.JSONL if args.json else OutputFormat.CSV,
            model_path=args.model,
            num_faces=args.num_faces,
            backend=args.backend,
            fps=args.fps,
            sides=args.sides,
            plot_path=args.plot,
            progress=sys.stderr.isatty(),
        )
    return int(ExitCode.OK)

"""``microexpr synth MEDIA -o CLIP.mp4 --event ...``: a micro-expression clip
with exact ground truth, made by warping a real face.

The work is in ``microexpr.synth``; this module parses options and reports.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from microexpr.commands._args import non_negative_float, positive_float
from microexpr.errors import ConfigError, ExitCode, MicroexprError

EPILOG = """\
EVENT is WHAT@START/DURATION[*INTENSITY][,hold=S], times in seconds:
  L12@1.0/0.2*0.5    left lip-corner puller, 200 ms from t=1.0 s, half intensity
  6+12@1.0/0.3       cheek raiser + lip-corner puller (both sides), full intensity
  1+2@2.0/0.1*0.3    brow raise, 100 ms, weak
  6+12@1.0/2.5,hold=1.2   a slow macro smile held 1.2 s
  blink@2.0/0.15     a blink (distractor)
  gaze@2.5/0.1*-1    gaze shift toward the subject's right that stays (distractor)
  turn@3.0/0.4       head turn (yaw-like perspective, roll, shift) that stays; *-1 turns back
AUs: 1 2 4 5 6 7 9 10 12 14 15 17 20 23 24 25 26, with L/R prefixes for one side.
Writes the video (mp4, codec mp4v; or --codec mjpeg: .avi) and its ground truth (JSON: onset/apex/offset
frames and seconds, AUs, kind micro|macro|blink|gaze|head_turn, expect_episode).
Generated clips are test material: keep them out of version control.
"""


def _frames(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)-(\d+)", text.strip())
    if not match or int(match.group(1)) > int(match.group(2)):
        raise argparse.ArgumentTypeError(f"expected FIRST-LAST frame numbers, e.g. 0-17, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("media", metavar="MEDIA", type=Path, help="a real face: an image, or a video (see --frames)")
    parser.add_argument("-o", "--output", metavar="CLIP.mp4", type=Path, required=True,
                        help="video to write (.mp4; .avi with --codec mjpeg)")
    parser.add_argument("--codec", choices=("mp4v", "mjpeg"), default="mp4v",
                        help="mp4v (MPEG-4 Part 2, .mp4, default) or mjpeg (a webcam's MJPEG, .avi)")
    parser.add_argument("--truth", metavar="FILE.json", type=Path,
                        help="ground truth to write (default: the video's path with .json)")
    parser.add_argument("-e", "--event", metavar="EVENT", action="append", default=[],
                        help="an event to play (repeatable; see below)")
    parser.add_argument("--fps", type=positive_float, default=30.0, help="frame rate of the clip (default 30)")
    parser.add_argument("--duration", type=positive_float, metavar="S",
                        help="clip length in seconds (default: last event's end + 0.8 s)")
    parser.add_argument("--frames", type=_frames, metavar="FIRST-LAST",
                        help="for a video: its neutral frames to use, played back and forth (e.g. 0-17)")
    parser.add_argument("--noise", type=non_negative_float, default=2.0, metavar="SIGMA",
                        help="Gaussian sensor noise per frame, grey levels (default 2; 0 = none)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--apex-fraction", type=float, default=0.4, metavar="F",
                        help="apex position within an expression's duration, 0..1 exclusive (default 0.4)")
    parser.add_argument("--model", metavar="PATH", type=Path,
                        help="FaceLandmarker bundle (verified by sha256; default: the provisioned one)")
    parser.add_argument("--json", action="store_true", help="print the ground truth as JSON on stdout")


def _frame_count(args: argparse.Namespace, duration: float) -> int:
    """The clip's frame count, or a usage error naming the option to fix."""
    from microexpr.synth import clip_frame_count

    what = "--duration" if args.duration is not None else "--duration (default: the last event's end + 0.8 s)"
    try:
        return clip_frame_count(args.fps, duration, fps_name="--fps", duration_name=what)
    except ConfigError as exc:
        raise MicroexprError(str(exc), exit_code=ExitCode.USAGE) from None


def run(args: argparse.Namespace) -> int:
    from microexpr.synth import SynthSpec, check_outputs, parse_event, write_clip
    from microexpr.tracking import create_tracker

    from microexpr.videocodec import Codec

    codec = Codec.MJPEG_AVI if args.codec == "mjpeg" else Codec.MP4V
    if args.output.suffix.lower() != codec.suffix:
        raise MicroexprError(f"--output {args.output}: must end in {codec.suffix} (written with the {args.codec} codec)",
                             exit_code=ExitCode.USAGE)
    if not 0.0 < args.apex_fraction < 1.0:
        raise MicroexprError(f"--apex-fraction: must be between 0 and 1 exclusive, got {args.apex_fraction}",
                             exit_code=ExitCode.USAGE)
    try:
        events = tuple(parse_event(spec, apex_fraction=args.apex_fraction) for spec in args.event)
    except ConfigError as exc:
        raise MicroexprError(str(exc), exit_code=ExitCode.USAGE) from None
    end = max((ev.offset_s for ev in events), default=0.0)
    duration = args.duration if args.duration is not None else end + 0.8
    for spec, ev in zip(args.event, events):
        if ev.onset_s >= duration:
            raise MicroexprError(f"--event {spec!r}: starts at {ev.onset_s:g} s, after the clip's end ({duration:g} s)",
                                 exit_code=ExitCode.USAGE)
    frame_count = _frame_count(args, duration)
    # all checked before the model loads or a file is touched
    args.output, args.truth = check_outputs(args.media, args.output, args.truth)
    spec = SynthSpec(source=args.media, fps=args.fps, duration_s=duration, events=events,
                     noise_sigma=args.noise, seed=args.seed, base_frames=args.frames)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=frame_count, unit="frame", desc="synth", leave=False)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    try:
        with create_tracker(model_path=args.model) as tracker:
            truth = write_clip(spec, tracker, args.output, args.truth, progress=progress, codec=codec)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(truth.to_json())
    else:
        print(f"{args.output}: {truth.frame_count} frames at {truth.fps:g} fps, {truth.width}x{truth.height}")
        for ev in truth.events:
            what = ev.aus or ev.kind.value
            print(f"  {ev.kind.value:9} {what:10} onset {ev.onset_frame:5d}  apex {ev.apex_frame:5d}  "
                  f"offset {ev.offset_frame:5d}  ({ev.duration_s * 1000:.0f} ms, intensity {ev.intensity:g})")
        print(f"ground truth: {args.truth}")
    return int(ExitCode.OK)

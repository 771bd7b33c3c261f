"""``microexpr bench``: latency, throughput and memory on this machine."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from microexpr.errors import ExitCode, MicroexprError

#: The Makefile's ``SOURCE`` (what ``make run`` and ``make bench`` play): the
#: shared real face clip, relative to the shared folder.
DEFAULT_CLIP = Path("data/media/single_face.mp4")


def default_clip(env: dict[str, str] | None = None) -> Path:
    """``make run``'s default clip: ``$MICROEXPR_SHARED/<DEFAULT_CLIP>``, else the
    checkout's ``../shared`` (the Makefile's ``SHARED ?= ../shared``)."""
    env = dict(os.environ) if env is None else env
    checkout = Path(__file__).resolve().parents[3]  # device/microexpr/commands/bench.py
    shared = [Path(env["MICROEXPR_SHARED"])] if env.get("MICROEXPR_SHARED") else []
    shared.append(checkout.parent / "shared")
    for folder in shared:
        if (folder / DEFAULT_CLIP).is_file():
            return folder / DEFAULT_CLIP
    raise MicroexprError(
        f"bench: no --source given and make run's default clip is not at {shared[-1] / DEFAULT_CLIP}"
        " (set MICROEXPR_SHARED); pass --source FILE", exit_code=ExitCode.USAGE,
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number of seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", type=Path, default=None,
                        help="a real face video file (an image folder only with --daemon-seconds 0); "
                        f"default: make run's clip, $MICROEXPR_SHARED/{DEFAULT_CLIP} or ../shared/{DEFAULT_CLIP}")
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the provisioned one)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="results root; a folder per machine is made inside (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="short run for CI: 2 passes, 10 s daemon soak")
    parser.add_argument("--daemon-seconds", type=_seconds, default=None,
                        help="length of the daemon soak (default 60, quick 10; 0 skips the daemon scenarios)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of Markdown")


def run(args: argparse.Namespace) -> int:
    from microexpr.bench import markdown_summary, run_bench
    from microexpr.models import resolve_model_path

    source = args.source
    if source is None:
        source = default_clip()
        print(f"bench: no --source: using {source} (make run's default clip)", file=sys.stderr, flush=True)
    model = resolve_model_path(args.model)
    tty = sys.stderr.isatty()
    report, out = run_bench(
        source, model_path=model, out_root=args.out, quick=args.quick,
        daemon_seconds=args.daemon_seconds, show_progress=tty, progress_lines=not tty,
    )
    print(json.dumps(report, indent=2) if args.json else markdown_summary(report))
    print(f"results written to {out}", file=sys.stderr)
    return int(ExitCode.OK)

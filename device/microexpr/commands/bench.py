"""``microexpr bench``: latency, throughput and memory on this machine."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from microexpr.errors import ExitCode


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number of seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, type=Path,
                        help="a real face video file (an image folder only with --daemon-seconds 0)")
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

    model = resolve_model_path(args.model)
    report, out = run_bench(
        args.source, model_path=model, out_root=args.out, quick=args.quick,
        daemon_seconds=args.daemon_seconds, show_progress=sys.stderr.isatty(),
    )
    print(json.dumps(report, indent=2) if args.json else markdown_summary(report))
    print(f"results written to {out}", file=sys.stderr)
    return int(ExitCode.OK)

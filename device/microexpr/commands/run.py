"""``microexpr run``: the long-running daemon (see docs/service.md).

Without a configuration file it runs on the built-in defaults, prints each
event as one JSON line, and publishes to a broker on localhost when one
answers. The wiring lives in ``microexpr.service``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from microexpr import config as cfg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cfg.add_config_argument(parser)
    parser.add_argument(
        "--source", metavar="SPEC", default=None,
        help="what to watch, overriding source.uri: a video file, an image folder, a camera index, "
        "/dev/videoN, picamera2[:N] or replay:FILE",
    )
    parser.add_argument(
        "--print-events", action=argparse.BooleanOptionalAction, default=None,
        help="print each event as one JSON line on stdout (default: on unless stdout is the systemd journal)",
    )
    parser.add_argument("--device-id", metavar="ID", default=None, help="override device_id (MQTT topics, client id)")
    parser.add_argument("--outbox", type=Path, metavar="PATH", default=None, help="override outbox.path")


def run(args: argparse.Namespace) -> int:
    from microexpr.service import RunOptions
    from microexpr.service import run as run_service

    return run_service(RunOptions.from_args(args))

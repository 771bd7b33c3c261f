"""The ``microexpr`` command line: a thin dispatcher.

Each sub-command lives in ``microexpr.commands.<module>`` with
``add_arguments(parser)`` and ``run(args) -> int``. This module alone turns
``MicroexprError`` into one line on stderr and its exit code; anything else
is a bug, reported in one line too unless ``--traceback`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from microexpr import __version__
from microexpr.errors import ExitCode, MicroexprError
from microexpr.logs import setup_logging

#: (command, module under microexpr.commands, one-line help)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("run", "run", "run the pipeline on a camera or media file (the daemon)"),
    ("timeline", "timeline", "per-frame Action Units of a video or image folder (CSV/JSON/plot)"),
    ("provision-model", "provision", "install the FaceLandmarker model, verified by sha256"),
    ("eval", "evaluate", "score the classifier on a coded micro-expression dataset (LOSO)"),
    ("fit-prototypes", "fit_prototypes", "fit per-emotion AU prototypes from a label file"),
    ("synth", "synth", "make a micro-expression clip with exact ground truth from a real face"),
    ("bench", "bench", "measure latency, throughput and memory on this machine"),
    ("check-config", "check_config", "validate a configuration file and print it resolved"),
    ("fleet", "fleet", "per-device health and events of a fleet, from the central broker"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microexpr",
        description="Facial micro-expression recognition on an edge device: the daemon and its tools.",
        epilog="Each COMMAND has --help. Errors are one line on stderr with an exit code (README, \"Exit codes\").",
    )
    parser.add_argument("--version", action="version", version=f"microexpr {__version__}")
    _add_common_flags(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(f"microexpr.commands.{module_name}")
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        # Also after the command: "microexpr eval X --traceback" is how people
        # rerun a failed command, as the error line tells them to. SUPPRESS
        # keeps an unset flag here from overwriting one given before COMMAND.
        _add_common_flags(command_parser, default=argparse.SUPPRESS)
        command_parser.set_defaults(_run=module.run)
    return parser


def _add_common_flags(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    parser.add_argument("--traceback", action="store_true", default=default, help="show tracebacks of errors")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args._run(args))
    except MicroexprError as exc:
        if args.traceback:  # shown, but the exit code stays the documented one (78 must stay 78 under systemd)
            traceback.print_exc()
        print(f"microexpr: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("microexpr: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitCode.OK)
    except Exception as exc:  # a bug: one line unless asked for more
        if args.traceback:
            traceback.print_exc()
            return int(ExitCode.FAILURE)
        print(f"microexpr: internal error: {type(exc).__name__}: {exc} (rerun with --traceback)", file=sys.stderr)
        return int(ExitCode.FAILURE)


if __name__ == "__main__":
    sys.exit(main())

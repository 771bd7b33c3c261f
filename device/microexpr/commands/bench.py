"""Placeholder while this command is being built."""

import argparse

from microexpr.errors import MicroexprError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    raise MicroexprError("this command is not built yet")

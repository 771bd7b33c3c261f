"""argparse value types shared by the sub-commands.

Each rejects what no option of ours can mean (text, NaN, infinities, values
out of range) with a message argparse prints as a one-line usage error
(exit 2), before any work starts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from pydantic import BaseModel


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def config_bounds(section: type[BaseModel], name: str) -> tuple[int, int]:
    """(lowest, highest) a configuration field accepts, read from its
    pydantic ``ge``/``le`` constraints, so an option mirroring a config key
    cannot drift from it (``--num-faces`` once took 1000 where the config
    stops at 4)."""
    low = high = None
    for rule in section.model_fields[name].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    if low is None or high is None:
        raise TypeError(f"{section.__name__}.{name} has no ge/le bounds")
    return int(low), int(high)


def int_in(low: int, high: int, *, key: str = "") -> Callable[[str], int]:
    """An argparse type for integers within ``low..high``; ``key`` names the
    configuration key the range comes from, for the message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not low <= value <= high:
            where = f" (as {key})" if key else ""
            raise argparse.ArgumentTypeError(f"must be within {low}..{high}{where}, got {value}")
        return value

    parse.__name__ = f"integer {low}..{high}"  # argparse names the type in some messages
    return parse

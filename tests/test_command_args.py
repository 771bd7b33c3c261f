"""Shared argparse value types: bad numbers are usage errors (exit 2)."""

from __future__ import annotations

import argparse

import pytest

from microexpr.cli import main
from microexpr.commands._args import non_negative_float, positive_float, positive_int


@pytest.mark.parametrize("text", ["abc", "nan", "inf", "-inf", "0", "-1"])
def test_positive_float_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive_float(text)


def test_accepted_values() -> None:
    assert positive_float("2.5") == 2.5
    assert non_negative_float("0") == 0.0
    assert positive_int("3") == 3
    with pytest.raises(argparse.ArgumentTypeError):
        non_negative_float("1e999")  # overflows to inf
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int("0")


def test_an_infinite_synth_duration_is_a_usage_error(media_dir, tmp_path, capsys) -> None:
    """It used to reach the renderer and die with MemoryError (exit 1)."""
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(media_dir / "astronaut.png"), "-o", str(tmp_path / "s.mp4"),
              "-e", "12@1/0.2", "--duration", "inf"])
    assert exc.value.code == 2
    assert "finite" in capsys.readouterr().err

"""benchmarks/au_parity.py, the arm64 check's frame-by-frame AU comparison."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("au_parity", ROOT / "benchmarks" / "au_parity.py")
assert _spec is not None and _spec.loader is not None
au_parity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(au_parity)


def _row(frame: int, au12: float, success: bool = True) -> dict:
    return {"frame": frame, "success": success, "au_r": {"AU12": au12, "AU06": 0.5}, "au_c": {"AU12": int(au12 > 1)},
            "au_left": {"AU12": au12}, "au_right": {"AU12": au12}}


def test_within_and_over_tolerance(tmp_path: Path) -> None:
    a = [_row(0, 1.00), _row(1, 2.00)]
    ok, lines = au_parity.compare(a, [_row(0, 1.01), _row(1, 2.00)], 0.05)
    assert ok and any("compared (au_r, au_left, au_right): 8; identical: 5" in line for line in lines)
    ok, lines = au_parity.compare(a, [_row(0, 1.00), _row(1, 2.10)], 0.05)
    assert not ok and any("over tolerance 0.05: 3" in line for line in lines)
    ok, _ = au_parity.compare(a, [_row(0, 1.00), _row(1, 2.00, success=False)], 0.05)
    assert not ok
    ok, _ = au_parity.compare(a, a[:1], 0.05)
    assert not ok


def test_cli_exit_codes(tmp_path: Path, capsys) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [_row(0, 1.0)]) + "\n")
    assert au_parity.main([str(f), str(f)]) == 0
    assert "parity within 0.05: yes" in capsys.readouterr().out
    assert au_parity.main([str(f), str(tmp_path / "missing.jsonl")]) == 66

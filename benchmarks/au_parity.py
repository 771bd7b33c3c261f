"""Compare two `microexpr timeline --json` runs AU by AU, frame by frame.

Used by provisioning/arm64-check.sh to hold the aarch64 run against the x86
run of the same frames. Intensities are printed with two decimals on the
0–5 scale, so identical arithmetic gives a difference of 0; a different SIMD
path (NEON vs AVX in XNNPACK) may move a value across a rounding edge, hence
a tolerance. Prints a markdown summary; exit 0 when every frame matches within
the tolerance and the tracked/untracked frames agree, 1 otherwise.

    python benchmarks/au_parity.py A.jsonl B.jsonl [--tol 0.05]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare(a: list[dict], b: list[dict], tol: float) -> tuple[bool, list[str]]:
    """Markdown lines and whether every AU of every frame is within ``tol``."""
    lines: list[str] = []
    ok = len(a) == len(b)
    lines.append(f"- frames: {len(a)} vs {len(b)}")
    success_mismatch = sum(1 for x, y in zip(a, b) if x["success"] != y["success"])
    ok &= success_mismatch == 0
    lines.append(f"- frames where one side found a face and the other did not: {success_mismatch}")
    worst: dict[str, float] = {}
    compared = exact = over = 0
    class_flips = 0
    for x, y in zip(a, b):
        for key in ("au_r", "au_left", "au_right"):
            for au, value in (x.get(key) or {}).items():
                other = (y.get(key) or {}).get(au)
                if other is None:
                    ok = False
                    over += 1
                    continue
                diff = abs(float(value) - float(other))
                compared += 1
                exact += diff == 0
                over += diff > tol
                name = au if key == "au_r" else f"{au} ({key[3:]})"
                worst[name] = max(worst.get(name, 0.0), diff)
        class_flips += sum(1 for au, c in (x.get("au_c") or {}).items() if (y.get("au_c") or {}).get(au) != c)
    ok &= over == 0
    lines.append(f"- AU values compared (au_r, au_left, au_right): {compared}; identical: {exact}; "
                 f"over tolerance {tol}: {over}")
    lines.append(f"- presence (au_c) disagreements: {class_flips}")
    if worst:
        top = sorted(worst.items(), key=lambda kv: -kv[1])[:8]
        lines.append("- largest differences: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    lines.append(f"- parity within {tol}: {'yes' if ok else 'NO'}")
    return ok, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--tol", type=float, default=0.05, help="max |difference| on the 0-5 AU scale")
    args = parser.parse_args(argv)
    for path in (args.a, args.b):
        if not path.is_file():
            print(f"au_parity: missing {path}", file=sys.stderr)
            return 66
    ok, lines = compare(_rows(args.a), _rows(args.b), args.tol)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

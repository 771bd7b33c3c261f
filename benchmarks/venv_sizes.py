#!/usr/bin/env python3
"""Size of two venvs by distribution, side by side, as a markdown table.

    python benchmarks/venv_sizes.py FULL_VENV PRUNED_VENV

A distribution's size is the files on disk that its RECORD lists (byte-code
included) plus its dist-info folder; files no RECORD lists are one more row.
Symbolic links (Debian's python3-systemd linked in) count as their own size.
MB = 10^6 bytes. The venv totals are the byte sums of every file, and `du -sm`
(1 MiB blocks, what the 450 MB target is measured with) is printed below.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path


def by_dist(venv: Path) -> tuple[dict[str, int], int]:
    site = next((venv / "lib").glob("python3*/site-packages"))
    owner: dict[str, str] = {}
    for record in site.glob("*.dist-info/RECORD"):
        name = record.parent.name.removesuffix(".dist-info").rsplit("-", 1)[0].lower().replace("_", "-")
        for line in record.read_text().splitlines():
            rel = line.rsplit(",", 2)[0]
            if rel:
                owner[os.path.normpath(site / rel)] = name
        for p in record.parent.rglob("*"):
            owner[str(p)] = name
    sizes: dict[str, int] = defaultdict(int)
    total = 0
    for root, dirs, files in os.walk(venv):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for f in files + [d for d in os.listdir(root) if os.path.islink(os.path.join(root, d)) and d not in files]:
            path = os.path.join(root, f)
            size = os.lstat(path).st_size
            total += size
            sizes[owner.get(os.path.normpath(path), "(in no RECORD: interpreter links, venv scripts)")] += size
    return sizes, total


def du_mb(path: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def main() -> int:
    full, pruned = Path(sys.argv[1]), Path(sys.argv[2])
    a, ta = by_dist(full)
    b, tb = by_dist(pruned)
    print("| distribution | full MB | pruned MB | cut MB |")
    print("|---|---:|---:|---:|")
    for name in sorted(set(a) | set(b), key=lambda n: -a.get(n, 0)):
        x, y = a.get(name, 0), b.get(name, 0)
        if x < 200_000 and y < 200_000:
            continue
        print(f"| {name} | {x / 1e6:.1f} | {y / 1e6:.1f} | {(x - y) / 1e6:.1f} |")
    small_a = sum(v for n, v in a.items() if v < 200_000 and b.get(n, 0) < 200_000)
    small_b = sum(v for n, v in b.items() if v < 200_000 and a.get(n, 0) < 200_000)
    print(f"| (each < 0.2 MB, together) | {small_a / 1e6:.1f} | {small_b / 1e6:.1f} | {(small_a - small_b) / 1e6:.1f} |")
    print(f"| **total (bytes)** | **{ta / 1e6:.1f}** | **{tb / 1e6:.1f}** | **{(ta - tb) / 1e6:.1f}** |")
    print(f"\n`du -sm`: full {du_mb(full)} MB, pruned {du_mb(pruned)} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

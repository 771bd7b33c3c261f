"""``microexpr fit-prototypes LABELS -o prototypes.json``.

Fits per-emotion AU prototypes on every usable row of a coding table and
writes them with their provenance (dataset, file sha256, date, command,
counts). Exit codes: 0 written; 65 malformed label file; 66 not found; 74
cannot write the output.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from microexpr.classify.prototypes import DEFAULT_M, PrototypeSet, provenance_for
from microexpr.labels import read_labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", type=Path, metavar="LABELS", help="coding table (.xlsx or .csv)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="prototypes JSON to write")
    parser.add_argument("--dataset", metavar="NAME", help="dataset name for the provenance (default: the file name)")
    parser.add_argument("--m", type=float, default=DEFAULT_M, dest="m",
                        help="pseudo-episodes smoothing each emotion's AU frequencies towards the pooled ones "
                             f"(default {DEFAULT_M})")
    parser.add_argument("--strict", action="store_true",
                        help="refuse rows whose frame numbers are not numbers or contradict each other (apex "
                             "outside onset..offset, offset before onset) instead of warning and keeping them")
    parser.add_argument("--skip-unparseable", action="store_true",
                        help="leave out rows whose AU string cannot be parsed instead of failing")


def run(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.m) and args.m > 0):  # inf would be written as non-JSON "Infinity"
        print(f"microexpr fit-prototypes: error: --m must be a finite number > 0, got {args.m}", file=sys.stderr)
        return 2
    if args.output.resolve() == args.labels.resolve() or (
        args.output.exists() and args.labels.exists() and args.output.samefile(args.labels)
    ):  # it used to replace the coding table with the prototypes JSON
        print(f"microexpr fit-prototypes: error: -o {args.output} is the label file; refusing to overwrite it",
              file=sys.stderr)
        return 2
    table = read_labels(args.labels).checked(skip_unparseable=args.skip_unparseable, strict=args.strict)
    samples = [(r.aus.readings(), r.emotion) for r in table.rows if r.aus is not None]
    command = "microexpr fit-prototypes " + " ".join(
        shlex.quote(str(a)) for a in (args.labels.name, "-o", args.output.name)
    )
    provenance = provenance_for(
        dataset=args.dataset or args.labels.name,
        path=args.labels,
        sha256=table.sha256,
        rows=len(samples),
        subjects=len(table.subjects),
        command=command,
        extra={"skipped_rows": [p.where for p in table.unparseable]},
    )
    prototypes = PrototypeSet.fit(samples, m=args.m, provenance=provenance)
    prototypes.save(args.output)
    counts = ", ".join(f"{e.value} {int(p.count)}" for e, p in prototypes.classes.items())
    print(f"wrote {args.output}: {len(samples)} episodes, {len(table.subjects)} subjects ({counts})")
    return 0

"""``microexpr fit-prototypes LABELS [LABELS ...] -o prototypes.json``.

Fits per-emotion AU prototypes on every usable row of a coding table and
writes them with their provenance (dataset, file sha256, row fingerprint,
date, command, counts). Several tables give a pooled set: one prototype set
per table, merged with equal dataset weights, the configurations they label
differently marked as contested (what the shipped ``prototypes.json`` is).
Select the output with ``[engine] prototypes`` or ``microexpr eval
--prototypes FILE``. Exit codes: 0 written; 2 bad command line; 65 malformed
label file; 66 not found; 74 cannot write the output.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from microexpr.classify.prototypes import DEFAULT_M, PrototypeSet, provenance_for
from microexpr.harmonise import table_fingerprint
from microexpr.labels import read_labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", type=Path, nargs="+", metavar="LABELS",
                        help="coding table (.xlsx or .csv); several give one pooled set (equal dataset weights)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="prototypes JSON to write")
    parser.add_argument("--dataset", metavar="NAME", action="append",
                        help="dataset name for the provenance, once per table in order (default: the file name)")
    parser.add_argument("--m", type=float, default=DEFAULT_M, dest="m",
                        help="pseudo-episodes smoothing each emotion's AU frequencies towards the pooled ones "
                             f"(default {DEFAULT_M})")
    parser.add_argument("--strict", action="store_true",
                        help="refuse the file for rows that cannot be scored (unknown emotion, unreadable AU string, no "
                             "subject) and rows whose frame numbers are not numbers or contradict each other, "
                             "instead of leaving them out or keeping them with a warning")
    parser.add_argument("--skip-unparseable", action="store_true",
                        help="with --strict: still leave out rows whose AU string cannot be parsed (the default "
                             "without --strict; they are listed)")


def run(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.m) and args.m > 0):  # inf would be written as non-JSON "Infinity"
        print(f"microexpr fit-prototypes: error: --m must be a finite number > 0, got {args.m}", file=sys.stderr)
        return 2
    for labels in args.labels:
        if args.output.resolve() == labels.resolve() or (
            args.output.exists() and labels.exists() and args.output.samefile(labels)
        ):  # it used to replace the coding table with the prototypes JSON
            print(f"microexpr fit-prototypes: error: -o {args.output} is the label file; refusing to overwrite it",
                  file=sys.stderr)
            return 2
    names = args.dataset or []
    if names and len(names) != len(args.labels):
        print(f"microexpr fit-prototypes: error: --dataset given {len(names)} time(s) for {len(args.labels)} "
              "table(s); give it once per table or not at all", file=sys.stderr)
        return 2
    command = "microexpr fit-prototypes " + " ".join(
        shlex.quote(str(a)) for a in (*(p.name for p in args.labels), "-o", args.output.name)
    )
    parts = []
    for i, labels in enumerate(args.labels):
        read = read_labels(labels)
        table = read.checked(skip_unparseable=args.skip_unparseable, strict=args.strict)
        samples = [(r.aus.readings(), r.emotion) for r in table.rows if r.aus is not None]
        fingerprint = table_fingerprint(read)  # every row read, parsed or not: what eval computes
        provenance = provenance_for(
            dataset=names[i] if names else labels.name,
            path=labels,
            sha256=table.sha256,
            rows=len(samples),
            subjects=len(table.subjects),
            command=command,
            extra={"fingerprint": fingerprint, "skipped_rows": [p.where for p in table.unparseable]},
        )
        parts.append((str(provenance["dataset"]), fingerprint, PrototypeSet.fit(samples, m=args.m,
                                                                                provenance=provenance)))
    if len(parts) == 1:
        prototypes = parts[0][2]
    else:
        prototypes = PrototypeSet.pool(parts, m=args.m, provenance={
            "dataset": " + ".join(name for name, _f, _p in parts),
            "pooling": "one prototype set per dataset, merged with equal dataset weights (each row of dataset d "
                       "counts mean_rows / rows_d)",
            "command": command, "created": parts[0][2].provenance["created"],
            "microexpr_version": parts[0][2].provenance["microexpr_version"]})
    prototypes.save(args.output)
    counts = ", ".join(f"{e.value} {p.count:.0f}" for e, p in prototypes.classes.items())
    episodes = sum(int(p.total) for _n, _f, p in parts)
    contested = f"; {len(prototypes.contested)} contested configuration(s)" if prototypes.components else ""
    print(f"wrote {args.output}: {episodes} episodes from {len(parts)} table(s) ({counts}){contested}")
    return 0

"""``microexpr eval LABELS [LABELS ...]``: scores on coded datasets.

One table: leave-one-subject-out (LOSO) scores. Several tables: each is also
scored leave-one-dataset-out (``lodo.py``): with everything fitted on the
other tables only, in its own labels (``harmonise.py``).

With several tables ``--reasoner`` sends each table's ambiguous ``shipped``
decisions to the reasoner (``shipped+reasoner``), as one table does for the
LOSO classifier.

Exit codes: 0 scored; 2 bad command line (``--strict`` with several
tables, the same table twice); 65 malformed label file (missing
columns, unknown emotions and unparseable AU strings with ``--strict`` (by
default those rows are left out and listed),
bad or contradicting frame numbers with ``--strict``, no rows, fewer than 2
subjects; with several tables: a table with no usable row or no label in
common with the protocol; odd rows are per-row notes there); 66 label file
or ``--prototypes`` file not found; 74 cannot write ``--out``; 78 bad
configuration (``--reasoner`` reads ``--config``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from microexpr import lodo
from microexpr.classify.profiles import PROFILES, get_profile
from microexpr.classify.prototypes import PrototypeSet
from microexpr.config import add_config_argument, load_config
from microexpr.errors import ConfigError
from microexpr.evaluate import PROTOCOLS, EvalSettings, Refiner, folds, run_eval, write_outputs
from microexpr.labels import read_labels

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labels", type=Path, nargs="+", metavar="LABELS",
                        help="coding table: CASME II .xlsx, its CSV, or the generic CSV "
                             "(subject,filename,onset,apex,offset,aus,emotion); give several to score each "
                             "leave-one-dataset-out (fitted on the others only)")
    parser.add_argument("--protocol", action="append", choices=sorted(PROTOCOLS), metavar="NAME",
                        help="label set to score: 5class (CASME II's five), samm5 (SAMM's five) or all "
                             "(every label in the file); repeat for several; default: 5class and all for one "
                             "table, all (each table's own labels) for several, the profile's with --profile")
    parser.add_argument("--profile", choices=sorted(PROFILES), metavar="NAME",
                        help="label profile: generic (default: all labels, prototypes pooled over datasets) or "
                             "casme2 (CASME II's five classes and its own prototypes, to compare with the paper); "
                             "sets the default protocol and the prototypes scored as 'shipped'")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON on stdout")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write eval.json, eval.md and confusion-matrix PNGs to DIR")
    parser.add_argument("--strict", action="store_true",
                        help="refuse the file for rows that cannot be scored (unknown emotion, unreadable AU string, no "
                             "subject) and rows whose frame numbers are not numbers or contradict each other, "
                             "instead of leaving them out or keeping them with a warning")
    parser.add_argument("--skip-unparseable", action="store_true",
                        help="with --strict: still leave out rows whose AU string cannot be parsed (the default "
                             "without --strict; they are listed)")
    parser.add_argument("--ambiguous-confidence", type=float, metavar="P",
                        help="a decision below this confidence is ambiguous (default 0.5)")
    parser.add_argument("--ambiguous-margin", type=float, metavar="P",
                        help="a decision whose margin over the runner-up is below this is ambiguous (default 0.15)")
    parser.add_argument("--prototypes", metavar="FILE",
                        help="also score the classifier with fixed prototypes (a fit-prototypes file, or 'shipped' "
                             "for the profile's packaged set) without refitting: a cross-dataset score; with "
                             "several tables, the set scored as 'shipped' (default: the profile's)")
    parser.add_argument("--reasoner", action="store_true",
                        help="also send the ambiguous rows' AU evidence to the LLM reasoner ([reasoner] of --config; "
                             "see docs/reasoner.md) and score classifier+reasoner beside the classifier")
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile or "generic")
    several = len(args.labels) > 1
    default = ([profile.protocol] if args.profile and profile.protocol else
               ["all"] if several else ["5class", "all"])
    protocols = list(dict.fromkeys(args.protocol or default))
    for name in ("ambiguous_confidence", "ambiguous_margin"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            print(f"microexpr eval: error: --{name.replace('_', '-')} must be in 0..1, got {value}", file=sys.stderr)
            return 2
    if several:
        return _run_lodo(args, protocols, profile)
    args.labels = args.labels[0]
    if args.config is not None and not args.reasoner:
        # Said, not silently dropped: its [engine] thresholds do not apply here (--ambiguous-* do).
        log.warning("--config %s is read only with --reasoner (its [reasoner] section); ignored", args.config)
    refine = _reasoner(args) if args.reasoner else None  # a bad config fails before any work
    table = read_labels(args.labels).checked(skip_unparseable=args.skip_unparseable, strict=args.strict)
    fixed = None
    if args.prototypes is not None:
        fixed = profile.load_prototypes() if args.prototypes == "shipped" else PrototypeSet.load(args.prototypes)
    settings = EvalSettings(args.ambiguous_confidence, args.ambiguous_margin, fixed, args.prototypes)
    command = _command(args, protocols)
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=folds(table, protocols), desc="LOSO folds", unit="fold", file=sys.stderr, leave=False)
    try:
        report = run_eval(table, protocols, settings=settings, progress=bar.update if bar else None,
                          command=command, refine=refine)
    finally:
        if bar is not None:
            bar.close()
    if args.out is not None:
        write_outputs(report, args.out)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.to_text(), end="")
    return 0


def _run_lodo(args: argparse.Namespace, protocols: list[str], profile: Any) -> int:
    """Several tables: leave-one-dataset-out."""
    if args.strict:
        print("microexpr eval: error: --strict works with one label table, not with several", file=sys.stderr)
        return 2
    if args.config is not None and not args.reasoner:
        log.warning("--config %s is read only with --reasoner; ignored", args.config)
    refine = _reasoner(args) if args.reasoner else None  # a bad config fails before any work
    tables = [read_labels(path) for path in args.labels]
    if args.prototypes is None or args.prototypes == "shipped":
        shipped, shipped_name = profile.load_prototypes(), f"packaged {profile.prototypes} (profile {profile.name})"
    else:
        shipped, shipped_name = PrototypeSet.load(args.prototypes), Path(args.prototypes).name
    options = {k: v for k, v in (("ambiguous_confidence", args.ambiguous_confidence),
                                 ("ambiguous_margin", args.ambiguous_margin)) if v is not None}
    command = " ".join(shlex.quote(p) for p in (
        "microexpr", "eval", *(p.name for p in args.labels), *(f"--protocol={p}" for p in protocols),
        *([f"--profile={args.profile}"] if args.profile else []),
        *([f"--prototypes={Path(args.prototypes).name}"] if args.prototypes else []),
        *(f"--{k.replace('_', '-')}={v}" for k, v in options.items()),
        *(["--reasoner"] if args.reasoner else [])))
    report = lodo.run_lodo(tables, protocols, shipped=shipped, shipped_name=shipped_name, command=command,
                           classifier_options=options, refine=refine)
    if args.out is not None:
        lodo.write_outputs(report, args.out)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(report.to_markdown(), end="")
    return 0


def _command(args: argparse.Namespace, protocols: list[str]) -> str:
    """The command line as recorded in the report (file names only, no private paths)."""
    parts = ["microexpr", "eval", args.labels.name, *(f"--protocol={p}" for p in protocols)]
    if args.profile:
        parts.append(f"--profile={args.profile}")
    if args.prototypes is not None:
        parts.append(f"--prototypes={Path(args.prototypes).name}")
    if args.skip_unparseable:
        parts.append("--skip-unparseable")
    if args.strict:
        parts.append("--strict")
    for name in ("ambiguous_confidence", "ambiguous_margin"):
        if getattr(args, name) is not None:
            parts.append(f"--{name.replace('_', '-')}={getattr(args, name)}")
    if args.reasoner:
        parts.append("--reasoner")
    return " ".join(shlex.quote(p) for p in parts)


def _reasoner(args: argparse.Namespace) -> Refiner:
    """The ``--reasoner`` seam: the flag is the consent for this run; the
    model, endpoint, budget and cache file come from ``[reasoner]``."""
    try:
        from microexpr.reasoner import refine_rows
    except ImportError as exc:
        if exc.name != "openai":
            raise
        raise ConfigError("--reasoner needs the openai package, which is not installed "
                          "(pip install -r requirements/runtime.txt)") from None

    reasoner_settings = load_config(args.config).reasoner
    return lambda pairs: refine_rows(pairs, reasoner_settings)

"""How much do the classifier's few constants matter? LOSO on a coding table.

Varies one constant at a time around the shipped defaults (chosen from FACS
reasoning, not from this table) and records LOSO accuracy / UF1 of the
classifier for each protocol, so a reader can see that the reported numbers
are not a tuned peak. Writes sensitivity.json and sensitivity.md.

    .venv/bin/python benchmarks/eval_sensitivity.py ../shared/data/labels/CASME2-coding-20190701.xlsx \
        benchmarks/results/eval/casme2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from microexpr.classify import decide
from microexpr.classify.prototypes import DEFAULT_M
from microexpr.evaluate import EvalSettings, evaluate_protocol, machine
from microexpr.labels import read_labels

GRID: dict[str, list[float]] = {
    "prototype_m": [0.5, 1.0, DEFAULT_M, 4.0, 8.0],
    "rule_prior": [1.0, 2.0, decide.DEFAULT_RULE_PRIOR, 6.0, 10.0],
    "data_prior": [1.0, decide.DEFAULT_DATA_PRIOR, 4.0],
    "rule_sharpness": [1.5, decide.DEFAULT_RULE_SHARPNESS, 5.0],
}
DEFAULTS = {"prototype_m": DEFAULT_M, "rule_prior": decide.DEFAULT_RULE_PRIOR,
            "data_prior": decide.DEFAULT_DATA_PRIOR, "rule_sharpness": decide.DEFAULT_RULE_SHARPNESS}
PROTOCOLS = ("5class", "all")


def run(labels: Path, out_dir: Path) -> dict[str, Any]:
    table = read_labels(labels).checked()
    results: list[dict[str, Any]] = []
    for name, values in GRID.items():
        for value in values:
            options = {k: v for k, v in DEFAULTS.items() if k != "prototype_m"}
            m = DEFAULTS["prototype_m"]
            if name == "prototype_m":
                m = value
            else:
                options[name] = value
            settings = EvalSettings(classifier_options=options, prototype_m=m)
            row: dict[str, Any] = {"constant": name, "value": value, "default": value == DEFAULTS[name]}
            for protocol in PROTOCOLS:
                scores = evaluate_protocol(table, protocol, settings=settings).methods["classifier"].scores
                row[protocol] = {"accuracy": round(scores.accuracy, 4), "uf1": round(scores.uf1, 4)}
            results.append(row)
            print(f"{name}={value}: " + "  ".join(f"{p} {row[p]['accuracy']:.3f}/{row[p]['uf1']:.3f}"
                                                  for p in PROTOCOLS), file=sys.stderr)
    report = {"file": labels.name, "sha256": table.sha256, "machine": machine(), "results": results}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sensitivity.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [f"# Sensitivity of the classifier's LOSO scores: {labels.name}", "",
             "One constant varied at a time, the others at their defaults (**bold**). Accuracy / UF1, "
             "leave-one-subject-out, prototypes refitted per fold.", "",
             "| constant | value | " + " | ".join(PROTOCOLS) + " |", "|---|---|" + "---|" * len(PROTOCOLS)]
    for row in results:
        value = f"**{row['value']:g}**" if row["default"] else f"{row['value']:g}"
        cells = " | ".join(f"{row[p]['accuracy']:.3f} / {row[p]['uf1']:.3f}" for p in PROTOCOLS)
        lines.append(f"| {row['constant']} | {value} | {cells} |")
    (out_dir / "sensitivity.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: eval_sensitivity.py LABELS OUT_DIR")
    run(Path(sys.argv[1]), Path(sys.argv[2]))

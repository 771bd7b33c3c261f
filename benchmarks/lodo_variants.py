"""Which way of combining datasets ships? Leave-one-dataset-out, three recipes.

For every coding table given, the prototypes are fitted on the *other*
tables (harmonised to the scored table's labels, ``microexpr.harmonise``)
in three ways, and the classifier (same FACS rules) scores the table:

- ``concatenated``: all other rows in one prototype set (a large table
  dictates the conventions);
- ``pooled``: one set per table, equal dataset weights (``PrototypeSet.pool``),
  with the contested configurations switched off;
- ``pooled+contested``: the same with contested configurations (the shipped
  recipe, ``lodo-fitted`` in ``microexpr eval``).

Writes variants.json and variants.md; the recipe with the best mean LODO
accuracy and UF1 is the one shipped.

    .venv/bin/python benchmarks/lodo_variants.py ../shared/data/labels/casme2_coding.csv \
        ../shared/data/labels/casme3_partA_coding.csv ../shared/data/labels/mmew_micro_coding.csv \
        benchmarks/results/eval/lodo
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from microexpr import harmonise, lodo
from microexpr.classify.decide import Classifier
from microexpr.classify.prototypes import PrototypeSet
from microexpr.evaluate import _readings, _samples, machine, score
from microexpr.labels import read_labels


def _recipes(parts: list[tuple[str, str, tuple[Any, ...]]]) -> dict[str, PrototypeSet]:
    pooled = lodo.fit_pooled(parts)
    return {
        "concatenated": PrototypeSet.fit(_samples([r for _n, _f, rows in parts for r in rows])),
        "pooled": PrototypeSet(pooled.classes, pooled.m, pooled.provenance),  # no components: nothing contested
        "pooled+contested": pooled,
    }


def main(argv: list[str]) -> int:
    *paths, out = argv
    datasets = [lodo.dataset(read_labels(p)) for p in paths]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for target in datasets:
        labels, rows, _dropped = lodo._target_labels(target, "all")
        parts = [(o.name, o.fingerprint, harmonise.harmonise(o.rows, labels).rows)
                 for o in datasets if o is not target]
        truth = [r.emotion for r in rows]
        results[target.name] = {}
        for name, prototypes in _recipes(parts).items():
            classifier = Classifier(prototypes, labels=labels)
            decisions = [classifier.classify_readings(_readings(r)) for r in rows]
            s = score(truth, [d.label for d in decisions], labels)
            confident = [(t, d.label) for t, d in zip(truth, decisions, strict=True) if not d.ambiguous]
            results[target.name][name] = {
                "accuracy": round(s.accuracy, 4), "uf1": round(s.uf1, 4),
                "accuracy_confident": round(sum(t is p for t, p in confident) / max(1, len(confident)), 4),
                "ambiguous_share": round(1 - len(confident) / len(rows), 4),
            }
    names = list(next(iter(results.values())))
    mean = {n: {k: round(sum(r[n][k] for r in results.values()) / len(results), 4) for k in ("accuracy", "uf1")}
            for n in names}
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, "variants.json").write_text(json.dumps({"machine": machine(), "results": results, "mean": mean},
                                                     indent=2) + "\n", encoding="utf-8")
    lines = ["# LODO: how to combine the datasets (`benchmarks/lodo_variants.py`)", "",
             "Each table scored by prototypes fitted on the other tables only (same FACS rules). "
             "accuracy / UF1; confident accuracy, ambiguous share.", "",
             "| scored table | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for table, per in results.items():
        lines.append(f"| {table} | " + " | ".join(
            f"{per[n]['accuracy']:.3f} / {per[n]['uf1']:.3f}; {per[n]['accuracy_confident']:.3f}, "
            f"{per[n]['ambiguous_share']:.0%}" for n in names) + " |")
    lines.append("| **mean** | " + " | ".join(f"{mean[n]['accuracy']:.3f} / {mean[n]['uf1']:.3f}" for n in names)
                 + " |")
    Path(out, "variants.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

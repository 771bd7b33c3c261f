"""``microexpr eval A B C``: leave-one-dataset-out (LODO) scores.

Each coding table is scored with everything fitted only on the *other*
tables, in the scored table's own labels (``harmonise.py`` maps the training
labels and is printed in the report). This is the score that says what a
camera in front of people no dataset has seen will get; the per-dataset
leave-one-subject-out score (``evaluate.py``) says what the same coders'
conventions give on new subjects.

Methods per scored table:

``shipped``        the shipped prototype set with the scored table's own
                   dataset left out (it is pooled over several datasets and
                   knows each by a row fingerprint): what ``microexpr run``
                   does on an unseen face, nothing fitted on the scored table
``lodo-fitted``    the shipped recipe (per-dataset prototypes pooled with equal
                   dataset weights, contested configurations marked) refitted
                   on the other tables given, in the scored table's labels
``rules-only``     the FACS rules alone (nothing fitted)
``paper-table``    the paper's emotion→AU table as an overlap rule
``naive-bayes``    Bernoulli naive Bayes fitted on the other tables (harmonised)
``loso``           the per-dataset LOSO classifier (refitted on the scored
                   table's other subjects), for comparison
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microexpr import __version__, harmonise
from microexpr.classify.decide import Classifier, Decision
from microexpr.classify.evidence import Evidence
from microexpr.classify.prototypes import PrototypeSet
from microexpr.errors import DataError, ExitCode
from microexpr.evaluate import (
    PROTOCOLS,
    NaiveBayes,
    Scores,
    EvalCase,
    Refiner,
    _ceilings,
    _kept_reading,
    _readings,
    _samples,
    confusion_text,
    machine,
    paper_overlap,
    report_header,
    score,
)
from microexpr.facs import Emotion
from microexpr.labels import LabelRow, LabelTable

log = logging.getLogger(__name__)

SCHEMA = "microexpr.eval.lodo/1"
#: Methods in report order.
METHODS = ("shipped", "lodo-fitted", "rules-only", "paper-table", "naive-bayes", "loso")
DESCRIPTIONS = {
    "shipped": "shipped prototypes with the scored dataset left out (nothing fitted on it): what `run` uses",
    "lodo-fitted": "the shipped recipe (pooled per-dataset prototypes, equal dataset weights) refitted on the "
                   "other tables",
    "rules-only": "FACS rules stage alone (nothing fitted)",
    "paper-table": "the paper's emotion->AU table as a plain overlap rule (baseline)",
    "naive-bayes": "Bernoulli naive Bayes fitted on the other tables, harmonised (baseline)",
    "loso": "classifier refitted on the scored table's other subjects (per-dataset LOSO, not cross-dataset)",
    "shipped+reasoner": "shipped, its ambiguous rows refined by the reasoner (--reasoner; nothing fitted on the "
                        "scored table)",
}
#: Methods only some runs have (a column in the summary only then).
OPTIONAL_METHODS = ("shipped+reasoner",)
#: Methods whose decisions carry confidence: selective accuracy is reported.
SELECTIVE = ("shipped", "lodo-fitted", "loso")


@dataclass(frozen=True)
class Dataset:
    """One table as LODO uses it: usable rows, notes on the rows left out."""

    name: str
    table: LabelTable
    rows: tuple[LabelRow, ...]
    fingerprint: str
    notes: tuple[str, ...] = ()


def dataset(table: LabelTable, name: str | None = None) -> Dataset:
    """The usable rows of a table. A row with an unknown label or unreadable
    AUs is a per-row note here, never a reason to refuse the file; a table
    with no usable row at all is an error (65)."""
    # A row with no facial AU (only descriptors such as "blink") is read but
    # cannot be scored: it is left out here and must say so like the others.
    notes = [f"{p.where}: {p.message}" + ("" if p.kind == "no-aus" else "; left out")
             for p in table.problems if p.fatal or p.kind == "no-aus"]
    rows = tuple(r for r in table.rows if r.aus is not None)
    if not rows:
        raise DataError(f"{table.path}: no rows with a known label and readable AUs")
    for note in notes:
        log.warning("%s: %s", table.path.name, note)
    return Dataset(name or table.path.name, table, rows, harmonise.table_fingerprint(table), tuple(notes))


@dataclass(frozen=True)
class MethodScore:
    name: str
    description: str
    scores: Scores
    ambiguous: int | None = None
    accuracy_confident: float | None = None
    accuracy_ambiguous: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ambiguous_share(self) -> float | None:
        return None if self.ambiguous is None or not self.scores.n else self.ambiguous / self.scores.n


@dataclass(frozen=True)
class TargetResult:
    dataset: Dataset
    protocol: str
    labels: tuple[Emotion, ...]
    rows: tuple[LabelRow, ...]
    train: Mapping[str, harmonise.Harmonised]
    methods: Mapping[str, MethodScore]
    ceilings: Mapping[str, float]
    notes: tuple[str, ...] = ()


def _selective(name: str, truth: Sequence[Emotion], decisions: Sequence[Decision], labels: Sequence[Emotion],
               description: str, extra: Mapping[str, Any] | None = None) -> MethodScore:
    preds = [d.label for d in decisions]
    confident = [(t, d.label) for t, d in zip(truth, decisions, strict=True) if not d.ambiguous]
    unsure = [(t, d.label) for t, d in zip(truth, decisions, strict=True) if d.ambiguous]

    def acc(pairs: list[tuple[Emotion, Emotion]]) -> float | None:
        return round(sum(t is p for t, p in pairs) / len(pairs), 4) if pairs else None

    return MethodScore(name, description, score(truth, preds, labels), len(unsure), acc(confident), acc(unsure),
                       dict(extra or {}))


def _target_labels(ds: Dataset, protocol: str) -> tuple[tuple[Emotion, ...], tuple[LabelRow, ...], dict[str, int]]:
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})",
                        exit_code=ExitCode.USAGE)
    wanted = PROTOCOLS[protocol]
    present = {r.emotion for r in ds.rows}
    labels = tuple(e for e in Emotion if e in present) if wanted is None else tuple(
        e for e in Emotion if e in wanted)
    rows = tuple(r for r in ds.rows if r.emotion in labels)
    if not rows:
        raise DataError(f"{ds.table.path}: no label in common with protocol {protocol} "
                        f"({', '.join(e.value for e in labels)}); its labels are "
                        f"{', '.join(sorted(e.value for e in present))}")
    dropped = Counter(r.emotion.value for r in ds.rows if r.emotion not in labels)
    return labels, rows, dict(sorted(dropped.items()))


def fit_pooled(parts: Sequence[tuple[str, str, Sequence[LabelRow]]], *, provenance: Mapping[str, Any] | None = None,
               m: float | None = None) -> PrototypeSet:
    """The shipped recipe: one prototype set per dataset, pooled with equal
    dataset weights (``PrototypeSet.pool``)."""
    kw: dict[str, Any] = {} if m is None else {"m": m}
    sets = [(name, fp, PrototypeSet.fit(_samples(rows), **kw)) for name, fp, rows in parts if rows]
    if len(sets) == 1:
        return sets[0][2]
    return PrototypeSet.pool(sets, provenance=provenance, **kw)


def _cross_ceiling(rows: Sequence[LabelRow], train: Sequence[LabelRow], labels: Sequence[Emotion]) -> dict[str, float]:
    """Each scored row gets the majority label of its exact configuration
    (sides collapsed) in the other tables; ties that include the truth and
    configurations they never show count as correct (optimistic)."""
    def key(row: LabelRow) -> tuple[str, ...]:
        return tuple(sorted({k.rstrip("u") for k in Evidence.from_activations(_readings(row)[0]).config_key()},
                            key=int))

    counts: dict[tuple[str, ...], Counter[Emotion]] = {}
    for row in train:
        counts.setdefault(key(row), Counter())[row.emotion] += 1
    preds = []
    for row in rows:
        seen = counts.get(key(row))
        if not seen or seen.get(row.emotion, 0) == max(seen.values()):
            preds.append(row.emotion)
        else:
            preds.append(seen.most_common(1)[0][0])
    result = score([r.emotion for r in rows], preds, labels)
    return {"lodo_optimistic_accuracy": round(result.accuracy, 4), "lodo_optimistic_uf1": round(result.uf1, 4)}


def evaluate_target(
    target: Dataset,
    others: Sequence[Dataset],
    protocol: str,
    *,
    shipped: PrototypeSet,
    classifier_options: Mapping[str, Any] | None = None,
    loso: bool = True,
    refine: Refiner | None = None,
) -> TargetResult:
    labels, rows, dropped = _target_labels(target, protocol)
    options = dict(classifier_options or {})
    notes: list[str] = list(target.notes)
    if dropped:
        notes.append("left out (label not in the protocol): " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    cannot = [e.value for e in Emotion if e not in labels]
    notes.append(f"labels this table cannot produce (never predicted here): {', '.join(cannot) or 'none'}")
    train = {o.name: harmonise.harmonise(o.rows, labels) for o in others}
    train_rows = [r for h in train.values() for r in h.rows]
    if not train_rows:
        raise DataError(f"{target.table.path}: the other tables have no rows with its labels "
                        f"({', '.join(e.value for e in labels)})")
    truth = [r.emotion for r in rows]
    methods: dict[str, MethodScore] = {}
    # shipped: the packaged pool without the scored dataset.
    own = shipped.without(target.fingerprint, target.table.sha256)
    if own is None:
        notes.append("shipped: every dataset in the shipped set is this table; not scored")
    else:
        training_fit = own is shipped and (shipped.provenance.get("sha256") == target.table.sha256
                                           or shipped.provenance.get("fingerprint") == target.fingerprint)
        if training_fit:
            notes.append("shipped: the prototypes were fitted on this very table (they do not name their datasets, "
                         "so it cannot be left out): a training fit, not a generalisation score")
        left = own.provenance.get("left_out") if own is not shipped else None
        clf = Classifier(own, labels=labels, **options)
        decisions = [clf.classify_readings(_readings(r)) for r in rows]
        methods["shipped"] = _selective(
            "shipped", truth, decisions, labels, DESCRIPTIONS["shipped"],
            {"datasets": [c.name for c in own.components] or [str(own.provenance.get("dataset", "?"))],
             "left_out": left or [], "training_fit": training_fit})
        if refine is not None:
            methods["shipped+reasoner"] = _refined(clf, rows, decisions, labels, refine)
    fitted = fit_pooled([(o.name, o.fingerprint, train[o.name].rows) for o in others])
    clf = Classifier(fitted, labels=labels, **options)
    methods["lodo-fitted"] = _selective("lodo-fitted", truth, [clf.classify_readings(_readings(r)) for r in rows],
                                        labels, DESCRIPTIONS["lodo-fitted"],
                                        {"datasets": [o.name for o in others]})
    rules = Classifier(None, labels=labels, use_prototypes=False, **options)
    methods["rules-only"] = _selective("rules-only", truth, [rules.classify_readings(_readings(r)) for r in rows],
                                       labels, DESCRIPTIONS["rules-only"])
    preds = [paper_overlap(_readings(r), labels) for r in rows]
    methods["paper-table"] = MethodScore("paper-table", DESCRIPTIONS["paper-table"], score(truth, preds, labels))
    nb = NaiveBayes().fit([_readings(r) for r in train_rows], [r.emotion for r in train_rows], labels)
    preds = [nb.predict(_readings(r)) for r in rows]
    methods["naive-bayes"] = MethodScore("naive-bayes", DESCRIPTIONS["naive-bayes"], score(truth, preds, labels))
    if loso:
        methods["loso"] = _loso(rows, labels, options)
    ceilings = {**_ceilings(rows, labels), **_cross_ceiling(rows, train_rows, labels)}
    return TargetResult(target, protocol, labels, rows, train, methods, ceilings, tuple(notes))


def _refined(classifier: Classifier, rows: Sequence[LabelRow], decisions: Sequence[Decision],
             labels: Sequence[Emotion], refine: Refiner) -> MethodScore:
    """The shipped decisions with the ambiguous rows sent to the reasoner, as
    the single-table eval's ``classifier+reasoner``: a label it returns that
    is one of the scored table's replaces the local one."""
    pairs = []
    for row, decision in zip(rows, decisions, strict=True):
        if decision.ambiguous:
            readings = _readings(row)
            pairs.append((EvalCase(row, readings, _kept_reading(classifier, readings)), decision))
    answers = list(refine(pairs)) if pairs else []
    if len(answers) != len(pairs):
        raise DataError(f"reasoner returned {len(answers)} labels for {len(pairs)} ambiguous rows")
    refined = {id(c.row): a for (c, _d), a in zip(pairs, answers, strict=True) if a is not None and a in labels}
    preds = [refined.get(id(r), d.label) for r, d in zip(rows, decisions, strict=True)]
    return MethodScore("shipped+reasoner", DESCRIPTIONS["shipped+reasoner"],
                       score([r.emotion for r in rows], preds, labels),
                       extra={"sent": len(pairs), "refined": len(refined)})


def _loso(rows: Sequence[LabelRow], labels: Sequence[Emotion], options: Mapping[str, Any]) -> MethodScore:
    by_subject: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_subject.setdefault(row.subject, []).append(i)
    decisions: list[Decision | None] = [None] * len(rows)
    for subject, idx in by_subject.items():
        train = [r for r in rows if r.subject != subject]
        if not train:
            continue
        clf = Classifier(PrototypeSet.fit(_samples(train)), labels=labels, **options)
        for i in idx:
            decisions[i] = clf.classify_readings(_readings(rows[i]))
    done = [d for d in decisions if d is not None]
    truth = [r.emotion for r, d in zip(rows, decisions, strict=True) if d is not None]
    return _selective("loso", truth, done, labels, DESCRIPTIONS["loso"])


@dataclass(frozen=True)
class LodoReport:
    datasets: tuple[Dataset, ...]
    results: tuple[TargetResult, ...]
    shipped_name: str
    created: str
    command: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            **report_header(SCHEMA, self.created, self.command),
            "shipped_prototypes": self.shipped_name,
            "harmonisation": harmonise.describe_json(),
            "datasets": [
                {"name": d.name, "file": d.table.path.name, "sha256": d.table.sha256, "fingerprint": d.fingerprint,
                 "rows": len(d.rows), "subjects": len({r.subject for r in d.rows}), "notes": list(d.notes)}
                for d in self.datasets
            ],
            "results": [_target_json(r) for r in self.results],
        }

    def to_markdown(self) -> str:
        lines = [
            "# microexpr eval: leave-one-dataset-out",
            "",
            f"- microexpr {__version__}, {self.created}; command `{self.command}`",
            f"- machine: {machine()['platform']}, {machine()['cpus']} CPUs, Python {machine()['python']}",
            f"- shipped prototypes: {self.shipped_name}",
            "- every score except `loso` is fitted only on the *other* tables; `loso` refits on the scored "
            "table's other subjects",
            "",
            "| dataset | file | rows | subjects | fingerprint |",
            "|---|---|---|---|---|",
        ]
        for d in self.datasets:
            lines.append(f"| {d.name} | {d.table.path.name} | {len(d.rows)} | {len({r.subject for r in d.rows})} | "
                         f"`{d.fingerprint[:12]}` |")
        lines += ["", "## Label harmonisation (`microexpr/harmonise.py`)", "", *harmonise.describe(), ""]
        shown = METHODS + tuple(m for m in OPTIONAL_METHODS if any(m in r.methods for r in self.results))
        lines += ["## Summary (accuracy / UF1; selective: accuracy of confident decisions, ambiguous share)", "",
                  "| scored dataset | protocol | " + " | ".join(m for m in shown) + " | shipped selective |",
                  "|---|---|" + "---|" * len(shown) + "---|"]
        for r in self.results:
            cells = []
            for m in shown:
                ms = r.methods.get(m)
                fit = " (training fit)" if ms is not None and ms.extra.get("training_fit") else ""
                cells.append("n/a" if ms is None else f"{ms.scores.accuracy:.3f} / {ms.scores.uf1:.3f}{fit}")
            sel = r.methods.get("shipped")
            selective = "n/a" if sel is None else (f"{_fmt(sel.accuracy_confident)} on confident, "
                                                   f"{_pct(sel.ambiguous_share)} ambiguous")
            lines.append(f"| {r.dataset.name} | {r.protocol} | " + " | ".join(cells) + f" | {selective} |")
        lines.append("")
        for r in self.results:
            lines += _target_markdown(r)
        return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _method_json(m: MethodScore) -> dict[str, Any]:
    s = m.scores
    out: dict[str, Any] = {
        "description": m.description, "accuracy": round(s.accuracy, 4), "uf1": round(s.uf1, 4),
        "uar": round(s.uar, 4),
        "per_class": [{"class": c.label.value, "precision": round(c.precision, 4), "recall": round(c.recall, 4),
                       "f1": round(c.f1, 4), "support": c.support} for c in s.per_class],
        "confusion": {"labels": [e.value for e in s.labels],
                      "rows_true_columns_predicted": [list(row) for row in s.confusion]},
    }
    if m.ambiguous is not None:
        out.update({"ambiguous": m.ambiguous, "ambiguous_share": round(m.ambiguous_share or 0.0, 4),
                    "accuracy_confident": m.accuracy_confident, "accuracy_ambiguous": m.accuracy_ambiguous})
    out.update(dict(m.extra))
    return out


def _target_json(r: TargetResult) -> dict[str, Any]:
    return {
        "dataset": r.dataset.name, "protocol": r.protocol, "labels": [e.value for e in r.labels],
        "rows": len(r.rows), "notes": list(r.notes), "ceilings": dict(r.ceilings),
        "training": {name: {"rows": len(h.rows), "mapped": h.mapped, "left_out": h.left_out}
                     for name, h in r.train.items()},
        "methods": {name: _method_json(m) for name, m in r.methods.items()},
    }


def _target_markdown(r: TargetResult) -> list[str]:
    labels = ", ".join(e.value for e in r.labels)
    lines = [f"## {r.dataset.name}, protocol `{r.protocol}` ({labels}): {len(r.rows)} rows", ""]
    for note in r.notes[:12]:
        lines.append(f"- note: {note}")
    if len(r.notes) > 12:
        lines.append(f"- ... and {len(r.notes) - 12} more notes (eval.json)")
    for name, h in r.train.items():
        lines.append(f"- fitted on {name}: {len(h.rows)} rows; mapped {h.mapped or 'none'}; "
                     f"left out {h.left_out or 'none'}")
    lines += ["", "| method | accuracy | UF1 | UAR | confident acc | ambiguous | what |", "|---|---|---|---|---|---|---|"]
    for name, m in r.methods.items():
        s = m.scores
        amb = "" if m.ambiguous is None else f"{m.ambiguous} ({_pct(m.ambiguous_share)})"
        lines.append(f"| {name} | {s.accuracy:.3f} | {s.uf1:.3f} | {s.uar:.3f} | {_fmt(m.accuracy_confident)} | "
                     f"{amb} | {m.description} |")
    c = r.ceilings
    lines += ["", "AU-only ceilings (accuracy / UF1): majority label per configuration, in-sample "
              f"{c['in_sample_configuration_sides_collapsed_accuracy']:.3f} / "
              f"{c['in_sample_configuration_sides_collapsed_uf1']:.3f}; optimistic LOSO within the table "
              f"{c['loso_optimistic_configuration_sides_collapsed_accuracy']:.3f} / "
              f"{c['loso_optimistic_configuration_sides_collapsed_uf1']:.3f}; optimistic from the other tables' "
              f"majority {c['lodo_optimistic_accuracy']:.3f} / {c['lodo_optimistic_uf1']:.3f} (sides collapsed).",
              ""]
    if "shipped" in r.methods:
        lines += ["`shipped` confusion matrix (rows: true, columns: predicted):", "", "```",
                  confusion_text(r.methods["shipped"].scores), "```", ""]
    return lines


def run_lodo(
    tables: Sequence[LabelTable],
    protocols: Sequence[str],
    *,
    shipped: PrototypeSet,
    shipped_name: str,
    classifier_options: Mapping[str, Any] | None = None,
    command: str = "",
    progress: Callable[[int], None] | None = None,
    refine: Refiner | None = None,
) -> LodoReport:
    if len(tables) < 2:
        raise DataError("leave-one-dataset-out needs at least two label tables", exit_code=ExitCode.USAGE)
    datasets = [dataset(t) for t in tables]
    names = [d.name for d in datasets]
    for i, d in enumerate(datasets):  # two files with the same name: tell them apart
        if names.count(d.name) > 1:
            datasets[i] = Dataset(f"{d.name}#{i + 1}", d.table, d.rows, d.fingerprint, d.notes)
    seen: dict[str, str] = {}
    for d in datasets:
        if d.fingerprint in seen:
            raise DataError(f"{d.table.path}: the same rows as {seen[d.fingerprint]}: a dataset cannot be "
                            "scored with itself left out", exit_code=ExitCode.USAGE)
        seen[d.fingerprint] = d.name
    results = []
    for protocol in protocols:
        for d in datasets:
            others = [o for o in datasets if o is not d]
            results.append(evaluate_target(d, others, protocol, shipped=shipped,
                                           classifier_options=classifier_options, refine=refine))
            if progress is not None:
                progress(1)
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return LodoReport(tuple(datasets), tuple(results), shipped_name, created, command)


def write_outputs(report: LodoReport, out_dir: Path) -> list[Path]:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / "eval.json"
        json_path.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        md_path = out_dir / "eval.md"
        md_path.write_text(report.to_markdown(), encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{out_dir}: cannot write evaluation output ({exc.strerror or exc})",
                        exit_code=ExitCode.IO_ERROR) from None
    return [json_path, md_path]

"""``microexpr eval``: leave-one-subject-out scores from coded AUs.

For each protocol (a label set) and each subject, every method is fitted on
the other subjects only and scores the held-out subject's rows; the
predictions of all folds are then scored together (accuracy, UF1 = macro F1,
UAR = macro recall, per-class precision/recall/F1/support, confusion matrix),
as the micro-expression literature does for CASME II and SAMM.

Methods, all in one run so the gains are visible:

``classifier``        rules + prototypes (refitted per fold), the shipped design
``rules-only``        the FACS rules stage alone (nothing fitted)
``prototypes-only``   the prototype stage alone (refitted per fold)
``classifier+context``  the classifier with a subject context built from the
                      held-out subject's *other* episodes (their AU sets
                      only, never their labels): coded datasets have no
                      frames outside episodes, this is the closest stand-in
``classifier-2fold``  cross-check: fitted on half the subjects, scored on the
                      other half, and the other way round
``paper-table``       the paper's emotion→AU table as a plain overlap rule
``naive-bayes``       Bernoulli naive Bayes on AU sets (numpy), LOSO

A reasoner can refine the ambiguous rows through ``refine`` (a seam for
``--reasoner``): it receives the ambiguous cases and returns a label or None
for each; the result is scored as ``classifier+reasoner``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microexpr import __version__
from microexpr.classify.context import SubjectContext
from microexpr.classify.decide import Classifier, Decision
from microexpr.classify.evidence import Evidence
from microexpr.classify.prototypes import DEFAULT_M, PrototypeSet, Sample
from microexpr.errors import DataError, ExitCode
from microexpr.facs import AU, AUActivation, Emotion
from microexpr.harmonise import table_fingerprint
from microexpr.labels import LabelRow, LabelTable

log = logging.getLogger(__name__)

SCHEMA = "microexpr.eval/1"

#: Protocol name → label set (None: every emotion present in the file).
PROTOCOLS: dict[str, tuple[Emotion, ...] | None] = {
    # CASME II's usual five (Yan et al. 2014 classes with fear/sadness left out).
    "5class": (Emotion.HAPPINESS, Emotion.DISGUST, Emotion.REPRESSION, Emotion.SURPRISE, Emotion.OTHERS),
    # SAMM's usual five (Davison et al. 2018; MEGC practice).
    "samm5": (Emotion.ANGER, Emotion.CONTEMPT, Emotion.HAPPINESS, Emotion.SURPRISE, Emotion.OTHERS),
    "all": None,
}

#: The paper's emotion → AU table (Sălăgean et al. 2025), for the overlap baseline.
PAPER_TABLE: dict[Emotion, frozenset[int]] = {
    Emotion.HAPPINESS: frozenset({6, 12}),
    Emotion.DISGUST: frozenset({9, 10, 15}),
    Emotion.REPRESSION: frozenset({4, 7, 23}),
    Emotion.FEAR: frozenset({1, 2, 4, 20}),
    Emotion.SURPRISE: frozenset({1, 2, 5, 26}),
    Emotion.SADNESS: frozenset({1, 15, 17}),
    Emotion.CONTEMPT: frozenset({14, 24}),
    Emotion.ANGER: frozenset({4, 5, 7, 23}),
}

MAIN = "classifier"
#: Methods whose confusion matrix is also drawn as PNG.
PLOTTED = ("classifier", "naive-bayes", "paper-table")


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassMetrics:
    label: Emotion
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class Scores:
    labels: tuple[Emotion, ...]
    accuracy: float
    uf1: float  #: unweighted (macro) F1 over ``labels``
    uar: float  #: unweighted average recall over ``labels``
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]  #: rows = true label, columns = predicted
    n: int


def score(truth: Sequence[Emotion], predicted: Sequence[Emotion], labels: Sequence[Emotion]) -> Scores:
    """Accuracy, UF1, UAR and the confusion matrix. Classes with no support
    still count in the macro averages if they are in ``labels`` (with F1 and
    recall 0), so predicting a label that never occurs is penalised."""
    index = {e: i for i, e in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        matrix[index[t], index[p]] += 1
    n = int(matrix.sum())
    per_class = []
    for i, label in enumerate(labels):
        tp = int(matrix[i, i])
        support = int(matrix[i, :].sum())
        predicted_n = int(matrix[:, i].sum())
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append(ClassMetrics(label, precision, recall, f1, support))
    scored = [c for c in per_class if c.support > 0] or per_class
    return Scores(
        labels=tuple(labels),
        accuracy=float(np.trace(matrix)) / n if n else 0.0,
        uf1=float(np.mean([c.f1 for c in scored])),
        uar=float(np.mean([c.recall for c in scored])),
        per_class=tuple(per_class),
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
        n=n,
    )


# ---------------------------------------------------------------------------
# Cases and methods
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvalCase:
    """One scored row, in the form the reasoner's ``refine_rows`` accepts."""

    row: LabelRow
    readings: tuple[tuple[AUActivation, ...], ...]
    activations: tuple[AUActivation, ...]  #: the reading the classifier kept
    context: SubjectContext | None = None
    duration_s: float | None = None
    rise_s: float | None = None


#: The reasoner seam: ambiguous cases with their local decisions in, one
#: refined label (or None: keep the local one) per case out.
Refiner = Callable[[Sequence[tuple[EvalCase, Decision]]], Sequence[Emotion | None]]


@dataclass(frozen=True)
class MethodResult:
    name: str
    description: str
    scores: Scores
    predicted: tuple[Emotion, ...]
    decisions: tuple[Decision | None, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProtocolResult:
    name: str
    labels: tuple[Emotion, ...]
    rows: tuple[LabelRow, ...]
    subjects: tuple[str, ...]
    dropped: Mapping[str, int]
    methods: Mapping[str, MethodResult]
    ceilings: Mapping[str, float]
    notes: tuple[str, ...] = ()


DESCRIPTIONS = {
    "classifier": "rules + prototypes, prototypes refitted without the test subject (LOSO)",
    "classifier+context": "classifier with a subject context from the test subject's other episodes' AU sets "
                          "(labels unused), LOSO",
    "classifier+reasoner": "classifier, ambiguous rows refined by the reasoner, LOSO",
    "rules-only": "FACS rules stage alone (nothing fitted)",
    "prototypes-only": "prototype stage alone, refitted without the test subject (LOSO)",
    "classifier-2fold": "classifier fitted on half the subjects, scored on the other half, both ways",
    "classifier-fixed": "classifier with fixed prototypes (--prototypes), not refitted: a cross-dataset score",
    "naive-bayes-2fold": "naive Bayes fitted on half the subjects, scored on the other half, both ways",
    "paper-table": "the paper's emotion->AU table as a plain overlap rule (baseline)",
    "naive-bayes": "Bernoulli naive Bayes on AU sets, LOSO (baseline)",
}


def _samples(rows: Iterable[LabelRow]) -> list[Sample]:
    return [(r.aus.readings(), r.emotion) for r in rows if r.aus is not None]


def _readings(row: LabelRow) -> tuple[tuple[AUActivation, ...], ...]:
    assert row.aus is not None
    return row.aus.readings()


def _au_vector(readings: Sequence[Sequence[AUActivation]], features: Sequence[AU]) -> np.ndarray:
    """Presence per feature AU (sides collapsed), averaged over readings."""
    vec = np.zeros(len(features))
    position = {au: i for i, au in enumerate(features)}
    for acts in readings:
        for au in {a.au for a in acts}:
            if au in position:
                vec[position[au]] += 1.0 / len(readings)
    return vec


class NaiveBayes:
    """Bernoulli naive Bayes on AU presence, Laplace-smoothed (numpy, ~20 lines)."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, readings: Sequence[Sequence[Sequence[AUActivation]]], labels: Sequence[Emotion],
            classes: Sequence[Emotion]) -> NaiveBayes:
        self.features = tuple(sorted({a.au for r in readings for acts in r for a in acts}))
        self.classes = tuple(c for c in classes if c in set(labels))
        x = np.array([_au_vector(r, self.features) for r in readings]).reshape(len(readings), len(self.features))
        y = np.array([self.classes.index(e) for e in labels])
        counts = np.array([(y == k).sum() for k in range(len(self.classes))], dtype=float)
        theta = np.array([(x[y == k].sum(axis=0) + self.alpha) / (counts[k] + 2 * self.alpha)
                          for k in range(len(self.classes))])
        self.log_prior = np.log((counts + self.alpha) / (counts.sum() + self.alpha * len(self.classes)))
        self.log_theta, self.log_not = np.log(theta), np.log1p(-theta)
        return self

    def predict(self, readings: Sequence[Sequence[AUActivation]]) -> Emotion:
        x = _au_vector(readings, self.features)
        joint = self.log_prior + self.log_theta @ x + self.log_not @ (1.0 - x)
        return self.classes[int(np.argmax(joint))]


def paper_overlap(readings: Sequence[Sequence[AUActivation]], labels: Sequence[Emotion]) -> Emotion:
    """The paper's table as a plain rule: the emotion whose listed AUs are
    most covered by the episode (share of the table's AUs present); "others"
    when none is touched. Ties go to the table's order."""
    aus = {int(a.au) for acts in readings for a in acts}
    best, best_share = None, 0.0
    for emotion, table in PAPER_TABLE.items():
        if emotion not in labels:
            continue
        share = len(aus & table) / len(table)
        if share > best_share:
            best, best_share = emotion, share
    if best is not None:
        return best
    return Emotion.OTHERS if Emotion.OTHERS in labels else labels[0]


def _pseudo_context(rows: Sequence[LabelRow], exclude: LabelRow) -> SubjectContext:
    context = SubjectContext(min_frames=3, half_life_frames=None)
    for other in rows:
        if other is not exclude:
            context.observe(_readings(other)[0])
    return context


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSettings:
    ambiguous_confidence: float | None = None
    ambiguous_margin: float | None = None
    #: Also score the classifier with these prototypes, never refitted.
    fixed_prototypes: PrototypeSet | None = None
    fixed_name: str | None = None
    #: Extra ``Classifier`` keyword arguments (sensitivity studies).
    classifier_options: Mapping[str, Any] = field(default_factory=dict)
    #: Smoothing of the refitted prototypes (``PrototypeSet.fit(m=...)``).
    prototype_m: float = DEFAULT_M

    def fit(self, rows: Iterable[LabelRow]) -> PrototypeSet:
        return PrototypeSet.fit(_samples(rows), m=self.prototype_m)

    def classifier(self, prototypes: PrototypeSet | None, labels: Sequence[Emotion], **kw: Any) -> Classifier:
        extra: dict[str, Any] = dict(self.classifier_options)
        if self.ambiguous_confidence is not None:
            extra["ambiguous_confidence"] = self.ambiguous_confidence
        if self.ambiguous_margin is not None:
            extra["ambiguous_margin"] = self.ambiguous_margin
        return Classifier(prototypes, labels=labels, **extra, **kw)


def protocol_rows(table: LabelTable, protocol: str) -> tuple[tuple[Emotion, ...], tuple[LabelRow, ...], dict[str, int]]:
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})",
                        exit_code=ExitCode.USAGE)
    wanted = PROTOCOLS[protocol]
    present = {r.emotion for r in table.rows}
    labels = tuple(e for e in Emotion if e in present) if wanted is None else wanted
    rows = tuple(r for r in table.rows if r.emotion in labels)
    dropped = Counter(r.emotion.value for r in table.rows if r.emotion not in labels)
    return labels, rows, dict(sorted(dropped.items()))


def evaluate_protocol(
    table: LabelTable,
    protocol: str,
    *,
    settings: EvalSettings | None = None,
    refine: Refiner | None = None,
    progress: Callable[[int], None] | None = None,
) -> ProtocolResult:
    settings = settings or EvalSettings()
    labels, rows, dropped = protocol_rows(table, protocol)
    if not rows:
        raise DataError(f"{table.path}: no rows with the {protocol} labels ({', '.join(e.value for e in labels)})")
    by_subject: dict[str, list[LabelRow]] = {}
    for row in rows:
        by_subject.setdefault(row.subject, []).append(row)
    subjects = tuple(s for s in table.subjects if s in by_subject)
    if len(subjects) < 2:
        raise DataError(f"{table.path}: leave-one-subject-out needs at least 2 subjects with {protocol} rows, "
                        f"found {len(subjects)}")
    notes: list[str] = []
    missing = [e.value for e in labels if e not in {r.emotion for r in rows}]
    if missing:
        hint = " (for SAMM use --protocol samm5)" if protocol == "5class" else ""
        notes.append(f"no rows labelled {', '.join(missing)} in this file; those labels can still be predicted"
                     f"{hint}")
    singles = [s for s in subjects if len(by_subject[s]) == 1]
    if singles:
        notes.append(f"subject(s) {', '.join(singles)} have a single row: LOSO still works (that row is scored by "
                     "a model fitted on everyone else)")
    position = {id(r): i for i, r in enumerate(rows)}
    predicted: dict[str, list[Emotion | None]] = {m: [None] * len(rows) for m in DESCRIPTIONS if m not in (
        "classifier+reasoner", "classifier-2fold", "naive-bayes-2fold", "classifier-fixed")}
    decisions: list[Decision | None] = [None] * len(rows)
    cases: list[EvalCase | None] = [None] * len(rows)
    rules_only = settings.classifier(None, labels, use_prototypes=False)
    for subject in subjects:
        test = by_subject[subject]
        train = [r for r in rows if r.subject != subject]
        prototypes = settings.fit(train)
        main = settings.classifier(prototypes, labels)
        proto_only = settings.classifier(prototypes, labels, use_rules=False)
        nb = NaiveBayes().fit([_readings(r) for r in train], [r.emotion for r in train], labels)
        for row in test:
            i = position[id(row)]
            readings = _readings(row)
            decision = main.classify_readings(readings)
            decisions[i] = decision
            predicted["classifier"][i] = decision.label
            context = _pseudo_context(test, row)
            predicted["classifier+context"][i] = main.classify_readings(readings, context).label
            predicted["rules-only"][i] = rules_only.classify_readings(readings).label
            predicted["prototypes-only"][i] = proto_only.classify_readings(readings).label
            predicted["naive-bayes"][i] = nb.predict(readings)
            predicted["paper-table"][i] = paper_overlap(readings, labels)
            kept = _kept_reading(main, readings)
            cases[i] = EvalCase(row, readings, kept)
        if progress is not None:
            progress(1)
    truth = [r.emotion for r in rows]
    results: dict[str, MethodResult] = {}
    for name in ("classifier", "rules-only", "prototypes-only", "classifier+context"):
        preds = tuple(p for p in predicted[name] if p is not None)
        results[name] = MethodResult(name, DESCRIPTIONS[name], score(truth, preds, labels), preds)
    main_result = results["classifier"]
    done = tuple(d for d in decisions if d is not None)
    results["classifier"] = MethodResult(
        "classifier", DESCRIPTIONS["classifier"], main_result.scores, main_result.predicted, done,
        {"ambiguous": sum(d.ambiguous for d in done),
         "accuracy_confident": _subset_accuracy(truth, done, ambiguous=False),
         "accuracy_ambiguous": _subset_accuracy(truth, done, ambiguous=True),
         "stages": dict(sorted(Counter(d.stage.value for d in done).items()))},
    )
    for name in ("paper-table", "naive-bayes"):
        preds = tuple(p for p in predicted[name] if p is not None)
        results[name] = MethodResult(name, DESCRIPTIONS[name], score(truth, preds, labels), preds)
    two_fold = _two_fold(rows, subjects, labels, settings)
    results["classifier-2fold"], results["naive-bayes-2fold"] = two_fold
    if settings.fixed_prototypes is not None:
        results["classifier-fixed"] = _fixed(table, rows, labels, settings, notes)
    if refine is not None:
        results["classifier+reasoner"] = _refined(rows, cases, done, labels, refine)
    return ProtocolResult(protocol, labels, rows, subjects, dropped, results, _ceilings(rows, labels), tuple(notes))


def _subset_accuracy(truth: Sequence[Emotion], decisions: Sequence[Decision], *, ambiguous: bool) -> float | None:
    pairs = [(t, d.label) for t, d in zip(truth, decisions, strict=True) if d.ambiguous is ambiguous]
    return round(sum(t is p for t, p in pairs) / len(pairs), 4) if pairs else None


def _kept_reading(classifier: Classifier, readings: Sequence[tuple[AUActivation, ...]]) -> tuple[AUActivation, ...]:
    if len(readings) == 1:
        return readings[0]
    return max(readings, key=lambda r: classifier.classify(r).confidence)


def _two_fold(rows: Sequence[LabelRow], subjects: Sequence[str], labels: Sequence[Emotion],
              settings: EvalSettings) -> tuple[MethodResult, MethodResult]:
    """Fit on every other subject (sorted order), score the rest; then swap."""
    halves = (set(subjects[0::2]), set(subjects[1::2]))
    classifiers, bayes = [], []
    for half in halves:
        train = [r for r in rows if r.subject in half]
        classifiers.append(settings.classifier(settings.fit(train), labels))
        bayes.append(NaiveBayes().fit([_readings(r) for r in train], [r.emotion for r in train], labels))
    ours: list[Emotion] = []
    nb: list[Emotion] = []
    for row in rows:
        other = 1 if row.subject in halves[0] else 0
        ours.append(classifiers[other].classify_readings(_readings(row)).label)
        nb.append(bayes[other].predict(_readings(row)))
    truth = [r.emotion for r in rows]
    extra = {"halves": [sorted(h, key=_subject_key) for h in halves]}
    return (
        MethodResult("classifier-2fold", DESCRIPTIONS["classifier-2fold"], score(truth, ours, labels), tuple(ours),
                     extra=extra),
        MethodResult("naive-bayes-2fold", DESCRIPTIONS["naive-bayes-2fold"], score(truth, nb, labels), tuple(nb),
                     extra=extra),
    )


def _fixed(table: LabelTable, rows: Sequence[LabelRow], labels: Sequence[Emotion], settings: EvalSettings,
           notes: list[str]) -> MethodResult:
    protos = settings.fixed_prototypes
    assert protos is not None
    fingerprint = table_fingerprint(table)
    if protos.components:
        # A pooled set names its datasets: the one being scored is left out.
        kept = protos.without(fingerprint, table.sha256)
        if kept is not None and kept is not protos:
            notes.append("classifier-fixed: the pooled prototypes' component fitted on this very table is left out "
                         f"({', '.join(kept.provenance.get('left_out', []))}): nothing fitted on it is used")
            protos = kept
    classifier = settings.classifier(protos, labels)
    preds = tuple(classifier.classify_readings(_readings(r)).label for r in rows)
    prov = protos.provenance
    if protos.components:
        source = (f"{len(protos.components)} datasets pooled ({'; '.join(c.name for c in protos.components)}, "
                  f"{sum(int(c.rows) for c in protos.components)} rows)")
    else:
        source = f"{prov.get('dataset', '?')} ({prov.get('file', '?')}, {_count_text(prov.get('rows'))} rows)"
    description = f"classifier with fixed prototypes fitted on {source}, not refitted"
    if prov.get("sha256") == table.sha256 or prov.get("fingerprint") == fingerprint:
        notes.append("classifier-fixed: the prototypes were fitted on this very file, so its score is a training "
                     "fit, not a generalisation score")
    return MethodResult("classifier-fixed", description, score([r.emotion for r in rows], preds, labels), preds,
                        extra={"prototypes": dict(prov)})


def _count_text(value: object) -> str:
    return "?" if value is None else str(value)


def _subject_key(subject: str) -> tuple[int, str]:
    digits = "".join(ch for ch in subject if ch.isdigit())
    return (int(digits) if digits else 1 << 30, subject)


def _refined(rows: Sequence[LabelRow], cases: Sequence[EvalCase | None], decisions: Sequence[Decision],
             labels: Sequence[Emotion], refine: Refiner) -> MethodResult:
    pairs = [(c, d) for c, d in zip(cases, decisions, strict=True) if c is not None and d.ambiguous]
    answers = list(refine(pairs)) if pairs else []
    if len(answers) != len(pairs):
        raise DataError(f"reasoner returned {len(answers)} labels for {len(pairs)} ambiguous rows")
    refined = {id(c.row): a for (c, _d), a in zip(pairs, answers, strict=True) if a is not None and a in labels}
    preds = tuple(refined.get(id(r), d.label) for r, d in zip(rows, decisions, strict=True))
    result = score([r.emotion for r in rows], preds, labels)
    return MethodResult("classifier+reasoner", DESCRIPTIONS["classifier+reasoner"], result, preds,
                        extra={"ambiguous": len(pairs), "refined": len(refined)})


def _ceilings(rows: Sequence[LabelRow], labels: Sequence[Emotion]) -> dict[str, float]:
    """What a classifier that sees only the AU configuration can reach.

    ``in_sample``: every configuration labelled with its majority label, on
    the same data (ignores generalisation entirely).
    ``loso_optimistic``: each held-out row gets the majority label of its
    exact configuration among the *other* subjects, with ties that include
    the truth and configurations never seen in training counted as correct.
    A classifier that follows its training data cannot beat it; one that does
    is contradicting the training data and being lucky.
    Both for the configuration with sides (one-sided units marked) and with
    sides collapsed.
    """
    keys = [Evidence.from_activations(_readings(r)[0]).config_key() for r in rows]
    plain = [tuple(sorted({k.rstrip("u") for k in key}, key=int)) for key in keys]
    truth = [r.emotion for r in rows]
    out: dict[str, float] = {}
    for name, ks in (("configuration", keys), ("configuration_sides_collapsed", plain)):
        counts: dict[tuple[str, ...], Counter[Emotion]] = {}
        per_subject: dict[tuple[str, tuple[str, ...]], Counter[Emotion]] = {}
        for key, row in zip(ks, rows, strict=True):
            counts.setdefault(key, Counter())[row.emotion] += 1
            per_subject.setdefault((row.subject, key), Counter())[row.emotion] += 1
        majority = {key: c.most_common(1)[0][0] for key, c in counts.items()}
        in_sample = [majority[k] for k in ks]
        loso: list[Emotion] = []
        for key, row in zip(ks, rows, strict=True):
            train = counts[key] - per_subject[(row.subject, key)]
            if not train or train.get(row.emotion, 0) == max(train.values()):
                loso.append(row.emotion)
            else:
                loso.append(train.most_common(1)[0][0])
        for kind, preds in (("in_sample", in_sample), ("loso_optimistic", loso)):
            result = score(truth, preds, labels)
            out[f"{kind}_{name}_accuracy"] = round(result.accuracy, 4)
            out[f"{kind}_{name}_uf1"] = round(result.uf1, 4)
    return out


@dataclass(frozen=True)
class EvalReport:
    table: LabelTable
    protocols: tuple[ProtocolResult, ...]
    created: str
    command: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            **report_header(SCHEMA, self.created, self.command),
            "source": {
                "file": self.table.path.name,
                "sha256": self.table.sha256,
                "format": self.table.source_format,
                "rows": len(self.table.rows),
                "subjects": len(self.table.subjects),
                "problems": [
                    {"row": p.line, "where": p.where, "kind": p.kind, "message": p.message, "fatal": p.fatal}
                    for p in self.table.problems
                ],
            },
            "protocols": {p.name: _protocol_json(p) for p in self.protocols},
        }

    def to_markdown(self) -> str:
        lines = [
            f"# microexpr eval: {self.table.path.name}",
            "",
            f"- file sha256 `{self.table.sha256}`; {len(self.table.rows)} rows, {len(self.table.subjects)} subjects",
            f"- microexpr {__version__}, {self.created}; command `{self.command}`",
            f"- machine: {machine()['platform']}, {machine()['cpus']} CPUs, Python {machine()['python']}",
            "- all scores are leave-one-subject-out (LOSO) unless the method says otherwise; never training fit",
            "",
        ]
        for p in self.protocols:
            lines += _protocol_markdown(p)
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        return self.to_markdown()


def _protocol_json(p: ProtocolResult) -> dict[str, Any]:
    return {
        "labels": [e.value for e in p.labels],
        "rows": len(p.rows),
        "subjects": len(p.subjects),
        "dropped": dict(p.dropped),
        "notes": list(p.notes),
        "ceilings": dict(p.ceilings),
        "methods": {
            name: {
                "description": m.description,
                "accuracy": round(m.scores.accuracy, 4),
                "uf1": round(m.scores.uf1, 4),
                "uar": round(m.scores.uar, 4),
                "per_class": [
                    {"class": c.label.value, "precision": round(c.precision, 4), "recall": round(c.recall, 4),
                     "f1": round(c.f1, 4), "support": c.support}
                    for c in m.scores.per_class
                ],
                "confusion": {"labels": [e.value for e in m.scores.labels], "rows_true_columns_predicted":
                              [list(r) for r in m.scores.confusion]},
                **dict(m.extra),
            }
            for name, m in p.methods.items()
        },
    }


def _protocol_markdown(p: ProtocolResult) -> list[str]:
    labels = ", ".join(e.value for e in p.labels)
    lines = [f"## Protocol `{p.name}` ({labels}): {len(p.rows)} rows, {len(p.subjects)} subjects", ""]
    if p.dropped:
        lines.append("Left out (label not in the protocol): " + ", ".join(f"{k} {v}" for k, v in p.dropped.items()))
        lines.append("")
    for note in p.notes:
        lines.append(f"Note: {note}")
        lines.append("")
    lines += ["| method | accuracy | UF1 | UAR | what |", "|---|---|---|---|---|"]
    for name, m in p.methods.items():
        s = m.scores
        lines.append(f"| {name} | {s.accuracy:.3f} | {s.uf1:.3f} | {s.uar:.3f} | {m.description} |")
    c = p.ceilings
    lines += [
        "",
        "Ceilings for any classifier that sees only the AU configuration (accuracy / UF1): majority label per "
        f"configuration in-sample {c['in_sample_configuration_accuracy']:.3f} / {c['in_sample_configuration_uf1']:.3f};"
        f" optimistic LOSO {c['loso_optimistic_configuration_accuracy']:.3f} / "
        f"{c['loso_optimistic_configuration_uf1']:.3f}; with sides collapsed "
        f"{c['in_sample_configuration_sides_collapsed_accuracy']:.3f} / "
        f"{c['in_sample_configuration_sides_collapsed_uf1']:.3f} and "
        f"{c['loso_optimistic_configuration_sides_collapsed_accuracy']:.3f} / "
        f"{c['loso_optimistic_configuration_sides_collapsed_uf1']:.3f}.",
        "",
    ]
    main = p.methods[MAIN]
    lines += [f"### `{MAIN}` per class (the paper's table layout)", "",
              "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for cm in main.scores.per_class:
        lines.append(f"| {cm.label.value} | {cm.precision:.2f} | {cm.recall:.2f} | {cm.f1:.2f} | {cm.support} |")
    extra = main.extra
    if extra:
        confident, unsure = extra.get("accuracy_confident"), extra.get("accuracy_ambiguous")
        lines += ["", f"Ambiguous (marked for the reasoner): {extra.get('ambiguous', 0)} of {len(p.rows)} "
                      f"(accuracy {_fmt(unsure)} on them, {_fmt(confident)} on the confident rest); "
                      f"deciding stage: " + ", ".join(f"{k} {v}" for k, v in extra.get("stages", {}).items())]
    lines += ["", f"### `{MAIN}` confusion matrix (rows: true, columns: predicted)", "", "```",
              confusion_text(main.scores), "```", ""]
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def confusion_text(s: Scores) -> str:
    names = [e.value[:10] for e in s.labels]
    width = max(10, *(len(n) for n in names))
    head = " " * (width + 2) + " ".join(f"{n:>{width}}" for n in names)
    rows = [head]
    for name, row in zip(names, s.confusion, strict=True):
        rows.append(f"{name:>{width}}  " + " ".join(f"{v:>{width}}" for v in row))
    return "\n".join(rows)


def plot_confusion(s: Scores, title: str, path: Path) -> None:
    """A row-normalised confusion matrix with counts, as PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(s.confusion, dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.75 * len(s.labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    try:
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        names = [e.value for e in s.labels]
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(names)):
            for j in range(len(names)):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                            color="white" if shares[i, j] > 0.5 else "black", fontsize=9)
        ax.set_title(f"{title}\nacc {s.accuracy:.3f}  UF1 {s.uf1:.3f}  UAR {s.uar:.3f}", fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def write_outputs(report: EvalReport, out_dir: Path) -> list[Path]:
    """eval.json, eval.md and confusion PNGs under ``out_dir``."""
    written: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / "eval.json"
        json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        md_path = out_dir / "eval.md"
        md_path.write_text(report.to_markdown(), encoding="utf-8")
        written += [json_path, md_path]
        for p in report.protocols:
            for name in PLOTTED:
                if name in p.methods:
                    png = out_dir / f"confusion_{p.name}_{name}.png"
                    plot_confusion(p.methods[name].scores, f"{report.table.path.name} · {p.name} · {name}", png)
                    written.append(png)
    except OSError as exc:
        raise DataError(f"{out_dir}: cannot write evaluation output ({exc.strerror or exc})",
                        exit_code=ExitCode.IO_ERROR) from None
    return written


def report_header(schema: str, created: str, command: str) -> dict[str, Any]:
    """The fields every eval report starts with: what wrote it, when, how and where."""
    return {"schema": schema, "microexpr_version": __version__, "created": created, "command": command,
            "machine": machine()}


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def run_eval(
    table: LabelTable,
    protocols: Sequence[str],
    *,
    settings: EvalSettings | None = None,
    refine: Refiner | None = None,
    progress: Callable[[int], None] | None = None,
    command: str = "",
) -> EvalReport:
    results = tuple(evaluate_protocol(table, p, settings=settings, refine=refine, progress=progress)
                    for p in protocols)
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return EvalReport(table, results, created, command)


def folds(table: LabelTable, protocols: Sequence[str]) -> int:
    """Work units for a progress bar: one per (protocol, subject)."""
    total = 0
    for p in protocols:
        _labels, rows, _dropped = protocol_rows(table, p)
        total += len({r.subject for r in rows})
    return total

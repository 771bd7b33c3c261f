"""Staged classification: FACS rules, prototypes, subject context, the decision."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from microexpr.classify.context import SubjectContext
from microexpr.classify.decide import Classifier, Decision, Stage
from microexpr.classify.evidence import Evidence, Laterality
from microexpr.classify.prototypes import PrototypeSet, Sample
from microexpr.classify.rules import evaluate_rules
from microexpr.cli import main
from microexpr.errors import DataError, ExitCode
from microexpr.facs import AU, AUActivation, Emotion, Side
from microexpr.labels import parse_aus, read_labels

FIVE = (Emotion.HAPPINESS, Emotion.DISGUST, Emotion.REPRESSION, Emotion.SURPRISE, Emotion.OTHERS)


def acts(text: str) -> tuple[AUActivation, ...]:
    (reading,) = parse_aus(text).readings()
    return reading


def rules_of(text: str) -> dict[Emotion, float]:
    return evaluate_rules(Evidence.from_activations(acts(text))).scores()


def samples(spec: dict[str, list[tuple[str, int]]]) -> list[Sample]:
    """{"surprise": [("1+2", 10)], ...} → fit samples."""
    out: list[Sample] = []
    for emotion, configs in spec.items():
        for text, n in configs:
            out += [(parse_aus(text).readings(), Emotion(emotion))] * n
    return out


@pytest.fixture(scope="module")
def rules_only() -> Classifier:
    return Classifier(use_prototypes=False)


@pytest.fixture(scope="module")
def shipped() -> Classifier:
    return Classifier()


# --- evidence ---------------------------------------------------------------------


def test_evidence_laterality_and_weights() -> None:
    ev = Evidence.from_activations(acts("L14+12+T4") + (AUActivation(AU(7), Side.LEFT, 0.9),
                                                        AUActivation(AU(7), Side.RIGHT, 0.2)))
    assert ev.units[AU(14)].laterality is Laterality.LEFT
    assert ev.units[AU(12)].laterality is Laterality.BILATERAL
    assert ev.units[AU(7)].laterality is Laterality.ASYMMETRIC
    assert ev.w(AU(4)) < ev.w(AU(12)) == 1.0  # a trace counts less
    assert ev.one_sided(14) > 0 and ev.one_sided(12) == 0
    assert ev.config_key() == ("4", "7u", "12", "14u")


# --- rules: the confusion pairs ------------------------------------------------------


def test_surprise_without_fear_cues(rules_only: Classifier) -> None:
    scores = rules_of("1+2+5+26")
    assert max(scores, key=scores.__getitem__) is Emotion.SURPRISE
    assert rules_only.classify(acts("1+2+5+26")).label is Emotion.SURPRISE


@pytest.mark.parametrize("text", ["1+2+4+5+20", "1+2+4", "1+2+5+20"])
def test_fear_over_surprise_when_brows_pull_together_or_lips_stretch(rules_only: Classifier, text: str) -> None:
    result = evaluate_rules(Evidence.from_activations(acts(text)))
    scores = result.scores()
    assert scores[Emotion.FEAR] > scores[Emotion.SURPRISE]
    assert any(a.emotion is Emotion.SURPRISE and "fear" in a.reason for a in result.adjustments)
    decision = rules_only.classify(acts(text))
    assert decision.label is Emotion.FEAR
    assert any("not surprise" in line for line in decision.trace)


def test_disgust_vs_sadness(rules_only: Classifier) -> None:
    assert rules_only.classify(acts("1+15")).label is Emotion.SADNESS
    assert rules_only.classify(acts("1+4+15")).label is Emotion.SADNESS
    assert rules_only.classify(acts("1+9+15")).label is Emotion.DISGUST
    assert rules_only.classify(acts("10+17")).label is Emotion.DISGUST


def test_repression_vs_anger(rules_only: Classifier) -> None:
    for text in ("17+24", "15+17", "14+24"):
        scores = rules_of(text)
        assert scores[Emotion.REPRESSION] > scores[Emotion.ANGER], text
        assert rules_only.classify(acts(text)).label in (Emotion.REPRESSION, Emotion.CONTEMPT), text
    for text in ("4+5+7+23", "4+7+24", "4+5+24"):
        assert rules_only.classify(acts(text)).label is Emotion.ANGER, text
    decision = rules_only.classify(acts("4+7+17+24"))
    assert decision.label is Emotion.ANGER
    assert any("anger rather than suppression" in line for line in decision.trace)


def test_contempt_needs_one_side(rules_only: Classifier) -> None:
    for text in ("L14", "R14", "R12+R14", "A14"):
        assert rules_only.classify(acts(text)).label is Emotion.CONTEMPT, text
    for text in ("14", "12+14", "14+24"):
        result = evaluate_rules(Evidence.from_activations(acts(text)))
        assert Emotion.CONTEMPT in result.vetoed, text
        assert rules_only.classify(acts(text)).label is not Emotion.CONTEMPT, text


def test_contempt_veto_holds_against_prototypes() -> None:
    # Prototypes that learned "bilateral 14 is contempt" cannot override FACS.
    protos = PrototypeSet.fit(samples({"contempt": [("14", 20)], "others": [("4", 20)], "happiness": [("12", 5)]}))
    decision = Classifier(protos).classify(acts("14"))
    assert decision.label is not Emotion.CONTEMPT
    assert Emotion.CONTEMPT not in dict(decision.scores)
    assert any("contempt ruled out" in line for line in decision.trace)
    assert Classifier(protos).classify(acts("R14")).label is Emotion.CONTEMPT


def test_shipped_classifier_separates_one_sided_and_bilateral_dimpler(shipped: Classifier) -> None:
    assert shipped.classify(acts("L14")).label is Emotion.CONTEMPT
    assert shipped.classify(acts("14")).label is not Emotion.CONTEMPT


@pytest.mark.parametrize("text", ["1+4+12+15+17+43", "12+43", "1+12", "4+12", "12+15", "6+12+17"])
def test_crying_is_not_happiness(shipped: Classifier, rules_only: Classifier, text: str) -> None:
    for classifier in (shipped, rules_only):
        decision = classifier.classify(acts(text))
        assert decision.label is not Emotion.HAPPINESS, text
        assert Emotion.HAPPINESS not in dict(decision.scores)
        assert any("happiness ruled out" in line for line in decision.trace), decision.trace


def test_crying_veto_holds_against_prototypes() -> None:
    protos = PrototypeSet.fit(samples({"happiness": [("12+15", 30), ("12", 30)], "others": [("4", 30)]}))
    assert Classifier(protos).classify(acts("12+15")).label is not Emotion.HAPPINESS
    assert Classifier(protos).classify(acts("12")).label is Emotion.HAPPINESS


@pytest.mark.parametrize("text", ["12", "6+12", "L12", "12+25"])
def test_smiles_are_happiness(shipped: Classifier, rules_only: Classifier, text: str) -> None:
    assert shipped.classify(acts(text)).label is Emotion.HAPPINESS
    assert rules_only.classify(acts(text)).label is Emotion.HAPPINESS


def test_every_rule_has_a_reason() -> None:
    for text in ("6+12", "1+2+5+26", "1+2+4+20", "1+4+15", "9+10+17", "4+5+7+23", "R12+R14", "15+17+24"):
        result = evaluate_rules(Evidence.from_activations(acts(text)))
        assert result.hits, text
        for hit in result.hits:
            assert 0 < hit.score <= 1 and hit.reason and "AU" in hit.reason


# --- the decision --------------------------------------------------------------------


def _check_fields(decision: Decision, classifier: Classifier) -> None:
    labels = [e for e, _p in decision.scores]
    probs = [p for _e, p in decision.scores]
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-3)
    assert probs == sorted(probs, reverse=True)
    assert set(labels) <= set(classifier.labels)
    assert decision.label is labels[0] and decision.confidence == probs[0]
    assert decision.runner_up is labels[1]
    assert math.isclose(decision.margin, probs[0] - probs[1], abs_tol=2e-4)
    assert isinstance(decision.stage, Stage)
    assert decision.trace and all(isinstance(line, str) and line for line in decision.trace)
    assert decision.trace[0].startswith("evidence:")
    assert any(line.startswith(f"→ {decision.label.value}") for line in decision.trace)
    contested = any(line.startswith("contested: ") or "neither a FACS pattern nor the fitted data" in line
                    for line in decision.trace)
    expected = (decision.confidence < classifier.ambiguous_confidence
                or decision.margin < classifier.ambiguous_margin or contested)
    assert decision.ambiguous is expected
    assert any("marked for the reasoner" in line for line in decision.trace) is expected


@pytest.mark.parametrize("text", ["4", "4+7", "12", "17", "1+2", "4+5+7+23", "L14", "9", "20", "1+4"])
def test_decision_fields(shipped: Classifier, text: str) -> None:
    _check_fields(shipped.classify(acts(text)), shipped)


def test_empty_evidence_is_others(shipped: Classifier) -> None:
    decision = shipped.classify(())
    _check_fields(decision, shipped)
    assert decision.label is Emotion.OTHERS
    assert decision.trace[0] == "evidence: no AUs"


def test_ambiguity_thresholds() -> None:
    protos = PrototypeSet.load_default()
    always = Classifier(protos, ambiguous_confidence=1.0)
    never = Classifier(protos, ambiguous_confidence=0.0, ambiguous_margin=0.0)
    for text in ("12", "6+12", "1+2+5+26"):
        assert always.classify(acts(text)).ambiguous
        assert not never.classify(acts(text)).ambiguous
    for text in ("4", "4+7", "L14"):  # contested between the pooled datasets or with FACS: always ambiguous
        decision = never.classify(acts(text))
        assert decision.ambiguous and any(line.startswith("contested: ") for line in decision.trace), text
    with pytest.raises(ValueError):
        Classifier(protos, ambiguous_margin=1.5)


def test_labels_restrict_the_output() -> None:
    five = Classifier(labels=FIVE)
    for text in ("4+5+7+23", "L14", "1+2+4+20", "1+4+15", "4"):
        decision = five.classify(acts(text))
        assert decision.label in FIVE
        assert {e for e, _p in decision.scores} <= set(FIVE)
        _check_fields(decision, five)


def test_stage_names(rules_only: Classifier) -> None:
    protos = PrototypeSet.load_default("prototypes_casme2.json")  # one dataset: its conventions decide
    assert rules_only.classify(acts("4")).stage is Stage.RULES
    assert Classifier(protos, use_rules=False).classify(acts("1+2")).stage is Stage.PROTOTYPE
    assert Classifier(protos).classify(acts("1+2+5")).stage is Stage.RULES  # rules decisive, prototypes agree
    assert Classifier(protos).classify(acts("17")).stage is Stage.PROTOTYPE  # CASME II's convention, learned
    pooled = Classifier()  # the shipped pool: AU17 alone is contested, no convention decides
    decision = pooled.classify(acts("17"))
    assert decision.stage is Stage.RULES and decision.ambiguous


def test_subject_context_settles_an_ambiguous_decision() -> None:
    protos = PrototypeSet.fit(samples({"surprise": [("1+2", 3), ("2", 3)], "others": [("1", 10), ("1+2", 2)]}))
    classifier = Classifier(protos, labels=(Emotion.SURPRISE, Emotion.OTHERS))
    plain = classifier.classify(acts("1+2"))
    assert plain.label is Emotion.SURPRISE and plain.ambiguous
    context = SubjectContext()
    for _ in range(40):  # AU2 in every frame outside episodes: a habit
        context.observe([AU(2)])
    decision = classifier.classify(acts("1+2"), context)
    assert decision.label is Emotion.OTHERS and decision.stage is Stage.CONTEXT
    assert any(line.startswith("subject context: AU2 weighs") for line in decision.trace)


def test_subject_context_never_flips_a_clear_smile() -> None:
    """Issue 12: a subject who smiles a lot still smiles; the context may
    lower the confidence, never turn a clear smile into "others"."""
    classifier = Classifier()
    smile = acts("12")
    plain = classifier.classify(smile)
    assert plain.label is Emotion.HAPPINESS and not plain.ambiguous
    context = SubjectContext()
    for _ in range(100):  # smiling in every frame outside episodes
        context.observe([AU(12)])
    assert context.habitual_weight(12) < 0.5
    decision = classifier.classify(smile, context)
    assert decision.label is Emotion.HAPPINESS
    assert decision.confidence < plain.confidence and decision.ambiguous  # lowered: the reasoner may look
    assert decision.stage is not Stage.CONTEXT
    assert any("decision without it was clear: happiness kept" in line for line in decision.trace)
    # Without the guard the habitual weights alone would not say happiness.
    from microexpr.classify.evidence import Evidence
    assert classifier._fuse(Evidence.from_activations(smile, context)).label is not Emotion.HAPPINESS


def test_alternatives_keep_the_most_confident_reading(shipped: Classifier) -> None:
    parsed = parse_aus("(R6 or R12)")
    decision = shipped.classify_readings(parsed.readings())
    singles = [shipped.classify(r) for r in parsed.readings()]
    best = max(singles, key=lambda d: d.confidence)
    assert decision.label is best.label and decision.confidence == best.confidence
    assert decision.trace[0].startswith("coded with alternatives: scored 2 readings")


# --- subject context -----------------------------------------------------------------


def test_context_weights() -> None:
    context = SubjectContext(min_frames=10, half_life_frames=None)
    for i in range(20):
        context.observe([AUActivation(AU(4))] + ([AUActivation(AU(12))] if i % 10 == 0 else []))
        if i == 5:
            assert context.habitual_weight(AU(4)) == 1.0  # too few frames yet
    assert context.rate(AU(4)) == 1.0 and context.habitual_weight(AU(4)) == context.floor
    assert context.rate(AU(12)) == pytest.approx(0.1) and context.habitual_weight(AU(12)) == 1.0
    assert context.habitual_weight(AU(9)) == 1.0
    assert AU(4) in context.habitual_aus and AU(12) not in context.habitual_aus
    context.reset()
    assert context.frames == 0 and context.habitual_weight(AU(4)) == 1.0


def test_context_forgets_old_habits() -> None:
    context = SubjectContext(min_frames=5, half_life_frames=50)
    for _ in range(200):
        context.observe([AU(4)])
    for _ in range(400):
        context.observe([])
    assert context.rate(AU(4)) < 0.01
    assert context.habitual_weight(AU(4)) == 1.0


def test_context_weight_is_monotonic() -> None:
    weights = []
    for share in range(0, 11):
        context = SubjectContext(min_frames=10, half_life_frames=None)
        for i in range(100):
            context.observe([AU(17)] if i % 10 < share else [])
        weights.append(context.habitual_weight(AU(17)))
    assert weights == sorted(weights, reverse=True)
    assert weights[0] == 1.0 and weights[-1] == pytest.approx(context.floor)


# --- prototypes --------------------------------------------------------------------------


def test_rare_emotions_can_win_on_their_own_aus() -> None:
    protos = PrototypeSet.fit(samples({"fear": [("20", 2)], "others": [("4", 60), ("4+7", 10)],
                                       "happiness": [("12", 30)]}))
    decision = Classifier(protos, use_rules=False).classify(acts("20"))
    assert decision.label is Emotion.FEAR


def test_prototypes_round_trip(tmp_path: Path) -> None:
    protos = PrototypeSet.fit(samples({"surprise": [("1+2", 3), ("L1+L2", 2)], "others": [("4", 5)],
                                       "happiness": [("(R6 or R12)", 2)]}), provenance={"dataset": "toy"})
    path = tmp_path / "p.json"
    protos.save(path)
    loaded = PrototypeSet.load(path)
    assert loaded.provenance == {"dataset": "toy"}
    assert loaded.classes[Emotion.HAPPINESS].au_counts == {AU(6): 1.0, AU(12): 1.0}  # alternatives share a row
    assert loaded.classes[Emotion.SURPRISE].configs == {("1", "2"): 3.0, ("1u", "2u"): 2.0}
    for text in ("1+2", "4", "R12", "9"):
        ev = Evidence.from_activations(acts(text))
        assert loaded.score(ev).posterior == pytest.approx(protos.score(ev).posterior)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(schema="other/1"), "schema"),
        (lambda d: d["classes"].update(joy={"count": 1}), "classes.joy"),
        (lambda d: d["classes"]["others"].update(count=0), "classes.others.count"),
        (lambda d: d["classes"]["others"]["au_counts"].update(AU3=1), "classes.others.au_counts.AU3"),
        (lambda d: d["classes"]["others"]["configs"].update({"4+x": 1}), "classes.others.configs.4+x"),
        (lambda d: d.update(m=-1), "m:"),
        (lambda d: d.update(m=float("inf")), "m:"),
        (lambda d: d.update(m=float("nan")), "m:"),
    ],
)
def test_bad_prototype_files(tmp_path: Path, mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    data = PrototypeSet.fit(samples({"others": [("4", 3)], "happiness": [("12", 3)]})).to_json()
    mutate(data)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError) as exc:
        PrototypeSet.load(path)
    assert fragment in str(exc.value) and str(path) in str(exc.value)


def test_prototype_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        PrototypeSet.load(tmp_path / "missing.json")
    assert exc.value.exit_code == ExitCode.NO_INPUT
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="not JSON"):
        PrototypeSet.load(tmp_path / "bad.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not UTF-8") as exc:  # corrupt content: 65, not "missing" (66)
        PrototypeSet.load(tmp_path / "binary.json")
    assert exc.value.exit_code == ExitCode.DATA_ERROR
    with pytest.raises(DataError, match="is a folder") as exc:
        PrototypeSet.load(tmp_path)
    assert exc.value.exit_code == ExitCode.NO_INPUT


@pytest.mark.parametrize("m", ["inf", "nan", "0", "-1"])
def test_fit_prototypes_refuses_a_smoothing_that_is_not_a_positive_number(
    tmp_path: Path, casme2_csv: Path, capsys: pytest.CaptureFixture[str], m: str
) -> None:
    out = tmp_path / "p.json"
    assert main(["fit-prototypes", str(casme2_csv), "-o", str(out), "--m", m]) == ExitCode.USAGE
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()  # inf used to be written as "m": Infinity, which is not JSON


def test_shipped_prototypes_are_pooled_over_named_datasets(casme2_csv: Path) -> None:
    from microexpr.harmonise import table_fingerprint
    protos = PrototypeSet.load_default()
    assert len(protos.components) == 3
    names = [c.name for c in protos.components]
    assert any("CASME II" in n for n in names) and any("CAS(ME)3" in n for n in names) and any("MMEW" in n for n in names)
    weighted = [c.weight * c.rows for c in protos.components]  # each dataset the same total weight
    assert max(weighted) - min(weighted) < 1e-6
    table = read_labels(casme2_csv)
    own = protos.without(table_fingerprint(table))
    assert own is not None and len(own.components) == 2 and all("CASME II" not in c.name for c in own.components)
    assert ("4",) in protos.contested  # lone AU4: others in CASME II, disgust in CAS(ME)3
    assert protos.contest(("12",)) is None


def test_shipped_prototypes_have_provenance(casme2_xlsx: Path) -> None:
    protos = PrototypeSet.load_default("prototypes_casme2.json")  # the casme2 profile's set
    table = read_labels(casme2_xlsx)
    prov = protos.provenance
    assert prov["sha256"] == table.sha256 and prov["file"] == casme2_xlsx.name
    assert prov["rows"] == len(table.rows) and prov["subjects"] == len(table.subjects)
    assert "CASME II" in prov["dataset"] and prov["command"].startswith("microexpr fit-prototypes")
    assert prov["created"]
    counts = Counter(r.emotion for r in table.rows)
    assert {e: int(p.count) for e, p in protos.classes.items()} == dict(counts)


def test_fit_prototypes_command(tmp_path: Path, casme2_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "protos.json"
    assert main(["fit-prototypes", str(casme2_csv), "-o", str(out), "--dataset", "CASME II (CSV)"]) == 0
    assert "wrote" in capsys.readouterr().out
    fitted = PrototypeSet.load(out)
    shipped = PrototypeSet.load_default("prototypes_casme2.json")
    assert fitted.provenance["dataset"] == "CASME II (CSV)"
    assert fitted.provenance["sha256"] != shipped.provenance["sha256"]  # a different file ...
    assert {e: p.au_counts for e, p in fitted.classes.items()} == {e: p.au_counts for e, p in shipped.classes.items()}


def test_fit_prototypes_never_overwrites_the_label_file(tmp_path: Path, casme2_csv: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_bytes(casme2_csv.read_bytes())
    for out in (labels, tmp_path / "." / "labels.csv"):
        assert main(["fit-prototypes", str(labels), "-o", str(out)]) == ExitCode.USAGE
        assert "is the label file" in capsys.readouterr().err
    assert labels.read_bytes() == casme2_csv.read_bytes()


def test_fit_prototypes_bad_output(tmp_path: Path, casme2_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    assert main(["fit-prototypes", str(casme2_csv), "-o", str(blocker / "p.json")]) == ExitCode.IO_ERROR
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("microexpr: error:") and "p.json" in last and "Traceback" not in last

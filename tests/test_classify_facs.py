"""The classifier against FACS/EMFACS: broad smiles, disgust, lone lip AUs
without a repression label, fusion with prototypes fitted on another dataset,
and a SAMM-notation fixture of FACS-prototypical AU combinations.

Inputs are ``AUActivation`` tuples, as a live episode delivers them; the
fixture goes through the label reader and ``microexpr eval``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from microexpr.capture import open_source
from microexpr.classify.decide import Classifier
from microexpr.classify.evidence import Evidence
from microexpr.classify.prototypes import PrototypeSet, Sample
from microexpr.classify.rules import evaluate_rules
from microexpr.cli import main
from microexpr.facs import AU, AUActivation, Emotion, Side
from microexpr.labels import parse_aus, read_labels

FIXTURE = Path(__file__).parent / "fixtures" / "samm_emfacs_prototypes.csv"
#: SAMM's labels: no repression.
SAMM_ALL = tuple(e for e in Emotion if e is not Emotion.REPRESSION)
SAMM5 = (Emotion.ANGER, Emotion.CONTEMPT, Emotion.HAPPINESS, Emotion.SURPRISE, Emotion.OTHERS)
CASME5 = (Emotion.HAPPINESS, Emotion.DISGUST, Emotion.REPRESSION, Emotion.SURPRISE, Emotion.OTHERS)


def both(*aus: int, intensity: float = 1.0) -> tuple[AUActivation, ...]:
    return tuple(AUActivation(AU(a), Side.BOTH, intensity) for a in aus)


@pytest.fixture(scope="module")
def rules_only() -> Classifier:
    return Classifier(use_prototypes=False)


@pytest.fixture(scope="module")
def shipped() -> Classifier:
    return Classifier()


# --- 1. AU10 in a broad smile --------------------------------------------------------


@pytest.mark.parametrize("aus", [(6, 7, 10, 12, 25), (6, 10, 12, 25), (10, 12, 25), (10, 12)])
def test_broad_smile_with_upper_lip_raised_is_happiness(rules_only: Classifier, shipped: Classifier,
                                                        aus: tuple[int, ...]) -> None:
    result = evaluate_rules(Evidence.from_activations(both(*aus)))
    scores = result.scores()
    assert scores[Emotion.HAPPINESS] > scores[Emotion.DISGUST]
    assert any(a.rule == "pair.smile-not-disgust" and 0 < a.factor < 1 for a in result.adjustments)
    for classifier in (rules_only, shipped):
        decision = classifier.classify(both(*aus))
        assert decision.label is Emotion.HAPPINESS, (aus, decision.trace)
        trace = "\n".join(decision.trace)
        assert "belongs to a broad smile, not to disgust" in trace
        assert re.search(r"rules: happiness 0\.\d\d \(AU", trace)


@pytest.mark.parametrize("aus", [(9, 10), (9, 10, 25), (10, 17), (4, 9)])
def test_disgust_stays_disgust(rules_only: Classifier, shipped: Classifier, aus: tuple[int, ...]) -> None:
    result = evaluate_rules(Evidence.from_activations(both(*aus)))
    assert not result.adjustments or all(a.emotion is not Emotion.DISGUST for a in result.adjustments)
    for classifier in (rules_only, shipped):
        decision = classifier.classify(both(*aus))
        assert decision.label is Emotion.DISGUST, (aus, decision.trace)


def test_nose_wrinkle_keeps_disgust_at_full_strength_beside_a_smile() -> None:
    """With AU9 the smile does not take the upper lip: 9+10+12 stays a disgust
    candidate at full strength (a smile masking disgust is not a happy face)."""
    result = evaluate_rules(Evidence.from_activations(both(9, 10, 12)))
    assert not any(a.emotion is Emotion.DISGUST for a in result.adjustments)
    assert result.scores()[Emotion.DISGUST] >= 0.85


def test_a_sneer_with_a_trace_of_a_smile_stays_disgust(rules_only: Classifier) -> None:
    """Only an AU12 at least as strong as AU10 takes the upper lip into the smile."""
    sneer = (AUActivation(AU(10), Side.BOTH, 0.8), AUActivation(AU(12), Side.BOTH, 0.2),
             AUActivation(AU(25), Side.BOTH, 0.6))
    assert rules_only.classify(sneer).label is Emotion.DISGUST
    smile = (AUActivation(AU(10), Side.BOTH, 0.4), AUActivation(AU(12), Side.BOTH, 0.8),
             AUActivation(AU(25), Side.BOTH, 0.6))
    assert rules_only.classify(smile).label is Emotion.HAPPINESS


def test_crying_face_keeps_its_upper_lip_as_evidence() -> None:
    result = evaluate_rules(Evidence.from_activations(both(10, 12, 15)))
    assert Emotion.HAPPINESS in result.vetoed
    assert not any(a.rule == "pair.smile-not-disgust" for a in result.adjustments)


# --- 2. the real smile clip ------------------------------------------------------------

#: What the pipeline reports for the real smile clip (single_face.mp4): AU10,
#: AU12 and AU25 at the apex; AU6 stays under the evidence threshold.
CLIP_SMILE = (AUActivation(AU(10), Side.BOTH, 0.759), AUActivation(AU(12), Side.BOTH, 0.9),
              AUActivation(AU(25), Side.BOTH, 1.0))


def test_measured_smile_is_confident_happiness(shipped: Classifier) -> None:
    decision = shipped.classify(CLIP_SMILE)
    assert decision.label is Emotion.HAPPINESS
    assert not decision.ambiguous, decision.trace
    # Lips parted by the smile are not surprise or fear evidence either.
    result = evaluate_rules(Evidence.from_activations(CLIP_SMILE))
    assert {a.emotion for a in result.adjustments} >= {Emotion.DISGUST, Emotion.SURPRISE, Emotion.FEAR}
    # ... but lips parted under raised brows still may be.
    with_brows = CLIP_SMILE + both(1, 2)
    adjusted = {a.emotion for a in evaluate_rules(Evidence.from_activations(with_brows)).adjustments}
    assert Emotion.SURPRISE not in adjusted


def test_strong_smile_alone_is_the_emfacs_prototype() -> None:
    strong = evaluate_rules(Evidence.from_activations(both(12, intensity=0.8))).scores()[Emotion.HAPPINESS]
    weak = evaluate_rules(Evidence.from_activations(both(12, intensity=0.3))).scores()[Emotion.HAPPINESS]
    assert strong >= 0.85 > weak


@pytest.mark.slow
def test_real_smile_clip_is_confidently_happiness(model_path: Path, smile_clip: Path) -> None:
    from microexpr.pipeline import Pipeline

    decisions = []
    with Pipeline.create(model_path=model_path) as pipeline, open_source(smile_clip) as source:
        for frame in source:
            decisions += [s.decision for s in pipeline.process(frame).episodes]
        decisions += [s.decision for s in pipeline.finish()]
    assert len(decisions) == 1
    (decision,) = decisions
    assert decision is not None and decision.label is Emotion.HAPPINESS
    assert not decision.ambiguous, decision.trace


# --- 3. lone lip AUs and label sets without repression -----------------------------------


@pytest.mark.parametrize("labels", [None, CASME5])
def test_lone_lip_aus_are_repression_where_the_label_exists(shipped: Classifier,
                                                            labels: tuple[Emotion, ...] | None) -> None:
    classifier = shipped if labels is None else Classifier(labels=labels)
    for au in (15, 17):
        assert classifier.classify(both(au)).label is Emotion.REPRESSION


def test_lone_lip_aus_without_a_repression_label() -> None:
    """AU15 is the sad mouth (weak: ambiguous); a lone AU17 fits no emotion."""
    for classifier in (Classifier(labels=SAMM_ALL), Classifier(labels=SAMM_ALL, use_prototypes=False)):
        sad = classifier.classify(both(15))
        assert sad.label is Emotion.SADNESS and sad.ambiguous
        assert classifier.classify(both(17)).label is Emotion.OTHERS
    # SAMM's five classes have neither sadness nor repression: "none of these".
    samm5 = Classifier(labels=SAMM5)
    for au in (15, 17):
        decision = samm5.classify(both(au))
        assert decision.label is Emotion.OTHERS, decision.trace
        assert any("repression (not a label here)" in line for line in decision.trace)


def test_excluded_class_mass_follows_the_rules_not_the_other_classes() -> None:
    """Prototypes that put almost everything on an emotion the label set lacks
    must not hand it to whichever other class happens to be next."""
    protos = PrototypeSet.fit(_samples({"repression": [("15", 30)], "happiness": [("12", 20), ("12+15", 3)],
                                        "others": [("4", 30)]}))
    labels = (Emotion.HAPPINESS, Emotion.SADNESS, Emotion.OTHERS)
    decision = Classifier(protos, labels=labels).classify(both(15))
    assert decision.label is Emotion.SADNESS, decision.trace
    assert Classifier(protos, labels=(Emotion.HAPPINESS, Emotion.OTHERS)).classify(both(15)).label is Emotion.OTHERS


def test_aus_the_prototypes_never_saw_let_the_rules_say_others() -> None:
    """With none of the episode's AUs in the fitted data, the commonest fitted
    label is no answer; the rules' "no emotion pattern fits" is."""
    protos = PrototypeSet.fit(_samples({"disgust": [("9", 10), ("10", 10), ("4+7", 10)],
                                        "anger": [("4+5+7+23", 10)], "others": [("4", 3), ("14", 3)]}))
    assert max(protos.score(Evidence.from_activations(both(45))).posterior.items(),
               key=lambda kv: kv[1])[0] is Emotion.DISGUST  # the class prior speaks
    decision = Classifier(protos).classify(both(45))
    assert decision.label is Emotion.OTHERS, decision.trace
    assert any("none of these AUs" in line for line in decision.trace)
    assert Classifier(protos).classify(both(9)).label is Emotion.DISGUST


# --- FACS decisions bind the prototypes of another dataset ----------------------------------


@pytest.mark.parametrize("aus", [(1, 2, 4, 5), (1, 2, 4, 5, 20, 26)])
def test_fear_brow_beats_cross_dataset_surprise(shipped: Classifier, aus: tuple[int, ...]) -> None:
    decision = shipped.classify(both(*aus))
    assert decision.label is Emotion.FEAR, decision.trace
    assert any("for surprise (scaled by" in line for line in decision.trace)
    scores = evaluate_rules(Evidence.from_activations(both(*aus))).scores()
    assert scores[Emotion.SADNESS] < 0.5 and scores[Emotion.ANGER] < 0.5  # 1+2+4 is neither sad nor angry


def test_anger_face_with_upper_lip_is_anger(shipped: Classifier, rules_only: Classifier) -> None:
    for classifier in (shipped, rules_only):
        decision = classifier.classify(both(4, 5, 7, 10, 22, 23, 25))
        assert decision.label is Emotion.ANGER, decision.trace
        assert any("EMFACS anger face" in line for line in decision.trace)


def test_one_sided_smile_with_dimpler_is_contempt() -> None:
    low = (AUActivation(AU(12), Side.RIGHT, 0.2), AUActivation(AU(14), Side.RIGHT, 0.2))
    for classifier in (Classifier(labels=SAMM_ALL), Classifier(use_prototypes=False)):
        assert classifier.classify(low).label is Emotion.CONTEMPT
    assert Classifier().classify((AUActivation(AU(12), Side.LEFT),)).label is Emotion.HAPPINESS


# --- the SAMM-notation fixture -------------------------------------------------------------


def test_fixture_rows_cite_their_source() -> None:
    table = read_labels(FIXTURE).checked()
    assert len(table.rows) >= 30 and len(table.subjects) >= 2
    present = {r.emotion for r in table.rows}
    assert present == set(SAMM_ALL)
    with FIXTURE.open(encoding="utf-8", newline="") as handle:
        notes = [row[9] for row in csv.reader(handle) if len(row) > 9][1:]
    assert len(notes) == len(table.rows) and all(notes)


@pytest.mark.parametrize("prototypes", [False, True], ids=["rules-only", "shipped-prototypes"])
def test_fixture_prototypes_classified_right(prototypes: bool) -> None:
    table = read_labels(FIXTURE).checked()
    labels = tuple(e for e in Emotion if e in {r.emotion for r in table.rows})
    classifier = Classifier(labels=labels, use_prototypes=prototypes)
    wrong = [(r.aus.text, r.emotion.value, d.label.value) for r in table.rows
             if (d := classifier.classify_readings(r.aus.readings())).label is not r.emotion]
    assert wrong == []


def test_fixture_at_trace_intensity_is_right_or_marked_for_the_reasoner() -> None:
    """Weaker expressions: every AU at A. The rules still name each one; with
    the CASME II prototypes an error is never a confident one."""
    table = read_labels(FIXTURE).checked()
    labels = tuple(e for e in Emotion if e in {r.emotion for r in table.rows})
    rules = Classifier(labels=labels, use_prototypes=False)
    shipped = Classifier(labels=labels)
    for row in table.rows:
        weak = tuple(AUActivation(a.au, a.side, 0.2) for a in row.aus.readings()[0])
        assert rules.classify(weak).label is row.emotion, row.aus.text
        decision = shipped.classify(weak)
        assert decision.label is row.emotion or decision.ambiguous, (row.aus.text, decision.trace)


def test_fixture_through_eval_all_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(FIXTURE), "--protocol", "all", "--prototypes", "shipped", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    protocol = report["protocols"]["all"]
    assert "repression" not in protocol["labels"] and {"anger", "contempt"} <= set(protocol["labels"])
    methods = protocol["methods"]
    assert methods["rules-only"]["accuracy"] == 1.0
    assert methods["classifier-fixed"]["accuracy"] == 1.0  # CASME II prototypes, SAMM labels
    assert methods["classifier"]["accuracy"] >= methods["naive-bayes"]["accuracy"]


def _samples(spec: dict[str, list[tuple[str, int]]]) -> list[Sample]:
    out: list[Sample] = []
    for emotion, configs in spec.items():
        for text, n in configs:
            out += [(parse_aus(text).readings(), Emotion(emotion))] * n
    return out


@pytest.mark.parametrize("aus", [(1, 2), (5,), (1, 2, 5)])
def test_brow_flash_and_widened_eyes_stay_surprise_where_others_is_a_label(aus: tuple[int, ...]) -> None:
    """A partial surprise display that every shared dataset calls surprise is
    not 'contested' by the rules' 'others' (which only says the partial
    pattern is weak): with SAMM's labels it stays surprise."""
    decision = Classifier(labels=SAMM_ALL).classify(both(*aus))
    assert decision.label is Emotion.SURPRISE, decision.trace


def test_lone_lowered_brow_is_still_contested_where_others_is_a_label() -> None:
    """No emotion pattern fits a lone AU4 at all, and the datasets disagree
    about it (CASME II others, CAS(ME)³ disgust): no confident label."""
    decision = Classifier(labels=SAMM_ALL).classify(both(4))
    assert decision.ambiguous
    assert decision.label is not Emotion.DISGUST


def test_a_confusion_pair_needs_both_labels() -> None:
    """Lowered brows with pressed lips are held back (repression) rather than
    anger where repression is a label; where it is not (SAMM), the pair has
    nothing to decide and the EMFACS anger reading stands."""
    ev = Evidence.from_activations(both(4, 24))
    result = evaluate_rules(ev)
    with_repression = result.scores(tuple(Emotion))
    without = result.scores(SAMM_ALL)
    assert without[Emotion.ANGER] > with_repression[Emotion.ANGER]
    assert Classifier(labels=SAMM_ALL).classify(both(4, 24)).label is Emotion.ANGER
    assert Classifier().classify(both(4, 24)).label is not Emotion.ANGER


def test_a_label_the_data_cannot_give_here_falls_back_on_the_base_rate_and_says_so() -> None:
    """Lip pressing alone fits no emotion pattern; the fitted data called it
    'others', which a label set like CAS(ME)³'s lacks. The rules have no
    opinion, so the freed probability follows how common each label was in
    the fitted data (not the enum's order), and the decision is marked."""
    protos = PrototypeSet.fit(_samples({"others": [("24", 12)], "disgust": [("9", 10), ("10", 8)],
                                        "surprise": [("1+2", 4)], "happiness": [("12", 3)]}))
    labels = (Emotion.HAPPINESS, Emotion.DISGUST, Emotion.SURPRISE, Emotion.FEAR)
    decision = Classifier(protos, labels=labels).classify(both(24))
    assert decision.label is Emotion.DISGUST, decision.trace
    assert decision.ambiguous
    assert any("base rate" in line for line in decision.trace), decision.trace


def test_when_facs_ties_two_emotions_thin_data_do_not_make_a_confident_label() -> None:
    """A lone inner-brow raise (AU1) is the surprise brow and the sad brow
    alike; four surprise rows against two sadness rows are no ground for a
    confident surprise, forty against two are."""
    labels = (Emotion.HAPPINESS, Emotion.SURPRISE, Emotion.SADNESS, Emotion.DISGUST)
    base = {"happiness": [("12", 10)], "disgust": [("9", 10)]}
    thin = PrototypeSet.fit(_samples({**base, "surprise": [("1", 4), ("1+2", 10)], "sadness": [("1", 2), ("15", 5)]}))
    plenty = PrototypeSet.fit(_samples({**base, "surprise": [("1", 40), ("1+2", 10)],
                                        "sadness": [("1", 2), ("15", 5)]}))
    unsure = Classifier(thin, labels=labels).classify(both(1))
    assert unsure.ambiguous and any("FACS cannot tell sadness from surprise" in line for line in unsure.trace)
    sure = Classifier(plenty, labels=labels).classify(both(1))
    assert sure.label is Emotion.SURPRISE
    assert not any("FACS cannot tell" in line for line in sure.trace), sure.trace

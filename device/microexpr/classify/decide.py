"""The decision: label, confidence, margin, deciding stage, readable trace.

``Classifier`` runs the stages on one AU set and combines them:

1. rules (``rules.py``) score each emotion 0..1 from FACS knowledge and may
   rule emotions out (crying is not happiness, contempt needs one side);
2. prototypes (``prototypes.py``) give a posterior q from fitted AU
   frequencies;
3. the subject context (``context.py``) has already lowered the weight of the
   subject's habitual AUs in the evidence both stages read.

The rules' scores become a distribution π = softmax(rule_sharpness · r) and
the two are mixed like a prior and data::

    p(e) = w · q(e) + (1 − w) · π(e),    w = (n + data_prior) / (n + data_prior + rule_prior · s)

where n is how many fitted episodes had exactly this AU configuration and s
is the score of the best matching FACS pattern (0 when no pattern fits: the
rules then abstain). A configuration the data knows well is decided by the
data (CASME II's "a lone AU17 is repression"); one it has never seen, by the
FACS patterns. Ruled-out emotions get nothing from either stage. Emotions
the prototypes were never fitted on (anger and contempt with the shipped
CASME II prototypes) share the prototypes' "others" mass in proportion to π,
because coders without such a label filed those episodes under "others".

A decision is **ambiguous** — sent to the reasoner, still labelled locally —
when its confidence is below ``ambiguous_confidence`` (default 0.45) or its
margin over the runner-up is below ``ambiguous_margin`` (default 0.15).

**Contested configurations.** Prototypes pooled over several datasets
(``PrototypeSet.pool``) know where their datasets disagree: a configuration
they label differently (a lone AU4: "others" in CASME II, "disgust" in
CAS(ME)³), or one where the pooled data contradict a firm FACS pattern
(AU4+AU7: "disgust" in CASME II and MMEW, the anger brow and lids in FACS).
There no dataset's convention may decide: when the rules lead by
``CONTESTED_RULES_LEAD`` the label is theirs alone (the FACS-grounded one,
at the rules' own, low, confidence), otherwise the prototypes count for at
most ``CONTESTED_DATA_WEIGHT``; the decision is always ambiguous (routed to
the reasoner), with the disagreement in the trace.

**Subject context never flips a clear decision.** A habitual AU may lower
the confidence of a decision; if the decision without the context was clear
(not ambiguous) its label stays (a clear smile is not turned into "others"
because the subject smiles a lot). Only an already ambiguous decision may be
settled by the context (stage ``context``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from microexpr.classify.context import SubjectContext
from microexpr.classify.evidence import Evidence
from microexpr.classify.prototypes import PrototypeScores, PrototypeSet, config_text
from microexpr.classify.rules import RuleResult, evaluate_rules
from microexpr.facs import AUActivation, Emotion

#: Chosen on the leave-one-dataset-out risk–coverage curve
#: (``benchmarks/risk_coverage.py``, benchmarks/results/eval/lodo/risk_coverage.md)
#: by the mean over the three shared tables: the smallest mean ambiguous share
#: whose mean confident accuracy reaches 0.85 (0.50 gave 0.843).
DEFAULT_AMBIGUOUS_CONFIDENCE = 0.45
DEFAULT_AMBIGUOUS_MARGIN = 0.15
#: Rule scores become a distribution by softmax(RULE_SHARPNESS · score): a
#: rule at 1.0 makes its emotion e^3 ≈ 20× as likely as one no rule supports.
DEFAULT_RULE_SHARPNESS = 3.0
#: A rule at full strength counts as this many episodes of evidence ...
DEFAULT_RULE_PRIOR = 4.0
#: ... against the fitted episodes with the same AU configuration plus this
#: many for the prototypes' AU-by-AU generalisation to unseen configurations.
DEFAULT_DATA_PRIOR = 2.0
#: Rules "decide" on their own when their best score reaches this and leads by
#: RULES_DECISIVE_LEAD (used to name the deciding stage, not to skip stages).
RULES_DECISIVE = 0.75
RULES_DECISIVE_LEAD = 0.25
#: A FACS pattern this strong contradicting the pooled data makes the
#: configuration contested (only for prototypes pooled over datasets).
FACS_FIRM = 0.4
#: ... and leading the data's label among the rules by this much.
CONFLICT_LEAD = 0.1
#: A contested configuration takes the rules' label when they lead by this.
CONTESTED_RULES_LEAD = 0.05
#: ... as long as the data saw the configuration this many times.
CONFLICT_MIN_SUPPORT = 3.0
#: Share of the prototypes in the mixture for a contested configuration.
CONTESTED_DATA_WEIGHT = 0.25


class Stage(StrEnum):
    """Which stage settled the label (payload field ``stage``)."""

    RULES = "rules"
    PROTOTYPE = "prototype"
    CONTEXT = "context"
    LLM = "llm"


@dataclass(frozen=True, slots=True)
class Decision:
    label: Emotion
    confidence: float  #: 0..1
    margin: float  #: confidence of the label minus that of the runner-up
    runner_up: Emotion | None
    stage: Stage
    scores: tuple[tuple[Emotion, float], ...]  #: every candidate, best first
    trace: tuple[str, ...]  #: sentences a person can read, in order
    ambiguous: bool  #: below the confidence/margin thresholds: ask the reasoner


@dataclass(frozen=True, slots=True)
class _Fused:
    probs: dict[Emotion, float]
    rules: RuleResult | None
    rule_scores: dict[Emotion, float]
    rule_probs: dict[Emotion, float]
    proto: PrototypeScores | None
    proto_probs: dict[Emotion, float]  #: the prototypes' own opinion over the candidates (stage, trace)
    candidates: tuple[Emotion, ...]
    data_weight: float  #: share of the prototypes in the mixture
    #: Prototype probability the FACS decisions took away, per emotion, and
    #: why ("not a label", "ruled out", "scaled down"): handed on as π says.
    moved: tuple[tuple[Emotion, float, str], ...] = ()
    #: None of the episode's AUs was in the prototypes' fitted data.
    unknown_aus: bool = False
    #: Why the configuration is contested (the pooled datasets disagree), or None.
    contest: str | None = None
    #: Most of the prototypes' opinion went to labels not allowed here and the
    #: rules had none: the label is a base rate, not a reading of the AUs.
    base_rate: bool = False

    @property
    def ranked(self) -> list[tuple[Emotion, float]]:
        return sorted(self.probs.items(), key=lambda kv: (-kv[1], _ORDER[kv[0]]))

    @property
    def label(self) -> Emotion:
        return self.ranked[0][0]


_ORDER = {e: i for i, e in enumerate(Emotion)}


def _wilson_lower(k: float, n: float, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval for a proportion k/n."""
    if n <= 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def _count_text(n: float) -> str:
    return f"{n:.0f}" if abs(n - round(n)) < 0.05 else f"{n:.1f}"


def _share_others(
    q: dict[Emotion, float], pi: dict[Emotion, float], candidates: Sequence[Emotion]
) -> dict[Emotion, float]:
    """Spread the prototypes' "others" over emotions they were never fitted on.

    Coders who could not say "contempt" (CASME II has no such label) filed
    contempt under "others"; so for prototypes fitted without an emotion,
    their "others" probability is really "others or that emotion". It is
    split in proportion to the rules' opinion. Without a fitted "others"
    (tables such as CAS(ME)³ part A or MMEW as distributed, which have none)
    the prototypes' opinion holds only *given* a label they know: the
    unfitted candidates ("others" itself, CASME II's "repression") take their
    share of π and the fitted ones keep the rest.
    """
    unfitted = [e for e in candidates if e not in q]
    if not unfitted:
        return q
    if Emotion.OTHERS not in q:
        unknown = min(1.0, sum(pi.get(e, 0.0) for e in unfitted))
        total = sum(q.values())
        out = {e: v * (1.0 - unknown) for e, v in q.items()}
        for e in unfitted:
            out[e] = total * pi.get(e, 0.0)
        return out
    pool = [Emotion.OTHERS, *unfitted]
    weight = sum(pi.get(e, 0.0) for e in pool)
    if weight <= 0.0:
        return q
    out = {e: v for e, v in q.items() if e is not Emotion.OTHERS}
    for e in pool:
        out[e] = q[Emotion.OTHERS] * pi.get(e, 0.0) / weight
    return out


def _hand_on(
    posterior: dict[Emotion, float],
    rules: RuleResult,
    pi: dict[Emotion, float],
    candidates: Sequence[Emotion],
    shares: Mapping[Emotion, float] | None = None,
) -> tuple[dict[Emotion, float], tuple[tuple[Emotion, float, str], ...], bool]:
    """The prototypes' posterior after the FACS decisions, as the mixture uses it.

    The prototypes' probability for an emotion that is not a label here (a
    CASME II "repression" scored for SAMM's labels), that a rule ruled out
    (crying is not happiness) or that a confusion pair scaled down (AU4 with
    raised brows is fear, not surprise) is not renormalised over the other
    fitted emotions: their ratios say nothing about where it belongs (a lone
    AU15 would go to whatever else CASME II coders saw AU15 in). It is handed
    on to the candidates in proportion to the rules' opinion π. What the
    prototypes keep is shared with the emotions they were never fitted on as
    in ``_share_others``. When the rules have no opinion among the
    candidates (π is flat: no pattern fits and "others" is no label here),
    π says nothing either, and what is freed follows ``shares``, how common
    each candidate was in the fitted data, as any base rate would.
    """
    flat = bool(shares) and bool(pi) and max(pi.values()) - min(pi.values()) <= 1e-9
    if flat:
        known = {e: (shares or {}).get(e, 0.0) for e in candidates}
        if sum(known.values()) > 0.0:
            pi = {e: v / sum(known.values()) for e, v in known.items()}
    kept: dict[Emotion, float] = {}
    moved: list[tuple[Emotion, float, str]] = []
    allowed = set(candidates)
    for emotion, p in posterior.items():
        factor = rules.factor(emotion, allowed) if emotion in allowed else 0.0
        kept[emotion] = p * factor
        if p * (1.0 - factor) >= 0.005:
            why = ("not a label here" if emotion not in allowed and emotion not in rules.vetoed
                   else "ruled out" if factor <= 0.0 else f"scaled by {factor:.2f}")
            moved.append((emotion, p * (1.0 - factor), why))
    freed = max(0.0, sum(posterior.values()) - sum(kept.values()))
    base_rate = flat and freed > 0.5 * sum(posterior.values())
    kept = _share_others({e: v for e, v in kept.items() if e in allowed}, pi, candidates)
    out = {e: kept.get(e, 0.0) + freed * pi.get(e, 0.0) for e in candidates}
    total = sum(out.values())
    if total > 0:
        out = {e: v / total for e, v in out.items()}
    return out, tuple(sorted(moved, key=lambda m: -m[1])), base_rate


def _unavailable(emotion: Emotion, fused: _Fused) -> str:
    if emotion in fused.candidates:
        return ""
    if fused.rules is not None and emotion in fused.rules.vetoed:
        return " (ruled out)"
    return " (not a label here)"


class Classifier:
    """Rules → prototypes → subject context → ``Decision``, for one AU set.

    ``prototypes=None`` loads the shipped set (fitted on CASME II).
    ``labels`` restricts the output to a protocol's label set, e.g. the
    5-class CASME II protocol. ``use_rules``/``use_prototypes`` switch a
    stage off (the evaluation's per-stage rows).
    """

    def __init__(
        self,
        prototypes: PrototypeSet | None = None,
        *,
        ambiguous_confidence: float = DEFAULT_AMBIGUOUS_CONFIDENCE,
        ambiguous_margin: float = DEFAULT_AMBIGUOUS_MARGIN,
        labels: Collection[Emotion] | None = None,
        rule_sharpness: float = DEFAULT_RULE_SHARPNESS,
        rule_prior: float = DEFAULT_RULE_PRIOR,
        data_prior: float = DEFAULT_DATA_PRIOR,
        use_rules: bool = True,
        use_prototypes: bool = True,
    ) -> None:
        if not (use_rules or use_prototypes):
            raise ValueError("at least one of the rules and prototypes stages must be on")
        if not 0.0 <= ambiguous_confidence <= 1.0 or not 0.0 <= ambiguous_margin <= 1.0:
            raise ValueError("ambiguous_confidence and ambiguous_margin must be in 0..1")
        self.prototypes: PrototypeSet | None = None
        if use_prototypes:
            self.prototypes = prototypes if prototypes is not None else PrototypeSet.load_default()
        #: Fitted episodes per emotion: the base rate ``_hand_on`` falls back on.
        self._class_counts: dict[Emotion, float] = (
            {e: c.count for e, c in self.prototypes.classes.items()} if self.prototypes is not None else {})
        self.labels: tuple[Emotion, ...] = tuple(e for e in Emotion if labels is None or e in set(labels))
        if not self.labels:
            raise ValueError("labels must name at least one emotion")
        self.ambiguous_confidence = float(ambiguous_confidence)
        self.ambiguous_margin = float(ambiguous_margin)
        if rule_sharpness < 0 or rule_prior <= 0 or data_prior < 0:
            raise ValueError("rule_sharpness and data_prior must be >= 0, rule_prior > 0")
        self.rule_sharpness = float(rule_sharpness)
        self.rule_prior = float(rule_prior)
        self.data_prior = float(data_prior)
        self.use_rules = use_rules

    # -- public ------------------------------------------------------------------

    def classify(self, activations: Sequence[AUActivation], context: SubjectContext | None = None) -> Decision:
        ev = Evidence.from_activations(activations, context)
        fused = self._fuse(ev)
        if context is None or not any(u.habitual < 1.0 for u in ev.units.values()):
            return self._decision(ev, fused, context, None, None)
        plain_ev = Evidence.from_activations(activations)
        plain = self._decision(plain_ev, self._fuse(plain_ev), None, None, None)
        if plain.label is fused.label:
            return self._decision(ev, fused, context, None, None)
        if plain.ambiguous:
            # Unclear without the context: the subject's habits may settle it.
            return self._decision(ev, fused, context, Stage.CONTEXT, plain.label)
        return self._kept_despite_context(plain, ev, fused, context)

    def _kept_despite_context(self, plain: Decision, ev: Evidence, fused: _Fused,
                              context: SubjectContext) -> Decision:
        """A clear decision keeps its label under the subject context; only its
        confidence drops to what the label keeps once the habitual AUs weigh less."""
        with_context = dict(fused.ranked)
        confidence = min(plain.confidence, with_context.get(plain.label, 0.0))
        rivals = [(e, p) for e, p in fused.ranked if e is not plain.label]
        runner_up, second = rivals[0] if rivals else (None, 0.0)
        margin = max(0.0, confidence - second)
        ambiguous = confidence < self.ambiguous_confidence or margin < self.ambiguous_margin
        habitual = "; ".join(f"AU{u.au.value} weighs {u.habitual:.2f}" for u in ev.units.values() if u.habitual < 1.0)
        note = (f"subject context ({habitual}) would favour {fused.label.value}, but the decision without it was "
                f"clear: {plain.label.value} kept, confidence {plain.confidence:.2f} → {confidence:.2f}")
        trace = [*plain.trace, note]
        if ambiguous and not plain.ambiguous:
            trace.append("ambiguous after the subject context: marked for the reasoner")
        scores = tuple(sorted(((e, round(confidence if e is plain.label else p, 4)) for e, p in fused.ranked),
                              key=lambda kv: (-kv[1], _ORDER[kv[0]])))
        return dataclasses.replace(plain, confidence=round(confidence, 4), margin=round(margin, 4),
                                   runner_up=runner_up, scores=scores, trace=tuple(trace),
                                   ambiguous=plain.ambiguous or ambiguous)

    def classify_readings(
        self, readings: Sequence[Sequence[AUActivation]], context: SubjectContext | None = None
    ) -> Decision:
        """Classify a row coded with alternatives ("R6 or R12"): score every
        reading and keep the one the classifier is most confident about."""
        if not readings:
            raise ValueError("no readings to classify")
        if len(readings) == 1:
            return self.classify(readings[0], context)
        decisions = [self.classify(r, context) for r in readings]
        best_index = max(range(len(decisions)), key=lambda i: (decisions[i].confidence, -i))
        best = decisions[best_index]
        others = sorted({d.label.value for i, d in enumerate(decisions) if i != best_index})
        note = (
            f"coded with alternatives: scored {len(readings)} readings, kept reading {best_index + 1} "
            f"({best.label.value}, confidence {best.confidence:.2f})"
            + (f"; other readings gave {', '.join(others)}" if others else "")
        )
        return dataclasses.replace(best, trace=(note, *best.trace))

    # -- stages --------------------------------------------------------------------

    def _fuse(self, ev: Evidence) -> _Fused:
        rules = evaluate_rules(ev) if self.use_rules else None
        vetoed = rules.vetoed if rules is not None else frozenset()
        candidates = tuple(e for e in self.labels if e not in vetoed) or self.labels
        rule_scores = rules.scores(candidates) if rules is not None else {}
        # The rules' opinion as a distribution: softmax of rule_sharpness · score.
        pi: dict[Emotion, float] = {}
        if rules is not None:
            logits = {e: self.rule_sharpness * rule_scores.get(e, 0.0) for e in candidates}
            top = max(logits.values())
            exp = {e: math.exp(v - top) for e, v in logits.items()}
            norm = sum(exp.values())
            pi = {e: v / norm for e, v in exp.items()}
        proto: PrototypeScores | None = None
        q: dict[Emotion, float] = {}
        moved: tuple[tuple[Emotion, float, str], ...] = ()
        unknown = False
        contest: str | None = None
        base_rate = False
        if self.prototypes is not None:
            # With the rules on, scored over every fitted emotion so that the
            # FACS decisions can hand on what they take away (``_hand_on``);
            # q is the prototypes' own opinion among the candidates.
            proto = self.prototypes.score(ev, None if rules is not None else self.labels)
            kept = {e: proto.posterior[e] for e in candidates if e in proto.posterior}
            total = sum(kept.values())
            q = {e: v / total for e, v in kept.items()} if total > 0 else kept
        if not pi:
            data_weight = 1.0
            probs = {e: q.get(e, 0.0) for e in candidates}
        elif not q:
            data_weight = 0.0
            probs = dict(pi)
        else:
            q = _share_others(q, pi, candidates)
            assert rules is not None and proto is not None
            q_mix, moved, base_rate = _hand_on(dict(proto.posterior), rules, pi, candidates, self._class_counts)
            # Rules are a prior worth `rule_prior` episodes at full strength;
            # the prototypes count for the fitted episodes with exactly this
            # configuration plus `data_prior` for their AU-by-AU generalisation.
            support = proto.support
            pattern = max((v for e, v in rule_scores.items() if e is not Emotion.OTHERS), default=0.0)
            data_prior = self.data_prior
            unknown = self.prototypes is not None and not any(au in self.prototypes.features for au in ev.units)
            if unknown:
                # None of these AUs was in the fitted data: the prototypes
                # know only how common each label was, nothing to generalise
                # from. Then the rules' "no emotion pattern fits" (others)
                # speaks rather than the commonest fitted label.
                data_prior = 0.0
                pattern = max(rule_scores.values(), default=0.0)
            if Emotion.OTHERS in candidates and Emotion.OTHERS not in self.prototypes.classes:
                # Fitted on tables without "others" (CAS(ME)³ part A, MMEW as
                # distributed), the prototypes cannot say "none of these":
                # the rules' "others" speaks for them.
                pattern = max(rule_scores.values(), default=0.0)
            rule_prior = self.rule_prior * pattern
            denominator = support + data_prior + rule_prior
            data_weight = (support + data_prior) / denominator if denominator > 0 else 1.0
            contest = self._contest(proto, rule_scores, q_mix, candidates)
            if contest is not None:
                # No dataset's convention decides: the FACS-grounded label
                # does; the data only break a tie among the rules.
                ranked_rules = sorted(rule_scores.values(), reverse=True)
                lead = ranked_rules[0] - (ranked_rules[1] if len(ranked_rules) > 1 else 0.0)
                data_weight = 0.0 if lead >= CONTESTED_RULES_LEAD else min(data_weight, CONTESTED_DATA_WEIGHT)
            probs = {e: data_weight * q_mix.get(e, 0.0) + (1.0 - data_weight) * pi[e] for e in candidates}
        norm = sum(probs.values()) or 1.0
        probs = {e: v / norm for e, v in probs.items()}
        return _Fused(probs, rules, rule_scores, pi, proto, q, candidates, data_weight, moved, unknown, contest,
                      base_rate)

    @staticmethod
    def _unknown_to_both(fused: _Fused) -> bool:
        """No FACS pattern among the allowed labels (not even "others": the
        label set has none) and a configuration the fitted data never saw:
        the label is the prototypes' AU-by-AU extrapolation alone, which is
        no ground for a confident decision."""
        return (fused.rules is not None and fused.proto is not None and fused.proto.support <= 0.0
                and bool(fused.proto.key) and max(fused.rule_scores.values(), default=0.0) <= 0.0)

    @staticmethod
    def _rules_tie_data_unsure(fused: _Fused, label: Emotion) -> str | None:
        """FACS reads the AUs as two emotions equally (a lone AU1 is the inner
        brow of surprise and of sadness), so the label rests on the data; it
        is confident only if the data say it more often than not with 95 %
        confidence (Wilson lower bound of its share of this configuration's
        fitted episodes above 1/2). Otherwise the reason, for the trace."""
        if fused.rules is None or fused.proto is None:
            return None
        emotions = sorted(((v, e) for e, v in fused.rule_scores.items() if e is not Emotion.OTHERS and v > 0.0),
                          key=lambda ve: (-ve[0], _ORDER[ve[1]]))
        if len(emotions) < 2 or emotions[0][0] - emotions[1][0] >= CONFLICT_LEAD:
            return None
        tied = {e for _v, e in emotions[:2]}
        if label not in tied:
            return None
        seen = {e: n for e, n in fused.proto.seen.items() if e in fused.candidates}
        k, n = seen.get(label, 0.0), sum(seen.values())
        if n > 0 and _wilson_lower(k, n) > 0.5:
            return None
        a, b = sorted(e.value for e in tied)
        return (f"FACS cannot tell {a} from {b} here and the fitted data do not settle it "
                f"({_count_text(k)} of {_count_text(n)} episodes with these AUs)")

    def _contest(self, proto: PrototypeScores, rule_scores: dict[Emotion, float], q_mix: dict[Emotion, float],
                 candidates: Sequence[Emotion]) -> str | None:
        """Why this configuration is contested, for prototypes pooled over datasets."""
        if self.prototypes is None or len(self.prototypes.components) < 2:
            return None
        disagreement = self.prototypes.contest(proto.key)
        if disagreement is not None:
            return f"the datasets label {config_text(proto.key)} differently ({disagreement})"
        if not q_mix or not rule_scores:
            return None
        facs, strength = max(rule_scores.items(), key=lambda kv: (kv[1], -_ORDER[kv[0]]))
        data = max(q_mix.items(), key=lambda kv: (kv[1], -_ORDER[kv[0]]))[0]
        if facs is Emotion.OTHERS and any(v > 0.0 for e, v in rule_scores.items() if e is not Emotion.OTHERS):
            # "Others" leads only because the emotion patterns that fit are
            # partial ones (a brow flash, AU1+AU2, is surprise at 0.30): the
            # data choose among them. Only "no pattern fits at all" (a lone
            # AU4) stands against a dataset's convention.
            return None
        if strength < FACS_FIRM or data is facs or strength - rule_scores.get(data, 0.0) < CONFLICT_LEAD:
            return None
        what = "no FACS emotion pattern fits" if facs is Emotion.OTHERS else f"FACS reads it as {facs.value}"
        if proto.support < CONFLICT_MIN_SUPPORT:
            # Barely or never seen: the datasets' AU-by-AU extrapolation
            # carries their conventions for its parts (AU4+AU7+AU43 inherits
            # CASME II's "AU4+AU7 is disgust"); it does not outvote FACS.
            return (f"{what} ({facs.value} {strength:.2f}); the pooled datasets saw {config_text(proto.key)} "
                    f"{proto.support:.0f} time(s) and extrapolate {data.value} from its parts")
        seen = ", ".join(f"{e.value} {n:.0f}" for e, n in sorted(proto.seen.items(), key=lambda kv: -kv[1]) if n > 0)
        return (f"{what} ({facs.value} {strength:.2f}), while the pooled datasets say {data.value} for "
                f"{config_text(proto.key)} (seen {seen})")

    # -- the decision and its trace ----------------------------------------------------

    def _decision(
        self,
        ev: Evidence,
        fused: _Fused,
        context: SubjectContext | None,
        stage_override: Stage | None,
        before: Emotion | None,
    ) -> Decision:
        ranked = fused.ranked
        label, confidence = ranked[0]
        runner_up, second = ranked[1] if len(ranked) > 1 else (None, 0.0)
        margin = confidence - second
        rules_ranked = sorted(fused.rule_scores.items(), key=lambda kv: (-kv[1], _ORDER[kv[0]]))
        rules_top = rules_ranked[0][0] if rules_ranked else None
        rules_decisive = bool(rules_ranked) and rules_ranked[0][1] >= RULES_DECISIVE and (
            len(rules_ranked) < 2 or rules_ranked[0][1] - rules_ranked[1][1] >= RULES_DECISIVE_LEAD
        )
        proto_top = None
        if fused.proto is not None and fused.rules is not None and fused.proto.posterior:
            # The prototypes' own favourite, even when it is not a label here
            # or a rule ruled it out: then the rules overruled them.
            proto_top = max(fused.proto.posterior.items(), key=lambda kv: (kv[1], -_ORDER[kv[0]]))[0]
        elif fused.proto_probs:
            proto_top = max(fused.proto_probs.items(), key=lambda kv: (kv[1], -_ORDER[kv[0]]))[0]
        if stage_override is not None:
            stage = stage_override
        elif fused.rules is None:
            stage = Stage.PROTOTYPE
        elif fused.proto is None or fused.data_weight <= 0.0:
            stage = Stage.RULES
        elif label is rules_top and (rules_decisive or label is not proto_top):
            stage = Stage.RULES
        else:
            stage = Stage.PROTOTYPE
        undecided = self._rules_tie_data_unsure(fused, label)
        ambiguous = (confidence < self.ambiguous_confidence or margin < self.ambiguous_margin
                     or fused.contest is not None or self._unknown_to_both(fused) or fused.base_rate
                     or undecided is not None)
        trace = self._trace(ev, fused, context, label, confidence, runner_up, margin, stage, rules_top, proto_top,
                            before, ambiguous, undecided)
        return Decision(
            label=label,
            confidence=round(confidence, 4),
            margin=round(margin, 4),
            runner_up=runner_up,
            stage=stage,
            scores=tuple((e, round(p, 4)) for e, p in ranked),
            trace=tuple(trace),
            ambiguous=ambiguous,
        )

    def _trace(
        self,
        ev: Evidence,
        fused: _Fused,
        context: SubjectContext | None,
        label: Emotion,
        confidence: float,
        runner_up: Emotion | None,
        margin: float,
        stage: Stage,
        rules_top: Emotion | None,
        proto_top: Emotion | None,
        before: Emotion | None,
        ambiguous: bool,
        undecided: str | None,
    ) -> list[str]:
        lines = [f"evidence: {ev.describe()}"]
        weak = [u for u in ev.units.values() if u.habitual >= 1.0 and u.weight < 0.99]
        if weak:
            lines[0] += " (weak: " + ", ".join(f"AU{u.au.value} {u.weight:.2f}" for u in weak) + ")"
        habitual = [u for u in ev.units.values() if u.habitual < 1.0]
        if habitual and context is not None:
            lines.append("subject context: " + "; ".join(
                f"AU{u.au.value} weighs {u.habitual:.2f} (active in {context.rate(u.au):.0%} of this subject's "
                "frames outside episodes)" for u in habitual))
        if fused.rules is not None:
            allowed = set(fused.candidates)
            hits = [h for h in fused.rules.hits if h.emotion in allowed]
            best_per_emotion: dict[Emotion, str] = {}
            for h in hits:
                best_per_emotion.setdefault(h.emotion, f"{h.emotion.value} {fused.rule_scores.get(h.emotion, 0):.2f} "
                                                       f"({h.reason})")
            if best_per_emotion:
                lines.append("rules: " + "; ".join(list(best_per_emotion.values())[:3]))
            else:
                lines.append("rules: no FACS emotion pattern among the allowed labels matched")
            hit = {h.emotion for h in fused.rules.hits}
            favoured = set()
            if fused.proto is not None:
                favoured = {e for e, _p in fused.proto.ranked()[:2]}
            for adj in fused.rules.applied(self.labels):
                # Only the pair decisions that mattered: the emotion had a rule
                # for it, or the prototypes favoured an emotion now ruled out.
                mattered = adj.emotion in hit or (adj.factor <= 0.0 and adj.emotion in favoured)
                if adj.emotion in self.labels and mattered:
                    lines.append(adj.reason)
        if fused.proto is not None:
            lines.append(fused.proto.explain())
            if fused.moved:
                lines.append("handed on as the rules see it: " + ", ".join(
                    f"the prototypes' {p:.2f} for {e.value} ({why})" for e, p, why in fused.moved[:3]))
        if fused.rules is not None and fused.proto is not None:
            why_weights = ("none of these AUs is in the fitted data: the prototypes know only how common each "
                           "label was" if fused.unknown_aus else
                           "the rules count for less the more often the fitted data saw this configuration")
            lines.append(f"weights: prototypes {fused.data_weight:.2f}, rules {1.0 - fused.data_weight:.2f} "
                         f"({why_weights})")
        if stage is Stage.CONTEXT and before is not None:
            why = f"the subject's habitual AUs weigh less, so {label.value} replaces {before.value}"
        elif rules_top is not None and proto_top is not None and rules_top is proto_top:
            why = "rules and prototypes agree"
        elif stage is Stage.RULES and fused.rules is not None:
            reasons = fused.rules.reasons_for(label)
            pattern = reasons[0] if reasons else "no emotion pattern fits"
            why = f"the FACS pattern ({pattern}) outweighs the prototypes" + (
                f"' preference for {proto_top.value}" + _unavailable(proto_top, fused)
                if proto_top is not None and proto_top is not label else "")
        elif fused.rules is not None and rules_top is not None and rules_top is not label:
            why = f"the fitted prototypes outweigh the rules' preference for {rules_top.value}"
        else:
            why = f"decided by the {stage.value} stage"
        versus = f" over {runner_up.value}" if runner_up is not None else ""
        lines.append(f"→ {label.value}{versus} (confidence {confidence:.2f}, margin {margin:.2f}, "
                     f"stage {stage.value}): {why}")
        if fused.contest is not None:
            lines.append(f"contested: {fused.contest}; no dataset's convention decides (the FACS label; the "
                         f"prototypes weigh {fused.data_weight:.2f})")
        if ambiguous:
            low = []
            if fused.contest is not None:
                low.append("contested configuration")
            if self._unknown_to_both(fused):
                low.append("neither a FACS pattern nor the fitted data know this configuration")
            if fused.base_rate:
                low.append("the fitted data's label for it is no label here and no FACS pattern fits: a base rate")
            if undecided is not None:
                low.append(undecided)
            if confidence < self.ambiguous_confidence:
                low.append(f"confidence {confidence:.2f} < {self.ambiguous_confidence:.2f}")
            if margin < self.ambiguous_margin:
                low.append(f"margin {margin:.2f} < {self.ambiguous_margin:.2f}")
            lines.append("ambiguous (" + ", ".join(low) + "): marked for the reasoner")
        return lines

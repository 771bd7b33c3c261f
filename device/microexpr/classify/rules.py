"""Stage 1: FACS rules — expert knowledge, no fitting.

Every rule is grounded in the FACS/EMFACS literature, not in any dataset:
the EMFACS emotion prototypes and major variants (Friesen & Ekman 1983, as
tabulated in Ekman, Friesen & Hager, *FACS Investigator's Guide*, 2002), the
contempt studies of Ekman & Friesen (1986) and Matsumoto (1992) for
laterality, and the emotion→AU table of the paper this project implements
(Sălăgean et al. 2025; see ``docs/classification.md`` for where we differ
from it and why).

A rule fires with a score in 0..1: its base confidence times the soft AND of
the AUs it needs (``Evidence.all_of``), so a trace AU or a subject's habitual
AU fires it more weakly. Confusion-pair rules are *adjustments*: they scale
one emotion down (factor 0 = ruled out) with a reason a person can read.
Dataset conventions (what CASME II calls "repression", what its coders put
under "others") are learned by the prototypes stage, never written here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from microexpr.classify.evidence import Evidence
from microexpr.facs import AU, Emotion

#: Rules below this score are not reported (they are noise in a trace).
MIN_SCORE = 0.05
#: "others" when nothing matches: the score of an AU set no rule explains.
OTHERS_BASE = 0.6
#: Crying cues that rule happiness out when they come with AU12 (see ``_crying``).
CRYING_CUES: tuple[tuple[AU, str], ...] = (
    (AU.INNER_BROW_RAISER, "inner brows raised (AU1)"),
    (AU.BROW_LOWERER, "brows lowered (AU4)"),
    (AU.LIP_CORNER_DEPRESSOR, "lip corners pulled down (AU15)"),
    (AU.CHIN_RAISER, "chin raised (AU17)"),
    (AU.EYES_CLOSED, "eyes closed (AU43)"),
)
#: AUs that tighten or hold the lips and chin: the face of suppression.
CONTROL_AUS = (AU.LIP_CORNER_DEPRESSOR, AU.CHIN_RAISER, AU.LIP_TIGHTENER, AU.LIP_PRESSOR)
#: FACS intensities as the parser and the AU stage give them: B and C.
INTENSITY_B = 0.4
INTENSITY_C = 0.6
#: Mouth actions a strong lip-corner pull brings along in a broad smile.
SMILE_COMPANIONS: tuple[tuple[AU, str], ...] = (
    (AU.UPPER_LIP_RAISER, "upper lip raised (AU10)"),
    (AU.LIPS_PART, "lips parted (AU25)"),
    (AU.JAW_DROP, "jaw dropped (AU26)"),
)


@dataclass(frozen=True, slots=True)
class RuleHit:
    rule: str  #: short id, e.g. "happiness.felt-smile"
    emotion: Emotion
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A confusion-pair decision: multiply ``emotion``'s score by ``factor``.

    ``favours`` is the other side of the pair, when there is one: a pair
    decides between two labels, so where the label set has no ``favours``
    (SAMM has no "repression", CASME II no "anger") there is nothing to
    decide and the adjustment does not apply."""

    rule: str
    emotion: Emotion
    factor: float  #: 0 rules the emotion out
    reason: str
    favours: Emotion | None = None

    def applies(self, labels: Collection[Emotion] | None) -> bool:
        return labels is None or self.favours is None or self.favours in labels


@dataclass(frozen=True, slots=True)
class RuleResult:
    hits: tuple[RuleHit, ...]
    adjustments: tuple[Adjustment, ...]
    #: Best hit per emotion after adjustments (others not included).
    raw: Mapping[Emotion, float] = field(default_factory=dict)

    @property
    def vetoed(self) -> frozenset[Emotion]:
        return frozenset(a.emotion for a in self.adjustments if a.factor <= 0.0)

    def factor(self, emotion: Emotion, labels: Collection[Emotion] | None = None) -> float:
        """The product of the adjustments' factors for ``emotion`` (1 if none)
        that apply to the label set."""
        out = 1.0
        for a in self.adjustments:
            if a.emotion is emotion and a.applies(labels):
                out *= a.factor
        return out

    def applied(self, labels: Collection[Emotion] | None = None) -> tuple[Adjustment, ...]:
        """The adjustments that apply to the label set."""
        return tuple(a for a in self.adjustments if a.applies(labels))

    def scores(self, labels: Collection[Emotion] | None = None) -> dict[Emotion, float]:
        """Score per allowed label; "others" = how little the allowed emotions explain."""
        allowed = set(Emotion) if labels is None else set(labels)
        applied = self.applied(allowed)
        raw = self.raw if len(applied) == len(self.adjustments) else _best(self.hits, applied)
        out = {e: raw.get(e, 0.0) for e in Emotion if e in allowed and e is not Emotion.OTHERS}
        if Emotion.OTHERS in allowed:
            best = max(out.values(), default=0.0)
            out[Emotion.OTHERS] = OTHERS_BASE * (1.0 - best)
        return out

    def reasons_for(self, emotion: Emotion) -> list[str]:
        return [h.reason for h in self.hits if h.emotion is emotion]


class _Collector:
    def __init__(self, ev: Evidence) -> None:
        self.ev = ev
        self.hits: list[RuleHit] = []
        self.adjustments: list[Adjustment] = []

    def hit(self, rule: str, emotion: Emotion, base: float, strength: float, reason: str) -> None:
        score = base * max(0.0, min(1.0, strength))
        if score >= MIN_SCORE:
            self.hits.append(RuleHit(rule, emotion, round(score, 4), reason))

    def adjust(self, rule: str, emotion: Emotion, factor: float, reason: str,
               favours: Emotion | None = None) -> None:
        factor = max(0.0, min(1.0, factor))
        if factor < 0.999:
            self.adjustments.append(Adjustment(rule, emotion, round(factor, 4), reason, favours))


def _best(hits: Iterable[RuleHit], adjustments: Iterable[Adjustment]) -> dict[Emotion, float]:
    """Best hit per emotion, scaled by the adjustments."""
    raw: dict[Emotion, float] = {}
    for h in hits:
        raw[h.emotion] = max(raw.get(h.emotion, 0.0), h.score)
    for a in adjustments:
        if a.emotion in raw:
            raw[a.emotion] *= a.factor
    return raw


def evaluate_rules(ev: Evidence) -> RuleResult:
    """Run every rule on one episode's evidence."""
    c = _Collector(ev)
    for rule_group in (_happiness, _surprise, _fear, _sadness, _disgust, _anger, _contempt, _repression):
        rule_group(c)
    for discriminator in (_fear_vs_surprise, _fear_vs_anger, _disgust_vs_sadness, _smile_companions,
                          _anger_not_disgust, _repression_vs_anger, _sadness_vs_repression,
                          _contempt_needs_one_side, _contempt_not_smile, _crying, _happiness_needs_smile):
        discriminator(c)
    return RuleResult(tuple(sorted(c.hits, key=lambda h: -h.score)), tuple(c.adjustments),
                      _best(c.hits, c.adjustments))


# --- emotion prototypes (EMFACS) ------------------------------------------------


def _ramp(value: float, low: float, high: float) -> float:
    """0 at or below ``low``, 1 at or above ``high``, linear between."""
    return max(0.0, min(1.0, (value - low) / (high - low)))


def _happiness(c: _Collector) -> None:
    ev = c.ev
    c.hit("happiness.felt-smile", Emotion.HAPPINESS, 0.9, ev.all_of(6, 12),
          "AU6+AU12: cheeks raised with the lip corners pulled up, the felt (Duchenne) smile")
    bilateral_12 = ev.w(12) - ev.one_sided(12)
    c.hit("happiness.smile", Emotion.HAPPINESS, 0.75, bilateral_12,
          "AU12: lip corners pulled up on both sides, a smile")
    # EMFACS lists a strong AU12 (C or D) on its own as a happiness
    # prototype; a coded AU without a letter counts as strong. A pull that
    # strong lifts the upper lip and parts the lips (FACS 1978 joy: 6+12+25).
    strong = _ramp(ev.intensity(12), INTENSITY_B, INTENSITY_C)
    companions = [text for au, text in SMILE_COMPANIONS if ev.present(au)]
    c.hit("happiness.broad-smile", Emotion.HAPPINESS, 0.9, bilateral_12 * strong,
          "AU12 at C or stronger on both sides: the EMFACS smile (12C/D)"
          + (", with " + " and ".join(companions) + " from the strong pull" if companions else ""))
    c.hit("happiness.one-sided-smile", Emotion.HAPPINESS, 0.6, ev.one_sided(12),
          "AU12 on one side: a smile, though one-sided smiles can also be contempt")


def _surprise(c: _Collector) -> None:
    ev = c.ev
    brows = ev.all_of(1, 2)
    opening = ev.any_of(5, 25, 26, 27)
    c.hit("surprise.full", Emotion.SURPRISE, 0.9, min(brows, opening),
          "AU1+AU2 with the eyes or mouth opening (AU5/AU25/AU26/AU27): the surprise prototype")
    # EMFACS surprise is 1+2 with 5B and/or 26/27; the brows alone are a
    # partial display and the commonest conversational signal (emphasis,
    # questioning, greeting: Ekman 1979, "About brows"), so weak on their own.
    c.hit("surprise.brows", Emotion.SURPRISE, 0.3 + 0.5 * ev.any_of(5, 25, 26, 27), brows,
          "AU1+AU2: inner and outer brows raised together (without AU5/AU26/AU27 a partial display, often a "
          "conversational brow flash)")
    c.hit("surprise.eyes-jaw", Emotion.SURPRISE, 0.75, ev.all_of(5) * ev.any_of(26, 27),
          "AU5 with AU26/AU27: eyes widened and jaw dropped")
    # The widened eyes alone are the eyes-only partial surprise, brief
    # "momentary" surprise (Ekman & Friesen 1975, ch. 4); with AU4 or AU7
    # the same lids belong to the fear or anger glare instead.
    c.hit("surprise.eyes", Emotion.SURPRISE, 0.35, min(ev.w(5), ev.none_of(1, 2, 4, 7, 26, 27)),
          "AU5: upper lids raised, the surprise eyes (a partial display, weak on its own)")
    # One brow action alone is weaker still (and counted only without the other).
    c.hit("surprise.outer-brow", Emotion.SURPRISE, 0.3, min(ev.w(2), ev.none_of(1)), "AU2: outer brow raised")
    c.hit("surprise.inner-brow", Emotion.SURPRISE, 0.35, min(ev.w(1), ev.none_of(2)),
          "AU1: inner brow raised (surprise or sadness brow)")
    c.hit("surprise.mouth-open", Emotion.SURPRISE, 0.35, ev.any_of(25, 26, 27) * ev.none_of(9, 10, 12, 20),
          "AU25/AU26/AU27: lips part or jaw drops, part of the surprise prototype")


def _fear(c: _Collector) -> None:
    ev = c.ev
    c.hit("fear.brows", Emotion.FEAR, 0.85, ev.all_of(1, 2, 4),
          "AU1+AU2+AU4: brows raised and drawn together, the fear brow")
    c.hit("fear.brows-eyes", Emotion.FEAR, 0.7, ev.all_of(1, 4, 5), "AU1+AU4+AU5: fear brow with widened eyes")
    c.hit("fear.stretch", Emotion.FEAR, 0.85, ev.w(20) * ev.any_of(1, 2, 4, 5),
          "AU20 with raised brows or widened eyes: lips stretched back, the fear mouth")
    c.hit("fear.stretch-alone", Emotion.FEAR, 0.6, ev.w(20), "AU20: lips stretched horizontally (fear's key AU)")


def _sadness(c: _Collector) -> None:
    ev = c.ev
    no_disgust = ev.none_of(9, 10)
    c.hit("sadness.full", Emotion.SADNESS, 0.9, ev.all_of(1, 4, 15),
          "AU1+AU4+AU15: oblique inner brows with lip corners down, the sadness prototype")
    c.hit("sadness.brow-mouth", Emotion.SADNESS, 0.75, min(ev.w(1), ev.any_of(15, 17), no_disgust),
          "AU1 with AU15/AU17 and no AU9/AU10: inner brows raised, mouth pulled down")
    c.hit("sadness.variant", Emotion.SADNESS, 0.6, min(ev.any_of(6, 11), ev.w(15)),
          "AU6/AU11 with AU15: an EMFACS sadness variant")
    # With AU2 the brows rise as a whole: 1+2+4 is the fear brow, not the sad one.
    c.hit("sadness.brow", Emotion.SADNESS, 0.55, min(ev.all_of(1, 4), ev.none_of(2)),
          "AU1+AU4 without AU2: the oblique sad brow")
    c.hit("sadness.inner-brow", Emotion.SADNESS, 0.35, min(ev.w(1), ev.none_of(2)),
          "AU1: inner brow raised (sadness or surprise brow)")
    # AU15 is sadness's mouth in EMFACS (1+4+15, 6+15, 11+15; disgust uses it
    # only beside AU9+AU16). Alone it is weak evidence (Ekman & Friesen 1975
    # show the sad mouth with an uninvolved brow), but more than "no pattern":
    # with no repression label it is sadness, and ambiguous.
    c.hit("sadness.corners-down", Emotion.SADNESS, 0.45, ev.w(15),
          "AU15: lip corners pulled down, the sad mouth on its own")
    # The raised chin joins the sad mouth in EMFACS sadness variants
    # (1+4+15+17, 6+15+17); alone it is weak, below "no pattern" wherever
    # "others" or repression is a label.
    c.hit("sadness.chin", Emotion.SADNESS, 0.3, min(ev.w(17), ev.none_of(4, 9, 10, 12, 23, 24)),
          "AU17: chin raised, part of the sad mouth (weak on its own)")


def _disgust(c: _Collector) -> None:
    ev = c.ev
    c.hit("disgust.nose", Emotion.DISGUST, 0.85, ev.w(9), "AU9: nose wrinkled, the disgust key AU")
    c.hit("disgust.upper-lip", Emotion.DISGUST, 0.8, ev.w(10), "AU10: upper lip raised (EMFACS disgust)")
    c.hit("disgust.full", Emotion.DISGUST, 0.9, ev.any_of(9, 10) * ev.any_of(15, 16, 17, 25, 26),
          "AU9/AU10 with the lower lip or chin acting (AU15/16/17/25/26): EMFACS disgust")


def _anger(c: _Collector) -> None:
    ev = c.ev
    brow_lid = min(ev.w(4), ev.any_of(5, 7))
    lips = ev.any_of(23, 24)
    c.hit("anger.full", Emotion.ANGER, 0.85 + 0.05 * ev.all_of(5, 7), min(brow_lid, lips),
          "AU4 with AU5/AU7 and AU23/AU24: lowered brows, glaring or tightened lids, pressed lips")
    c.hit("anger.brow-lids", Emotion.ANGER, 0.65, ev.all_of(4, 5, 7),
          "AU4+AU5+AU7: lowered brows with raised and tightened lids (the anger glare)")
    # Anger shown in brows and lids with the mouth held still is a partial
    # anger display (Ekman & Friesen 1975, ch. 7); 4+7, 4+5 and 4+5+7 are
    # the anger objective class (Davison et al. 2018, from the FACS
    # Investigator's Guide). With AU9/AU10 it is disgust (4+9, 4+7+10).
    c.hit("anger.partial", Emotion.ANGER, 0.7, min(brow_lid, ev.none_of(9, 10)),
          "AU4 with AU5/AU7: the anger brow and lids without the pressed lips (a partial anger display)")
    # No rule for a lone AU4: the lowered brow alone is in no EMFACS display
    # (anger needs AU4 with AU5/AU7 and AU23/AU24 or AU17) and is as often
    # concentration or perplexity (Ekman & Friesen 1975).
    # The tightened lower lids alone: the anger eyes of the partial displays.
    c.hit("anger.lids", Emotion.ANGER, 0.45, min(ev.w(7), ev.none_of(1, 2, 4, 6, 9, 10, 12)),
          "AU7 alone: lids tightened, the anger eyes (weak on their own)")
    c.hit("anger.brow-lips", Emotion.ANGER, 0.5, min(ev.w(4), lips), "AU4 with AU23/AU24: lowered brows, lips pressed")


def _contempt(c: _Collector) -> None:
    ev = c.ev
    c.hit("contempt.full", Emotion.CONTEMPT, 0.9, min(ev.one_sided(12), ev.one_sided(14)),
          "AU12+AU14 on one side: the one-sided lip corner tightened and raised")
    c.hit("contempt.dimpler", Emotion.CONTEMPT, 0.85, ev.one_sided(14),
          "AU14 on one side: the unilateral dimpler, the contempt display")
    c.hit("contempt.one-sided-smile", Emotion.CONTEMPT, 0.45, ev.one_sided(12),
          "AU12 on one side: a one-sided lip corner pull (contempt or a smile)")


def _repression(c: _Collector) -> None:
    """Suppression: the lips and chin hold an expression back."""
    ev = c.ev
    control = sorted((ev.w(a) for a in CONTROL_AUS), reverse=True)
    names = "+".join(f"AU{a.value}" for a in CONTROL_AUS if ev.present(a)) or "AU14/15/17/23/24"
    c.hit("repression.two-controls", Emotion.REPRESSION, 0.7, control[1],
          f"{names}: lips and chin tightened together, an expression held back")
    c.hit("repression.control", Emotion.REPRESSION, 0.55, control[0],
          f"{names}: lip or chin tightening, the face of suppression")
    c.hit("repression.masked-smile", Emotion.REPRESSION, 0.6, min(ev.w(12), control[0]),
          f"AU12 with {names}: a smile being pressed down or masked")


# --- confusion pairs --------------------------------------------------------------


def _fear_vs_surprise(c: _Collector) -> None:
    ev = c.ev
    cue = ev.any_of(4, 20)
    if cue > 0.0 and ev.any_of(1, 2, 5) > 0.0:
        which = "+".join(f"AU{a}" for a in (4, 20) if ev.present(a)) or "AU4/AU20"
        c.adjust("pair.fear-vs-surprise", Emotion.SURPRISE, 1.0 - 0.7 * cue,
                 f"{which} with raised brows: brows drawn together or lips stretched mean fear, not surprise",
                 favours=Emotion.FEAR)


def _fear_vs_anger(c: _Collector) -> None:
    ev = c.ev
    cue = min(ev.all_of(1, 2), ev.w(4))
    if cue > 0.0:
        c.adjust("pair.fear-vs-anger", Emotion.ANGER, 1.0 - 0.7 * cue,
                 "AU1+AU2 with AU4: the brows are raised and drawn together (the fear brow), not lowered in anger",
                 favours=Emotion.FEAR)


def _disgust_vs_sadness(c: _Collector) -> None:
    ev = c.ev
    cue = ev.any_of(9, 10)
    if cue > 0.0 and ev.any_of(1, 15, 17) > 0.0:
        c.adjust("pair.disgust-vs-sadness", Emotion.SADNESS, 1.0 - 0.7 * cue,
                 "AU9/AU10 present: a wrinkled nose or raised upper lip means disgust, not sadness",
                 favours=Emotion.DISGUST)


def _smile_companions(c: _Collector) -> None:
    """AU10 and AU25/26/27 in a broad smile belong to the smile.

    A strong AU12 lifts the upper lip with the corners and parts the lips
    (FACS 1978 joy: 6+12+25). EMFACS disgust is AU9, or AU10 without a smile
    (9, 10, 9+17, 10+17, 9+15+16, 10+16+25, ...): none of its prototypes has
    AU12. So AU10 with an AU12 at least as strong counts for the smile unless
    the nose wrinkles (AU9). Every EMFACS surprise and fear prototype and
    variant raises the brows or widens the eyes (1+2, 5, 1+2+4, 5+20): lips
    parted under a strong smile, with no brow or eye action, are not
    surprise or fear. Not when the "smile" is a crying face.
    """
    ev = c.ev
    if ev.w(12) <= 0.0 or crying_cues(ev):
        return
    if ev.w(10) > 0.0:
        dominance = min(1.0, ev.intensity(12) / ev.intensity(10))
        share = ev.w(12) * dominance * ev.none_of(9)
        if share > 0.0:
            c.adjust("pair.smile-not-disgust", Emotion.DISGUST, 1.0 - 0.7 * share,
                     "AU10 with an AU12 at least as strong and no AU9: the raised upper lip belongs to a broad smile, "
                     "not to disgust")
    opening = ev.any_of(25, 26, 27)
    if opening > 0.0:
        strong = _ramp(ev.intensity(12), INTENSITY_B, INTENSITY_C)
        share = min(ev.w(12) * strong, opening) * ev.none_of(1, 2, 4, 5, 20)
        if share > 0.0:
            for emotion in (Emotion.SURPRISE, Emotion.FEAR):
                c.adjust(f"pair.smile-not-{emotion.value}", emotion, 1.0 - 0.7 * share,
                         f"lips parted under a strong AU12 with no brow or eye action (AU1/2/4/5/20): the smile parts "
                         f"them, not {emotion.value}")


def _anger_not_disgust(c: _Collector) -> None:
    """EMFACS anger prototypes include AU10 (4+5+7+10+22+23+25); disgust ones
    have no lowered brow with tightened lids and pressed lips."""
    ev = c.ev
    anger_face = min(ev.w(4), ev.any_of(5, 7), ev.any_of(23, 24))
    cue = min(ev.w(10), anger_face) * ev.none_of(9)
    if cue > 0.0:
        c.adjust("pair.anger-not-disgust", Emotion.DISGUST, 1.0 - 0.7 * cue,
                 "AU10 with AU4, AU5/AU7 and AU23/AU24 and no AU9: the upper lip rises in the EMFACS anger face, "
                 "not disgust",
                 favours=Emotion.ANGER)


def _repression_vs_anger(c: _Collector) -> None:
    ev = c.ev
    brow_lid = min(ev.w(4), ev.any_of(5, 7))
    lips = max(ev.w(a) for a in CONTROL_AUS)
    if brow_lid > 0.0 and lips > 0.0:
        c.adjust("pair.repression-vs-anger", Emotion.REPRESSION, 1.0 - 0.6 * brow_lid,
                 "AU4 with AU5/AU7 alongside the tightened lips: brows and lids join in, anger rather than "
                 "suppression",
                 favours=Emotion.ANGER)
    elif lips > 0.0 and ev.w(4) > 0.0:
        c.adjust("pair.anger-vs-repression", Emotion.ANGER, 1.0 - 0.5 * lips,
                 "lips pressed with AU4 but no AU5/AU7: without the glaring or tightened lids this is held "
                 "back (repression) rather than anger",
                 favours=Emotion.REPRESSION)


def _sadness_vs_repression(c: _Collector) -> None:
    ev = c.ev
    if ev.w(1) > 0.0 and ev.any_of(15, 17) > 0.0:
        c.adjust("pair.sadness-vs-repression", Emotion.REPRESSION, 1.0 - 0.5 * ev.w(1),
                 "AU1 with AU15/AU17: the raised inner brows make the pulled-down mouth sadness, not suppression",
                 favours=Emotion.SADNESS)


def _contempt_needs_one_side(c: _Collector) -> None:
    ev = c.ev
    if max(ev.one_sided(12), ev.one_sided(14)) <= 0.0:
        c.adjust("pair.contempt-one-sided", Emotion.CONTEMPT, 0.0,
                 "contempt ruled out: it needs AU14 or AU12 on one side of the face")


def _contempt_not_smile(c: _Collector) -> None:
    ev = c.ev
    cue = min(ev.one_sided(12), ev.one_sided(14))
    if cue > 0.0:
        c.adjust("pair.contempt-not-smile", Emotion.HAPPINESS, 1.0 - 0.7 * cue,
                 "AU12 with AU14 on one side: the lip corner tightened and slightly raised is contempt "
                 "(Ekman & Friesen 1986), not a smile",
                 favours=Emotion.CONTEMPT)


def _happiness_needs_smile(c: _Collector) -> None:
    """Every EMFACS happiness prototype and variant has AU12 (6+12, 12C/D;
    FACS 1978 joy 6+12+25): cheeks raised without the lip corners pulled up
    (6+15, a sadness variant) are not a smile."""
    missing = 1.0 - c.ev.w(12)
    if missing > 0.0:
        c.adjust("pair.happiness-needs-au12", Emotion.HAPPINESS, 1.0 - 0.7 * missing,
                 "no AU12: every EMFACS happiness display pulls the lip corners up")


def crying_cues(ev: Evidence) -> list[str]:
    """The crying cues present with AU12 (empty without AU12)."""
    if not ev.present(AU.LIP_CORNER_PULLER):
        return []
    return [text for au, text in CRYING_CUES if ev.present(au)]


def _crying(c: _Collector) -> None:
    cues = crying_cues(c.ev)
    if cues:
        c.adjust("pair.crying-not-happiness", Emotion.HAPPINESS, 0.0,
                 "happiness ruled out: AU12 with " + ", ".join(cues)
                 + " is a crying or pained face, not a smile (blendshapes read crying as smiling)")


def describe_hits(hits: Iterable[RuleHit], limit: int = 3) -> list[str]:
    return [f"{h.emotion.value} {h.score:.2f} ({h.reason})" for h in list(hits)[:limit]]

"""What the reasoner is allowed to know about an episode: AU evidence only.

A :class:`ReasonerRequest` is built once, at the boundary, from the stage
types (``Episode``, ``Decision``, the subject context). It deliberately keeps
only numbers about Action Units and the local classifier's verdict: no
frames, no landmarks, no subject number, no absolute timestamps. The same
evidence dictionary is what the durable queue stores and what the prompt is
rendered from, so nothing else can leak into a request by accident.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from microexpr.classify.decide import Decision, Stage
from microexpr.facs import AU, AUActivation, Emotion, Side
from microexpr.spotting import Episode, EpisodeKind

#: Bumped when the evidence dictionary's layout changes (stored rows carry it).
EVIDENCE_VERSION = 1

#: Quantisation of the cache signature: answers are reused for evidence that
#: differs by less than these steps (intensity on 0..1, seconds).
INTENSITY_STEP = 0.1
DURATION_STEP = 0.05

# "subject 12", "Subject #3", "sub07", "subject_id=4": a trace sentence may
# name the local subject number; the reasoner never needs it.
_SUBJECT_REF = re.compile(r"\bsub(?:ject)?(?:[\s_#:=-]*id)?[\s_#:=-]*\d+\b", re.IGNORECASE)


def scrub_identity(text: str) -> str:
    """Replace references to a subject number by "the subject"."""
    return _SUBJECT_REF.sub(lambda m: "The subject" if m.start() == 0 else "the subject", text)


@dataclass(frozen=True, slots=True)
class AUEvidence:
    """One active AU over the episode."""

    au: AU
    side: Side  #: B when both sides act (or the side is unknown), else L/R
    onset: float | None  #: estimator intensity 0..1 at onset (None for coded rows)
    apex: float
    offset: float | None
    #: Amplified evidence at apex (robust z over the subject's neutral face).
    evidence_z: float | None = None
    #: Apex intensity per side, when the episode reports sides separately.
    left: float | None = None
    right: float | None = None

    @property
    def asymmetry(self) -> float | None:
        """left − right at apex; positive means the subject's left is stronger."""
        if self.left is None or self.right is None:
            return None
        return self.left - self.right


@dataclass(frozen=True, slots=True)
class LocalVerdict:
    """The on-device classifier's answer, as the reasoner sees it."""

    label: Emotion
    confidence: float
    margin: float
    runner_up: Emotion | None
    stage: Stage
    scores: tuple[tuple[Emotion, float], ...]
    trace: tuple[str, ...]

    @classmethod
    def from_decision(cls, decision: Decision) -> LocalVerdict:
        return cls(
            label=Emotion(decision.label),
            confidence=float(decision.confidence),
            margin=float(decision.margin),
            runner_up=None if decision.runner_up is None else Emotion(decision.runner_up),
            stage=Stage(decision.stage),
            scores=tuple((Emotion(e), float(s)) for e, s in decision.scores),
            trace=tuple(scrub_identity(line) for line in decision.trace),
        )


@dataclass(frozen=True, slots=True)
class ReasonerRequest:
    """The evidence of one ambiguous episode, keyed by its event UUID."""

    event_id: str
    kind: EpisodeKind | None  #: None for coded dataset rows (no timing)
    duration_s: float | None
    rise_s: float | None  #: onset → apex
    fall_s: float | None  #: apex → offset
    aus: tuple[AUEvidence, ...]
    local: LocalVerdict
    #: AUs this person shows often outside episodes (they weigh less).
    habitual_aus: tuple[AU, ...] = ()

    # -- construction ---------------------------------------------------------

    @classmethod
    def from_episode(
        cls, event_id: str, episode: Episode, decision: Decision, context: object | None = None
    ) -> ReasonerRequest:
        """Keep the AU numbers of ``episode``; drop its subject id and clock."""
        aus = _aggregate(
            episode.activations,
            onset=episode.onset_intensity,
            apex=episode.apex_intensity,
            offset=episode.offset_intensity,
            evidence=episode.apex_evidence,
        )
        return cls(
            event_id=str(event_id),
            kind=EpisodeKind(episode.kind),
            duration_s=float(episode.offset_ts - episode.onset_ts),
            rise_s=float(episode.apex_ts - episode.onset_ts),
            fall_s=float(episode.offset_ts - episode.apex_ts),
            aus=aus,
            local=LocalVerdict.from_decision(decision),
            habitual_aus=habitual_aus(context),
        )

    @classmethod
    def from_activations(
        cls,
        event_id: str,
        activations: Iterable[AUActivation],
        decision: Decision,
        context: object | None = None,
        *,
        duration_s: float | None = None,
        rise_s: float | None = None,
    ) -> ReasonerRequest:
        """A coded dataset row (eval): AUs with sides, no per-frame intensities."""
        return cls(
            event_id=str(event_id),
            kind=None,
            duration_s=duration_s,
            rise_s=rise_s,
            fall_s=None if duration_s is None or rise_s is None else duration_s - rise_s,
            aus=_aggregate(tuple(activations)),
            local=LocalVerdict.from_decision(decision),
            habitual_aus=habitual_aus(context),
        )

    # -- the one serialised form -----------------------------------------------

    def evidence(self) -> dict[str, Any]:
        """The JSON-able evidence: stored in the queue, rendered into the prompt."""
        return {
            "v": EVIDENCE_VERSION,
            "event_id": self.event_id,
            "kind": None if self.kind is None else self.kind.value,
            "duration_s": _r(self.duration_s),
            "rise_s": _r(self.rise_s),
            "fall_s": _r(self.fall_s),
            "aus": [
                {
                    "au": a.au.value,
                    "side": a.side.value,
                    "onset": _r(a.onset),
                    "apex": _r(a.apex),
                    "offset": _r(a.offset),
                    "z": _r(a.evidence_z, 2),
                    "left": _r(a.left),
                    "right": _r(a.right),
                }
                for a in self.aus
            ],
            "local": {
                "label": self.local.label.value,
                "confidence": _r(self.local.confidence),
                "margin": _r(self.local.margin),
                "runner_up": None if self.local.runner_up is None else self.local.runner_up.value,
                "stage": self.local.stage.value,
                "scores": [[e.value, _r(s)] for e, s in self.local.scores],
                "trace": list(self.local.trace),
            },
            "habitual_aus": [au.value for au in self.habitual_aus],
        }

    @classmethod
    def from_evidence(cls, data: Mapping[str, Any]) -> ReasonerRequest:
        """Inverse of :meth:`evidence` (queue rows survive restarts this way)."""
        local = data["local"]
        return cls(
            event_id=str(data["event_id"]),
            kind=None if data["kind"] is None else EpisodeKind(data["kind"]),
            duration_s=data["duration_s"],
            rise_s=data["rise_s"],
            fall_s=data["fall_s"],
            aus=tuple(
                AUEvidence(
                    au=AU(a["au"]),
                    side=Side(a["side"]),
                    onset=a["onset"],
                    apex=a["apex"],
                    offset=a["offset"],
                    evidence_z=a["z"],
                    left=a["left"],
                    right=a["right"],
                )
                for a in data["aus"]
            ),
            local=LocalVerdict(
                label=Emotion(local["label"]),
                confidence=local["confidence"],
                margin=local["margin"],
                runner_up=None if local["runner_up"] is None else Emotion(local["runner_up"]),
                stage=Stage(local["stage"]),
                scores=tuple((Emotion(e), float(s)) for e, s in local["scores"]),
                trace=tuple(local["trace"]),
            ),
            habitual_aus=tuple(AU(v) for v in data["habitual_aus"]),
        )

    def signature(self, *, model: str, prompt_version: str) -> str:
        """Cache key: the quantised AU evidence (not the event id nor the local
        scores), plus what would change the answer (model, prompt version)."""
        key = {
            "model": model,
            "prompt": prompt_version,
            "kind": None if self.kind is None else self.kind.value,
            "duration": _q(self.duration_s, DURATION_STEP),
            "rise": _q(self.rise_s, DURATION_STEP),
            "aus": sorted(
                (
                    a.au.value,
                    a.side.value,
                    _q(a.onset, INTENSITY_STEP),
                    _q(a.apex, INTENSITY_STEP),
                    _q(a.offset, INTENSITY_STEP),
                    _q(a.left, INTENSITY_STEP),
                    _q(a.right, INTENSITY_STEP),
                )
                for a in self.aus
            ),
            "habitual": sorted(au.value for au in self.habitual_aus),
        }
        canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def habitual_aus(context: object | None) -> tuple[AU, ...]:
    """The habitual AUs of a subject context, whatever container it uses
    (a set of AUs, a mapping AU → weight, codes like "AU12" or plain ints)."""
    if context is None:
        return ()
    raw = getattr(context, "habitual_aus", None)
    if raw is None:
        return ()
    items = raw.keys() if isinstance(raw, Mapping) else raw
    found: set[AU] = set()
    for item in items:
        found.add(_as_au(item))
    return tuple(sorted(found))


def _as_au(item: object) -> AU:
    if isinstance(item, AU):
        return item
    if isinstance(item, str):
        return AU(int(item.upper().removeprefix("AU")))
    if isinstance(item, int):
        return AU(item)
    raise TypeError(f"not an Action Unit: {item!r}")


def _aggregate(
    activations: tuple[AUActivation, ...],
    *,
    onset: Mapping[AU, float] | None = None,
    apex: Mapping[AU, float] | None = None,
    offset: Mapping[AU, float] | None = None,
    evidence: Mapping[AU, float] | None = None,
) -> tuple[AUEvidence, ...]:
    """One :class:`AUEvidence` per AU: sides merged, per-side intensity kept."""
    by_au: dict[AU, list[AUActivation]] = {}
    for act in activations:
        by_au.setdefault(AU(act.au), []).append(act)
    out: list[AUEvidence] = []
    for au in sorted(by_au):
        acts = by_au[au]
        sides = {Side(a.side) for a in acts}
        left = max((a.intensity for a in acts if a.side == Side.LEFT), default=None)
        right = max((a.intensity for a in acts if a.side == Side.RIGHT), default=None)
        if sides == {Side.LEFT}:
            side = Side.LEFT
        elif sides == {Side.RIGHT}:
            side = Side.RIGHT
        else:
            side = Side.BOTH
        strongest = max(a.intensity for a in acts)
        out.append(
            AUEvidence(
                au=au,
                side=side,
                onset=None if onset is None else float(onset.get(au, 0.0)),
                apex=float(apex.get(au, strongest)) if apex is not None else float(strongest),
                offset=None if offset is None else float(offset.get(au, 0.0)),
                evidence_z=None if evidence is None or au not in evidence else float(evidence[au]),
                left=None if left is None else float(left),
                right=None if right is None else float(right),
            )
        )
    return tuple(out)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _q(value: float | None, step: float) -> int | None:
    return None if value is None else int(round(float(value) / step))

"""The decision: label, confidence, margin, deciding stage, readable trace.

(Interface fixed; implementation in progress — see issue 4.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from microexpr.facs import Emotion


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

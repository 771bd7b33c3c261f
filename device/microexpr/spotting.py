"""Onset/apex/offset episodes in a live AU evidence stream.

(Interface fixed; implementation in progress — see issue 4.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from microexpr.facs import AU, AUActivation


class EpisodeKind(StrEnum):
    MICRO = "micro"  #: onset→offset ≤ micro_max_s (0.5 s by default)
    MACRO = "macro"


@dataclass(frozen=True, slots=True)
class Episode:
    """One spotted facial movement. Timestamps are source seconds (monotonic)."""

    subject_id: int
    onset_frame: int
    apex_frame: int
    offset_frame: int
    onset_ts: float
    apex_ts: float
    offset_ts: float
    kind: EpisodeKind
    #: AUs judged active at the apex, with side and 0..1 intensity: the
    #: classifier's input (same form as a coded dataset row).
    activations: tuple[AUActivation, ...]
    #: Estimator intensities (0..1) per AU at onset, apex and offset.
    onset_intensity: Mapping[AU, float]
    apex_intensity: Mapping[AU, float]
    offset_intensity: Mapping[AU, float]
    #: Amplified evidence (robust z-score over the subject's baseline) at apex.
    apex_evidence: Mapping[AU, float]

    @property
    def duration_s(self) -> float:
        return self.offset_ts - self.onset_ts

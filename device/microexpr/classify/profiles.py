"""Label profiles: whose conventions the classifier follows.

The default, ``generic``, is what a camera needs in front of people no
dataset has seen: all nine labels, the FACS rules, and prototypes pooled over
several coding tables with equal dataset weights, where a configuration the
datasets label differently is marked ambiguous with the FACS-grounded label
(``decide.py``). A named profile reproduces one dataset's conventions on
purpose, to compare with papers that report on it; it is never the default.

``[engine] label_profile`` selects one for ``microexpr run``; ``[engine]
prototypes`` (a ``microexpr fit-prototypes`` file) replaces the profile's
packaged prototypes; ``microexpr eval --profile NAME`` scores one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microexpr.classify.decide import Classifier
from microexpr.classify.prototypes import PrototypeSet
from microexpr.errors import DataError, ExitCode
from microexpr.facs import Emotion


@dataclass(frozen=True, slots=True)
class LabelProfile:
    name: str
    #: The labels the classifier may give (None: all nine).
    labels: tuple[Emotion, ...] | None
    #: Packaged prototypes file (``microexpr/data/``).
    prototypes: str
    #: ``microexpr eval`` protocol that matches the label set (None: its default).
    protocol: str | None
    description: str

    def load_prototypes(self, path: str | Path | None = None) -> PrototypeSet:
        """The profile's packaged prototypes, or a fit-prototypes file instead."""
        return PrototypeSet.load(path) if path else PrototypeSet.load_default(self.prototypes)

    def classifier(self, prototypes: str | Path | None = None, **options: Any) -> Classifier:
        return Classifier(self.load_prototypes(prototypes), labels=self.labels, **options)


PROFILES: dict[str, LabelProfile] = {
    "generic": LabelProfile(
        "generic", None, "prototypes.json", None,
        "all nine labels; FACS rules with prototypes pooled over CASME II, CAS(ME)³ part A and MMEW (each "
        "dataset the same weight); configurations the datasets label differently are ambiguous and take the "
        "FACS-grounded label. The default."),
    "casme2": LabelProfile(
        "casme2",
        (Emotion.HAPPINESS, Emotion.DISGUST, Emotion.REPRESSION, Emotion.SURPRISE, Emotion.OTHERS),
        "prototypes_casme2.json", "5class",
        "CASME II's conventions: its usual five classes (happiness, disgust, repression, surprise, others) and "
        "prototypes fitted on CASME II alone, so a lone AU4 is 'others', AU4+AU7 'disgust', a lone AU17 "
        "'repression', and no anger, contempt, fear or sadness is ever given. For comparing with papers "
        "that report CASME II's 5-class protocol."),
}


def get_profile(name: str) -> LabelProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise DataError(f"unknown label profile {name!r} (choose from {', '.join(PROFILES)})",
                        exit_code=ExitCode.USAGE) from None


def profile_names() -> Collection[str]:
    return tuple(PROFILES)

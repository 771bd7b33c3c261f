"""One AU set, in the form every classification stage reads.

The classifier's input is a sequence of ``AUActivation`` (AU, side,
intensity) — the same from a coded dataset row and from a live episode. The
stages need a little more than that list: how strongly each AU counts (a
trace counts less than a marked action; a subject's habitual AU counts less
than a new one) and whether it acted on one side only. ``Evidence`` computes
that once, so the rules and the prototypes cannot disagree about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from microexpr.facs import AU, AUActivation, Side

if TYPE_CHECKING:
    from microexpr.classify.context import SubjectContext

#: An AU whose weight reaches this counts as present (rules, configurations).
PRESENT = 0.5
#: Two sides count as "the same" when the weaker is at least this share of the stronger.
SYMMETRY_RATIO = 0.67


def presence_weight(intensity: float) -> float:
    """How much an active AU counts, from its 0..1 intensity.

    A coded unit with no letter (1.0) or with B or more counts fully; a trace
    (A, 0.2) still counts 0.75: coders list only what they saw, and
    micro-expressions are mostly weak (FACS letters are not a linear scale).
    """
    return max(0.0, min(1.0, 0.5 + 1.25 * intensity))


class Laterality(StrEnum):
    BILATERAL = "bilateral"
    LEFT = "left"  #: the subject's left only
    RIGHT = "right"
    ASYMMETRIC = "asymmetric"  #: both sides, one clearly stronger

    @property
    def one_sided(self) -> bool:
        return self is not Laterality.BILATERAL


@dataclass(frozen=True, slots=True)
class AUEvidence:
    au: AU
    intensity: float  #: the stronger side, 0..1
    weight: float  #: 0..1: presence weight × habitual weight
    laterality: Laterality
    habitual: float = 1.0  #: the subject-context factor already in ``weight``

    @property
    def notation(self) -> str:
        """``AU12``, ``AU14(left)``, ``AU12(asymmetric)``."""
        if self.laterality is Laterality.BILATERAL:
            return f"AU{self.au.value}"
        return f"AU{self.au.value}({self.laterality.value})"


@dataclass(frozen=True, slots=True)
class Evidence:
    """AU → evidence for one episode (absent AUs are simply not in ``units``)."""

    units: Mapping[AU, AUEvidence]

    @classmethod
    def from_activations(
        cls, activations: Iterable[AUActivation], context: SubjectContext | None = None
    ) -> Evidence:
        sides: dict[AU, dict[Side, float]] = {}
        for act in activations:
            level = max(0.0, min(1.0, float(act.intensity)))
            per_side = sides.setdefault(act.au, {})
            per_side[act.side] = max(per_side.get(act.side, 0.0), level)
        units: dict[AU, AUEvidence] = {}
        for au, per_side in sides.items():
            left = max(per_side.get(Side.LEFT, 0.0), per_side.get(Side.BOTH, 0.0))
            right = max(per_side.get(Side.RIGHT, 0.0), per_side.get(Side.BOTH, 0.0))
            laterality = _laterality(per_side, left, right)
            intensity = max(left, right)
            habitual = context.habitual_weight(au) if context is not None else 1.0
            units[au] = AUEvidence(au, intensity, presence_weight(intensity) * habitual, laterality, habitual)
        return cls(units)

    def w(self, au: AU | int) -> float:
        unit = self.units.get(AU(au))
        return unit.weight if unit is not None else 0.0

    def intensity(self, au: AU | int) -> float:
        """The AU's intensity (stronger side), 0 if absent: which of two AUs dominates."""
        unit = self.units.get(AU(au))
        return unit.intensity if unit is not None else 0.0

    def all_of(self, *aus: AU | int) -> float:
        """Soft AND: the weakest of the AUs (0 if any is absent)."""
        return min(self.w(a) for a in aus)

    def any_of(self, *aus: AU | int) -> float:
        """Soft OR: the strongest of the AUs."""
        return max(self.w(a) for a in aus)

    def none_of(self, *aus: AU | int) -> float:
        return 1.0 - self.any_of(*aus)

    def present(self, au: AU | int) -> bool:
        return self.w(au) >= PRESENT

    def one_sided(self, au: AU | int) -> float:
        """Weight of ``au`` if it acted on one side only (or clearly more on one)."""
        unit = self.units.get(AU(au))
        if unit is None or not unit.laterality.one_sided:
            return 0.0
        return unit.weight * (0.9 if unit.laterality is Laterality.ASYMMETRIC else 1.0)

    def present_aus(self) -> tuple[AU, ...]:
        return tuple(sorted(a for a, u in self.units.items() if u.weight >= PRESENT))

    def weights(self) -> dict[AU, float]:
        return {a: u.weight for a, u in self.units.items()}

    def describe(self, aus: Sequence[AU] | None = None) -> str:
        """``"AU4+AU7+AU10(left)"``, in AU number order."""
        chosen = sorted(self.units) if aus is None else sorted(aus)
        parts = [self.units[au].notation for au in chosen if au in self.units]
        return "+".join(parts) if parts else "no AUs"

    def config_key(self) -> tuple[str, ...]:
        """The AU configuration: present AUs in number order, ``"14u"`` for a
        one-sided AU (left and right collapsed: a mirror image is the same
        configuration)."""
        return tuple(
            f"{a.value}u" if self.units[a].laterality.one_sided else str(a.value) for a in self.present_aus()
        )


def _laterality(per_side: Mapping[Side, float], left: float, right: float) -> Laterality:
    if Side.BOTH in per_side and per_side[Side.BOTH] >= max(left, right):
        return Laterality.BILATERAL
    if left > 0.0 and right > 0.0:
        weak, strong = sorted((left, right))
        return Laterality.BILATERAL if weak >= SYMMETRY_RATIO * strong else Laterality.ASYMMETRIC
    return Laterality.LEFT if left > 0.0 else Laterality.RIGHT

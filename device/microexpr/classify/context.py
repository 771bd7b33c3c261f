"""Subject context: a person's own habitual AUs weigh less.

Some people frown while they listen, press their lips while they think, or
smile one-sidedly all the time. An AU the subject shows in many frames
*outside* any episode says little about an emotion when it shows up again
inside one. ``SubjectContext`` counts how often each AU is active in those
frames and turns the rate into a weight in 0..1 that the classifier applies
to the AU's evidence (``Evidence.from_activations``).

The live pipeline feeds ``observe`` once per frame that is not part of an
episode and calls ``reset`` when the face is lost or the subject changes.
Coded datasets have no frames outside episodes; ``microexpr eval`` can build
a stand-in from a subject's other episodes (see docs/evaluation.md).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

from microexpr.facs import AU, AUActivation

#: Defaults (documented in docs/classification.md).
MIN_FRAMES = 30.0  #: below this many observed frames every weight is 1
FREE_RATE = 0.10  #: an AU active in ≤ 10 % of the frames is not habitual
FULL_RATE = 0.60  #: at ≥ 60 % it is fully habitual and gets the floor weight
FLOOR = 0.30  #: the weight of a fully habitual AU: it still counts a little
HALF_LIFE_FRAMES = 9000.0  #: 5 minutes at 30 fps: old habits fade


class SubjectContext:
    """Per-subject habitual AU rates with an exponential forgetting window.

    Thread-safe: the capture/inference thread observes while the classifier
    may read weights from another thread.
    """

    def __init__(
        self,
        *,
        min_frames: float = MIN_FRAMES,
        free_rate: float = FREE_RATE,
        full_rate: float = FULL_RATE,
        floor: float = FLOOR,
        half_life_frames: float | None = HALF_LIFE_FRAMES,
    ) -> None:
        if not 0.0 <= free_rate < full_rate <= 1.0:
            raise ValueError(f"need 0 <= free_rate < full_rate <= 1, got {free_rate}, {full_rate}")
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"floor must be in 0..1, got {floor}")
        self.min_frames = float(min_frames)
        self.free_rate = float(free_rate)
        self.full_rate = float(full_rate)
        self.floor = float(floor)
        self._decay = 0.5 ** (1.0 / half_life_frames) if half_life_frames else 1.0
        self._frames = 0.0
        self._counts: dict[AU, float] = {}
        self._lock = threading.Lock()

    def observe(self, active: Iterable[AUActivation] | Iterable[AU]) -> None:
        """Count one frame (or one out-of-episode AU set) and the AUs active in it."""
        aus = {item.au if isinstance(item, AUActivation) else AU(item) for item in active}
        with self._lock:
            if self._decay != 1.0:
                self._frames *= self._decay
                for au in self._counts:
                    self._counts[au] *= self._decay
            self._frames += 1.0
            for au in aus:
                self._counts[au] = self._counts.get(au, 0.0) + 1.0

    def reset(self) -> None:
        """Forget everything: the face was lost or another subject appeared."""
        with self._lock:
            self._frames = 0.0
            self._counts.clear()

    @property
    def frames(self) -> float:
        """Observed frames (decayed), i.e. how much the rates can be trusted."""
        with self._lock:
            return self._frames

    def rate(self, au: AU | int) -> float:
        """Share of observed frames in which ``au`` was active (0 before any)."""
        with self._lock:
            if self._frames <= 0.0:
                return 0.0
            return self._counts.get(AU(au), 0.0) / self._frames

    def habitual_weight(self, au: AU | int) -> float:
        """1.0 for an AU the subject rarely shows; down to ``floor`` for a habit."""
        if self.frames < self.min_frames:
            return 1.0
        rate = self.rate(au)
        if rate <= self.free_rate:
            return 1.0
        if rate >= self.full_rate:
            return self.floor
        share = (rate - self.free_rate) / (self.full_rate - self.free_rate)
        return 1.0 - share * (1.0 - self.floor)

    @property
    def habitual_aus(self) -> dict[AU, float]:
        """Every AU whose weight is below 1, with its weight (traces, reasoner)."""
        with self._lock:
            known = list(self._counts)
        out = {au: self.habitual_weight(au) for au in known}
        return {au: w for au, w in sorted(out.items()) if w < 1.0 and not math.isclose(w, 1.0)}

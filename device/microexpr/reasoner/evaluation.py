"""Route the ambiguous rows of a scored dataset through the reasoner.

``microexpr eval --reasoner`` calls :func:`refine_rows` after the local
classifier has decided every row: ambiguous rows are asked synchronously
(one at a time, through the same cache, budget, rate limit and breaker as
the daemon, in the same SQLite file), confident rows are left alone.
Passing ``--reasoner`` is the consent for that run; the key still comes from
the credential store or ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import replace
from typing import Any

from microexpr.classify.decide import Decision
from microexpr.facs import AUActivation, Emotion
from microexpr.reasoner.request import ReasonerRequest
from microexpr.reasoner.settings import ReasonerSettings
from microexpr.reasoner.worker import Reasoner

log = logging.getLogger(__name__)

#: UUIDs of evaluation rows are derived from their position, so a rerun on
#: the same data hits the cache instead of paying again.
_EVAL_NAMESPACE = uuid.UUID("5d0f6f9e-4b8a-4c61-9a59-2f1f3d6a8e10")


def refine_rows(
    rows_with_decisions: Iterable[tuple[Any, Decision]],
    settings: object,
    *,
    api_key: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Emotion | None]:
    """One entry per row: the reasoner's label for an ambiguous row, or None
    (confident row, or no answer: budget spent, no key, repeated failures).

    A row is anything with ``activations`` (a tuple of :class:`AUActivation`)
    or such a tuple itself; ``duration_s``/``rise_s`` are used when present.
    """
    pairs = list(rows_with_decisions)
    s = replace(ReasonerSettings.from_any(settings), enabled=True)
    labels: list[Emotion | None] = [None] * len(pairs)
    ambiguous = [i for i, (_row, decision) in enumerate(pairs) if decision.ambiguous]
    if not ambiguous:
        return labels
    with closing(Reasoner(s, api_key=api_key)) as reasoner:
        if reasoner.state().status == "offline":
            log.warning("reasoner: no OpenAI API key (credential openai_api_key or OPENAI_API_KEY): "
                        "the %d ambiguous rows keep their local labels", len(ambiguous))
        for done, index in enumerate(ambiguous, start=1):
            row, decision = pairs[index]
            request = ReasonerRequest.from_activations(
                str(uuid.uuid5(_EVAL_NAMESPACE, str(index))),
                _activations(row),
                decision,
                getattr(row, "context", None),
                duration_s=_float_or_none(getattr(row, "duration_s", None)),
                rise_s=_float_or_none(getattr(row, "rise_s", None)),
            )
            refinement = reasoner.refine_now(request)
            labels[index] = None if refinement is None else refinement.label
            if progress is not None:
                progress(done, len(ambiguous))
        state = reasoner.state()
    answered = sum(label is not None for label in labels)
    log.info("reasoner: %d of %d ambiguous rows answered (%d cache hits, %d requests today)",
             answered, len(ambiguous), state.counts.get("cache_hits", 0), state.budget.requests_used)
    return labels


def _activations(row: Any) -> tuple[AUActivation, ...]:
    acts = getattr(row, "activations", row)
    result = tuple(acts)
    if not all(isinstance(a, AUActivation) for a in result):
        raise TypeError(f"row has no AU activations: {row!r}")
    return result


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]

"""Parts of the ``stats`` payload that come from stages the service only holds.

Each reader is defensive: a stage that cannot say how it is doing must not
stop the retained ``stats`` message, so a failure is logged and left out.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from microexpr.events import ReasonerStats

if TYPE_CHECKING:
    from microexpr.reasoner import Reasoner

log = logging.getLogger(__name__)

#: The reasoner's own status words → the ``reasoner.state`` words docs/mqtt.md documents.
_REASONER_STATE = {
    "sending": "working",
    "no_api_key": "offline",
    "breaker_open": "circuit_open",
    "backing_off": "backoff",
    "rate_limited": "backoff",
}


def stat_word(text: str) -> str:
    """A lower-case word for the stats schema (``^[a-z][a-z_]*$``)."""
    word = re.sub(r"[^a-z_]+", "_", str(text).lower()).strip("_")
    word = _REASONER_STATE.get(word, word)
    return word if word and word[0].isalpha() else "unknown"


def reasoner_stats(reasoner: Reasoner) -> ReasonerStats | None:
    """The reasoner's state in the stats schema's words; None when it cannot say."""
    try:
        state = reasoner.state()
        return ReasonerStats(
            state=stat_word(state.status),
            queue_depth=state.queue_depth,
            requests_today=state.budget.requests_used,
            tokens_today=state.budget.tokens_used,
            budget_exhausted=state.budget.exhausted,
        )
    except Exception:
        log.exception("reasoner state unavailable")
        return None


def suppression_counts(pipeline: object | None) -> dict[str, int]:
    """The pipeline's suppression counts (``stats.suppressed``); empty
    before the pipeline exists or for a pipeline that keeps none."""
    counts = getattr(pipeline, "suppressed", None)
    snapshot = getattr(counts, "snapshot", None)
    if snapshot is None:
        return {}
    try:
        return {str(k): int(v) for k, v in snapshot().items()}
    except Exception:
        log.exception("suppression counts unavailable")
        return {}

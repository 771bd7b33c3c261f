"""Typed items that pass between the daemon's threads.

Capture hands :class:`FrameItem`, :class:`SourceLost`, :class:`SourceRestored`
and :class:`EndOfStream` to inference through the bounded ``frames`` queue;
inference turns the pipeline's spotted episodes into :class:`Emitted`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from microexpr.capture import Frame
from microexpr.classify.decide import Decision
from microexpr.errors import MicroexprError
from microexpr.spotting import Episode

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FrameItem:
    """A frame and when the capture thread got it (``time.monotonic()``)."""

    frame: Frame
    received: float


@dataclass(frozen=True, slots=True)
class SourceLost:
    """The camera stopped delivering (or could not be opened); capture is retrying."""

    reason: str
    retry_in_s: float


@dataclass(frozen=True, slots=True)
class SourceRestored:
    """Frames flow again after a loss."""

    name: str


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """A file source is done; ``error`` when it stopped on bad data rather than at its end."""

    error: MicroexprError | None = None


CaptureItem = FrameItem | SourceLost | SourceRestored | EndOfStream


@dataclass(frozen=True, slots=True)
class Emitted:
    """One finished episode and its decision, as the service sees it."""

    episode: Episode
    decision: Decision
    #: The subject's context (habitual AUs) for the reasoner, when the
    #: pipeline's output carries one (a ``context`` attribute).
    context: object | None = None


def emitted_episodes(items: Iterable[Any]) -> list[Emitted]:
    """The pipeline's spotted episodes (``SpottedEpisode``) as :class:`Emitted`.

    An episode without a decision (a build without the classifier stage)
    cannot become an event: it is logged and skipped.
    """
    out: list[Emitted] = []
    for item in items or ():
        episode = getattr(item, "episode", None)
        decision = getattr(item, "decision", None)
        if not isinstance(episode, Episode):
            log.error("pipeline returned %s, not an episode: skipped", type(item).__name__)
        elif not isinstance(decision, Decision):
            log.warning("episode at frame %d has no decision (no classifier): not published", episode.apex_frame)
        else:
            out.append(Emitted(episode, decision, getattr(item, "context", None)))
    return out

"""What the status page shows, kept between the daemon's threads and the HTTP threads.

The frame path only stores references here (the latest AU frame, the latest
camera frame when the preview is on) and bumps a sequence number: no lock,
no copy, no serialisation per frame. The HTTP threads poll at
``status.live_interval_s`` and turn what they find into JSON themselves, so
a page left open costs the pipeline nothing it would notice. Episodes are
rare and wake the streams at once (a condition variable).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from microexpr.capture import Frame
from microexpr.events import Event, JsonObject, RefinedEvent, Stats

class BrokerState(StrEnum):
    """The MQTT connection as the page and ``microexpr_broker`` show it."""

    CONNECTED = "connected"
    OFFLINE = "offline"
    #: ``mqtt.enabled = false``: events stay in the outbox.
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class StatusSources:
    """Where the server reads the daemon's state on demand (a page load, a scrape)."""

    #: The same :class:`~microexpr.events.Stats` the retained MQTT ``stats`` carries.
    stats: Callable[[], Stats]
    broker: Callable[[], BrokerState]


def episode_view(event: Event) -> JsonObject:
    """The part of an event the page lists: what, how sure, which AUs, and why."""
    return {
        "event_id": event.event_id,
        "time": event.time,
        "kind": event.kind.value,
        "emotion": event.emotion.value,
        "confidence": event.confidence,
        "margin": event.margin,
        "ambiguous": event.ambiguous,
        "stage": event.stage.value,
        "duration_s": event.duration_s,
        "aus": [{"au": a.au.code, "side": a.side.value, "intensity": round(a.intensity, 3)} for a in event.aus],
        "explanation": event.explanation,
        "refined": None,
    }


def refined_view(refined: RefinedEvent) -> JsonObject:
    return {
        "emotion": refined.emotion.value,
        "confidence": round(refined.confidence, 4),
        "rationale": refined.rationale,
        "agrees_with_local": refined.agrees_with_local,
        "model": refined.model,
    }


class LiveFeed:
    """Latest AU frame, latest camera frame (preview only) and the recent episodes."""

    def __init__(self, recent_episodes: int, *, keep_frames: bool = False) -> None:
        self.keep_frames = keep_frames
        self._recent = recent_episodes
        # Written by one thread (the one that analyses), read by HTTP
        # threads: a reference swap is atomic, and a reader that sees the
        # sequence number one frame late only shows that frame later.
        self._aus: Any = None
        self._aus_seq = 0
        self._frame: Frame | None = None
        self._cond = threading.Condition()
        self._episodes: OrderedDict[str, tuple[int, JsonObject]] = OrderedDict()
        self._episode_seq = 0
        self._closed = False

    # -- writers --------------------------------------------------------------

    def frame(self, aus: Any, frame: Frame | None) -> None:
        """One analysed frame: its AU frame, and the image when the preview is on."""
        self._aus = aus
        self._aus_seq += 1
        if self.keep_frames:
            self._frame = frame

    def episode(self, event: Event) -> None:
        with self._cond:
            self._episode_seq += 1
            self._episodes[event.event_id] = (self._episode_seq, episode_view(event))
            while len(self._episodes) > self._recent:
                self._episodes.popitem(last=False)
            self._cond.notify_all()

    def refined(self, refined: RefinedEvent) -> bool:
        """Attach the reasoner's answer to its episode; False if the episode is no longer listed."""
        with self._cond:
            entry = self._episodes.get(refined.event_id)
            if entry is None:
                return False
            self._episode_seq += 1
            view = dict(entry[1], refined=refined_view(refined))
            self._episodes[refined.event_id] = (self._episode_seq, view)
            self._cond.notify_all()
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- readers --------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def latest_aus(self) -> tuple[int, Any]:
        return self._aus_seq, self._aus

    def latest_frame(self) -> Frame | None:
        return self._frame

    def episodes(self) -> list[JsonObject]:
        """The listed episodes, newest first."""
        with self._cond:
            return [view for _seq, view in reversed(self._episodes.values())]

    def episodes_after(self, cursor: int) -> tuple[int, list[JsonObject]]:
        """Episodes added or refined since ``cursor`` (oldest first) and the new cursor."""
        with self._cond:
            fresh = sorted((seq, view) for seq, view in self._episodes.values() if seq > cursor)
            return self._episode_seq, [view for _seq, view in fresh]

    def wait(self, cursor: int, timeout: float) -> None:
        """Sleep up to ``timeout``; wake early for a new episode or the close."""
        with self._cond:
            if self._episode_seq == cursor and not self._closed:
                self._cond.wait(timeout)

"""The event lifecycle: ``new`` at onset, ``update`` past the apex, ``end`` with the decision.

A subscriber that waits for the single ``event`` message learns of a
movement ``engine.emit_delay_s`` after it ended. With ``mqtt.event_lifecycle``
it is told as soon as the spotter opens the episode (what is known then: the
onset, the AUs active now), again once the apex has passed while the
episode is still open, and at the end with the final decision — every
notice with the same ``event_id`` as the ``event`` (and ``event/refined``)
message of that episode, and a ``type`` field (as Frigate's ``events`` topic
does). A movement the engine drops (rejected, suppressed) ends with outcome
``discarded`` and the reason, so a ``new`` never dangles. The apex of an
``update`` is provisional (the strongest frame so far, not exceeded for
:data:`APEX_CONFIRM_S`); a movement that keeps growing gets one ``update`` per
confirmed new peak (at most :data:`MAX_UPDATES`); ``end`` carries the
boundaries the decision was made on.

:class:`LifecycleTracker` is pure bookkeeping over the pipeline's per-frame
results (``PipelineResult.in_progress`` and the finished episodes); it never
changes what the engine decides. The daemon stores its notices in the outbox
like events (durable first, in order).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from microexpr.events import SCHEMA_VERSION, Event, dumps, utc_now_iso
from microexpr.facs import AUActivation

if TYPE_CHECKING:
    from microexpr.pipeline import EpisodeInProgress
    from microexpr.service.items import Emitted

#: The apex is taken as passed when the activity has not exceeded its peak for this long.
APEX_CONFIRM_S = 0.1
#: A movement that keeps growing (a smile broadening) gets an ``update`` per
#: confirmed new peak, at most this many: subscribers are told, not flooded.
MAX_UPDATES = 4


class LifecycleType(StrEnum):
    NEW = "new"
    UPDATE = "update"
    END = "end"


class Outcome(StrEnum):
    EMITTED = "emitted"  #: the episode became an event (``event`` carries it)
    DISCARDED = "discarded"  #: the engine dropped the movement (``reason``)


@dataclass(frozen=True, slots=True)
class LifecycleNotice:
    """One lifecycle message (``schemas/event_lifecycle.v1.json``)."""

    type: LifecycleType
    event_id: str
    device_id: str
    sequence: int
    subject_id: int
    onset_s: float
    onset_frame: int
    apex_s: float | None
    apex_frame: int | None
    peak_z: float
    aus: tuple[AUActivation, ...]
    outcome: Outcome | None = None
    reason: str | None = None
    event: Event | None = None
    time: str = ""
    schema_version: str = SCHEMA_VERSION

    @property
    def key(self) -> str:
        """Outbox key part: one stored message per event and type."""
        return f"{self.event_id}.{self.type.value}"

    def to_payload(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "type": self.type.value,
            "event_id": self.event_id,
            "device_id": self.device_id,
            "time": self.time or utc_now_iso(),
            "sequence": self.sequence,
            "subject_id": self.subject_id,
            "monotonic": {"onset_s": round(self.onset_s, 4),
                          "apex_s": round(self.apex_s, 4) if self.apex_s is not None else None},
            "frames": {"onset": self.onset_frame, "apex": self.apex_frame},
            "peak_z": round(max(0.0, self.peak_z), 3),
            "aus": [{"au": a.au.code, "side": a.side.value, "intensity": round(min(1.0, max(0.0, a.intensity)), 3)}
                    for a in self.aus],
            "outcome": self.outcome.value if self.outcome is not None else None,
            "reason": self.reason,
            "event": self.event.to_payload() if self.event is not None else None,
        }

    def to_json(self) -> str:
        return dumps(self.to_payload())


@dataclass(slots=True)
class _Open:
    event_id: str
    subject_id: int
    onset_s: float
    onset_frame: int
    peak_s: float
    peak_frame: int
    peak_z: float
    aus: tuple[AUActivation, ...]
    sequence: int = 0
    #: the peak frame the last ``update`` reported (-1: none yet)
    told_peak: int = -1
    updates: int = 0


class LifecycleTracker:
    """Turns the pipeline's open and finished episodes into lifecycle notices.

    Call :meth:`step` once per frame result, in order (and once with no open
    episodes after ``Pipeline.finish()``). It returns the notices to send and
    the event id each finished episode must carry.
    """

    def __init__(self, device_id: str, *, apex_confirm_s: float = APEX_CONFIRM_S) -> None:
        self.device_id = device_id
        self.apex_confirm_s = apex_confirm_s
        self._open: dict[int, _Open] = {}
        #: ids handed out for finished episodes, waiting for their event (end_notice)
        self._pending_end: dict[str, _Open] = {}
        #: notices produced, per type (stats and tests)
        self.counts: dict[str, int] = {t.value: 0 for t in LifecycleType} | {o.value: 0 for o in Outcome}

    def step(
        self, in_progress: Sequence[EpisodeInProgress], emitted: Sequence[Emitted], now_s: float,
    ) -> tuple[list[LifecycleNotice], list[str]]:
        """Notices for this frame, and one event id per ``emitted`` episode (same order).

        ``end`` notices carry no event yet: the caller builds the event with
        the returned id and completes them with :meth:`end_notice`.
        """
        notices: list[LifecycleNotice] = []
        ids: list[str] = []
        still_open = {item.subject_id: item for item in in_progress}
        # finished episodes: the open record of their subject, or a fresh one (opened and closed at once)
        for item in emitted:
            sid = item.episode.subject_id
            record = self._open.pop(sid, None)
            if record is None or not _same(record, item):
                if record is not None:  # an older open record the engine dropped
                    notices.append(self._discard(record, "superseded by another episode"))
                record = self._new_record(sid, item.episode.onset_ts, item.episode.onset_frame,
                                          item.episode.apex_ts, item.episode.apex_frame,
                                          item.episode.peak_z, item.episode.activations)
                notices.append(self._notice(record, LifecycleType.NEW))
            ids.append(record.event_id)
            self._pending_end[record.event_id] = record
        # open episodes: new ones, and the apex once passed
        for sid, item in still_open.items():
            ep = item.episode
            record = self._open.get(sid)
            if record is not None and ep.onset_frame != record.onset_frame and ep.onset_frame > record.peak_frame:
                notices.append(self._discard(self._open.pop(sid), "the engine closed it without an event"))
                record = None
            if record is None:
                record = self._new_record(sid, ep.onset_ts, ep.onset_frame, ep.peak_ts, ep.peak_frame, ep.peak_z,
                                          item.activations)
                self._open[sid] = record
                notices.append(self._notice(record, LifecycleType.NEW, apex=False))
                continue
            if ep.peak_frame != record.peak_frame:
                record.peak_s, record.peak_frame, record.peak_z = ep.peak_ts, ep.peak_frame, ep.peak_z
                if item.activations:
                    record.aus = item.activations
            if (record.peak_frame != record.told_peak and record.updates < MAX_UPDATES
                    and now_s - record.peak_s >= self.apex_confirm_s):
                record.told_peak = record.peak_frame
                record.updates += 1
                notices.append(self._notice(record, LifecycleType.UPDATE))
        # open records whose episode is gone without an event: dropped by the engine
        for sid in [sid for sid in self._open if sid not in still_open]:
            notices.append(self._discard(self._open.pop(sid), "rejected or suppressed by the engine"))
        return notices, ids

    def end_notice(self, event: Event) -> LifecycleNotice | None:
        """The ``end`` notice of an event whose id :meth:`step` handed out."""
        record = self._pending_end.pop(event.event_id, None)
        if record is None:
            return None
        return self._notice(record, LifecycleType.END, outcome=Outcome.EMITTED, event=event)

    def discard(self, event_id: str, reason: str) -> LifecycleNotice | None:
        """The ``end`` of an id handed out whose event could not be built."""
        record = self._pending_end.pop(event_id, None)
        return self._discard(record, reason) if record is not None else None

    # -- helpers -------------------------------------------------------------

    def _new_record(self, sid: int, onset_s: float, onset_frame: int, peak_s: float, peak_frame: int,
                    peak_z: float, aus: tuple[AUActivation, ...]) -> _Open:
        return _Open(str(uuid.uuid4()), sid, onset_s, onset_frame, peak_s, peak_frame, peak_z, tuple(aus))

    def _discard(self, record: _Open, reason: str) -> LifecycleNotice:
        return self._notice(record, LifecycleType.END, outcome=Outcome.DISCARDED, reason=reason)

    def _notice(self, record: _Open, kind: LifecycleType, *, apex: bool = True, outcome: Outcome | None = None,
                reason: str | None = None, event: Event | None = None) -> LifecycleNotice:
        sequence = record.sequence
        record.sequence += 1
        self.counts[kind.value] += 1
        if outcome is not None:
            self.counts[outcome.value] += 1
        if event is not None:  # the end: what the decision was made on
            onset_s, onset_frame, apex_s, apex_frame = event.onset_s, event.onset_frame, event.apex_s, event.apex_frame
            aus = event.aus
        else:
            onset_s, onset_frame, aus = record.onset_s, record.onset_frame, record.aus
            apex_s, apex_frame = (record.peak_s, record.peak_frame) if apex else (None, None)
        return LifecycleNotice(
            type=kind, event_id=record.event_id, device_id=self.device_id, sequence=sequence,
            subject_id=record.subject_id, onset_s=onset_s, onset_frame=onset_frame, apex_s=apex_s,
            apex_frame=apex_frame, peak_z=record.peak_z, aus=tuple(aus), outcome=outcome, reason=reason,
            event=event, time=utc_now_iso(),
        )


def _same(record: _Open, item: Emitted) -> bool:
    """The finished episode is the open one: it spans the open record's peak (or onset)."""
    ep = item.episode
    return ep.onset_frame <= max(record.peak_frame, record.onset_frame) and ep.offset_frame >= record.onset_frame

"""The fleet view: per-device health and events from what devices already publish.

A central consumer (``microexpr fleet``) sees, for every device, only the
topics of docs/mqtt.md: the retained ``availability`` and ``stats`` and the
``event`` records. This module turns that message stream into one row per
device; it knows nothing about MQTT clients (``microexpr.fleet_mqtt`` feeds it).

**De-duplication rule** (docs/mqtt.md, "Delivery"): delivery is at least once,
and every copy of an event carries the same ``event_id`` (a UUID4, unique per
episode across devices). The first copy of an ``event_id`` counts; later
copies are counted as ``duplicates`` of their device and otherwise ignored.
Ids are remembered in a bounded LRU (:data:`SEEN_IDS`), far more than the
events of any plausible outage.

**Window**: ``events`` per label counts the unique events whose own ``time``
(when the device emitted them) lies within the last ``window_s`` seconds, so
events delivered late after an outage are counted when they happened, not
when they arrived.

Malformed payloads (not JSON, a stats message without its fields) are counted
per device as ``malformed`` and logged at most once a minute per device:
a device with a broken publisher shows up, it is not silently skipped.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)

#: Event ids remembered for de-duplication (oldest forgotten first).
SEEN_IDS = 100_000
#: Malformed-payload warnings per device: at most one per this many seconds.
LOG_EVERY_S = 60.0


class Topic(StrEnum):
    """The per-device topics the fleet view reads (``<prefix>/<device>/<kind>``)."""

    AVAILABILITY = "availability"
    STATS = "stats"
    EVENT = "event"


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device as the fleet view shows it; None = not known yet."""

    device_id: str
    availability: str | None
    health: str | None
    fps: float | None
    latency_p95_ms: float | None
    dropped_frames: int | None
    outbox_depth: int | None
    #: Seconds since the device's last ``stats`` was emitted (its own ``time``).
    stats_age_s: float | None
    #: Unique events seen since the view started, and per label within the window.
    events_total: int
    events: Mapping[str, int]
    duplicates: int
    malformed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id, "availability": self.availability, "health": self.health,
            "fps": self.fps, "latency_p95_ms": self.latency_p95_ms, "dropped_frames": self.dropped_frames,
            "outbox_depth": self.outbox_depth, "stats_age_s": self.stats_age_s,
            "events_total": self.events_total, "events": dict(self.events),
            "duplicates": self.duplicates, "malformed": self.malformed,
        }


@dataclass
class _Device:
    availability: str | None = None
    stats: dict[str, Any] | None = None
    #: (emitted at, epoch seconds; label) of unique events, oldest first.
    events: deque[tuple[float, str]] = field(default_factory=deque)
    events_total: int = 0
    duplicates: int = 0
    malformed: int = 0
    last_warning: float = float("-inf")


def parse_time(text: Any) -> float | None:
    """ISO-8601 UTC (``2025-06-01T12:00:04.433Z``) → epoch seconds; None if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


class FleetView:
    """Aggregates messages into :class:`DeviceRow` s. Not thread-safe: one feeder."""

    def __init__(self, *, topic_prefix: str = "microexpr", window_s: float = 300.0) -> None:
        self.topic_prefix = topic_prefix
        self.window_s = window_s
        self._devices: dict[str, _Device] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: Messages on other topics (aus, event/refined, discovery): read, not shown.
        self.ignored = 0

    def feed(self, topic: str, payload: bytes, *, now: float | None = None) -> None:
        """One received message (any topic under the prefix)."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != self.topic_prefix:
            self.ignored += 1
            return
        device_id, kind = parts[1], parts[2]
        if kind not in Topic.__members__.values():
            self.ignored += 1
            return
        device = self._devices.setdefault(device_id, _Device())
        now = time.time() if now is None else now
        if kind == Topic.AVAILABILITY:
            device.availability = payload.decode("utf-8", "replace").strip() or None
            return
        try:
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if kind == Topic.STATS:
                self._stats(device, data)
            else:
                self._event(device, data, now)
        except (ValueError, KeyError, TypeError) as exc:
            device.malformed += 1
            if now - device.last_warning >= LOG_EVERY_S:
                device.last_warning = now
                log.warning("%s: malformed %s payload (%s); %d so far", device_id, kind, exc, device.malformed)

    @staticmethod
    def _stats(device: _Device, data: dict[str, Any]) -> None:
        for key in ("fps", "dropped_frames", "outbox", "latency_ms"):
            if key not in data:
                raise KeyError(f"stats without {key!r}")
        device.stats = data

    def _event(self, device: _Device, data: dict[str, Any], now: float) -> None:
        event_id = data["event_id"]
        label = data["emotion"]
        if not isinstance(event_id, str) or not isinstance(label, str):
            raise TypeError("event_id and emotion must be strings")
        if event_id in self._seen:
            self._seen.move_to_end(event_id)
            device.duplicates += 1
            return
        self._seen[event_id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        emitted = parse_time(data.get("time"))
        device.events_total += 1
        device.events.append((emitted if emitted is not None else now, label))

    def rows(self, *, now: float | None = None) -> list[DeviceRow]:
        """One row per device seen, sorted by device id."""
        now = time.time() if now is None else now
        out = []
        for device_id in sorted(self._devices):
            device = self._devices[device_id]
            cutoff = now - self.window_s
            while device.events and device.events[0][0] < cutoff:
                device.events.popleft()
            labels = Counter(label for emitted, label in device.events if emitted >= cutoff)
            stats = device.stats or {}
            latency = (stats.get("latency_ms") or {}).get("total") or {}
            stats_time = parse_time(stats.get("time"))
            out.append(DeviceRow(
                device_id=device_id,
                availability=device.availability,
                health=stats.get("health"),
                fps=stats.get("fps"),
                latency_p95_ms=latency.get("p95"),
                dropped_frames=stats.get("dropped_frames"),
                outbox_depth=(stats.get("outbox") or {}).get("depth"),
                stats_age_s=round(now - stats_time, 1) if stats_time is not None else None,
                events_total=device.events_total,
                events=dict(sorted(labels.items())),
                duplicates=device.duplicates,
                malformed=device.malformed,
            ))
        return out


def render_table(rows: list[DeviceRow], window_s: float) -> str:
    """The rows as a fixed-width text table (what ``microexpr fleet`` prints)."""
    def shown(value: Any, fmt: str = "{}") -> str:
        return "-" if value is None else fmt.format(value)

    header = ("device", "avail", "health", "fps", "p95 ms", "dropped", "outbox", "events", "dup",
              f"labels (last {window_s:g} s)")
    lines = [header]
    for row in rows:
        labels = " ".join(f"{label}={count}" for label, count in row.events.items()) or "-"
        lines.append((row.device_id, shown(row.availability), shown(row.health), shown(row.fps, "{:.1f}"),
                      shown(row.latency_p95_ms, "{:.0f}"), shown(row.dropped_frames), shown(row.outbox_depth),
                      str(row.events_total), str(row.duplicates), labels))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
                     for line in lines)

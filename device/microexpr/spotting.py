"""Onset/apex/offset episodes in a live evidence stream, causally.

The spotter reads one ``Evidence`` per frame (``baseline.py``) and emits an
``Episode`` a bounded time after the movement has ended:

* **Open** when ``activity`` (largest region z-score) stays at or above
  ``on_z`` for ``min_active_s`` (20 ms: one frame at 25–30 fps, four at
  200 fps — so a 2-frame event at 30 fps and a 40 ms event at 200 fps both
  qualify).
* **Close** once activity has stayed below ``max(off_z, floor_fraction ×
  peak)`` for ``release_s``; the episode is emitted right then, so it
  leaves about ``release_s`` after its offset, and never more than
  ``emit_delay_s`` (``release_s`` is capped by it).
* **Re-arm**: after an episode the activity must fall below ``off_z`` for
  ``release_s`` before another can open (the tail of a released macro
  expression is not a new micro-expression).
* **Cap**: an episode still open after ``max_episode_s`` is emitted as a
  truncated macro episode; the spotter then waits for the face to settle
  before it can open another.
* **Boundaries and apex after the fact.** Detection runs on the causally
  smoothed activity; once the episode is closed, the apex is placed on the
  *unsmoothed* activity (centred moving average over ``apex_smooth_s``),
  without the filter's lag, and onset/offset on the unsmoothed z of the
  region that carries the movement at the apex: onset = the last frame
  before the rise at or below ``max(floor_z, floor_fraction × peak)``,
  offset = the first such frame after the apex (and not before the
  episode's causal end, which keeps the latency bound).
* **Rejections**: an episode during which the head was gated for more than
  ``max_gated_fraction`` of its length, next to gated frames, or during
  which the head rotated more than ``max_*_change_deg`` (rigid head
  motion, even when too slow for the gate), or whose only
  moving regions are the lids while a blink/gaze flag was up (blinks, gaze
  shifts), or whose AUs are one-sided on both sides at once (no muscle
  does that; codec artefacts do: ``Rejection.SIDE_MIX``), is dropped and
  counted in ``rejected``.

All parameters are in seconds or robust-z units; none in frames.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

import numpy as np

from microexpr.baseline import FULL_SCALE_IOD, LID_REGIONS, Evidence
from microexpr.facs import AU, AUActivation, Side
from microexpr.motion import Region

log = logging.getLogger(__name__)


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
    #: Largest region z-score in the episode.
    peak_z: float = 0.0
    #: Regions at or above the onset threshold at the apex, strongest first.
    regions: tuple[str, ...] = ()
    #: The episode hit ``max_episode_s`` and was emitted while still going on.
    truncated: bool = False
    #: Timestamp of the frame whose processing emitted the episode.
    emitted_ts: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.offset_ts - self.onset_ts


class Rejection(StrEnum):
    """Why a candidate episode was dropped (``Spotter.rejected`` counts)."""

    HEAD_MOTION = "head_motion"
    BLINK = "blink"
    GAZE = "gaze"
    TOO_SHORT = "too_short"
    #: AUs named one-sided on *both* sides (e.g. R2+L14): no muscle pulls one
    #: side here and the other side there at once; codec blocks and residual
    #: rigid motion do.
    SIDE_MIX = "side_mix"


@dataclass(frozen=True, slots=True)
class SpotterConfig:
    #: Activity that opens an episode (robust z). On neutral frames of the
    #: real clip (60 s, 30 fps, through mp4) the largest of the 18 region
    #: z-scores reached 6.1 once (99.9th percentile 5.4): 7 keeps a margin.
    on_z: float = 7.0
    off_z: float = 3.5  #: the carrier region keeps the episode going above this
    min_active_s: float = 0.02  #: time at or above on_z needed to open
    release_s: float = 0.12  #: below off_z this long closes the episode
    emit_delay_s: float = 0.2  #: bound on offset → emission (≥ release_s)
    micro_max_s: float = 0.5  #: longest onset→offset called micro
    max_episode_s: float = 4.0  #: cap: longer episodes are emitted truncated
    pre_roll_s: float = 0.6  #: history kept to place the onset
    floor_z: float = 3.0  #: boundary level: the carrier region at or below this…
    floor_fraction: float = 0.15  #: …or this fraction of the peak, whichever is higher
    apex_smooth_s: float = 0.015  #: centred smoothing for apex/boundaries (1 frame up to 66 fps, 3 at 200)
    min_evidence_z: float = 3.0  #: an AU is active at the apex with evidence ≥ this
    side_ratio: float = 2.0  #: one side's evidence this many times the other's → one-sided
    #: An AU must also reach this fraction of the strongest AU's evidence: a
    #: strong pull drags neighbouring skin (a smile lifts the nose wings and
    #: the upper lip by a third of the corners' travel, measured on the real
    #: smile), which must not be named as AU9/AU10 of its own.
    relative_min: float = 0.5
    #: The estimator names the AUs once its largest rise over neutral reaches
    #: this (out of the blendshapes' dead zone; a real broad smile rises ≈0.9)…
    estimator_trust: float = 0.4
    #: …taking the AUs that rise at least this fraction of the largest.
    estimator_relative: float = 0.35
    max_gated_fraction: float = 0.3  #: more of the episode gated → head motion
    #: Gated frames this close before the onset or after the offset → head
    #: motion too: a head turn starts before the pose speed crosses the gate
    #: (the speed is measured over 0.1 s), and its first frames look like a
    #: short movement of every region.
    motion_guard_s: float = 0.1
    #: The head may not rotate more than this (range over the episode) in
    #: yaw / roll / pitch: a slow turn below the speed gate still reads as
    #: movement in every region. Expressions themselves move the fitted pose
    #: (measured with the head still: yaw ≤ 0.3°, roll ≤ 0.3°, pitch up to
    #: 2.5° for brow and lid actions; the real smile: yaw 1.0°, pitch 2.5°).
    max_yaw_change_deg: float = 1.5
    max_roll_change_deg: float = 2.0
    max_pitch_change_deg: float = 4.0
    #: …plus this much per second of episode: people sway during a held
    #: expression (the real smile: 1.35° of yaw over 1.9 s).
    pose_sway_dps: float = 1.0
    #: After a cap the spotter holds until the capped expression's regions
    #: are back at rest, however long that takes: a smile held for minutes
    #: is one (truncated) episode, never repeated, and never becomes the
    #: resting face. Only when the regions stay displaced this long while
    #: the estimator sees no AU above the subject's neutral
    #: (``Evidence.expression_rise`` below ``hold_rest_rise``, FACS trace)
    #: is the motion reference taken to be stale (posture, light) and
    #: renewed.
    hold_rebase_s: float = 10.0
    hold_rest_rise: float = 0.25
    #: Drop episodes whose AUs are one-sided on both sides (``Rejection.SIDE_MIX``).
    reject_side_mix: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.off_z <= self.on_z:
            raise ValueError(f"spotter: need 0 < off_z <= on_z, got {self.off_z}, {self.on_z}")
        if self.emit_delay_s < 0 or self.micro_max_s <= 0 or self.max_episode_s <= self.micro_max_s:
            raise ValueError("spotter: need emit_delay_s >= 0, micro_max_s > 0, max_episode_s > micro_max_s")

    @property
    def effective_release_s(self) -> float:
        return min(self.release_s, self.emit_delay_s)


@dataclass(frozen=True, slots=True)
class OpenEpisode:
    """What is known of an episode still open (read-only, for early notices).

    The onset is where the activity first crossed ``on_z`` and the peak the
    strongest frame so far: both provisional (the closed :class:`Episode`
    places its boundaries on the smoothed carrier region). Reading it never
    changes the spotter's decisions.
    """

    onset_frame: int
    onset_ts: float
    peak_frame: int
    peak_ts: float
    peak_z: float
    #: the region carrying the movement so far
    carrier: str | None


class _State(StrEnum):
    IDLE = "idle"
    ACTIVE = "active"
    HOLD = "hold"  #: after a truncated episode, until the face settles


@dataclass(slots=True)
class _Open:
    """The episode being collected."""

    frames: list[Evidence] = field(default_factory=list)
    start: int = 0  #: index in ``frames`` of the first frame over on_z
    last_above_t: float = 0.0
    peak: float = 0.0
    #: the region carrying the movement (largest z at the peak so far)
    carrier: Region | None = None
    carrier_peak: float = 0.0
    #: region z-scores at the peak
    peak_regions: Mapping[Region, float] = field(default_factory=dict)


class Spotter:
    """Causal episode spotter for one subject. ``update`` once per frame."""

    def __init__(self, config: SpotterConfig | None = None) -> None:
        self.config = config or SpotterConfig()
        self.rejected: Counter[Rejection] = Counter()
        self.reset()

    def reset(self) -> None:
        self._state = _State.IDLE
        self._history: deque[Evidence] = deque()
        self._open: _Open | None = None
        self._above_since: float | None = None
        self._hold_since = 0.0
        self._quiet_since: float | None = None
        self._wants_rebase = False
        self._armed = True
        self._calm_since: float | None = None
        #: regions of the last episode (its carrier and those strong at its apex)
        self._released: frozenset[Region] = frozenset()
        #: the AUs the last episode was named with (what a hold waits on)
        self._released_aus: frozenset[AU] = frozenset()
        #: not re-armed since (the released regions stayed displaced)
        self._disarmed_since = 0.0

    @property
    def busy(self) -> bool:
        """An episode is open (or the face has not settled after a cap)."""
        return self._state is not _State.IDLE

    @property
    def at_rest(self) -> bool:
        """Idle and re-armed: no episode open, and the face came back to rest
        after the last one (not in the tail of a released expression, nor
        holding one after a cap)."""
        return self._state is _State.IDLE and self._armed

    @property
    def holding(self) -> bool:
        """After a truncated (capped) episode, waiting for the face to settle."""
        return self._state is _State.HOLD

    @property
    def active(self) -> bool:
        """An episode is open."""
        return self._state is _State.ACTIVE

    @property
    def in_progress(self) -> OpenEpisode | None:
        """The open episode as known at the last frame; None when none is open."""
        op = self._open
        if self._state is not _State.ACTIVE or op is None or not op.frames:
            return None
        onset = op.frames[op.start]
        peak = max(op.frames[op.start:], key=lambda e: e.activity)
        return OpenEpisode(onset.frame_index, onset.timestamp, peak.frame_index, peak.timestamp,
                           float(op.peak), op.carrier.value if op.carrier is not None else None)

    def take_rebase_request(self) -> bool:
        """True once when the neutral reference should be renewed: after an
        episode rejected as head motion, or a long hold after a cap."""
        wanted, self._wants_rebase = self._wants_rebase, False
        return wanted

    # -- per frame
    def update(self, ev: Evidence) -> list[Episode]:
        c = self.config
        out: list[Episode] = []
        t = ev.timestamp
        if self._state is _State.IDLE:
            self._history.append(ev)
            while self._history and t - self._history[0].timestamp > c.pre_roll_s:
                self._history.popleft()
            if not self._armed:
                # after an episode the face must come back to rest (below
                # off_z for release_s) before a new one can open: the tail of
                # a released expression is not a new expression
                if ev.activity >= c.off_z and not self._released_quiet(ev):
                    self._calm_since = None
                    self._check_stale(ev, "not re-armed")
                elif self._calm_since is None:
                    self._calm_since = t
                self._armed = self._calm_since is not None and t - self._calm_since >= c.effective_release_s - 1e-9
            if ev.activity >= c.on_z and self._armed:
                if self._above_since is None:
                    self._above_since = self._prev_t(ev)
                if t - self._above_since >= c.min_active_s - 1e-9:
                    frames = list(self._history)
                    first_above = len(frames) - 1
                    while first_above > 0 and frames[first_above - 1].activity >= c.on_z:
                        first_above -= 1
                    self._open = _Open(frames, first_above, t, ev.activity, ev.top_region,
                                       ev.region_z.get(ev.top_region, ev.activity) if ev.top_region else ev.activity)
                    self._state = _State.ACTIVE
                    self._history.clear()
                    self._above_since = None
            else:
                self._above_since = None
            return out

        if self._state is _State.ACTIVE:
            op = self._open
            assert op is not None
            op.frames.append(ev)
            if ev.activity > op.peak:
                op.peak = ev.activity
                op.peak_regions = ev.region_z
                if ev.top_region is not None:
                    op.carrier, op.carrier_peak = ev.top_region, ev.region_z.get(ev.top_region, ev.activity)
            # The episode lasts while the region carrying it stays above the
            # level its boundaries are later placed at (so the emission
            # follows the offset by release_s, whatever the peak), or while a
            # strong movement goes on anywhere. Not "any region above
            # off_z": the largest of 18 noisy regions often is.
            carrier_z = ev.region_z.get(op.carrier, ev.activity) if op.carrier is not None else ev.activity
            if not ev.ready or ev.gated:
                carrier_z = 0.0  # no usable evidence (head moving, stale reference, face lost)
            if carrier_z >= max(c.off_z, c.floor_fraction * op.carrier_peak) or ev.activity >= c.on_z:
                op.last_above_t = t
            onset_t = op.frames[op.start].timestamp
            if t - op.last_above_t >= c.effective_release_s - 1e-9:
                episode = self._close(op, t, truncated=False)
                self._state = _State.IDLE
                self._open = None
                self._released = self._moved(op)
                self._released_aus = _aus_of(episode)
                self._disarmed_since = t
                self._armed = ev.activity < c.off_z
                self._calm_since = t if self._armed else None
                # frames after the offset seed the next pre-roll
                if episode is not None:
                    out.append(episode)
                self._history = deque(e for e in op.frames if e.timestamp > t - c.pre_roll_s and e.timestamp > op.last_above_t)
            elif t - onset_t >= c.max_episode_s:
                episode = self._close(op, t, truncated=True)
                if episode is not None:
                    out.append(episode)
                self._released = self._moved(op)
                self._released_aus = _aus_of(episode)
                self._state = _State.HOLD
                self._open = None
                self._hold_since = t
                self._quiet_since = None
            return out

        # HOLD: wait for the capped expression to be over
        if not ev.ready or ev.gated:
            # no evidence either way (head moving, stale pose, face lost);
            # a pose that stays stale is the baseline's to renew, which it
            # does only once the spotter lets go (the pipeline then defers
            # the new reference until the face is at rest)
            self._quiet_since = None
            if t - self._hold_since >= c.hold_rebase_s:
                self._state = _State.IDLE
                self._armed, self._calm_since = False, None  # the held expression is not a new one
                self._disarmed_since = t
                self._history.clear()
            return out
        if ev.activity < c.off_z or self._released_quiet(ev):
            if self._quiet_since is None:
                self._quiet_since = t
            if t - self._quiet_since >= c.effective_release_s - 1e-9:
                self._state = _State.IDLE
                self._armed = True
                self._history.clear()
        else:
            self._quiet_since = None
            if self._held_rise(ev) >= c.hold_rest_rise:
                self._hold_since = t  # still the expression: keep holding, never absorb it
            elif t - self._hold_since >= c.hold_rebase_s:
                log.info("regions displaced %.0f s after a capped episode with none of its AUs (%s) above neutral: "
                         "the motion reference is stale, renewing it", t - self._hold_since,
                         "+".join(str(a) for a in sorted(self._released_aus)) or "any")
                self._wants_rebase = True
                self._state = _State.IDLE
                self._armed, self._calm_since = False, None
                self._disarmed_since = t
                self._history.clear()
        return out

    def _held_rise(self, ev: Evidence) -> float:
        """How far the estimator sees the last episode's expression above the
        subject's neutral: the largest rise of the AUs it was named with
        (any expressive AU when it was named with none). Another expression
        coming and going — the next smile of a looped clip, a mouth that
        talks — says nothing about whether this one is still held; counted
        before, one every few seconds kept a hold on a stale reference for
        good (issue 12)."""
        if not self._released_aus:
            return ev.expression_rise
        return max((max(ev.rise_left.get(a, 0.0), ev.rise_right.get(a, 0.0)) for a in self._released_aus), default=0.0)

    def _check_stale(self, ev: Evidence, where: str) -> None:
        """Not re-armed because the last episode's regions stay displaced: as
        in a hold, once they have stayed so for ``hold_rebase_s`` while the
        estimator sees none of its AUs above neutral, the reference is stale
        (posture, light, or a reference taken while the face moved), and a
        new one is asked for; the regions then come back to rest and the
        spotter re-arms. Without this the spotter stayed disarmed for good."""
        c = self.config
        if not ev.ready or ev.gated:
            return
        t = ev.timestamp
        if self._held_rise(ev) >= c.hold_rest_rise:
            self._disarmed_since = t
        elif t - self._disarmed_since >= c.hold_rebase_s:
            log.info("regions displaced %.0f s after an episode (%s) with none of its AUs (%s) above neutral: "
                     "the motion reference is stale, renewing it", t - self._disarmed_since, where,
                     "+".join(str(a) for a in sorted(self._released_aus)) or "any")
            self._wants_rebase = True
            self._disarmed_since = t

    def finish(self) -> list[Episode]:
        """End of stream: close an open episode at the last frame."""
        out: list[Episode] = []
        if self._state is _State.ACTIVE and self._open is not None and self._open.frames:
            last = self._open.frames[-1].timestamp
            episode = self._close(self._open, last, truncated=False, at_end=True)
            if episode is not None:
                out.append(episode)
        self.reset()
        return out

    def _moved(self, op: _Open) -> frozenset[Region]:
        """The regions that carried an episode: its carrier and those at
        ``on_z`` and a quarter of the peak or more at the peak (not the lids;
        a broad smile drags every region past ``on_z / 2``, the brows to z
        3-5, so a lower bar would name the whole face)."""
        bar = max(self.config.on_z, 0.25 * op.peak)
        moved = {r for r, z in op.peak_regions.items() if z >= bar and r not in LID_REGIONS}
        if op.carrier is not None:
            moved.add(op.carrier)
        return frozenset(moved)

    def _released_quiet(self, ev: Evidence) -> bool:
        """The regions that carried the last episode are all back below
        ``off_z``: its tail is over, even if another region sits a little
        above ``off_z`` (a resting face read a little off its baseline).
        Without this, a re-arm needed *every* region quiet, and on the looped
        real clip a brow resting at z 4-6 kept the spotter disarmed for good."""
        if not self._released or not ev.region_z:
            return False
        return all(ev.region_z.get(r, 0.0) < self.config.off_z for r in self._released)

    def _prev_t(self, ev: Evidence) -> float:
        """Start of the frame interval ``ev`` represents (its predecessor's time)."""
        if len(self._history) >= 2:
            return self._history[-2].timestamp
        return ev.timestamp

    # -- closing
    def _close(self, op: _Open, now: float, *, truncated: bool, at_end: bool = False) -> Episode | None:
        c = self.config
        frames = op.frames
        ts = np.array([e.timestamp for e in frames])
        raw = np.array([e.activity_raw for e in frames])
        smooth = _centred_mean(ts, raw, c.apex_smooth_s)
        # the apex lies where the movement was detected, after the rise
        search = slice(op.start, len(frames))
        apex = op.start + int(np.argmax(smooth[search]))
        # Boundaries follow the region that carries the movement: the max
        # over all regions sits at ~2.5 z on noise alone (18 regions), one
        # region at ~1.2, so its return to rest is visible.
        top = frames[apex].top_region
        if top is not None and all(top in e.region_z_raw for e in frames):
            carrier = _centred_mean(ts, np.array([e.region_z_raw[top] for e in frames]), c.apex_smooth_s)
        else:
            carrier = smooth
        peak = float(carrier[apex])
        level = max(c.floor_z, c.floor_fraction * peak)
        onset = apex
        while onset > 0 and carrier[onset] > level:
            onset -= 1
        if level >= 2 * c.floor_z:
            # A strong expression: one region's flow jitters inside it (the
            # looped real smile's left corner fell from z 61 to below 9 for a
            # frame, 0.6 s into the smile, and the onset was put there). The
            # strongest region stays far above the level until the rise
            # began, and at rest it sits at ~2.5 z, far below a level ≥ 6.
            while onset > 0 and smooth[onset] > level:
                onset -= 1
        if ts[apex] - ts[onset] > c.micro_max_s:
            onset = _rise_start(ts, carrier, onset, apex, c.floor_z)
        offset = apex
        while offset < len(frames) - 1 and carrier[offset] > level:
            offset += 1
        # never before the last frame the (causal) episode was still going:
        # that is what bounds offset → emission by release_s
        last_going = max((i for i, e in enumerate(frames) if e.timestamp <= op.last_above_t), default=offset)
        offset = max(offset, min(last_going + 1, len(frames) - 1))
        if truncated or (at_end and carrier[offset] > level):
            offset = len(frames) - 1
        span = frames[onset : offset + 1]
        gated = sum(1 for e in span if e.gated) / max(len(span), 1)
        t_on, t_off = frames[onset].timestamp, frames[offset].timestamp
        near = any(
            e.gated for e in frames
            if t_on - c.motion_guard_s <= e.timestamp < t_on or t_off < e.timestamp <= t_off + c.motion_guard_s
        )
        def rotated(evs: Sequence[Evidence], allowance: float) -> bool:
            poses = [e.pose for e in evs if e.pose is not None]
            return bool(poses) and (
                float(np.ptp([p.yaw for p in poses])) > c.max_yaw_change_deg + allowance
                or float(np.ptp([p.roll for p in poses])) > c.max_roll_change_deg + allowance
                or float(np.ptp([p.pitch for p in poses])) > c.max_pitch_change_deg + allowance
            )

        # the rise (from just before the onset to the apex) must not come
        # with a head rotation; the whole episode may sway a little more
        rise = [e for e in frames[: apex + 1] if e.timestamp >= t_on - c.motion_guard_s]
        turned = rotated(rise, 0.0) or rotated(span, c.pose_sway_dps * (t_off - t_on))
        if gated > c.max_gated_fraction or near or turned:
            self.rejected[Rejection.HEAD_MOTION] += 1
            # the head moved: the neutral reference is probably stale (a turn
            # too small for the baseline's pose limit still leaves every
            # region displaced); ask for a new one unless the head is still
            # moving (then the baseline renews it once the head settles)
            if not frames[-1].gated:
                self._wants_rebase = True
            log.debug("episode %.3f-%.3f s rejected: head motion (%.0f%% gated, near gated %s, rotated %s)",
                      t_on, t_off, 100 * gated, near, turned)
            return None
        ap = frames[apex]
        strong = sorted(
            ((z, r) for r, z in ap.region_z.items() if z >= c.on_z * 0.5), key=lambda item: -item[0]
        )
        moving = [r for _z, r in strong] or ([ap.top_region] if ap.top_region else [])
        if moving and all(r in LID_REGIONS for r in moving):
            for reason, flagged in ((Rejection.BLINK, any(e.blink for e in span)), (Rejection.GAZE, any(e.gaze for e in span))):
                if flagged:
                    self.rejected[reason] += 1
                    log.debug("episode %.3f-%.3f s rejected: lids only, %s", t_on, t_off, reason.value)
                    return None
        on, off = frames[onset], frames[offset]
        activations = activations_at(_apex_evidence(frames[onset:offset + 1], smooth[onset:offset + 1]), c)
        mixed = _side_mix(activations)
        if mixed and c.reject_side_mix:
            self.rejected[Rejection.SIDE_MIX] += 1
            log.debug("episode %.3f-%.3f s rejected: one-sided AUs on both sides (%s)", t_on, t_off,
                      "+".join(str(a) for a in activations))
            return None
        duration = off.timestamp - on.timestamp
        kind = EpisodeKind.MICRO if duration <= c.micro_max_s + 1e-9 and not truncated else EpisodeKind.MACRO
        return Episode(
            subject_id=ap.subject_id,
            onset_frame=on.frame_index,
            apex_frame=ap.frame_index,
            offset_frame=off.frame_index,
            onset_ts=on.timestamp,
            apex_ts=ap.timestamp,
            offset_ts=off.timestamp,
            kind=kind,
            activations=activations,
            onset_intensity=MappingProxyType(dict(on.intensity)),
            apex_intensity=MappingProxyType(dict(ap.intensity)),
            offset_intensity=MappingProxyType(dict(off.intensity)),
            apex_evidence=MappingProxyType({a: round(z, 3) for a, z in ap.au_z.items() if z > 0}),
            peak_z=round(float(max(e.activity for e in frames[op.start:])), 3),
            regions=tuple(r.value for r in moving),
            truncated=truncated,
            emitted_ts=now,
        )


#: AUs that are not facial expressions: never passed to the classifier.
NON_EXPRESSIVE: frozenset[AU] = frozenset({
    AU.BLINK, AU.WINK, AU.EYES_TURN_LEFT, AU.EYES_TURN_RIGHT, AU.EYES_UP, AU.EYES_DOWN,
    AU.HEAD_TURN_LEFT, AU.HEAD_TURN_RIGHT, AU.HEAD_UP, AU.HEAD_DOWN, AU.HEAD_TILT_LEFT,
    AU.HEAD_TILT_RIGHT, AU.HEAD_FORWARD, AU.HEAD_BACK,
})

_AU_GROUP = {
    AU.INNER_BROW_RAISER: "brows", AU.OUTER_BROW_RAISER: "brows", AU.BROW_LOWERER: "brows",
    AU.UPPER_LID_RAISER: "lids", AU.LID_TIGHTENER: "lids", AU.CHEEK_RAISER: "cheeks",
    AU.NOSE_WRINKLER: "nose", AU.UPPER_LIP_RAISER: "mouth", AU.LIP_CORNER_PULLER: "mouth",
    AU.DIMPLER: "mouth", AU.LIP_CORNER_DEPRESSOR: "mouth", AU.LIP_STRETCHER: "mouth",
    AU.CHIN_RAISER: "chin", AU.LIPS_PART: "mouth", AU.JAW_DROP: "chin",
}


def activations_at(ev: Evidence, config: SpotterConfig | None = None) -> tuple[AUActivation, ...]:
    """AUs active in ``ev`` with side and 0..1 intensity.

    Two sources that fail in opposite places:

    * **Motion** (region movement along each AU's pull, robust z): sees weak
      movements in the estimator's dead zone, but cannot tell a smile's
      lifted nose wings from AU9 (measured on the real smile: the nose
      regions rise as much as the lip corners). Its AUs: z ≥
      ``min_evidence_z`` and ≥ ``relative_min`` of the strongest (a pull
      drags neighbouring skin).
    * **Estimator** (blendshapes + geometry, rise over the subject's
      neutral): trained to *name* AUs on real faces, but reads ~0 on weak
      movements. Its AUs: rise ≥ ``estimator_relative`` of the largest.

    The estimator names the AUs when its largest rise reaches
    ``estimator_trust`` (a strong expression) — unless it contradicts what
    moved: when the two sources share no AU at all, motion wins (a sudden
    one-frame pull, or a face the blendshapes read wrongly). Otherwise
    motion names them.

    Side: L or R when that side's evidence is at least ``side_ratio`` times
    the other's (a one-sided AU14/AU12 is what tells contempt); otherwise
    both. Intensity: the estimator's rise, or the AU-aligned movement over a
    full-scale travel (``FULL_SCALE_IOD``) when that is larger.
    """
    from microexpr.motion import RegionGroup

    c = config or SpotterConfig()
    chosen, threshold = _chosen(ev, c)
    out: list[AUActivation] = []
    for au, (left, right) in chosen.items():
        side = _side(left, right, threshold, c.side_ratio)
        rl, rr = ev.rise_left.get(au, 0.0), ev.rise_right.get(au, 0.0)
        est = rl if side is Side.LEFT else rr if side is Side.RIGHT else max(rl, rr)
        group = _AU_GROUP.get(au)
        full = FULL_SCALE_IOD[RegionGroup(group)] if group else 0.1
        moved = min(1.0, ev.motion_amount.get(au, 0.0) / full)
        out.append(AUActivation(au, side, round(float(min(1.0, max(est, moved))), 3)))
    out.sort(key=lambda a: a.au.value)
    return tuple(out)


def active_aus(ev: Evidence, config: SpotterConfig | None = None) -> frozenset[AU]:
    """The AUs ``activations_at`` names in ``ev``, without their sides and
    intensities: what the subject's context counts on every resting frame
    (the intensities cost more than the choice, and at rest there is
    usually nothing to name)."""
    return frozenset(_chosen(ev, config or SpotterConfig())[0])


def _pick(left: Mapping[AU, float], right: Mapping[AU, float], floor: float, fraction: float, blink: bool
          ) -> dict[AU, tuple[float, float]]:
    """One source's AUs (``activations_at``): at least ``floor`` and
    ``fraction`` of its strongest, per AU the (left, right) evidence."""
    if max(left.values(), default=0.0) < floor and max(right.values(), default=0.0) < floor:
        return {}  # nothing reaches the floor (the usual resting frame): the same empty choice, sooner
    both = {au: max(left.get(au, 0.0), right.get(au, 0.0)) for au in set(left) | set(right) if _usable(au, blink)}
    top = max(both.values(), default=0.0)
    return {au: (left.get(au, 0.0), right.get(au, 0.0)) for au, v in both.items()
            if v >= floor and v >= fraction * top and v > 0}


def _usable(au: AU, blink: bool) -> bool:
    return au not in NON_EXPRESSIVE and not (blink and au is AU.EYES_CLOSED)


def _chosen(ev: Evidence, c: SpotterConfig) -> tuple[dict[AU, tuple[float, float]], float]:
    """The AUs ``activations_at`` names, per AU its (left, right) evidence,
    and the threshold their sides are judged against."""
    motion = _pick(ev.motion_z_left, ev.motion_z_right, c.min_evidence_z, c.relative_min, ev.blink)
    estimator = _pick(ev.rise_left, ev.rise_right, c.estimator_trust * c.estimator_relative, c.estimator_relative,
                      ev.blink)
    top_rise = 0.0
    if estimator:  # else the estimator is not used and its top rise does not matter
        top_rise = max((max(ev.rise_left.get(a, 0.0), ev.rise_right.get(a, 0.0))
                        for a in set(ev.rise_left) | set(ev.rise_right) if _usable(a, ev.blink)), default=0.0)
    use_estimator = top_rise >= c.estimator_trust and bool(estimator)
    if use_estimator and motion and not set(motion) & set(estimator):
        use_estimator = False
    if use_estimator:
        return estimator, c.estimator_relative * top_rise
    return _smile_nose_lift(motion, ev, c), c.min_evidence_z


def _smile_nose_lift(chosen: dict[AU, tuple[float, float]], ev: Evidence, c: SpotterConfig
                     ) -> dict[AU, tuple[float, float]]:
    """Motion's AU9 beside a lip-corner pull is the smile's, not a nose wrinkle.

    AU12 (with AU6) raises the infraorbital triangle and deepens the
    nasolabial furrow, which lifts the nose wings (FACS 2002, appearance
    changes of AU6 and AU12): on the real smile the nose regions rise as
    much as the lip corners, on a weak or looped one up to twice as much, so
    motion alone named AU9+12 or a lone AU9 and the classifier said
    disgust. So when the lip corners were pulled up and out (AU12's motion
    z at ``min_evidence_z``, even below ``relative_min`` of the nose's) and
    the estimator sees no nose wrinkle of its own (its AU9 rise below
    ``estimator_trust × estimator_relative``), AU9 is dropped and AU12 kept
    with its own evidence. A nose wrinkle without a corner pull stays AU9."""
    if AU.NOSE_WRINKLER not in chosen:
        return chosen
    corner = (ev.motion_z_left.get(AU.LIP_CORNER_PULLER, 0.0), ev.motion_z_right.get(AU.LIP_CORNER_PULLER, 0.0))
    wrinkle = max(ev.rise_left.get(AU.NOSE_WRINKLER, 0.0), ev.rise_right.get(AU.NOSE_WRINKLER, 0.0))
    if max(corner) < c.min_evidence_z or wrinkle >= c.estimator_trust * c.estimator_relative:
        return chosen
    out = {au: v for au, v in chosen.items() if au is not AU.NOSE_WRINKLER}
    out.setdefault(AU.LIP_CORNER_PULLER, corner)
    return out


def _aus_of(episode: Episode | None) -> frozenset[AU]:
    """The expressive AUs an episode was named with (none for a rejected
    one); the lids' are left out, as in ``Evidence.expression_rise`` (blinks
    and gaze move them)."""
    if episode is None:
        return frozenset()
    return frozenset(a.au for a in episode.activations if a.au not in NON_EXPRESSIVE and a.au not in _LID_AUS)


_LID_AUS = frozenset({AU.UPPER_LID_RAISER, AU.LID_TIGHTENER, AU.BLINK, AU.EYES_CLOSED})


def _apex_evidence(span: Sequence[Evidence], activity: np.ndarray, plateau: float = 0.9) -> Evidence:
    """The evidence to name the AUs from: averaged over the apex plateau
    (frames within ``plateau`` of the peak), leaving out blink frames when
    there are others. A held expression has a long, flat top whose single
    highest frame is an accident — and may be mid-blink (a blink squeezes
    the lids: the blendshapes then read AU7)."""
    if not span:
        raise ValueError("empty episode")
    top = float(np.max(activity))
    frames = [e for e, a in zip(span, activity) if a >= plateau * top]
    open_eyes = [e for e in frames if not e.blink]
    frames = open_eyes or frames
    if len(frames) == 1:
        return frames[0]

    def mean(name: str) -> MappingProxyType[AU, float]:
        maps = [getattr(e, name) for e in frames]
        keys = set().union(*maps)
        return MappingProxyType({k: float(np.mean([m.get(k, 0.0) for m in maps])) for k in keys})

    from dataclasses import replace

    return replace(
        frames[len(frames) // 2],
        motion_z_left=mean("motion_z_left"), motion_z_right=mean("motion_z_right"),
        rise_left=mean("rise_left"), rise_right=mean("rise_right"), motion_amount=mean("motion_amount"),
        au_z=mean("au_z"), au_z_left=mean("au_z_left"), au_z_right=mean("au_z_right"),
        blink=all(e.blink for e in frames),
    )


def _side_mix(activations: Sequence[AUActivation]) -> bool:
    """True when some AUs are named left-only and others right-only.

    One-sided actions exist (AU12 or AU14 on one side: contempt, EMFACS;
    a unilateral brow raise), but a face does not pull the right brow up
    and the left dimple in at once (AU2R+AU4L+AU12R+AU14L, the codec
    artefacts of issue 12). An AU named on both sides (``Side.BOTH``)
    with another one-sided AU is allowed (AU6+R12: a smile stronger on one
    side)."""
    sides = {a.side for a in activations}
    return Side.LEFT in sides and Side.RIGHT in sides


def _rise_start(ts: np.ndarray, carrier: np.ndarray, onset: int, apex: int, floor_z: float) -> int:
    """Where a slow rise began. The boundary level (15 % of a large peak)
    is reached late on a slow rise: a 1.5 s smile rising to z ≈ 80 crosses
    z 12 about 0.4 s after it began (measured: onset 0.40-0.47 s late).

    The rise from the noise level (``floor_z``) to half the peak is fitted
    with a raised cosine — a muscle starts from rest with no speed and
    speeds up (a smooth onset) — and extrapolated back to zero
    displacement. Such a rise stays under the noise level for a while (a
    1.5 s raised-cosine smile reached z 3 only 0.27 s in), so the onset may
    go back past the last frame at ``floor_z``, but never before the last
    frame at rest (at or below a third of it: the region cannot have been
    moving then). Between the noise level and half the peak the measured z
    of a straight and of a raised-cosine rise look alike (both nearly
    straight), so the shape cannot be told from them; on a straight rise
    the fit lands early and the rest bound holds it. With the chord and
    the ``floor_z`` bound before, the raised-cosine rise was opened
    0.27-0.30 s late. Used for rises longer than a micro-expression only."""
    peak = float(carrier[apex])
    half = onset
    while half < apex and carrier[half] < 0.5 * peak:
        half += 1
    if half <= onset or ts[half] <= ts[onset] or peak <= 0:
        return onset
    quiet = onset
    while quiet > 0 and carrier[quiet] > floor_z:
        quiet -= 1
    rest = quiet
    while rest > 0 and carrier[rest] > floor_z / 3.0:
        rest -= 1
    t = ts[quiet + 1:half + 1].astype(np.float64)
    x = np.clip(carrier[quiet + 1:half + 1] / peak, 0.0, 1.0)
    if len(t) < 3 or float(np.ptp(t)) <= 0:
        return onset
    # raised cosine: x = (1 - cos(pi (t - start) / T)) / 2, linear in its phase
    k, c0 = np.polyfit(t, np.arccos(1.0 - 2.0 * x) / np.pi, 1)
    if k <= 0:
        return onset
    start_t = -c0 / k
    earliest = max(start_t, float(ts[rest]))
    new = onset
    while new > rest and ts[new - 1] >= earliest - 1e-9:
        new -= 1
    return new


def _side(left: float, right: float, threshold: float, ratio: float) -> Side:
    if left >= threshold and left >= ratio * max(right, 0.0) and right < threshold:
        return Side.LEFT
    if right >= threshold and right >= ratio * max(left, 0.0) and left < threshold:
        return Side.RIGHT
    return Side.BOTH


def _centred_mean(ts: np.ndarray, values: np.ndarray, window_s: float) -> np.ndarray:
    """Moving average over ±window_s/2 around each sample (non-causal: used
    on a closed episode only)."""
    if len(values) < 3 or window_s <= 0:
        return values.astype(np.float64)
    half = window_s / 2.0
    lo = np.searchsorted(ts, ts - half - 1e-9, side="left")
    hi = np.searchsorted(ts, ts + half + 1e-9, side="right")
    csum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)


def region_names(regions: Sequence[Region]) -> tuple[str, ...]:
    return tuple(r.value for r in regions)

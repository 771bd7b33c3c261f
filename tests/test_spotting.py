"""The spotter on hand-made evidence streams: boundaries, latency, kinds,
rejections, sides, and the same parameters at 30 and 200 fps.

End-to-end spotting on real pixels is in test_pipeline.py.
"""

from __future__ import annotations

import math
from dataclasses import replace
from types import MappingProxyType

import numpy as np
import pytest

from microexpr.baseline import Evidence
from microexpr.facs import AU, Side
from microexpr.motion import Region
from microexpr.spotting import Episode, EpisodeKind, Rejection, Spotter, SpotterConfig, activations_at, active_aus


def _bump(t: float, onset: float, apex: float, offset: float) -> float:
    """Raised-cosine rise onset→apex and fall apex→offset, 0 outside."""
    if t <= onset or t >= offset:
        return 0.0
    if t <= apex:
        return 0.5 - 0.5 * math.cos(math.pi * (t - onset) / (apex - onset))
    return 0.5 + 0.5 * math.cos(math.pi * (t - apex) / (offset - apex))


def _stream(
    fps: float,
    duration: float,
    events: list[tuple[float, float, float, float]],
    *,
    region: Region = Region.MOUTH_CORNER_L,
    au_left: dict[AU, float] | None = None,
    au_right: dict[AU, float] | None = None,
    blink: tuple[float, float] | None = None,
    gated: tuple[float, float] | None = None,
    seed: int = 0,
) -> list[Evidence]:
    """Evidence frames: noise of ~1 z plus bumps (onset, apex, offset, peak z)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(round(duration * fps))):
        t = i / fps
        level = max((peak * _bump(t, on, ap, off) for on, ap, off, peak in events), default=0.0)
        act = max(abs(float(rng.normal(0, 0.7))), level)
        share = act / max((p for *_x, p in events), default=1.0)
        left = {au: z * share for au, z in (au_left or {}).items()}
        right = {au: z * share for au, z in (au_right or {}).items()}
        both = {au: max(left.get(au, 0.0), right.get(au, 0.0)) for au in set(left) | set(right)}
        is_gated = gated is not None and gated[0] <= t <= gated[1]
        out.append(Evidence(
            subject_id=0, frame_index=i, timestamp=t, face_found=True, ready=True, gated=is_gated,
            activity=0.0 if is_gated else act, activity_raw=0.0 if is_gated else act,
            region_z=MappingProxyType({region: act}), region_z_raw=MappingProxyType({region: act}),
            au_z=MappingProxyType(both), au_z_left=MappingProxyType(left), au_z_right=MappingProxyType(right),
            motion_z_left=MappingProxyType(left), motion_z_right=MappingProxyType(right),
            blink=blink is not None and blink[0] <= t <= blink[1],
        ))
    return out


def _run(spotter: Spotter, frames: list[Evidence]) -> list[tuple[Episode, float]]:
    """Episodes with the timestamp of the frame that emitted them."""
    out = []
    for ev in frames:
        for ep in spotter.update(ev):
            out.append((ep, ev.timestamp))
    for ep in spotter.finish():
        out.append((ep, frames[-1].timestamp))
    return out


@pytest.mark.parametrize("fps", [25.0, 30.0, 60.0, 200.0])
def test_one_micro_event_same_parameters_any_fps(fps: float) -> None:
    onset, apex, offset = 1.0, 1.08, 1.2
    frames = _stream(fps, 2.5, [(onset, apex, offset, 20.0)])
    spotted = _run(Spotter(), frames)
    assert len(spotted) == 1
    ep, emitted_at = spotted[0]
    assert ep.kind is EpisodeKind.MICRO
    frame = 1.0 / fps
    assert abs(ep.apex_ts - apex) <= 2 * frame + 1e-9
    assert onset - 2 * frame <= ep.onset_ts <= apex
    assert apex <= ep.offset_ts <= offset + 2 * frame
    # bounded latency: emitted at most emit_delay_s (+ one frame) after the offset
    assert emitted_at - ep.offset_ts <= SpotterConfig().emit_delay_s + frame + 1e-9
    assert ep.emitted_ts == pytest.approx(emitted_at)


def test_two_frame_event_at_30fps_is_kept() -> None:
    """Only two frames above noise: a 67 ms movement sampled at 30 fps."""
    fps = 30.0
    frames = _stream(fps, 2.0, [(29 / fps, 30 / fps, 32 / fps, 15.0)])
    assert sum(1 for e in frames if e.activity > 6) == 2
    spotted = _run(Spotter(), frames)
    assert len(spotted) == 1
    assert spotted[0][0].apex_frame in (30, 31)


def test_40ms_event_at_200fps_is_kept() -> None:
    frames = _stream(200.0, 1.5, [(0.7, 0.716, 0.74, 12.0)])
    spotted = _run(Spotter(), frames)
    assert len(spotted) == 1
    assert spotted[0][0].duration_s <= 0.06


def test_noise_alone_gives_nothing() -> None:
    frames = _stream(200.0, 20.0, [], seed=3)
    assert _run(Spotter(), frames) == []


def test_macro_and_truncated_episodes() -> None:
    # 1.2 s movement: macro
    frames = _stream(30.0, 3.0, [(0.5, 1.0, 1.7, 20.0)])
    spotted = _run(Spotter(), frames)
    assert [ep.kind for ep, _t in spotted] == [EpisodeKind.MACRO]
    assert not spotted[0][0].truncated
    # held far longer than max_episode_s: emitted truncated at the cap, once
    config = SpotterConfig(max_episode_s=2.0)
    frames = _stream(30.0, 8.0, [(0.5, 0.8, 7.5, 20.0)])
    spotted = _run(Spotter(config), frames)
    assert len(spotted) == 1
    ep, emitted_at = spotted[0]
    assert ep.truncated and ep.kind is EpisodeKind.MACRO
    assert emitted_at == pytest.approx(ep.onset_ts + 2.0, abs=0.4)


def test_emit_delay_bounds_the_release() -> None:
    config = SpotterConfig(emit_delay_s=0.05, release_s=0.12)
    assert config.effective_release_s == 0.05
    frames = _stream(200.0, 2.0, [(0.8, 0.9, 1.0, 20.0)])
    (ep, emitted_at), = _run(Spotter(config), frames)
    assert emitted_at - ep.offset_ts <= 0.05 + 1 / 200 + 1e-9


def test_two_events_close_together_stay_two() -> None:
    frames = _stream(60.0, 3.0, [(0.8, 0.9, 1.0, 20.0), (1.4, 1.5, 1.6, 20.0)])
    spotted = _run(Spotter(), frames)
    assert len(spotted) == 2


def test_lid_only_movement_with_blink_is_rejected() -> None:
    spotter = Spotter()
    frames = _stream(30.0, 2.0, [(0.8, 0.87, 1.0, 20.0)], region=Region.UPPER_LID_L, blink=(0.75, 1.1))
    assert _run(spotter, frames) == []
    assert spotter.rejected[Rejection.BLINK] == 1
    # the spotter's own rule: without a flag the same stream is an episode
    # (in the pipeline the baseline keeps lids out of the activity anyway)
    frames = _stream(30.0, 2.0, [(0.8, 0.87, 1.0, 20.0)], region=Region.UPPER_LID_L)
    assert len(_run(Spotter(), frames)) == 1


def test_head_motion_around_an_episode_rejects_it() -> None:
    spotter = Spotter()
    frames = _stream(30.0, 2.0, [(0.8, 0.87, 1.0, 20.0)], gated=(1.02, 1.5))
    assert _run(spotter, frames) == []
    assert spotter.rejected[Rejection.HEAD_MOTION] == 1


def test_not_ready_frames_never_open_an_episode() -> None:
    frames = [replace(e, ready=False, activity=0.0, activity_raw=0.0) for e in _stream(30.0, 2.0, [(0.8, 0.9, 1.0, 20.0)])]
    assert _run(Spotter(), frames) == []


def test_activations_one_sided_and_bilateral() -> None:
    frames = _stream(30.0, 2.0, [(0.8, 0.9, 1.0, 20.0)],
                     au_left={AU.LIP_CORNER_PULLER: 20.0}, au_right={AU.LIP_CORNER_PULLER: 2.0})
    (ep, _t), = _run(Spotter(), frames)
    assert [(a.au, a.side) for a in ep.activations] == [(AU.LIP_CORNER_PULLER, Side.LEFT)]
    frames = _stream(30.0, 2.0, [(0.8, 0.9, 1.0, 20.0)],
                     au_left={AU.DIMPLER: 1.0}, au_right={AU.DIMPLER: 20.0, AU.BROW_LOWERER: 18.0},
                     region=Region.MOUTH_CORNER_R)
    (ep, _t), = _run(Spotter(), frames)
    sides = {a.au: a.side for a in ep.activations}
    assert sides[AU.DIMPLER] is Side.RIGHT
    frames = _stream(30.0, 2.0, [(0.8, 0.9, 1.0, 20.0)],
                     au_left={AU.LIP_CORNER_PULLER: 18.0}, au_right={AU.LIP_CORNER_PULLER: 20.0})
    (ep, _t), = _run(Spotter(), frames)
    assert [(a.au, a.side) for a in ep.activations] == [(AU.LIP_CORNER_PULLER, Side.BOTH)]
    assert all(0.0 <= a.intensity <= 1.0 for a in ep.activations)


def test_activations_drop_weak_spill_and_blinks() -> None:
    ev = _stream(30.0, 0.1, [(0.0, 0.05, 0.1, 10.0)])[1]
    z = MappingProxyType({AU.LIP_CORNER_PULLER: 30.0, AU.UPPER_LIP_RAISER: 6.0, AU.BLINK: 40.0})
    ev = replace(ev, au_z=z, au_z_left=z, au_z_right=z, motion_z_left=z, motion_z_right=z)
    assert [a.au for a in activations_at(ev)] == [AU.LIP_CORNER_PULLER]
    assert {a.au for a in activations_at(ev, SpotterConfig(relative_min=0.0))} == {AU.LIP_CORNER_PULLER,
                                                                                   AU.UPPER_LIP_RAISER}


def test_active_aus_are_the_aus_activations_at_names() -> None:
    """The context counts ``active_aus`` on every resting frame (the cheap
    form, without sides and intensities): the same AUs as ``activations_at``
    on evidence of every kind — nothing, weak spill, motion alone, the
    estimator alone or contradicted, a smile's nose lift, blinks."""
    ev = _stream(30.0, 0.1, [(0.0, 0.05, 0.1, 10.0)])[1]
    rng = np.random.default_rng(5)
    aus = [AU.LIP_CORNER_PULLER, AU.NOSE_WRINKLER, AU.BROW_LOWERER, AU.EYES_CLOSED, AU.BLINK, AU.DIMPLER,
           AU.INNER_BROW_RAISER, AU.CHEEK_RAISER]
    named = 0
    for trial in range(400):
        def draw(scale: float) -> MappingProxyType:
            chosen = rng.choice(aus, size=int(rng.integers(0, 5)), replace=False)
            return MappingProxyType({AU(a): float(rng.exponential(scale)) for a in chosen})
        motion_scale = [0.5, 3.0, 10.0][trial % 3]
        rise_scale = [0.05, 0.3, 0.8][trial // 3 % 3]
        case = replace(ev, motion_z_left=draw(motion_scale), motion_z_right=draw(motion_scale),
                       rise_left=draw(rise_scale), rise_right=draw(rise_scale), blink=bool(trial % 2),
                       motion_amount=draw(0.05))
        config = SpotterConfig(relative_min=float(rng.choice([0.0, 0.5])))
        expected = frozenset(a.au for a in activations_at(case, config))
        assert active_aus(case, config) == expected
        named += bool(expected)
    assert 50 < named < 350  # both empty and named cases were drawn


def test_nose_wings_lifted_by_a_smile_are_not_named_au9() -> None:
    """Motion's AU9 beside a lip-corner pull is the smile's lifted nose wings
    (weak smiles read 9+12 → disgust; a looped one a lone AU9), unless the
    estimator sees a nose wrinkle of its own; without a corner pull AU9 stays."""
    ev = _stream(30.0, 0.1, [(0.0, 0.05, 0.1, 10.0)])[1]
    loose = SpotterConfig(relative_min=0.0)
    both = MappingProxyType({AU.LIP_CORNER_PULLER: 20.0, AU.NOSE_WRINKLER: 12.0})
    smile = replace(ev, motion_z_left=both, motion_z_right=both)
    assert [a.au for a in activations_at(smile, loose)] == [AU.LIP_CORNER_PULLER]
    # the nose rose twice as far as the corners (below relative_min): still the smile
    nose = MappingProxyType({AU.LIP_CORNER_PULLER: 6.0, AU.NOSE_WRINKLER: 14.0})
    lifted = replace(ev, motion_z_left=nose, motion_z_right=nose)
    assert [a.au for a in activations_at(lifted)] == [AU.LIP_CORNER_PULLER]
    # no corner pull: a nose wrinkle
    alone = MappingProxyType({AU.NOSE_WRINKLER: 14.0, AU.LIP_CORNER_PULLER: 1.0})
    assert [a.au for a in activations_at(replace(ev, motion_z_left=alone, motion_z_right=alone))] == [AU.NOSE_WRINKLER]
    # the estimator sees the wrinkle too (below its trust level for naming): 9+12
    seen = MappingProxyType({AU.NOSE_WRINKLER: 0.2})
    wrinkled = replace(smile, rise_left=seen, rise_right=seen)
    assert [a.au for a in activations_at(wrinkled, loose)] == [AU.NOSE_WRINKLER, AU.LIP_CORNER_PULLER]


def test_strong_expressions_are_named_by_the_estimator_unless_it_contradicts_motion() -> None:
    ev = _stream(30.0, 0.1, [(0.0, 0.05, 0.1, 10.0)])[1]
    moved = MappingProxyType({AU.UPPER_LIP_RAISER: 50.0, AU.NOSE_WRINKLER: 35.0, AU.LIP_CORNER_PULLER: 40.0})
    rise = MappingProxyType({AU.LIP_CORNER_PULLER: 0.9, AU.UPPER_LIP_RAISER: 0.7, AU.LIPS_PART: 1.0})
    smile = replace(ev, motion_z_left=moved, motion_z_right=moved, rise_left=rise, rise_right=rise)
    # a broad real smile: the blendshapes name it (no AU9 from the lifted nose wings)
    assert {a.au for a in activations_at(smile)} == {AU.LIP_CORNER_PULLER, AU.UPPER_LIP_RAISER, AU.LIPS_PART}
    # the estimator reads "dimple + press" while the right corner clearly went up and out
    wrong = MappingProxyType({AU.DIMPLER: 0.6, AU.LIP_PRESSOR: 0.5})
    pull = replace(ev, motion_z_left=MappingProxyType({AU.LIP_CORNER_PULLER: 1.0}),
                   motion_z_right=MappingProxyType({AU.LIP_CORNER_PULLER: 40.0}), rise_left=wrong, rise_right=wrong)
    assert [(a.au, a.side) for a in activations_at(pull)] == [(AU.LIP_CORNER_PULLER, Side.RIGHT)]
    # weak: the estimator is in its dead zone, motion names it
    weak = replace(pull, rise_left=MappingProxyType({AU.DIMPLER: 0.05}), rise_right=MappingProxyType({}))
    assert [(a.au, a.side) for a in activations_at(weak)] == [(AU.LIP_CORNER_PULLER, Side.RIGHT)]


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        SpotterConfig(on_z=3.0, off_z=4.0)
    with pytest.raises(ValueError):
        SpotterConfig(max_episode_s=0.3)


def test_slow_head_rotation_during_an_episode_rejects_it() -> None:
    """A turn too slow for the speed gate still rotates the head by degrees
    while 'moving' every region: rejected as rigid motion."""
    from microexpr.tracking.base import HeadPose

    frames = _stream(30.0, 2.0, [(0.8, 1.0, 1.3, 15.0)])
    turned = [replace(e, pose=HeadPose(0.0, 4.0 * min(max(e.timestamp - 0.8, 0.0) / 0.5, 1.0), 0.0)) for e in frames]
    spotter = Spotter()
    assert _run(spotter, turned) == []
    assert spotter.rejected[Rejection.HEAD_MOTION] == 1
    # the same episode with a steady head is kept
    steady = [replace(e, pose=HeadPose(0.0, 0.2, 0.0)) for e in frames]
    assert len(_run(Spotter(), steady)) == 1


def test_noise_elsewhere_does_not_stretch_the_episode() -> None:
    """Other regions hovering above off_z (the largest of 18 noisy regions
    often is) must not keep the episode open: the carrier region decides."""
    frames = _stream(30.0, 3.0, [(1.0, 1.1, 1.2, 20.0)], region=Region.CHIN)
    noisy = [replace(e, activity=max(e.activity, 4.0), activity_raw=max(e.activity_raw, 4.0),
                     region_z=MappingProxyType({**e.region_z, Region.CHEEK_L: 4.0}),
                     region_z_raw=MappingProxyType({**e.region_z_raw, Region.CHEEK_L: 4.0})) for e in frames]
    (ep, emitted_at), = _run(Spotter(), noisy)
    assert ep.offset_ts <= 1.3
    assert emitted_at - ep.offset_ts <= SpotterConfig().emit_delay_s + 1 / 30 + 1e-9


def test_gated_frames_close_an_open_episode() -> None:
    """Regions still read high while the head is gated (stale reference):
    the episode must close, or the spotter stays busy and the baseline can
    never take a new reference."""
    frames = _stream(30.0, 3.0, [(0.8, 0.9, 2.9, 20.0)], gated=(1.0, 3.0))
    stale = [replace(e, region_z=MappingProxyType({Region.MOUTH_CORNER_L: 20.0})) if e.gated else e for e in frames]
    spotter = Spotter()
    for ev in stale:
        spotter.update(ev)
    assert not spotter.busy
    assert spotter.rejected[Rejection.HEAD_MOTION] == 1


# --------------------------------------------------------------------------
# A stale reference never holds the spotter for good (issue 12)


def _displaced(t: float, *, z: float, rebased_at: float | None, smiles: float = 3.7) -> Evidence:
    """One frame of a face read against a stale reference: the left mouth
    corner displaced (motion names AU15) by ``z`` until the reference is
    renewed at ``rebased_at``; meanwhile a 0.3 s smile (the estimator's AU12
    rising 0.5 over neutral, the corner's z unchanged) every ``smiles`` s —
    another expression coming and going, as in the looped clip."""
    level = z if rebased_at is None or t < rebased_at else 1.0
    smiling = (t % smiles) < 0.3 and t > 5.5
    rise = MappingProxyType({AU.LIP_CORNER_PULLER: 0.5} if smiling else {})
    motion = MappingProxyType({AU.LIP_CORNER_DEPRESSOR: level})
    regions = MappingProxyType({Region.MOUTH_CORNER_L: level})
    return Evidence(subject_id=0, frame_index=int(round(t * 30)), timestamp=t, face_found=True, ready=True,
                    gated=False, activity=level, activity_raw=level, region_z=regions, region_z_raw=regions,
                    au_z=motion, au_z_left=motion, motion_z_left=motion, rise_left=rise, rise_right=rise)


def _until_rebase(spotter: Spotter, start: float, z: float, seconds: float = 30.0) -> tuple[float | None, list[Episode]]:
    """Feed displaced frames from ``start``; the time the spotter asks for a new reference (None: never)."""
    episodes: list[Episode] = []
    for i in range(int(seconds * 30)):
        t = start + i / 30
        episodes += spotter.update(_displaced(t, z=z, rebased_at=None))
        if spotter.take_rebase_request():
            return t, episodes
    return None, episodes


def test_a_hold_on_a_stale_reference_ends_though_other_expressions_come_and_go() -> None:
    """Capped at 4 s, the displaced corner (AU15) is held; the estimator
    never sees AU15, only a smile every 3.7 s. Before, any expressive AU
    above neutral restarted the 10 s count, so the hold (and the device's
    silence) lasted for good. Now only the held expression's AUs keep it:
    a new reference is asked for 10 s after the cap, and the next movement
    is an episode again."""
    c = SpotterConfig()
    spotter = Spotter(c)
    for i in range(30):  # a second at rest
        spotter.update(_displaced(i / 30, z=1.0, rebased_at=None))
    asked, episodes = _until_rebase(spotter, 1.0, 30.0)
    assert [e.truncated for e in episodes] == [True]
    assert {a.au for a in episodes[0].activations} == {AU.LIP_CORNER_DEPRESSOR}
    assert asked is not None and asked - 1.0 <= c.max_episode_s + c.hold_rebase_s + 0.2, asked
    # the reference renewed: the corner rests, the spotter re-arms, a smile is spotted
    after = [_displaced(asked + i / 30, z=30.0, rebased_at=asked) for i in range(60)]
    bump = _stream(30.0, 1.0, [(0.2, 0.3, 0.45, 20.0)])
    after += [replace(e, timestamp=asked + 2.0 + e.timestamp, frame_index=e.frame_index + 10_000) for e in bump]
    assert len(_run(spotter, after)) == 1


def test_a_hold_on_the_held_expression_itself_lasts() -> None:
    """The same displaced corner with the estimator seeing the held AU
    (AU15 risen 0.5): a held expression, never taken as the resting face."""
    spotter = Spotter()
    for i in range(30):
        spotter.update(_displaced(i / 30, z=1.0, rebased_at=None))
    held = MappingProxyType({AU.LIP_CORNER_DEPRESSOR: 0.5})
    for i in range(30 * 30):
        ev = _displaced(1.0 + i / 30, z=30.0, rebased_at=None)
        spotter.update(replace(ev, rise_left=held, rise_right=held))
        assert not spotter.take_rebase_request()
    assert spotter.holding


def test_a_spotter_left_disarmed_by_a_stale_reference_recovers() -> None:
    """An episode whose corner stays displaced after it (z 5: below its
    close level, 15 % of a peak of 40, above ``off_z``): before, the
    spotter was never re-armed — every later movement `not_rearmed`, for
    good. Now, once the corner has stayed displaced ``hold_rebase_s`` with
    none of the episode's AUs seen by the estimator, a new reference is
    asked for."""
    c = SpotterConfig()
    spotter = Spotter(c)
    frames = [_displaced(i / 30, z=1.0, rebased_at=None) for i in range(30)]
    frames += [_displaced(1.0 + i / 30, z=40.0 * math.sin(math.pi * i / 9) if i < 9 else 5.0, rebased_at=None)
               for i in range(9 * 30)]
    asked = None
    episodes: list[Episode] = []
    for ev in frames:
        episodes += spotter.update(ev)
        if spotter.take_rebase_request():
            asked = ev.timestamp
            break
    assert len(episodes) == 1 and not episodes[0].truncated
    assert not spotter.at_rest
    assert asked is None  # within hold_rebase_s: still the episode's tail
    t0 = frames[-1].timestamp
    for i in range(int(c.hold_rebase_s * 30) + 30):
        t = t0 + (i + 1) / 30
        spotter.update(_displaced(t, z=5.0, rebased_at=None))
        if spotter.take_rebase_request():
            asked = t
            break
    assert asked is not None and asked - 1.3 <= c.hold_rebase_s + 0.5, asked
    for i in range(20):  # the new reference: the corner rests, the spotter re-arms
        spotter.update(_displaced(asked + (i + 1) / 30, z=5.0, rebased_at=asked))
    assert spotter.at_rest

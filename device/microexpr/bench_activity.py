"""``microexpr bench``: a face at rest vs during expressions.

The dense ROI flow runs at a reduced rate while the face is at rest
(``activity.py``), so the cost of the pipeline depends on what the face
does. This scenario measures both regimes in one run, against the bare
MediaPipe call on the same frames:

* **rest**: the clip's frames before its first spotted onset, played
  forward and back (a real resting face, its own small movements and
  noise) for ``rest_s`` seconds after a warm-up the pipeline learns its
  baseline on (not measured);
* **still**: one of those resting frames held for ``rest_s`` seconds with
  fresh sensor noise on every frame (σ ``STILL_NOISE`` grey levels) and
  through MPEG-4 as a camera would send it, played forward and back like
  the rest stretch: the face of a kiosk's idle hours, which a short clip's
  few resting frames (the shared clip has 7, and they sway) do not show.
  It is made here from the source, so it needs no other file. Its warm-up
  is ``STILL_WARMUP_S``, long enough for the baseline to hold as many
  samples as it ever does: an idle appliance's steady cost, not a young
  baseline's;
* **expression**: the clip's frames from each spotted episode's onset to its
  offset, measured while the clip plays whole (a fresh pipeline each pass);
* **clip**: every frame of those same whole passes, the clip's own mix of
  rest and expressions. ``run_streams`` in ``bench.py`` times that mix too,
  but one whole stream after another (its fps and its identical-episodes
  check need whole passes); here the mix is timed in the turns below, a
  second reading of the same ratio.

For each: the stream interval with the tracker and analysis overlapped
(``tracker.overlap``), per-frame CPU of the sequential pipeline (process
CPU time, all threads), and the share of frames on which the dense flow
ran. The CPU of the pipeline and of the bare call are taken frame by frame
in turn (the bare call right after the pipeline, on the same frame), so a
change of the machine's load between two passes cannot tilt the ratio (it
moved it by 0.1 between two runs of the same code, in separate passes).
The stream intervals, which must be timed back to back, are taken in turns
of ``STREAM_CHUNK`` frames: bare MediaPipe, then the overlapped pipeline,
and again. Ratios only: absolute times on a shared machine say little.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microexpr.capture import Frame

#: Sensor noise of the still face, grey levels (σ): a webcam's in room light.
STILL_NOISE = 2.0
#: Frames of the still face written (then played forward and back): 2 s at
#: 30 fps, 41 MB of 640x360 pictures held in memory.
STILL_CLIP_FRAMES = 60
#: Warm-up of the still face, seconds: the baseline keeps up to
#: ``BaselineConfig.max_samples`` (600, 20 s at 30 fps) and sorts them all at
#: every refresh, so a face idle for hours costs more than one at rest for 3 s
#: (benchmarks/rest_profile.py, before the MAD's sort was cut: the refresh
#: cost 0.03 ms a frame after a 3-s warm-up, 0.13 ms after 40 s). Past the
#: cap the count holds.
STILL_WARMUP_S = 25.0
#: The bare calls start this many frames before a regime's measured ones
#: (their graph settles; the warm-up before them is the pipeline's).
BARE_LEAD = 30
#: The bare and the overlapped streams are timed in turns of this many
#: frames, so that a change of the machine's load between them hits both
#: (two passes of the same code, one stream after the other, read the still
#: face's stream ratio 1.00-1.07); the first STREAM_FILL intervals of each
#: overlapped turn are left out (the two stages filling up), and as many
#: frames of each bare turn (its caches were the other stream's).
STREAM_CHUNK = 30
STREAM_FILL = 2


@dataclass
class RegimeSamples:
    bare_interval: list[float] = field(default_factory=list)
    bare_cpu: list[float] = field(default_factory=list)
    overlap_interval: list[float] = field(default_factory=list)
    pipeline_cpu: list[float] = field(default_factory=list)
    flow_ran: int = 0
    flow_skipped: int = 0
    #: skipped frames flowed later (the ring buffer), counted among skipped
    flow_backfilled: int = 0


@dataclass
class ActivityResult:
    rest_frames: int = 0
    expression_frames: int = 0
    rest: RegimeSamples = field(default_factory=RegimeSamples)
    still: RegimeSamples = field(default_factory=RegimeSamples)
    #: the still face's warm-up, seconds (0 in reports from before it was long)
    still_warmup_s: float = 0.0
    expression: RegimeSamples = field(default_factory=RegimeSamples)
    #: every frame of those whole passes: the clip's mix of rest and
    #: expressions, its streams timed in the same turns as the regimes'
    clip: RegimeSamples = field(default_factory=RegimeSamples)


def _retimed(frames: Sequence[Frame], start_ts: float, step: float, start_index: int) -> list[Frame]:
    return [Frame(start_index + i, start_ts + i * step, f.image) for i, f in enumerate(frames)]


def _ping_pong(frames: Sequence[Frame], n: int) -> list[Frame]:
    cycle = list(frames) + list(frames[-2:0:-1])
    return [cycle[i % len(cycle)] for i in range(n)]


def still_face(frame: Frame, *, fps: float, frames: int = STILL_CLIP_FRAMES, seed: int = 0) -> list[Frame]:
    """``frame``'s picture held still: fresh Gaussian sensor noise on every
    frame, then through MPEG-4 (written and decoded by OpenCV's FFmpeg, as
    ``videocodec.py`` does for the spotting benchmarks)."""
    from microexpr.bench import load_frames
    from microexpr.videocodec import Codec, write_video

    rng = np.random.default_rng(seed)
    base = frame.image.astype(np.float32)

    def noisy() -> Any:
        for _ in range(frames):
            yield np.clip(np.rint(base + rng.normal(0.0, STILL_NOISE, base.shape)), 0, 255).astype(np.uint8)

    with tempfile.TemporaryDirectory(prefix="microexpr-still-") as tmp:
        written = write_video(noisy(), Path(tmp) / "still", fps, Codec.MP4V)
        return load_frames(written.path)


def run_activity(
    frames: Sequence[Frame], *, model_path: Path, passes: int, rest_s: float = 6.0, warmup_s: float = 3.0,
    still_warmup_s: float = STILL_WARMUP_S, clip_plays: int = 1, progress: Callable[[], None] = lambda: None,
    expect: Callable[[int], None] = lambda n: None,
) -> ActivityResult:
    """``clip_plays``: how many times each pass plays the whole clip (the
    expression and clip regimes; a fresh pipeline each time): one play of the
    shared clip's 72 frames reads its stream ratio with a standard deviation
    of ~0.04 on two cores (``benchmarks/stream_rounds.py``).

    ``progress`` is called once per measured frame; ``expect`` once, with how
    many calls will come, as soon as the rest stretch is known (after the
    plain pass that finds the expressions)."""
    from microexpr.bench import _BareMediaPipe
    from microexpr.overlap import OverlappedPipeline
    from microexpr.pipeline import Pipeline, PipelineResult

    result = ActivityResult()
    step = float(np.median(np.diff([f.timestamp for f in frames]))) if len(frames) > 1 else 1 / 30
    bare = _BareMediaPipe(model_path)
    bare_cpu = _BareMediaPipe(model_path)  # the interleaved one: its timestamps follow the pipeline's
    seq = Pipeline.create(model_path=model_path)
    ovl = Pipeline.create(model_path=model_path)
    done: list[tuple[float, int]] = []

    def on_result(_started: float, frame: Frame, _out: PipelineResult) -> None:
        done.append((time.perf_counter(), frame.index))

    runner: OverlappedPipeline[float] = OverlappedPipeline(ovl, on_result, name="bench-activity")
    try:
        # Where the expressions are: one plain pass.
        spans: list[tuple[int, int]] = []
        for f in frames:
            spans += [(e.episode.onset_frame, e.episode.offset_frame) for e in seq.process(f).episodes]
        spans += [(e.episode.onset_frame, e.episode.offset_frame) for e in seq.finish()]
        seq.reset()
        first_onset = min((a for a, _ in spans), default=len(frames))
        # skip the first frames (the tracker settling, the head finding its place)
        # and the last ones before the onset (the movement starts before the
        # spotter marks it)
        lo, hi = min(5, len(frames) // 4), max(first_onset - 3, 2)
        rest_clip = list(frames[lo:hi]) if hi - lo >= 2 else list(frames[:2])
        expr_idx = {i for a, b in spans for i in range(a, b + 1)}
        result.rest_frames = len(rest_clip)
        result.expression_frames = len(expr_idx)
        n_warm, n_rest = int(round(warmup_s / step)), int(round(rest_s / step))
        n_still_warm = int(round(still_warmup_s / step))
        result.still_warmup_s = still_warmup_s
        still_clip = still_face(rest_clip[len(rest_clip) // 2], fps=1.0 / step)
        expect(passes * (n_warm + n_still_warm + 2 * n_rest + clip_plays * len(frames)))
        t_next = 0.0
        idx_next = 0

        def measure(seq_frames: list[Frame], into: Sequence[tuple[Callable[[int], bool], RegimeSamples]],
                    measured_from: int) -> None:
            # ``into``: which frames (by position in ``seq_frames``) each bucket keeps
            # sequential: per-frame CPU and the flow share (by frame: a frame
            # skipped at rest may get its flow later, from the ring buffer,
            # during another frame's call); the bare call's CPU on the same
            # frame right after (``bare_cpu``, its own graph and timestamps)
            first = seq_frames[0].index
            for k, f in enumerate(seq_frames):
                c0 = time.process_time()
                out = seq.process(f)
                c1 = time.process_time()
                if k >= measured_from - BARE_LEAD:
                    bare_cpu.time_frame(f, 0.0)
                c2 = time.process_time()
                for keep, bucket in into:
                    for i in out.backfilled:
                        if i - first >= measured_from and keep(i - first):
                            bucket.flow_backfilled += 1
                    if k >= measured_from and keep(k):
                        bucket.pipeline_cpu.append(c1 - c0)
                        bucket.bare_cpu.append(c2 - c1)
                        if out.motion is not None:
                            bucket.flow_ran += 1
                        elif out.observation.face is not None:
                            bucket.flow_skipped += 1
                progress()
            # the two streams, in turns of STREAM_CHUNK frames: bare MediaPipe
            # back to back (its interval is its own time) and the overlapped
            # pipeline (time between consecutive finished frames, within a
            # turn), each without its turn's first STREAM_FILL + 1 frames; the
            # overlapped one's warm-up frames first, unmeasured
            for f in seq_frames[max(measured_from - BARE_LEAD, 0):measured_from]:
                bare.time_frame(f, 0.0)
            for f in seq_frames[:measured_from]:
                runner.submit(f, time.perf_counter())
            runner.drain(timeout=120)
            for start in range(measured_from, len(seq_frames), STREAM_CHUNK):
                turn = seq_frames[start:start + STREAM_CHUNK]
                for k, f in enumerate(turn, start):
                    dt = bare.time_frame(f, 0.0)
                    for keep, bucket in into:
                        if k > start + STREAM_FILL and keep(k):  # as many left out as of the overlapped turn
                            bucket.bare_interval.append(dt)
                done.clear()
                for f in turn:
                    runner.submit(f, time.perf_counter())
                runner.drain(timeout=120)
                for (t0, _), (t1, i1) in zip(done[STREAM_FILL:], done[STREAM_FILL + 1:]):
                    for keep, bucket in into:
                        if keep(i1 - first):
                            bucket.overlap_interval.append(t1 - t0)
            runner.finish(timeout=120)

        for _ in range(passes):
            for resting, bucket, warm in ((rest_clip, result.rest, n_warm), (still_clip, result.still, n_still_warm)):
                played = _retimed(_ping_pong(resting, warm + n_rest), t_next, step, idx_next)
                measure(played, [(lambda k: True, bucket)], warm)
                t_next += (warm + n_rest + 30) * step
                idx_next += warm + n_rest + 30
                seq.reset()
                ovl.reset()
            for _play in range(clip_plays):
                whole = _retimed(frames, t_next, step, idx_next)
                measure(whole, [(lambda k: k in expr_idx, result.expression), (lambda k: True, result.clip)], 0)
                t_next += (len(frames) + 30) * step
                idx_next += len(frames) + 30
                seq.reset()
                ovl.reset()
    finally:
        runner.close()
        seq.close()
        ovl.close()
        bare.close()
        bare_cpu.close()
    return result


def _lat(samples: Sequence[float]) -> dict[str, Any]:
    from microexpr.bench import Latency

    return asdict(Latency.of(samples))


def _r(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if not b.get(key) or not np.isfinite(a.get(key, float("nan"))):
        return None
    return round(a[key] / b[key], 3)


def report_section(res: ActivityResult) -> tuple[dict[str, Any], dict[str, float | None]]:
    """The report's ``activity`` section and its ratios."""
    section: dict[str, Any] = {"rest_clip_frames": res.rest_frames, "expression_frames": res.expression_frames,
                               "still_warmup_s": res.still_warmup_s}
    ratios: dict[str, float | None] = {}
    for name, b in (("rest", res.rest), ("still", res.still), ("expression", res.expression), ("clip", res.clip)):
        total = b.flow_ran + b.flow_skipped
        s = {
            "interval_ms": {"bare_mediapipe": _lat(b.bare_interval), "pipeline_overlap": _lat(b.overlap_interval)},
            "cpu_ms": {"bare_mediapipe": _lat(b.bare_cpu), "pipeline_sequential": _lat(b.pipeline_cpu)},
            # frames whose own flow was computed: run at once, or later from
            # the ring buffer
            "flow_share": round((b.flow_ran + b.flow_backfilled) / total, 3) if total else None,
        }
        section[name] = s
        ratios[f"{name}_stream_overlap_vs_bare_p50"] = _r(s["interval_ms"]["pipeline_overlap"],
                                                          s["interval_ms"]["bare_mediapipe"], "p50")
        ratios[f"{name}_cpu_vs_bare_mean"] = _r(s["cpu_ms"]["pipeline_sequential"], s["cpu_ms"]["bare_mediapipe"], "mean")
        ratios[f"{name}_flow_share"] = s["flow_share"]
    return section, ratios


def markdown(section: dict[str, Any]) -> list[str]:
    # a report from before the still face's long warm-up does not say how long it was
    warm = section.get("still_warmup_s")
    still_warm = (f"; measured after {warm:g} s of it, the baseline holding as many samples as an idle day's"
                  if warm else "")
    lines = [
        "",
        f"Activity: a face at rest ({section['rest_clip_frames']} frames before the clip's first onset, played "
        "forward and back after an unmeasured warm-up), the same face still (one of those frames held with sensor "
        f"noise σ {STILL_NOISE:g}, through MPEG-4{still_warm}) and during expressions (the clip's "
        f"{section['expression_frames']} frames from onset to offset; \"clip\": every frame of the same passes). "
        f"Streams timed in turns of {STREAM_CHUNK} frames, bare then overlapped. CPU = process CPU time per frame, "
        "the pipeline's and the bare call's taken frame by frame in turn.",
        "",
        "| regime | overlap interval p50 ms | bare interval p50 ms | pipeline CPU mean ms | bare CPU mean ms | frames with dense flow |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("rest", "still", "expression", "clip"):
        if name not in section:  # a report from before the still (or the clip) regime
            continue
        s = section[name]
        lines.append(f"| {name} | {s['interval_ms']['pipeline_overlap']['p50']} | {s['interval_ms']['bare_mediapipe']['p50']} "
                     f"| {s['cpu_ms']['pipeline_sequential']['mean']} | {s['cpu_ms']['bare_mediapipe']['mean']} "
                     f"| {s['flow_share']} |")
    return lines

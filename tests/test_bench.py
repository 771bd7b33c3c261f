"""The benchmark harness: statistics, machine description and the in-process
scenarios on real frames (no timing thresholds: only that it measures)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from microexpr.bench import (Latency, build_report, describe_machine, load_frames, machine_slug, markdown_summary,
                             run_in_process, run_streams)


def test_latency_percentiles_in_ms() -> None:
    stats = Latency.of([0.001 * i for i in range(1, 101)])
    assert stats.n == 100
    assert stats.p50 == pytest.approx(50.0, abs=0.01)  # nearest rank, as in the stats payload
    assert stats.p99 > stats.p95 > stats.p50
    assert math.isnan(Latency.of([]).p50)


def test_machine_description_names_cpu_and_packages() -> None:
    machine = describe_machine()
    assert machine["cores"] >= 1 and machine["packages"]["mediapipe"]
    slug = machine_slug(machine)
    assert slug.startswith(machine["arch"]) and "/" not in slug and " " not in slug


def test_in_process_scenarios_measure_every_frame(smile_clip: Path, model_path: Path, tmp_path: Path) -> None:
    frames = load_frames(smile_clip, limit=6)
    result = run_in_process(frames, model_path=model_path, passes=1)
    assert len(result.bare) == len(result.timeline) == 6
    assert all(s > 0 for s in result.bare + result.timeline)
    report = build_report(machine=describe_machine(), source=smile_clip, frames=6, passes=1, inproc=result,
                          daemon=None, quick=True)
    assert report["ratios"]["timeline_vs_bare_p50"] > 0
    json.dumps(report)  # serialisable
    assert "bare MediaPipe call" in markdown_summary(report)


def test_streams_time_every_frame_and_compare_episodes(smile_clip: Path, model_path: Path) -> None:
    """The back-to-back streams: every frame timed in each, the overlapped
    pipeline checked against the sequential one on the same frames."""
    frames = load_frames(smile_clip)
    inproc = run_in_process(frames[:3], model_path=model_path, passes=1)
    streams = run_streams(frames, model_path=model_path, passes=1)
    n = len(frames)
    assert len(streams.interval_bare) == len(streams.interval_sequential) == n
    assert len(streams.interval_overlap) == n - 1 and len(streams.overlap_latency) == n
    assert all(s > 0 for s in streams.interval_bare + streams.interval_sequential + streams.overlap_latency)
    assert streams.identical_episodes
    assert set(streams.fps) == {"bare", "sequential", "overlap"}
    report = build_report(machine=describe_machine(), source=smile_clip, frames=n, passes=1, inproc=inproc,
                          daemon=None, quick=True, streams=streams)
    assert report["ratios"]["stream_overlap_vs_bare_p50"] > 0
    # one pass: its own ratio is the pooled one
    assert streams.overlap_vs_bare_by_pass == [pytest.approx(float(np.median(streams.interval_overlap))
                                                             / float(np.median(streams.interval_bare)))]
    json.dumps(report)
    text = markdown_summary(report)
    assert "tracker ∥ analysis" in text and "pass by pass" not in text  # no spread from one pass
    report["streams"]["overlap_vs_bare_p50_by_pass"] = [1.1, 0.9, 1.0]
    assert "pass by pass: median 1.000, 0.900-1.100, sd 0.100 over 3 passes" in markdown_summary(report)


def test_bench_refuses_a_live_source(smile_clip: Path) -> None:
    from microexpr.errors import SourceError

    with pytest.raises(SourceError, match="live source"):
        load_frames(f"replay:{smile_clip}")


@pytest.mark.integration
def test_daemon_scenario_reaches_ready_and_times_frames_to_a_subscriber(
    smile_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak scenario: a real daemon on a real-time replay, a real broker,
    a real notify socket. Only that it measures, never how fast. The clip is
    named relative to the working folder, as `make bench` names it
    (../shared/...): the daemon, configured from another folder, once
    could not find it (exit 66, no daemon numbers)."""
    from microexpr.bench import run_daemon

    monkeypatch.chdir(smile_clip.parent)
    result = run_daemon(Path(smile_clip.name), seconds=3.0, workdir=tmp_path)
    assert result.error is None, result.error
    assert result.cold_start_to_ready_s > 0
    assert result.e2e_frame_to_subscriber and all(s > 0 for s in result.e2e_frame_to_subscriber)
    assert result.rss_mb_max > 0 and result.cpu_percent > 0
    assert "total" in result.daemon_latency_ms


def test_unwritable_out_fails_first_with_exit_74(tmp_path: Path, smile_clip: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """It used to be an internal error (exit 1), raised only after every scenario had run."""
    from microexpr.cli import main
    from microexpr.errors import ExitCode

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["bench", "--source", str(tmp_path / "never-read.mp4"), "--out", str(blocker),
                 "--quick", "--daemon-seconds", "0"])
    assert code == ExitCode.IO_ERROR  # before the (missing) source is even opened
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"microexpr: error: --out {blocker}: cannot write")


@pytest.mark.parametrize("seconds", ["nan", "-1", "inf"])
def test_daemon_seconds_must_be_a_finite_non_negative_number(seconds: str, smile_clip: Path) -> None:
    from microexpr.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--source", str(smile_clip), "--daemon-seconds", seconds])
    assert exc.value.code == 2


def test_media_without_a_face_is_exit_3_not_a_report(tmp_path: Path, model_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No face: MediaPipe runs its detector only, and the "latency" would look
    plausible and mean nothing. Said after the first scenario, before the
    streams and the activity regimes (minutes on a Pi)."""
    import cv2
    import numpy as np

    import microexpr.bench as bench
    from microexpr.bench import run_bench
    from microexpr.errors import ExitCode, NoFaceError

    def not_reached(*_a, **_k):
        raise AssertionError("the streams ran on a clip without a face")

    monkeypatch.setattr(bench, "run_streams", not_reached)

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    with pytest.raises(NoFaceError, match="no face in any of its 3 frame") as exc:
        run_bench(frames, model_path=model_path, out_root=tmp_path / "out", quick=True, daemon_seconds=0)
    assert exc.value.exit_code == ExitCode.NO_FACE
    assert not list((tmp_path / "out").rglob("*.json"))


def test_default_clip_is_make_runs(tmp_path: Path) -> None:
    from microexpr.commands.bench import DEFAULT_CLIP, default_clip

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert f"SOURCE ?= $(SHARED)/{DEFAULT_CLIP}" in makefile and "SHARED ?= ../shared" in makefile
    clip = tmp_path / DEFAULT_CLIP
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"x")
    assert default_clip({"MICROEXPR_SHARED": str(tmp_path)}) == clip
    # without the variable: the checkout's ../shared, as the Makefile's SHARED
    assert default_clip({}) == Path(__file__).resolve().parents[2] / "shared" / DEFAULT_CLIP


@pytest.mark.integration
def test_quick_bench_without_source_uses_the_default_clip_and_prints_progress(
    tmp_path: Path, smile_clip: Path, model_path: Path
) -> None:
    """Issue 13 item 8: ``bench --quick`` with no --source exited 2, and ran for
    half a minute without a word when stderr was not a terminal."""
    import os
    import subprocess
    import sys

    import cv2

    from microexpr.commands.bench import DEFAULT_CLIP

    # A shared folder whose default clip is the real clip's first 12 frames (a short run).
    shared = tmp_path / "shared"
    clip = shared / DEFAULT_CLIP
    clip.parent.mkdir(parents=True)
    reader = cv2.VideoCapture(str(smile_clip))
    writer = None
    for _ in range(12):
        ok, image = reader.read()
        assert ok
        if writer is None:
            h, w = image.shape[:2]
            writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
        writer.write(image)
    assert writer is not None
    writer.release()
    reader.release()
    env = {**os.environ, "MICROEXPR_SHARED": str(shared), "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "device")}
    proc = subprocess.run(
        [sys.executable, "-m", "microexpr", "bench", "--quick", "--daemon-seconds", "0", "--model", str(model_path),
         "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr.splitlines()
    assert f"bench: no --source: using {clip} (make run's default clip)" in err
    progress = [line for line in err if re.match(r"bench: \d+/\d+ frames \(\d+ %\)", line)]
    assert progress, err
    done, total = map(int, re.match(r"bench: (\d+)/(\d+)", progress[-1]).groups())
    assert done == total > 0
    assert list((tmp_path / "out").rglob("bench-quick.json"))

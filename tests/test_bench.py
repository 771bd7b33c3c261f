"""The benchmark harness: statistics, machine description and the in-process
scenarios on real frames (no timing thresholds: only that it measures)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from microexpr.bench import Latency, build_report, describe_machine, load_frames, machine_slug, markdown_summary, run_in_process


def test_latency_percentiles_in_ms() -> None:
    stats = Latency.of([0.001 * i for i in range(1, 101)])
    assert stats.n == 100
    assert stats.p50 == pytest.approx(50.5, abs=0.01)
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


def test_bench_refuses_a_live_source(smile_clip: Path) -> None:
    from microexpr.errors import SourceError

    with pytest.raises(SourceError, match="live source"):
        load_frames(f"replay:{smile_clip}")

"""The Pi profile: defaults chosen by core count (cores.py) and how the
daemon applies ``tracker.overlap``."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from microexpr.config import TrackerConfig, load_config
from microexpr.cores import PI_4_5, available_cores, bench_note, profile_for
from microexpr.service.daemon import use_overlap


def test_profiles_by_core_count() -> None:
    one, two, pi, eight = profile_for(1), profile_for(2), profile_for(4), profile_for(8)
    assert (one.overlap, one.tracker_threads) == (False, 1)
    assert (two.overlap, two.tracker_threads) == (True, 1)
    assert (pi.overlap, pi.tracker_threads) == (True, 2) and pi == PI_4_5
    assert (eight.overlap, eight.tracker_threads) == (True, 4)
    # what the pipeline computes (the flow schedule) is the same on every board
    assert {p.idle_stride for p in (one, two, pi, eight)} == {3}
    assert profile_for().cores == available_cores() >= 1


def test_bench_note_names_the_ratios_a_pi_user_compares() -> None:
    text = "\n".join(bench_note(2))
    for key in ("stream_overlap_vs_bare_p50", "rest_stream_overlap_vs_bare_p50", "rest_cpu_vs_bare_mean",
                "rest_flow_share", "still_cpu_vs_bare_mean", "Pi 4/5 (4 cores)"):
        assert key in text


def test_overlap_default_follows_the_core_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "microexpr.toml"
    path.write_text("[tracker]\nnum_faces = 1\n")
    left_default = load_config(path).tracker
    with caplog.at_level(logging.INFO, logger="microexpr.service.daemon"):
        assert use_overlap(left_default, cores=1) is False
    assert "1 core available" in caplog.text
    assert use_overlap(left_default, cores=2) is True
    assert use_overlap(left_default, cores=4) is True


def test_an_explicit_overlap_is_obeyed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "microexpr.toml"
    path.write_text("[tracker]\noverlap = true\n")
    forced = load_config(path).tracker
    with caplog.at_level(logging.WARNING, logger="microexpr.service.daemon"):
        assert use_overlap(forced, cores=1) is True
    assert "take turns" in caplog.text
    assert use_overlap(TrackerConfig(overlap=False), cores=4) is False


def test_the_pipeline_runs_opencv_without_its_thread_pool() -> None:
    """OpenCV's pool is sized by the profile (1 on every board: the flow's
    crops are too small for it, and its spinning workers take the tracker's
    cores) when a pipeline is built."""
    import cv2

    from microexpr.cores import apply_opencv_threads
    from microexpr.models import resolve_model_path
    from microexpr.pipeline import Pipeline

    assert {profile_for(n).opencv_threads for n in (1, 2, 4, 8)} == {1}
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        with Pipeline.create(model_path=resolve_model_path()):
            assert cv2.getNumThreads() == 1
        cv2.setNumThreads(3)
        assert apply_opencv_threads(replace(profile_for(4), opencv_threads=2)) == 2
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)

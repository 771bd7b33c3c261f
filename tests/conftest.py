"""Shared fixtures: paths to the real model and real face media in ../shared.

Real-part fixtures live in tests/fixtures/ (mosquitto broker, OpenAI-speaking
HTTP server) and are loaded as plugins below.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["fixtures.broker", "fixtures.openai_server", "fixtures.tracked_clip", "fixtures.chromium"]

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MICROEXPR_SHARED", ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED} (set MICROEXPR_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def model_mirror(shared_dir: Path) -> Path:
    return shared_dir / "models"


@pytest.fixture(scope="session")
def model_path(model_mirror: Path) -> Path:
    """The verified FaceLandmarker bundle from the local mirror."""
    return model_mirror / "face_landmarker.task"


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "media"


@pytest.fixture(scope="session")
def smile_clip(media_dir: Path) -> Path:
    """Real man, neutral (frames 0-17) then a broad smile; 72 frames, 30 fps."""
    return media_dir / "single_face.mp4"


@pytest.fixture(scope="session")
def casme2_csv(shared_dir: Path) -> Path:
    return shared_dir / "data" / "labels" / "casme2_coding.csv"


@pytest.fixture(scope="session")
def casme2_xlsx(shared_dir: Path) -> Path:
    return shared_dir / "data" / "labels" / "CASME2-coding-20190701.xlsx"

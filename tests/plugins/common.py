"""Fixtures every area uses: the repo root, ../shared samples, a scratch data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SAMPLES = REPO_ROOT.parent / "shared" / "samples" / "flex-real"
FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def shared_samples() -> Path:
    if not SHARED_SAMPLES.is_dir():
        pytest.skip(f"../shared is absent: {SHARED_SAMPLES} not found (real-sample tests skipped)")
    return SHARED_SAMPLES


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path

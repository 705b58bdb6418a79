"""Fixtures every area uses: the repo root, ../shared samples, a scratch data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexsync.core.logs import install_log_filters

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SAMPLES = REPO_ROOT.parent / "shared" / "samples" / "flex-real"
FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(autouse=True, scope="session")
def _http_log_filters() -> None:
    """The scrubbing filters on httpx/httpcore's loggers, as every CLI command installs
    them (setup_logging): tests that capture those records see what production logs."""
    install_log_filters()


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

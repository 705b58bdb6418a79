"""Fixtures of the reliability suite: the figures ledger, the fakes, a demo template."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DEMO_STATEMENT
from tests.reliability.harness import (
    ACCOUNT_UUID,
    WF_PASSWORD,
    ReliabilityFakeWealthfolio,
    file_mode_env,
    run_inprocess,
    set_dbt_dirs,
)
from tests.reliability.report import LEDGER, Scenario

Recorder = Callable[..., Scenario]


@pytest.fixture
def reliability_ledger(request: pytest.FixtureRequest) -> Recorder:
    """`reliability_ledger(scenario=..., faults=..., expected=..., in_wealthfolio=...,
    lost=..., duplicated=..., secrets=...)` records one row of the report."""

    def record(**figures: Any) -> Scenario:
        return LEDGER.record(request.node.nodeid, **figures)

    return record


@pytest.fixture(scope="session", autouse=True)
def _dbt_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("reliability-dbt")
    set_dbt_dirs(root / "target", root / "logs")


@pytest.fixture
def wf() -> Iterator[ReliabilityFakeWealthfolio]:
    """The strict fake Wealthfolio with the session's password and the demo account."""
    fake = ReliabilityFakeWealthfolio(WF_PASSWORD)
    fake.create_account("IBKR ISA", "GBP", account_id=ACCOUNT_UUID)
    with fake:
        try:
            yield fake
        finally:
            fake.release.set()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory, _dbt_dirs: None) -> Path:
    """A data dir with the demo statement landed and the marts built, nothing posted
    (a dry run without Wealthfolio): 9 activities to post. Copied per scenario."""
    data_dir = tmp_path_factory.mktemp("reliability-template") / "data"
    env = file_mode_env(data_dir, None)
    result = run_inprocess(["sync", "--dry-run", "--flex-file", str(DEMO_STATEMENT)], env)
    assert result.code == 0 and result.exception is None, result.describe()
    return data_dir


@pytest.fixture
def demo_data_dir(demo_template: Path, tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    shutil.copytree(demo_template, data_dir)
    return data_dir

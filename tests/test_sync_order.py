"""The order in which a sync starts its processes (flexsync/commands.py), stages faked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from flexsync import commands, stages
from flexsync.core.config import load_settings
from flexsync.runs import RunRecord


@pytest.mark.parametrize(("land_alone_bytes", "expected"), [
    (1_000, ["worker starts", "extract", "snapshot", "transform", "worker ends"]),
    (10, ["extract", "worker starts", "snapshot", "transform", "worker ends"]),
])
def test_a_large_statement_lands_before_dbt_s_worker_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, land_alone_bytes: int,
        expected: list[str]) -> None:
    """dbt's worker imports dbt while a small statement lands (≈2 s off the night); a large
    one lands alone first — its landing beside dbt's import did not fit the pod."""
    events: list[str] = []

    class Worker:
        def call(self, stage: str, record: RunRecord, fn: Callable[..., Any],
                 *args: Any) -> None:
            events.append(stage)

    @contextmanager
    def stage_worker(name: str, prepare: Callable[..., Any], *args: Any) -> Iterator[Worker]:
        events.append("worker starts")
        yield Worker()
        events.append("worker ends")

    def in_child(stage: str, record: RunRecord, fn: Callable[..., Any], *args: Any) -> None:
        events.append(stage)

    monkeypatch.setattr(commands, "stage_worker", stage_worker)
    monkeypatch.setattr(commands, "in_child", in_child)
    monkeypatch.setattr(commands, "LAND_ALONE_BYTES", land_alone_bytes)
    monkeypatch.setattr(stages, "show_plan", lambda settings: None)
    statement = tmp_path / "statement.xml"
    statement.write_bytes(b"x" * 100)
    settings = load_settings({"BROKER_SYNC_DATA_DIR": str(tmp_path / "data"),
                              "IBKR_ACCOUNT_ID_UPSTREAM": "U1234567"})
    (tmp_path / "data").mkdir()
    assert commands.sync(settings, [statement], dry_run=True) == 0
    assert events == expected

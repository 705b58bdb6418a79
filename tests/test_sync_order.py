"""The order in which a sync starts its processes (flexsync/commands.py): stages faked,
and end to end where the order changes what runs where."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fakes.wealthfolio import FakeWealthfolio
from flexsync import commands, runs, stages
from flexsync.core.config import Settings, load_settings
from flexsync.core.errors import ConfigurationError, DbtError, ExitCode, FlexsyncError
from flexsync.runs import RunRecord
from tests.helpers import DEMO_STATEMENT, process_alive, query

PASSWORD = "order-Wf-Pa55word"


def _record_processes(monkeypatch: pytest.MonkeyPatch, to_post: int = 0,
                      failing_stage: str | None = None, forks_failing: int = 0) -> list[str]:
    """Replace the sync's process starts with fakes that note what started, in order (a
    stage in dbt's worker as "worker: <stage>", one in a child of its own as "<stage>"),
    and note when the run's row and its outcome are written; the faked transform reports
    `to_post` activities to post, `failing_stage` raises a DbtError, and the worker's
    first `forks_failing` forks fail (OSError)."""
    forks_to_fail = [forks_failing]
    events: list[str] = []

    def stage_ran(stage: str) -> None:
        events.append(stage)
        if stage.removeprefix("worker: ") == failing_stage:
            raise DbtError(f"{stage} failed")

    class Worker:
        """Entered where the run starts and again around the stages, as StageWorker."""

        running = False

        def __enter__(self) -> Worker:
            if not self.running and forks_to_fail[0]:
                forks_to_fail[0] -= 1
                events.append("worker's fork fails")
                raise OSError(11, "Resource temporarily unavailable")
            if not self.running:
                self.running = True
                events.append("worker starts")
            return self

        def __exit__(self, *exc_info: object) -> None:
            if self.running:
                self.running = False
                events.append("worker ends")

        def call(self, stage: str, record: RunRecord, fn: Callable[..., Any],
                 *args: Any) -> None:
            if stage == "transform":
                record.counts["transform_to_post"] = to_post
            stage_ran(f"worker: {stage}")

    def stage_worker(name: str, prepare: Callable[..., Any], *args: Any) -> Worker:
        return Worker()

    def in_child(stage: str, record: RunRecord, fn: Callable[..., Any], *args: Any) -> None:
        stage_ran(stage)

    def noting(event: str, write: Callable[..., None]) -> Callable[..., None]:
        def note_and_write(*args: Any) -> None:
            events.append(event)
            write(*args)
        return note_and_write

    monkeypatch.setattr(commands, "stage_worker", stage_worker)
    monkeypatch.setattr(commands, "in_child", in_child)
    monkeypatch.setattr(runs, "_record_start", noting("run's row", runs._record_start))
    monkeypatch.setattr(runs, "_record_end", noting("run's outcome", runs._record_end))
    return events


def _small_statement_settings(tmp_path: Path, **env: str) -> tuple[Path, Settings]:
    """A tiny statement file and settings for a data directory that exists (with `env`)."""
    statement = tmp_path / "statement.xml"
    statement.write_bytes(b"x" * 100)
    (tmp_path / "data").mkdir(exist_ok=True)
    settings = load_settings({"BROKER_SYNC_DATA_DIR": str(tmp_path / "data"),
                              "IBKR_ACCOUNT_ID_UPSTREAM": "U1234567", **env})
    return statement, settings


@pytest.mark.parametrize(("land_alone_bytes", "expected"), [
    (1_000, ["worker starts", "run's row", "extract", "snapshot", "worker: transform",
             "worker ends", "run's outcome"]),
    (10, ["run's row", "extract", "worker starts", "snapshot", "worker: transform",
          "worker ends", "run's outcome"]),
])
def test_a_large_statement_lands_before_dbt_s_worker_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, land_alone_bytes: int,
        expected: list[str]) -> None:
    """dbt's worker imports dbt while the run's row is written and a small statement
    lands (≈2 s off the night); a large one lands alone first — its landing beside dbt's
    import did not fit the pod."""
    events = _record_processes(monkeypatch)
    monkeypatch.setattr(commands, "LAND_ALONE_BYTES", land_alone_bytes)
    monkeypatch.setattr(stages, "show_plan", lambda settings: None)
    statement, settings = _small_statement_settings(tmp_path)
    assert commands.sync(settings, [statement], dry_run=True) == 0
    assert events == expected


@pytest.mark.parametrize(("to_post", "expected"), [
    (commands.KEEP_DBT_WORKER_MAX_POSTS,
     ["worker starts", "run's row", "extract", "snapshot", "worker: transform", "load",
      "worker: drift", "worker ends", "publish", "run's outcome"]),
    (commands.KEEP_DBT_WORKER_MAX_POSTS + 1,
     ["worker starts", "run's row", "extract", "snapshot", "worker: transform",
      "worker ends", "load", "drift", "publish", "run's outcome"]),
])
def test_dbt_s_worker_waits_through_a_small_load_and_goes_before_a_big_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, to_post: int,
        expected: list[str]) -> None:
    """A night's few posts run beside the idle worker, which then builds the drift without
    a second dbt import; a backfill's load runs alone (its memory grows with the posts)."""
    events = _record_processes(monkeypatch, to_post)
    monkeypatch.setattr(stages, "publish", lambda settings, record: events.append("publish"))
    monkeypatch.setattr(stages, "push", lambda *args, **kwargs: None)
    statement, settings = _small_statement_settings(
        tmp_path, WF_BASE_URL="http://127.0.0.1:9", WF_PASSWORD=PASSWORD,
        IBKR_ACCOUNT_ID="acc-1")
    assert commands.sync(settings, [statement], dry_run=False) == 0
    assert events == expected


@pytest.mark.parametrize(("failing_stage", "expected"), [
    ("extract", ["worker starts", "run's row", "extract", "worker ends", "run's outcome"]),
    ("transform", ["worker starts", "run's row", "extract", "snapshot", "worker: transform",
                   "worker ends", "run's outcome"]),
])
def test_dbt_s_worker_is_stopped_before_a_failed_run_s_outcome_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_stage: str,
        expected: list[str]) -> None:
    """A worker stopped mid-build must have let go of the warehouse before the run's
    outcome is written there — the worker starts before the run's row, so it could
    otherwise still be running when the outcome is."""
    events = _record_processes(monkeypatch, failing_stage=failing_stage)
    statement, settings = _small_statement_settings(tmp_path)
    with pytest.raises(DbtError):
        commands.sync(settings, [statement], dry_run=True)
    assert events == expected
    assert query(tmp_path / "data", "select outcome, exit_code from sync.runs") == [
        ("failed", int(ExitCode.DBT))]


def test_a_run_that_fails_before_its_stages_stops_dbt_s_worker_before_its_outcome(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker started with the run: a setting missing for the load stops it there,
    before the outcome is written."""
    events = _record_processes(monkeypatch)
    statement, settings = _small_statement_settings(tmp_path)  # no WF_BASE_URL
    with pytest.raises(ConfigurationError):
        commands.sync(settings, [statement], dry_run=False)
    assert events == ["worker starts", "run's row", "worker ends", "run's outcome"]
    assert query(tmp_path / "data", "select outcome, exit_code from sync.runs") == [
        ("failed", int(ExitCode.CONFIGURATION))]


def test_a_worker_that_cannot_fork_with_the_run_starts_with_the_stages(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork that fails where the run starts (no memory for a moment, the pids limit) is
    not the run's failure: the worker starts where the stages do, inside the recorded
    run — and a fork that fails there too is recorded as the run's error."""
    events = _record_processes(monkeypatch, forks_failing=1)
    monkeypatch.setattr(stages, "show_plan", lambda settings: None)
    statement, settings = _small_statement_settings(tmp_path)
    assert commands.sync(settings, [statement], dry_run=True) == 0
    assert events == ["worker's fork fails", "run's row", "worker starts", "extract",
                      "snapshot", "worker: transform", "worker ends", "run's outcome"]
    events = _record_processes(monkeypatch, forks_failing=2)
    with pytest.raises(OSError, match="temporarily unavailable"):
        commands.sync(settings, [statement], dry_run=True)
    assert events == ["worker's fork fails", "run's row", "worker's fork fails",
                      "run's outcome"]
    assert query(tmp_path / "data", "select outcome, exit_code from sync.runs "
                                    "order by started_at") == [
        ("success", 0), ("failed", int(ExitCode.UNEXPECTED))]


def test_a_run_whose_row_cannot_be_written_stops_dbt_s_worker_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dbt's worker is already importing when the run's row is written: a warehouse that
    cannot be opened ends the run with its error, and the worker with it, at once."""
    pid_file = tmp_path / "worker.pid"

    def prepare_slowly(settings: Any) -> None:  # in the forked worker
        pid_file.write_text(str(os.getpid()))
        time.sleep(60)

    monkeypatch.setattr(stages, "prepare_dbt", prepare_slowly)
    statement, settings = _small_statement_settings(tmp_path)
    (settings.data_dir / "warehouse.duckdb").write_bytes(b"not a duckdb file" * 1000)
    started = time.monotonic()
    with pytest.raises(FlexsyncError, match="warehouse"):
        commands.sync(settings, [statement], dry_run=True)
    assert time.monotonic() - started < 10
    assert not multiprocessing.active_children(), "dbt's worker outlived the run"
    if pid_file.exists() and pid_file.read_text():  # it had begun to prepare
        assert not process_alive(int(pid_file.read_text()))


def _sync_demo(tmp_path: Path, keep_max: int, monkeypatch: pytest.MonkeyPatch
               ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], str]:
    monkeypatch.setattr(commands, "KEEP_DBT_WORKER_MAX_POSTS", keep_max)
    data_dir = tmp_path / f"data-{keep_max}"
    with FakeWealthfolio(PASSWORD) as wf:
        wf.create_account("IBKR ISA", "GBP")
        account = next(iter(wf.accounts))
        settings = load_settings({
            "BROKER_SYNC_DATA_DIR": str(data_dir), "IBKR_ACCOUNT_ID_UPSTREAM": "U1234567",
            "IBKR_ACCOUNT_ID": account, "WF_BASE_URL": wf.base_url, "WF_PASSWORD": PASSWORD,
            "WF_SESSION_PATH": str(tmp_path / f"session-{keep_max}.json")})
        assert commands.sync(settings, [DEMO_STATEMENT], dry_run=False) == 0
        posted = sorted((str(a["idempotencyKey"]), str(a["activityType"]), str(a["quantity"]),
                         str(a.get("amount")))
                        for a in wf.activities_for(account))
    drift = query(data_dir, "select symbol, broker_quantity, wf_quantity, drift "
                            "from marts.position_drift order by all")
    stages_run = query(data_dir, "select stage_durations_json from sync.runs "
                                 "where command = 'sync'")[-1][0]
    return posted, drift, stages_run


def test_a_sync_posts_and_drifts_the_same_whether_dbt_s_worker_waits_or_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = _sync_demo(tmp_path, commands.KEEP_DBT_WORKER_MAX_POSTS, monkeypatch)
    released = _sync_demo(tmp_path, 0, monkeypatch)
    assert kept[0] and kept[1]
    assert kept[:2] == released[:2]
    for stages_run in (kept[2], released[2]):
        for stage in ("snapshot", "transform", "load", "drift", "publish"):
            assert f'"{stage}"' in stages_run


def test_a_drift_refresh_of_its_own_snapshots_in_a_child_before_importing_dbt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After a big load: the snapshot (a whole backfill's 63,000 activities) runs in a
    child of the drift's process and exits, so what it leaves behind is not under dbt's
    build (262 -> 232 MiB, session 10); the build stays in the drift's process."""
    order: list[tuple[str, int]] = []

    def snapshot_after_load(settings: Any, record: RunRecord) -> None:
        record.counts["snapshot_pid"] = os.getpid()

    def transform(settings: Any, record: RunRecord, **kwargs: Any) -> None:
        order.append(("transform", os.getpid()))
        assert kwargs["select"] == stages.DRIFT_MODELS

    monkeypatch.setattr(stages, "snapshot_after_load", snapshot_after_load)
    monkeypatch.setattr(stages, "transform", transform)
    record = RunRecord("run-1", "load")
    stages.refresh_drift_importing_dbt(object(), record)  # type: ignore[arg-type]
    assert record.counts["snapshot_pid"] != os.getpid()
    assert order == [("transform", os.getpid())]

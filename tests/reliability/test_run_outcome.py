"""The run's outcome is what the metrics say: pushed last, after the analytics copy, with
the true exit code; a SIGTERM (the Job's deadline) is recorded and pushed as a failure;
unfinished archive files of a killed run do not pile up."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

from tests.helpers import DEMO_STATEMENT
from tests.plugins.pushgateway import RunningPushgateway
from tests.reliability.conftest import Recorder
from tests.reliability.harness import (
    DEMO_EXPECTED,
    FlexsyncProcess,
    ReliabilityFakeWealthfolio,
    assert_clean_failure,
    demo_statement_with_more,
    file_mode_env,
    partial_problems,
    readonly,
    run_inprocess,
)
from tests.reliability.launcher import STALL_MARKER

LAST_SUCCESS = "ibkr_sync_last_success_timestamp_seconds"
EXIT_CODE = "ibkr_sync_last_run_exit_code"


def _pushed(gateway: RunningPushgateway, name: str) -> list[float]:
    return [s.value for s in gateway.samples(name)]


def _last_run(data_dir: Path) -> tuple[str, int, str]:
    with readonly(data_dir / "warehouse.duckdb") as con:
        row = con.execute("select outcome, exit_code, message from sync.runs "
                          "order by started_at desc limit 1").fetchone()
    assert row is not None
    return str(row[0]), int(row[1]), str(row[2])


def test_a_failed_analytics_copy_is_pushed_as_a_failure(
        tmp_path: Path, wf: ReliabilityFakeWealthfolio, pushgateway: RunningPushgateway,
        reliability_ledger: Recorder) -> None:
    data_dir = tmp_path / "data"
    env = file_mode_env(data_dir, wf, push_url=pushgateway.url)
    first = run_inprocess(["sync", "--flex-file", str(DEMO_STATEMENT)], env)
    assert first.code == 0, first.describe()
    (first_success,) = _pushed(pushgateway, LAST_SUCCESS)
    # Day 2: the analytics copy cannot be written (a directory where the file goes stands
    # in for a full disk).
    analytics = data_dir / "analytics.duckdb"
    analytics.unlink()
    (analytics / "in-the-way").mkdir(parents=True)
    day2, expected = demo_statement_with_more(tmp_path)
    second = run_inprocess(["sync", "--flex-file", str(day2)], env)
    reliability_ledger(scenario="analytics copy fails after the load: pushed as failed",
                       faults=1, expected=len(expected), in_wealthfolio=len(wf.activities))
    assert_clean_failure(second, 1, "analytics")
    # The push came after the copy and tells the truth: exit 1, last success unchanged.
    assert _pushed(pushgateway, EXIT_CODE) == [1.0]
    # (the re-pushed time is the first run's recorded end, a moment after its own push)
    (still,) = _pushed(pushgateway, LAST_SUCCESS)
    assert abs(still - first_success) < 2.0, (still, first_success)
    (day2_run,) = _pushed(pushgateway, "ibkr_sync_last_run_timestamp_seconds")
    assert day2_run - still > 2.0
    assert _last_run(data_dir)[:2] == ("failed", 1)
    shutil.rmtree(analytics)  # the disk has room again
    assert not partial_problems(wf, data_dir, expected)
    third = run_inprocess(["sync", "--flex-file", str(day2)], env)
    assert third.code == 0, third.describe()
    assert _pushed(pushgateway, EXIT_CODE) == [0.0]
    assert _pushed(pushgateway, LAST_SUCCESS)[0] > day2_run
    assert len(wf.activities) == len(expected)


def test_sigterm_is_recorded_and_pushed_as_a_failure(
        tmp_path: Path, wf: ReliabilityFakeWealthfolio, pushgateway: RunningPushgateway,
        reliability_ledger: Recorder) -> None:
    data_dir = tmp_path / "data"
    env = file_mode_env(data_dir, wf, push_url=pushgateway.url, RELIABILITY_STALL_AT="publish")
    run = FlexsyncProcess(["sync", "--flex-file", str(DEMO_STATEMENT)], env, launcher=True)
    run.wait_for_line(STALL_MARKER)
    run.proc.send_signal(signal.SIGTERM)  # what the kubelet sends at activeDeadlineSeconds
    result = run.wait(120)
    reliability_ledger(scenario="SIGTERM during the analytics copy", faults=1,
                       expected=len(DEMO_EXPECTED), in_wealthfolio=len(wf.activities))
    assert result.code == 1, result.describe()
    assert "terminated by SIGTERM" in result.last_line, result.describe()
    assert "Traceback" not in result.stderr
    outcome, code, message = _last_run(data_dir)
    assert (outcome, code) == ("failed", 1) and "SIGTERM" in message
    assert _pushed(pushgateway, EXIT_CODE) == [1.0]
    assert _pushed(pushgateway, LAST_SUCCESS) == []  # never succeeded
    assert not list(data_dir.glob(".analytics-*.tmp")), "the half copy was left behind"
    assert not (data_dir / "analytics.duckdb").exists()
    assert not partial_problems(wf, data_dir)


def test_unfinished_archive_files_of_a_killed_run_are_removed(
        demo_data_dir: Path, reliability_ledger: Recorder) -> None:
    archive = demo_data_dir / "archive"
    orphan = archive / "ab" / ".tmp-killed.gz"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"\x1f\x8b half a gzip")
    kept = sorted(p for p in archive.rglob("*.xml.gz"))
    env = file_mode_env(demo_data_dir, None)
    result = run_inprocess(["extract", "--flex-file", str(DEMO_STATEMENT)], env)
    reliability_ledger(scenario="orphaned archive .tmp-*.gz removed", faults=1)
    assert result.code == 0, result.describe()
    assert not orphan.exists()
    assert sorted(p for p in archive.rglob("*.xml.gz")) == kept and kept

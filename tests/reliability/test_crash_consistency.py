"""SIGKILL `flexsync sync` at every stage boundary and inside the posting loop; the
next run converges.

One data dir lives through a crash loop, as a CronJob pod that keeps being OOM-killed
would: each run is killed at a later point than the one before, and between runs the
invariants must hold (nothing doubled in Wealthfolio, the ledger never claims what
Wealthfolio lacks, the warehouse opens read-only, the run lock is free). Then a run
completes and everything is in Wealthfolio exactly once. A second statement's run is
then killed in the middle of publishing the analysts' copy: the previous copy stays
whole, and the next run publishes the new one.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import duckdb

from tests.helpers import DEMO_STATEMENT
from tests.plugins.pushgateway import RunningPushgateway
from tests.reliability.conftest import Recorder
from tests.reliability.harness import (
    DEMO_EXPECTED,
    CliResult,
    FlexsyncProcess,
    ReliabilityFakeWealthfolio,
    conclude,
    demo_statement_with_more,
    file_mode_env,
    ledger_rows,
    partial_problems,
    readonly,
    run_process,
    table_exists,
)
from tests.reliability.launcher import STALL_MARKER

STAGE_LINE = r"INFO\s+{}:"


def _settled(data_dir: Path) -> set[str]:
    return {k for k, s, _ in ledger_rows(data_dir) if s in ("posted", "already_present")}


def _creates(wf: ReliabilityFakeWealthfolio) -> int:
    return len(wf.requests_to("POST", "/activities"))


def _killed(process: FlexsyncProcess, wf: ReliabilityFakeWealthfolio, data_dir: Path,
            where: str, expected: frozenset[str] = DEMO_EXPECTED) -> None:
    process.kill()
    assert process.proc.returncode == -signal.SIGKILL, (where, process.stderr[-2000:])
    wf.release.set()  # a stalled create may finish now: its client is gone
    assert wf.wait_idle(10)
    problems = partial_problems(wf, data_dir, expected)
    assert not problems, (f"after SIGKILL {where}", problems)


def _fct_count(path: Path) -> int:
    with readonly(path) as con:
        row = con.execute("select count(*) from marts.fct_activities").fetchone()
    return int(row[0]) if row else -1


class AnalyticsWatcher:
    """Opens analytics.duckdb read-only over and over, as analysts do during a sync; every
    open must find a complete database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opens = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> AnalyticsWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                _fct_count(self.path)
                self.opens += 1
            except duckdb.Error as exc:
                self.failures.append(str(exc))
            time.sleep(0.01)


def test_sigkill_at_every_stage_then_converge(
        tmp_path: Path, wf: ReliabilityFakeWealthfolio, pushgateway: RunningPushgateway,
        reliability_ledger: Recorder) -> None:
    data_dir = tmp_path / "data"
    env = file_mode_env(data_dir, wf, push_url=pushgateway.url)
    sync = ["sync", "--flex-file", str(DEMO_STATEMENT)]
    runs: list[FlexsyncProcess | CliResult] = []

    # 1. After extract: the statement is landed, dbt is starting.
    run = FlexsyncProcess(sync, env)
    runs.append(run)
    run.wait_for_line(STAGE_LINE.format("extract"))
    _killed(run, wf, data_dir, "after extract")
    assert _creates(wf) == 0

    # 2. After transform: the marts are built, the load is starting.
    run = FlexsyncProcess(sync, env)
    runs.append(run)
    run.wait_for_line(STAGE_LINE.format("transform"))
    _killed(run, wf, data_dir, "after transform")

    # 3. In the middle of posting, in the lost-ack window: Wealthfolio stores this run's
    #    third create (or its last, if fewer are left) and stalls before answering; the
    #    client is killed while it waits: stored in Wealthfolio, unknown to the ledger.
    remaining = len(DEMO_EXPECTED) - len(wf.activities)
    assert remaining >= 1, "runs 1-2 posted everything: no load left to interrupt"
    wf.stall_nth_create(wf.creates_seen + min(3, remaining))
    run = FlexsyncProcess(sync, env)
    runs.append(run)
    run.wait_until(wf.stalled.is_set, what="the stalled create")
    stalled_key = wf.requests_to("POST", "/activities")[-1].json["idempotencyKey"]
    _killed(run, wf, data_dir, "mid-load, between Wealthfolio storing and the ledger")
    assert wf.activity_by_key(stalled_key) is not None
    assert stalled_key not in _settled(data_dir)  # the window really was open

    # 4. After load, before push (drift refresh running): nothing pushed yet.
    run = FlexsyncProcess(sync, env)
    runs.append(run)
    run.wait_for_line(STAGE_LINE.format("load"))
    _killed(run, wf, data_dir, "after load, before push")
    assert stalled_key in _settled(data_dir)  # the lost ack recovered, not posted twice
    assert not pushgateway.samples("ibkr_sync_last_run_exit_code")

    # 5. The next run converges; a second sync started meanwhile exits 8 at once.
    run = FlexsyncProcess(sync, env)
    runs.append(run)
    run.wait_for_line(STAGE_LINE.format("extract"))
    started = time.monotonic()
    second = run_process(sync, env, timeout=60)
    runs.append(second)
    assert second.code == 8 and time.monotonic() - started < 30, second.describe()
    assert "another flexsync run holds the warehouse lock" in second.last_line
    result = run.wait()
    assert result.code == 0, result.describe()
    with readonly(data_dir / "warehouse.duckdb") as con:
        outcomes = dict(con.execute("select outcome, count(*) from sync.runs group by 1")
                        .fetchall())
    assert outcomes == {"abandoned": 4, "success": 1}, outcomes  # no run "running" for ever
    assert pushgateway.samples("ibkr_sync_last_success_timestamp_seconds")
    assert _fct_count(data_dir / "analytics.duckdb") == len(DEMO_EXPECTED)
    conclude(reliability_ledger, "SIGKILL after extract, after transform, mid-load in the "
             "lost-ack window, before push", 4, wf, data_dir, runs,
             metrics_text=pushgateway.metrics_text())

    # 6. A day later: SIGKILL in the middle of publishing the analysts' copy.
    day2, expected = demo_statement_with_more(tmp_path)
    sync2 = ["sync", "--flex-file", str(day2)]
    run = FlexsyncProcess(sync2, {**env, "RELIABILITY_STALL_AT": "publish"}, launcher=True)
    runs.append(run)
    run.wait_for_line(STALL_MARKER)
    _killed(run, wf, data_dir, "during the analytics copy", expected)
    assert list(data_dir.glob(".analytics-*.tmp")), "the kill left no half-written copy?"
    assert _fct_count(data_dir / "analytics.duckdb") == len(DEMO_EXPECTED)  # still day 1

    # 7. The next run publishes day 2; analysts reading meanwhile always see a whole file.
    with AnalyticsWatcher(data_dir / "analytics.duckdb") as watcher:
        run = FlexsyncProcess(sync2, env)
        runs.append(run)
        result = run.wait()
    assert result.code == 0, result.describe()
    assert watcher.opens > 0 and not watcher.failures, watcher.failures[:3]
    assert _fct_count(data_dir / "analytics.duckdb") == len(expected)
    assert not list(data_dir.glob(".analytics-*.tmp"))  # the stale half copy is gone
    with readonly(data_dir / "analytics.duckdb") as con:
        assert table_exists(con, "sync", "posted_activities")
    conclude(reliability_ledger, "SIGKILL during the analytics copy", 1, wf, data_dir, runs,
             expected=expected, metrics_text=pushgateway.metrics_text())

"""Pushgateway down or hanging (a real Debian prometheus-pushgateway, SIGSTOPped): the run
exits 7 with the activities posted and recorded; the next run pushes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.plugins.pushgateway import RunningPushgateway, free_port
from tests.reliability.conftest import Recorder
from tests.reliability.harness import (
    DEMO_EXPECTED,
    ReliabilityFakeWealthfolio,
    assert_clean_failure,
    conclude,
    file_mode_env,
    ledger_rows,
    run_inprocess,
)


@contextmanager
def frozen(gateway: RunningPushgateway) -> Iterator[None]:
    """The gateway process stopped: the kernel still accepts connections, nobody answers."""
    os.kill(gateway.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(gateway.process.pid, signal.SIGCONT)


def _check_first_run(data_dir: Path, wf: ReliabilityFakeWealthfolio) -> None:
    assert {k for k, s, _ in ledger_rows(data_dir) if s == "posted"} == DEMO_EXPECTED
    assert len(wf.activities) == len(DEMO_EXPECTED)


def _check_pushed(gateway: RunningPushgateway) -> None:
    assert gateway.samples("ibkr_sync_last_success_timestamp_seconds")
    assert [s.value for s in gateway.samples("ibkr_sync_last_run_exit_code")] == [0.0]
    assert {s.labels["symbol"] for s in gateway.samples("ibkr_position_drift_shares")}


def test_pushgateway_down(demo_data_dir: Path, wf: ReliabilityFakeWealthfolio,
                          pushgateway: RunningPushgateway, reliability_ledger: Recorder) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    first = run_inprocess(["load"], file_mode_env(demo_data_dir, wf, push_url=dead))
    assert_clean_failure(first, 7, "Pushgateway", "connection refused",
                         "activities are already loaded")
    _check_first_run(demo_data_dir, wf)
    second = run_inprocess(["load"], file_mode_env(demo_data_dir, wf, push_url=pushgateway.url))
    assert second.code == 0, second.describe()
    _check_pushed(pushgateway)
    conclude(reliability_ledger, "Pushgateway down", 1, wf, demo_data_dir, [first, second],
             metrics_text=pushgateway.metrics_text())


def test_pushgateway_hanging(demo_data_dir: Path, wf: ReliabilityFakeWealthfolio,
                             pushgateway: RunningPushgateway,
                             reliability_ledger: Recorder) -> None:
    env = file_mode_env(demo_data_dir, wf, push_url=pushgateway.url,
                        FLEXSYNC_HTTP_TIMEOUT_SECONDS="1")
    with frozen(pushgateway):
        first = run_inprocess(["load"], env)
    assert_clean_failure(first, 7, "Pushgateway", "timeout", "activities are already loaded")
    _check_first_run(demo_data_dir, wf)
    second = run_inprocess(["load"], env)
    assert second.code == 0, second.describe()
    _check_pushed(pushgateway)
    conclude(reliability_ledger, "Pushgateway hanging (SIGSTOP)", 1, wf, demo_data_dir,
             [first, second], metrics_text=pushgateway.metrics_text())

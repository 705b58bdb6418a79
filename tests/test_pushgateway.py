"""flexsync.loaders.pushgateway against a real Pushgateway (tests/plugins/pushgateway.py)."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import duckdb
import pytest
from prometheus_client import CollectorRegistry, Gauge, Summary
from prometheus_client.parser import text_string_to_metric_families

from flexsync.core.errors import ExitCode, PushgatewayError
from flexsync.loaders.pushgateway import (
    CashDriftRow,
    DriftRow,
    RunFigures,
    build_registry,
    push_run_metrics,
    read_cash_drift_rows,
    read_drift_rows,
    render_registry,
)
from tests.plugins.pushgateway import RunningPushgateway, free_port, require_binary

JOB = "broker-sync-ibkr"
ACCOUNT = "ibkr-uk"
T0 = datetime(2026, 11, 20, 2, 0, 5, tzinfo=UTC)


def push(
    gateway_url: str,
    drift_rows: list[DriftRow],
    *,
    success: bool = True,
    now: datetime = T0,
    figures: RunFigures | None = None,
    account: str = ACCOUNT,
    previous_success: datetime | None = None,
) -> None:
    registry = build_registry(
        drift_rows, account, figures or RunFigures(), success=success, now=now,
        previous_success=previous_success,
    )
    push_run_metrics(gateway_url, JOB, account, registry, timeout=5, sleep=_no_sleep)


def _no_sleep(_seconds: float) -> None:
    return None


def values_by(gateway: RunningPushgateway, name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in gateway.samples(name)}


def single_value(gateway: RunningPushgateway, name: str, account: str = ACCOUNT) -> float | None:
    found = [s for s in gateway.samples(name) if s.labels.get("account") == account]
    assert len(found) <= 1, found
    return found[0].value if found else None


# --- against the real gateway ------------------------------------------------------------


def test_drift_is_pushed_per_symbol_with_account_and_job_labels(
    pushgateway: RunningPushgateway,
) -> None:
    push(pushgateway.url, [
        DriftRow("VOD.L", Decimal("10")),
        DriftRow("AAPL", Decimal("-2.5")),
        DriftRow("MSFT", None),  # no drift figure (e.g. no quantity on one side): not pushed
        DriftRow("IWDA.L", Decimal("0")),
    ])

    samples = pushgateway.samples("ibkr_position_drift_shares")
    by_symbol = {s.labels["symbol"]: s for s in samples}
    assert set(by_symbol) == {"VOD.L", "AAPL", "IWDA.L"}
    assert by_symbol["VOD.L"].value == 10.0
    assert by_symbol["AAPL"].value == -2.5
    assert by_symbol["IWDA.L"].value == 0.0
    for sample in samples:
        assert sample.labels["account"] == ACCOUNT
        assert sample.labels["job"] == JOB


def test_accounts_are_separate_groups(pushgateway: RunningPushgateway) -> None:
    push(pushgateway.url, [DriftRow("VOD.L", Decimal("1"))], account="ibkr-uk")
    push(pushgateway.url, [DriftRow("VOD.L", Decimal("2"))], account="ibkr-isa")

    assert values_by(pushgateway, "ibkr_position_drift_shares", "account") == {
        "ibkr-uk": 1.0,
        "ibkr-isa": 2.0,
    }


def test_closed_position_series_disappears_on_the_next_run(
    pushgateway: RunningPushgateway,
) -> None:
    push(pushgateway.url, [DriftRow("VOD.L", Decimal("3")), DriftRow("AAPL", Decimal("1"))])
    push(pushgateway.url, [DriftRow("AAPL", Decimal("1"))], now=T0 + timedelta(days=1))

    assert values_by(pushgateway, "ibkr_position_drift_shares", "symbol") == {"AAPL": 1.0}

    push(pushgateway.url, [], now=T0 + timedelta(days=2))
    assert pushgateway.samples("ibkr_position_drift_shares") == []


def test_last_success_is_only_pushed_by_a_successful_run(
    pushgateway: RunningPushgateway,
) -> None:
    push(pushgateway.url, [], success=False, figures=RunFigures(failed=2, exit_code=5))

    assert single_value(pushgateway, "ibkr_sync_last_success_timestamp_seconds") is None
    assert single_value(pushgateway, "ibkr_sync_last_run_timestamp_seconds") == T0.timestamp()
    assert single_value(pushgateway, "ibkr_sync_last_run_exit_code") == 5.0

    later = T0 + timedelta(hours=1)
    push(pushgateway.url, [], success=True, now=later)
    assert single_value(pushgateway, "ibkr_sync_last_success_timestamp_seconds") == (
        later.timestamp()
    )


def test_last_success_survives_a_failed_run(pushgateway: RunningPushgateway) -> None:
    push(pushgateway.url, [DriftRow("VOD.L", Decimal("1"))], success=True, now=T0)
    failed_at = T0 + timedelta(days=1)
    push(
        pushgateway.url,
        [DriftRow("VOD.L", Decimal("1"))],
        success=False,
        now=failed_at,
        figures=RunFigures(exit_code=4),
        previous_success=T0,  # what the caller's run history (sync.runs) says
    )

    # The failed run's figures are current, the success timestamp is the earlier run's.
    assert single_value(pushgateway, "ibkr_sync_last_success_timestamp_seconds") == (
        T0.timestamp()
    )
    assert single_value(pushgateway, "ibkr_sync_last_run_timestamp_seconds") == (
        failed_at.timestamp()
    )
    assert single_value(pushgateway, "ibkr_sync_last_run_exit_code") == 4.0
    assert len(pushgateway.samples("ibkr_sync_last_success_timestamp_seconds")) == 1


def test_one_put_per_run_into_one_group(pushgateway: RunningPushgateway) -> None:
    push(pushgateway.url, [DriftRow("VOD.L", Decimal("1"))], success=True, now=T0)
    push(pushgateway.url, [], success=False, now=T0 + timedelta(days=1),
         previous_success=T0)
    groups = json.loads(urllib.request.urlopen(
        f"{pushgateway.url}/api/v1/metrics", timeout=5).read())["data"]
    assert [g["labels"] for g in groups] == [{"job": JOB, "account": ACCOUNT}]
    # Each group records the time of its last PUT: one group, pushed by the last run.
    assert {name for name in groups[0] if name != "labels"} >= {
        "ibkr_sync_last_success_timestamp_seconds", "push_time_seconds"}


def test_run_figures_are_pushed(pushgateway: RunningPushgateway) -> None:
    figures = RunFigures(posted=7, already_present=3, failed=1, unmapped=2, exit_code=5)
    push(pushgateway.url, [], success=False, figures=figures)

    assert single_value(pushgateway, "ibkr_sync_activities_posted") == 7.0
    assert single_value(pushgateway, "ibkr_sync_activities_already_present") == 3.0
    assert single_value(pushgateway, "ibkr_sync_activities_failed") == 1.0
    assert single_value(pushgateway, "ibkr_sync_unmapped_transactions") == 2.0
    assert single_value(pushgateway, "ibkr_sync_last_run_exit_code") == 5.0

    # The next run's figures replace these (they are per run, not running totals).
    push(pushgateway.url, [], figures=RunFigures(posted=1))
    assert single_value(pushgateway, "ibkr_sync_activities_posted") == 1.0
    assert single_value(pushgateway, "ibkr_sync_activities_failed") == 0.0
    assert single_value(pushgateway, "ibkr_sync_last_run_exit_code") == 0.0


def test_metrics_rejected_by_the_gateway_fail_at_once(pushgateway: RunningPushgateway) -> None:
    push(pushgateway.url, [DriftRow("VOD.L", Decimal("1"))], account="ibkr-isa")
    # The same name with another type in another group: the gateway answers 400.
    registry = CollectorRegistry()
    Summary("ibkr_position_drift_shares", "drift", registry=registry).observe(1)
    sleeps: list[float] = []

    with pytest.raises(PushgatewayError, match="HTTP 400: pushed metrics are invalid") as excinfo:
        push_run_metrics(pushgateway.url, JOB, ACCOUNT, registry, timeout=5, sleep=sleeps.append)

    assert sleeps == []  # a 4xx is not retried
    assert excinfo.value.exit_code == ExitCode.PUSHGATEWAY


def test_gateway_sets_the_account_label_from_the_grouping_key(
    pushgateway: RunningPushgateway,
) -> None:
    # Why the drift series' `account` always equals the group's: the gateway enforces it.
    registry = CollectorRegistry()
    Gauge("ibkr_position_drift_shares", "drift", ["symbol", "account"], registry=registry).labels(
        symbol="VOD.L", account="someone-else"
    ).set(1)
    push_run_metrics(pushgateway.url, JOB, ACCOUNT, registry, timeout=5)

    assert values_by(pushgateway, "ibkr_position_drift_shares", "account") == {ACCOUNT: 1.0}


# --- failures without a working gateway -------------------------------------------------


def test_gateway_down_fails_quickly_with_bounded_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sleeps: list[float] = []
    registry = build_registry([], ACCOUNT, RunFigures(), success=True, now=T0)

    started = time.monotonic()
    with pytest.raises(PushgatewayError) as excinfo:
        push_run_metrics(url, JOB, ACCOUNT, registry, timeout=2, attempts=3, sleep=sleeps.append)

    assert time.monotonic() - started < 2
    assert sleeps == [1.0, 2.0]  # two retries, growing pause, then give up
    message = str(excinfo.value)
    assert "connection refused" in message
    assert url in message
    assert "after 3 attempts" in message
    assert excinfo.value.exit_code == ExitCode.PUSHGATEWAY == 7


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections (kernel backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_silent_gateway_times_out(silent_server: str) -> None:
    registry = build_registry([], ACCOUNT, RunFigures(), success=False, now=T0)
    sleeps: list[float] = []

    started = time.monotonic()
    with pytest.raises(PushgatewayError, match="timeout") as excinfo:
        push_run_metrics(
            silent_server, JOB, ACCOUNT, registry, timeout=0.3, attempts=2, sleep=sleeps.append
        )

    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3  # two attempts of 0.3 s, no hang
    assert sleeps == [1.0]
    assert excinfo.value.exit_code == ExitCode.PUSHGATEWAY


class _StatusServer(http.server.ThreadingHTTPServer):
    status = 503
    requests = 0


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    server: _StatusServer

    def do_PUT(self) -> None:
        self.server.requests += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"temporarily unavailable"
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def status_server() -> Iterator[_StatusServer]:
    server = _StatusServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_5xx_is_retried_a_bounded_number_of_times(status_server: _StatusServer) -> None:
    url = f"http://127.0.0.1:{status_server.server_address[1]}"
    registry = build_registry([], ACCOUNT, RunFigures(), success=True, now=T0)
    sleeps: list[float] = []

    with pytest.raises(PushgatewayError, match="HTTP 503: temporarily unavailable"):
        push_run_metrics(url, JOB, ACCOUNT, registry, timeout=2, attempts=3, sleep=sleeps.append)

    assert status_server.requests == 3
    assert sleeps == [1.0, 2.0]


def test_credentials_in_the_url_never_reach_the_error() -> None:
    port = free_port()
    registry = build_registry([], ACCOUNT, RunFigures(), success=True, now=T0)

    with pytest.raises(PushgatewayError) as excinfo:
        push_run_metrics(
            f"http://user:hunter2@127.0.0.1:{port}", JOB, ACCOUNT, registry,
            timeout=1, attempts=1,
        )

    assert "hunter2" not in str(excinfo.value)
    assert f"127.0.0.1:{port}" in str(excinfo.value)


def test_missing_url_is_a_clear_error() -> None:
    registry = build_registry([], ACCOUNT, RunFigures(), success=True, now=T0)
    with pytest.raises(PushgatewayError, match="PUSHGATEWAY_URL not provided"):
        push_run_metrics("", JOB, ACCOUNT, registry, timeout=1)


# --- building and rendering -------------------------------------------------------------


def test_render_registry_is_valid_exposition_text() -> None:
    registry = build_registry(
        [("VOD.L", Decimal("1.5")), {"symbol": "AAPL", "drift": Decimal("-1")}],
        ACCOUNT,
        RunFigures(posted=2),
        success=True,
        now=T0,
    )
    text = render_registry(registry)
    values = {
        (s.name, s.labels.get("symbol")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    assert values == {
        ("ibkr_position_drift_shares", "VOD.L"): 1.5,
        ("ibkr_position_drift_shares", "AAPL"): -1.0,
        ("ibkr_sync_activities_posted", None): 2.0,
        ("ibkr_sync_activities_already_present", None): 0.0,
        ("ibkr_sync_activities_failed", None): 0.0,
        ("ibkr_sync_unmapped_transactions", None): 0.0,
        ("ibkr_sync_last_run_exit_code", None): 0.0,
        ("ibkr_sync_last_run_timestamp_seconds", None): T0.timestamp(),
        ("ibkr_sync_last_success_timestamp_seconds", None): T0.timestamp(),
    }
    assert 'ibkr_position_drift_shares{account="ibkr-uk",symbol="VOD.L"} 1.5' in text
    assert "# HELP ibkr_position_drift_shares" in text

    promtool = require_binary("promtool")
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_failed_run_registry_has_no_success_timestamp() -> None:
    text = render_registry(build_registry([], ACCOUNT, RunFigures(exit_code=6), False, T0))
    assert "ibkr_sync_last_success_timestamp_seconds" not in text
    assert "ibkr_sync_last_run_exit_code 6.0" in text


def test_same_symbol_from_several_rows_is_netted_in_decimal() -> None:
    rows = [DriftRow("VOD.L", Decimal("0.1"))] * 3 + [DriftRow("VOD.L", Decimal("-0.3"))]
    text = render_registry(build_registry(rows, ACCOUNT, RunFigures(), True, T0))
    # Decimal arithmetic: exactly zero (0.1 * 3 - 0.3 in floats would not be).
    assert 'ibkr_position_drift_shares{account="ibkr-uk",symbol="VOD.L"} 0.0' in text


@pytest.mark.parametrize("bad", [0.5, True, object()])
def test_drift_must_not_be_a_float(bad: object) -> None:
    with pytest.raises(TypeError, match="Decimal"):
        build_registry([("VOD.L", bad)], ACCOUNT, RunFigures(), True, T0)


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_registry([], ACCOUNT, RunFigures(), True, datetime(2026, 11, 20, 2, 0))


def test_read_drift_rows_from_the_mart() -> None:
    con = duckdb.connect()
    con.execute("create schema marts")
    con.execute(
        """
        create table marts.position_drift (
            broker_account_id varchar, wf_account_id varchar, symbol varchar,
            broker_quantity decimal(38, 9), wf_quantity decimal(38, 9),
            drift decimal(38, 9), as_of timestamp
        )
        """
    )
    con.execute(
        """
        insert into marts.position_drift values
            ('U1', 'wf', 'VOD.L', 10, 7.5, 2.5, now()),
            ('U1', 'wf', 'AAPL', 3, 3, 0, now()),
            ('U1', 'wf', 'ODD', null, null, null, now())
        """
    )

    rows = read_drift_rows(con)

    assert rows == [
        DriftRow("AAPL", Decimal("0E-9")),
        DriftRow("ODD", None),
        DriftRow("VOD.L", Decimal("2.500000000")),
    ]
    assert all(isinstance(r.drift, Decimal) for r in rows if r.drift is not None)
    assert "ODD" not in render_registry(build_registry(rows, ACCOUNT, RunFigures(), True, T0))


def test_read_drift_rows_without_the_mart_is_empty() -> None:
    assert read_drift_rows(duckdb.connect()) == []


# --- cash drift ---------------------------------------------------------------------------


def test_cash_drift_is_pushed_per_currency_in_the_same_put(
    pushgateway: RunningPushgateway,
) -> None:
    registry = build_registry(
        [DriftRow("VOD.L", Decimal("1"))], ACCOUNT, RunFigures(), success=True, now=T0,
        cash_drift_rows=[CashDriftRow("GBP", Decimal("-12.34")),
                         CashDriftRow("USD", Decimal("0")),
                         CashDriftRow("CHF", None),  # unknown: not pushed
                         {"currency": "EUR", "drift": Decimal("0.005")}],
    )
    push_run_metrics(pushgateway.url, JOB, ACCOUNT, registry, timeout=5, sleep=_no_sleep)

    cash = {s.labels["currency"]: s for s in pushgateway.samples("ibkr_cash_drift")}
    assert {c: s.value for c, s in cash.items()} == {"GBP": -12.34, "USD": 0.0, "EUR": 0.005}
    assert all(s.labels["account"] == ACCOUNT and s.labels["job"] == JOB
               for s in cash.values())
    # The same group carries the position drift: one PUT replaced it all.
    assert values_by(pushgateway, "ibkr_position_drift_shares", "symbol") == {"VOD.L": 1.0}

    # A currency gone from the next run's drift loses its series (the PUT replaces all).
    registry = build_registry([], ACCOUNT, RunFigures(), success=True,
                              now=T0 + timedelta(days=1),
                              cash_drift_rows=[CashDriftRow("USD", Decimal("2"))])
    push_run_metrics(pushgateway.url, JOB, ACCOUNT, registry, timeout=5, sleep=_no_sleep)
    assert values_by(pushgateway, "ibkr_cash_drift", "currency") == {"USD": 2.0}


def test_cash_drift_rejects_floats_and_non_finite() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        build_registry([], ACCOUNT, RunFigures(), True, T0,
                       cash_drift_rows=[("GBP", 1.5)])
    with pytest.raises(ValueError, match="finite"):
        build_registry([], ACCOUNT, RunFigures(), True, T0,
                       cash_drift_rows=[("GBP", Decimal("NaN"))])


def test_read_cash_drift_rows_from_the_mart() -> None:
    con = duckdb.connect()
    assert read_cash_drift_rows(con) == []  # no mart yet
    con.execute("create schema marts")
    con.execute(
        """
        create table marts.cash_drift (
            broker_account_id varchar, wf_account_id varchar, currency varchar,
            broker_cash decimal(38, 10), wf_cash decimal(38, 10), drift decimal(38, 10)
        )
        """
    )
    con.execute(
        """
        insert into marts.cash_drift values
            ('U1', 'wf', 'USD', 10, 7.5, 2.5),
            ('U1', 'wf', 'GBP', 3, null, null)
        """
    )
    rows = read_cash_drift_rows(con)
    assert rows == [CashDriftRow("GBP", None), CashDriftRow("USD", Decimal("2.5"))]
    assert isinstance(rows[1].drift, Decimal)

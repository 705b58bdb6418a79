"""Push position drift, cash drift and run figures to a Prometheus Pushgateway
(docs/operations.md#alerts-and-metrics).

Metrics are built with prometheus-client and sent with `push_to_gateway` (HTTP PUT),
which replaces the whole group: a position closed since the last run has no series
in the new push, so its drift series disappears.

One PUT per run, to the group ``{account=<label>}`` of job `broker-sync-ibkr`:
drift per symbol, cash drift per currency (``ibkr_cash_drift``), the run figures, and
``ibkr_sync_last_success_timestamp_seconds``.
The success timestamp only *advances* when the whole run succeeded; a failed run
pushes the previous success time again (the caller reads it from its own run
history, `sync.runs`), because the PUT replaces the whole group and would
otherwise erase it — the staleness alert must keep counting from the last real
success, not fire the moment one run fails.
"""

from __future__ import annotations

import logging
import time
import urllib.error
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import duckdb
from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway

from flexsync.core.errors import PushgatewayError
from flexsync.core.logs import without_userinfo

log = logging.getLogger(__name__)

DEFAULT_JOB = "broker-sync-ibkr"

DRIFT_METRIC = "ibkr_position_drift_shares"
CASH_DRIFT_METRIC = "ibkr_cash_drift"
LAST_SUCCESS_METRIC = "ibkr_sync_last_success_timestamp_seconds"
LAST_RUN_METRIC = "ibkr_sync_last_run_timestamp_seconds"
EXIT_CODE_METRIC = "ibkr_sync_last_run_exit_code"
POSTED_METRIC = "ibkr_sync_activities_posted"
ALREADY_PRESENT_METRIC = "ibkr_sync_activities_already_present"
FAILED_METRIC = "ibkr_sync_activities_failed"
UNMAPPED_METRIC = "ibkr_sync_unmapped_transactions"


class DriftRow(NamedTuple):
    symbol: str
    drift: Decimal | None


# A drift row as callers have it: a DriftRow, a mart row as a mapping, or (symbol, drift).
DriftInput = DriftRow | Mapping[str, Any] | Sequence[Any]


class CashDriftRow(NamedTuple):
    currency: str
    drift: Decimal | None


# A cash drift row: a CashDriftRow, a mapping with currency/drift, or (currency, drift).
CashDriftInput = CashDriftRow | Mapping[str, Any] | Sequence[Any]


@dataclass(frozen=True)
class RunFigures:
    """What one run did; pushed as gauges (the values of this run, not running totals)."""

    posted: int = 0
    already_present: int = 0
    failed: int = 0
    unmapped: int = 0
    exit_code: int = 0


def read_drift_rows(con: duckdb.DuckDBPyConnection,
                    wf_account_id: str | None = None) -> list[DriftRow]:
    """Current drift per symbol from `marts.position_drift` (DECIMAL comes back as Decimal),
    of one Wealthfolio account when `wf_account_id` is given (IBKR_ACCOUNT_MAP).

    No mart yet (the very first run failed before dbt built it) means no drift to push;
    the run figures still go out.
    """
    try:
        rows = con.execute(
            "select symbol, drift from marts.position_drift "
            "where ?::varchar is null or wf_account_id = ? order by symbol",
            [wf_account_id, wf_account_id]).fetchall()
    except duckdb.CatalogException:
        log.warning("marts.position_drift does not exist yet: no drift pushed")
        return []
    return [DriftRow(str(symbol), _to_decimal(drift)) for symbol, drift in rows]


def read_cash_drift_rows(con: duckdb.DuckDBPyConnection,
                         wf_account_id: str | None = None) -> list[CashDriftRow]:
    """Current cash drift per currency from `marts.cash_drift` (none before it exists), of
    one Wealthfolio account when `wf_account_id` is given (IBKR_ACCOUNT_MAP)."""
    try:
        rows = con.execute(
            "select currency, drift from marts.cash_drift "
            "where ?::varchar is null or wf_account_id = ? order by currency",
            [wf_account_id, wf_account_id]).fetchall()
    except duckdb.CatalogException:
        log.warning("marts.cash_drift does not exist yet: no cash drift pushed")
        return []
    return [CashDriftRow(str(currency), _to_decimal(drift)) for currency, drift in rows]


def build_registry(
    drift_rows: Iterable[DriftInput],
    account_label: str,
    run_figures: RunFigures,
    success: bool,
    now: datetime,
    previous_success: datetime | None = None,
    cash_drift_rows: Iterable[CashDriftInput] = (),
) -> CollectorRegistry:
    """Everything one run pushes, in a fresh registry (never the process-global one)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (a naive time would be read as local)")
    registry = CollectorRegistry(auto_describe=True)

    drift_gauge = Gauge(
        DRIFT_METRIC,
        "Position drift in shares: IBKR quantity minus Wealthfolio quantity.",
        ["symbol", "account"],
        registry=registry,
    )
    for symbol, drift in _drift_by_symbol(drift_rows).items():
        # Decimal ends here: the exposition format carries floats.
        drift_gauge.labels(symbol=symbol, account=account_label).set(float(drift))

    cash_gauge = Gauge(
        CASH_DRIFT_METRIC,
        "Cash drift per currency: IBKR endingCash minus the cash Wealthfolio books.",
        ["currency", "account"],
        registry=registry,
    )
    for currency, drift in _net_drift(cash_drift_rows, "currency").items():
        cash_gauge.labels(currency=currency, account=account_label).set(float(drift))

    figures = (
        (POSTED_METRIC, "Activities posted to Wealthfolio by the last run.",
         run_figures.posted),
        (ALREADY_PRESENT_METRIC,
         "Activities the last run found already in Wealthfolio (duplicates).",
         run_figures.already_present),
        (FAILED_METRIC, "Activities the last run failed to post.", run_figures.failed),
        (UNMAPPED_METRIC, "Source rows skipped as unmapped (marts.unmapped_transactions).",
         run_figures.unmapped),
        (EXIT_CODE_METRIC, "Exit code of the last run (0 = success).", run_figures.exit_code),
        (LAST_RUN_METRIC, "Unix time the last run finished, successful or not.",
         now.timestamp()),
    )
    for name, help_text, value in figures:
        Gauge(name, help_text, registry=registry).set(value)

    last_success = now if success else previous_success
    if last_success is not None:
        if last_success.tzinfo is None:
            raise ValueError("previous_success must be timezone-aware")
        Gauge(
            LAST_SUCCESS_METRIC,
            "Unix time of the last fully successful sync run.",
            registry=registry,
        ).set(last_success.timestamp())
    return registry


def render_registry(registry: CollectorRegistry) -> str:
    """The exposition text a push would send (for --dry-run)."""
    return generate_latest(registry).decode("utf-8")


def push_run_metrics(
    url: str,
    job: str,
    account_label: str,
    registry: CollectorRegistry,
    timeout: float,
    *,
    attempts: int = 3,
    backoff_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """PUT the run's group (one request; replaces everything the last run pushed).

    Connection errors, timeouts and 5xx are retried a bounded number of times with
    a growing pause; a 4xx (the gateway rejected the metrics) is not retried.
    Any failure raises PushgatewayError.
    """
    if not url:
        raise PushgatewayError("PUSHGATEWAY_URL not provided")
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    _put_with_retries(
        url, job, {"account": account_label}, registry, timeout,
        attempts=attempts, backoff_seconds=backoff_seconds, sleep=sleep,
    )
    log.info("pushed metrics to the Pushgateway (job %s, account %s)", job, account_label)


def _put_with_retries(
    url: str,
    job: str,
    grouping_key: dict[str, str],
    registry: CollectorRegistry,
    timeout: float,
    *,
    attempts: int,
    backoff_seconds: float,
    sleep: Callable[[float], None],
) -> None:
    safe_url = without_userinfo(url)
    for attempt in range(1, attempts + 1):
        try:
            push_to_gateway(
                url, job=job, registry=registry, grouping_key=grouping_key, timeout=timeout
            )
            return
        except urllib.error.HTTPError as exc:
            detail = _http_error_detail(exc)
            reason = f"HTTP {exc.code}{': ' + detail if detail else ''}"
            retryable = exc.code >= 500
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            reason = _network_reason(exc, timeout)
            retryable = True
        if not retryable or attempt == attempts:
            tries = f" after {attempt} attempts" if attempt > 1 else ""
            raise PushgatewayError(
                f"Pushgateway {safe_url} push failed{tries}: {reason} "
                "(the activities are already loaded; only the metrics are missing)"
            )
        pause = backoff_seconds * 2 ** (attempt - 1)
        log.warning(
            "Pushgateway %s: %s; retrying in %.1f s (attempt %d of %d)",
            safe_url, reason, pause, attempt + 1, attempts,
        )
        sleep(pause)


def _network_reason(exc: BaseException, timeout: float) -> str:
    inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(inner, TimeoutError):
        return f"no answer within {timeout:g} s (timeout)"
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused (is the Pushgateway running at this address?)"
    text = str(inner) or type(inner).__name__
    return text


def _http_error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read(500).decode("utf-8", "replace")
    except Exception:  # the body is a courtesy; the status code is the message
        return ""
    return " ".join(body.split())[:300]


def _drift_by_symbol(rows: Iterable[DriftInput]) -> dict[str, Decimal]:
    """Net drift per symbol; rows without a drift figure are not pushed.

    The mart's grain is (account, symbol); when several broker accounts feed the one
    Wealthfolio account a symbol can repeat, and the series is their net drift.
    """
    return _net_drift(rows, "symbol")


def _net_drift(rows: Iterable[Any], key: str) -> dict[str, Decimal]:
    """Net drift per `key` (symbol or currency); rows without a drift are not pushed."""
    totals: dict[str, Decimal] = {}
    for row in rows:
        label, drift = _label_and_drift(row, key)
        if drift is None:
            continue
        if not drift.is_finite():
            raise ValueError(f"drift for {label!r} is not a finite number: {drift}")
        totals[label] = totals.get(label, Decimal(0)) + drift
    return dict(sorted(totals.items()))


def _label_and_drift(row: Any, key: str) -> tuple[str, Decimal | None]:
    if isinstance(row, DriftRow | CashDriftRow):
        label, drift = row[0], row.drift
    elif isinstance(row, Mapping):
        label, drift = row[key], row["drift"]
    elif isinstance(row, Sequence) and not isinstance(row, str) and len(row) == 2:
        label, drift = row[0], row[1]
    else:
        raise TypeError(f"drift row must be ({key}, drift) or a mapping, got {row!r}")
    if not label:
        raise ValueError(f"drift row without a {key}: {row!r}")
    return str(label), _to_decimal(drift)


def _to_decimal(value: object) -> Decimal | None:
    """Quantities are Decimal end to end; a float here means a mart lost precision."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"drift must be a Decimal, not {type(value).__name__} ({value!r})")
    if isinstance(value, int | str):
        try:
            return Decimal(value)
        except InvalidOperation:
            raise ValueError(f"drift {value!r} is not a number") from None
    raise TypeError(f"drift must be a Decimal, not {type(value).__name__}")


__all__ = [
    "CASH_DRIFT_METRIC",
    "DEFAULT_JOB",
    "CashDriftInput",
    "CashDriftRow",
    "DriftInput",
    "DriftRow",
    "RunFigures",
    "build_registry",
    "push_run_metrics",
    "read_cash_drift_rows",
    "read_drift_rows",
    "render_registry",
]

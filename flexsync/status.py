"""`flexsync status`: the last runs, pending activities, unmapped rows, position and cash
drift, configuration."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from flexsync.core.config import Settings
from flexsync.core.warehouse import connect


def _exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? "
        "and table_name = ?", [schema, table]).fetchone()
    return bool(row and row[0])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "0") else text
    return str(value)


def _table(title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[_cell(v) for v in row])
    return table


def show_status(settings: Settings, runs: int = 10, console: Console | None = None) -> None:
    console = console or Console(width=140)
    config = _table("Configuration (secrets are never shown)", ["setting", "value"],
                    list(settings.describe().items()))
    console.print(config)
    if not settings.warehouse_path.exists():
        console.print(f"No warehouse yet at {settings.warehouse_path}: run `flexsync sync` "
                      "or `flexsync extract`.")
        return
    with connect(settings.warehouse_path, read_only=True) as con:
        _print_runs(con, console, runs)
        _print_marts(con, console)


def _print_runs(con: duckdb.DuckDBPyConnection, console: Console, runs: int) -> None:
    if not _exists(con, "sync", "runs"):
        return
    rows = con.execute(
        "select run_id, command, started_at, finished_at, outcome, exit_code, "
        "stage_durations_json, message from sync.runs order by started_at desc limit ?",
        [runs]).fetchall()
    shown = []
    for run_id, command, started, finished, outcome, code, stages, message in rows:
        stage_text = ", ".join(f"{k} {v:.1f}s" for k, v in json.loads(stages or "{}").items())
        shown.append((run_id, command, f"{started:%Y-%m-%d %H:%M:%S}",
                      f"{(finished - started).total_seconds():.1f}s" if finished else "",
                      outcome, code, stage_text, (message or "")[:60]))
    console.print(_table(f"Last {runs} runs", ["run", "command", "started (UTC)", "took",
                                               "outcome", "exit", "stages", "message"], shown))


def _print_marts(con: duckdb.DuckDBPyConnection, console: Console) -> None:
    if not _exists(con, "marts", "activities_to_post"):
        console.print("The marts are not built yet: run `flexsync transform`.")
        return
    pending = con.execute(
        "select activity_date, activity_type, symbol, quantity, amount, currency, external_id "
        "from marts.activities_to_post order by activity_date, external_id").fetchall()
    console.print(_table(f"Pending activities (not yet in Wealthfolio): {len(pending)}",
                         ["date", "type", "symbol", "quantity", "amount", "currency",
                          "external id"], pending[:50]))
    failed = con.execute(
        "select external_id, error, recorded_at from (select *, row_number() over "
        "(partition by external_id order by recorded_at desc) as n from sync.posted_activities)"
        " where n = 1 and status = 'failed' order by recorded_at desc limit 20").fetchall()
    if failed:
        console.print(_table("Last failures (will be retried)", ["external id", "error", "at"],
                             failed))
    unmapped = con.execute(
        "select source, coalesce(flex_type, '') as flex_type, "
        "coalesce(asset_category, '') as asset_category, reason, count(*) "
        "from marts.unmapped_transactions group by all order by 5 desc, 1, 2").fetchall()
    console.print(_table("Unmapped rows (not posted; extend seeds/ to map them)",
                         ["source", "flex type", "asset category", "reason", "rows"], unmapped))
    drift = con.execute(
        "select broker_account_id, symbol, broker_quantity, wf_quantity, drift, as_of "
        "from marts.position_drift order by abs(coalesce(drift, 0)) desc, symbol").fetchall()
    console.print(_table("Position drift (broker − Wealthfolio)",
                         ["IBKR account", "symbol", "broker", "Wealthfolio", "drift", "as of"],
                         drift))
    _print_cash_drift(con, console)


def _print_cash_drift(con: duckdb.DuckDBPyConnection, console: Console) -> None:
    if not _exists(con, "marts", "cash_drift"):
        return  # built by the first transform after an upgrade
    # One row per (Wealthfolio account, currency): each account's currencies together.
    cash = con.execute(
        "select broker_account_id, currency, broker_cash, wf_cash, drift, as_of "
        "from marts.cash_drift order by wf_account_id nulls last, "
        "abs(coalesce(drift, 0)) desc, currency").fetchall()
    console.print(_table("Cash drift (IBKR endingCash − Wealthfolio cash; cash held before "
                         "the first statement shows here until an opening DEPOSIT)",
                         ["IBKR account", "currency", "broker", "Wealthfolio", "drift",
                          "as of"], cash))

"""Build a warehouse that looks like N days of nightly syncs, fast.

Landing 1,825 daily 90-day windows one by one would take an hour, so the history
is built the way it would have ended up, with SQL:

1. one statement covering the whole history (the generator's days are the same in
   any window) is landed into a scratch warehouse and transformed once;
2. its mapped activities become the Wealthfolio payloads (the loader's own
   `build_payload`), bulk-created in a fake Wealthfolio and read back, so the
   snapshot rows carry Wealthfolio's real JSON (the bench preloads its own fake with
   the same payloads and rewrites these rows with that fake's ids: adopt_wealthfolio);
3. the template warehouse gets, for every history day d (window [d-89, d], landed
   at d+1 02:00): a copy of the scratch rows dated in the window under extract
   `hist-<d>` (trades by tradeDate, cash by reportDate; OpenPositions,
   SecuritiesInfo and AccountInformation rows — the history's final ones — in every
   window), its extracts/statements/flex_validation rows, a sync.runs row, two
   Wealthfolio snapshots (before and after that night's posting) as
   flexsync/extract/wealthfolio_snapshot.py writes them — 'changes' snapshots appending only
   what is new: the first night's first snapshot every activity posted before the
   history, each night's second snapshot the activities posted that night, the other
   first snapshots nothing — and the ledger row of each activity on the night after
   its date.

So the raw tables hold what 90-day overlapping windows accumulate (each trade about
90 times) and raw_wealthfolio.activities one row per activity (nothing is edited or
deleted in the history). Known simplifications: every window carries the final
positions, not the positions of its own day; dbt's marts and the incremental
position_drift_history start empty (the first measured night builds them — a few
thousand drift rows a year would not change its cost).
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

from benchmarks import generate_flex, measure
from benchmarks.paths import FLEXSYNC
from benchmarks.services import WF_ACCOUNT, WealthfolioSession, start_fake_wealthfolio

WINDOW_DAYS = 90
SYSTEM_TABLES = {"extracts", "statements", "flex_validation"}


def base_env(data_dir: Path, wf_url: str | None = None, push_url: str | None = None,
             ) -> dict[str, str]:
    import os

    # No MALLOC_ARENA_MAX, as in the pod (Dockerfile): the flexsync command sets its own.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("IBKR_", "WF_", "PUSHGATEWAY_", "BROKER_SYNC_"))
           and k != "MALLOC_ARENA_MAX"}
    env.update({
        "BROKER_SYNC_DATA_DIR": str(data_dir), "IBKR_ACCOUNT_ID_UPSTREAM": generate_flex.ACCOUNT,
        "IBKR_ACCOUNT_ID": WF_ACCOUNT, "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        # Never the repo's target/ and logs/: a developer's dbt may be using them.
        "DBT_TARGET_PATH": str(data_dir / "dbt-target"), "DBT_LOG_PATH": str(data_dir / "dbt-logs"),
    })
    if wf_url:
        env.update({"WF_BASE_URL": wf_url, "WF_PASSWORD": "bench-password-not-a-secret",
                    "WF_SESSION_PATH": str(data_dir / ".wf-session")})
    if push_url:
        env["PUSHGATEWAY_URL"] = push_url
    return env


def build(work: Path, history_days: int, today: date, seed: int = 7) -> Path:
    """Return a directory holding `warehouse.duckdb` (+ `payloads.json`) for the history
    of the `history_days` nights before `today`. Cached: rebuilt only when missing."""
    target = work / f"history-{history_days}d-{today.isoformat()}-s{seed}"
    if (target / "done").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    scratch = target / "scratch"
    scratch.mkdir(parents=True)
    first_end = today - timedelta(days=history_days)
    statement = scratch / "history.xml"
    generate_flex.write_statement(statement, first_end - timedelta(days=WINDOW_DAYS - 1),
                                  today - timedelta(days=1), seed=seed)
    env = base_env(scratch)
    measure.run([FLEXSYNC, "extract", "--flex-file", str(statement)], env).check()
    measure.run([FLEXSYNC, "transform"], env).check()

    payloads, dates = _payloads(scratch / "warehouse.duckdb")
    (target / "payloads.json").write_text(json.dumps(payloads))
    (target / "history.json").write_text(json.dumps({
        "first_end": first_end.isoformat(), "today": today.isoformat(),
        "dates": {key: value.isoformat() for key, value in dates.items()}}))
    wf_rows = _wealthfolio_rows(payloads, target)

    warehouse = target / "warehouse.duckdb"
    _replicate(warehouse, scratch / "warehouse.duckdb", first_end, today, wf_rows, dates)
    # The nightly job leaves its incremental staging tables built: build them once here
    # (a full build over every landed window), so a measured night is a steady one.
    measure.run([FLEXSYNC, "transform"],
                {**base_env(target), "FLEXSYNC_DUCKDB_MEMORY_LIMIT": "1GB"}).check()
    shutil.rmtree(scratch)
    (target / "done").write_text("ok\n")
    return target


def _payloads(scratch_db: Path) -> tuple[list[dict[str, Any]], dict[str, date]]:
    from flexsync.loaders.wealthfolio_payloads import build_payload, read_activities_to_post

    with duckdb.connect(str(scratch_db), read_only=True) as con:
        rows = read_activities_to_post(con)
    payloads = [build_payload(row, WF_ACCOUNT) for row in rows]
    dates = {row.external_id: (row.activity_date or row.activity_at.date())  # type: ignore[union-attr]
             for row in rows}
    return payloads, dates


def _wealthfolio_rows(payloads: list[dict[str, Any]], target: Path) -> list[dict[str, Any]]:
    """Wealthfolio's own JSON for every payload (bulk-created in a throwaway fake)."""
    wf = start_fake_wealthfolio(target / "fake-wealthfolio.log")
    try:
        session = WealthfolioSession(wf.url)
        session.bulk_create(payloads)
        return session.search_all(WF_ACCOUNT)
    finally:
        wf.stop()


def _replicate(warehouse: Path, scratch_db: Path, first_end: date, today: date,
               wf_rows: list[dict[str, Any]], dates: dict[str, date]) -> None:
    from flexsync.core.warehouse import ensure_schema

    with duckdb.connect(str(warehouse)) as con:
        # Bounded, so building 5 years (≈2,000 nights) cannot starve the machine.
        con.execute("set memory_limit = '1GB'")
        ensure_schema(con)
        con.execute(f"attach '{scratch_db}' as src (read_only)")
        _create_nights(con, first_end, today)
        tables = [r[0] for r in con.execute(
            "select table_name from duckdb_tables() where database_name = 'src' "
            "and schema_name = 'raw_ibkr'").fetchall() if r[0] not in SYSTEM_TABLES]
        date_column = {"trades": '"tradeDate"', "cash_transactions": '"reportDate"'}
        for table in tables:
            con.execute(f'drop table if exists raw_ibkr."{table}"')
            con.execute(f'create table raw_ibkr."{table}" as '
                        f'select * from src.raw_ibkr."{table}" limit 0')
            in_window = (f"try_cast(t.{date_column[table]} as date) between "
                         "n.window_start and n.window_end" if table in date_column else "true")
            con.execute(
                f'insert into raw_ibkr."{table}" by name '
                "select t.* replace (n.extract_id as _extract_id, n.sha as _file_sha256, "
                "n.landed_at as _extracted_at) "
                f'from src.raw_ibkr."{table}" t join nights n on {in_window}'
            )
        con.execute(
            "insert into raw_ibkr.extracts by name select n.extract_id, "
            "n.sha as file_sha256, 'history' as source, '123456' as query_id, "
            "'hist' as reference_code, n.landed_at as fetched_at, n.landed_at, "
            "1000000 as byte_size, '1' as statement_count_declared, 1 as statement_count, "
            "1000 as row_count, "
            "'account_information,cash_transactions,open_positions,securities_info,trades' "
            "as sections from nights n")
        con.execute(
            "insert into raw_ibkr.statements by name select n.extract_id, n.sha as file_sha256, "
            "0 as statement_index, ? as account_id, "
            "strftime(n.window_start, '%Y-%m-%d') as from_date, "
            "strftime(n.window_end, '%Y-%m-%d') as to_date, '' as period, "
            "strftime(n.window_end + 1, '%Y-%m-%d') || ';06:12:41' as when_generated, "
            "'{}' as attributes_json, "
            "'AccountInformation,Trades,OpenPositions,CashTransactions,SecuritiesInfo' "
            "as sections from nights n",
            [generate_flex.ACCOUNT])
        con.execute(
            "insert into raw_ibkr.flex_validation by name select n.extract_id, "
            "n.sha as file_sha256, true as ok, 0 as warning_count, '[]' as warnings_json, "
            "n.landed_at as validated_at from nights n")
        con.execute(
            "insert into sync.runs by name select 'run-' || n.extract_id as run_id, "
            "'sync' as command, n.landed_at as started_at, "
            "n.landed_at + interval 9 second as finished_at, 'success' as outcome, "
            "0 as exit_code, '{}' as stage_durations_json, '{}' as counts_json, "
            "'ok' as message from nights n")
        _land_wealthfolio(con, wf_rows, dates, today)
        con.execute("detach src")
        con.execute("checkpoint")


def _create_nights(con: duckdb.DuckDBPyConnection, first_end: date, today: date) -> None:
    con.execute(
        "create temp table nights as select cast(d as date) as window_end, "
        f"cast(d as date) - {WINDOW_DAYS - 1} as window_start, "
        "'hist-' || strftime(d, '%Y%m%d') as extract_id, "
        "'histsha' || strftime(d, '%Y%m%d') as sha, "
        "cast(d as date) + interval 1 day + interval 2 hour as landed_at "
        f"from range(date '{first_end}', date '{today}', interval 1 day) t(d)"
    )


def _land_wealthfolio(con: duckdb.DuckDBPyConnection, wf_rows: list[dict[str, Any]],
                      dates: dict[str, date], today: date) -> None:
    """Wealthfolio as the nights' snapshots saw it, and the ledger (needs temp `nights`)."""
    import pyarrow as pa

    from flexsync.extract.wealthfolio_snapshot import (
        COPIED_FIELDS,
        STORED_COLUMNS,
        _raw_json,
        _text,
        row_hash_sql,
    )

    base = pa.table(
        {column: pa.array([_text(row.get(name)) for row in wf_rows], pa.string())
         for column, name in COPIED_FIELDS.items()}
        | {"raw_json": pa.array([_raw_json(row) for row in wf_rows], pa.string()),
           "posted_on": pa.array([dates.get(str(row.get("idempotencyKey")), today)
                                  for row in wf_rows], pa.date32())}
    )
    con.register("wf_base", base)
    con.execute("create temp table wf as select * from wf_base")
    con.unregister("wf_base")
    # Snapshot k of a night sees what was posted up to `seen_until` (k=0: before the
    # night's posting, k=1: after it) and appends what the previous one had not seen.
    con.execute(
        "create temp table snaps as select *, "
        "lag(seen_until) over (order by snapshot_at) as seen_before from ("
        "select n.*, s.k, "
        "'wf-hist-' || strftime(n.window_end, '%Y%m%d') || '-' || s.k as snapshot_id, "
        "n.landed_at + s.k * interval 5 second as snapshot_at, "
        "n.window_end - (1 - s.k) as seen_until "
        "from nights n cross join (values (0), (1)) s(k))")
    appended = ("wf.posted_on <= s.seen_until "
                "and (s.seen_before is null or wf.posted_on > s.seen_before)")
    con.execute(
        "insert into raw_wealthfolio.snapshots by name select s.snapshot_id, "
        "s.snapshot_at, ? as wf_account_id, 'run-' || s.extract_id as run_id, "
        "count(wf.id) filter (where wf.posted_on <= s.seen_until) as total_row_count, "
        f"count(wf.id) filter (where {appended}) as row_count, "
        "'changes' as kind, "
        "count(wf.id) filter (where wf.posted_on <= s.seen_until) as activity_count "
        "from snaps s left join wf on wf.posted_on <= s.seen_until group by all",
        [WF_ACCOUNT])
    columns = ", ".join(STORED_COLUMNS)
    selected = ", ".join(f"wf.{column}" for column in STORED_COLUMNS)
    con.execute(
        f"insert into raw_wealthfolio.activities (_snapshot_id, _snapshot_at, {columns}, "
        f"_row_hash, _deleted) select s.snapshot_id, s.snapshot_at, {selected}, "
        f"{row_hash_sql('wf')}, false from snaps s join wf on {appended}")
    con.execute(
        "insert into sync.posted_activities by name select "
        "wf.idempotency_key as external_id, wf.id as wf_activity_id, 'posted' as status, "
        "'run-hist-' || strftime(wf.posted_on, '%Y%m%d') as run_id, "
        "wf.posted_on + interval 1 day + interval 2 hour as recorded_at from wf")


def adopt_wealthfolio(template: Path, warehouse: Path, wf_rows: list[dict[str, Any]]) -> None:
    """Rewrite the Wealthfolio history of `warehouse` (a copy of `template`'s) with the
    rows of the Wealthfolio the measured nights talk to: the fake assigns new ids and
    timestamps on every preload, and a history written with another fake's ids would make
    the first measured night see every activity deleted and re-created."""
    meta = json.loads((template / "history.json").read_text())
    dates = {key: date.fromisoformat(value) for key, value in meta["dates"].items()}
    with duckdb.connect(str(warehouse)) as con:
        _create_nights(con, date.fromisoformat(meta["first_end"]),
                       date.fromisoformat(meta["today"]))
        for table in ("raw_wealthfolio.activities", "raw_wealthfolio.snapshots",
                      "sync.posted_activities"):
            con.execute(f"delete from {table}")
        _land_wealthfolio(con, wf_rows, dates, date.fromisoformat(meta["today"]))
        con.execute("checkpoint")


def size_summary(warehouse: Path) -> dict[str, int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select schema_name || '.' || table_name, estimated_size from duckdb_tables() "
            "where schema_name in ('raw_ibkr', 'raw_wealthfolio', 'sync', 'marts')").fetchall()
    return {name: int(size) for name, size in rows}

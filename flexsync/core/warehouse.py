"""The DuckDB warehouse: opening it briefly, the run lock, and the tables Python owns.

dbt owns `staging` and `marts`; Python owns the raw landing schemas and `sync`.
Connections are opened per phase and closed at once, so dbt (and analysts'
read-only copies) can use the file between phases. One run at a time is enforced
by an flock on `<data dir>/.flexsync.lock`, held for a command's whole life.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import duckdb

from flexsync.core.errors import WarehouseError, WarehouseLockedError

LINEAGE_COLUMNS: dict[str, str] = {
    "_extract_id": "varchar",
    "_file_sha256": "varchar",
    "_statement_index": "integer",
    "_statement_account_id": "varchar",
    "_row_tag": "varchar",
    "_row_index": "bigint",
    "_extracted_at": "timestamp",
}

# Attributes the staging models read, exactly (tests/test_raw_columns.py renders the
# staging SQL and binds it against these tables, both ways). The raw tables are created
# with them (all VARCHAR) at first use so dbt builds even when a statement lacks a
# section; landing adds any other attribute as a new VARCHAR column.
CORE_SECTION_COLUMNS: dict[str, list[str]] = {
    "trades": [
        "accountId", "assetCategory", "subCategory", "symbol", "description", "conid",
        "isin", "listingExchange", "exchange", "currency", "tradeID", "transactionID",
        "tradeDate", "tradeTime", "dateTime", "buySell", "quantity", "tradePrice",
        "ibCommission", "ibCommissionCurrency", "levelOfDetail", "transactionType", "notes",
        "origTradeID", "origTransactionID", "multiplier", "proceeds", "netCash",
        "taxes", "reportDate",
    ],
    "cash_transactions": [
        "accountId", "assetCategory", "subCategory", "symbol", "description", "conid",
        "isin", "listingExchange", "currency", "transactionID", "type", "amount",
        "dateTime", "reportDate", "settleDate", "levelOfDetail", "actionID", "tradeID",
        "exDate",
    ],
    "open_positions": [
        "accountId", "assetCategory", "subCategory", "symbol", "description", "conid",
        "isin", "listingExchange", "exchange", "currency", "position", "markPrice",
        "positionValue", "reportDate", "levelOfDetail", "side", "multiplier",
    ],
    "cash_report": [
        "accountId", "currency", "levelOfDetail", "fromDate", "toDate", "startingCash",
        "endingCash", "endingSettledCash",
    ],
    "securities_info": [
        "assetCategory", "subCategory", "symbol", "description", "conid", "isin",
        "listingExchange", "currency", "multiplier", "type",
    ],
    "account_information": ["accountId", "currency"],  # the account preflight reads them
    "corporate_actions": [
        "accountId", "assetCategory", "symbol", "description", "actionDescription", "conid",
        "isin", "listingExchange", "currency", "type", "transactionID", "actionID",
        "reportDate", "dateTime", "quantity", "amount", "proceeds", "value",
        "levelOfDetail",
    ],
    "transfers": [
        "accountId", "assetCategory", "symbol", "description", "conid", "isin",
        "listingExchange", "currency", "type", "direction", "transactionID", "date",
        "dateTime", "reportDate", "quantity", "transferPrice", "positionAmount",
        "cashTransfer", "account", "levelOfDetail",
    ],
    "transaction_taxes": [
        "accountId", "assetCategory", "symbol", "description", "conid", "currency",
        "date", "reportDate", "taxDescription", "taxAmount", "tradeId", "quantity",
        "levelOfDetail",
    ],
}

SYSTEM_DDL = """
create schema if not exists raw_ibkr;
create schema if not exists raw_wealthfolio;
create schema if not exists sync;
create table if not exists raw_ibkr.extracts (
    extract_id varchar primary key,
    file_sha256 varchar not null,
    source varchar,
    query_id varchar,
    reference_code varchar,
    fetched_at timestamp,
    landed_at timestamp not null,
    byte_size bigint,
    archive_path varchar,
    statement_count_declared varchar,
    statement_count integer,
    row_count bigint,
    sections varchar
);
create table if not exists raw_ibkr.statements (
    extract_id varchar not null,
    file_sha256 varchar not null,
    statement_index integer not null,
    account_id varchar,
    from_date varchar,
    to_date varchar,
    period varchar,
    when_generated varchar,
    attributes_json varchar,
    sections varchar
);
create table if not exists raw_ibkr.flex_validation (
    extract_id varchar not null,
    file_sha256 varchar not null,
    ok boolean,
    error varchar,
    warning_count integer,
    warnings_json varchar,
    validated_at timestamp not null
);
create table if not exists raw_wealthfolio.snapshots (
    snapshot_id varchar primary key,
    snapshot_at timestamp not null,
    wf_account_id varchar,
    run_id varchar,
    total_row_count bigint,  -- the totalRowCount Wealthfolio reported
    row_count bigint,  -- rows this snapshot appended to raw_wealthfolio.activities
    kind varchar,  -- 'changes': only new/changed/gone activities appended; 'full' or NULL
                   -- (every snapshot before this column existed): every activity appended
    activity_count bigint,  -- activities Wealthfolio returned, one per id
    date_from date  -- a windowed snapshot (the drift's after a load): it compared the
                    -- activities dated (UTC) from this day on; NULL: every activity
);
create table if not exists raw_wealthfolio.activities (
    _snapshot_id varchar not null,
    _snapshot_at timestamp not null,
    id varchar,
    account_id varchar,
    activity_type varchar,
    subtype varchar,
    status varchar,
    activity_date varchar,
    quantity varchar,
    unit_price varchar,
    amount varchar,
    fee varchar,
    currency varchar,
    asset_id varchar,
    asset_symbol varchar,
    exchange_mic varchar,
    instrument_type varchar,
    idempotency_key varchar,
    source_system varchar,
    source_record_id varchar,
    comment varchar,
    raw_json varchar,
    _row_hash varchar,  -- md5 of the landed columns (flexsync/extract/wealthfolio_snapshot.py)
    _deleted boolean,  -- true: a tombstone, the activity disappeared from Wealthfolio
    fx_rate varchar,  -- raw_json's fxRate and accountCurrency, as json_extract_string reads
    account_currency varchar  -- them (copied out: the state view reads no JSON)
);
create table if not exists sync.posted_activities (
    external_id varchar not null,
    wf_activity_id varchar,
    status varchar not null,
    error varchar,
    run_id varchar,
    recorded_at timestamp not null
);
create table if not exists sync.runs (
    run_id varchar primary key,
    command varchar,
    started_at timestamp not null,
    finished_at timestamp,
    outcome varchar,
    exit_code integer,
    stage_durations_json varchar,
    counts_json varchar,
    message varchar
);
create table if not exists sync.dbt_incremental_models (
    relation varchar primary key,
    fingerprint varchar not null,
    built_at timestamp not null
);
"""


# raw_wealthfolio columns added after the first release (table, column, type): SYSTEM_DDL
# creates them in new warehouses; older ones get them added, in the same order, NULL in
# the rows already there (see the DDL comments for their meaning).
_WEALTHFOLIO_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("snapshots", "kind", "varchar"),
    ("snapshots", "activity_count", "bigint"),
    ("snapshots", "date_from", "date"),
    ("activities", "_row_hash", "varchar"),
    ("activities", "_deleted", "boolean"),
    ("activities", "fx_rate", "varchar"),
    ("activities", "account_currency", "varchar"),
)
# raw_wealthfolio.activities column ← the activity JSON field it is copied from when a
# version lands (flexsync/extract/wealthfolio_snapshot.py): fields the models read that
# older snapshots kept only in raw_json. Reading them from raw_json in the state view held
# DuckDB's JSON buffers over every version (63,000 activities changed once ran out of
# dbt's 64MB). Derived from raw_json, which the row hash covers: not hashed themselves.
JSON_COPIED_COLUMNS: dict[str, str] = {"fx_rate": "fxRate", "account_currency": "accountCurrency"}
# Filled once from raw_json when a warehouse gets the columns (every later version is
# landed with them): the text json_extract_string reads, as the snapshot copies it.
_FILL_JSON_COPIED_COLUMNS = "update raw_wealthfolio.activities set {} where raw_json is not null"


# The one home of "the current state of a Wealthfolio account" (the snapshot extractor
# diffs against it, staging.stg_wealthfolio__activities reads it, analysts may query it).
# Per account: the rows of its latest full snapshot (kind 'full' or NULL — snapshots taken
# before `kind` existed held every activity) and of every 'changes' snapshot after it (no
# full snapshot: all of them); per activity id the newest version (a full snapshot that
# repeated a row across pages holds two: the lowest _row_hash wins; the snapshot
# extractor fills the hash of rows landed before it existed). `is_current` marks
# that version, or an id-less row of the latest snapshot; a current tombstone (_deleted)
# means the activity is gone. Snapshots are ordered by (snapshot_at, snapshot_id).
# The window ranks a narrow key set (the row's rowid, its id, hash and snapshot), and the
# wide rows are joined back to it: carrying every column of every version through the
# window nearly filled dbt's 64MB at 63,000 activities, and stg_wealthfolio__activities
# ran out of it (benchmarks/README.md, session 9). No JSON is read here: fx_rate and
# account_currency are columns of their own (extracting them from raw_json held DuckDB's
# JSON buffers over every version: 63,000 activities changed once ran out of 64MB).
# Recreated by every ensure_schema, after the column additions: a view fixes `*` when made.
WEALTHFOLIO_STATE_VIEW = """
create or replace view raw_wealthfolio.activity_state_versions as
with ranked_snapshots as (
    select
        snapshot_id,
        wf_account_id,
        snapshot_at,
        coalesce(kind, 'full') as kind,
        row_number() over (
            partition by wf_account_id order by snapshot_at desc, snapshot_id desc
        ) as recency
    from raw_wealthfolio.snapshots
),
latest_full_snapshots as (
    select wf_account_id, min(recency) as recency
    from ranked_snapshots
    where kind = 'full'
    group by wf_account_id
),
state_snapshots as (
    select
        ranked.snapshot_id,
        ranked.wf_account_id,
        ranked.recency,
        latest.snapshot_id as state_snapshot_id,
        latest.snapshot_at as state_snapshot_at
    from ranked_snapshots as ranked
    inner join ranked_snapshots as latest
        on ranked.wf_account_id is not distinct from latest.wf_account_id and latest.recency = 1
    left join latest_full_snapshots as latest_full
        on ranked.wf_account_id is not distinct from latest_full.wf_account_id
    where latest_full.recency is null or ranked.recency <= latest_full.recency
),
ranked_versions as (
    select
        activities.rowid as version_rowid,
        state_snapshots.wf_account_id as state_account_id,
        state_snapshots.recency,
        state_snapshots.state_snapshot_id,
        state_snapshots.state_snapshot_at,
        case
            when activities.id is null then state_snapshots.recency = 1
            else row_number() over (
                partition by state_snapshots.state_snapshot_id, activities.id
                order by state_snapshots.recency, activities._row_hash
            ) = 1
        end as is_current
    from raw_wealthfolio.activities as activities
    inner join state_snapshots on activities._snapshot_id = state_snapshots.snapshot_id
)
select
    activities.*,
    ranked_versions.state_account_id,
    ranked_versions.recency,
    ranked_versions.state_snapshot_id,
    ranked_versions.state_snapshot_at,
    ranked_versions.is_current
from raw_wealthfolio.activities as activities
inner join ranked_versions on activities.rowid = ranked_versions.version_rowid
"""


def _core_table_ddl() -> str:
    statements = []
    for table, columns in CORE_SECTION_COLUMNS.items():
        cols = [f'"{name}" {typ}' for name, typ in LINEAGE_COLUMNS.items()]
        cols += [f'"{name}" varchar' for name in columns]
        statements.append(f"create table if not exists raw_ibkr.{table} ({', '.join(cols)});")
        # A warehouse landed before the models read a column gets it (all NULL).
        statements += [f'alter table raw_ibkr.{table} add column if not exists "{name}" varchar;'
                       for name in columns]
    return "\n".join(statements)


# DuckDB reports a damaged file (random bytes, truncated by a full disk) as an IO error.
_CORRUPT_MARKERS = ("not a valid DuckDB database", "Could not read enough bytes", "orrupt",
                    "checksum")
_CORRUPT_HINT = (". If the file is corrupt, move it aside and re-land the archived statements "
                 "(see README, troubleshooting)")


def is_lock_message(text: str) -> bool:
    """DuckDB's words for a file another process holds: opening it here, or in dbt."""
    return "Could not set lock" in text or "Conflicting lock" in text


@contextlib.contextmanager
def connect(path: Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse for one phase and always close it."""
    if read_only and not path.exists():
        raise WarehouseError(f"no warehouse at {path}: run `flexsync extract` first")
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if is_lock_message(str(exc)):
            raise WarehouseLockedError(
                f"the warehouse {path} is held by another process "
                "(another flexsync run, or a tool with the file open); "
                "try again when it finishes — analysts should use analytics.duckdb"
            ) from None
        hint = _CORRUPT_HINT if any(m in str(exc) for m in _CORRUPT_MARKERS) else ""
        raise WarehouseError(f"cannot open the warehouse {path}: {exc}{hint}") from None
    except duckdb.Error as exc:
        raise WarehouseError(
            f"cannot open the warehouse {path}: {exc}. If the file is corrupt, move it "
            "aside and re-land the archived statements (see README, troubleshooting)"
        ) from None
    try:
        yield con
    finally:
        con.close()


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw and sync tables if missing (idempotent)."""
    con.execute(SYSTEM_DDL)
    # Warehouses created before a column existed get it added (all nullable).
    con.execute("alter table raw_ibkr.statements add column if not exists sections varchar")
    present = {(table, column) for table, column in con.execute(
        "select table_name, column_name from information_schema.columns "
        "where table_schema = 'raw_wealthfolio'").fetchall()}
    missing = [added for added in _WEALTHFOLIO_ADDED_COLUMNS if added[:2] not in present]
    if missing:
        _add_wealthfolio_columns(con, missing)
    con.execute(_core_table_ddl())
    con.execute(WEALTHFOLIO_STATE_VIEW)


@contextlib.contextmanager
def duckdb_settings(con: duckdb.DuckDBPyConnection,
                    **settings: str | int | bool) -> Iterator[None]:
    """DuckDB `settings` for the block (memory_limit, threads, ...); the caller's values
    are restored after it, whatever happens in it."""
    names = list(settings)
    [previous] = con.execute(
        "select " + ", ".join(f"current_setting('{name}')" for name in names)).fetchall()
    for name, value in settings.items():
        con.execute(f"set {name} = {_setting_sql(value)}")
    try:
        yield
    finally:
        for name, value in zip(names, previous, strict=True):
            con.execute(f"set {name} = {_setting_sql(value)}")


def _setting_sql(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


def _add_wealthfolio_columns(con: duckdb.DuckDBPyConnection,
                             missing: list[tuple[str, str, str]]) -> None:
    """Add the columns an older warehouse lacks, and fill the copied JSON fields, in one
    transaction: a run killed half-way must leave them to be added (and filled) again,
    never present and empty. The fill holds DuckDB to 64MB (it spills beyond): it runs
    in the run's own process, and 126,000 versions peaked at 178 MiB without a limit."""
    with duckdb_settings(con, memory_limit="64MB"):
        _add_columns_in_one_transaction(con, missing)


def _add_columns_in_one_transaction(con: duckdb.DuckDBPyConnection,
                                    missing: list[tuple[str, str, str]]) -> None:
    con.execute("begin transaction")
    try:
        for table, column, typ in missing:
            con.execute(f"alter table raw_wealthfolio.{table} add column {column} {typ}")
        if any(table == "activities" and column in JSON_COPIED_COLUMNS
               for table, column, _ in missing):
            con.execute(_FILL_JSON_COPIED_COLUMNS.format(", ".join(
                f"{column} = json_extract_string(raw_json, '$.{field}')"
                for column, field in JSON_COPIED_COLUMNS.items())))
        con.execute("commit")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("rollback")
        raise


def prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WarehouseError(f"cannot create the data directory {data_dir}: {exc}") from None
    if not os.access(data_dir, os.W_OK):
        raise WarehouseError(
            f"the data directory {data_dir} is not writable (BROKER_SYNC_DATA_DIR); "
            "mount a writable volume there"
        )


class RunLock:
    """An exclusive, non-blocking lock for one flexsync command on a data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ".flexsync.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        prepare_data_dir(self.path.parent)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise WarehouseLockedError(
                f"another flexsync run holds the warehouse lock ({holder}); "
                "only one run at a time — this one exits without touching anything"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.seek(0)
                self._handle.truncate()
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

"""Snapshot the Wealthfolio activities of one account into raw_wealthfolio (SPEC §3.5).

Every snapshot fetches every page of POST /api/v1/activities/search and adds one
`raw_wealthfolio.snapshots` row (even when nothing changed or the account is empty).
`raw_wealthfolio.activities` is append-only and holds one row per activity version:
a row is appended, under the snapshot's id and time, when an activity first
appears, when its content changes (`_row_hash` differs), or when it disappears
(a tombstone, `_deleted` = true). Activities without an id cannot be diffed and
are appended by every snapshot. `stg_wealthfolio__activities` rebuilds the
current state; `_latest_versions_sql` here applies the same rule to diff against it.

The state of an account: the rows of its latest 'full' snapshot (kind NULL: written
before snapshots held only changes, each held every activity), overridden by the
latest version per activity id from the 'changes' snapshots taken after it, minus
tombstoned ids; rows without an id come from the latest snapshot only. Snapshots
are ordered by (snapshot_at, snapshot_id); a new snapshot's time is kept strictly
after the account's latest one, so a clock stepping back cannot reorder them.

Values are kept as Wealthfolio sent them: decimals stay strings, and the whole
ActivityDetails object is kept in `raw_json`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from flexsync.core.arrow_memory import system_memory_pool
from flexsync.core.warehouse import ensure_schema

log = logging.getLogger("flexsync.wealthfolio")

# raw_wealthfolio.activities column ← ActivityDetails field (flexsync/core/warehouse.py).
COLUMN_FIELDS: dict[str, str] = {
    "id": "id",
    "account_id": "accountId",
    "activity_type": "activityType",
    "subtype": "subtype",
    "status": "status",
    "activity_date": "date",
    "quantity": "quantity",
    "unit_price": "unitPrice",
    "amount": "amount",
    "fee": "fee",
    "currency": "currency",
    "asset_id": "assetId",
    "asset_symbol": "assetSymbol",
    "exchange_mic": "exchangeMic",
    "instrument_type": "instrumentType",
    "idempotency_key": "idempotencyKey",
    "source_system": "sourceSystem",
    "source_record_id": "sourceRecordId",
    "comment": "comment",
}
LANDED_COLUMNS: tuple[str, ...] = (*COLUMN_FIELDS, "raw_json")

SNAPSHOT_KIND = "changes"
# The pod has 256 MiB for everything: without a limit DuckDB may use 80 % of the
# machine. Like the Flex landing's (flexsync/extract/flex_landing.py), it spills beyond this.
SNAPSHOT_MEMORY_LIMIT = "96MB"
_ARROW_POOL = system_memory_pool()  # flexsync/core/arrow_memory.py says why
_BATCH_ROWS = 2048


class ActivitySource(Protocol):
    def search_all(self, account_id: str,
                   on_page: Callable[[list[dict[str, Any]]], None] | None = None) -> Any: ...


@dataclass(frozen=True)
class SnapshotResult:
    snapshot_id: str
    snapshot_at: datetime  # naive UTC, as stored
    wf_account_id: str
    row_count: int  # rows appended to raw_wealthfolio.activities (incl. tombstones)
    total_row_count: int  # Wealthfolio's totalRowCount
    activity_count: int  # activities fetched, one per id (each id-less row counts)
    new_count: int
    changed_count: int
    deleted_count: int  # tombstones
    unkeyed_count: int  # rows without an id (appended every time)


def row_hash_sql(alias: str) -> str:
    """md5 over the landed columns of `alias`, each as `<bytes>:<value>` (`~` for NULL).

    The length prefix keeps it unambiguous (no separator or NULL collisions) and it
    uses only string functions, so it stays the same across DuckDB versions.
    """
    parts = ", ".join(
        f"coalesce(cast(strlen({alias}.{c}) as varchar) || ':' || {alias}.{c}, '~')"
        for c in LANDED_COLUMNS)
    return f"md5(concat_ws('|', {parts}))"


def _latest_versions_sql(account_param: str) -> str:
    """The newest version of every activity id in the account's state, narrow: id, the
    snapshot it came from, its hash (computed for rows landed before hashes existed)
    and whether it is a tombstone. Duplicates of an id inside one
    snapshot (an old full one repeated a row across pages): the lowest md5(raw_json)."""
    return f"""
        with ranked_snapshots as (
            select
                snapshot_id,
                coalesce(kind, 'full') as kind,
                row_number() over (order by snapshot_at desc, snapshot_id desc) as recency
            from raw_wealthfolio.snapshots
            where wf_account_id = {account_param}
        ),
        state_snapshots as (
            -- the latest full snapshot and every (changes) snapshot after it
            select snapshot_id, recency
            from ranked_snapshots
            where recency <= coalesce(
                (select min(recency) from ranked_snapshots where kind = 'full'), recency)
        ),
        versions as (
            select
                activities.id,
                activities._snapshot_id,
                state_snapshots.recency,
                coalesce(activities._row_hash, {row_hash_sql('activities')}) as _row_hash,
                coalesce(activities._deleted, false) as _deleted,
                md5(activities.raw_json) as _raw_md5
            from raw_wealthfolio.activities as activities
            inner join state_snapshots on activities._snapshot_id = state_snapshots.snapshot_id
            where activities.id is not null
        )
        select id, _snapshot_id, _row_hash, _deleted
        from versions
        qualify row_number() over (partition by id order by recency, _raw_md5) = 1
    """


def snapshot_activities(
    con: duckdb.DuckDBPyConnection,
    client: ActivitySource,
    wf_account_id: str,
    run_id: str | None,
    *,
    now: datetime | None = None,
) -> SnapshotResult:
    """Fetch all activities of `wf_account_id`; append what changed as one new snapshot."""
    # Each page becomes Arrow as it arrives: the parsed JSON of a page is all that is
    # held at once (~3x the size of its Arrow rows), not the whole account's.
    builder = _ArrowBuilder()
    page = client.search_all(wf_account_id, on_page=builder.add)
    total_row_count = int(page.total_row_count)
    builder.add(page.rows)  # a source that ignored on_page
    del page
    fetched = builder.table()
    activity_count = fetched.num_rows
    ensure_schema(con)
    with _bounded(con):
        return _append_snapshot(con, fetched, wf_account_id, run_id, now, total_row_count,
                                activity_count)


@contextlib.contextmanager
def _bounded(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """DuckDB limited for the snapshot, the caller's settings restored after. One thread:
    the work is small, and every extra thread's malloc arena adds to the peak."""
    [(limit, threads)] = con.execute(
        "select current_setting('memory_limit'), current_setting('threads')").fetchall()
    con.execute(f"set memory_limit = '{SNAPSHOT_MEMORY_LIMIT}'")
    con.execute("set threads = 1")
    try:
        yield
    finally:
        con.execute(f"set memory_limit = '{limit}'")
        con.execute(f"set threads = {int(threads)}")


def _append_snapshot(con: duckdb.DuckDBPyConnection, fetched: pa.Table, wf_account_id: str,
                     run_id: str | None, now: datetime | None, total_row_count: int,
                     activity_count: int) -> SnapshotResult:
    suffix = uuid.uuid4().hex
    view, changes = f"_wf_fetched_{suffix}", f"_wf_changes_{suffix}"
    con.execute("begin transaction")
    try:
        snapshot_at = _next_snapshot_at(con, wf_account_id, now)
        snapshot_id = f"wf-{snapshot_at:%Y%m%dT%H%M%S}-{suffix[:12]}"
        con.register(view, fetched)
        try:
            con.execute(_changes_sql(view, changes), {"account": wf_account_id})
            [(appended,)] = con.execute(
                _insert_sql(view, changes),
                {"snapshot_id": snapshot_id, "snapshot_at": snapshot_at}).fetchall()
        finally:
            con.unregister(view)
        counts = dict(con.execute(
            f"select change, count(*) from {changes} group by change").fetchall())
        con.execute(f"drop table {changes}")
        con.execute(
            "insert into raw_wealthfolio.snapshots (snapshot_id, snapshot_at, wf_account_id, "
            "run_id, total_row_count, row_count, kind, activity_count) "
            "values (?, ?, ?, ?, ?, ?, ?, ?)",
            [snapshot_id, snapshot_at, wf_account_id, run_id, total_row_count, appended,
             SNAPSHOT_KIND, activity_count],
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    result = SnapshotResult(
        snapshot_id, snapshot_at, wf_account_id, appended, total_row_count, activity_count,
        counts.get("new", 0), counts.get("changed", 0), counts.get("deleted", 0),
        counts.get("unkeyed", 0))
    log.info("Wealthfolio snapshot %s of account %s: %d activities; appended %d rows "
             "(%d new, %d changed, %d deleted, %d without id)", snapshot_id, wf_account_id,
             result.activity_count, appended, result.new_count, result.changed_count,
             result.deleted_count, result.unkeyed_count)
    return result


def _changes_sql(view: str, changes: str) -> str:
    """A narrow temp table of what to append: fetched rows that are new, changed or
    without id (by `_ord`), and tombstones (by the id and snapshot of the last version)."""
    return f"""
        create temp table {changes} as
        with state as (
            select * from ({_latest_versions_sql('$account')}) where not _deleted
        ),
        fetched as (
            select fetched._ord, fetched.id, {row_hash_sql('fetched')} as _row_hash
            from {view} as fetched
        )
        select
            case
                when fetched.id is null then 'unkeyed'
                when state.id is null then 'new'
                else 'changed'
            end as change,
            fetched._ord,
            fetched.id,
            fetched._row_hash,
            cast(null as varchar) as version_snapshot_id
        from fetched
        left join state on fetched.id = state.id
        where fetched.id is null or state.id is null or state._row_hash <> fetched._row_hash
        union all
        select 'deleted', null, state.id, state._row_hash, state._snapshot_id
        from state
        anti join fetched on state.id = fetched.id
    """


def _insert_sql(view: str, changes: str) -> str:
    """Append the changed rows as fetched, and each tombstone as a copy of the last
    version with `_deleted` set (so analysts see what disappeared)."""
    columns = ", ".join(LANDED_COLUMNS)
    fetched_cols = ", ".join(f"fetched.{c}" for c in LANDED_COLUMNS)
    last_cols = ", ".join(f"activities.{c}" for c in LANDED_COLUMNS)
    return f"""
        insert into raw_wealthfolio.activities
            (_snapshot_id, _snapshot_at, {columns}, _row_hash, _deleted)
        select $snapshot_id, $snapshot_at, {fetched_cols}, changes._row_hash, false
        from {changes} as changes
        inner join {view} as fetched on changes._ord = fetched._ord
        union all
        select $snapshot_id, $snapshot_at, {last_cols}, changes._row_hash, true
        from {changes} as changes
        inner join raw_wealthfolio.activities as activities
            on activities._snapshot_id = changes.version_snapshot_id
            and activities.id = changes.id
        where changes.change = 'deleted'
        qualify row_number() over (
            partition by changes.id order by md5(activities.raw_json)) = 1
    """


def _next_snapshot_at(con: duckdb.DuckDBPyConnection, wf_account_id: str,
                      now: datetime | None) -> datetime:
    """Now (naive UTC), but strictly after the account's latest snapshot: the state is
    rebuilt in snapshot order, so a clock stepping back must not reorder snapshots."""
    at = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    [(latest,)] = con.execute("select max(snapshot_at) from raw_wealthfolio.snapshots "
                              "where wf_account_id = ?", [wf_account_id]).fetchall()
    if latest is not None and at <= latest:
        at = latest + timedelta(microseconds=1)
    return at


class _ArrowBuilder:
    """The landed columns as text, and a row number, one id once (the first seen: a page
    boundary that moved while paging repeats a row; rows without an id are all kept).
    Rows are converted in small batches, so the Python lists in between stay small next
    to the table (raw_json is ~1 KB a row)."""

    schema = pa.schema([(c, pa.string()) for c in LANDED_COLUMNS] + [("_ord", pa.int64())])

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.seen: set[str] = set()
        self.rows = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        rows = self._distinct_by_id(rows)
        for start in range(0, len(rows), _BATCH_ROWS):
            chunk = rows[start:start + _BATCH_ROWS]
            arrays = [pa.array([_text(row.get(name)) for row in chunk], pa.string(),
                               memory_pool=_ARROW_POOL) for name in COLUMN_FIELDS.values()]
            arrays.append(pa.array([_raw_json(row) for row in chunk], pa.string(),
                                   memory_pool=_ARROW_POOL))
            arrays.append(pa.array(range(self.rows, self.rows + len(chunk)), pa.int64(),
                                   memory_pool=_ARROW_POOL))
            self.batches.append(pa.record_batch(arrays, schema=self.schema))
            self.rows += len(chunk)

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=self.schema)

    def _distinct_by_id(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for row in rows:
            key = _text(row.get("id"))
            if key is not None:
                if key in self.seen:
                    continue
                self.seen.add(key)
            out.append(row)
        return out


def _text(value: Any) -> str | None:
    """A raw cell: strings as sent; other scalars in their JSON spelling."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def _raw_json(row: dict[str, Any]) -> str:
    # Wealthfolio sends activity decimals as strings; a number that did arrive was
    # parsed as Decimal and is kept exact here (as its string form).
    return json.dumps(row, default=str, ensure_ascii=False)

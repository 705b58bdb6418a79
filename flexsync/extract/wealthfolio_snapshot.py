"""Snapshot the Wealthfolio activities of one account into raw_wealthfolio
(docs/analysts.md#raw-and-bookkeeping-tables).

Every snapshot fetches every page of POST /api/v1/activities/search and adds one
`raw_wealthfolio.snapshots` row (even when nothing changed or the account is empty).
`raw_wealthfolio.activities` is append-only and holds one row per activity version:
a row is appended, under the snapshot's id and time, when an activity first
appears, when its content changes (`_row_hash` differs), or when it disappears
(a tombstone, `_deleted` = true). Activities without an id cannot be diffed and
are appended by every snapshot. `stg_wealthfolio__activities` rebuilds the
current state; both read the rule from its one home, the view
raw_wealthfolio.activity_state_versions (flexsync/core/warehouse.py).

Snapshots are ordered by (snapshot_at, snapshot_id); a new snapshot's time is kept
strictly after the account's latest one, so a clock stepping back cannot reorder them.

A windowed snapshot (`from_day`, the drift's look after a load) compares only the
activities dated from that day on: the load changed nothing older, and the snapshot
taken just before it holds for those. Fetching every activity twice a night was what
grew most with the account's history (benchmarks/README.md, session 10).

Values are kept as Wealthfolio sent them: decimals stay strings, and the whole
ActivityDetails object is kept in `raw_json`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TextIO

import duckdb

from flexsync.core.errors import WarehouseError
from flexsync.core.warehouse import JSON_COPIED_COLUMNS, duckdb_settings, ensure_schema

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
# Every column a version is stored with: the hashed ones and those copied out of the JSON
# (not hashed: JSON_COPIED_COLUMNS in flexsync/core/warehouse.py says why).
STORED_COLUMNS: tuple[str, ...] = (*LANDED_COLUMNS, *JSON_COPIED_COLUMNS)
# Each stored column but raw_json ← its activity field.
COPIED_FIELDS: dict[str, str] = COLUMN_FIELDS | JSON_COPIED_COLUMNS

SNAPSHOT_KIND = "changes"
# The pod has 256 MiB for everything, and a sync's dbt worker waits through the snapshot:
# without a limit DuckDB may use 80 % of the machine. Like the Flex landing's
# (flexsync/extract/flex_landing.py), it spills beyond this. 5 years of history (15,600
# activities) snapshots in 48MB; 40MB fails ("failed to allocate data of size 32.0 MiB":
# the JSON reader's buffer). 64MB leaves room for a larger account.
SNAPSHOT_MEMORY_LIMIT = "64MB"
# DuckDB's JSON reader fills a buffer with up to 32 MiB of a file: the spool is cut into
# files of this many rows (≈3 MiB), so reading it back holds one file, not the account.
SPOOL_FILE_ROWS = 2000
# A windowed snapshot's margins. Wealthfolio's `dateFrom` is a UTC day (v3.2) or a day in
# the user's timezone (newer), and an activity_date's text carries the offset it was sent
# with: each may be a day off the UTC day. Asking from SEARCH_MARGIN days before
# `from_day` returns every activity whose text date is at most GONE_MARGIN days before
# it; those are the ones a windowed snapshot may find gone, which covers every activity
# dated (UTC) from `from_day` on.
SEARCH_MARGIN = timedelta(days=3)
GONE_MARGIN = timedelta(days=1)


class ActivitySource(Protocol):
    def search_all(self, account_id: str,
                   on_page: Callable[[list[dict[str, Any]]], None] | None = None,
                   *, date_from: date | None = None) -> Any: ...


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
    date_from: date | None = None  # a windowed snapshot's first day (UTC), else None


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
    """The newest version of every activity id in the account's state (the rule's one
    home: warehouse.WEALTHFOLIO_STATE_VIEW), narrow: id, the snapshot it came from, its
    hash, its date's text and whether it is a tombstone. Narrow on purpose: a query that
    touches raw_json here holds every version's JSON (≈30 MiB more at 15,000 activities)."""
    return f"""
        select
            versions.id,
            versions._snapshot_id,
            versions._row_hash,
            versions.activity_date,
            coalesce(versions._deleted, false) as _deleted
        from raw_wealthfolio.activity_state_versions as versions
        where versions.state_account_id = {account_param}
            and versions.id is not null
            and versions.is_current
    """


def snapshot_activities(
    con: duckdb.DuckDBPyConnection,
    client: ActivitySource,
    wf_account_id: str,
    run_id: str | None,
    *,
    now: datetime | None = None,
    from_day: date | None = None,
) -> SnapshotResult:
    """Fetch the activities of `wf_account_id` (all of them, or with `from_day` those dated
    from that UTC day on); append what changed as one new snapshot."""
    # Each page goes to the spool as it arrives (one JSON line per row, DuckDB reads it
    # back twice, streaming): the parsed JSON of one page and one spool file are all the
    # process holds, whatever the account's size, and no pyarrow is needed.
    with _Spool() as spool:
        page = client.search_all(
            wf_account_id, on_page=spool.add,
            date_from=None if from_day is None else from_day - SEARCH_MARGIN)
        total_row_count = int(page.total_row_count)
        spool.add(page.rows)  # a source that ignored on_page
        del page
        spool.close_file()
        ensure_schema(con)
        with _bounded(con):
            return _append_snapshot(con, spool.paths, wf_account_id, run_id, now,
                                    total_row_count, spool.rows, from_day)


def _bounded(con: duckdb.DuckDBPyConnection) -> contextlib.AbstractContextManager[None]:
    """DuckDB limited for the snapshot, the caller's settings restored after. One thread:
    the work is small, and every extra thread's malloc arena adds to the peak."""
    return duckdb_settings(con, memory_limit=SNAPSHOT_MEMORY_LIMIT, threads=1,
                           preserve_insertion_order=False)


def _append_snapshot(con: duckdb.DuckDBPyConnection, spool: list[str], wf_account_id: str,
                     run_id: str | None, now: datetime | None, total_row_count: int,
                     activity_count: int, from_day: date | None) -> SnapshotResult:
    """Diff the spooled rows against the account's state and append what changed.

    The rows are appended in batches of SPOOL_FILE_ROWS, each committed, and the
    snapshot's header row last: one transaction holding every new row of a big first
    snapshot (60,000 activities after a backfill) ran out of the snapshot's DuckDB
    memory. Until its header exists a snapshot's rows belong to nothing (the state view
    joins them to their snapshot), and rows whose header never came (a killed run) are
    removed by the next snapshot."""
    suffix = uuid.uuid4().hex
    keys, changes = f"_wf_fetched_{suffix}", f"_wf_changes_{suffix}"
    con.execute(_REMOVE_HEADERLESS_ROWS)
    con.execute(_FILL_MISSING_ROW_HASHES)
    snapshot_at = _next_snapshot_at(con, wf_account_id, now)
    snapshot_id = f"wf-{snapshot_at:%Y%m%dT%H%M%S}-{suffix[:12]}"
    try:
        con.execute(_fetched_keys_sql(keys, spool))
        gone_from = None if from_day is None else (from_day - GONE_MARGIN).isoformat()
        con.execute(_changes_sql(keys, changes),
                    {"account": wf_account_id, "gone_from": gone_from})
        con.execute(f"drop table {keys}")
        counts = dict(con.execute(
            f"select change, count(*) from {changes} group by change").fetchall())
        if from_day is not None and counts.get("unkeyed"):
            # The state keeps id-less rows of the latest snapshot only: a windowed one
            # would drop those outside its window (WealthfolioClient refuses them).
            raise WarehouseError(f"Wealthfolio snapshot from {from_day}: activities "
                                 "without id cannot be snapshotted by window")
        appended = _append_batches(con, spool, changes,
                                   {"snapshot_id": snapshot_id, "snapshot_at": snapshot_at})
        expected = sum(counts.values())
        if appended != expected:  # the spool's files and batches must line up
            raise WarehouseError(f"Wealthfolio snapshot {snapshot_id}: appended {appended} "
                                 f"rows of {expected}; the snapshot was not recorded")
    finally:
        con.execute(f"drop table if exists {keys}")
        con.execute(f"drop table if exists {changes}")
    con.execute(
        "insert into raw_wealthfolio.snapshots (snapshot_id, snapshot_at, wf_account_id, "
        "run_id, total_row_count, row_count, kind, activity_count, date_from) "
        "values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [snapshot_id, snapshot_at, wf_account_id, run_id, total_row_count, appended,
         SNAPSHOT_KIND, activity_count, from_day],
    )
    result = SnapshotResult(
        snapshot_id, snapshot_at, wf_account_id, appended, total_row_count, activity_count,
        counts.get("new", 0), counts.get("changed", 0), counts.get("deleted", 0),
        counts.get("unkeyed", 0), from_day)
    log.info("Wealthfolio snapshot %s of account %s%s: %d activities; appended %d rows "
             "(%d new, %d changed, %d deleted, %d without id)", snapshot_id, wf_account_id,
             "" if from_day is None else f" (dated from {from_day} on)",
             result.activity_count, appended, result.new_count, result.changed_count,
             result.deleted_count, result.unkeyed_count)
    return result


def _append_batches(con: duckdb.DuckDBPyConnection, spool: list[str], changes: str,
                    params: dict[str, Any]) -> int:
    """Append the changes batch by batch (spool file k holds the rows of batch k), one
    transaction each; the number of rows appended."""
    appended = 0
    batches = [batch for (batch,) in con.execute(
        f"select distinct _batch from {changes} order by _batch").fetchall()]
    for batch in batches:
        spool_file = spool[batch] if batch < len(spool) else None
        con.execute("begin transaction")
        try:
            [(rows,)] = con.execute(_insert_sql(spool_file, changes, batch), params).fetchall()
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        appended += int(rows)
    return appended


# Rows of a snapshot whose header row was never written (a run killed while appending).
_REMOVE_HEADERLESS_ROWS = """
    delete from raw_wealthfolio.activities as activities
    where not exists (
        select 1 from raw_wealthfolio.snapshots as snapshots
        where snapshots.snapshot_id = activities._snapshot_id
    )
"""


# Rows landed before `_row_hash` existed get it (once; a no-op after), so the state is
# diffed and ordered on the hash column alone.
_FILL_MISSING_ROW_HASHES = f"""
    update raw_wealthfolio.activities as activities
    set _row_hash = {row_hash_sql('activities')}
    where activities._row_hash is null
"""


def _spool_sql(spool: list[str]) -> str:
    """The spooled rows, read back with every column named and typed (no detection: a
    value is the text that was written). Scanned twice (keys, then the changed rows),
    never held: the account's size sets no memory."""
    columns = ", ".join(f"'{c}': 'VARCHAR'" for c in STORED_COLUMNS)
    paths = ", ".join("'" + path.replace("'", "''") + "'" for path in spool)
    return (f"read_json([{paths}], format = 'newline_delimited', "
            f"columns = {{{columns}, '_ord': 'BIGINT'}})")


def _fetched_keys_sql(keys: str, spool: list[str]) -> str:
    """A narrow temp table of the fetched rows: row number, id and content hash."""
    return f"""
        create temp table {keys} as
        select fetched._ord, fetched.id, {row_hash_sql('fetched')} as _row_hash
        from {_spool_sql(spool)} as fetched
    """


def _changes_sql(keys: str, changes: str) -> str:
    """A narrow temp table of what to append: fetched rows that are new, changed or
    without id (by `_ord`), and tombstones (by the id and snapshot of the last version),
    each in a batch of SPOOL_FILE_ROWS (a fetched row's is its spool file). Tombstones
    only for state rows dated `$gone_from` or later when it is set (a windowed
    snapshot: older ones were not asked for)."""
    return f"""
        create temp table {changes} as
        with state as (
            select * from ({_latest_versions_sql('$account')}) where not _deleted
        ),
        fetched as (
            select fetched._ord, fetched.id, fetched._row_hash from {keys} as fetched
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
            cast(null as varchar) as version_snapshot_id,
            fetched._ord // {SPOOL_FILE_ROWS} as _batch
        from fetched
        left join state on fetched.id = state.id
        where fetched.id is null or state.id is null or state._row_hash <> fetched._row_hash
        union all
        select
            'deleted', null, state.id, state._row_hash, state._snapshot_id,
            (row_number() over (order by state.id) - 1) // {SPOOL_FILE_ROWS}
        from state
        anti join fetched on state.id = fetched.id
        where $gone_from is null or left(state.activity_date, 10) >= $gone_from
    """


def _insert_sql(spool_file: str | None, changes: str, batch: int) -> str:
    """Append one batch: its changed rows as fetched (read again from their spool file,
    only those kept), and its tombstones as a copy of the last version with `_deleted`
    set (so analysts see what disappeared)."""
    columns = ", ".join(STORED_COLUMNS)
    fetched_cols = ", ".join(f"fetched.{c}" for c in STORED_COLUMNS)
    last_cols = ", ".join(f"activities.{c}" for c in STORED_COLUMNS)
    fetched = "" if spool_file is None else f"""
        select $snapshot_id, $snapshot_at, {fetched_cols}, {row_hash_sql('fetched')}, false
        from {_spool_sql([spool_file])} as fetched
        where fetched._ord in (select changes._ord from {changes} as changes
                               where changes._batch = {int(batch)}
                                   and changes._ord is not null)
        union all"""
    return f"""
        insert into raw_wealthfolio.activities
            (_snapshot_id, _snapshot_at, {columns}, _row_hash, _deleted)
        {fetched}
        select $snapshot_id, $snapshot_at, {last_cols}, changes._row_hash, true
        from {changes} as changes
        inner join raw_wealthfolio.activities as activities
            on activities._snapshot_id = changes.version_snapshot_id
            and activities.id = changes.id
        where changes.change = 'deleted' and changes._batch = {int(batch)}
        qualify row_number() over (
            partition by changes.id order by activities._row_hash) = 1
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


class _Spool:
    """The landed columns as text and a row number, one JSON line per row, in temporary
    files of SPOOL_FILE_ROWS rows each; one id once (the first seen: a page boundary that
    moved while paging repeats a row; rows without an id are all kept)."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="flexsync-wf-")
        self.paths: list[str] = []
        self._file: TextIO | None = None
        self.seen: set[str] = set()
        self.rows = 0

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_current()
        self._folder.cleanup()

    def close_file(self) -> None:
        if not self.paths:  # an empty account: DuckDB reads one empty file
            self._next_file()
        self._close_current()

    def _close_current(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def add(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            key = _text(row.get("id"))
            if key is not None:
                if key in self.seen:
                    continue
                self.seen.add(key)
            record: dict[str, Any] = {
                column: _text(row.get(name)) for column, name in COPIED_FIELDS.items()}
            record["raw_json"] = _raw_json(row)
            record["_ord"] = self.rows
            self._next_file().write(json.dumps(record, ensure_ascii=False) + "\n")
            self.rows += 1

    def _next_file(self) -> TextIO:
        # Row `_ord` goes to file `_ord // SPOOL_FILE_ROWS`: the batch _changes_sql gives it.
        if self._file is None or self.rows // SPOOL_FILE_ROWS == len(self.paths):
            self._close_current()
            path = f"{self._folder.name}/{len(self.paths):05d}.jsonl"
            self._file = open(path, "w", encoding="utf-8")  # closed by _close_current
            self.paths.append(path)
        return self._file


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

"""Snapshot every Wealthfolio activity of one account into raw_wealthfolio (SPEC §3.5).

Append-only: each call adds one `raw_wealthfolio.snapshots` row (even when the
account has no activities) and one `raw_wealthfolio.activities` row per activity,
all under a new snapshot id. Values are kept as Wealthfolio sent them: decimals
stay strings, and the whole ActivityDetails object is kept in `raw_json`.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from flexsync.warehouse import ensure_schema

log = logging.getLogger("flexsync.wealthfolio")

# raw_wealthfolio.activities column ← ActivityDetails field (flexsync/warehouse.py).
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


class ActivitySource(Protocol):
    def search_all(self, account_id: str) -> Any: ...


@dataclass(frozen=True)
class SnapshotResult:
    snapshot_id: str
    snapshot_at: datetime  # naive UTC, as stored
    wf_account_id: str
    row_count: int
    total_row_count: int


def snapshot_activities(
    con: duckdb.DuckDBPyConnection,
    client: ActivitySource,
    wf_account_id: str,
    run_id: str | None,
    *,
    now: datetime | None = None,
) -> SnapshotResult:
    """Fetch all activities of `wf_account_id` and append them as one new snapshot."""
    page = client.search_all(wf_account_id)
    rows: list[dict[str, Any]] = list(page.rows)
    snapshot_at = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    snapshot_id = f"wf-{snapshot_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
    ensure_schema(con)
    table = pa.table(
        {column: pa.array([_text(row.get(name)) for row in rows], pa.string())
         for column, name in COLUMN_FIELDS.items()}
        | {"raw_json": pa.array([_raw_json(row) for row in rows], pa.string())}
    )
    columns = ", ".join(COLUMN_FIELDS) + ", raw_json"
    view = f"_wf_snapshot_{uuid.uuid4().hex}"
    con.execute("begin transaction")
    try:
        if rows:
            con.register(view, table)
            try:
                con.execute(
                    f"insert into raw_wealthfolio.activities (_snapshot_id, _snapshot_at, "
                    f"{columns}) select ?, ?, {columns} from {view}",
                    [snapshot_id, snapshot_at],
                )
            finally:
                con.unregister(view)
        con.execute(
            "insert into raw_wealthfolio.snapshots (snapshot_id, snapshot_at, wf_account_id, "
            "run_id, total_row_count, row_count) values (?, ?, ?, ?, ?, ?)",
            [snapshot_id, snapshot_at, wf_account_id, run_id, page.total_row_count, len(rows)],
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    log.info("Wealthfolio snapshot %s: %d activities of account %s", snapshot_id, len(rows),
             wf_account_id)
    return SnapshotResult(snapshot_id, snapshot_at, wf_account_id, len(rows),
                          page.total_row_count)


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

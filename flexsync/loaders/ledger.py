"""The posting ledger, `sync.posted_activities`: one appended row per Wealthfolio answer.

Rows are written one at a time, straight after each answer, so a crash mid-run
loses at most the activity in flight (and that one is caught by the idempotency
key next time). Status is 'posted', 'already_present' or 'failed'; an id with a
'posted' or 'already_present' row is settled and is never posted again (SPEC §5).
A correction (marts.activity_corrections: IBKR took back what was posted) appends
'deleted', with the reason in `error`; the id stays settled, so it is never re-posted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import duckdb

from flexsync.core.logs import scrub

LedgerStatus = Literal["posted", "already_present", "failed", "deleted"]
SETTLED_STATUSES: tuple[str, ...] = ("posted", "already_present")


def record_outcome(
    con: duckdb.DuckDBPyConnection,
    external_id: str,
    status: LedgerStatus,
    *,
    wf_activity_id: str | None = None,
    error: str | None = None,
    run_id: str | None = None,
    recorded_at: datetime | None = None,
) -> None:
    """Append one outcome (autocommitted at once)."""
    if status not in ("posted", "already_present", "failed", "deleted"):
        raise ValueError(f"unknown ledger status {status!r}")
    when = (recorded_at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    con.execute(
        "insert into sync.posted_activities (external_id, wf_activity_id, status, error, "
        "run_id, recorded_at) values (?, ?, ?, ?, ?, ?)",
        # Wealthfolio's error text may echo the request: scrubbed before it is stored.
        [external_id, wf_activity_id, status, None if error is None else scrub(error), run_id,
         when],
    )


def settled_external_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Ids already posted or found present: never to be posted again."""
    try:
        rows = con.execute(
            "select distinct external_id from sync.posted_activities where status in (?, ?)",
            list(SETTLED_STATUSES),
        ).fetchall()
    except duckdb.CatalogException:
        return set()  # no ledger yet (fresh, or a read-only dry run)
    return {row[0] for row in rows}


def run_counts(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
    """{status: count} of the outcomes one run recorded."""
    rows = con.execute(
        "select status, count(*) from sync.posted_activities where run_id = ? group by status",
        [run_id],
    ).fetchall()
    return {status: int(count) for status, count in rows}

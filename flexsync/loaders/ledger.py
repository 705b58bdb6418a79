"""The posting ledger, `sync.posted_activities`: one appended row per Wealthfolio answer.

Rows are written one at a time, straight after each answer, so a crash mid-run
loses at most the activity in flight (and that one is caught by the idempotency
key next time). Status is 'posted', 'already_present' or 'failed'; an id with a
'posted' or 'already_present' row is settled and is never posted again (README.md#how-it-works).
A correction (marts.activity_corrections: IBKR took back what was posted) appends
'deleted', with the reason in `error`; the id stays settled, so it is never re-posted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, get_args

import duckdb

from flexsync.core.logs import scrub

LedgerStatus = Literal["posted", "already_present", "failed", "deleted"]
SETTLED_STATUSES: tuple[LedgerStatus, ...] = ("posted", "already_present")
# The settled ids as SQL, its parameters SETTLED_STATUSES. dbt's
# stg_sync__posted_activities.is_in_wealthfolio says the same in SQL; a test holds the two
# together (tests/test_wealthfolio_loader.py).
SETTLED_IDS_SQL = ("select external_id from sync.posted_activities where status in ("
                   + ", ".join("?" for _ in SETTLED_STATUSES) + ")")


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
    if status not in get_args(LedgerStatus):
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
        rows = con.execute(SETTLED_IDS_SQL, list(SETTLED_STATUSES)).fetchall()
    except duckdb.CatalogException:
        return set()  # no ledger yet (fresh, or a read-only dry run)
    return {row[0] for row in rows}


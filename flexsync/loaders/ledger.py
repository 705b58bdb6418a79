"""The posting ledger, `sync.posted_activities`: one appended row per Wealthfolio answer.

The posting loop writes its outcomes every LEDGER_COMMIT_ROWS activities, in one insert
(and when the loop ends, however it ends): one statement and commit per row cost
≈1.5 ms, more than the post itself. A process killed mid-run loses at most the ledger
rows of the activities since the last write; Wealthfolio holds those under their
idempotency keys, so the next run finds them (check-duplicates) and records them
'already_present' — never posted twice (tests/reliability/test_crash_consistency.py).
Status is 'posted', 'already_present' or 'failed'; an id with a
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


LEDGER_COMMIT_ROWS = 50


class LedgerBuffer:
    """The loader's ledger writes: outcomes kept in memory and written in one insert every
    `rows` activities and when the block ends, however it ends (they are facts: those
    answers came back). One statement per outcome cost ≈1 ms, more than the post itself;
    `rows=1` writes each activity's outcome at once (the corrections)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, rows: int = LEDGER_COMMIT_ROWS) -> None:
        self._con = con
        self._rows = rows
        self._outcomes: list[list[object]] = []
        self._activities = 0

    def __enter__(self) -> LedgerBuffer:
        return self

    def record(self, external_id: str, status: LedgerStatus, *,
               wf_activity_id: str | None = None, error: str | None = None,
               run_id: str | None = None) -> None:
        self._outcomes.append(_outcome_row(external_id, status, wf_activity_id, error, run_id))

    def activity_done(self) -> None:
        self._activities += 1
        if self._activities % self._rows == 0:
            self.write()

    def write(self) -> None:
        """Insert the outcomes held so far, in one statement."""
        if not self._outcomes:
            return
        rows, self._outcomes = self._outcomes, []
        placeholders = ", ".join("(?, ?, ?, ?, ?, ?)" for _ in rows)
        self._con.execute(f"{_INSERT} values {placeholders}",
                          [value for row in rows for value in row])

    def __exit__(self, *exc: object) -> None:
        self.write()


_INSERT = ("insert into sync.posted_activities (external_id, wf_activity_id, status, error, "
           "run_id, recorded_at)")


def _outcome_row(external_id: str, status: LedgerStatus, wf_activity_id: str | None,
                 error: str | None, run_id: str | None) -> list[object]:
    if status not in get_args(LedgerStatus):
        raise ValueError(f"unknown ledger status {status!r}")
    when = datetime.now(UTC).replace(tzinfo=None)
    # Wealthfolio's error text may echo the request: scrubbed before it is stored.
    return [external_id, wf_activity_id, status, None if error is None else scrub(error),
            run_id, when]


def settled_external_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Ids already posted or found present: never to be posted again."""
    try:
        rows = con.execute(SETTLED_IDS_SQL, list(SETTLED_STATUSES)).fetchall()
    except duckdb.CatalogException:
        return set()  # no ledger yet (fresh, or a read-only dry run)
    return {row[0] for row in rows}


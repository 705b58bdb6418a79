"""Post `marts.activities_to_post` to Wealthfolio, one activity at a time (README.md#how-it-works).

For each row: `POST /api/v1/activities` with `idempotencyKey` = the external id,
`sourceSystem` IBKR and `sourceRecordId` = the IBKR id. The batch is pre-checked
with check-duplicates, and a "Duplicate activity detected" answer also means the
activity is already there. Every outcome goes to the ledger straight away. A
failed row is recorded and left pending (the mart keeps it until it is posted);
the others continue, and the caller turns failures into exit code 5
(`raise_for_failures`). `plan_activities` is the read-only `--dry-run` view. What each
row becomes on the wire: wealthfolio_payloads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol

import duckdb
from rich.table import Table

from flexsync.core.errors import WealthfolioError
from flexsync.core.progress import StepProgress
from flexsync.core.warehouse import ensure_schema
from flexsync.loaders import ledger
from flexsync.loaders.wealthfolio_client import CreateOutcome
from flexsync.loaders.wealthfolio_payloads import (
    MART,
    ActivityRow,
    PayloadError,
    build_payload,
    decimal_to_wire,
    opt_text,
    read_activities_to_post,
)

log = logging.getLogger("flexsync.wealthfolio")

CORRECTIONS_MART = "marts.activity_corrections"


class ActivityPoster(Protocol):
    def check_duplicates(self, keys: Iterable[str]) -> dict[str, str]: ...

    def create_activity(self, payload: Mapping[str, Any]) -> CreateOutcome: ...

    def delete_activity(self, activity_id: str) -> dict[str, Any] | None: ...

    def search_activities(self, account_id: str) -> list[dict[str, Any]]: ...


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FailedActivity:
    external_id: str
    reason: str


@dataclass
class LoadResult:
    posted: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    failed: list[FailedActivity] = field(default_factory=list)
    wf_activity_ids: dict[str, str] = field(default_factory=dict)
    corrected: list[str] = field(default_factory=list)
    # The days (UTC) of the activities this load asked Wealthfolio to create or delete,
    # whatever the answer (None: a date it could not read): the drift's snapshot after
    # the load compares the activities from the earliest on (stages.refresh_drift).
    touched_days: set[date | None] = field(default_factory=set)


def summary_text(result: LoadResult, max_listed: int = 5) -> str:
    """e.g. "posted 10, already there 2, failed 1: ibkr:trade:3 — 500 Internal Server Error"."""
    text = (f"posted {len(result.posted)}, already there {len(result.already_present)}, "
            f"failed {len(result.failed)}")
    if result.corrected:
        text += f", corrected {len(result.corrected)}"
    if result.failed:
        listed = "; ".join(f"{f.external_id} — {f.reason}" for f in result.failed[:max_listed])
        more = len(result.failed) - max_listed
        text += f": {listed}" + (f"; … and {more} more" if more > 0 else "")
    return text


class LoadAborted(WealthfolioError):
    """Wealthfolio became unusable mid-load (auth, unreachable); `result` has what was done."""

    def __init__(self, message: str, result: LoadResult) -> None:
        super().__init__(message)
        self.result = result


def raise_for_failures(result: LoadResult) -> None:
    """Exit-5 rule: any failed row makes the run fail, with the summary as the message."""
    if result.failed:
        raise WealthfolioError(f"Wealthfolio load incomplete: {summary_text(result)}")


# --------------------------------------------------------------------------- load


def _pending(con: duckdb.DuckDBPyConnection, rows: Sequence[ActivityRow]) -> list[ActivityRow]:
    """Rows not settled in the ledger, first occurrence of each external id."""
    settled = ledger.settled_external_ids(con)
    seen: set[str] = set()
    out = []
    for row in rows:
        if row.external_id in settled or row.external_id in seen:
            continue
        seen.add(row.external_id)
        out.append(row)
    return out


def load_activities(
    con: duckdb.DuckDBPyConnection,
    client: ActivityPoster,
    run_id: str | None,
    *,
    default_account_id: str | None = None,
    rows: Sequence[ActivityRow] | None = None,
) -> LoadResult:
    """Post every pending activity; record each outcome in the ledger as it comes."""
    ensure_schema(con)
    result = LoadResult()
    if rows is None:
        apply_corrections(con, client, run_id, result, default_account_id=default_account_id)
    todo = _pending(con, read_activities_to_post(con) if rows is None else rows)
    unrecorded = _unrecorded_in_wealthfolio(con) if rows is None else []
    if not todo and not unrecorded:
        log.info("Wealthfolio: nothing to post")
        return result
    try:
        existing = client.check_duplicates([row.external_id for row in todo] + unrecorded)
        foreign = _not_in_account(client, todo, existing, default_account_id)
    except WealthfolioError as exc:
        raise LoadAborted(str(exc), result) from None
    with StepProgress("posting to Wealthfolio", len(todo)) as progress, \
            ledger.LedgerBuffer(con) as out:
        for key in unrecorded:
            if key in existing:  # a lost acknowledgement: Wealthfolio has it, the ledger not
                _settle(out, result, key, "already_present", existing[key], run_id)
        for row in todo:
            progress.advance()
            _post_one(out, client, row, existing, foreign, result, run_id, default_account_id)
            out.activity_done()
    log.info("Wealthfolio: %s", summary_text(result))
    return result


def _post_one(out: ledger.LedgerBuffer, client: ActivityPoster, row: ActivityRow,
              existing: dict[str, str], foreign: dict[str, str], result: LoadResult,
              run_id: str | None, default_account_id: str | None) -> None:
    """Post one activity (unless it is known already) and write its outcome to the ledger."""
    key = row.external_id
    if key in foreign:
        _fail(out, result, key, foreign[key], run_id)
        return
    if key in existing:
        _settle(out, result, key, "already_present", existing[key], run_id)
        return
    try:
        payload = build_payload(row, default_account_id)
    except PayloadError as exc:
        _fail(out, result, key, f"not sent: {exc}", run_id)
        return
    result.touched_days.add(utc_day(payload.get("activityDate")))
    try:
        outcome = client.create_activity(payload)
    except WealthfolioError as exc:
        _fail(out, result, key, str(exc), run_id)
        raise LoadAborted(f"{exc} (stopped loading: {summary_text(result)})",
                          result) from None
    if outcome.status == "failed":
        _fail(out, result, key, outcome.error or "failed", run_id)
    else:
        _settle(out, result, key, outcome.status, outcome.activity_id, run_id)


@dataclass(frozen=True)
class Correction:
    """One row of marts.activity_corrections: a posted activity IBKR took back."""

    external_id: str
    wf_account_id: str | None
    wf_activity_id: str | None
    reason: str


def read_corrections(con: duckdb.DuckDBPyConnection) -> list[Correction]:
    try:
        found = con.execute(
            f"select external_id, wf_account_id, wf_activity_id, reason from {CORRECTIONS_MART} "
            "order by external_id").fetchall()
    except duckdb.CatalogException:
        return []  # marts not built yet (or built before corrections existed)
    return [Correction(str(r[0]), opt_text(r[1]), opt_text(r[2]), str(r[3])) for r in found]


def apply_corrections(con: duckdb.DuckDBPyConnection, client: ActivityPoster,
                      run_id: str | None, result: LoadResult, *,
                      default_account_id: str | None = None) -> None:
    """Delete from Wealthfolio what flexsync posted and IBKR has since reversed.

    Only an activity whose idempotencyKey is the external id (so flexsync posted it) is
    touched; one already gone is recorded as corrected. Each correction is recorded in
    the ledger ('deleted') at once, so a re-run does nothing.
    """
    corrections = read_corrections(con)
    if not corrections:
        return
    by_account: dict[str, dict[str, dict[str, Any]]] = {}
    with ledger.LedgerBuffer(con, rows=1) as out:
        for item in corrections:
            _correct_one(out, client, item, by_account, run_id, result, default_account_id)
            out.activity_done()


def _correct_one(out: ledger.LedgerBuffer, client: ActivityPoster, item: Correction,
                 by_account: dict[str, dict[str, dict[str, Any]]], run_id: str | None,
                 result: LoadResult, default_account_id: str | None) -> None:
    account_id = item.wf_account_id or default_account_id
    if not account_id:
        _fail(out, result, item.external_id,
              "correction not applied: no Wealthfolio account id", run_id)
        return
    try:
        if account_id not in by_account:
            by_account[account_id] = _activities_by_key(client.search_activities(account_id))
        known = by_account[account_id]
        activity = known.get(item.wf_activity_id or "") or known.get(item.external_id)
        if activity is not None and activity.get("idempotencyKey") != item.external_id:
            _fail(out, result, item.external_id,
                  f"correction not applied: Wealthfolio activity {activity.get('id')} has "
                  f"idempotencyKey {activity.get('idempotencyKey')!r}, not "
                  f"{item.external_id!r} — flexsync only changes what it posted", run_id)
            return
        note = item.reason
        if activity is None:
            note += " (already gone from Wealthfolio)"
        else:
            result.touched_days.add(utc_day(activity.get("date")))
            client.delete_activity(str(activity["id"]))
    except WealthfolioError as exc:
        raise LoadAborted(f"{exc} (while correcting {item.external_id})", result) from None
    out.record(item.external_id, "deleted", wf_activity_id=item.wf_activity_id, error=note,
               run_id=run_id)
    result.corrected.append(item.external_id)
    log.info("corrected %s: deleted from Wealthfolio — %s", item.external_id, note)


def utc_day(stamp: Any) -> date | None:
    """The UTC day of an RFC 3339 time (or a YYYY-MM-DD day) as sent or searched; None
    when it cannot be read."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()


def _activities_by_key(activities: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Activities by Wealthfolio id and by idempotencyKey."""
    out: dict[str, dict[str, Any]] = {}
    for activity in activities:
        out[str(activity.get("id"))] = dict(activity)
        if activity.get("idempotencyKey"):
            out[str(activity["idempotencyKey"])] = dict(activity)
    return out


def _unrecorded_in_wealthfolio(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Mapped ids the mart leaves out because the latest snapshot already shows them in
    Wealthfolio, yet the ledger never recorded: the answer to their create was lost (a
    crash between Wealthfolio storing it and the ledger write). Settling them keeps the
    rule that a posted id is never posted again, even if a user deletes it later."""
    try:
        found = con.execute(
            "select external_id from marts.fct_activities except "
            f"select external_id from {MART} except {ledger.SETTLED_IDS_SQL}",
            list(ledger.SETTLED_STATUSES)).fetchall()
    except duckdb.CatalogException:
        return []  # marts not built (unit tests pass their own rows)
    return sorted(str(row[0]) for row in found)


def _not_in_account(client: ActivityPoster, todo: Sequence[ActivityRow],
                    existing: Mapping[str, str], default_account_id: str | None
                    ) -> dict[str, str]:
    """Pre-check duplicates that are not activities of the row's account: {key: reason}.

    The idempotency index is global, so "already exists" may name an activity of another
    account (or one the server no longer has). Trusting it would settle the id and never
    post it to this account; failing it keeps it pending and the run exits 5.
    """
    accounts: dict[str, set[str]] = {}
    foreign: dict[str, str] = {}
    for row in todo:
        key = row.external_id
        account_id = row.wf_account_id or default_account_id
        if key not in existing or not account_id:
            continue
        if account_id not in accounts:
            activities = client.search_activities(account_id)
            accounts[account_id] = {str(a.get("id")) for a in activities} | {
                str(a.get("idempotencyKey")) for a in activities if a.get("idempotencyKey")}
        if existing[key] not in accounts[account_id] and key not in accounts[account_id]:
            foreign[key] = (f"Wealthfolio says idempotency key {key} already exists "
                            f"(activity {existing[key]}) but account {account_id} has no such "
                            "activity (another account's?); not posted")
    return foreign


def _settle(out: ledger.LedgerBuffer, result: LoadResult, key: str,
            status: ledger.LedgerStatus, activity_id: str | None, run_id: str | None) -> None:
    out.record(key, status, wf_activity_id=activity_id, run_id=run_id)
    (result.posted if status == "posted" else result.already_present).append(key)
    if activity_id:
        result.wf_activity_ids[key] = activity_id
    log.debug("%s %s (Wealthfolio id %s)", status, key, activity_id)


def _fail(out: ledger.LedgerBuffer, result: LoadResult, key: str, reason: str,
          run_id: str | None) -> None:
    out.record(key, "failed", error=reason, run_id=run_id)
    result.failed.append(FailedActivity(key, reason))
    log.warning("Wealthfolio refused %s: %s", key, reason)


# --------------------------------------------------------------------------- dry run


@dataclass(frozen=True)
class PlannedActivity:
    row: ActivityRow
    payload: dict[str, Any] | None
    problem: str | None = None


@dataclass(frozen=True)
class ActivityPlan:
    activities: list[PlannedActivity]
    corrections: list[Correction] = field(default_factory=list)

    def table(self) -> Table:
        table = Table(title=f"Would post {len(self.activities)} activities to Wealthfolio")
        problems = any(item.problem for item in self.activities)
        for name in ("date", "type", "symbol", "quantity", "price", "amount", "currency",
                     "external id") + (("problem",) if problems else ()):
            numeric = name in ("quantity", "price", "amount")
            table.add_column(name, justify="right" if numeric else "left",
                             no_wrap=name != "problem")
        for item in self.activities:
            row = item.row
            cells = [
                row.activity_date.isoformat() if row.activity_date else "?",
                row.activity_type + (f"/{row.subtype}" if row.subtype else ""),
                row.symbol or "",
                _cell(row.quantity), _cell(row.unit_price), _cell(row.amount),
                row.currency or "",
                row.external_id,
            ]
            table.add_row(*cells, *([item.problem or ""] if problems else []))
        for correction in self.corrections:
            cells = ["", "DELETE", "", "", "", "", "", correction.external_id]
            table.add_row(*cells, *([correction.reason] if problems else []))
        if self.corrections:
            table.caption = (f"and would delete {len(self.corrections)} activity(ies) IBKR took "
                             "back (marts.activity_corrections)")
        return table


def _cell(value: Decimal | None) -> str:
    return decimal_to_wire(value) if value is not None else ""


def plan_activities(con: duckdb.DuckDBPyConnection, *,
                    default_account_id: str | None = None) -> ActivityPlan:
    """What `load_activities` would post, without any Wealthfolio call or write."""
    planned = []
    for row in _pending(con, read_activities_to_post(con)):
        try:
            planned.append(PlannedActivity(row, build_payload(row, default_account_id)))
        except PayloadError as exc:
            planned.append(PlannedActivity(row, None, f"cannot post: {exc}"))
    return ActivityPlan(planned, read_corrections(con))

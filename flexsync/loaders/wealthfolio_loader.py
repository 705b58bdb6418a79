"""Post `marts.activities_to_post` to Wealthfolio, one activity at a time (SPEC §5).

For each row: `POST /api/v1/activities` with `idempotencyKey` = the external id,
`sourceSystem` IBKR and `sourceRecordId` = the IBKR id. The batch is pre-checked
with check-duplicates, and a "Duplicate activity detected" answer also means the
activity is already there. Every outcome goes to the ledger straight away. A
failed row is recorded and left pending (the mart keeps it until it is posted);
the others continue, and the caller turns failures into exit code 5
(`raise_for_failures`). `plan_activities` is the read-only `--dry-run` view.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
from rich.table import Table

from flexsync.core.errors import DbtError, WealthfolioError
from flexsync.core.progress import StepProgress
from flexsync.core.warehouse import ensure_schema
from flexsync.loaders import ledger
from flexsync.loaders.wealthfolio_client import CreateOutcome

log = logging.getLogger("flexsync.wealthfolio")

MART = "marts.activities_to_post"
CORRECTIONS_MART = "marts.activity_corrections"
SOURCE_SYSTEM = "IBKR"
# `ticker` (the bare ticker, SPEC §4.1 extension) is read when present.
REQUIRED_COLUMNS = (
    "external_id", "wf_account_id", "source_id", "activity_type", "subtype", "activity_at",
    "activity_date", "symbol", "exchange_mic", "quote_currency", "quantity", "unit_price",
    "amount", "fee", "currency", "description",
)
_FIXED_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")
# Types whose activity is about a security: these carry the `symbol` object.
# Everything else (DEPOSIT, WITHDRAWAL, FEE, TAX, CREDIT, INTEREST ...) is cash.
ASSET_ACTIVITY_TYPES = frozenset({
    "BUY", "SELL", "DIVIDEND", "SPLIT", "ADJUSTMENT", "TRANSFER_IN", "TRANSFER_OUT",
})
_MONEY_FIELDS = (("quantity", "quantity"), ("unit_price", "unitPrice"), ("amount", "amount"),
                 ("fee", "fee"))


class ActivityPoster(Protocol):
    def check_duplicates(self, keys: Iterable[str]) -> dict[str, str]: ...

    def create_activity(self, payload: Mapping[str, Any]) -> CreateOutcome: ...

    def delete_activity(self, activity_id: str) -> dict[str, Any] | None: ...

    def search_activities(self, account_id: str) -> list[dict[str, Any]]: ...


class PayloadError(ValueError):
    """A mart row that cannot become a Wealthfolio activity."""


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class ActivityRow:
    """One row of marts.activities_to_post (SPEC §4.1)."""

    external_id: str
    wf_account_id: str | None
    broker_account_id: str | None
    source: str | None
    source_id: str | None
    activity_type: str
    subtype: str | None
    activity_at: datetime | None
    activity_date: date | None
    symbol: str | None
    exchange_mic: str | None
    quote_currency: str | None
    quantity: Decimal | None
    unit_price: Decimal | None
    amount: Decimal | None
    fee: Decimal | None
    currency: str | None
    description: str | None
    instrument_type: str | None = None
    activity_time_zone: str | None = None
    source_group_id: str | None = None
    ticker: str | None = None

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> ActivityRow:
        day = row.get("activity_date")
        if isinstance(day, datetime):
            day = day.date()
        return cls(
            external_id=str(row["external_id"]),
            wf_account_id=_opt_text(row.get("wf_account_id")),
            broker_account_id=_opt_text(row.get("broker_account_id")),
            source=_opt_text(row.get("source")),
            source_id=_opt_text(row.get("source_id")),
            activity_type=str(row["activity_type"]),
            subtype=_opt_text(row.get("subtype")),
            activity_at=row.get("activity_at"),
            activity_date=day,
            symbol=_opt_text(row.get("symbol")),
            exchange_mic=_opt_text(row.get("exchange_mic")),
            quote_currency=_opt_text(row.get("quote_currency")),
            quantity=_decimal(row, "quantity"),
            unit_price=_decimal(row, "unit_price"),
            amount=_decimal(row, "amount"),
            fee=_decimal(row, "fee"),
            currency=_opt_text(row.get("currency")),
            description=_opt_text(row.get("description")),
            instrument_type=_opt_text(row.get("instrument_type")),
            activity_time_zone=_opt_text(row.get("activity_time_zone")),
            source_group_id=_opt_text(row.get("source_group_id")),
            ticker=_opt_text(row.get("ticker")),
        )


def read_activities_to_post(con: duckdb.DuckDBPyConnection) -> list[ActivityRow]:
    """The mart's rows in posting order (oldest first, so Wealthfolio sees history in order)."""
    try:
        probe = con.execute(f"select * from {MART} limit 0")
    except duckdb.CatalogException:
        raise DbtError(f"{MART} does not exist: run `flexsync transform` first") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in [d[0] for d in probe.description]]
    if missing:
        raise DbtError(f"{MART} lacks column(s) {', '.join(missing)} (SPEC §4.1)")
    cursor = con.execute(
        f"select * from {MART} order by activity_date, activity_at nulls first, external_id")
    names = [d[0] for d in cursor.description]
    return [ActivityRow.from_mapping(dict(zip(names, values, strict=True)))
            for values in cursor.fetchall()]


def _opt_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _decimal(row: Mapping[str, Any], name: str) -> Decimal | None:
    value = row.get(name)
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # Money is never float: a DOUBLE here is a bug in the mart, not something to round.
        raise DbtError(f"{MART}.{name} is a float ({value!r}); money columns must be DECIMAL")
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise DbtError(f"{MART}.{name} holds {value!r}, not a number") from None


# --------------------------------------------------------------------------- payloads


def decimal_to_wire(value: Decimal) -> str:
    """A Decimal as Wealthfolio's JSON string: plain notation, no trailing zeros."""
    if not value.is_finite():
        raise PayloadError(f"{value} is not a finite number")
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def activity_zone(name: str | None) -> tzinfo:
    """The zone of a mart row's local time: '+HH:MM' or an IANA name (UTC when absent)."""
    if not name:
        return UTC
    fixed = _FIXED_OFFSET.match(name)
    if fixed:
        sign, hours, minutes = fixed.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-offset if sign == "-" else offset)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PayloadError(f"unknown time zone {name!r} (IBKR_TIMEZONE?)") from None


def wire_activity_date(activity_date: date | None, activity_at: datetime | None,
                       time_zone: str | None = None) -> str:
    """RFC 3339 with the offset of the zone IBKR's local time is in.

    Wealthfolio places an activity on the day its instant falls on in the *user's*
    timezone, so a broker wall-clock time must carry its real offset; a date-only
    movement goes at local noon (the mart puts it there), so its day holds for users
    from UTC-11 to UTC+11.
    """
    zone = activity_zone(time_zone)
    if activity_at is not None:
        local = activity_at.replace(tzinfo=None)
    elif activity_date is not None:
        local = datetime.combine(activity_date, time(12))
    else:
        raise PayloadError("no activity date")
    return local.replace(tzinfo=zone).isoformat(timespec="seconds")


def symbol_object(row: ActivityRow) -> dict[str, str]:
    """{symbol, exchangeMic, quoteCcy, instrumentType} exactly as the mart gives them.

    Instrument identity lives in dbt (seeds/exchanges.csv): the mart's bare `ticker`
    (VOD for VOD.L), MIC, quote currency in major units and instrument type. Nothing
    here knows an exchange; a mart without `ticker` sends its symbol unchanged.
    """
    if not row.symbol:
        raise PayloadError(f"{row.activity_type} needs a symbol and the row has none")
    ticker = row.ticker or row.symbol
    if not row.quote_currency:
        # Wealthfolio refuses a new market-priced asset without one, and guessing the
        # dividend's or the trade's currency is how assets end up quoted in the wrong unit.
        raise PayloadError(f"{row.symbol} has no quote currency in the mart")
    out = {"symbol": ticker}
    if row.exchange_mic:
        out["exchangeMic"] = row.exchange_mic
    out["quoteCcy"] = row.quote_currency
    out["instrumentType"] = row.instrument_type or "EQUITY"
    return out


def build_payload(row: ActivityRow, default_account_id: str | None = None) -> dict[str, Any]:
    """The NewActivity body for one mart row (contract §5.2)."""
    account_id = row.wf_account_id or default_account_id
    if not account_id:
        raise PayloadError("no Wealthfolio account id (IBKR_ACCOUNT_ID)")
    if not row.currency:
        raise PayloadError("no currency")
    payload: dict[str, Any] = {
        "accountId": account_id,
        "activityType": row.activity_type,
        "activityDate": wire_activity_date(row.activity_date, row.activity_at,
                                           row.activity_time_zone),
        "currency": row.currency,
        "idempotencyKey": row.external_id,
        "sourceSystem": SOURCE_SYSTEM,
    }
    if row.source_id:
        payload["sourceRecordId"] = row.source_id
    if row.source_group_id:
        payload["sourceGroupId"] = row.source_group_id
    if row.subtype:
        payload["subtype"] = row.subtype
    for attr, key in _MONEY_FIELDS:
        value = getattr(row, attr)
        if value is not None:
            payload[key] = decimal_to_wire(value)
    if row.description:
        payload["notes"] = row.description
    # The mart decides which activities name an instrument (trades, dividends,
    # withholding taxes, transfers of shares); a cash transfer or fee carries none.
    if row.symbol or row.activity_type in ASSET_ACTIVITY_TYPES - {"TRANSFER_IN", "TRANSFER_OUT"}:
        payload["symbol"] = symbol_object(row)
    return payload


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
    for key in unrecorded:
        if key in existing:  # a lost acknowledgement: Wealthfolio has it, the ledger did not
            _settle(con, result, key, "already_present", existing[key], run_id)

    with StepProgress("posting to Wealthfolio", len(todo)) as progress:
        for row in todo:
            progress.advance()
            key = row.external_id
            if key in foreign:
                _fail(con, result, key, foreign[key], run_id)
                continue
            if key in existing:
                _settle(con, result, key, "already_present", existing[key], run_id)
                continue
            try:
                payload = build_payload(row, default_account_id)
            except PayloadError as exc:
                _fail(con, result, key, f"not sent: {exc}", run_id)
                continue
            try:
                outcome = client.create_activity(payload)
            except WealthfolioError as exc:
                _fail(con, result, key, str(exc), run_id)
                raise LoadAborted(f"{exc} (stopped loading: {summary_text(result)})",
                                  result) from None
            if outcome.status == "failed":
                _fail(con, result, key, outcome.error or "failed", run_id)
            else:
                _settle(con, result, key, outcome.status, outcome.activity_id, run_id)
    log.info("Wealthfolio: %s", summary_text(result))
    return result


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
    return [Correction(str(r[0]), _opt_text(r[1]), _opt_text(r[2]), str(r[3])) for r in found]


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
    for item in corrections:
        account_id = item.wf_account_id or default_account_id
        if not account_id:
            _fail(con, result, item.external_id,
                  "correction not applied: no Wealthfolio account id", run_id)
            continue
        try:
            if account_id not in by_account:
                by_account[account_id] = _activities_by_key(client.search_activities(account_id))
            known = by_account[account_id]
            activity = known.get(item.wf_activity_id or "") or known.get(item.external_id)
            if activity is not None and activity.get("idempotencyKey") != item.external_id:
                _fail(con, result, item.external_id,
                      f"correction not applied: Wealthfolio activity {activity.get('id')} has "
                      f"idempotencyKey {activity.get('idempotencyKey')!r}, not "
                      f"{item.external_id!r} — flexsync only changes what it posted", run_id)
                continue
            note = item.reason
            if activity is None:
                note += " (already gone from Wealthfolio)"
            else:
                client.delete_activity(str(activity["id"]))
        except WealthfolioError as exc:
            raise LoadAborted(f"{exc} (while correcting {item.external_id})", result) from None
        ledger.record_outcome(con, item.external_id, "deleted",
                              wf_activity_id=item.wf_activity_id, error=note, run_id=run_id)
        result.corrected.append(item.external_id)
        log.info("corrected %s: deleted from Wealthfolio — %s", item.external_id, note)


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


def _settle(con: duckdb.DuckDBPyConnection, result: LoadResult, key: str,
            status: ledger.LedgerStatus, activity_id: str | None, run_id: str | None) -> None:
    ledger.record_outcome(con, key, status, wf_activity_id=activity_id, run_id=run_id)
    (result.posted if status == "posted" else result.already_present).append(key)
    if activity_id:
        result.wf_activity_ids[key] = activity_id
    log.debug("%s %s (Wealthfolio id %s)", status, key, activity_id)


def _fail(con: duckdb.DuckDBPyConnection, result: LoadResult, key: str, reason: str,
          run_id: str | None) -> None:
    ledger.record_outcome(con, key, "failed", error=reason, run_id=run_id)
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

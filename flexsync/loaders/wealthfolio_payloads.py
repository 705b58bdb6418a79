"""From a `marts.activities_to_post` row to the Wealthfolio NewActivity it becomes
(docs/upstream.md#activities): the row as read (money as Decimal, never float),
the wire forms of numbers, dates and symbols, and the payload itself.

`idempotencyKey` is the external id, `sourceSystem` IBKR and `sourceRecordId` the IBKR
id, so a repeated post is recognised as the same activity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb

from flexsync.core.errors import DbtError

MART = "marts.activities_to_post"
SOURCE_SYSTEM = "IBKR"
# `ticker` (the bare ticker, docs/analysts.md#marts) is read when present.
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


class PayloadError(ValueError):
    """A mart row that cannot become a Wealthfolio activity."""


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)  # slots: ≈1 KiB less a row (a first load holds 60,000)
class ActivityRow:
    """One row of marts.activities_to_post (docs/analysts.md#marts)."""

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
            wf_account_id=opt_text(row.get("wf_account_id")),
            broker_account_id=opt_text(row.get("broker_account_id")),
            source=opt_text(row.get("source")),
            source_id=opt_text(row.get("source_id")),
            activity_type=str(row["activity_type"]),
            subtype=opt_text(row.get("subtype")),
            activity_at=row.get("activity_at"),
            activity_date=day,
            symbol=opt_text(row.get("symbol")),
            exchange_mic=opt_text(row.get("exchange_mic")),
            quote_currency=opt_text(row.get("quote_currency")),
            quantity=_decimal(row, "quantity"),
            unit_price=_decimal(row, "unit_price"),
            amount=_decimal(row, "amount"),
            fee=_decimal(row, "fee"),
            currency=opt_text(row.get("currency")),
            description=opt_text(row.get("description")),
            instrument_type=opt_text(row.get("instrument_type")),
            activity_time_zone=opt_text(row.get("activity_time_zone")),
            source_group_id=opt_text(row.get("source_group_id")),
            ticker=opt_text(row.get("ticker")),
        )


READ_BATCH_ROWS = 2000


def read_activities_to_post(con: duckdb.DuckDBPyConnection) -> list[ActivityRow]:
    """The mart's rows in posting order (oldest first, so Wealthfolio sees history in order)."""
    try:
        probe = con.execute(f"select * from {MART} limit 0")
    except duckdb.CatalogException:
        raise DbtError(f"{MART} does not exist: run `flexsync transform` first") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in [d[0] for d in probe.description]]
    if missing:
        raise DbtError(f"{MART} lacks column(s) {', '.join(missing)} (docs/analysts.md#marts)")
    cursor = con.execute(
        f"select * from {MART} order by activity_date, activity_at nulls first, external_id")
    names = [d[0] for d in cursor.description]
    # In batches, not fetchall(): every row's tuple beside its ActivityRow doubled the peak.
    rows: list[ActivityRow] = []
    while batch := cursor.fetchmany(READ_BATCH_ROWS):
        rows.extend(ActivityRow.from_mapping(dict(zip(names, values, strict=True)))
                    for values in batch)
    return rows


def opt_text(value: Any) -> str | None:
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
    """The NewActivity body for one mart row (docs/upstream.md#activities)."""
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

"""Wealthfolio v3's cash and holdings rules (docs/upstream.md#cash-rules), in one place.

A pure function of activities: `compute_books(activities)` → cash per currency and
quantity per asset, as Wealthfolio's snapshot service books them. Read from the server
(afadil/wealthfolio b66a7151): `activities/compiler.rs` (only POSTED rows; DRIP →
DIVIDEND + BUY, STAKING_REWARD → INTEREST + BUY, DIVIDEND_IN_KIND → DIVIDEND +
TRANSFER_IN), `portfolio/snapshot/snapshot_service.rs` (splits: every other activity of
the asset dated on an earlier day has its quantity × ratio and its unit price ÷ ratio,
both rounded to 8 places half-even; splits of one asset on one day count once) and
`portfolio/snapshot/holdings_calculator.rs` (in date order, then creation order):

| type | cash (activity currency) | holdings |
|---|---|---|
| BUY | −(q × p + fee) | +q |
| SELL | +(q × p − fee) | −q, never below 0 (FIFO lots) |
| SPLIT | none | via the adjustment above (amount = ratio > 0) |
| DEPOSIT / DIVIDEND / INTEREST / CREDIT | +(amount − fee) | |
| WITHDRAWAL | −(amount + fee) | |
| FEE / TAX | −fee if fee ≠ 0 else −amount (`handle_charge`) | |
| TRANSFER_IN, no asset (cash) | +(amount − fee) | |
| TRANSFER_IN, asset | −fee | +q |
| TRANSFER_OUT, no asset (cash) | −(amount + fee) | |
| TRANSFER_OUT, asset | −fee | −q, never below 0 |
| ADJUSTMENT | none | OPTION_EXPIRY: −q, never below 0; otherwise none |
| UNKNOWN | none | none |

A BUY/SELL in a currency other than the account's, sent with a non-zero `fxRate`, is
booked in the account currency (× fxRate); without one, in its own currency (flexsync
never sends fxRate). Every number is taken as its absolute value (the type gives the
sign). Not modelled: option contract multipliers (the fake stores none: 1).

Note on the cash-rules table (docs/upstream.md#cash-rules): the server books a cash TRANSFER_IN as
amount − fee (the table says +amount; they agree when there is no fee).

Keys: `asset_key` is whatever the caller uses to name an asset. The fake's /holdings
uses its asset ids; `wealthfolio_books` uses "SYMBOL@MIC" (e.g. "VOD@XLON", "AAPL@XNAS"),
or the bare symbol when the asset has no MIC. The SQL mirror is
models/intermediate/wealthfolio/int_wealthfolio__cash_balances.sql (a test keeps the two
in step).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from fakes.wealthfolio.fake import FakeWealthfolio

ZERO = Decimal(0)
_PLACES = Decimal("1e-8")  # rust_decimal round_dp(DECIMAL_PRECISION = 8): banker's rounding
INCOME_TYPES = frozenset({"DEPOSIT", "DIVIDEND", "INTEREST", "CREDIT"})


@dataclass(frozen=True)
class LedgerActivity:
    """One stored activity, as the rules need it (a row of the fake, or a search row)."""

    activity_type: str
    currency: str
    date: datetime  # timezone-aware instant
    seq: int  # creation order: breaks ties between activities at the same instant
    asset_key: str | None = None  # None: a cash activity
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    amount: Decimal | None = None
    fee: Decimal | None = None
    fx_rate: Decimal | None = None
    status: str = "POSTED"
    subtype: str | None = None
    account_currency: str | None = None
    received_asset_key: str | None = None  # DIVIDEND_IN_KIND: metadata.received_asset_id
    source_group_id: str | None = None  # pairs transfer legs; no effect on cash or quantity

    def qty(self) -> Decimal:
        return abs(self.quantity or ZERO)

    def price(self) -> Decimal:
        return abs(self.unit_price or ZERO)

    def amt(self) -> Decimal:
        return abs(self.amount or ZERO)

    def fee_amt(self) -> Decimal:
        return abs(self.fee or ZERO)


@dataclass
class Books:
    """Cash per currency and quantity per asset key; exact zeros are left out."""

    cash: dict[str, Decimal] = field(default_factory=dict)
    quantities: dict[str, Decimal] = field(default_factory=dict)


@dataclass
class Income:
    """POSTED DIVIDEND amounts and TAX charges per asset key (gross, not netted)."""

    dividends: dict[str, Decimal] = field(default_factory=dict)
    taxes: dict[str, Decimal] = field(default_factory=dict)


# --------------------------------------------------------------------------- the rules


def compile_activities(activities: Iterable[LedgerActivity]) -> list[LedgerActivity]:
    """compiler.rs: drop non-POSTED rows, expand the composite subtypes into their legs."""
    out: list[LedgerActivity] = []
    for a in activities:
        if a.status != "POSTED":
            continue
        if a.activity_type == "DIVIDEND" and a.subtype == "DRIP":
            amount = a.amount if a.amount is not None else (a.quantity or ZERO) * (
                a.unit_price or ZERO)
            out.append(replace(a, subtype=None, quantity=None, unit_price=None, amount=amount))
            out.append(replace(a, activity_type="BUY", subtype=None, amount=None, fee=ZERO))
        elif a.activity_type == "INTEREST" and a.subtype == "STAKING_REWARD":
            out.append(replace(a, subtype=None, quantity=None, unit_price=None))
            out.append(replace(a, activity_type="BUY", subtype=None, amount=None, fee=ZERO))
        elif a.activity_type == "DIVIDEND" and a.subtype == "DIVIDEND_IN_KIND":
            out.append(replace(a, subtype=None, quantity=None, unit_price=None))
            out.append(replace(a, activity_type="TRANSFER_IN", subtype=None, amount=None,
                               fee=ZERO, asset_key=a.received_asset_key or a.asset_key))
        else:
            out.append(a)
    return out


def _local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def adjust_for_splits(activities: list[LedgerActivity], zone: ZoneInfo) -> list[LedgerActivity]:
    """snapshot_service.rs: each non-SPLIT activity of an asset dated on a day before a
    split has its quantity × ratio and unit price ÷ ratio (rounded to 8 places)."""
    splits: dict[str, dict[date, Decimal]] = {}
    for a in sorted(activities, key=lambda x: (x.date, x.seq)):
        if a.activity_type == "SPLIT" and a.asset_key and a.amount is not None and a.amount > 0:
            # One split per asset and day (the day's earliest wins).
            splits.setdefault(a.asset_key, {}).setdefault(_local_day(a.date, zone), a.amount)
    out: list[LedgerActivity] = []
    for a in activities:
        ratios = splits.get(a.asset_key or "")
        if not ratios or a.activity_type == "SPLIT":
            out.append(a)
            continue
        day = _local_day(a.date, zone)
        factor = Decimal(1)
        for split_day, ratio in sorted(ratios.items()):
            if split_day > day:
                factor *= ratio
        if factor == 1:
            out.append(a)
            continue
        quantity = (a.qty() * factor).quantize(_PLACES, ROUND_HALF_EVEN)
        price = a.unit_price
        if a.price() != 0:
            price = (a.price() / factor).quantize(_PLACES, ROUND_HALF_EVEN)
        out.append(replace(a, quantity=quantity, unit_price=price))
    return out


def cash_effect(a: LedgerActivity) -> tuple[str, Decimal]:
    """(currency booked, signed cash change) of one compiled, split-adjusted activity."""
    kind, ccy = a.activity_type, a.currency
    if kind in ("BUY", "SELL"):
        gross = a.qty() * a.price()
        delta = -(gross + a.fee_amt()) if kind == "BUY" else gross - a.fee_amt()
        if a.account_currency and ccy != a.account_currency and a.fx_rate:
            return a.account_currency, delta * a.fx_rate  # the broker converted
        return ccy, delta
    if kind in INCOME_TYPES:
        return ccy, a.amt() - a.fee_amt()
    if kind == "WITHDRAWAL":
        return ccy, -(a.amt() + a.fee_amt())
    if kind in ("FEE", "TAX"):
        return ccy, -(a.fee_amt() if a.fee_amt() != 0 else a.amt())
    if kind == "TRANSFER_IN":
        return ccy, (a.amt() - a.fee_amt()) if not a.asset_key else -a.fee_amt()
    if kind == "TRANSFER_OUT":
        return ccy, -(a.amt() + a.fee_amt()) if not a.asset_key else -a.fee_amt()
    return ccy, ZERO  # SPLIT, ADJUSTMENT, UNKNOWN


def compute_books(activities: Iterable[LedgerActivity], timezone: str = "UTC") -> Books:
    """Cash per currency and quantity per asset key of one account's activities."""
    zone = ZoneInfo(timezone)
    prepared = adjust_for_splits(compile_activities(activities), zone)
    cash: dict[str, Decimal] = {}
    held: dict[str, Decimal] = {}
    for a in sorted(prepared, key=lambda x: (x.date, x.seq)):
        ccy, delta = cash_effect(a)
        cash[ccy] = cash.get(ccy, ZERO) + delta
        key, kind = a.asset_key, a.activity_type
        if not key:
            continue
        if kind in ("BUY", "TRANSFER_IN"):
            held[key] = held.get(key, ZERO) + a.qty()
        elif kind in ("SELL", "TRANSFER_OUT") or (
                kind == "ADJUSTMENT" and a.subtype == "OPTION_EXPIRY"):
            if key in held:  # FIFO lots: a reduction stops at what is held
                held[key] = max(ZERO, held[key] - a.qty())
    return Books(cash={c: v for c, v in cash.items() if v != 0},
                 quantities={k: v for k, v in held.items() if v != 0})


def compute_income(activities: Iterable[LedgerActivity]) -> Income:
    """Dividends (amount) and taxes (the charge FEE/TAX books) per asset key, POSTED only."""
    income = Income()
    for a in compile_activities(activities):
        if not a.asset_key:
            continue
        if a.activity_type == "DIVIDEND":
            income.dividends[a.asset_key] = income.dividends.get(a.asset_key, ZERO) + a.amt()
        elif a.activity_type == "TAX":
            _, delta = cash_effect(a)
            income.taxes[a.asset_key] = income.taxes.get(a.asset_key, ZERO) - delta
    return income


# --------------------------------------------------------------------------- inputs


def asset_key(symbol: str | None, mic: str | None) -> str | None:
    """"VOD@XLON"; the bare symbol without a MIC; None without a symbol."""
    if not symbol:
        return None
    return f"{symbol}@{mic}" if mic else symbol


def from_search_row(row: Mapping[str, Any], seq: int) -> LedgerActivity:
    """An ActivityDetails object of POST /activities/search (decimals as strings)."""

    def num(name: str) -> Decimal | None:
        value = row.get(name)
        return None if value in (None, "") else Decimal(str(value))

    moment = datetime.fromisoformat(str(row["date"]).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    metadata = row.get("metadata")
    received = metadata.get("received_asset_id") if isinstance(metadata, dict) else None
    return LedgerActivity(
        activity_type=row["activityType"], currency=row["currency"], date=moment, seq=seq,
        asset_key=asset_key(row.get("assetSymbol") or None, row.get("exchangeMic")),
        quantity=num("quantity"), unit_price=num("unitPrice"), amount=num("amount"),
        fee=num("fee"), fx_rate=num("fxRate"), status=row.get("status") or "POSTED",
        subtype=row.get("subtype"), account_currency=row.get("accountCurrency"),
        received_asset_key=received if isinstance(received, str) else None,
        source_group_id=row.get("sourceGroupId"))


def fake_ledger(fake: FakeWealthfolio, account_id: str, *, key_by: str = "symbol"
                ) -> list[LedgerActivity]:
    """The fake's stored activities of one account. key_by "symbol" names assets
    "SYMBOL@MIC"; "id" by the fake's asset ids (what its /holdings uses)."""
    with fake.lock:
        account = fake.accounts.get(account_id)
        account_ccy = account["currency"] if account else None
        records = [r for r in fake.activities.values() if r["accountId"] == account_id]
        assets = dict(fake.assets)
    return ledger_from_records(records, assets, account_ccy, key_by=key_by)


def ledger_from_records(records: Iterable[Mapping[str, Any]], assets: Mapping[str, Any],
                        account_currency: str | None, *, key_by: str = "symbol"
                        ) -> list[LedgerActivity]:
    """Rows as the fake stores them (Decimal fields, aware `activityDate`, `seq`)."""

    def key_of(asset_id: str | None) -> str | None:
        if not asset_id:
            return None
        if key_by == "id":
            return asset_id
        asset = assets.get(asset_id)
        return asset_key(asset["symbol"], asset["exchangeMic"]) if asset else asset_id

    out = []
    for r in records:
        metadata = r.get("metadata")
        if isinstance(metadata, str):
            try:
                metadata = json.loads(metadata)
            except ValueError:
                metadata = None
        received = metadata.get("received_asset_id") if isinstance(metadata, dict) else None
        out.append(LedgerActivity(
            activity_type=r["activityType"], currency=r["currency"], date=r["activityDate"],
            seq=r["seq"], asset_key=key_of(r["assetId"]), quantity=r["quantity"],
            unit_price=r["unitPrice"], amount=r["amount"], fee=r["fee"], fx_rate=r["fxRate"],
            status=r["status"], subtype=r["subtype"], account_currency=account_currency,
            received_asset_key=key_of(received) if isinstance(received, str) else None,
            source_group_id=r.get("sourceGroupId")))
    return out


def wealthfolio_books(fake: FakeWealthfolio, account_id: str, timezone: str = "UTC") -> Books:
    """What Wealthfolio would book for the account: cash per currency, quantity per
    "SYMBOL@MIC" (bare symbol without a MIC)."""
    return compute_books(fake_ledger(fake, account_id), timezone)


def income_by_symbol(fake: FakeWealthfolio, account_id: str) -> Income:
    """Dividends and taxes per "SYMBOL@MIC", each summed separately (not netted)."""
    return compute_income(fake_ledger(fake, account_id))

"""Wealthfolio's cash and holdings rules (docs/upstream.md#cash-rules) (fakes/wealthfolio/rules.py),
per type."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from fakes.wealthfolio import FakeWealthfolio
from fakes.wealthfolio.rules import (
    LedgerActivity,
    compute_books,
    compute_income,
    from_search_row,
    income_by_symbol,
    wealthfolio_books,
)

D = Decimal
_seq = iter(range(1, 10_000))


def act(kind: str, day: str = "2025-01-01", ccy: str = "GBP", **kw: Any) -> LedgerActivity:
    moment = datetime.fromisoformat(day if "T" in day else f"{day}T12:00:00+00:00")
    numbers = {k: D(str(v)) for k, v in kw.items()
               if k in ("quantity", "unit_price", "amount", "fee", "fx_rate")}
    rest = {k: v for k, v in kw.items() if k not in numbers}
    fields: dict[str, Any] = {**numbers, **rest}
    return LedgerActivity(activity_type=kind, currency=ccy, date=moment, seq=next(_seq),
                          **fields)


@pytest.mark.parametrize(("activity", "cash"), [
    (act("BUY", asset_key="A", quantity=10, unit_price="2.5", fee=1), D("-26")),
    (act("SELL", asset_key="A", quantity=10, unit_price="2.5", fee=1), D("24")),
    (act("DEPOSIT", amount=100, fee=2), D("98")),
    (act("DIVIDEND", asset_key="A", amount=10, fee="0.5"), D("9.5")),
    (act("INTEREST", amount=3), D("3")),
    (act("CREDIT", amount=4, fee=1), D("3")),
    (act("WITHDRAWAL", amount=100, fee=2), D("-102")),
    (act("FEE", amount=50, fee=3), D("-3")),  # fee wins when non-zero
    (act("FEE", amount=50), D("-50")),
    (act("TAX", amount=40, fee=4), D("-4")),
    (act("TAX", amount=-7), D("-7")),  # absolute values: the type gives the sign
    (act("TRANSFER_IN", amount=100, fee=1), D("99")),  # cash transfer: amount − fee
    (act("TRANSFER_OUT", amount=100, fee=1), D("-101")),
    (act("TRANSFER_IN", asset_key="A", quantity=5, unit_price=9, fee=1), D("-1")),
    (act("TRANSFER_OUT", asset_key="A", quantity=5, fee=1), D("-1")),
    (act("SPLIT", asset_key="A", amount=4), None),
    (act("ADJUSTMENT", asset_key="A", quantity=1), None),
    (act("UNKNOWN", amount=5), None),
])
def test_cash_effect_of_each_type(activity: LedgerActivity, cash: Decimal | None) -> None:
    books = compute_books([activity])
    assert books.cash == ({"GBP": cash} if cash is not None else {})


def test_holdings_buy_sell_transfers_and_floor() -> None:
    books = compute_books([
        act("BUY", "2025-01-01", asset_key="A", quantity=10, unit_price=1),
        act("TRANSFER_IN", "2025-01-02", asset_key="A", quantity=5),
        act("SELL", "2025-01-03", asset_key="A", quantity=3, unit_price=1),
        act("TRANSFER_OUT", "2025-01-04", asset_key="A", quantity=2),
        act("BUY", "2025-01-01", asset_key="B", quantity=1, unit_price=1),
        act("SELL", "2025-01-02", asset_key="B", quantity=5, unit_price=1),  # capped at 1
        act("BUY", "2025-01-03", asset_key="B", quantity=2, unit_price=1),
        act("SELL", "2025-01-01", asset_key="C", quantity=1, unit_price=7),  # never held
    ])
    assert books.quantities == {"A": D(10), "B": D(2)}
    # Cash is booked in full even where the quantity was capped.
    assert books.cash == {"GBP": D(-10 + 3 - 1 + 5 - 2 + 7)}


def test_only_posted_in_date_then_creation_order() -> None:
    books = compute_books([
        act("SELL", "2025-01-02", asset_key="A", quantity=4, unit_price=1),
        act("BUY", "2025-01-01", asset_key="A", quantity=4, unit_price=1),
        act("BUY", "2025-01-01", asset_key="A", quantity=100, unit_price=1, status="DRAFT"),
        act("DEPOSIT", amount=9, status="PENDING"),
        act("DEPOSIT", amount=9, status="VOID"),
    ])
    assert books.quantities == {}  # bought, then sold, though listed the other way round
    assert books.cash == {}


def test_split_multiplies_what_was_held_on_earlier_days() -> None:
    books = compute_books([
        act("BUY", "2025-01-01", asset_key="A", quantity=10, unit_price=100),
        act("SPLIT", "2025-02-01", asset_key="A", amount=4),
        act("SPLIT", "2025-02-01T18:00:00+00:00", asset_key="A", amount=4),  # same day: once
        act("BUY", "2025-02-01", asset_key="A", quantity=1, unit_price=25),  # same day: as is
        act("SELL", "2025-03-01", asset_key="A", quantity=20, unit_price=30),
        act("BUY", "2024-01-01", asset_key="B", quantity=3, unit_price=1),
        act("SPLIT", "2024-06-01", asset_key="B", amount="0.04"),  # 1-for-25
    ])
    assert books.quantities == {"A": D(21), "B": D("0.12")}
    assert books.cash == {"GBP": D(-1000 - 25 + 600 - 3)}


def test_split_adjusted_prices_are_rounded_like_rust_decimal() -> None:
    # 7 @ 1 before a 3-for-1 split: the price becomes 1 ÷ 3 rounded to 8 places, so the
    # cash Wealthfolio books is 21 × 0.33333333, not 7.
    books = compute_books([
        act("BUY", "2025-01-01", asset_key="A", quantity=7, unit_price=1),
        act("SPLIT", "2025-02-01", asset_key="A", amount=3),
    ])
    assert books.quantities == {"A": D(21)}
    assert books.cash == {"GBP": D("-6.99999993")}


def test_split_day_is_the_users_day() -> None:
    late = [act("BUY", "2025-01-31T23:30:00+00:00", asset_key="A", quantity=1, unit_price=1),
            act("SPLIT", "2025-02-01T12:00:00+00:00", asset_key="A", amount=2)]
    assert compute_books(late, "UTC").quantities == {"A": D(2)}
    # In Europe/Berlin the buy is on 1 February, the split's day: not adjusted.
    assert compute_books(late, "Europe/Berlin").quantities == {"A": D(1)}


def test_fx_rate_books_a_foreign_trade_in_the_account_currency() -> None:
    books = compute_books([
        act("BUY", ccy="USD", asset_key="A", quantity=1, unit_price=100, fee=1,
            fx_rate="0.8", account_currency="GBP"),
        act("BUY", ccy="USD", asset_key="A", quantity=1, unit_price=100,
            account_currency="GBP"),  # no fxRate: booked in USD
        act("DEPOSIT", ccy="USD", amount=10, fx_rate="0.8", account_currency="GBP"),
    ])
    assert books.cash == {"GBP": D("-80.8"), "USD": D(-100 + 10)}


def test_composite_subtypes_expand_like_the_compiler() -> None:
    books = compute_books([
        act("DIVIDEND", asset_key="A", subtype="DRIP", amount=10, quantity=2, unit_price=5),
        act("INTEREST", asset_key="B", subtype="STAKING_REWARD", amount=3, quantity=1,
            unit_price=3),
    ])
    assert books.quantities == {"A": D(2), "B": D(1)}
    assert books.cash == {}  # the income pays for the shares


def test_fx_conversion_pair_books_both_currencies() -> None:
    books = compute_books([
        act("TRANSFER_OUT", ccy="GBP", amount=1000, source_group_id="g"),
        act("TRANSFER_IN", ccy="USD", amount="1265.40", source_group_id="g"),
        act("FEE", ccy="GBP", amount=2),
    ])
    assert books.cash == {"GBP": D(-1002), "USD": D("1265.40")}
    assert books.quantities == {}


def test_income_per_symbol_is_not_netted() -> None:
    income = compute_income([
        act("DIVIDEND", asset_key="VOD@XLON", amount=10),
        act("DIVIDEND", asset_key="VOD@XLON", amount=5),
        act("DIVIDEND", asset_key="VOD@XLON", amount=99, status="DRAFT"),
        act("TAX", asset_key="VOD@XLON", amount="1.5"),
        act("TAX", amount=3),  # no asset: not per symbol
    ])
    assert income.dividends == {"VOD@XLON": D(15)}
    assert income.taxes == {"VOD@XLON": D("1.5")}


def test_search_rows_and_fake_records_give_the_same_books() -> None:
    with FakeWealthfolio(None) as fake:
        account = fake.create_account("IBKR", "GBP")["id"]
        with httpx.Client(base_url=fake.base_url + "/api/v1") as http:
            def post(**body: Any) -> None:
                body = {"accountId": account, "activityDate": "2025-03-14",
                        "currency": "GBP", **body}
                assert http.post("/activities", json=body).status_code == 200

            vod = {"symbol": "VOD", "exchangeMic": "XLON", "quoteCcy": "GBP"}
            post(activityType="DEPOSIT", amount="1000")
            post(activityType="BUY", symbol=vod, quantity="100", unitPrice="0.712", fee="3")
            post(activityType="DIVIDEND", symbol=vod, amount="4.5")
            post(activityType="BUY", currency="USD", quantity="2", unitPrice="150",
                 symbol={"symbol": "AAPL", "exchangeMic": "XNAS", "quoteCcy": "USD"})
            rows = http.post("/activities/search",
                             json={"page": 0, "pageSize": 0}).json()["data"]
        from_fake = wealthfolio_books(fake, account)
        from_search = compute_books([from_search_row(r, i) for i, r in enumerate(rows)])
        assert from_fake == from_search
        assert from_fake.quantities == {"VOD@XLON": D(100), "AAPL@XNAS": D(2)}
        assert from_fake.cash == {"GBP": D("1000") - D("74.2") + D("4.5"), "USD": D(-300)}
        assert income_by_symbol(fake, account).dividends == {"VOD@XLON": D("4.5")}

"""Loader: marts.activities_to_post → Wealthfolio (the fake), with the ledger as the record."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from rich.console import Console

from fakes.wealthfolio import FakeWealthfolio
from flexsync.core.errors import DbtError, ExitCode, WealthfolioError
from flexsync.extract.wealthfolio_snapshot import snapshot_activities
from flexsync.loaders.ledger import SETTLED_STATUSES
from flexsync.loaders.wealthfolio_client import CreateOutcome, WealthfolioClient
from flexsync.loaders.wealthfolio_loader import (
    LoadAborted,
    LoadResult,
    load_activities,
    plan_activities,
    raise_for_failures,
    summary_text,
    utc_day,
)
from flexsync.loaders.wealthfolio_payloads import (
    ActivityRow,
    PayloadError,
    build_payload,
    decimal_to_wire,
    symbol_object,
    wire_activity_date,
)
from tests.plugins.wealthfolio_fake import WF_TEST_PASSWORD, write_activities_to_post

MakeClient = Callable[..., WealthfolioClient]


def trade(n: int, **extra: Any) -> dict[str, Any]:
    """An LSE buy as the mart gives it: canonical VOD.L (ticker VOD), XLON, GBP quote."""
    row: dict[str, Any] = {
        "external_id": f"ibkr:trade:{n}", "broker_account_id": "U1234567", "source": "trade",
        "source_id": str(n), "activity_type": "BUY", "subtype": None,
        "activity_at": datetime(2025, 3, 14, 14, 30, n % 60),
        "activity_date": date(2025, 3, 14), "symbol": "VOD.L", "ticker": "VOD",
        "exchange_mic": "XLON", "quote_currency": "GBP", "quantity": Decimal("100"),
        "unit_price": Decimal("0.7120"),
        "amount": Decimal("71.2000"), "fee": Decimal("3.0000"), "currency": "GBP",
        "description": "VODAFONE GROUP PLC", "instrument_type": "EQUITY",
    }
    row.update(extra)
    return row


def cash(n: int, kind: str, amount: str, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "external_id": f"ibkr:cash:{n}", "broker_account_id": "U1234567", "source": "cash",
        "source_id": str(n), "activity_type": kind, "subtype": None, "activity_at": None,
        "activity_date": date(2025, 3, 1), "symbol": None, "exchange_mic": None,
        "quote_currency": None, "quantity": None, "unit_price": None,
        "amount": Decimal(amount), "fee": None, "currency": "GBP",
        "description": f"{kind} {n}", "instrument_type": None,
    }
    row.update(extra)
    return row


@pytest.fixture
def mart(wf_warehouse: duckdb.DuckDBPyConnection,
         wf_account_id: str) -> Callable[[list[dict[str, Any]]], None]:
    def write(rows: list[dict[str, Any]]) -> None:
        write_activities_to_post(wf_warehouse,
                                 [{"wf_account_id": wf_account_id, **r} for r in rows])
    return write


def ledger(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return con.execute(
        "select external_id, wf_activity_id, status, error, run_id from sync.posted_activities "
        "order by recorded_at, external_id").fetchall()


def posted_keys(fake: FakeWealthfolio) -> list[str]:
    return [r.json["idempotencyKey"] for r in fake.requests_to("POST", "/activities")]


# ----------------------------------------------------------------------------- payloads


def test_lse_buy_payload_field_by_field(mart: Callable[..., None], wf_account_id: str,
                                        wf_warehouse: duckdb.DuckDBPyConnection,
                                        wf_client: WealthfolioClient,
                                        fake_wealthfolio: FakeWealthfolio) -> None:
    mart([trade(1)])
    result = load_activities(wf_warehouse, wf_client, "run-1")
    assert result.posted == ["ibkr:trade:1"] and not result.failed
    sent = fake_wealthfolio.requests_to("POST", "/activities")[0]
    assert sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "accountId": wf_account_id,
        "activityType": "BUY",
        "activityDate": "2025-03-14T14:30:01+00:00",
        "currency": "GBP",
        "idempotencyKey": "ibkr:trade:1",
        "sourceSystem": "IBKR",
        "sourceRecordId": "1",
        "quantity": "100",
        "unitPrice": "0.712",
        "amount": "71.2",
        "fee": "3",
        "notes": "VODAFONE GROUP PLC",
        "symbol": {"symbol": "VOD", "exchangeMic": "XLON", "quoteCcy": "GBP",
                   "instrumentType": "EQUITY"},
    }
    stored = fake_wealthfolio.activity_by_key("ibkr:trade:1")
    assert stored is not None
    assert stored["activityDate"].startswith("2025-03-14")
    assert (stored["currency"], stored["unitPrice"], stored["sourceSystem"]) == (
        "GBP", "0.712", "IBKR")
    asset = fake_wealthfolio.assets[stored["assetId"]]
    assert (asset["symbol"], asset["exchangeMic"], asset["quoteCcy"]) == ("VOD", "XLON", "GBP")


def test_payload_kinds(wf_account_id: str) -> None:
    us = build_payload(ActivityRow.from_mapping(trade(
        2, symbol="AAPL", ticker="AAPL", exchange_mic=None, quote_currency="USD", currency="USD",
        activity_type="SELL", unit_price=Decimal("170.250000"), fee=Decimal("0"),
        wf_account_id=wf_account_id)))
    assert us["symbol"] == {"symbol": "AAPL", "quoteCcy": "USD", "instrumentType": "EQUITY"}
    assert (us["unitPrice"], us["fee"]) == ("170.25", "0")

    dividend = build_payload(ActivityRow.from_mapping(cash(
        3, "DIVIDEND", "12.34", symbol="VOD.L", ticker="VOD", exchange_mic="XLON",
        quote_currency="GBP",
        wf_account_id=wf_account_id)))
    assert dividend["symbol"]["symbol"] == "VOD" and dividend["amount"] == "12.34"
    assert dividend["activityDate"] == "2025-03-01T12:00:00+00:00"  # date only: local noon
    assert "quantity" not in dividend and "unitPrice" not in dividend

    tax = build_payload(ActivityRow.from_mapping(cash(
        4, "TAX", "1.85", symbol="VOD.L", ticker="VOD", exchange_mic="XLON",
        quote_currency="GBP", wf_account_id=wf_account_id)))
    # The mart names the instrument a withholding tax belongs to: Wealthfolio links it.
    assert tax["symbol"]["symbol"] == "VOD"

    refund = build_payload(ActivityRow.from_mapping(cash(
        5, "CREDIT", "2.00", subtype="REFUND", wf_account_id=wf_account_id)))
    assert refund["subtype"] == "REFUND" and refund["amount"] == "2"
    assert "symbol" not in refund

    deposit = build_payload(ActivityRow.from_mapping(cash(6, "DEPOSIT", "5000")),
                            default_account_id="fallback")
    assert deposit["accountId"] == "fallback"
    for payload in (us, dividend, tax, refund, deposit):
        for key in ("quantity", "unitPrice", "amount", "fee"):
            assert key not in payload or isinstance(payload[key], str)


def test_decimal_and_date_and_symbol_rules() -> None:
    assert decimal_to_wire(Decimal("100.000000")) == "100"
    assert decimal_to_wire(Decimal("1E+3")) == "1000"
    assert decimal_to_wire(Decimal("0.000000123")) == "0.000000123"
    assert decimal_to_wire(Decimal("-0.00")) == "0"
    # A date-only row at local noon; a wall-clock time with its zone's real offset.
    assert wire_activity_date(date(2025, 3, 14), None) == "2025-03-14T12:00:00+00:00"
    assert wire_activity_date(date(2025, 7, 14), None, "Europe/London") == (
        "2025-07-14T12:00:00+01:00")
    assert wire_activity_date(None, datetime(2025, 7, 14, 23, 30), "Europe/London") == (
        "2025-07-14T23:30:00+01:00")  # a late trade stays on its day in London
    assert wire_activity_date(None, datetime(2025, 3, 14, 9, 5), "+10:00") == (
        "2025-03-14T09:05:00+10:00")  # an AEST suffix
    assert wire_activity_date(None, datetime(2025, 1, 2, 15, 30), "America/New_York") == (
        "2025-01-02T15:30:00-05:00")
    with pytest.raises(PayloadError, match="unknown time zone"):
        wire_activity_date(None, datetime(2025, 1, 2, 15, 30), "Mars/Olympus")

    def sym(symbol: str, ticker: str | None, mic: str | None, quote: str | None
            ) -> dict[str, str]:
        return symbol_object(ActivityRow.from_mapping(trade(
            1, symbol=symbol, ticker=ticker, exchange_mic=mic, quote_currency=quote)))

    # The mart's fields go out as they are: the loader knows no exchange.
    assert sym("VOD.L", "VOD", "XLON", "GBP") == {
        "symbol": "VOD", "exchangeMic": "XLON", "quoteCcy": "GBP", "instrumentType": "EQUITY"}
    assert sym("SAP.SG", "SAP", "XSTU", "EUR")["symbol"] == "SAP"
    assert sym("BRK-B", "BRK-B", "XNYS", "USD")["symbol"] == "BRK-B"
    # No ticker column (an older mart): the symbol is sent unchanged, suffix and all.
    assert sym("SAP.SG", None, "XSTU", "EUR")["symbol"] == "SAP.SG"
    # No quote currency: not guessed from a Python table or the trade currency.
    with pytest.raises(PayloadError, match="no quote currency"):
        sym("VOD.L", "VOD", "XLON", None)


def test_loader_holds_no_exchange_table() -> None:
    """Instrument identity lives in seeds/exchanges.csv only (issue 14)."""
    import flexsync.loaders.wealthfolio_loader as loader
    import flexsync.loaders.wealthfolio_payloads as payloads
    for module in (loader, payloads):
        source = Path(module.__file__).read_text()
        for name in ("YAHOO_SUFFIX_MIC", "MIC_QUOTE_FALLBACK", "XLON", "GBp", '".L"'):
            assert name not in source, (module.__name__, name)


def test_bad_mart_rows_fail_locally(mart: Callable[..., None],
                                    wf_warehouse: duckdb.DuckDBPyConnection,
                                    wf_client: WealthfolioClient,
                                    fake_wealthfolio: FakeWealthfolio) -> None:
    mart([trade(1, symbol=None), trade(2)])
    result = load_activities(wf_warehouse, wf_client, "r")
    assert result.posted == ["ibkr:trade:2"]
    assert result.failed[0].external_id == "ibkr:trade:1"
    assert result.failed[0].reason == "not sent: BUY needs a symbol and the row has none"
    assert posted_keys(fake_wealthfolio) == ["ibkr:trade:2"]


def test_missing_or_float_mart_is_a_dbt_error(wf_warehouse: duckdb.DuckDBPyConnection,
                                              wf_client: WealthfolioClient) -> None:
    with pytest.raises(DbtError, match="does not exist"):
        load_activities(wf_warehouse, wf_client, "r")
    wf_warehouse.execute("create schema marts; create table marts.activities_to_post as "
                         "select 'x' as external_id")
    with pytest.raises(DbtError, match="lacks column"):
        plan_activities(wf_warehouse)
    write_activities_to_post(wf_warehouse, [trade(1)])
    wf_warehouse.execute("alter table marts.activities_to_post alter quantity type double")
    with pytest.raises(DbtError, match="quantity is a float"):
        plan_activities(wf_warehouse)


# ----------------------------------------------------------------------------- outcomes


def test_precheck_skips_existing_keys(mart: Callable[..., None], wf_account_id: str,
                                      wf_warehouse: duckdb.DuckDBPyConnection,
                                      wf_client: WealthfolioClient,
                                      fake_wealthfolio: FakeWealthfolio) -> None:
    mart([trade(1), trade(2)])
    existing = wf_client.create_activity(build_payload(ActivityRow.from_mapping(
        {"wf_account_id": wf_account_id, **trade(1)})))
    result = load_activities(wf_warehouse, wf_client, "run-1")
    assert (result.posted, result.already_present) == (["ibkr:trade:2"], ["ibkr:trade:1"])
    assert posted_keys(fake_wealthfolio) == ["ibkr:trade:1", "ibkr:trade:2"]  # 1 by the test
    rows = {r[0]: r for r in ledger(wf_warehouse)}
    assert rows["ibkr:trade:1"][1:] == (existing.activity_id, "already_present", None, "run-1")
    assert rows["ibkr:trade:2"][2] == "posted"


def test_the_load_reports_the_days_it_changed_in_wealthfolio(
        mart: Callable[..., None], wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection, wf_client: WealthfolioClient,
        fake_wealthfolio: FakeWealthfolio) -> None:
    """LoadResult.touched_days: the UTC day of every activity the load asked Wealthfolio
    to create or delete (the drift's snapshot after it starts at the earliest); one that
    was there already changes nothing."""
    reversed_key = "ibkr:cash:77"
    # 23:30 in New York on New Year's Eve is 1 January in UTC.
    gone = wf_client.create_activity({
        "accountId": wf_account_id, "activityType": "DEPOSIT", "currency": "GBP",
        "activityDate": "2024-12-31T23:30:00-05:00", "amount": "10",
        "idempotencyKey": reversed_key})
    wf_warehouse.execute("create schema if not exists marts")
    wf_warehouse.execute("create table marts.activity_corrections (external_id varchar, "
                         "wf_account_id varchar, wf_activity_id varchar, reason varchar)")
    wf_warehouse.execute("insert into marts.activity_corrections values (?, ?, ?, 'reversed')",
                         [reversed_key, wf_account_id, gone.activity_id])
    there = wf_client.create_activity(build_payload(ActivityRow.from_mapping(
        {"wf_account_id": wf_account_id, **trade(3, activity_date=date(2020, 6, 1),
                                                 activity_at=datetime(2020, 6, 1, 10))})))
    assert there.status == "posted"
    mart([trade(1), cash(2, "DEPOSIT", "100"),
          trade(3, activity_date=date(2020, 6, 1), activity_at=datetime(2020, 6, 1, 10))])

    result = load_activities(wf_warehouse, wf_client, "run-1")
    assert (result.posted, result.already_present, result.corrected) == (
        ["ibkr:cash:2", "ibkr:trade:1"], ["ibkr:trade:3"], [reversed_key])
    assert result.touched_days == {date(2025, 1, 1), date(2025, 3, 14), date(2025, 3, 1)}
    # Nothing left to do: nothing touched.
    assert load_activities(wf_warehouse, wf_client, "run-2").touched_days == set()


@pytest.mark.parametrize(("stamp", "day"), [
    ("2025-03-14T23:30:00-04:00", date(2025, 3, 15)), ("2025-03-14T00:30:00+02:00",
                                                       date(2025, 3, 13)),
    ("2025-03-14T10:00:00Z", date(2025, 3, 14)), ("2025-03-14", date(2025, 3, 14)),
    ("14/03/2025", None), (None, None)])
def test_utc_day(stamp: Any, day: date | None) -> None:
    assert utc_day(stamp) == day


class StalePrecheck:
    """A client whose pre-check saw nothing (someone posted in between)."""

    def __init__(self, inner: WealthfolioClient) -> None:
        self.inner = inner

    def check_duplicates(self, keys: Iterable[str]) -> dict[str, str]:
        return {}

    def create_activity(self, payload: Mapping[str, Any]) -> CreateOutcome:
        return self.inner.create_activity(payload)


def test_duplicate_answer_is_already_present(mart: Callable[..., None], wf_account_id: str,
                                             wf_warehouse: duckdb.DuckDBPyConnection,
                                             wf_client: WealthfolioClient,
                                             fake_wealthfolio: FakeWealthfolio) -> None:
    mart([trade(1)])
    first = wf_client.create_activity(build_payload(ActivityRow.from_mapping(
        {"wf_account_id": wf_account_id, **trade(1)})))
    result = load_activities(wf_warehouse, StalePrecheck(wf_client), "r")
    assert result.already_present == ["ibkr:trade:1"]
    assert result.wf_activity_ids["ibkr:trade:1"] == first.activity_id
    assert ledger(wf_warehouse)[0][:3] == ("ibkr:trade:1", first.activity_id, "already_present")
    assert len(fake_wealthfolio.activities) == 1


def test_500_on_third_create_others_posted_and_rerun_completes(
        mart: Callable[..., None], wf_warehouse: duckdb.DuckDBPyConnection,
        make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio) -> None:
    mart([trade(n) for n in range(1, 6)])
    client = make_wf_client(max_attempts=3)
    fake_wealthfolio.fail_nth_create(3, times=3)  # the 3rd activity fails on every attempt
    result = load_activities(wf_warehouse, client, "run-1")
    assert result.posted == ["ibkr:trade:1", "ibkr:trade:2", "ibkr:trade:4", "ibkr:trade:5"]
    assert [(f.external_id, f.reason) for f in result.failed] == [
        ("ibkr:trade:3", "500 Internal Server Error")]
    assert summary_text(result) == (
        "posted 4, already there 0, failed 1: ibkr:trade:3 — 500 Internal Server Error")
    with pytest.raises(WealthfolioError) as info:
        raise_for_failures(result)
    assert info.value.exit_code == ExitCode.WEALTHFOLIO
    assert "ibkr:trade:3 — 500 Internal Server Error" in str(info.value)
    statuses = {r[0]: r[2] for r in ledger(wf_warehouse)}
    assert statuses["ibkr:trade:3"] == "failed" and len(statuses) == 5

    # The failed row stays pending: the next run posts exactly it, nothing else.
    plan = plan_activities(wf_warehouse)
    assert [a.row.external_id for a in plan.activities] == ["ibkr:trade:3"]
    again = load_activities(wf_warehouse, client, "run-2")
    assert again.posted == ["ibkr:trade:3"] and not again.failed
    keys = [a["idempotencyKey"] for a in fake_wealthfolio.activities.values()]
    assert sorted(keys) == [f"ibkr:trade:{n}" for n in range(1, 6)]  # each exactly once
    third = [r for r in ledger(wf_warehouse) if r[0] == "ibkr:trade:3"]
    assert [(r[2], r[4]) for r in third] == [("failed", "run-1"), ("posted", "run-2")]
    # A third run has nothing to do and makes no create call.
    creates = len(fake_wealthfolio.requests_to("POST", "/activities"))
    assert load_activities(wf_warehouse, client, "run-3") == LoadResult()
    assert len(fake_wealthfolio.requests_to("POST", "/activities")) == creates


def test_posted_ids_never_posted_again_even_if_deleted(
        mart: Callable[..., None], wf_warehouse: duckdb.DuckDBPyConnection,
        wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio) -> None:
    mart([trade(1)])
    load_activities(wf_warehouse, wf_client, "r1")
    fake_wealthfolio.activities.clear()
    fake_wealthfolio.idempotency.clear()  # a user deleted it in Wealthfolio
    assert load_activities(wf_warehouse, wf_client, "r2") == LoadResult()
    assert not fake_wealthfolio.activities


@pytest.mark.parametrize("drop", [False, True])
def test_lost_ack_is_retried_into_already_present(
        mart: Callable[..., None], wf_warehouse: duckdb.DuckDBPyConnection,
        wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio, drop: bool) -> None:
    mart([trade(1), trade(2), trade(3)])
    fake_wealthfolio.fail_nth_create(2, store=True, drop=drop)
    result = load_activities(wf_warehouse, wf_client, "r")
    assert result.posted == ["ibkr:trade:1", "ibkr:trade:3"]
    assert result.already_present == ["ibkr:trade:2"]
    stored = fake_wealthfolio.activity_by_key("ibkr:trade:2")
    assert stored is not None and result.wf_activity_ids["ibkr:trade:2"] == stored["id"]
    assert len(fake_wealthfolio.activities) == 3


def test_lost_ack_without_retries_converges_next_run(
        mart: Callable[..., None], wf_warehouse: duckdb.DuckDBPyConnection,
        make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio) -> None:
    mart([trade(1), trade(2)])
    client = make_wf_client(max_attempts=1)
    fake_wealthfolio.fail_nth_create(1, store=True)
    first = load_activities(wf_warehouse, client, "r1")
    assert [f.external_id for f in first.failed] == ["ibkr:trade:1"]
    second = load_activities(wf_warehouse, client, "r2")
    assert second.already_present == ["ibkr:trade:1"] and not second.posted
    assert len(fake_wealthfolio.activities) == 2
    assert posted_keys(fake_wealthfolio).count("ibkr:trade:1") == 1  # no second POST


class CrashingClient(StalePrecheck):
    def __init__(self, inner: WealthfolioClient, crash_on: int, error: BaseException) -> None:
        super().__init__(inner)
        self.calls, self.crash_on, self.error = 0, crash_on, error

    def create_activity(self, payload: Mapping[str, Any]) -> CreateOutcome:
        self.calls += 1
        if self.calls == self.crash_on:
            raise self.error
        return self.inner.create_activity(payload)


def test_the_ledger_is_written_in_batches_and_whenever_the_loop_stops(
        wf_warehouse: duckdb.DuckDBPyConnection) -> None:
    """One insert per LEDGER_COMMIT_ROWS activities, not one per answer (≈1 ms each); a
    kill loses at most the outcomes since the last insert, which Wealthfolio's
    idempotency keys recover (tests/reliability/test_crash_consistency.py)."""
    from flexsync.core.warehouse import ensure_schema
    from flexsync.loaders.ledger import LedgerBuffer

    ensure_schema(wf_warehouse)
    with pytest.raises(RuntimeError), LedgerBuffer(wf_warehouse, rows=2) as out:
        for n in range(1, 4):
            out.record(f"ibkr:trade:{n}", "posted", wf_activity_id=f"wf-{n}", run_id="r")
            out.activity_done()
            written = [row[0] for row in ledger(wf_warehouse)]
            assert written == (["ibkr:trade:1", "ibkr:trade:2"] if n >= 2 else [])
        out.record("ibkr:trade:4", "failed", error="bad", run_id="r")
        raise RuntimeError("killed")
    assert [(r[0], r[2]) for r in ledger(wf_warehouse)] == [
        ("ibkr:trade:1", "posted"), ("ibkr:trade:2", "posted"), ("ibkr:trade:3", "posted"),
        ("ibkr:trade:4", "failed")]


def test_ledger_written_when_the_posting_loop_is_interrupted(mart: Callable[..., None],
                                          wf_warehouse: duckdb.DuckDBPyConnection,
                                          wf_client: WealthfolioClient) -> None:
    mart([trade(n) for n in range(1, 5)])
    with pytest.raises(KeyboardInterrupt):
        load_activities(wf_warehouse, CrashingClient(wf_client, 3, KeyboardInterrupt()), "r")
    assert [(r[0], r[2]) for r in ledger(wf_warehouse)] == [
        ("ibkr:trade:1", "posted"), ("ibkr:trade:2", "posted")]


def test_wealthfolio_gone_mid_run_aborts_with_partial_result(
        mart: Callable[..., None], wf_warehouse: duckdb.DuckDBPyConnection,
        wf_client: WealthfolioClient) -> None:
    mart([trade(n) for n in range(1, 5)])
    gone = WealthfolioError("cannot reach Wealthfolio at http://x for POST /activities")
    with pytest.raises(LoadAborted) as info:
        load_activities(wf_warehouse, CrashingClient(wf_client, 2, gone), "r")
    assert info.value.exit_code == ExitCode.WEALTHFOLIO
    assert info.value.result.posted == ["ibkr:trade:1"]
    assert "stopped loading: posted 1, already there 0, failed 1" in str(info.value)
    assert [(r[0], r[2]) for r in ledger(wf_warehouse)] == [
        ("ibkr:trade:1", "posted"), ("ibkr:trade:2", "failed")]


def test_phantom_duplicate_from_precheck_is_not_trusted(
        mart: Callable[..., None], wf_warehouse: duckdb.DuckDBPyConnection,
        wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio) -> None:
    # "Already exists" naming an activity the account does not have (the index is
    # global): settling it would never post it here. It fails and stays pending.
    mart([trade(1)])
    phantom = fake_wealthfolio.add_phantom_duplicate("ibkr:trade:1")
    result = load_activities(wf_warehouse, wf_client, "r")
    assert result.already_present == [] and [f.external_id for f in result.failed] == [
        "ibkr:trade:1"]
    assert phantom in result.failed[0].reason
    assert not fake_wealthfolio.requests_to("POST", "/activities")
    fake_wealthfolio.phantom_duplicates.clear()
    assert load_activities(wf_warehouse, wf_client, "r2").posted == ["ibkr:trade:1"]


# ----------------------------------------------------------------------------- dry run


def test_dry_run_plan_makes_no_calls(mart: Callable[..., None],
                                     wf_warehouse: duckdb.DuckDBPyConnection,
                                     fake_wealthfolio: FakeWealthfolio) -> None:
    mart([trade(1), cash(9, "DEPOSIT", "5000.00"), trade(2, symbol=None)])
    plan = plan_activities(wf_warehouse)
    assert [a.row.external_id for a in plan.activities] == [
        "ibkr:cash:9", "ibkr:trade:1", "ibkr:trade:2"]
    assert len([a for a in plan.activities if a.payload is not None]) == 2
    buffer = io.StringIO()  # as `flexsync load --dry-run` prints it
    Console(file=buffer, width=140, no_color=True, highlight=False).print(plan.table())
    text = buffer.getvalue()
    for expected in ("date", "type", "symbol", "quantity", "price", "amount", "currency",
                     "external id", "2025-03-14", "BUY", "VOD.L", "0.712", "71.2", "GBP",
                     "ibkr:trade:1", "DEPOSIT", "5000", "cannot post"):
        assert expected in text, expected
    assert fake_wealthfolio.requests == []


# ----------------------------------------------------------------------------- secrets


def test_password_and_token_never_in_logs_or_tables(
        mart: Callable[..., None], wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection, make_wf_client: MakeClient,
        fake_wealthfolio: FakeWealthfolio, caplog: pytest.LogCaptureFixture) -> None:
    for name in (None, "httpx", "httpcore", "flexsync"):
        caplog.set_level(logging.DEBUG, logger=name)
    mart([trade(1), trade(2), cash(3, "DEPOSIT", "10")])
    client = make_wf_client()
    fake_wealthfolio.fail_nth_create(2, times=5)
    fake_wealthfolio.expire_sessions_on("POST", "/activities", skip=2)
    result = load_activities(wf_warehouse, client, "r")
    assert result.failed and result.posted
    snapshot_activities(wf_warehouse, client, wf_account_id, "r")
    tokens = list(fake_wealthfolio.sessions)
    assert tokens
    dumped = []
    for table in ("sync.posted_activities", "raw_wealthfolio.activities",
                  "raw_wealthfolio.snapshots"):
        dumped += [repr(r) for r in wf_warehouse.execute(f"select * from {table}").fetchall()]
    text = "\n".join(dumped) + caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert WF_TEST_PASSWORD not in text
    for token in tokens:
        assert token not in text


def test_settled_statuses_are_the_staging_models(repo_root: Path) -> None:
    """The ledger's settled statuses and dbt's is_in_wealthfolio are one rule: an id the
    loader skips is exactly an id the marts no longer offer to post."""
    sql = (repo_root / "models" / "staging" / "wealthfolio"
           / "stg_sync__posted_activities.sql").read_text()
    match = re.search(r"lower\(status\) in \(([^)]*)\) as is_in_wealthfolio", sql)
    assert match, "stg_sync__posted_activities no longer defines is_in_wealthfolio"
    statuses = tuple(s.strip().strip("'") for s in match.group(1).split(","))
    assert statuses == SETTLED_STATUSES

"""Wealthfolio snapshot → raw_wealthfolio.{snapshots,activities}, append-only."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb
import pytest

from extract.wealthfolio_snapshot import snapshot_activities
from loaders.wealthfolio_client import WealthfolioClient
from tests.fakes.fake_wealthfolio import FakeWealthfolio

MakeClient = Callable[..., WealthfolioClient]


def _post(client: WealthfolioClient, account_id: str, key: str, **extra: Any) -> str:
    body: dict[str, Any] = {
        "accountId": account_id, "activityType": "BUY", "activityDate": "2025-03-14T10:00:00Z",
        "currency": "GBP", "quantity": "100", "unitPrice": "0.7120", "fee": "3.00",
        "idempotencyKey": key, "sourceSystem": "IBKR", "sourceRecordId": key.split(":")[-1],
        "notes": "IBKR trade",
        "symbol": {"symbol": "VOD", "exchangeMic": "XLON", "quoteCcy": "GBp",
                   "instrumentType": "EQUITY"},
    }
    body.update(extra)
    outcome = client.create_activity(body)
    assert outcome.status == "posted", outcome
    assert outcome.activity_id
    return outcome.activity_id


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def test_snapshot_lands_every_activity_as_text(
        wf_client: WealthfolioClient, wf_account_id: str, wf_warehouse: duckdb.DuckDBPyConnection,
        fake_wealthfolio: FakeWealthfolio) -> None:
    buy_id = _post(wf_client, wf_account_id, "ibkr:trade:1")
    _post(wf_client, wf_account_id, "ibkr:cash:7", activityType="DEPOSIT", symbol=None,
          quantity=None, unitPrice=None, fee=None, amount="5000", notes=None)
    other = fake_wealthfolio.create_account("Other")["id"]
    _post(wf_client, other, "elsewhere")

    when = datetime(2025, 3, 15, 2, 0, tzinfo=UTC)
    result = snapshot_activities(wf_warehouse, wf_client, wf_account_id, "run-1", now=when)
    assert (result.row_count, result.total_row_count) == (2, 2)
    assert result.snapshot_at == datetime(2025, 3, 15, 2, 0)

    snaps = _rows(wf_warehouse, "select * from raw_wealthfolio.snapshots")
    assert snaps == [{"snapshot_id": result.snapshot_id, "snapshot_at": datetime(2025, 3, 15, 2),
                      "wf_account_id": wf_account_id, "run_id": "run-1",
                      "total_row_count": 2, "row_count": 2}]
    rows = {r["idempotency_key"]: r for r in _rows(
        wf_warehouse, "select * from raw_wealthfolio.activities")}
    assert set(rows) == {"ibkr:trade:1", "ibkr:cash:7"}
    buy = rows["ibkr:trade:1"]
    assert buy["_snapshot_id"] == result.snapshot_id
    assert buy["_snapshot_at"] == datetime(2025, 3, 15, 2, 0)
    assert buy["id"] == buy_id and buy["account_id"] == wf_account_id
    assert buy["activity_type"] == "BUY" and buy["status"] == "POSTED"
    assert buy["activity_date"] == "2025-03-14T10:00:00+00:00"
    assert (buy["quantity"], buy["unit_price"], buy["fee"], buy["amount"]) == (
        "100", "0.712", "3", "71.2")
    assert buy["asset_symbol"] == "VOD" and buy["exchange_mic"] == "XLON"
    assert buy["instrument_type"] == "EQUITY" and buy["currency"] == "GBP"
    assert (buy["source_system"], buy["source_record_id"]) == ("IBKR", "1")
    assert buy["comment"] == "IBKR trade"
    raw = json.loads(buy["raw_json"])
    assert raw["assetSymbol"] == "VOD" and raw["unitPrice"] == "0.712"
    assert raw["accountName"] == "IBKR ISA"
    cash = rows["ibkr:cash:7"]
    assert cash["asset_id"] == "" and cash["asset_symbol"] == "" and cash["amount"] == "5000"
    types = dict(wf_warehouse.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'raw_wealthfolio' and table_name = 'activities'").fetchall())
    assert types["quantity"] == "VARCHAR" and types["raw_json"] == "VARCHAR"


def test_empty_account_still_records_a_snapshot(
        wf_client: WealthfolioClient, wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection) -> None:
    result = snapshot_activities(wf_warehouse, wf_client, wf_account_id, None)
    assert result.row_count == 0
    assert wf_warehouse.execute(
        "select count(*), sum(row_count) from raw_wealthfolio.snapshots").fetchone() == (1, 0)
    assert wf_warehouse.execute(
        "select count(*) from raw_wealthfolio.activities").fetchone() == (0,)


def test_snapshots_append_and_page(
        make_wf_client: MakeClient, wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection, fake_wealthfolio: FakeWealthfolio) -> None:
    client = make_wf_client(page_size=2)
    for i in range(5):
        _post(client, wf_account_id, f"ibkr:trade:{i}")
    first = snapshot_activities(wf_warehouse, client, wf_account_id, "r1")
    _post(client, wf_account_id, "ibkr:trade:late")
    second = snapshot_activities(wf_warehouse, client, wf_account_id, "r2")
    assert first.snapshot_id != second.snapshot_id
    counts = dict(wf_warehouse.execute(
        "select _snapshot_id, count(*) from raw_wealthfolio.activities group by 1").fetchall())
    assert counts == {first.snapshot_id: 5, second.snapshot_id: 6}
    assert len(fake_wealthfolio.requests_to("POST", "/activities/search")) == 3 + 3
    assert wf_warehouse.execute(
        "select count(distinct id) from raw_wealthfolio.activities").fetchone() == (6,)


def test_failed_fetch_writes_nothing(
        wf_client: WealthfolioClient, wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection, fake_wealthfolio: FakeWealthfolio) -> None:
    fake_wealthfolio.error_storm(10, path="/activities/search")
    with pytest.raises(Exception, match="could not search activities"):
        snapshot_activities(wf_warehouse, wf_client, wf_account_id, "r")
    assert wf_warehouse.execute("select count(*) from raw_wealthfolio.snapshots").fetchone() == (
        0,)

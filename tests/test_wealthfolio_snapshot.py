"""Wealthfolio snapshot → raw_wealthfolio.{snapshots,activities}: append-only changes.

Every snapshot fetches every page and records a snapshots row; activities rows are
appended only for activities that are new, changed, or gone (tombstones). Updates
are made in the fake's in-memory store: the fake does not serve PUT /activities.
Deletes go through its DELETE /api/v1/activities/{id}.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from fakes.wealthfolio import FakeWealthfolio
from fakes.wealthfolio.activities import (
    FreshActivitySource,
    activity_details,
    dated_from,
    pages_of,
)
from flexsync.core import warehouse
from flexsync.core.errors import WarehouseError
from flexsync.core.warehouse import ensure_schema
from flexsync.extract.wealthfolio_snapshot import (
    COLUMN_FIELDS,
    LANDED_COLUMNS,
    _latest_versions_sql,
    _raw_json,
    _text,
    row_hash_sql,
    snapshot_activities,
)
from flexsync.loaders.wealthfolio_client import WealthfolioClient
from tests.helpers import REPO_ROOT
from tests.plugins.wealthfolio_fake import WF_TEST_PASSWORD

MakeClient = Callable[..., WealthfolioClient]
_ABSENT = object()  # a field Wealthfolio did not send
Delete = Callable[[str], None]


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


def _edit(fake: FakeWealthfolio, activity_id: str, **fields: Any) -> None:
    """A user's edit in Wealthfolio (the fake has no PUT /activities: edit its store)."""
    with fake.lock:
        record = fake.activities[activity_id]
        record.update(fields)
        record["updatedAt"] = record["updatedAt"] + timedelta(seconds=1)


@pytest.fixture
def wf_delete(fake_wealthfolio: FakeWealthfolio) -> Iterator[Delete]:
    """DELETE /api/v1/activities/{id} on the fake, as a user deleting in Wealthfolio."""
    with httpx.Client(base_url=fake_wealthfolio.base_url, timeout=2.0) as http:
        login = http.post("/api/v1/auth/login", json={"password": WF_TEST_PASSWORD})
        assert login.status_code == 200, login.text

        def delete(activity_id: str) -> None:
            answer = http.delete(f"/api/v1/activities/{activity_id}")
            assert answer.status_code == 200, answer.text

        yield delete


def _rows(con: duckdb.DuckDBPyConnection, sql: str,
          params: list[Any] | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def _appended(con: duckdb.DuckDBPyConnection, snapshot_id: str) -> list[dict[str, Any]]:
    return _rows(con, "select * from raw_wealthfolio.activities where _snapshot_id = ? "
                      "order by id", [snapshot_id])


def account_state_sql(account_param: str = "$account") -> str:
    """The current state of one account (its activities with an id), as the extractor
    diffs against it: one row per id with the landed columns (the product only needs
    the narrow `_latest_versions_sql`)."""
    columns = ", ".join(f"activities.{c}" for c in LANDED_COLUMNS)
    return f"""
        select {columns}, latest._snapshot_id, latest._row_hash
        from ({_latest_versions_sql(account_param)}) as latest
        inner join raw_wealthfolio.activities as activities
            on activities._snapshot_id = latest._snapshot_id and activities.id = latest.id
        where not latest._deleted
        qualify row_number() over (partition by latest.id order by activities._row_hash) = 1
    """


def _state(con: duckdb.DuckDBPyConnection, account_id: str) -> dict[str, str]:
    """{activity id: raw_json} of the account's state rebuilt from the warehouse."""
    return dict(con.execute(f"select id, raw_json from ({account_state_sql()})",
                            {"account": account_id}).fetchall())


def _wealthfolio_now(client: WealthfolioClient, account_id: str) -> dict[str, str]:
    return {row["id"]: _raw_json(row) for row in client.search_all(account_id).rows}


class _StubSource:
    """An ActivitySource without HTTP: what search_all would have returned."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def search_all(self, account_id: str,
                   on_page: Callable[[list[dict[str, Any]]], None] | None = None,
                   *, date_from: date | None = None) -> Any:
        return pages_of(dated_from(list(self.rows), date_from), on_page, page_size=2)



# ----------------------------------------------------------------------------- landing


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
    assert (result.row_count, result.total_row_count, result.activity_count) == (2, 2, 2)
    assert (result.new_count, result.changed_count, result.deleted_count) == (2, 0, 0)
    assert result.snapshot_at == datetime(2025, 3, 15, 2, 0)

    snaps = _rows(wf_warehouse, "select * from raw_wealthfolio.snapshots")
    assert snaps == [{"snapshot_id": result.snapshot_id, "snapshot_at": datetime(2025, 3, 15, 2),
                      "wf_account_id": wf_account_id, "run_id": "run-1",
                      "total_row_count": 2, "row_count": 2, "kind": "changes",
                      "activity_count": 2, "date_from": None}]
    rows = {r["idempotency_key"]: r for r in _rows(
        wf_warehouse, "select * from raw_wealthfolio.activities")}
    assert set(rows) == {"ibkr:trade:1", "ibkr:cash:7"}
    buy = rows["ibkr:trade:1"]
    assert buy["_snapshot_id"] == result.snapshot_id
    assert buy["_snapshot_at"] == datetime(2025, 3, 15, 2, 0)
    assert buy["id"] == buy_id and buy["account_id"] == wf_account_id
    assert buy["activity_type"] == "BUY" and buy["status"] == "POSTED"
    assert buy["activity_date"] == "2025-03-14T10:00:00+00:00"
    # text as stored, scale kept (docs/upstream.md#server-quirks)
    assert (buy["quantity"], buy["unit_price"], buy["fee"], buy["amount"]) == (
        "100", "0.7120", "3.00", "71.2000")
    assert buy["asset_symbol"] == "VOD" and buy["exchange_mic"] == "XLON"
    assert buy["instrument_type"] == "EQUITY" and buy["currency"] == "GBP"
    assert (buy["source_system"], buy["source_record_id"]) == ("IBKR", "1")
    assert buy["comment"] == "IBKR trade"
    assert buy["_deleted"] is False
    assert len(buy["_row_hash"]) == 32 and buy["_row_hash"] != rows["ibkr:cash:7"]["_row_hash"]
    raw = json.loads(buy["raw_json"])
    assert raw["assetSymbol"] == "VOD" and raw["unitPrice"] == "0.7120"
    assert raw["accountName"] == "IBKR ISA"
    cash = rows["ibkr:cash:7"]
    assert cash["asset_id"] == "" and cash["asset_symbol"] == "" and cash["amount"] == "5000"
    types = dict(wf_warehouse.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'raw_wealthfolio' and table_name = 'activities'").fetchall())
    assert types["quantity"] == "VARCHAR" and types["raw_json"] == "VARCHAR"
    assert types["_row_hash"] == "VARCHAR" and types["_deleted"] == "BOOLEAN"


def test_empty_account_still_records_a_snapshot(
        wf_client: WealthfolioClient, wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection) -> None:
    result = snapshot_activities(wf_warehouse, wf_client, wf_account_id, None)
    assert (result.row_count, result.activity_count) == (0, 0)
    assert wf_warehouse.execute(
        "select count(*), sum(row_count), min(kind) from raw_wealthfolio.snapshots"
    ).fetchone() == (1, 0, "changes")
    assert wf_warehouse.execute(
        "select count(*) from raw_wealthfolio.activities").fetchone() == (0,)


def test_failed_fetch_writes_nothing(
        wf_client: WealthfolioClient, wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection, fake_wealthfolio: FakeWealthfolio) -> None:
    _post(wf_client, wf_account_id, "ibkr:trade:1")
    fake_wealthfolio.error_storm(10, path="/activities/search")
    with pytest.raises(Exception, match="could not search activities"):
        snapshot_activities(wf_warehouse, wf_client, wf_account_id, "r")
    assert wf_warehouse.execute("select count(*) from raw_wealthfolio.snapshots").fetchone() == (
        0,)
    assert wf_warehouse.execute("select count(*) from raw_wealthfolio.activities").fetchone() == (
        0,)


# ----------------------------------------------------------------------------- changes only


def test_unchanged_account_appends_no_activity_rows(
        make_wf_client: MakeClient, wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection, fake_wealthfolio: FakeWealthfolio) -> None:
    client = make_wf_client(page_size=2)
    for i in range(5):
        _post(client, wf_account_id, f"ibkr:trade:{i}")
    first = snapshot_activities(wf_warehouse, client, wf_account_id, "r1")
    second = snapshot_activities(wf_warehouse, client, wf_account_id, "r2")

    assert first.snapshot_id != second.snapshot_id
    assert (first.row_count, second.row_count) == (5, 0)
    assert (second.activity_count, second.total_row_count) == (5, 5)
    assert len(fake_wealthfolio.requests_to("POST", "/activities/search")) == 3 + 3  # every page
    snaps = _rows(wf_warehouse, "select snapshot_id, run_id, row_count, activity_count, kind "
                                "from raw_wealthfolio.snapshots order by snapshot_at")
    assert snaps == [
        {"snapshot_id": first.snapshot_id, "run_id": "r1", "row_count": 5,
         "activity_count": 5, "kind": "changes"},
        {"snapshot_id": second.snapshot_id, "run_id": "r2", "row_count": 0,
         "activity_count": 5, "kind": "changes"},
    ]
    assert _appended(wf_warehouse, second.snapshot_id) == []
    assert _state(wf_warehouse, wf_account_id) == _wealthfolio_now(client, wf_account_id)


def test_new_edited_deleted_and_readded_activities(
        wf_client: WealthfolioClient, wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection, fake_wealthfolio: FakeWealthfolio,
        wf_delete: Delete) -> None:
    kept = _post(wf_client, wf_account_id, "ibkr:trade:1")
    edited = _post(wf_client, wf_account_id, "ibkr:trade:2")
    deleted = _post(wf_client, wf_account_id, "ibkr:trade:3")
    snapshot_activities(wf_warehouse, wf_client, wf_account_id, "r1")

    _edit(fake_wealthfolio, edited, quantity=Decimal("150"))
    late = _post(wf_client, wf_account_id, "ibkr:trade:4")
    wf_delete(deleted)
    second = snapshot_activities(wf_warehouse, wf_client, wf_account_id, "r2")

    assert (second.new_count, second.changed_count, second.deleted_count) == (1, 1, 1)
    assert (second.row_count, second.activity_count) == (3, 3)
    rows = {r["id"]: r for r in _appended(wf_warehouse, second.snapshot_id)}
    assert set(rows) == {edited, late, deleted}  # `kept` is not copied again
    assert rows[edited]["quantity"] == "150" and rows[edited]["_deleted"] is False
    assert rows[late]["_deleted"] is False
    tomb = rows[deleted]
    assert tomb["_deleted"] is True and tomb["account_id"] == wf_account_id
    assert tomb["idempotency_key"] == "ibkr:trade:3"  # the last version, for analysts
    assert set(_state(wf_warehouse, wf_account_id)) == {kept, edited, late}
    assert _state(wf_warehouse, wf_account_id) == _wealthfolio_now(wf_client, wf_account_id)

    # Re-adding: the key is free again in Wealthfolio; the new activity (new id) is new
    # to the warehouse too. A tombstoned id that reappears is appended again as well.
    readded = _post(wf_client, wf_account_id, "ibkr:trade:3")
    third = snapshot_activities(wf_warehouse, wf_client, wf_account_id, "r3")
    assert (third.new_count, third.changed_count, third.deleted_count) == (1, 0, 0)
    assert [r["id"] for r in _appended(wf_warehouse, third.snapshot_id)] == [readded]

    with fake_wealthfolio.lock:  # the same id back (e.g. an undo/restore in Wealthfolio)
        record = fake_wealthfolio.activities.pop(readded)
    assert snapshot_activities(wf_warehouse, wf_client, wf_account_id, "r4").deleted_count == 1
    with fake_wealthfolio.lock:
        fake_wealthfolio.activities[readded] = record
    fifth = snapshot_activities(wf_warehouse, wf_client, wf_account_id, "r5")
    assert (fifth.new_count, fifth.row_count) == (1, 1)
    assert readded in _state(wf_warehouse, wf_account_id)
    assert _state(wf_warehouse, wf_account_id) == _wealthfolio_now(wf_client, wf_account_id)
    # Append-only: every snapshot's rows are still there.
    assert wf_warehouse.execute("select count(*), count(*) filter (where _deleted) "
                                "from raw_wealthfolio.activities").fetchone() == (3 + 3 + 1 + 1
                                                                                   + 1, 2)


def test_a_repeated_row_is_landed_once_and_rows_without_id_every_time(
        wf_warehouse: duckdb.DuckDBPyConnection) -> None:
    a = {"id": "a", "accountId": "acc", "activityType": "BUY", "quantity": "1"}
    no_id = {"id": None, "accountId": "acc", "activityType": "FEE", "amount": "2"}
    source = _StubSource([a, dict(a), no_id])
    first = snapshot_activities(wf_warehouse, source, "acc", None)
    assert (first.row_count, first.activity_count, first.total_row_count) == (2, 2, 3)
    assert (first.new_count, first.unkeyed_count) == (1, 1)
    second = snapshot_activities(wf_warehouse, source, "acc", None)
    assert (second.row_count, second.unkeyed_count) == (1, 1)
    assert [r["activity_type"] for r in _appended(wf_warehouse, second.snapshot_id)] == ["FEE"]
    assert set(_state(wf_warehouse, "acc")) == {"a"}  # id-less rows are not diffed


def test_accounts_have_separate_states(wf_warehouse: duckdb.DuckDBPyConnection) -> None:
    one = _StubSource([{"id": "a", "accountId": "one"}])
    two = _StubSource([{"id": "b", "accountId": "two"}])
    snapshot_activities(wf_warehouse, one, "one", None)
    assert snapshot_activities(wf_warehouse, two, "two", None).deleted_count == 0
    assert snapshot_activities(wf_warehouse, one, "one", None).row_count == 0
    assert set(_state(wf_warehouse, "one")) == {"a"} and set(_state(wf_warehouse, "two")) == {"b"}


def test_a_clock_stepping_back_cannot_reorder_snapshots(
        wf_warehouse: duckdb.DuckDBPyConnection) -> None:
    source = _StubSource([{"id": "a", "quantity": "1"}])
    first = snapshot_activities(wf_warehouse, source, "acc", None,
                                now=datetime(2025, 3, 15, 2, tzinfo=UTC))
    source.rows = [{"id": "a", "quantity": "2"}]
    second = snapshot_activities(wf_warehouse, source, "acc", None,
                                 now=datetime(2025, 3, 14, 2, tzinfo=UTC))
    assert second.snapshot_at == first.snapshot_at + timedelta(microseconds=1)
    source.rows = []
    third = snapshot_activities(wf_warehouse, source, "acc", None,
                                now=datetime(2025, 3, 15, 2, tzinfo=UTC))
    assert third.snapshot_at > second.snapshot_at and third.deleted_count == 1
    assert _state(wf_warehouse, "acc") == {}


# ----------------------------------------------------------------------------- upgrade

OLD_DDL = """
create schema raw_wealthfolio;
create table raw_wealthfolio.snapshots (
    snapshot_id varchar primary key, snapshot_at timestamp not null, wf_account_id varchar,
    run_id varchar, total_row_count bigint, row_count bigint);
create table raw_wealthfolio.activities (
    _snapshot_id varchar not null, _snapshot_at timestamp not null, id varchar,
    account_id varchar, activity_type varchar, subtype varchar, status varchar,
    activity_date varchar, quantity varchar, unit_price varchar, amount varchar, fee varchar,
    currency varchar, asset_id varchar, asset_symbol varchar, exchange_mic varchar,
    instrument_type varchar, idempotency_key varchar, source_system varchar,
    source_record_id varchar, comment varchar, raw_json varchar);
"""


def _old_full_snapshot(con: duckdb.DuckDBPyConnection, snapshot_id: str, at: datetime,
                       account_id: str, rows: list[dict[str, Any]]) -> None:
    """What flexsync wrote before snapshots held changes only: every activity, no kind."""
    con.execute("insert into raw_wealthfolio.snapshots values (?, ?, ?, 'old-run', ?, ?)",
                [snapshot_id, at, account_id, len(rows), len(rows)])
    for row in rows:
        con.execute(
            "insert into raw_wealthfolio.activities values "
            f"(?, ?, {', '.join('?' for _ in COLUMN_FIELDS)}, ?)",
            [snapshot_id, at, *[_text(row.get(f)) for f in COLUMN_FIELDS.values()],
             _raw_json(row)])


def test_an_old_full_snapshot_is_the_state_to_diff_against(
        tmp_path: Path, wf_client: WealthfolioClient, wf_account_id: str,
        fake_wealthfolio: FakeWealthfolio, wf_delete: Delete) -> None:
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    try:
        con.execute(OLD_DDL)  # a warehouse from before the upgrade
        ids = [_post(wf_client, wf_account_id, f"ibkr:trade:{i}") for i in range(4)]
        stale = _post(wf_client, wf_account_id, "ibkr:trade:stale")
        _old_full_snapshot(con, "wf-old-1", datetime(2025, 1, 1), wf_account_id,
                           wf_client.search_all(wf_account_id).rows)
        wf_delete(stale)
        _old_full_snapshot(con, "wf-old-2", datetime(2025, 1, 2), wf_account_id,
                           wf_client.search_all(wf_account_id).rows)

        _edit(fake_wealthfolio, ids[0], fee=Decimal("9"))
        wf_delete(ids[1])
        new = _post(wf_client, wf_account_id, "ibkr:trade:new")
        result = snapshot_activities(con, wf_client, wf_account_id, "r-new",
                                     now=datetime(2025, 1, 3, tzinfo=UTC))

        # Migrated in place: old rows keep NULL kind / deleted and get their hash, the
        # one a snapshot computes for the same columns.
        assert con.execute("select kind, activity_count from raw_wealthfolio.snapshots "
                           "where snapshot_id = 'wf-old-2'").fetchone() == (None, None)
        assert con.execute(
            "select count(*) from raw_wealthfolio.activities where _snapshot_id like "
            f"'wf-old-%' and _deleted is null and _row_hash = {row_hash_sql('activities')}"
        ).fetchone() == (9,)
        # Diffed against wf-old-2 (not wf-old-1, which still had `stale`): the two
        # untouched activities are not copied again.
        assert (result.new_count, result.changed_count, result.deleted_count) == (1, 1, 1)
        assert {r["id"]: r["_deleted"] for r in _appended(con, result.snapshot_id)} == {
            new: False, ids[0]: False, ids[1]: True}
        assert _state(con, wf_account_id) == _wealthfolio_now(wf_client, wf_account_id)
        assert set(_state(con, wf_account_id)) == {ids[0], ids[2], ids[3], new}
        again = snapshot_activities(con, wf_client, wf_account_id, "r-again")
        assert again.row_count == 0
    finally:
        con.close()


# ------------------------------------------------------------------------------- window


def test_a_windowed_snapshot_compares_only_the_activities_from_its_day(
        wf_client: WealthfolioClient, wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection, fake_wealthfolio: FakeWealthfolio,
        wf_delete: Delete) -> None:
    def at(key: str, when: str) -> str:
        return _post(wf_client, wf_account_id, key, activityDate=when)

    old = at("ibkr:trade:1", "2025-01-02T10:00:00Z")
    margin_gone = at("ibkr:trade:2", "2025-03-11T10:00:00Z")  # 3 days before the window
    edge_gone = at("ibkr:trade:3", "2025-03-13T12:00:00Z")  # the day before it
    # 22:30 in New York on the 13th is the 14th in UTC: inside the window.
    late_ny = at("ibkr:trade:4", "2025-03-13T22:30:00-04:00")
    inside = at("ibkr:trade:5", "2025-03-14T10:00:00Z")
    snapshot_activities(wf_warehouse, wf_client, wf_account_id, "before")

    _edit(fake_wealthfolio, old, quantity=Decimal("7"))  # older than the window: unseen
    for gone in (margin_gone, edge_gone, late_ny):
        wf_delete(gone)
    _edit(fake_wealthfolio, inside, quantity=Decimal("150"))
    new = at("ibkr:trade:6", "2025-03-15T09:00:00Z")

    window = snapshot_activities(wf_warehouse, wf_client, wf_account_id, "after",
                                 from_day=date(2025, 3, 14))
    assert window.date_from == date(2025, 3, 14)
    # Asked from 2025-03-11: what is left there is `inside` and `new`.
    assert (window.activity_count, window.total_row_count) == (2, 2)
    assert (window.new_count, window.changed_count, window.deleted_count) == (1, 1, 2)
    appended = {r["id"]: r["_deleted"] for r in _appended(wf_warehouse, window.snapshot_id)}
    # Gone: those dated (as text) from the day before the window on. The one gone three
    # days before it was not looked for, and the edit of `old` was not seen.
    assert appended == {edge_gone: True, late_ny: True, inside: False, new: False}
    state = _state(wf_warehouse, wf_account_id)
    assert set(state) == {old, margin_gone, inside, new}
    assert json.loads(state[old])["quantity"] == "100"
    assert json.loads(state[inside])["quantity"] == "150"
    assert _rows(wf_warehouse, "select date_from, activity_count from raw_wealthfolio.snapshots "
                               "order by snapshot_at") == [
        {"date_from": None, "activity_count": 5}, {"date_from": date(2025, 3, 14),
                                                   "activity_count": 2}]
    # Every activity from the window's day on is as Wealthfolio has it.
    now = _wealthfolio_now(wf_client, wf_account_id)
    assert {k: v for k, v in state.items() if k in (inside, new)} == {
        k: v for k, v in now.items() if k in (inside, new)}

    # The next full snapshot catches up with what the window did not look at.
    full = snapshot_activities(wf_warehouse, wf_client, wf_account_id, "next night")
    assert (full.changed_count, full.deleted_count) == (1, 1)
    assert _state(wf_warehouse, wf_account_id) == now


def test_a_windowed_snapshot_refuses_rows_without_id(
        wf_warehouse: duckdb.DuckDBPyConnection) -> None:
    no_id = {"id": None, "accountId": "acc", "activityType": "FEE", "amount": "2",
             "date": "2025-03-14T10:00:00+00:00"}
    with pytest.raises(WarehouseError, match="without id"):
        snapshot_activities(wf_warehouse, _StubSource([no_id]), "acc", None,
                            from_day=date(2025, 3, 14))
    assert wf_warehouse.execute("select count(*) from raw_wealthfolio.snapshots").fetchone() == (
        0,)


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_state_matches_wealthfolio_after_random_changes(
        seed: int, wf_client: WealthfolioClient, wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection, fake_wealthfolio: FakeWealthfolio,
        wf_delete: Delete) -> None:
    rng = random.Random(seed)
    live: list[str] = []
    serial = 0
    versions = 0  # rows the snapshots should append in total
    changed: set[str] = set()
    known: set[str] = set()
    for _ in range(12):
        for _ in range(rng.randint(0, 4)):
            action = rng.choice(["create", "create", "update", "delete"]) if live else "create"
            if action == "create":
                serial += 1
                live.append(_post(wf_client, wf_account_id, f"ibkr:trade:{seed}-{serial}",
                                  quantity=str(rng.randint(1, 500))))
            elif action == "update":
                target = rng.choice(live)
                _edit(fake_wealthfolio, target, quantity=Decimal(rng.randint(501, 999)),
                      notes=rng.choice([None, "edited", "edited again"]))
                changed.add(target)
            else:
                wf_delete(live.pop(rng.randrange(len(live))))
        result = snapshot_activities(wf_warehouse, wf_client, wf_account_id, None)
        now = _wealthfolio_now(wf_client, wf_account_id)
        assert _state(wf_warehouse, wf_account_id) == now
        # An edit always changes updatedAt, so every edited survivor is a new version.
        assert (result.new_count, result.changed_count, result.deleted_count) == (
            len(set(now) - known), len(changed & known & set(now)), len(known - set(now)))
        versions += result.row_count
        known = set(now)
        changed.clear()
    assert wf_warehouse.execute("select count(*) from raw_wealthfolio.activities").fetchone() == (
        versions,)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_windowed_snapshots_keep_the_state_when_changes_are_inside_the_window(
        seed: int, wf_client: WealthfolioClient, wf_account_id: str,
        wf_warehouse: duckdb.DuckDBPyConnection, fake_wealthfolio: FakeWealthfolio,
        wf_delete: Delete) -> None:
    """As after a load: every change is dated on or after the earliest day it touched
    (any offset); a snapshot from that day on leaves the state equal to Wealthfolio."""
    rng = random.Random(seed)
    start = date(2025, 1, 1)

    def stamp(day: date) -> str:
        offset = rng.choice(["Z", "+14:00", "-12:00", "-04:00", "+01:00"])
        return f"{day.isoformat()}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00{offset}"

    def utc_day(activity_id: str) -> date:
        with fake_wealthfolio.lock:
            return fake_wealthfolio.activities[activity_id]["activityDate"].astimezone(UTC).date()

    live: list[str] = []
    for serial in range(40):
        live.append(_post(wf_client, wf_account_id, f"ibkr:trade:{seed}-{serial}",
                          activityDate=stamp(start + timedelta(days=rng.randint(0, 60)))))
    snapshot_activities(wf_warehouse, wf_client, wf_account_id, None)
    serial = 40
    for _ in range(8):
        touched: list[date] = []
        for _ in range(rng.randint(1, 5)):
            action = rng.choice(["create", "update", "delete"])
            if action == "create":
                serial += 1
                live.append(_post(wf_client, wf_account_id, f"ibkr:trade:{seed}-{serial}",
                                  activityDate=stamp(start + timedelta(days=rng.randint(0, 70)))))
                touched.append(utc_day(live[-1]))
            elif action == "update":
                target = rng.choice(live)
                touched.append(utc_day(target))
                _edit(fake_wealthfolio, target, quantity=Decimal(rng.randint(501, 999)))
            else:
                target = live.pop(rng.randrange(len(live)))
                touched.append(utc_day(target))
                wf_delete(target)
        snapshot_activities(wf_warehouse, wf_client, wf_account_id, None,
                            from_day=min(touched))
        assert _state(wf_warehouse, wf_account_id) == _wealthfolio_now(wf_client, wf_account_id)


# ----------------------------------------------------------------------------- size


def test_fifteen_thousand_activities_are_fast_and_restore_the_memory_limit(
        tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "big.duckdb"))
    try:
        con.execute("set memory_limit = '2GiB'")
        before = con.execute("select current_setting('memory_limit')").fetchall()[0][0]
        source = FreshActivitySource(15_000)
        start = time.monotonic()
        first = snapshot_activities(con, source, "acc", None)
        source.edits[7] = {"quantity": "1000000"}
        source.deleted.add(8)
        second = snapshot_activities(con, source, "acc", None)
        third = snapshot_activities(con, source, "acc", None)
        elapsed = time.monotonic() - start
        limit = con.execute("select current_setting('memory_limit')").fetchall()[0][0]
    finally:
        con.close()
    assert (first.row_count, second.row_count, third.row_count) == (15_000, 2, 0)
    assert (second.changed_count, second.deleted_count) == (1, 1)
    assert elapsed < 20, f"three snapshots of 15,000 activities took {elapsed:.1f}s"
    assert limit == before  # the caller's setting is back


def test_sixty_thousand_new_activities_append_within_the_snapshot_memory_limit(
        tmp_path: Path) -> None:
    """The first snapshot after a backfill sync finds ≈60,000 new activities: appended in
    one transaction they ran out of the snapshot's DuckDB memory (SNAPSHOT_MEMORY_LIMIT),
    the run failed after posting, and so did every night after it. Batches fit."""
    con = duckdb.connect(str(tmp_path / "big.duckdb"))
    try:
        source = FreshActivitySource(60_000)
        first = snapshot_activities(con, source, "acc", None)
        source.deleted.update(range(0, 60_000, 2))  # half deleted: 30,000 tombstones
        second = snapshot_activities(con, source, "acc", None)
        state = con.execute("select count(*) from raw_wealthfolio.activity_state_versions "
                            "where is_current and not coalesce(_deleted, false)").fetchone()
    finally:
        con.close()
    assert (first.new_count, first.row_count) == (60_000, 60_000)
    assert (second.deleted_count, second.row_count) == (30_000, 30_000)
    assert state == (30_000,)


def test_fx_rate_and_account_currency_are_copied_out_of_the_json(
        wf_warehouse: duckdb.DuckDBPyConnection) -> None:
    """The state view reads no JSON: fxRate and accountCurrency land as columns of their
    own, exactly what json_extract_string gives on the stored raw_json (a string, a
    number, null, absent), and a tombstone keeps the last version's."""
    def row(i: int, **fields: Any) -> dict[str, Any]:
        details = activity_details(i) | fields
        return {k: v for k, v in details.items() if v is not _ABSENT}

    rows = [row(0, fxRate="1.2345", accountCurrency="EUR"),
            row(1, fxRate=Decimal("0.86"), accountCurrency="USD"),
            row(2, fxRate=None, accountCurrency=None),
            row(3, fxRate=_ABSENT, accountCurrency=_ABSENT),
            row(4, fxRate=True, accountCurrency="GBP")]
    first = snapshot_activities(wf_warehouse, _StubSource(rows), "acc", None)
    second = snapshot_activities(wf_warehouse, _StubSource(rows[1:]), "acc", None)
    assert (first.new_count, second.deleted_count) == (5, 1)
    landed = wf_warehouse.execute(
        "select id, _deleted, fx_rate, account_currency, "
        "json_extract_string(raw_json, '$.fxRate'), "
        "json_extract_string(raw_json, '$.accountCurrency') "
        "from raw_wealthfolio.activities order by id, _deleted").fetchall()
    assert len(landed) == 6
    for _, _, fx_rate, currency, json_fx_rate, json_currency in landed:
        assert (fx_rate, currency) == (json_fx_rate, json_currency)
    assert [(r[2], r[3]) for r in landed] == [
        ("1.2345", "EUR"), ("1.2345", "EUR"), ("0.86", "USD"), (None, None), (None, None),
        ("true", "GBP")]
    assert [r[1] for r in landed][:2] == [False, True]  # activity 0's tombstone


def _as_before_the_copied_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Turn a warehouse back into one landed before fx_rate / account_currency were columns:
    no such columns, hashes by the rule of then (the COLUMN_FIELDS and raw_json), and the
    state view that read both from raw_json."""
    con.execute("drop view raw_wealthfolio.activity_state_versions")
    con.execute("alter table raw_wealthfolio.activities drop column fx_rate")
    con.execute("alter table raw_wealthfolio.activities drop column account_currency")
    parts = ", ".join(f"coalesce(cast(strlen(a.{c}) as varchar) || ':' || a.{c}, '~')"
                      for c in (*COLUMN_FIELDS, "raw_json"))
    con.execute(f"update raw_wealthfolio.activities as a set _row_hash = md5(concat_ws('|', "
                f"{parts}))")
    con.execute("create view raw_wealthfolio.activity_state_versions as "
                "select *, json_extract_string(raw_json, '$.fxRate') as fx_rate, "
                "json_extract_string(raw_json, '$.accountCurrency') as account_currency "
                "from raw_wealthfolio.activities")


def test_an_older_warehouse_gets_the_copied_columns_filled_and_no_new_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warehouse snapshotted before fx_rate / account_currency were columns: ensure_schema
    adds and fills them from raw_json in one transaction (a fill that fails leaves them to
    be added again, never present and empty), and the next snapshot of the same activities
    appends nothing (the copied fields are not hashed)."""
    rows = [activity_details(0) | {"fxRate": "1.5", "accountCurrency": "EUR"},
            activity_details(1)]
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    try:
        snapshot_activities(con, _StubSource(rows), "acc", None)
        _as_before_the_copied_columns(con)
        with monkeypatch.context() as patch:
            patch.setattr(warehouse, "_FILL_JSON_COPIED_COLUMNS", "select error('disk full')")
            with pytest.raises(duckdb.Error, match="disk full"):
                ensure_schema(con)
        columns = {c for (c,) in con.execute(
            "select column_name from information_schema.columns where table_schema = "
            "'raw_wealthfolio' and table_name = 'activities'").fetchall()}
        assert not columns & {"fx_rate", "account_currency"}
        ensure_schema(con)
        filled = con.execute("select fx_rate, account_currency from raw_wealthfolio.activities "
                             "order by id").fetchall()
        state = con.execute("select count(*) from raw_wealthfolio.activity_state_versions "
                            "where is_current").fetchall()
        again = snapshot_activities(con, _StubSource(rows), "acc", None)
    finally:
        con.close()
    assert filled == [("1.5", "EUR"), (None, "GBP")]
    assert state == [(2,)]
    assert again.row_count == 0


def test_a_snapshot_killed_while_appending_leaves_nothing_visible(
        wf_warehouse: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are committed one by one and the snapshot's header row last: rows whose
    header never came belong to no snapshot (the state does not see them), and the next
    snapshot removes them before it diffs."""
    import flexsync.extract.wealthfolio_snapshot as module

    monkeypatch.setattr(module, "SPOOL_FILE_ROWS", 3)
    source = _StubSource([activity_details(i) for i in range(7)])
    real_insert = module._insert_sql

    def dies_on_the_second_batch(spool_file: str | None, changes: str, batch: int) -> str:
        if batch == 1:
            raise KeyboardInterrupt  # as a SIGTERM or Ctrl-C mid-append
        return real_insert(spool_file, changes, batch)

    monkeypatch.setattr(module, "_insert_sql", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        snapshot_activities(wf_warehouse, source, "acc", None)
    assert wf_warehouse.execute(
        "select count(*) from raw_wealthfolio.activities").fetchone() == (3,)  # batch 0
    assert wf_warehouse.execute(
        "select count(*) from raw_wealthfolio.activity_state_versions").fetchone() == (0,)
    assert wf_warehouse.execute("select count(*) from raw_wealthfolio.snapshots").fetchone() \
        == (0,)

    monkeypatch.setattr(module, "_insert_sql", real_insert)
    result = snapshot_activities(wf_warehouse, source, "acc", None)
    assert (result.new_count, result.row_count) == (7, 7)
    assert wf_warehouse.execute(
        "select count(*), count(distinct _snapshot_id) from raw_wealthfolio.activities"
    ).fetchone() == (7, 1)
    assert set(_state(wf_warehouse, "acc")) == {activity_details(i)["id"] for i in range(7)}


_PEAK_RSS_CHILD = """
import sys
from pathlib import Path
import duckdb
sys.path.insert(0, ".")
from flexsync.extract.wealthfolio_snapshot import snapshot_activities
from fakes.wealthfolio.activities import FreshActivitySource
con = duckdb.connect(str(Path(sys.argv[1]) / "rss.duckdb"))
source = FreshActivitySource(15_000)
for night in range(4):
    source.edits[night] = {"comment": f"edited {night}"}
    snapshot_activities(con, source, "acc", None)
con.close()
# VmHWM: this process's own peak (ru_maxrss would include the parent's at fork).
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def test_fifteen_thousand_activities_stay_well_under_the_pod_memory(tmp_path: Path) -> None:
    """Peak RSS (the kernel's VmHWM, in KiB) of a process taking four snapshots of
    15,000 activities: the pod has 256 MiB for Python, dbt and DuckDB together."""
    probe = subprocess.run([sys.executable, "-c", _PEAK_RSS_CHILD, str(tmp_path)],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                           check=False)
    assert probe.returncode == 0, probe.stderr[-2000:]
    peak_mib = int(probe.stdout.split()[-1]) / 1024
    assert peak_mib < 200, f"peak RSS {peak_mib:.0f} MiB"


def test_state_view_rebuilds_each_account_from_its_full_and_later_snapshots(
        wf_warehouse: duckdb.DuckDBPyConnection) -> None:
    """The one home of the current-state rule (raw_wealthfolio.activity_state_versions):
    the latest full snapshot (kind NULL, as written before changes-only snapshots: f1; the
    older full f0 and the changes snapshot c0 before f1 are not read) plus the later
    'changes' snapshots, newest version per id — a1 updated in c1, a2 tombstoned in c1 and
    re-added in c2, a3 tombstoned in c2, a4 new in c2 — and the id-less rows of the latest
    snapshot (c3) only. acc2 never had a full snapshot: all its snapshots make its state.
    dbt's staging model reads the same view, so it shows the same rows."""
    snapshots = [("f0", "2025-01-01", "acc", None), ("c0", "2025-01-15", "acc", "changes"),
                 ("f1", "2025-02-01", "acc", None), ("c1", "2025-03-01", "acc", "changes"),
                 ("c2", "2025-04-01", "acc", "changes"), ("c3", "2025-05-01", "acc", "changes"),
                 ("d1", "2025-03-01", "acc2", "changes"), ("d2", "2025-06-01", "acc2", "changes")]
    for snapshot_id, at, account, kind in snapshots:
        wf_warehouse.execute(
            "insert into raw_wealthfolio.snapshots (snapshot_id, snapshot_at, wf_account_id, "
            "kind) values (?, ?, ?, ?)", [snapshot_id, at, account, kind])
    versions = [  # (snapshot, id, account, quantity, comment, deleted)
        ("f0", "a0", "acc", "1", "gone-before-f1", None),
        ("c0", "a9", "acc", "9", "before-f1", None),
        ("f1", "a1", "acc", "10", None, None), ("f1", "a2", "acc", "100", None, None),
        ("f1", "a3", "acc", "5", None, None), ("f1", None, "acc", None, "no-id-f1", None),
        ("c1", "a1", "acc", "12", None, False), ("c1", "a2", "acc", "100", None, True),
        ("c1", None, "acc", None, "no-id-c1", False), ("c2", "a2", "acc", "150", None, False),
        ("c2", "a3", "acc", "5", None, True), ("c2", "a4", "acc", "2", None, False),
        ("c2", None, "acc", None, "no-id-c2", False), ("c3", None, "acc", None, "no-id-c3", False),
        ("d1", "b1", "acc2", "1", None, False), ("d1", "b2", "acc2", "3", None, False),
        ("d2", "b1", "acc2", "2", None, False),
    ]
    for snapshot_id, activity_id, account, quantity, comment, deleted in versions:
        wf_warehouse.execute(
            "insert into raw_wealthfolio.activities (_snapshot_id, _snapshot_at, id, account_id,"
            " quantity, comment, _deleted, raw_json) values (?, now(), ?, ?, ?, ?, ?, ?)",
            [snapshot_id, activity_id, account, quantity, comment, deleted,
             json.dumps([snapshot_id, activity_id, comment])])
    current = wf_warehouse.execute(
        "select state_account_id, id, _snapshot_id, state_snapshot_id, quantity, comment "
        "from raw_wealthfolio.activity_state_versions "
        "where is_current and not coalesce(_deleted, false) order by all").fetchall()
    assert current == [
        ("acc", "a1", "c1", "c3", "12", None),
        ("acc", "a2", "c2", "c3", "150", None),
        ("acc", "a4", "c2", "c3", "2", None),
        ("acc", None, "c3", "c3", None, "no-id-c3"),
        ("acc2", "b1", "d2", "d2", "2", None),
        ("acc2", "b2", "d1", "d2", "3", None),
    ]

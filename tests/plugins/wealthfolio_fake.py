"""Fixtures for the fake Wealthfolio server and clients pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from fakes.wealthfolio import FakeWealthfolio
from flexsync.core.warehouse import ensure_schema
from flexsync.loaders.wealthfolio_client import WealthfolioClient

WF_TEST_PASSWORD = "wf-fixture-Pa55word!"


class SleepRecorder:
    """An injectable sleep that records instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    @property
    def total(self) -> float:
        return sum(self.calls)


@pytest.fixture
def fake_wealthfolio() -> Iterator[FakeWealthfolio]:
    """A running fake (v3.1 login shape) with one GBP account in TRANSACTIONS mode."""
    with FakeWealthfolio(WF_TEST_PASSWORD) as fake:
        fake.create_account("IBKR ISA", "GBP")
        yield fake


@pytest.fixture
def wf_account_id(fake_wealthfolio: FakeWealthfolio) -> str:
    return next(iter(fake_wealthfolio.accounts))


@pytest.fixture
def wf_sleep() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def wf_session_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "wf-session.json"


@pytest.fixture
def make_wf_client(
    fake_wealthfolio: FakeWealthfolio, wf_session_path: Path, wf_sleep: SleepRecorder,
) -> Iterator[Callable[..., WealthfolioClient]]:
    """Build clients for the fake: short timeouts, recorded sleeps, a tmp session cache."""
    clients: list[WealthfolioClient] = []

    def make(**overrides: Any) -> WealthfolioClient:
        options: dict[str, Any] = {
            "session_path": wf_session_path, "timeout": 2.0, "sleep": wf_sleep,
            "max_attempts": 3,
        }
        options.update(overrides)
        base_url = options.pop("base_url", fake_wealthfolio.base_url)
        password = options.pop("password", WF_TEST_PASSWORD)
        client = WealthfolioClient(base_url, password, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def wf_client(make_wf_client: Callable[..., WealthfolioClient]) -> WealthfolioClient:
    return make_wf_client()


# ----------------------------------------------------------------------------- warehouse side

ACTIVITIES_TO_POST_DDL = """
create schema if not exists marts;
create or replace table marts.activities_to_post (
    external_id varchar, wf_account_id varchar, broker_account_id varchar, source varchar,
    source_id varchar, activity_type varchar, subtype varchar, activity_at timestamp,
    activity_date date, symbol varchar, exchange_mic varchar, quote_currency varchar,
    quantity decimal(18, 6), unit_price decimal(18, 6), amount decimal(18, 4),
    fee decimal(18, 4), currency varchar, description varchar, instrument_type varchar,
    ticker varchar
)
"""
MART_COLUMNS = (
    "external_id", "wf_account_id", "broker_account_id", "source", "source_id",
    "activity_type", "subtype", "activity_at", "activity_date", "symbol", "exchange_mic",
    "quote_currency", "quantity", "unit_price", "amount", "fee", "currency", "description",
    "instrument_type", "ticker",
)


def write_activities_to_post(con: duckdb.DuckDBPyConnection,
                             rows: list[dict[str, Any]]) -> None:
    """Stand-in for the dbt mart (docs/analysts.md#marts): same columns, DECIMAL money."""
    con.execute(ACTIVITIES_TO_POST_DDL)
    for row in rows:
        con.execute(
            f"insert into marts.activities_to_post ({', '.join(MART_COLUMNS)}) "
            f"values ({', '.join('?' for _ in MART_COLUMNS)})",
            [row.get(c) for c in MART_COLUMNS],
        )


@pytest.fixture
def wf_warehouse(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A scratch warehouse with the raw/sync schemas (flexsync.core.warehouse.ensure_schema)."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    ensure_schema(con)
    try:
        yield con
    finally:
        con.close()

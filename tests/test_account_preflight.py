"""Account preflight (issue 14, docs/upstream.md#accounts): an account that would
swallow activities stops the load before anything is posted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import duckdb
import pytest

from fakes.wealthfolio import FakeWealthfolio
from flexsync.core.errors import ExitCode
from flexsync.loaders.account_preflight import (
    AccountPreflightError,
    check_accounts,
    statement_base_currencies,
)
from flexsync.loaders.wealthfolio_client import WealthfolioClient

MakeClient = Callable[..., WealthfolioClient]


def test_a_usable_account_passes(fake_wealthfolio: FakeWealthfolio, wf_account_id: str,
                                 make_wf_client: MakeClient) -> None:
    check_accounts(make_wf_client(), {wf_account_id: "U1234567"}, {"U1234567": "GBP"})
    not_set = fake_wealthfolio.create_account("Old", "GBP", tracking_mode="NOT_SET")
    check_accounts(make_wf_client(), {not_set["id"]: None})  # NOT_SET is rebuilt too


@pytest.mark.parametrize(("setup", "expected"), [
    ("holdings", "tracks HOLDINGS"),
    ("archived", "is archived"),
    ("inactive", "is inactive"),
    ("missing", "does not exist in Wealthfolio"),
])
def test_an_account_that_would_swallow_activities_is_refused(
        fake_wealthfolio: FakeWealthfolio, make_wf_client: MakeClient,
        setup: str, expected: str) -> None:
    good = fake_wealthfolio.create_account("Usable", "GBP")
    if setup == "missing":
        target = "00000000-0000-0000-0000-000000000000"
    else:
        account = fake_wealthfolio.create_account(
            "Target", "GBP", tracking_mode="HOLDINGS" if setup == "holdings" else "TRANSACTIONS",
            archived=setup == "archived")
        if setup == "inactive":
            fake_wealthfolio.accounts[account["id"]]["isActive"] = False
        target = account["id"]
    with pytest.raises(AccountPreflightError) as caught:
        check_accounts(make_wf_client(), {target: "U1234567"})
    message = str(caught.value)
    assert expected in message and target in message and "U1234567" in message
    assert caught.value.exit_code == ExitCode.WEALTHFOLIO
    if setup == "missing":  # says which accounts would do
        assert good["id"] in message
    else:
        assert "Settings → Accounts" in message


def test_currency_other_than_the_statement_base_is_a_warning(
        fake_wealthfolio: FakeWealthfolio, make_wf_client: MakeClient,
        caplog: pytest.LogCaptureFixture) -> None:
    account = fake_wealthfolio.create_account("USD account", "USD")
    with caplog.at_level(logging.WARNING, logger="flexsync.wealthfolio"):
        check_accounts(make_wf_client(), {account["id"]: "U1234567"}, {"U1234567": "GBP"})
    assert any("is in USD but IBKR account U1234567 reports in GBP" in r.getMessage()
               for r in caplog.records)


def test_base_currency_is_the_latest_account_information(tmp_path: object) -> None:
    con = duckdb.connect()
    assert statement_base_currencies(con) == {}  # section never landed
    con.execute("create schema raw_ibkr")
    con.execute('create table raw_ibkr.account_information ("accountId" varchar, '
                "currency varchar, _extracted_at timestamp)")
    con.execute("insert into raw_ibkr.account_information values "
                "('U1', 'USD', ?), ('U1', 'GBP', ?), ('U2', 'EUR', ?)",
                [datetime(2025, 1, 1), datetime(2025, 6, 1), datetime(2025, 1, 1)])
    assert statement_base_currencies(con) == {"U1": "GBP", "U2": "EUR"}

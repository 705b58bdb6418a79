"""Cash drift end to end: a Flex statement with a per-currency CashReport in → marts.cash_drift
and `ibkr_cash_drift{currency,account}` in a real Pushgateway, through the real CLI, DuckDB
and dbt, against the fake Wealthfolio over loopback. The Wealthfolio side is checked
against the Python copy of Wealthfolio's rules (tests/fakes/wealthfolio_rules.py), so the
SQL rules (int_wealthfolio__cash_balances) and the Python rules must agree."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.fake_wealthfolio import FakeWealthfolio
from tests.fakes.wealthfolio_rules import wealthfolio_books
from tests.helpers import DEMO_STATEMENT, query, run_cli
from tests.plugins.pushgateway import RunningPushgateway

PASSWORD = "cash-Wf-Pa55word"
TEN_PLACES = Decimal("1e-10")

# IBKR's cash at the statement's end, per currency (CHF: a currency Wealthfolio never saw).
ENDING_CASH = {"GBP": Decimal("6543.21"), "USD": Decimal("-2000.00"),
               "EUR": Decimal("-2500.50"), "CHF": Decimal("50")}


@pytest.fixture
def wf() -> Iterator[FakeWealthfolio]:
    with FakeWealthfolio(PASSWORD) as fake:
        fake.create_account("IBKR ISA", "GBP")
        yield fake


def _account(fake: FakeWealthfolio) -> str:
    return next(iter(fake.accounts))


def _statement(tmp_path: Path) -> Path:
    """The demo statement with a CashReport broken out per currency."""
    rows = ['<CashReportCurrency accountId="U1234567" currency="BASE_SUMMARY" '
            'levelOfDetail="BaseCurrency" fromDate="20260824" toDate="20261120" '
            'startingCash="0" endingCash="3540.11" />']
    rows += [f'<CashReportCurrency accountId="U1234567" currency="{ccy}" '
             f'levelOfDetail="Currency" fromDate="20260824" toDate="20261120" '
             f'startingCash="0" endingCash="{amount}" />'
             for ccy, amount in ENDING_CASH.items()]
    text = DEMO_STATEMENT.read_text()
    start, end = text.index("<CashReport>"), text.index("</CashReport>")
    path = tmp_path / "statement_with_cash.xml"
    path.write_text(text[:start] + "<CashReport>\n" + "\n".join(rows) + "\n" + text[end:])
    return path


def _env(fake: FakeWealthfolio, data_dir: Path, push: RunningPushgateway) -> dict[str, str]:
    return {"IBKR_ACCOUNT_ID_UPSTREAM": "U1234567", "IBKR_ACCOUNT_ID": _account(fake),
            "WF_BASE_URL": fake.base_url, "WF_PASSWORD": PASSWORD,
            "WF_SESSION_PATH": str(data_dir / "wf-session.json"), "PUSHGATEWAY_URL": push.url,
            "FLEXSYNC_HTTP_TIMEOUT_SECONDS": "5"}


def _sync(statement: Path, data_dir: Path, env: dict[str, str]) -> None:
    result = run_cli(["sync", "--flex-file", str(statement)], data_dir, **env)
    assert result.returncode == 0, result.stderr


def _drift_rows(data_dir: Path) -> dict[str, tuple[Any, ...]]:
    rows = query(data_dir, "select currency, broker_cash, wf_cash, drift, broker_account_id "
                 "from marts.cash_drift")
    return {r[0]: r[1:] for r in rows}


def _pushed(push: RunningPushgateway) -> dict[str, float]:
    samples = push.samples("ibkr_cash_drift")
    assert all(s.labels["account"] and s.labels["job"] == "broker-sync-ibkr" for s in samples)
    return {s.labels["currency"]: s.value for s in samples}


def _post(fake: FakeWealthfolio, **body: Any) -> None:
    """POST one activity as a user would (logged in once per fake: the login is limited)."""
    tokens = fake.__dict__.setdefault("_test_tokens", [])
    with httpx.Client(base_url=fake.base_url + "/api/v1", timeout=5) as http:
        if not tokens:
            login = http.post("/auth/login", json={"password": PASSWORD})
            tokens.append(login.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1])
        payload = {"accountId": _account(fake), "currency": "GBP", **body}
        response = http.post("/activities", json=payload,
                             headers={"Authorization": f"Bearer {tokens[0]}"})
        assert response.status_code == 200, response.text


def _assert_drift_matches_the_rules(fake: FakeWealthfolio, data_dir: Path,
                                    push: RunningPushgateway) -> dict[str, Decimal]:
    books = wealthfolio_books(fake, _account(fake)).cash
    rows = _drift_rows(data_dir)
    currencies = {c for c, v in books.items() if v != 0} | {
        c for c, v in ENDING_CASH.items() if v != 0}
    assert set(rows) == currencies
    drift: dict[str, Decimal] = {}
    for ccy, (broker, wf_cash, row_drift, account) in rows.items():
        expected_wf = books.get(ccy, Decimal(0)).quantize(TEN_PLACES)
        assert wf_cash == expected_wf, ccy  # SQL rules == Python rules
        assert broker == ENDING_CASH.get(ccy, Decimal(0)), ccy
        assert row_drift == broker - wf_cash, ccy
        assert account == "U1234567"
        drift[ccy] = row_drift
    assert _pushed(push) == {c: float(d) for c, d in drift.items()}
    return drift


def test_cash_drift_from_cash_report_to_pushgateway(
        wf: FakeWealthfolio, pushgateway: RunningPushgateway, data_dir: Path,
        tmp_path: Path) -> None:
    statement = _statement(tmp_path)
    env = _env(wf, data_dir, pushgateway)
    _sync(statement, data_dir, env)

    books = wealthfolio_books(wf, _account(wf)).cash
    # The demo's trades spent USD and EUR that only the CashReport knows were there.
    assert books["USD"] < 0 and books["EUR"] < 0 and books["GBP"] > 0
    drift = _assert_drift_matches_the_rules(wf, data_dir, pushgateway)
    assert drift["CHF"] == Decimal(50)  # IBKR holds it, Wealthfolio never saw it

    # A pre-history balance: an opening entry in Wealthfolio clears the drift (a DEPOSIT
    # of what IBKR held beyond Wealthfolio's cash, a WITHDRAWAL if it held less).
    kind = "DEPOSIT" if drift["GBP"] > 0 else "WITHDRAWAL"
    _post(wf, activityType=kind, activityDate="2026-08-01", amount=str(abs(drift["GBP"])))
    _post(wf, activityType="DEPOSIT", activityDate="2026-08-01", currency="CHF", amount="50")
    _sync(statement, data_dir, env)
    after = _assert_drift_matches_the_rules(wf, data_dir, pushgateway)
    assert after["GBP"] == 0 and after["CHF"] == 0
    assert after["USD"] == drift["USD"]

    runs = query(data_dir, "select count(distinct run_id), count(*) from marts.cash_drift_history")
    assert runs[0][0] == 2 and runs[0][1] == 2 * len(after)

    status = run_cli(["status"], data_dir, IBKR_ACCOUNT_ID=_account(wf))
    assert status.returncode == 0, status.stderr
    assert "Cash drift" in status.stdout and "CHF" in status.stdout


def test_sql_and_python_cash_rules_agree_on_every_activity_type(
        wf: FakeWealthfolio, pushgateway: RunningPushgateway, data_dir: Path,
        tmp_path: Path) -> None:
    """Activities of every kind entered by hand beside flexsync's: the SQL books the same
    cash per currency as the Python rules (splits with rounding, charges, transfers, an
    FX conversion pair, a trade with an fxRate, DRIP, non-POSTED rows)."""
    xyz = {"symbol": "XYZ", "exchangeMic": "XNAS", "quoteCcy": "USD"}
    fund = {"symbol": "FND", "exchangeMic": "XLON", "quoteCcy": "GBP"}
    day = "2026-0{}-1{}T12:00:00+00:00".format
    for body in (
        {"activityType": "BUY", "activityDate": day(1, 1), "currency": "USD", "symbol": xyz,
         "quantity": "7", "unitPrice": "1.123456789", "fee": "0.35"},
        {"activityType": "SPLIT", "activityDate": day(2, 1), "currency": "USD",
         "symbol": xyz, "amount": "3"},
        {"activityType": "SELL", "activityDate": day(3, 1), "currency": "USD", "symbol": xyz,
         "quantity": "5", "unitPrice": "0.41", "fee": "0.1"},
        {"activityType": "DEPOSIT", "activityDate": day(1, 2), "amount": "500", "fee": "1"},
        {"activityType": "WITHDRAWAL", "activityDate": day(1, 3), "amount": "20", "fee": "0.5"},
        {"activityType": "FEE", "activityDate": day(1, 4), "amount": "9", "fee": "2"},
        {"activityType": "TAX", "activityDate": day(1, 4), "amount": "3"},
        {"activityType": "CREDIT", "activityDate": day(1, 5), "amount": "4", "fee": "1"},
        {"activityType": "TRANSFER_OUT", "activityDate": day(4, 1), "amount": "100",
         "fee": "1.25", "sourceGroupId": "fx-1"},
        {"activityType": "TRANSFER_IN", "activityDate": day(4, 1), "currency": "USD",
         "amount": "126.55", "sourceGroupId": "fx-1"},
        {"activityType": "TRANSFER_IN", "activityDate": day(4, 2), "symbol": fund,
         "quantity": "10", "unitPrice": "3", "fee": "0.7"},
        {"activityType": "BUY", "activityDate": day(4, 3), "currency": "USD", "symbol": xyz,
         "quantity": "2", "unitPrice": "10", "fxRate": "0.8"},
        {"activityType": "DIVIDEND", "activityDate": day(4, 4), "subtype": "DRIP",
         "symbol": fund, "amount": "6", "quantity": "2", "unitPrice": "2.5"},
        {"activityType": "INTEREST", "activityDate": day(4, 5), "amount": "1000",
         "status": "PENDING"},
        {"activityType": "DEPOSIT", "activityDate": day(4, 5), "currency": "JPY",
         "amount": "1000", "status": "DRAFT"},
    ):
        _post(wf, **body)
    _sync(_statement(tmp_path), data_dir, _env(wf, data_dir, pushgateway))
    _assert_drift_matches_the_rules(wf, data_dir, pushgateway)
    assert "JPY" not in _drift_rows(data_dir)

"""Cash drift end to end: a Flex statement with a per-currency CashReport in → marts.cash_drift
and `ibkr_cash_drift{currency,account}` in a real Pushgateway, through the real CLI, DuckDB
and dbt, against the fake Wealthfolio over loopback. The Wealthfolio side is checked
against the Python copy of Wealthfolio's rules (fakes/wealthfolio/rules.py), so the
SQL rules (int_wealthfolio__cash_balances) and the Python rules must agree."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.wealthfolio import FakeWealthfolio
from fakes.wealthfolio.rules import wealthfolio_books
from tests.helpers import DEMO_STATEMENT, query, run_cli
from tests.plugins.pushgateway import RunningPushgateway

PASSWORD = "cash-Wf-Pa55word"
TEN_PLACES = Decimal("1e-10")

# IBKR's cash at the statement's end, per currency (CHF: a currency Wealthfolio never saw).
ENDING_CASH = {"GBP": Decimal("6543.21"), "USD": Decimal("-2000.00"),
               "EUR": Decimal("-2500.50"), "CHF": Decimal("50")}
# A second IBKR account's (IBKR_ACCOUNT_MAP): other figures, JPY only it holds.
SECOND_ENDING_CASH = {"GBP": Decimal("4700.10"), "USD": Decimal("-2314.00"),
                      "EUR": Decimal("-2604.25"), "JPY": Decimal("1000")}


@pytest.fixture
def wf() -> Iterator[FakeWealthfolio]:
    with FakeWealthfolio(PASSWORD) as fake:
        fake.create_account("IBKR ISA", "GBP")
        yield fake


def _account(fake: FakeWealthfolio) -> str:
    return next(iter(fake.accounts))


def _cash_report(text: str, account: str, ending: Mapping[str, Decimal]) -> str:
    """`text` (one or more statements) with its first CashReport broken out per currency."""
    rows = [f'<CashReportCurrency accountId="{account}" currency="BASE_SUMMARY" '
            'levelOfDetail="BaseCurrency" fromDate="20260824" toDate="20261120" '
            'startingCash="0" endingCash="3540.11" />']
    rows += [f'<CashReportCurrency accountId="{account}" currency="{ccy}" '
             f'levelOfDetail="Currency" fromDate="20260824" toDate="20261120" '
             f'startingCash="0" endingCash="{amount}" />'
             for ccy, amount in ending.items()]
    start, end = text.index("<CashReport>"), text.index("</CashReport>")
    return text[:start] + "<CashReport>\n" + "\n".join(rows) + "\n" + text[end:]


def _statement(tmp_path: Path) -> Path:
    """The demo statement with a CashReport broken out per currency."""
    path = tmp_path / "statement_with_cash.xml"
    path.write_text(_cash_report(DEMO_STATEMENT.read_text(), "U1234567", ENDING_CASH))
    return path


def _two_account_statement(tmp_path: Path) -> Path:
    """The demo statement (U1234567, ENDING_CASH) plus a second IBKR account's copy
    (U7654321: its own ids, a larger VUAG buy, SECOND_ENDING_CASH)."""
    text = DEMO_STATEMENT.read_text()
    start, end = text.index("<FlexStatement "), text.index("</FlexStatements>")
    first = _cash_report(text[start:end], "U1234567", ENDING_CASH)
    second = re.sub(r'(tradeID|transactionID)="(\d+)"',
                    lambda m: f'{m.group(1)}="{int(m.group(2)) + 100000}"',
                    text[start:end].replace('accountId="U1234567"', 'accountId="U7654321"'))
    # 60 VUAG for 5529.35: a unit price (proceeds / quantity) that does not terminate.
    second = second.replace('quantity="40"', 'quantity="60"').replace(
        'proceeds="-3686.2" netCash="-3689.2"', 'proceeds="-5529.35" netCash="-5532.35"')
    second = _cash_report(second, "U7654321", SECOND_ENDING_CASH)
    path = tmp_path / "two_accounts_with_cash.xml"
    path.write_text((text[:start] + first + second + text[end:]).replace(
        '<FlexStatements count="1">', '<FlexStatements count="2">'))
    return path


def _env(fake: FakeWealthfolio, data_dir: Path, push: RunningPushgateway) -> dict[str, str]:
    return {"IBKR_ACCOUNT_ID_UPSTREAM": "U1234567", "IBKR_ACCOUNT_ID": _account(fake),
            "WF_BASE_URL": fake.base_url, "WF_PASSWORD": PASSWORD,
            "WF_SESSION_PATH": str(data_dir / "wf-session.json"), "PUSHGATEWAY_URL": push.url,
            "FLEXSYNC_HTTP_TIMEOUT_SECONDS": "5"}


def _sync(statement: Path, data_dir: Path, env: dict[str, str]) -> None:
    result = run_cli(["sync", "--flex-file", str(statement)], data_dir, **env)
    assert result.returncode == 0, result.stderr


def _drift_rows(data_dir: Path, wf_account_id: str | None = None
                ) -> dict[str, tuple[Any, ...]]:
    rows = query(data_dir, "select currency, broker_cash, wf_cash, drift, broker_account_id "
                 "from marts.cash_drift where ?::varchar is null or wf_account_id = ?",
                 [wf_account_id, wf_account_id])
    return {r[0]: r[1:] for r in rows}


def _pushed(push: RunningPushgateway, account: str | None = None) -> dict[str, float]:
    """ibkr_cash_drift per currency (of one `account` label when given)."""
    samples = push.samples("ibkr_cash_drift")
    assert all(s.labels["account"] and s.labels["job"] == "broker-sync-ibkr" for s in samples)
    return {s.labels["currency"]: s.value for s in samples
            if account is None or s.labels["account"] == account}


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


def _assert_drift_matches_the_rules(
        fake: FakeWealthfolio, data_dir: Path, push: RunningPushgateway,
        wf_account_id: str | None = None, ibkr_account: str = "U1234567",
        ending: Mapping[str, Decimal] = ENDING_CASH, label: str | None = None,
) -> dict[str, Decimal]:
    """One Wealthfolio account's cash drift (the first account by default): its rows in
    marts.cash_drift and its `ibkr_cash_drift` series (under `label` when given)."""
    account = wf_account_id or _account(fake)
    books = wealthfolio_books(fake, account).cash
    rows = _drift_rows(data_dir, account)
    currencies = {c for c, v in books.items() if v != 0} | {
        c for c, v in ending.items() if v != 0}
    assert set(rows) == currencies
    drift: dict[str, Decimal] = {}
    for ccy, (broker, wf_cash, row_drift, broker_account) in rows.items():
        expected_wf = books.get(ccy, Decimal(0)).quantize(TEN_PLACES)
        assert wf_cash == expected_wf, ccy  # SQL rules == Python rules
        assert broker == ending.get(ccy, Decimal(0)), ccy
        assert row_drift == broker - wf_cash, ccy
        assert broker_account == ibkr_account
        drift[ccy] = row_drift
    assert _pushed(push, label) == {c: float(d) for c, d in drift.items()}
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


def test_cash_drift_per_wealthfolio_account_with_account_map(
        wf: FakeWealthfolio, pushgateway: RunningPushgateway, data_dir: Path,
        tmp_path: Path) -> None:
    """IBKR_ACCOUNT_MAP: each IBKR account's CashReport is compared with the cash of the
    Wealthfolio account it feeds (not their total), and each account's drift is pushed
    under its own `account` label."""
    isa = _account(wf)
    gia = wf.create_account("IBKR GIA", "GBP")["id"]
    # Cash entered by hand in the second account only: it must not leak into the first.
    _post(wf, accountId=gia, activityType="DEPOSIT", activityDate="2026-08-01",
          currency="EUR", amount="100")
    env = {**_env(wf, data_dir, pushgateway),
           "IBKR_ACCOUNT_MAP": f"U1234567={isa},U7654321={gia}"}
    del env["IBKR_ACCOUNT_ID"], env["IBKR_ACCOUNT_ID_UPSTREAM"]
    _sync(_two_account_statement(tmp_path), data_dir, env)

    first = _assert_drift_matches_the_rules(wf, data_dir, pushgateway, isa, "U1234567",
                                            ENDING_CASH, label="U1234567")
    second = _assert_drift_matches_the_rules(wf, data_dir, pushgateway, gia, "U7654321",
                                             SECOND_ENDING_CASH, label="U7654321")
    assert "JPY" in second and "JPY" not in first
    assert "CHF" in first and "CHF" not in second
    # The accounts' Wealthfolio cash differs (the GIA's VUAG buy cost 5532.35, the ISA's
    # 3689.2; the hand-entered EUR deposit), so a mix-up of the two cannot pass.
    isa_cash, gia_cash = wealthfolio_books(wf, isa).cash, wealthfolio_books(wf, gia).cash
    assert isa_cash["GBP"] - gia_cash["GBP"] == Decimal("5532.35") - Decimal("3689.2")
    assert gia_cash["EUR"] - isa_cash["EUR"] == Decimal(100)
    assert {s.labels["account"] for s in pushgateway.samples("ibkr_cash_drift")} == {
        "U1234567", "U7654321"}

    history = query(data_dir, "select wf_account_id, count(*) from marts.cash_drift_history "
                    "group by 1")
    assert dict(history) == {isa: len(first), gia: len(second)}

    status = run_cli(["status"], data_dir, IBKR_ACCOUNT_MAP=env["IBKR_ACCOUNT_MAP"])
    assert status.returncode == 0, status.stderr
    cash_section = status.stdout[status.stdout.index("Cash drift"):]
    assert "U1234567" in cash_section and "U7654321" in cash_section
    assert "JPY" in cash_section and "CHF" in cash_section

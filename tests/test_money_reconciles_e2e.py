"""The money reconciles: a quarter of IBKR activity synced into the fake Wealthfolio, then
Wealthfolio's books recomputed by Wealthfolio's own rules (fakes/wealthfolio/rules,
docs/upstream.md#cash-rules) from what the fake stores — cash per currency, quantity per symbol,
dividend income — and compared with IBKR's own figures (CashReport, OpenPositions, the
net of the dividend rows). Real CLI, DuckDB, dbt and HTTP on loopback.

The statement (tests/fixtures/flex/ledger_quarter.py) holds a deposit, a GBP→USD
conversion with commission, an LSE buy with stamp duty, a US buy, a dividend with
withholding, its reversal and rebook, a 4-for-1 split then a sale, a fee, interest and a
withdrawal. It arrives as one quarter, and as two overlapping windows where the reversal
comes after the original dividend was posted (Wealthfolio is corrected through its API).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fakes.wealthfolio import FakeWealthfolio
from fakes.wealthfolio.rules import Books, income_by_symbol, wealthfolio_books
from tests.fixtures.flex import ledger_quarter as quarter
from tests.helpers import query, run_cli

PASSWORD = "ledger-Wf-Pa55word"
QUARTER = ("2025-01-01", "2025-03-31")
FIRST_WINDOW = ("2025-01-01", "2025-02-28")
SECOND_WINDOW = ("2025-02-01", "2025-03-31")
WRITES = (("POST", "/api/v1/activities"), ("PUT", "/api/v1/activities"))


@pytest.fixture
def wf() -> Iterator[FakeWealthfolio]:
    with FakeWealthfolio(PASSWORD) as fake:
        fake.create_account("IBKR GIA", "GBP")
        yield fake


def _account(fake: FakeWealthfolio) -> str:
    return next(iter(fake.accounts))


def _write(tmp_path: Path, window: tuple[str, str]) -> Path:
    path = tmp_path / f"ledger_{window[0]}_{window[1]}.xml"
    path.write_text(quarter.statement(*window))
    return path


def _sync(fake: FakeWealthfolio, data_dir: Path, statement: Path) -> None:
    result = run_cli(
        ["sync", "--flex-file", str(statement)], data_dir,
        IBKR_ACCOUNT_ID_UPSTREAM=quarter.ACCOUNT, IBKR_ACCOUNT_ID=_account(fake),
        WF_BASE_URL=fake.base_url, WF_PASSWORD=PASSWORD,
        WF_SESSION_PATH=str(data_dir / "wf-session.json"), PUSHGATEWAY_URL="",
        FLEXSYNC_HTTP_TIMEOUT_SECONDS="5")
    assert result.returncode == 0, result.stderr


def _writes(fake: FakeWealthfolio) -> int:
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    return sum(len(fake.requests_to(m, p)) for m, p in WRITES) + len(deletes)


def _by_symbol(values: dict[str, Decimal]) -> dict[str, Decimal]:
    """"VOD@XLON" -> "VOD": OpenPositions name symbols without the venue."""
    out: dict[str, Decimal] = {}
    for key, value in values.items():
        symbol = key.split("@", 1)[0].removesuffix(".L")
        out[symbol] = out.get(symbol, Decimal(0)) + value
    return out


def _instant(record: dict[str, Any]) -> str:
    """The stored activityDate (an instant) in UTC, RFC 3339."""
    moment = record["activityDate"]
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return str(moment.astimezone(UTC).isoformat())


def _assert_books_equal_ibkr(fake: FakeWealthfolio, first: tuple[str, str],
                             last: tuple[str, str]) -> Books:
    books = wealthfolio_books(fake, _account(fake))
    starting = quarter.CASH_REPORT[first]
    ending = quarter.CASH_REPORT[last]
    moved = {ccy: ending[ccy][1] - starting[ccy][0] for ccy in ending}
    assert books.cash == {c: v for c, v in moved.items() if v != 0}
    assert _by_symbol(books.quantities) == quarter.OPEN_POSITIONS[last[1]]
    return books


def test_one_quarter_books_exactly_what_ibkr_reports(
        wf: FakeWealthfolio, data_dir: Path, tmp_path: Path) -> None:
    _sync(wf, data_dir, _write(tmp_path, QUARTER))

    _assert_books_equal_ibkr(wf, QUARTER, QUARTER)
    income = income_by_symbol(wf, _account(wf))
    assert _by_symbol(income.dividends) == quarter.NET_DIVIDENDS  # only the net is posted
    posted_keys = {r["idempotencyKey"] for r in wf.activities.values()}
    assert "ibkr:cash:5002" not in posted_keys and "ibkr:cash:5005" not in posted_keys
    # The conversion: two transfers sharing a sourceGroupId, and the commission.
    fx = {r["idempotencyKey"]: r for r in wf.activities.values()
          if (r["idempotencyKey"] or "").startswith("ibkr:fx:7001")}
    assert {k: (v["activityType"], v["currency"], Decimal(str(v["amount"])))
            for k, v in fx.items()} == {
        "ibkr:fx:7001:out": ("TRANSFER_OUT", "GBP", Decimal("4000")),
        "ibkr:fx:7001:in": ("TRANSFER_IN", "USD", Decimal("5000")),
        "ibkr:fx:7001:fee": ("FEE", "GBP", Decimal("1.5")),
    }
    assert fx["ibkr:fx:7001:out"]["sourceGroupId"] == fx["ibkr:fx:7001:in"]["sourceGroupId"]
    # Stamp duty counted once: in the VOD purchase's fee, not again as a TAX.
    vod = wf.activity_by_key("ibkr:trade:7002")
    assert vod is not None and Decimal(str(vod["fee"])) == Decimal("6.6")
    assert not [r for r in wf.activities.values() if (r["idempotencyKey"] or "")
                .startswith("ibkr:tax:")]
    # The late US trade keeps its London wall-clock time and offset (winter: +00:00).
    aapl = wf.activity_by_key("ibkr:trade:7003")
    assert aapl is not None and _instant(aapl) == "2025-01-07T21:30:00+00:00"
    # A correction booked on 3 March is dated 3 March, at local noon.
    rebook = wf.activity_by_key("ibkr:cash:5007")
    assert rebook is not None and _instant(rebook) == "2025-03-03T12:00:00+00:00"

    before = _writes(wf)
    _sync(wf, data_dir, _write(tmp_path, QUARTER))
    assert _writes(wf) == before  # a repeated sync changes nothing
    _assert_books_equal_ibkr(wf, QUARTER, QUARTER)


def test_two_windows_with_the_reversal_after_the_original_was_posted(
        wf: FakeWealthfolio, data_dir: Path, tmp_path: Path) -> None:
    _sync(wf, data_dir, _write(tmp_path, FIRST_WINDOW))
    _assert_books_equal_ibkr(wf, FIRST_WINDOW, FIRST_WINDOW)
    original = wf.activity_by_key("ibkr:cash:5002")
    assert original is not None  # the dividend, before IBKR reversed it

    _sync(wf, data_dir, _write(tmp_path, SECOND_WINDOW))
    _assert_books_equal_ibkr(wf, FIRST_WINDOW, SECOND_WINDOW)
    assert wf.activity_by_key("ibkr:cash:5002") is None  # corrected through the API
    assert [r.path for r in wf.requests if r.method == "DELETE"] == [
        f"/api/v1/activities/{original['id']}"]
    income = income_by_symbol(wf, _account(wf))
    assert _by_symbol(income.dividends) == quarter.NET_DIVIDENDS
    ledger = query(data_dir, "select status, wf_activity_id, error from sync.posted_activities "
                   "where external_id = 'ibkr:cash:5002' order by recorded_at")
    assert [r[0] for r in ledger] == ["posted", "deleted"]
    assert ledger[1][1] == original["id"] and "reversed" in ledger[1][2]
    # The look after that load fetched only the days it touched, and still saw the deletion:
    # the warehouse's Wealthfolio state (what the drift reads) is Wealthfolio's.
    state = query(data_dir, "select wf_activity_id from staging.stg_wealthfolio__activities")
    assert sorted(r[0] for r in state) == sorted(a["id"] for a in wf.activities_for(_account(wf)))
    looks = query(data_dir, "select date_from from raw_wealthfolio.snapshots "
                            "order by snapshot_at")
    assert looks[-1][0] is not None

    before = _writes(wf)
    _sync(wf, data_dir, _write(tmp_path, SECOND_WINDOW))
    _sync(wf, data_dir, _write(tmp_path, QUARTER))  # the whole quarter again: still nothing
    assert _writes(wf) == before
    _assert_books_equal_ibkr(wf, FIRST_WINDOW, SECOND_WINDOW)


def test_a_correction_never_touches_an_activity_flexsync_did_not_post(
        wf: FakeWealthfolio, data_dir: Path, tmp_path: Path) -> None:
    _sync(wf, data_dir, _write(tmp_path, FIRST_WINDOW))
    original = wf.activity_by_key("ibkr:cash:5002")
    assert original is not None
    with wf.lock:  # a user re-keys the activity by hand: it is no longer flexsync's
        record: dict[str, Any] = wf.activities[original["id"]]
        del wf.idempotency[record["idempotencyKey"]]
        record["idempotencyKey"] = "manual-entry"
        wf.idempotency["manual-entry"] = record["id"]

    result = run_cli(
        ["sync", "--flex-file", str(_write(tmp_path, SECOND_WINDOW))], data_dir,
        IBKR_ACCOUNT_ID_UPSTREAM=quarter.ACCOUNT, IBKR_ACCOUNT_ID=_account(wf),
        WF_BASE_URL=wf.base_url, WF_PASSWORD=PASSWORD,
        WF_SESSION_PATH=str(data_dir / "wf-session.json"), PUSHGATEWAY_URL="",
        FLEXSYNC_HTTP_TIMEOUT_SECONDS="5")
    assert result.returncode == 5, result.stderr
    assert "flexsync only changes what it posted" in result.stderr
    assert original["id"] in wf.activities
    assert not [r for r in wf.requests if r.method == "DELETE"]

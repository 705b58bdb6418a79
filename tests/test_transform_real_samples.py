"""Every real statement in ../shared/samples/flex-real builds: extract all, transform once.

The files are anonymised exports from other projects' test suites (AEST zones, MULTI
dates, SUMMARY+DETAIL cash, LOT positions, GBX-free LSE ETFs, cancellations, FX, options,
futures, CFDs, warrants, funds ...). Landing them together into one warehouse is the
stricter test: identifiers of different files meet in the same models.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from flexsync.cli import app

pytestmark = pytest.mark.real_samples


@dataclass
class Samples:
    data_dir: Path
    files: list[Path]
    output: str

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.data_dir / "warehouse.duckdb"), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()


def _accounts(files: list[Path]) -> list[str]:
    accounts: dict[str, None] = {}
    for path in files:
        for statement in ET.parse(path).getroot().iter("FlexStatement"):
            accounts[statement.get("accountId", "")] = None
    return list(accounts)


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Samples]:
    from tests.plugins.common import SHARED_SAMPLES

    if not SHARED_SAMPLES.is_dir():
        pytest.skip(f"../shared is absent: {SHARED_SAMPLES} not found")
    files = sorted(SHARED_SAMPLES.glob("*.xml"))
    root = tmp_path_factory.mktemp("transform_samples")
    env = {
        "BROKER_SYNC_DATA_DIR": str(root / "data"),
        "IBKR_ACCOUNT_ID_UPSTREAM": ",".join(_accounts(files)),
        "IBKR_ACCOUNT_ID": "wf-samples",
        "DBT_TARGET_PATH": str(root / "dbt-target"),
        "DBT_LOG_PATH": str(root / "dbt-logs"),
        "DO_NOT_TRACK": "1",
        "WF_BASE_URL": "",
    }
    runner = CliRunner()
    args = ["extract"]
    for path in files:
        args += ["--flex-file", str(path)]
    extract = runner.invoke(app, args, env=env, catch_exceptions=False)
    assert extract.exit_code == 0, extract.output
    transform = runner.invoke(app, ["transform"], env=env, catch_exceptions=False)
    assert transform.exit_code == 0, f"dbt build failed on the real samples:\n{transform.output}"
    yield Samples(root / "data", files, transform.output)


def test_every_sample_landed_and_built(samples: Samples) -> None:
    assert samples.rows("select count(*) from raw_ibkr.extracts")[0][0] == len(samples.files)
    assert "dbt build ok" in samples.output
    assert samples.rows("select count(*) from marts.fct_activities")[0][0] > 100


def test_only_execution_and_detail_rows_reach_staging(samples: Samples) -> None:
    levels = {r[0] for r in samples.rows(
        "select distinct level_of_detail from staging.stg_ibkr__trades")}
    assert levels <= {"EXECUTION", None}
    cash_levels = {r[0] for r in samples.rows(
        "select distinct level_of_detail from staging.stg_ibkr__cash_transactions")}
    assert cash_levels <= {"DETAIL", None}
    position_levels = {r[0] for r in samples.rows(
        "select distinct level_of_detail from staging.stg_ibkr__open_positions")}
    assert position_levels <= {"SUMMARY", None}


def test_every_execution_with_a_transaction_id_is_staged(samples: Samples) -> None:
    staged = {(r[0], r[1]) for r in samples.rows(
        "select broker_account_id, transaction_id from staging.stg_ibkr__trades")}
    for path in samples.files:
        for statement in ET.parse(path).getroot().iter("FlexStatement"):
            account = statement.get("accountId")
            for trade in statement.iter("Trade"):
                level = trade.get("levelOfDetail") or "EXECUTION"
                tx = (trade.get("transactionID") or "").strip()
                if level == "EXECUTION" and tx not in ("", "0"):
                    assert (account, tx) in staged, f"{path.name}: trade tx {tx} not staged"


def test_lse_etf_sample_is_canonical_and_priced_from_proceeds(samples: Samples) -> None:
    # IBKR's proceeds (1366.52) are quantity × price rounded to the penny: the unit price
    # is what was really paid, so Wealthfolio's cash is IBKR's netCash.
    row = samples.rows(
        "select symbol, exchange_mic, currency, quantity, unit_price, fee, "
        "quantity * unit_price + fee from marts.fct_activities "
        "where external_id = 'ibkr:trade:1252050191'")
    assert [tuple(map(str, r[:6])) for r in row] == [
        ("EQQQ.L", "XLON", "GBP", "3.0000000000", "455.5066666666", "3.0000000002")]
    assert abs(row[0][6] - Decimal("1369.52")) < Decimal("1e-9")


def test_rows_without_ids_and_unsupported_categories_are_listed(samples: Samples) -> None:
    reasons = {r[0]: r[1] for r in samples.rows(
        "select reason, count(*) from marts.unmapped_transactions group by reason")}
    unsupported = sum(n for reason, n in reasons.items()
                      if reason.startswith("unsupported asset category "))
    assert unsupported > 100  # options, futures ...
    assert reasons.get("no tradeID", 0) > 0  # pp_26's NET trade has none
    assert reasons.get("no transactionID", 0) > 0  # older exports' cash rows
    categories = {r[0] for r in samples.rows(
        "select distinct asset_category from marts.unmapped_transactions "
        "where reason like 'unsupported asset category %'")}
    assert {"OPT", "FUT", "CFD", "WAR", "IOPT"} <= categories
    assert "CASH" not in categories  # FX conversions are mapped


def test_every_reason_is_specific(samples: Samples) -> None:
    vague = samples.rows(
        "select distinct reason from marts.unmapped_transactions "
        "where reason in ('unsupported asset category', 'no cash_type_mapping row for this "
        "type and direction') or reason is null")
    assert vague == []


def test_fx_conversions_are_two_transfers_and_a_fee(samples: Samples) -> None:
    legs = samples.rows(
        "select source_group_id, list(activity_type order by activity_type), "
        "count(distinct currency) from marts.fct_activities "
        "where external_id like 'ibkr:fx:%' group by 1")
    assert len(legs) >= 176  # ost_etax alone has 176 conversions (incl. AFx)
    assert all(types[:1] == ["FEE"] or types[0] == "TRANSFER_IN" for _, types, _ in legs)
    # The commission may be charged in a third currency.
    assert all(set(types) >= {"TRANSFER_IN", "TRANSFER_OUT"} and ccys >= 2
               for _, types, ccys in legs)


def test_corporate_actions_of_the_samples(samples: Samples) -> None:
    rows = {r[0]: r[1:] for r in samples.rows(
        "select description, activity_type, symbol, quantity, amount "
        "from marts.fct_activities where source = 'corporate_action'")}
    split = [v for k, v in rows.items() if "AAPL(US0378331005) SPLIT 4 FOR 1" in k]
    assert split == [("SPLIT", "AAPL", None, Decimal("4"))]
    reverse = [v for k, v in rows.items() if "GCM(CA38501D2041) SPLIT 1 FOR 25" in k]
    assert reverse == [("SPLIT", "GCM.TO", None, Decimal("0.04"))]
    tender_cash = [v for k, v in rows.items() if "MERGED(Voluntary Offer" in k]
    assert [(t, q, a) for t, _, q, a in tender_cash] == [
        ("SELL", Decimal("12000"), Decimal("34320"))]
    merger = sorted((v[0], v[2]) for k, v in rows.items() if "CASH and STOCK MERGER" in k)
    assert merger == [("CREDIT", None), ("TRANSFER_IN", Decimal("1.4831")),
                      ("TRANSFER_OUT", Decimal("2.5052"))]


def test_two_identical_rows_of_one_statement_both_count(samples: Samples) -> None:
    # pp_12 has two real "Other Fees -1.34 EUR" rows without an id: neither is merged away.
    rows = samples.rows(
        "select count(*) from staging.stg_ibkr__cash_transactions "
        "where flex_type = 'Other Fees' and amount = -1.34 and currency = 'EUR'")
    assert rows == [(2,)]


def test_the_fund_trade_moves_ibkr_net_cash(samples: Samples) -> None:
    # pp_15: 23.342 units at 436.98055 is 10,200 EUR, but IBKR charged proceeds of
    # 10,000 + 4.95 commission.
    row = samples.rows(
        "select quantity * unit_price + fee from marts.fct_activities "
        "where source = 'trade' and symbol = '009086587'")
    assert len(row) == 1 and abs(row[0][0] - Decimal("10004.95")) < Decimal("1e-9")


def test_aest_zone_and_multi_dates_parse(samples: Samples) -> None:
    aest = samples.rows(
        "select generated_at from staging.stg_ibkr__statements "
        "where generated_at_zone = 'AEST'")
    assert [str(r[0]) for r in aest] == ["2025-05-22 20:41:57"]
    unparsed = samples.rows(
        "select count(*) from staging.stg_ibkr__trades where traded_at is null")
    assert unparsed[0][0] == 0


def test_no_mart_column_is_a_float(samples: Samples) -> None:
    floats = samples.rows(
        "select table_name, column_name, data_type from information_schema.columns "
        "where table_schema in ('marts', 'staging', 'intermediate') and "
        "(data_type like '%DOUBLE%' or data_type like '%FLOAT%' or data_type = 'REAL')")
    assert floats == []


def test_cash_reports_stage_every_currency_row_and_no_base_summary(samples: Samples) -> None:
    """Each per-currency CashReportCurrency row of every sample is staged with its
    endingCash exactly; the BASE_SUMMARY rows are not; cash_drift shows each currency
    with an unknown Wealthfolio side (no snapshot was taken)."""
    from decimal import Decimal

    expected = set()
    for path in samples.files:
        for statement in ET.parse(path).getroot().iter("FlexStatement"):
            for row in statement.iter("CashReportCurrency"):
                if row.get("levelOfDetail") == "Currency":
                    expected.add((statement.get("accountId"), row.get("currency"),
                                  Decimal(row.get("endingCash", "0"))))
    assert len(expected) >= 10  # the samples carry per-currency reports
    staged = samples.rows("select distinct broker_account_id, currency, ending_cash "
                          "from staging.stg_ibkr__cash_reports")
    assert {(a, c, Decimal(e)) for a, c, e in staged} == expected
    assert not samples.rows("select * from staging.stg_ibkr__cash_reports "
                            "where currency = 'BASE_SUMMARY'")
    drift = samples.rows("select currency, broker_cash, wf_cash, drift from marts.cash_drift")
    assert drift and all(wf is None and d is None for _, _, wf, d in drift)
    assert {c for c, *_ in drift} <= {c for _, c, _ in expected}
def test_every_posted_asset_is_a_seed_listing_in_wealthfolio_shape(
        samples: Samples, tmp_path: Path, fake_wealthfolio: Any,
        make_wf_client: Any) -> None:
    """Issue 14: syncing every shared sample posts no IBKR symbol shape (a space, a trailing
    venue letter) and each asset's MIC and quote currency are its exchanges-seed listing's
    (the quote is the line's own trading currency when it differs, e.g. USD on LSEETF)."""
    import csv
    import re
    import shutil

    from flexsync.loaders.wealthfolio_loader import load_activities, summary_text
    from tests.plugins.common import REPO_ROOT

    seed = list(csv.DictReader((REPO_ROOT / "seeds" / "exchanges.csv").open()))
    quotes_by_mic: dict[str, set[str]] = {}
    suffix_by_mic = {}
    for row in seed:
        if row["mic"]:
            quotes_by_mic.setdefault(row["mic"], set()).add(row["quote_currency"])
            suffix_by_mic[row["mic"]] = row["yahoo_suffix"]
    shutil.copy(samples.data_dir / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    try:
        line_currencies: dict[str, set[str]] = {}
        for symbol, currency in con.execute(
                "select distinct symbol, currency from marts.fct_activities "
                "where source = 'trade' and symbol is not null").fetchall():
            line_currencies.setdefault(symbol, set()).add(currency)
        fake_wealthfolio.create_account("samples", "GBP", account_id="wf-samples")
        with make_wf_client() as client:
            result = load_activities(con, client, "samples")
    finally:
        con.close()
    assert result.posted and not result.failed, summary_text(result)
    assets = [r.json["symbol"] for r in fake_wealthfolio.requests_to("POST", "/activities")
              if r.json.get("symbol")]
    assert len(assets) > 50
    checked_mics = set()
    for asset in assets:
        ticker, mic, quote = asset["symbol"], asset.get("exchangeMic"), asset["quoteCcy"]
        assert " " not in ticker and not re.search(r"[a-z]$", ticker), asset
        assert quote not in ("GBp", "GBX"), asset
        if mic is None:
            continue
        assert mic in quotes_by_mic, f"{asset}: MIC not in seeds/exchanges.csv"
        suffix = suffix_by_mic[mic]
        assert not (suffix and ticker.upper().endswith(suffix.upper())), asset
        canonical = ticker + suffix
        assert quote in quotes_by_mic[mic] or quote in line_currencies.get(canonical, set()), (
            asset, quotes_by_mic[mic])
        checked_mics.add(mic)
    assert {"XLON", "XETR", "XSWX", "XTSE", "XNAS"} <= checked_mics

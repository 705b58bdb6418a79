"""End to end through the CLI: our own Flex fixtures → extract → transform → marts.

One warehouse per module (dbt costs seconds per build): two overlapping windows of one
account, a two-account multi-statement file, a Wealthfolio snapshot history and a
posting ledger, then one `flexsync transform`. The tests read the marts field by field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from flexsync.cli import app
from flexsync.core.config import Settings
from flexsync.transform import run_transform

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "flex"
WF_ACCOUNT = "wf-test"
ACCOUNTS = "U7654321,U7654322,U7654323"


@dataclass
class Built:
    data_dir: Path
    transform_output: str
    dbt_env: dict[str, str]

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        con = duckdb.connect(str(self.data_dir / "warehouse.duckdb"), read_only=True)
        try:
            cursor = con.execute(sql, params or [])
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            con.close()


def _cli(args: list[str], env: dict[str, str]) -> Any:
    result = CliRunner().invoke(app, args, env=env, catch_exceptions=False)
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 0, f"flexsync {' '.join(args)} exited {result.exit_code}:\n{output}"
    return output


def _seed_wealthfolio_and_ledger(warehouse: Path) -> None:
    """What the loaders would have written: two snapshots and a posting ledger."""
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(
            "insert into raw_wealthfolio.snapshots (snapshot_id, snapshot_at, wf_account_id, "
            "run_id, total_row_count, row_count) values "  # kind NULL: full, pre-upgrade
            "('snap-old', '2025-04-01 02:00:00', ?, 'run-old', 1, 1),"
            "('snap-new', '2025-05-02 02:00:00', ?, 'run-new', 8, 8)",
            [WF_ACCOUNT, WF_ACCOUNT],
        )
        activities = [
            # snapshot, id, type, status, date, qty, amount, symbol, mic, key
            ("snap-old", "a0", "DEPOSIT", "POSTED", "2025-01-05", None, "5000", "", "",
             "ibkr:cash:5001"),
            ("snap-new", "a1", "BUY", "POSTED", "2025-01-10T14:30:15+00:00", "10", None,
             "AAPL", "XNAS", "ibkr:trade:1001"),
            ("snap-new", "a2", "SELL", "POSTED", "2025-02-20T15:30:00+00:00", "4", None,
             "AAPL", "XNAS", "ibkr:trade:1005"),
            ("snap-new", "a3", "BUY", "POSTED", "2025-01-15", "25", None, "VUAG", "XLON",
             "ibkr:trade:1002"),
            ("snap-new", "a4", "BUY", "POSTED", "2025-01-20", "6", None, "SHOP", "XTSE", None),
            ("snap-new", "a5", "SPLIT", "POSTED", "2025-04-15", None, "2", "SHOP", "XTSE",
             None),
            ("snap-new", "a6", "TRANSFER_IN", "POSTED", "2024-06-01", "50", None, "VOD",
             "XLON", None),
            ("snap-new", "a7", "BUY", "PENDING", "2025-04-20", "5", None, "MSFT", "XNAS",
             None),
            ("snap-new", "a8", "DEPOSIT", "POSTED", "2024-06-01", None, "100", "", "", None),
        ]
        for snap, ident, kind, status, day, qty, amount, symbol, mic, key in activities:
            con.execute(
                "insert into raw_wealthfolio.activities (_snapshot_id, _snapshot_at, id, "
                "account_id, activity_type, status, activity_date, quantity, amount, currency,"
                " asset_symbol, exchange_mic, idempotency_key) values "
                "(?, (select snapshot_at from raw_wealthfolio.snapshots where snapshot_id = ?),"
                " ?, ?, ?, ?, ?, ?, ?, 'GBP', ?, ?, ?)",
                [snap, snap, ident, WF_ACCOUNT, kind, status, day, qty, amount, symbol, mic,
                 key],
            )
        con.execute(
            "insert into sync.posted_activities values "
            "('ibkr:trade:1001', 'a1', 'posted', null, 'run-old', '2025-04-01 02:01:00'),"
            "('ibkr:cash:5002', null, 'failed', 'HTTP 500', 'run-old', '2025-04-01 02:01:00'),"
            "('ibkr:cash:5003', 'a9', 'already_present', null, 'run-old',"
            " '2025-04-01 02:01:00')"
        )
    finally:
        con.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("transform_e2e")
    data_dir = root / "data"
    env = {
        "BROKER_SYNC_DATA_DIR": str(data_dir),
        "IBKR_ACCOUNT_ID_UPSTREAM": ACCOUNTS,
        "IBKR_ACCOUNT_ID": WF_ACCOUNT,
        "DBT_TARGET_PATH": str(root / "dbt-target"),
        "DBT_LOG_PATH": str(root / "dbt-logs"),
        "DO_NOT_TRACK": "1",
        "WF_BASE_URL": "",
        "PUSHGATEWAY_URL": "",
    }
    _cli(["extract", "--flex-file", str(FIXTURES / "window_1.xml"),
          "--flex-file", str(FIXTURES / "multi_statement.xml")], env)
    # The overlapping window lands later, so its copies of shared rows are the newest.
    _cli(["extract", "--flex-file", str(FIXTURES / "window_2.xml")], env)
    _seed_wealthfolio_and_ledger(data_dir / "warehouse.duckdb")
    output = _cli(["transform"], env)
    yield Built(data_dir, output, env)


def _by_id(built: Built, table: str) -> dict[str, dict[str, Any]]:
    return {row["external_id"]: row for row in built.rows(f"select * from marts.{table}")}


# --- activities ------------------------------------------------------------------------

EXPECTED_IDS = {
    # trades: 1001 (posted, its cancel is listed for review), 1002-1005, 1009, 1011, 1012,
    # 1014 from window 2, 2001/2002 from the multi-statement file; 1007 (EUR.USD) as an FX
    # conversion's two transfers and its fee. 1008 and its cancel are listed (they net to
    # nothing); 1006 (OPT) and the row without tradeID are unmapped.
    "ibkr:trade:1001", "ibkr:trade:1002", "ibkr:trade:1003", "ibkr:trade:1004",
    "ibkr:trade:1005", "ibkr:trade:1009", "ibkr:trade:1011", "ibkr:trade:1012",
    "ibkr:trade:1014", "ibkr:trade:2001", "ibkr:trade:2002",
    "ibkr:fx:1007:in", "ibkr:fx:1007:out", "ibkr:fx:1007:fee", "ibkr:cash:5005",
    "ibkr:cash:5001", "ibkr:cash:5002", "ibkr:cash:5003", "ibkr:cash:5008",
    "ibkr:cash:5009", "ibkr:cash:5010", "ibkr:cash:5011", "ibkr:cash:5012",
    "ibkr:cash:5013", "ibkr:cash:5014", "ibkr:cash:5015", "ibkr:cash:5016",
    "ibkr:cash:6001", "ibkr:cash:6002",
}


CANCELLED = "cancelled trade: the cancel and its unposted original are both skipped"


def test_fct_activities_holds_each_mapped_id_once(built: Built) -> None:
    rows = built.rows("select external_id from marts.fct_activities")
    ids = [r["external_id"] for r in rows]
    assert len(ids) == len(set(ids)), "overlapping windows must not duplicate an id"
    assert set(ids) == EXPECTED_IDS


def D(text: str) -> Decimal:
    return Decimal(text)


TRADES: dict[str, dict[str, Any]] = {
    "ibkr:trade:1002": {  # runbook: LSEETF, GBP → .L, quoted in pence
        "activity_type": "BUY", "symbol": "VUAG.L", "exchange_mic": "XLON",
        "quote_currency": "GBP", "instrument_type": "EQUITY", "quantity": D("25"),
        "unit_price": D("82.345"), "amount": D("2058.625"), "fee": D("3"), "currency": "GBP",
        "activity_at": datetime(2025, 1, 15, 9, 15, 2), "activity_date": date(2025, 1, 15),
        "broker_account_id": "U7654321", "wf_account_id": WF_ACCOUNT, "source": "trade",
        "source_id": "1002", "subtype": None,
    },
    "ibkr:trade:1003": {  # execution venue CHIXUK, listing from SecuritiesInfo, USD line
        "activity_type": "BUY", "symbol": "CSPX.L", "exchange_mic": "XLON",
        "quote_currency": "USD", "quantity": D("3"), "unit_price": D("560.1"),
        "amount": D("1680.3"), "fee": D("2.5"), "currency": "USD",
    },
    "ibkr:trade:1004": {  # GBX: pence become pounds, fee too
        "activity_type": "BUY", "symbol": "BARC.L", "exchange_mic": "XLON",
        "quote_currency": "GBP", "quantity": D("200"), "unit_price": D("2.155"),
        "amount": D("431"), "fee": D("3"), "currency": "GBP",
    },
    "ibkr:trade:1005": {  # SELL, positive quantity; the later window's copy won
        "activity_type": "SELL", "symbol": "AAPL", "exchange_mic": "XNAS",
        "quote_currency": "USD", "quantity": D("4"), "unit_price": D("190.25"),
        "amount": D("761"), "fee": D("1"), "currency": "USD",
        "activity_at": datetime(2025, 2, 20, 15, 30), "activity_date": date(2025, 2, 20),
    },
    "ibkr:trade:1009": {  # FUND, unknown venue: symbol unchanged
        "activity_type": "BUY", "symbol": "IE00B03HCZ61", "exchange_mic": None,
        "quote_currency": "EUR", "instrument_type": "EQUITY", "quantity": D("23.342"),
        "unit_price": D("436.98055"), "amount": D("10199.9999981"), "fee": D("4.95"),
    },
    "ibkr:trade:1011": {  # IBIS2 → .DE; no tradeTime → tradeDate + tradeTime
        "symbol": "EUNL.DE", "exchange_mic": "XETR", "quote_currency": "EUR",
        "activity_at": datetime(2025, 2, 10, 9, 5, 10),
    },
    "ibkr:trade:1012": {"symbol": "SHOP.TO", "exchange_mic": "XTSE", "currency": "CAD"},
    "ibkr:trade:1014": {  # CHIXUK, no listingExchange: conid → SecuritiesInfo LSEETF
        "symbol": "VUAG.L", "quote_currency": "GBP", "quantity": D("5"),
        "amount": D("420.5"), "activity_date": date(2025, 4, 2),
    },
    "ibkr:trade:2001": {  # second account, zone kept apart
        "broker_account_id": "U7654322", "symbol": "SAP.DE", "exchange_mic": "XETR",
        "activity_at": datetime(2025, 3, 5, 10, 15), "activity_at_zone": "AEST",
    },
    "ibkr:trade:2002": {  # no levelOfDetail attribute at all
        "broker_account_id": "U7654323", "symbol": "BHP.AX", "exchange_mic": "XASX",
        "quantity": D("100"), "amount": D("4510"), "fee": D("6"), "currency": "AUD",
    },
}

CASH: dict[str, dict[str, Any]] = {
    "ibkr:cash:5001": {"activity_type": "DEPOSIT", "subtype": None, "amount": D("5000"),
                       "currency": "GBP", "symbol": None, "fee": D("0"), "quantity": None,
                       "flex_type": "Deposits/Withdrawals", "direction": "in"},
    "ibkr:cash:5002": {"activity_type": "DIVIDEND", "amount": D("2.4"), "symbol": "AAPL",
                       "exchange_mic": "XNAS", "instrument_type": "EQUITY",
                       "activity_at": datetime(2025, 2, 13, 20, 20)},
    "ibkr:cash:5003": {"activity_type": "TAX", "subtype": "WITHHOLDING", "amount": D("0.36"),
                       "symbol": "AAPL"},
    "ibkr:cash:5005": {"activity_type": "TAX", "subtype": "NRA_WITHHOLDING",
                       "amount": D("0.12"), "symbol": "AAPL"},
    "ibkr:cash:5008": {"activity_type": "INTEREST", "amount": D("1.23"), "currency": "GBP"},
    "ibkr:cash:5009": {"activity_type": "FEE", "amount": D("0.45")},
    "ibkr:cash:5010": {"activity_type": "CREDIT", "subtype": "REBATE", "amount": D("0.37")},
    "ibkr:cash:5011": {"activity_type": "CREDIT", "subtype": "REFUND", "amount": D("0.36"),
                       "symbol": None},
    "ibkr:cash:5012": {"activity_type": "DIVIDEND", "symbol": "CSPX.L", "amount": D("0.8"),
                       "flex_type": "Payment In Lieu Of Dividends"},
    "ibkr:cash:5013": {"activity_type": "WITHDRAWAL", "amount": D("200"),
                       "flex_type": "Deposits & Withdrawals", "direction": "out"},
    "ibkr:cash:5014": {"activity_type": "DIVIDEND", "symbol": "BARC.L", "amount": D("12.5"),
                       "currency": "GBP", "quote_currency": "GBP"},
    "ibkr:cash:5015": {"activity_type": "DIVIDEND", "symbol": "VUAG.L", "amount": D("3.1")},
    "ibkr:cash:5016": {"activity_type": "DEPOSIT", "amount": D("12500")},
    "ibkr:cash:6001": {"activity_type": "DIVIDEND", "symbol": "SAP.DE", "amount": D("11"),
                       "broker_account_id": "U7654322", "activity_at_zone": "AEST"},
    "ibkr:cash:6002": {"activity_type": "DEPOSIT", "amount": D("1000"), "currency": "AUD",
                       "broker_account_id": "U7654323"},
}


@pytest.mark.parametrize("external_id", sorted(TRADES))
def test_trade_activity_fields(built: Built, external_id: str) -> None:
    row = _by_id(built, "fct_activities")[external_id]
    expected = TRADES[external_id]
    assert {k: row[k] for k in expected} == expected


@pytest.mark.parametrize("external_id", sorted(CASH))
def test_cash_activity_fields(built: Built, external_id: str) -> None:
    row = _by_id(built, "fct_activities")[external_id]
    expected = {"source": "cash", "source_id": external_id.rsplit(":", 1)[1],
                **CASH[external_id]}
    assert {k: row[k] for k in expected} == expected


def test_amounts_are_positive_and_the_type_carries_the_sign(built: Built) -> None:
    rows = built.rows("select amount, fee, quantity from marts.fct_activities")
    assert all(r["amount"] > 0 and r["fee"] >= 0 for r in rows)
    assert all(r["quantity"] is None or r["quantity"] > 0 for r in rows)


# --- skipped rows ----------------------------------------------------------------------

def test_unmapped_transactions_list_every_skipped_row(built: Built) -> None:
    rows = built.rows("select * from marts.unmapped_transactions")
    got = {(r["source"], r["source_id"], r["flex_type"], r["reason"]) for r in rows}
    assert got == {
        ("cash", "5004", "Dividends", "dividend reversal without a matching dividend (same "
         "instrument, pay date and amount): review"),
        ("cash", "5006", "Broker Fees", "no cash_type_mapping row for Broker Fees out"),
        ("cash", "5007", "Other Fees", "zero amount"),
        ("trade", "1006", "BUY", "unsupported asset category OPT"),
        ("trade", None, "BUY", "no tradeID"),
        ("trade", "1008", "BUY", CANCELLED),
        ("trade", None, "BUY (Ca.)", CANCELLED),
        ("trade", None, "BUY (Ca.)",
         "cancellation of an already posted trade: review in Wealthfolio"),
    }
    review = next(r for r in rows if r["flex_type"] == "BUY (Ca.)" and r["reason"] != CANCELLED)
    assert review["related_external_id"] == "ibkr:trade:1001"
    reversal = next(r for r in rows if r["source_id"] == "5004")
    assert (reversal["amount"], reversal["currency"], reversal["symbol"]) == (
        D("-1.1"), "GBP", "VUAG.L")


def test_every_unmapped_row_is_logged_at_warning(built: Built) -> None:
    out = built.transform_output
    for needle in ("unmapped cash 5004 (Dividends", "unmapped cash 5006 (Broker Fees",
                   "zero amount", "unmapped trade 1006 (BUY, OPT)", "unmapped trade 1008",
                   "no tradeID", "review in Wealthfolio"):
        assert needle in out, f"{needle!r} not logged:\n{out}"
    assert "WARNING" in out
    assert "8 IBKR row(s) not mapped" in out


def test_cancelled_unposted_trade_and_its_cancel_drop_out(built: Built) -> None:
    ids = {r["external_id"] for r in built.rows("select external_id from marts.fct_activities")}
    assert "ibkr:trade:1008" not in ids
    unmapped = built.rows("select * from marts.unmapped_transactions where symbol = 'MSFT'")
    # Both listed, never posted; their cash nets to zero.
    assert [r["reason"] for r in unmapped] == [CANCELLED, CANCELLED]
    assert sum(r["amount"] for r in unmapped) == 0


# --- what to post ----------------------------------------------------------------------

def test_activities_to_post(built: Built) -> None:
    ids = {r["external_id"] for r in built.rows("select external_id from marts.activities_to_post")}
    # Not again: 1001 (ledger: posted), 5003 (ledger: already_present), 1002 and 1005 (their
    # idempotencyKey is in the latest snapshot). Still to post: 5002 (its post failed) and
    # 5001 (only an older snapshot had it).
    assert ids == EXPECTED_IDS - {"ibkr:trade:1001", "ibkr:cash:5003", "ibkr:trade:1002",
                                  "ibkr:trade:1005"}
    assert {"ibkr:cash:5002", "ibkr:cash:5001"} <= ids


def test_activities_to_post_has_the_fct_columns(built: Built) -> None:
    fct = built.rows("describe marts.fct_activities")
    to_post = built.rows("describe marts.activities_to_post")
    assert [(c["column_name"], c["column_type"]) for c in fct] == [
        (c["column_name"], c["column_type"]) for c in to_post]


# --- drift -----------------------------------------------------------------------------

def test_position_drift(built: Built) -> None:
    rows = {r["symbol"]: r for r in built.rows("select * from marts.position_drift")}
    got = {s: (r["broker_quantity"], r["wf_quantity"], r["drift"]) for s, r in rows.items()}
    assert got == {
        "AAPL": (D("6"), D("6"), D("0")),
        "VUAG.L": (D("30"), D("25"), D("5")),
        "SHOP.TO": (D("12"), D("12"), D("0")),  # 6 bought, then a 2:1 split
        "VOD.L": (D("0"), D("50"), D("-50")),  # Wealthfolio holds it, IBKR does not
        "CSPX.L": (D("3"), D("0"), D("3")),
        "BARC.L": (D("200"), D("0"), D("200")),
        "EUNL.DE": (D("8"), D("0"), D("8")),
        "IE00B03HCZ61": (D("23.342"), D("0"), D("23.342")),
        "SAP.DE": (D("5"), D("0"), D("5")),
        "BHP.AX": (D("100"), D("0"), D("100")),
    }
    assert rows["VUAG.L"]["as_of"] == date(2025, 4, 30)  # the latest statement's positions
    assert rows["SAP.DE"]["broker_account_id"] == "U7654322"
    assert rows["VOD.L"]["wf_account_id"] == WF_ACCOUNT
    assert rows["VOD.L"]["wf_snapshot_at"] == datetime(2025, 5, 2, 2, 0)


def test_drift_history_keeps_one_set_per_run(built: Built) -> None:
    runs = built.rows("select run_id, count(*) as n from marts.position_drift_history "
                      "group by run_id")
    assert len(runs) == 1 and runs[0]["n"] == 10
    settings = Settings(data_dir=built.data_dir, wf_account_id=WF_ACCOUNT)
    select = ["position_drift", "position_drift_history"]
    env_keys = ("DBT_TARGET_PATH", "DBT_LOG_PATH")
    with pytest.MonkeyPatch.context() as patch:
        for key in env_keys:
            patch.setenv(key, built.dbt_env[key])
        first = run_transform(settings, "run-history", select=select)
        again = run_transform(settings, "run-history", select=select)
    assert first.drift_rows == again.drift_rows == 10
    per_run = {r["run_id"]: r["n"] for r in built.rows(
        "select run_id, count(*) as n from marts.position_drift_history group by run_id")}
    assert per_run.pop("run-history") == 10  # rebuilt within a run: replaced, not doubled
    assert list(per_run.values()) == [10]
    run_at = built.rows("select distinct run_at from marts.position_drift_history "
                        "where run_id = 'run-history'")
    assert len(run_at) == 1 and isinstance(run_at[0]["run_at"], datetime)


# --- types and layout ------------------------------------------------------------------

def test_no_mart_column_is_a_float(built: Built) -> None:
    columns = built.rows(
        "select table_name, column_name, data_type from information_schema.columns "
        "where table_schema = 'marts'")
    floats = [c for c in columns
              if any(t in c["data_type"].upper() for t in ("DOUBLE", "FLOAT", "REAL"))]
    assert floats == []
    numeric = {(c["table_name"], c["column_name"]): c["data_type"] for c in columns
               if c["column_name"] in ("quantity", "unit_price", "amount", "fee",
                                       "broker_quantity", "wf_quantity", "drift")}
    assert numeric and set(numeric.values()) == {"DECIMAL(38,10)"}


def test_models_land_in_exactly_named_schemas(built: Built) -> None:
    tables = built.rows(
        "select table_schema, table_name from information_schema.tables "
        "where table_schema not in ('raw_ibkr', 'raw_wealthfolio', 'sync')")
    schemas = {t["table_schema"] for t in tables}
    assert schemas == {"seeds", "staging", "intermediate", "marts"}
    marts = {t["table_name"] for t in tables if t["table_schema"] == "marts"}
    assert marts == {"fct_activities", "activities_to_post", "unmapped_transactions",
                     "activity_corrections", "position_drift", "position_drift_history",
                     "cash_drift", "cash_drift_history"}

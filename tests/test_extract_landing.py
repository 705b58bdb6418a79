"""Raw landing: real statements land whole, the guard, bad input, idempotency, evolution."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from flexsync.core.config import Settings
from flexsync.core.errors import IBKRAccountMismatchError, InputFileError
from flexsync.extract.flex_reader import section_table_name
from flexsync.stages import land_flex_files
from tests.helpers import DEMO_STATEMENT, query, run_cli, table_names

CORE_SECTIONS = {
    "Trades": "trades",
    "CashTransactions": "cash_transactions",
    "OpenPositions": "open_positions",
    "SecuritiesInfo": "securities_info",
}


def _statement_accounts(path: Path) -> tuple[str, ...]:
    root = ET.parse(path).getroot()
    return tuple(dict.fromkeys(st.get("accountId", "") for st in root.iter("FlexStatement")))


def _attributed_rows(path: Path, section: str) -> int:
    """Independent count: attributed elements under <section> of every FlexStatement."""
    root = ET.parse(path).getroot()
    count = 0
    for statement in root.iter("FlexStatement"):
        for container in statement.findall(section):
            count += sum(1 for el in container.iter() if el is not container and el.attrib)
    return count


def _settings(data_dir: Path, accounts: tuple[str, ...]) -> Settings:
    return Settings(data_dir=data_dir, upstream_account_ids=accounts)


def _raw_count(data_dir: Path, table: str) -> int:
    if table not in table_names(data_dir, "raw_ibkr"):
        return 0
    return int(query(data_dir, f'select count(*) from raw_ibkr."{table}"')[0][0])


# --- the twenty real statements --------------------------------------------------------


def test_every_real_statement_lands_whole(shared_samples: Path, tmp_path: Path) -> None:
    files = sorted(shared_samples.glob("*.xml"))
    assert len(files) == 20
    for path in files:
        data_dir = tmp_path / path.stem
        results = land_flex_files(_settings(data_dir, _statement_accounts(path)), [path])
        assert results[0].statements >= 1
        for section, table in CORE_SECTIONS.items():
            expected = _attributed_rows(path, section)
            assert _raw_count(data_dir, table) == expected, (path.name, section)
        # every attribute of every Trade is a column, spelled as IBKR wrote it
        root = ET.parse(path).getroot()
        trade_attrs = {a for t in root.iter("Trade") for a in t.attrib}
        if trade_attrs:
            cols = {r[0] for r in query(
                data_dir, "select column_name from information_schema.columns "
                "where table_schema = 'raw_ibkr' and table_name = 'trades'")}
            assert trade_attrs <= cols, (path.name, trade_attrs - cols)


def test_attributes_ibflex_drops_are_landed(shared_samples: Path, tmp_path: Path) -> None:
    gab = shared_samples / "gab_futures_fop_ibukl.xml"
    data_dir = tmp_path / "gab"
    land_flex_files(_settings(data_dir, _statement_accounts(gab)), [gab])
    cols = {r[0] for r in query(data_dir, "select column_name from information_schema.columns "
                                "where table_name = 'cash_report'")}
    assert {c for c in cols if c.endswith("IBUKL")}, "the *IBUKL cash-report fields are columns"
    assert query(data_dir, 'select count(*) from raw_ibkr.cash_report '
                 'where "endingCashIBUKL" is not null')[0][0] > 0
    verdict = query(data_dir, "select ok, warning_count from raw_ibkr.flex_validation")[0]
    assert verdict[0] is True and verdict[1] > 0  # ibflex accepted it, dropping those fields

    pp01 = shared_samples / "pp_01_cad_tse_fx_corpactions.xml"
    data_dir = tmp_path / "pp01"
    land_flex_files(_settings(data_dir, _statement_accounts(pp01)), [pp01])
    assert query(data_dir, 'select count(*) from raw_ibkr.trades '
                 'where "orderPlacementTime" is not null')[0][0] > 0


def test_files_ibflex_rejects_still_land_and_the_verdict_is_recorded(
        shared_samples: Path, tmp_path: Path) -> None:
    aest = shared_samples / "reds_commission_adjustment_aest.xml"
    data_dir = tmp_path / "aest"
    land_flex_files(_settings(data_dir, _statement_accounts(aest)), [aest])
    ok, error = query(data_dir, "select ok, error from raw_ibkr.flex_validation")[0]
    assert ok is False and "AEST" in error
    assert query(data_dir, "select count(*) from raw_ibkr.cash_transactions")[0][0] == 1
    assert query(data_dir, "select when_generated from raw_ibkr.statements")[0][0].endswith("AEST")


def test_root_level_extras_are_landed(shared_samples: Path, tmp_path: Path) -> None:
    pp12 = shared_samples / "pp_12_malformed_root_accountinfo.xml"
    data_dir = tmp_path / "pp12"
    land_flex_files(_settings(data_dir, _statement_accounts(pp12)), [pp12])
    rows = query(data_dir, 'select "accountId", _statement_index from '
                 "raw_ibkr.account_information")
    assert ("XXXXXXXX", None) in rows


def test_multi_account_file_needs_every_account_configured(
        shared_samples: Path, tmp_path: Path) -> None:
    multi = shared_samples / "pp_26_multi_statement.xml"
    accounts = _statement_accounts(multi)
    assert len(accounts) == 2
    refused = tmp_path / "refused"
    with pytest.raises(IBKRAccountMismatchError) as info:
        land_flex_files(_settings(refused, accounts[:1]), [multi])
    assert accounts[1] in str(info.value) and accounts[0] in str(info.value)
    assert _raw_count(refused, "trades") == 0
    assert query(refused, "select count(*) from raw_ibkr.extracts")[0][0] == 0
    assert not (refused / "archive").exists() or not any((refused / "archive").rglob("*.gz"))

    accepted = tmp_path / "accepted"
    land_flex_files(_settings(accepted, accounts), [multi])
    got = {r[0] for r in query(accepted, "select distinct _statement_account_id "
                               "from raw_ibkr.cash_transactions")}
    assert got == set(accounts)


# --- the CLI: guard, exit codes, idempotency, archive ------------------------------------


def test_cli_lands_demo_and_relanding_is_a_no_op(data_dir: Path) -> None:
    first = run_cli(["extract", "--flex-file", str(DEMO_STATEMENT)], data_dir,
                    IBKR_ACCOUNT_ID_UPSTREAM="U1234567")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    before = {t: _raw_count(data_dir, t) for t in ("trades", "cash_transactions")}
    assert before == {"trades": 6, "cash_transactions": 7}
    second = run_cli(["extract", "--flex-file", str(DEMO_STATEMENT)], data_dir,
                     IBKR_ACCOUNT_ID_UPSTREAM="U1234567")
    assert second.returncode == 0, second.stderr
    assert "landed before" in second.stderr
    assert {t: _raw_count(data_dir, t) for t in before} == before
    assert query(data_dir, "select count(*) from raw_ibkr.extracts")[0][0] == 1

    sha, archive = query(data_dir, "select file_sha256, archive_path from raw_ibkr.extracts")[0]
    content = DEMO_STATEMENT.read_bytes()
    assert sha == hashlib.sha256(content).hexdigest()
    assert gzip.decompress(Path(archive).read_bytes()) == content
    meta = query(data_dir, "select account_id, from_date, to_date, when_generated "
                 "from raw_ibkr.statements")[0]
    assert meta == ("U1234567", "2026-08-24", "2026-11-20", "2026-11-21;02:00:41")


def test_cli_guard_mismatch_exits_3_and_writes_nothing(data_dir: Path) -> None:
    result = run_cli(["extract", "--flex-file", str(DEMO_STATEMENT)], data_dir,
                     IBKR_ACCOUNT_ID_UPSTREAM="U7654321")
    assert result.returncode == 3
    assert "IBKRAccountMismatchError" in result.stderr
    assert "U1234567" in result.stderr and "U7654321" in result.stderr
    assert "Traceback" not in result.stderr
    assert _raw_count(data_dir, "trades") == 0
    assert query(data_dir, "select count(*) from raw_ibkr.extracts")[0][0] == 0
    assert not any(data_dir.rglob("*.xml.gz"))


def test_cli_missing_token_in_download_mode(data_dir: Path) -> None:
    result = run_cli(["extract"], data_dir, IBKR_ACCOUNT_ID_UPSTREAM="U1234567",
                     IBKR_FLEX_QUERY_ID="123456")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "IBKR_FLEX_TOKEN not provided"


def test_cli_file_mode_needs_the_guard_account(data_dir: Path) -> None:
    result = run_cli(["extract", "--flex-file", str(DEMO_STATEMENT)], data_dir)
    assert result.returncode == 2
    assert "IBKR_ACCOUNT_ID_UPSTREAM not provided" in result.stderr


def test_schema_evolution_adds_a_column(data_dir: Path, tmp_path: Path) -> None:
    text = DEMO_STATEMENT.read_text()
    evolved = tmp_path / "evolved.xml"
    evolved.write_text(text.replace('tradeID="7001"', 'tradeID="7001" brandNewAttribute="x1"')
                       .replace("<CashReport>", '<NewFancySection><NewFancyRow a="1" b=""/>'
                                '</NewFancySection><CashReport>'))
    settings = _settings(data_dir, ("U1234567",))
    land_flex_files(settings, [DEMO_STATEMENT])
    land_flex_files(settings, [evolved])
    rows = query(data_dir, 'select "brandNewAttribute", count(*) from raw_ibkr.trades '
                 "group by 1 order by 1 nulls first")
    assert rows == [(None, 11), ("x1", 1)]
    assert query(data_dir, "select a, b from raw_ibkr.new_fancy_section") == [("1", "")]


def test_section_table_names() -> None:
    assert section_table_name("CashTransactions") == "cash_transactions"
    assert section_table_name("FIFOPerformanceSummaryInBase") == "fifo_performance_summary_in_base"
    assert section_table_name("SecuritiesInfo") == "securities_info"
    assert section_table_name("Statements") == "statements_section"


# --- bad input ---------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">]>
<FlexQueryResponse><FlexStatements count="1"><FlexStatement accountId="U1234567">
<Trades><Trade tradeID="&lol9;"/></Trades></FlexStatement></FlexStatements></FlexQueryResponse>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<FlexQueryResponse><FlexStatements count="1"><FlexStatement accountId="U1234567">
<Trades><Trade tradeID="&xxe;"/></Trades></FlexStatement></FlexStatements></FlexQueryResponse>
"""
DTD_ONLY = b"""<?xml version="1.0"?><!DOCTYPE FlexQueryResponse SYSTEM "http://127.0.0.1:9/x.dtd">
<FlexQueryResponse><FlexStatements count="1"><FlexStatement accountId="U1234567"/>
</FlexStatements></FlexQueryResponse>"""

BAD_INPUTS = {
    "entity_bomb": (BILLION_LAUGHS, "hostile XML"),
    "external_entity": (EXTERNAL_ENTITY, "hostile XML"),
    "dtd": (DTD_ONLY, "hostile XML"),
    "truncated": (DEMO_STATEMENT.read_bytes()[:3000], "not a well-formed XML"),
    "not_xml": (b"\x00\x01\x02binary junk", "not XML"),
    "empty": (b"", "empty"),
    "whitespace": (b"   \n\n", "empty"),
    "html": (b"<!DOCTYPE html><html><body>Site maintenance</body></html>", "HTML page"),
    "html_no_doctype": (b"<html><head></head><body>down</body></html>", "HTML page"),
    "csv": (b"ClientAccountID,TradeID,Symbol\nU1234567,1,AAPL\n", "CSV"),
    "wrong_root": (b"<Statement><Trades/></Statement>", "expected <FlexQueryResponse>"),
    "envelope": (b'<FlexStatementResponse timestamp="x"><Status>Warn</Status>'
                 b"<ErrorCode>1019</ErrorCode></FlexStatementResponse>", "status envelope"),
    "no_statement": (b"<FlexQueryResponse><FlexStatements count='0'/></FlexQueryResponse>",
                     "no <FlexStatement>"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_in_one_line_and_lands_nothing(
        case: str, data_dir: Path, tmp_path: Path) -> None:
    content, expected = BAD_INPUTS[case]
    path = tmp_path / f"{case}.xml"
    path.write_bytes(content)
    with pytest.raises(InputFileError) as info:
        land_flex_files(_settings(data_dir, ("U1234567",)), [path])
    assert expected in str(info.value)
    assert "\n" not in str(info.value)
    assert query(data_dir, "select count(*) from raw_ibkr.extracts")[0][0] == 0
    assert _raw_count(data_dir, "trades") == 0
    assert not any(data_dir.rglob("*.xml.gz"))


def test_cli_bad_input_prints_no_traceback(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "bomb.xml"
    path.write_bytes(BILLION_LAUGHS)
    start = time.monotonic()
    result = run_cli(["extract", "--flex-file", str(path)], data_dir,
                     IBKR_ACCOUNT_ID_UPSTREAM="U1234567")
    assert time.monotonic() - start < 30
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_failing_file_rolls_back_the_whole_batch(data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(DEMO_STATEMENT.read_bytes()[:4000])
    with pytest.raises(InputFileError):
        land_flex_files(_settings(data_dir, ("U1234567",)), [DEMO_STATEMENT, bad])
    assert _raw_count(data_dir, "trades") == 0
    assert query(data_dir, "select count(*) from raw_ibkr.extracts")[0][0] == 0


def test_warehouse_held_by_another_process_exits_8(data_dir: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
         " time.sleep(60)", str(data_dir / "warehouse.duckdb")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        start = time.monotonic()
        result = run_cli(["extract", "--flex-file", str(DEMO_STATEMENT)], data_dir,
                         IBKR_ACCOUNT_ID_UPSTREAM="U1234567")
        assert result.returncode == 8, result.stderr
        assert time.monotonic() - start < 20
        assert "held by another process" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_run_lock_refuses_a_second_run(data_dir: Path) -> None:
    code = ("import sys, time; from pathlib import Path;"
            " from flexsync.core.warehouse import RunLock;"
            " l = RunLock(Path(sys.argv[1])); l.acquire(); print('ready', flush=True);"
            " time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(data_dir)],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        result = run_cli(["extract", "--flex-file", str(DEMO_STATEMENT)], data_dir,
                         IBKR_ACCOUNT_ID_UPSTREAM="U1234567")
        assert result.returncode == 8
        assert "another flexsync run holds the warehouse lock" in result.stderr
        assert not (data_dir / "warehouse.duckdb").exists()
    finally:
        holder.kill()
        holder.wait()

"""Hostile and odd Flex input: generated statements (hypothesis) and fixed bad files.

Extract: every generated file either lands whole (each raw table holds exactly the
generated rows, values exactly as written, the bytes archived) or is refused with one
line and nothing landed; nothing but a FlexsyncError ever escapes.

Transform: one dbt build over a batch of generated statements must succeed and give no
negative amount/quantity/fee/price, no float column, no duplicate external id, and no
silently dropped row: each source execution and DETAIL cash row ends in fct_activities
or unmapped_transactions unless a documented filter applies (SUMMARY cash, Order /
SymbolSummary / Lot rows, ORDER / CLOSED_LOT levels, superseded versions of one id,
cancellations).
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from benchmarks import generate_flex
from flexsync.core.config import Settings
from flexsync.core.errors import FlexsyncError, IBKRAccountMismatchError, InputFileError
from flexsync.core.warehouse import LINEAGE_COLUMNS
from flexsync.stages import land_flex_files
from tests.helpers import REPO_ROOT, attribute_of
from tests.reliability import flexgen
from tests.reliability.conftest import Recorder
from tests.reliability.flexgen import ALLOWED_ACCOUNTS, FOREIGN_ACCOUNT, Document
from tests.reliability.harness import (
    TRACEBACK,
    assert_clean_failure,
    file_mode_env,
    process_env,
    readonly,
    run_inprocess,
)
from tests.reliability.report import LEDGER

MEMORY_BOUND_MIB = 256  # the CronJob pod's limit (docs/deployment.md#cronjob)
LANDING_EXAMPLES = 40
TRANSFORM_BATCH = 24  # generated statements in the one dbt build
_LEDGER: Counter[str] = Counter()  # landing examples by outcome, for the report row


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, upstream_account_ids=ALLOWED_ACCOUNTS)


def _raw_counts(data_dir: Path) -> dict[str, int]:
    """Rows per raw_ibkr section table (the bookkeeping tables excluded)."""
    with readonly(data_dir / "warehouse.duckdb") as con:
        tables = [r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_schema = "
            "'raw_ibkr' and table_name not in ('extracts', 'statements', 'flex_validation')"
        ).fetchall()]
        counts = {t: con.execute(f'select count(*) from raw_ibkr."{t}"').fetchone()
                  for t in tables}
    return {t: int(c[0]) for t, c in counts.items() if c and c[0]}


def _nothing_landed(data_dir: Path) -> None:
    assert _raw_counts(data_dir) == {}
    with readonly(data_dir / "warehouse.duckdb") as con:
        for table in ("extracts", "statements", "flex_validation"):
            assert con.execute(f"select count(*) from raw_ibkr.{table}").fetchone() == (0,)
    assert not list(data_dir.rglob("*.gz"))


def _landed_rows(data_dir: Path, table: str) -> Counter[frozenset[tuple[str, str]]]:
    """Each landed row as its non-null attributes (names lower-cased: DuckDB columns are
    case-insensitive; a column the landing renamed — `b` beside `B` — by its attribute's
    name), lineage columns left out."""
    with readonly(data_dir / "warehouse.duckdb") as con:
        cursor = con.execute(f'select * from raw_ibkr."{table}"')
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    attributes = [None if n in LINEAGE_COLUMNS else attribute_of(n).lower() for n in names]
    return Counter(frozenset((a, v) for a, v in zip(attributes, row, strict=True)
                             if v is not None and a is not None) for row in rows)


def _generated_rows(doc: Document, section: str) -> Counter[frozenset[tuple[str, str]]]:
    return Counter(frozenset((n.lower(), v) for n, v in row.attrs)
                   for _, row in doc.rows_of(section) if row.attrs)


def _mangle(content: bytes, how: str, where: int) -> bytes:
    if how == "truncate":
        return content[: where % max(1, len(content))]
    if how == "garbage_tail":
        return content + b"<<<&&&>>>"
    if how == "duplicate_attribute":
        return content.replace(b"<FlexStatement ", b'<FlexStatement a="1" a="2" ', 1)
    if how == "doctype":
        return b'<!DOCTYPE FlexQueryResponse [<!ENTITY x "y">]>\n' + content
    return content


@settings(max_examples=LANDING_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(doc=flexgen.documents(),
       mangle=st.sampled_from(["none"] * 10 + ["truncate", "garbage_tail",
                                              "duplicate_attribute", "doctype"]),
       where=st.integers(0, 10**6))
def test_extract_lands_whole_or_refuses_cleanly(doc: Document, mangle: str, where: int) -> None:
    content = _mangle(doc.render(), mangle, where)
    with tempfile.TemporaryDirectory() as tmp:
        path, data_dir = Path(tmp) / "statement.xml", Path(tmp) / "data"
        path.write_bytes(content)
        try:
            results = land_flex_files(_settings(data_dir), [path])
        except FlexsyncError as exc:
            _LEDGER["refused"] += 1
            assert "\n" not in str(exc) and str(exc).strip()
            if FOREIGN_ACCOUNT in doc.accounts and mangle in ("none", "garbage_tail"):
                assert isinstance(exc, IBKRAccountMismatchError | InputFileError), exc
            must_land = (mangle == "none" and FOREIGN_ACCOUNT not in doc.accounts
                         and doc.encoding != "utf-16")
            assert not must_land, f"a valid statement was refused: {exc}"
            _nothing_landed(data_dir)
            return
        _LEDGER["landed"] += 1
        assert FOREIGN_ACCOUNT not in doc.accounts, "the account guard let a foreign one in"
        assert _raw_counts(data_dir) == doc.expected_rows()
        assert results[0].statements == len(doc.statements)
        for section, table in (("Trades", "trades"), ("CashTransactions", "cash_transactions")):
            assert _landed_rows(data_dir, table) == _generated_rows(doc, section), table
        archived = list(data_dir.rglob("*.xml.gz"))
        assert len(archived) == 1 and gzip.decompress(archived[0].read_bytes()) == content


def test_extract_property_figures(request: pytest.FixtureRequest) -> None:
    """The report row for the property test above (run just before this one), filed
    under that test, so the row fails when it did."""
    if not _LEDGER:
        pytest.skip("the landing property test did not run in this session")
    property_test = request.node.nodeid.replace(
        request.node.name, test_extract_lands_whole_or_refuses_cleanly.__name__)
    LEDGER.record(property_test, scenario=f"hostile Flex files: {sum(_LEDGER.values())} "
                  f"generated ({_LEDGER['landed']} landed whole, {_LEDGER['refused']} "
                  "refused)", faults=sum(_LEDGER.values()))


# --------------------------------------------------------------------------- transform


def _float_columns(con: object) -> list[str]:
    rows = con.execute(  # type: ignore[attr-defined]
        "select table_schema || '.' || table_name || '.' || column_name from "
        "information_schema.columns where table_schema not in ('raw_ibkr', 'raw_wealthfolio',"
        " 'sync', 'information_schema', 'pg_catalog', 'main') and (data_type in "
        "('FLOAT', 'DOUBLE', 'REAL') or data_type like 'FLOAT%' or data_type like 'DOUBLE%')"
    ).fetchall()
    return [r[0] for r in rows]


def _check_marts(data_dir: Path, docs: list[Document]) -> tuple[list[str], int, int]:
    """(problems, rows in fct_activities, rows in unmapped_transactions)."""
    expect = flexgen.outcomes(docs)
    problems: list[str] = []
    with readonly(data_dir / "warehouse.duckdb") as con:
        problems += [f"float column {c}" for c in _float_columns(con)]
        for column in ("quantity", "unit_price", "amount", "fee"):
            negative = con.execute(f"select external_id, {column} from marts.fct_activities "
                                   f"where {column} < 0").fetchall()
            problems += [f"negative {column}: {r}" for r in negative]
        for mart in ("fct_activities", "activities_to_post"):
            dups = con.execute(f"select external_id, count(*) from marts.{mart} group by 1 "
                               "having count(*) > 1").fetchall()
            problems += [f"duplicate external id in {mart}: {d}" for d in dups]
        fct = {r[0] for r in con.execute("select external_id from marts.fct_activities")
               .fetchall()}
        unmapped = con.execute("select source, source_id, source_row_key from "
                               "marts.unmapped_transactions").fetchall()
    unmapped_ids = {(s, i) for s, i, _ in unmapped if i is not None}
    unmapped_keys = {(s, k) for s, _, k in unmapped}
    for k in sorted(expect.executions):
        trade_id, tx_id = flexgen.TRADE_IDS[k], flexgen.TRANSACTION_IDS[k]
        if k in expect.cancel_related:
            continue  # a cancellation pair may drop out (docs/mapping.md#cancellations)
        if not (f"ibkr:trade:{trade_id}" in fct or ("trade", trade_id) in unmapped_ids
                or ("trade", f"trade:tx:{tx_id}") in unmapped_keys):
            problems.append(f"execution {trade_id}/{tx_id} silently dropped")
    for cash_id in sorted(expect.cash_ids):
        if f"ibkr:cash:{cash_id}" not in fct and ("cash", cash_id) not in unmapped_ids:
            problems.append(f"cash row {cash_id} silently dropped")
    for source, anonymous in (("trade", expect.trade_anonymous),
                              ("cash", expect.cash_anonymous)):
        listed = sum(1 for s, i, key in unmapped if s == source and i is None
                     and str(key).startswith(f"{source}:md5:"))
        if anonymous and not listed:
            problems.append(f"{anonymous} {source} rows without ids, none listed as unmapped")
    for external_id in fct:
        # ibkr:trade:<id>[:commission], ibkr:fx:<id>:in|out|fee, ibkr:cash:<id>
        _, kind, ident = external_id.split(":", 2)
        ident = ident.split(":", 1)[0]
        known = expect.known_trade_ids if kind in ("trade", "fx") else expect.known_cash_ids
        if ident not in known:
            problems.append(f"{external_id} in fct_activities comes from no source row")
    return problems, len(fct), len(unmapped)


def _generate_batch(size: int) -> list[Document]:
    """`size` generated statements (valid XML, configured accounts) for one dbt build."""
    batch: list[Document] = []

    @settings(max_examples=size, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(flexgen.documents(foreign=False, encodings=False))
    def collect(doc: Document) -> None:
        batch.append(doc)

    collect()
    return batch


def test_transform_never_loses_or_invents(tmp_path: Path, reliability_ledger: Recorder) -> None:
    """One dbt build over a batch of generated statements (a dbt build costs seconds, so
    the batch, not each statement, is the example). The files stay in tmp_path."""
    docs = _generate_batch(TRANSFORM_BATCH)
    data_dir = tmp_path / "data"
    for number, doc in enumerate(docs):
        path = tmp_path / f"statement-{number:02d}.xml"
        path.write_bytes(doc.render())
        land_flex_files(_settings(data_dir), [path])
    env = file_mode_env(data_dir, None, IBKR_ACCOUNT_ID_UPSTREAM=",".join(ALLOWED_ACCOUNTS))
    result = run_inprocess(["transform"], env)
    problems = [] if result.code == 0 else [f"dbt build failed: {result.last_line}"]
    mapped = unmapped = 0
    if result.code == 0:
        found, mapped, unmapped = _check_marts(data_dir, docs)
        problems += found
    rows = sum(len(list(d.rows_of("Trades"))) + len(list(d.rows_of("CashTransactions")))
               for d in docs)
    reliability_ledger(scenario=f"transform over {len(docs)} generated statements ({rows} "
                       f"trade/cash rows: {mapped} mapped, {unmapped} unmapped)",
                       faults=len(docs))
    assert result.exception is None, result.describe()
    assert TRACEBACK not in result.stderr
    assert not problems, (f"statements in {tmp_path}", problems[:20])


ODD_NUMBERS_STATEMENT = """<FlexQueryResponse queryName="odd" type="AF">
<FlexStatements count="1"><FlexStatement accountId="U1234567" fromDate="2026-09-01"
 toDate="2026-09-30" whenGenerated="2026-10-01;02:00:00"><Trades>
<Trade accountId="U1234567" currency="GBP" assetCategory="STK" symbol="VOD" conid="29616949"
 listingExchange="LSE" tradeID="7101" transactionID="9101" tradeDate="2026-09-01"
 tradeTime="09:00:00" buySell="BUY" quantity="1000" ibCommission="-3"
 tradePrice="99999999999999999999999999.9999999999" levelOfDetail="EXECUTION" />
<Trade accountId="U1234567" currency="GBX" assetCategory="STK" symbol="VOD" conid="29616949"
 listingExchange="LSE" tradeID="7102" transactionID="9102" tradeDate="2026-09-02"
 tradeTime="09:00:00" buySell="BUY" quantity="10" tradePrice="-0.39" ibCommission="-3"
 levelOfDetail="EXECUTION" />
<Trade accountId="U1234567" currency="GBP" assetCategory="STK" symbol="VOD" conid="29616949"
 listingExchange="LSE" tradeID="7103" transactionID="9103" tradeDate="2026-09-03"
 tradeTime="09:00:00" buySell="BUY" quantity="10" tradePrice="0.71" ibCommission="-3"
 levelOfDetail="EXECUTION" />
</Trades><CashTransactions>
<CashTransaction accountId="U1234567" type="Deposits/Withdrawals" amount="100"
 transactionID="8101" dateTime="2026-09-04;10:00:00" levelOfDetail="DETAIL" />
</CashTransactions></FlexStatement></FlexStatements></FlexQueryResponse>
"""


def test_odd_numbers_do_not_stop_the_build(data_dir: Path, tmp_path: Path) -> None:
    """One odd row must not stop every nightly run for the 90 days it stays in the window:
    it belongs in unmapped_transactions and the rest must still be posted."""
    path = tmp_path / "odd.xml"
    path.write_text(ODD_NUMBERS_STATEMENT)
    land_flex_files(_settings(data_dir), [path])
    result = run_inprocess(["transform"], file_mode_env(data_dir, None))
    assert result.exception is None and TRACEBACK not in result.stderr, result.describe()
    assert result.code == 0, result.last_line
    with readonly(data_dir / "warehouse.duckdb") as con:
        fct = {r[0] for r in con.execute("select external_id from marts.fct_activities")
               .fetchall()}
        unmapped = {r[0] for r in con.execute(
            "select source_id from marts.unmapped_transactions").fetchall()}
    assert fct == {"ibkr:trade:7103"}
    assert {"7101", "7102", "8101"} <= unmapped


# --------------------------------------------------------------------------- fixed cases

ENTITY_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<FlexQueryResponse><FlexStatements count="1"><FlexStatement accountId="U1234567">
<Trades><Trade tradeID="&lol9;"/></Trades></FlexStatement></FlexStatements></FlexQueryResponse>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<FlexQueryResponse><FlexStatements count="1"><FlexStatement accountId="U1234567">
<Trades><Trade tradeID="&xxe;"/></Trades></FlexStatement></FlexStatements></FlexQueryResponse>
"""
FIXED_CASES = {
    "entity bomb": (ENTITY_BOMB, "hostile XML"),
    "external entity": (EXTERNAL_ENTITY, "hostile XML"),
    "empty file": (b"", "empty"),
    "wrong root element": (b'<Statement accountId="U1234567"><Trades/></Statement>',
                           "expected <FlexQueryResponse>"),
}


@pytest.mark.parametrize("case", list(FIXED_CASES))
def test_fixed_bad_file_is_refused_by_the_cli(case: str, data_dir: Path, tmp_path: Path,
                                               reliability_ledger: Recorder) -> None:
    content, phrase = FIXED_CASES[case]
    path = tmp_path / "bad.xml"
    path.write_bytes(content)
    result = run_inprocess(["extract", "--flex-file", str(path)],
                           file_mode_env(data_dir, None))
    reliability_ledger(scenario=f"bad Flex file: {case}", faults=1)
    assert_clean_failure(result, 2, phrase, "nothing landed")
    assert "passwd" not in result.stderr and "root:" not in result.stderr
    _nothing_landed(data_dir)


_PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(code, peak)
"""


def test_100_mb_statement_lands_within_the_memory_bound(
        data_dir: Path, tmp_path: Path, reliability_ledger: Recorder) -> None:
    """Peak RSS of `flexsync extract` on a 100 MB statement, measured by the kernel
    (RUSAGE_CHILDREN of a wrapper whose only child is the landing process)."""
    path = tmp_path / "big.xml"
    rows = generate_flex.write_sized_statement(path, 100 * 1024 * 1024)["rows(Trades)"]
    env = process_env(file_mode_env(data_dir, None))
    probe = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "flexsync", "extract",
         "--flex-file", str(path)], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=600, check=False)
    code, peak_kib = (int(v) for v in probe.stdout.split())
    peak_mib = peak_kib / 1024
    reliability_ledger(scenario=f"100 MB statement, peak RSS {peak_mib:.0f} MiB "
                       f"(bound {MEMORY_BOUND_MIB})", faults=1)
    assert code == 0, probe.stderr[-2000:]
    with readonly(data_dir / "warehouse.duckdb") as con:
        assert con.execute("select count(*) from raw_ibkr.trades").fetchone() == (rows,)
    assert peak_mib <= MEMORY_BOUND_MIB, f"peak RSS {peak_mib:.0f} MiB"

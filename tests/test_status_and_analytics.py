"""`flexsync status`, the analytics copy, and the example queries of docs/analysts.md."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from fakes.wealthfolio import FakeWealthfolio
from tests.helpers import DEMO_STATEMENT, REPO_ROOT, run_cli

PASSWORD = "status-Wf-Pa55"


@pytest.fixture(scope="module")
def demo_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    with FakeWealthfolio(PASSWORD) as fake:
        fake.create_account("IBKR ISA", "GBP")
        account = next(iter(fake.accounts))
        env = {"IBKR_ACCOUNT_ID_UPSTREAM": "U1234567", "IBKR_ACCOUNT_ID": account,
               "WF_BASE_URL": fake.base_url, "WF_PASSWORD": PASSWORD}
        result = run_cli(["sync", "--flex-file", str(DEMO_STATEMENT)], data_dir, **env)
        assert result.returncode == 0, result.stderr
        yield data_dir, account


def test_analytics_copy_is_a_complete_readable_database(demo_warehouse: tuple[Path, str]
                                                        ) -> None:
    data_dir, _ = demo_warehouse
    copy = data_dir / "analytics.duckdb"
    assert copy.exists()
    assert not list(data_dir.glob(".analytics-*"))  # no half-written temp file left
    assert copy.stat().st_mode & 0o777 == 0o640  # the analysts' group reads it, others not
    con = duckdb.connect(str(copy), read_only=True)
    try:
        assert con.execute("select count(*) from marts.fct_activities").fetchone() == (9,)
        assert con.execute("select count(*) from sync.runs").fetchone()[0] >= 1
    finally:
        con.close()


def _readme_sql() -> list[str]:
    text = (REPO_ROOT / "docs" / "analysts.md").read_text()
    guide = text.split("## Example queries", 1)[1]
    return re.findall(r"```sql\n(.*?)```", guide, re.DOTALL)


def test_readme_analyst_queries_run_on_the_demo_warehouse(demo_warehouse: tuple[Path, str]
                                                          ) -> None:
    data_dir, _ = demo_warehouse
    queries = _readme_sql()
    assert len(queries) >= 3
    con = duckdb.connect(str(data_dir / "analytics.duckdb"), read_only=True)
    try:
        results = [con.execute(q).fetchall() for q in queries]
        # The query reading Wealthfolio's state from the warehouse view agrees with dbt's
        # current state (both read the one rule; the rule itself is tested in
        # tests/test_wealthfolio_snapshot.py against the fake's truth).
        [state_sql] = [q for q in queries if "activity_state_versions" in q]
        rebuilt = con.execute(
            f"select id from ({state_sql.strip().rstrip(';')})").fetchall()
        current = con.execute(
            "select wf_activity_id from staging.stg_wealthfolio__activities").fetchall()
    finally:
        con.close()
    assert rebuilt and sorted(rebuilt) == sorted(current)
    by_month, drift, unmapped = results[0], results[1], results[2]
    assert ("BUY" in {r[1] for r in by_month}) and ("DIVIDEND" in {r[1] for r in by_month})
    assert {r[1] for r in drift} >= {"VOD.L", "VUAG.L", "AAPL", "EUNL.DE"}
    assert {(r[1], r[3]) for r in unmapped} >= {("Broker Fees", r[3]) for r in unmapped
                                                 if r[1] == "Broker Fees"}
    assert sum(r[4] for r in unmapped) == 2


def test_status_shows_runs_pending_unmapped_drift_and_config(
        demo_warehouse: tuple[Path, str]) -> None:
    data_dir, account = demo_warehouse
    result = run_cli(["status"], data_dir, IBKR_ACCOUNT_ID=account, WF_PASSWORD=PASSWORD,
                     IBKR_FLEX_TOKEN="tok-should-not-show", IBKR_ACCOUNT_ID_UPSTREAM="U1234567")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("Last 10 runs", "sync", "success", "Pending activities", "Unmapped rows",
                 "Broker Fees", "unsupported asset category", "Position drift", "VOD.L",
                 "Cash drift",
                 "U1234567", account):
        assert text in out, text
    assert PASSWORD not in out and "tok-should-not-show" not in out
    assert "set" in out  # secrets are reported as set / not set only


def test_status_without_a_warehouse(tmp_path: Path) -> None:
    result = run_cli(["status"], tmp_path / "nothing")
    assert result.returncode == 0
    assert "No warehouse yet" in result.stdout

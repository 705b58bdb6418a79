"""Incremental staging (macros/incremental.sql, flexsync.transform): a nightly build reads
only the extracts landed since the last build, gives the same tables a full rebuild
gives, rebuilds a table whose SQL changed, and --full-refresh never drops the drift
history; seeds loaded from the same CSV are not loaded again. Real processes, real dbt,
one warehouse for the module."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.helpers import query, run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "flex"
ACCOUNTS = "U7654321,U7654322,U7654323"
STAGING = ("stg_ibkr__trades", "stg_ibkr__cash_transactions", "stg_ibkr__securities_info",
           "stg_ibkr__open_positions", "stg_ibkr__cash_reports")
MARTS = ("fct_activities", "unmapped_transactions", "activities_to_post")
SEEDS = ("cash_type_mapping", "corporate_action_types", "exchanges", "symbol_overrides",
         "symbol_rules", "time_zone_abbreviations")


def _cli(args: list[str], data_dir: Path) -> str:
    result = run_cli(args, data_dir, IBKR_ACCOUNT_ID_UPSTREAM=ACCOUNTS,
                     IBKR_ACCOUNT_ID="wf-test", DBT_TARGET_PATH=str(data_dir / "target"),
                     DBT_LOG_PATH=str(data_dir / "logs"))
    assert result.returncode == 0, f"flexsync {args}: {result.returncode}\n{result.stderr}"
    return result.stderr + result.stdout


def _table(data_dir: Path, relation: str) -> list[tuple[object, ...]]:
    return sorted(query(data_dir, f"select * from {relation}"), key=repr)


def _trade_ids(data_dir: Path) -> set[str]:
    return {r[0] for r in query(data_dir, "select trade_id from staging.stg_ibkr__trades "
                                          "where trade_id is not null")}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("incremental")
    _cli(["extract", "--flex-file", str(FIXTURES / "window_1.xml")], path)
    _cli(["transform"], path)
    return path


def test_staging_tables_are_incremental_and_fingerprinted(data_dir: Path) -> None:
    kinds = dict(query(data_dir, "select table_name, table_type from information_schema.tables"
                                 " where table_schema = 'staging'"))
    assert {kinds[name] for name in STAGING} == {"BASE TABLE"}
    recorded = dict(query(data_dir, "select relation, fingerprint "
                                    "from sync.dbt_incremental_models"))
    assert {relation for relation in recorded if relation.startswith("staging.")} == {
        f"staging.{name}" for name in STAGING}
    assert sorted(relation.split(".")[1] for relation in recorded
                  if not relation.startswith("staging.")) == sorted(SEEDS)
    assert all(len(fingerprint) == 64 for fingerprint in recorded.values())


def test_incremental_build_reads_only_new_extracts_and_matches_a_full_rebuild(
        data_dir: Path) -> None:
    # The newest extract a table holds is read again (`>=`), older ones are not: with
    # window 2 built, a row only window 1 holds, removed behind dbt's back, stays gone
    # through the next incremental build; a full rebuild brings it back.
    _cli(["extract", "--flex-file", str(FIXTURES / "window_2.xml")], data_dir)
    _cli(["transform"], data_dir)
    only_in_window_1 = "1001"  # window 2 repeats 1005 and 1011 only
    assert only_in_window_1 in _trade_ids(data_dir)
    newest_extract = query(data_dir, "select extract_id from raw_ibkr.extracts "
                                     "order by landed_at desc limit 1")[0][0]
    # Window 2 repeats trade 1005: one row, window 2's.
    assert query(data_dir, "select extract_id from staging.stg_ibkr__trades "
                           "where trade_id = '1005'") == [(newest_extract,)]
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
        con.execute("delete from staging.stg_ibkr__trades where trade_id = ?",
                    [only_in_window_1])

    _cli(["extract", "--flex-file", str(FIXTURES / "multi_statement.xml")], data_dir)
    _cli(["transform"], data_dir)
    trade_ids = _trade_ids(data_dir)
    assert only_in_window_1 not in trade_ids
    assert "1014" in trade_ids  # window 2's new trade
    accounts = {r[0] for r in query(data_dir, "select distinct broker_account_id "
                                              "from staging.stg_ibkr__trades")}
    assert accounts > {"U7654321"}  # the multi-statement file's other accounts

    incremental = {name: _table(data_dir, f"staging.{name}") for name in STAGING}
    incremental_marts = {name: _table(data_dir, f"marts.{name}") for name in MARTS}

    output = _cli(["transform", "--full-refresh"], data_dir)
    assert "rebuilding staging.stg_ibkr__trades from every landed row (--full-refresh)" in output
    assert only_in_window_1 in _trade_ids(data_dir)
    rebuilt = {name: _table(data_dir, f"staging.{name}") for name in STAGING}
    # Apart from the row removed by hand, incremental == full rebuild, row for row.
    removed = [row for row in rebuilt["stg_ibkr__trades"]
               if row not in incremental["stg_ibkr__trades"]]
    assert len(removed) == 1 and only_in_window_1 in removed[0]
    for name in STAGING[1:]:
        assert rebuilt[name] == incremental[name], name
    for name in MARTS:
        rows = _table(data_dir, f"marts.{name}")
        # fct/unmapped/to_post may differ only by the removed trade's activity.
        extra = [row for row in rows if row not in incremental_marts[name]]
        assert all(f"ibkr:trade:{only_in_window_1}" in row or only_in_window_1 in row
                   for row in extra), (name, extra)


def test_changed_sql_rebuilds_the_table_from_every_landed_row(data_dir: Path) -> None:
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
        before = con.execute("select count(*) from staging.stg_ibkr__cash_transactions"
                             ).fetchone()
        con.execute("delete from staging.stg_ibkr__cash_transactions")
        # As if an older flexsync's SQL had built the table.
        con.execute("update sync.dbt_incremental_models set fingerprint = 'older-sql' "
                    "where relation = 'staging.stg_ibkr__cash_transactions'")
    output = _cli(["transform"], data_dir)
    assert ("rebuilding staging.stg_ibkr__cash_transactions from every landed row "
            "(its SQL changed)") in output
    assert "rebuilding staging.stg_ibkr__trades" not in output
    assert query(data_dir, "select count(*) from staging.stg_ibkr__cash_transactions"
                 )[0] == before
    assert query(data_dir, "select fingerprint from sync.dbt_incremental_models where "
                           "relation = 'staging.stg_ibkr__cash_transactions'")[0][0] != (
        "older-sql")


def test_full_refresh_keeps_the_drift_history(data_dir: Path) -> None:
    runs_before = query(data_dir, "select count(distinct run_id) "
                                  "from marts.position_drift_history")[0][0]
    assert runs_before >= 3
    _cli(["transform", "--full-refresh"], data_dir)
    assert query(data_dir, "select count(distinct run_id) from marts.position_drift_history"
                 )[0][0] == runs_before + 1


def _seed_relation(data_dir: Path, seed: str) -> str:
    return next(relation for (relation,) in query(
        data_dir, "select relation from sync.dbt_incremental_models")
        if relation.endswith(f".{seed}"))


def test_a_seed_loaded_from_the_same_csv_is_skipped_but_tests_reading_it_still_run(
        data_dir: Path) -> None:
    exchanges = _seed_relation(data_dir, "exchanges")
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
        count = con.execute(f"select count(*) from {exchanges}").fetchone()[0]
        # Behind dbt's back: forget the exchange code the fixture's trades list on.
        used = con.execute("select listing_exchange from staging.stg_ibkr__trades "
                           "where listing_exchange is not null limit 1").fetchone()[0]
        con.execute(f"delete from {exchanges} where ibkr_code = ?", [used])
    output = _cli(["-v", "transform"], data_dir)
    # Not reloaded (the row stays gone), and the test reading trades *and* the seed ran.
    assert query(data_dir, f"select count(*) from {exchanges}")[0][0] == count - 1
    assert ("--exclude " + " ".join(SEEDS)) in output
    assert ("dbt warning: test.flexsync.codes_known_to_seed_stg_ibkr__trades_listing_exchange"
            in output)

    # A changed CSV (here: an older fingerprint) loads the seed again.
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
        con.execute("update sync.dbt_incremental_models set fingerprint = 'older-csv' "
                    "where relation = ?", [exchanges])
    output = _cli(["-v", "transform"], data_dir)
    assert ("--exclude " + " ".join(s for s in SEEDS if s != "exchanges") + " ") in output
    assert query(data_dir, f"select count(*) from {exchanges}")[0][0] == count
    assert query(data_dir, "select fingerprint from sync.dbt_incremental_models "
                           "where relation = ?", [exchanges])[0][0] != "older-csv"

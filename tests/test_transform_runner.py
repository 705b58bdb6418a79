"""flexsync.transform without dbt (fakes), and the one real failure path through the CLI."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from flexsync import transform
from flexsync.cli import app
from flexsync.core.errors import ConfigurationError, DbtError, ExitCode, WarehouseLockedError

REPO_ROOT = Path(__file__).resolve().parents[1]


def _result(status: str, unique_id: str, message: str = "") -> SimpleNamespace:
    return SimpleNamespace(status=status, node=SimpleNamespace(unique_id=unique_id,
                                                               name=unique_id.split(".")[-1]),
                           message=message)


def _outcome(*results: SimpleNamespace, success: bool = True,
             exception: BaseException | None = None) -> SimpleNamespace:
    return SimpleNamespace(result=SimpleNamespace(results=list(results)), success=success,
                           exception=exception)


def test_failed_nodes_are_named_in_the_dbt_error() -> None:
    outcome = _outcome(
        _result("success", "model.flexsync.stg_ibkr__trades"),
        _result("fail", "test.flexsync.unique_fct_activities_external_id",
                "Got 2 results, configured to fail if != 0"),
        _result("error", "model.flexsync.fct_activities", "Binder Error: x\nmore"),
        _result("skipped", "model.flexsync.activities_to_post"),
        success=False,
    )
    with pytest.raises(DbtError) as caught:
        transform._raise_for_failures(outcome)
    text = str(caught.value)
    assert "2 node(s) failed" in text
    assert "test.flexsync.unique_fct_activities_external_id (fail: Got 2 results" in text
    assert "model.flexsync.fct_activities (error: Binder Error: x)" in text
    assert "activities_to_post" not in text
    assert caught.value.exit_code == ExitCode.DBT


def test_warnings_are_returned_not_raised() -> None:
    outcome = _outcome(_result("pass", "test.flexsync.a"),
                       _result("warn", "test.flexsync.codes_known", "Got 1 result"))
    assert transform._raise_for_failures(outcome) == (
        2, ["test.flexsync.codes_known: Got 1 result"])


def test_a_locked_warehouse_is_exit_8_not_6() -> None:
    locked = _outcome(_result("error", "model.flexsync.stg_ibkr__trades",
                              'IO Error: Could not set lock on file "w.duckdb": Conflicting '
                              "lock is held in python3.11 (PID 42)"), success=False)
    with pytest.raises(WarehouseLockedError):
        transform._raise_for_failures(locked)
    crashed = _outcome(success=False, exception=RuntimeError("Could not set lock on file x"))
    with pytest.raises(WarehouseLockedError):
        transform._raise_for_failures(crashed)


def test_an_invocation_error_is_a_dbt_error() -> None:
    outcome = _outcome(success=False, exception=RuntimeError("Compilation Error in model x\n.."))
    with pytest.raises(DbtError, match=r"dbt build could not run: Compilation Error in model x$"):
        transform._raise_for_failures(outcome)


def test_production_runs_leave_unit_tests_to_make_test() -> None:
    args = transform.build_args(REPO_ROOT, None, include_unit_tests=False, log_format="text")
    assert args[:5] == ["build", "--project-dir", str(REPO_ROOT), "--profiles-dir",
                        str(REPO_ROOT)]
    assert args[args.index("--exclude-resource-type") + 1] == "unit_test"
    with_units = transform.build_args(REPO_ROOT, ["position_drift+"], include_unit_tests=True,
                                      log_format="json")
    assert "--exclude-resource-type" not in with_units
    assert with_units[with_units.index("--select") + 1] == "position_drift+"
    assert with_units[with_units.index("--log-format") + 1] == "json"


def test_project_dir_from_env_or_from_the_source_tree(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.delenv("FLEXSYNC_PROJECT_DIR", raising=False)
    assert transform.find_project_dir() == REPO_ROOT
    monkeypatch.setenv("FLEXSYNC_PROJECT_DIR", str(REPO_ROOT))
    assert transform.find_project_dir() == REPO_ROOT
    monkeypatch.setenv("FLEXSYNC_PROJECT_DIR", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"no dbt_project\.yml"):
        transform.find_project_dir()


def test_environment_is_restored_after_the_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEXSYNC_RUN_ID", "outer")
    monkeypatch.delenv("FLEXSYNC_RUN_AT", raising=False)
    seen: dict[str, Any] = {}
    with transform._environment({"FLEXSYNC_RUN_ID": "inner", "FLEXSYNC_RUN_AT": "t"}):
        seen.update(run_id=os.environ["FLEXSYNC_RUN_ID"], run_at=os.environ["FLEXSYNC_RUN_AT"])
    assert seen == {"run_id": "inner", "run_at": "t"}
    assert os.environ["FLEXSYNC_RUN_ID"] == "outer"
    assert "FLEXSYNC_RUN_AT" not in os.environ


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("0E-10"), "0"), (Decimal("-1.1000000000"), "-1.1"),
    (Decimal("12500.0000000000"), "12500"), (Decimal("0.0000000001"), "0.0000000001"),
    (None, "?"),
])
def test_amounts_are_logged_as_people_write_them(value: Decimal | None, text: str) -> None:
    assert transform.format_amount(value) == text


def test_summary_line_and_counts() -> None:
    result = transform.TransformResult(fct_rows=3, to_post=2, unmapped=1, drift_rows=4,
                                       nodes_run=50)
    assert result.counts == {"fct_rows": 3, "to_post": 2, "unmapped": 1, "drift_rows": 4}
    assert result.summary() == ("dbt build ok (50 nodes): 3 activities mapped, 2 to post, "
                                "1 unmapped, 4 drift rows")


def test_empty_warehouse_builds_then_a_failing_data_test_exits_6(tmp_path: Path) -> None:
    """Real dbt, twice. First on a warehouse holding only the pre-created raw tables (the
    models read nothing but CORE_SECTION_COLUMNS, so a statement lacking a section or an
    attribute still builds). Then a ledger row with a status the loaders never write
    fails a data test: exit 6, the test named, no traceback."""
    data_dir = tmp_path / "data"
    env = {"BROKER_SYNC_DATA_DIR": str(data_dir), "DO_NOT_TRACK": "1",
           "DBT_TARGET_PATH": str(tmp_path / "target"), "DBT_LOG_PATH": str(tmp_path / "logs"),
           "IBKR_ACCOUNT_ID": ""}
    runner = CliRunner()
    empty = runner.invoke(app, ["transform"], env=env, catch_exceptions=False)
    assert empty.exit_code == 0, empty.output
    assert "0 activities mapped, 0 to post, 0 unmapped, 0 drift rows" in empty.output

    con = duckdb.connect(str(data_dir / "warehouse.duckdb"))
    con.execute("insert into sync.posted_activities values "
                "('ibkr:trade:1', null, 'bogus', null, 'r', now())")
    con.close()
    result = runner.invoke(app, ["transform"], env=env, catch_exceptions=False)
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == ExitCode.DBT, output
    assert "dbt build failed: 1 node(s) failed" in output
    assert "stg_sync__posted_activities_row_checks" in output
    assert "Traceback" not in output


def test_the_run_context_does_not_re_parse_the_project(tmp_path: Path) -> None:
    """The image bakes `dbt parse` without any run's settings (scripts/install-image.sh);
    a run then passes its id, time, account, account map and zone as env vars. None of
    them may make dbt re-parse a file (macros read them only while executing): the
    re-parse of the files reading them cost ≈1.5 s every night. Real dbt, twice."""
    import json
    import subprocess
    import sys

    data_dir, target = tmp_path / "data", tmp_path / "target"
    bare = {**os.environ, "BROKER_SYNC_DATA_DIR": str(data_dir), "DO_NOT_TRACK": "1",
            "DBT_TARGET_PATH": str(target), "DBT_LOG_PATH": str(tmp_path / "logs")}
    for key in ("IBKR_ACCOUNT_ID", "IBKR_ACCOUNT_MAP", "IBKR_TIMEZONE", "FLEXSYNC_RUN_ID",
                "FLEXSYNC_RUN_AT"):
        bare.pop(key, None)
    dbt = Path(sys.executable).parent / "dbt"
    subprocess.run([str(dbt), "parse", "--quiet", "--project-dir", str(REPO_ROOT),
                    "--profiles-dir", str(REPO_ROOT)], env=bare, check=True)
    (target / "perf_info.json").unlink()
    result = CliRunner().invoke(app, ["transform"], catch_exceptions=False, env={
        **bare, "IBKR_ACCOUNT_ID": "6f1f7a2e-1d0c-4f55-9a35-0d3f2b7c9e11",
        "IBKR_TIMEZONE": "America/New_York"})
    assert result.exit_code == 0, result.output
    perf = json.loads((target / "perf_info.json").read_text())
    assert perf["is_partial_parse_enabled"]
    assert perf["parsed_path_count"] == 0, "the run's settings made dbt re-parse files"


def _warehouse_with(tmp_path: Path, raw: int, staged: int | None = None) -> Any:
    """Settings of a warehouse holding `raw` raw trades and, unless None, `staged` staged
    trades (an empty staged cash table beside them)."""
    from flexsync.core.config import load_settings
    from flexsync.core.warehouse import connect, ensure_schema

    settings = load_settings({"BROKER_SYNC_DATA_DIR": str(tmp_path), "IBKR_ACCOUNT_ID": ""})
    tmp_path.mkdir(exist_ok=True)
    with connect(settings.warehouse_path) as con:
        ensure_schema(con)
        con.execute(f"insert into raw_ibkr.trades (_extract_id) select 'x' from range({raw})")
        if staged is not None:
            con.execute("create schema staging")
            con.execute("create table staging.stg_ibkr__trades as select range as trade_id "
                        f"from range({staged})")
            con.execute("create table staging.stg_ibkr__cash_transactions (id integer)")
    return settings


def _threads_given(settings: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The `--threads` arguments of one build, dbt itself faked."""
    invoked: list[list[str]] = []

    def fake_dbt(args: list[str], manifest: Any = None, trim: bool = False) -> Any:
        invoked.append(args)
        return _outcome()

    monkeypatch.setattr(transform, "parsed_manifest",
                        lambda *_: SimpleNamespace(nodes={}, macros={}))
    monkeypatch.setattr(transform, "_invoke_dbt", fake_dbt)
    transform.run_transform(settings, "run-1")
    [args] = invoked
    return args[args.index("--threads"):args.index("--threads") + 2] if "--threads" in args else []


@pytest.mark.parametrize(("threshold", "threads"), [(2, ["--threads", "1"]), (10_000, [])])
def test_a_large_warehouse_builds_one_node_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threshold: int,
        threads: list[str]) -> None:
    """Two dbt threads share DuckDB's memory_limit: once raw_ibkr is large, every build
    (a nightly one too: the intermediate tables rebuild from every staged row) runs one
    node at a time — at 5 years of history two threads ran out of the 64MB.
    A small warehouse keeps the profile's two threads. dbt itself is faked here."""
    settings = _warehouse_with(tmp_path, raw=5)
    monkeypatch.setattr(transform, "LARGE_WAREHOUSE_ROWS", threshold)
    assert _threads_given(settings, monkeypatch) == threads


@pytest.mark.parametrize(("raw", "staged", "threads"), [
    (30, None, ["--threads", "1"]),  # a backfill's first build: every landed row is new
    (30, 5, []),  # nightly windows: each row landed many times, staged once
    (5, 30, ["--threads", "1"]),  # the nights after a backfill: much is staged
])
def test_a_big_staged_history_builds_one_node_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: int, staged: int | None,
        threads: list[str]) -> None:
    """Nightly 90-day windows land each row ≈90 times and stage it once; a backfill lands
    and stages every row once. Below LARGE_WAREHOUSE_ROWS raw rows, what is staged (the
    raw rows before a first build) decides. dbt itself is faked here."""
    settings = _warehouse_with(tmp_path, raw, staged)
    monkeypatch.setattr(transform, "LARGE_STAGED_ROWS", 20)
    assert _threads_given(settings, monkeypatch) == threads


OOM = ("Out of Memory Error: could not allocate block of size 256.0 KiB "
       "(60.9 MiB/61.0 MiB used)")


def _builds(settings: Any, monkeypatch: pytest.MonkeyPatch,
            outcomes: list[SimpleNamespace]) -> list[list[str]]:
    """The `--threads` arguments of each dbt build run_transform asks for, dbt answering
    with `outcomes` in turn; run_transform's error, if any, is raised."""
    invoked: list[list[str]] = []

    def fake_dbt(args: list[str], manifest: Any = None, trim: bool = False) -> Any:
        invoked.append(args[args.index("--threads"):args.index("--threads") + 2]
                       if "--threads" in args else [])
        return outcomes[len(invoked) - 1]

    monkeypatch.setattr(transform, "parsed_manifest",
                        lambda *_: SimpleNamespace(nodes={}, macros={}))
    monkeypatch.setattr(transform, "_invoke_dbt", fake_dbt)
    try:
        transform.run_transform(settings, "run-1")
    finally:
        monkeypatch.undo()
    return invoked


def test_two_nodes_out_of_duckdbs_memory_build_again_one_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Which two nodes overlap varies; a pair that does not fit in the shared 64MB (seen
    once in ≈12 nights at a year of history) must not fail the night: the build runs
    again with one thread. dbt itself is faked here."""
    settings = _warehouse_with(tmp_path, raw=5)
    failed = _outcome(
        _result("error", "test.flexsync.int_wealthfolio__cash_balances_row_checks", OOM),
        _result("error", "model.flexsync.int_ibkr__cash_transactions_classified",
                OOM.replace("could not allocate", "failed to pin")),
        _result("skipped", "model.flexsync.fct_activities"), success=False)
    with caplog.at_level("WARNING", logger="flexsync"):
        assert _builds(settings, monkeypatch, [failed, _outcome()]) == [[], ["--threads", "1"]]
    assert ("ran out of its DuckDB memory with two nodes at once "
            "(int_wealthfolio__cash_balances_row_checks, int_ibkr__cash_transactions_"
            "classified): building again one node at a time") in caplog.text


@pytest.mark.parametrize(("raw", "other"), [
    (5, _result("fail", "test.flexsync.unique_fct_activities_external_id",
                "Got 2 results, configured to fail if != 0")),  # a real failure beside it
    (50, None),  # already one node at a time: nothing to gain
])
def test_out_of_memory_is_not_retried_when_it_cannot_help(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: int,
        other: SimpleNamespace | None) -> None:
    settings = _warehouse_with(tmp_path, raw=raw)
    monkeypatch.setattr(transform, "LARGE_WAREHOUSE_ROWS", 20)
    results = [_result("error", "model.flexsync.int_ibkr__symbols_canonicalised", OOM)]
    failed = _outcome(*results, *([other] if other else []), success=False)
    with pytest.raises(DbtError, match="int_ibkr__symbols_canonicalised"):
        _builds(settings, monkeypatch, [failed, _outcome()])


def _parse_and_count_frozen(settings: Any) -> tuple[int, int]:
    import gc

    # As a run's child starts: nothing frozen of its own, no project parsed yet (this
    # test process may have parsed it for an earlier test).
    gc.unfreeze()
    transform._manifests.clear()
    before = gc.get_freeze_count()
    transform.parse_project(settings)
    return before, gc.get_freeze_count()


def test_the_parsed_project_is_kept_out_of_collections(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dbt's parsed project lives as long as its process: its objects are frozen, so the
    build's collections skip them. Real dbt, in a stage's child as a run parses it."""
    from flexsync.core.config import load_settings
    from flexsync.isolation import in_child
    from flexsync.runs import RunRecord

    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    monkeypatch.setenv("DBT_LOG_PATH", str(tmp_path / "logs"))
    settings = load_settings({"BROKER_SYNC_DATA_DIR": str(tmp_path / "data")})
    before, after = in_child("parse", RunRecord("run-1", "transform"),
                             _parse_and_count_frozen, settings)
    assert before == 0
    assert after > 100_000  # dbt's modules and the manifest alone: ≈175,000 objects

"""The stages of a run, one function each: extract, snapshot, transform, load, publish, push.

Every stage takes the run's settings and its RunRecord, times itself there, adds its
counts and logs one summary line. Each opens the warehouse for as short a time as it
can and closes it, so dbt (in-process) and the loaders can open it in turn; the run
lock (an flock on the data directory) is held around the whole command by `runs`.
The commands run the heavy ones in a child process each (flexsync/isolation.py), so
this module imports nothing heavy at the top: the landing (pyarrow) is imported inside
`_land`, dbt inside flexsync.transform's functions, the HTTP clients (httpx, which
brings click, rich and pygments along: ≈8 MiB) inside the stages that talk to a server,
prometheus_client inside `push`. The run's own process then holds none of them beside
its stages' children, and forks less for them to copy.
The settings each stage needs are checked by the command before its first stage, with
`require_extract` and `require_load` (exit 2 before any network call or write).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from flexsync.core.config import Settings, require
from flexsync.core.errors import ConfigurationError, FlexsyncError
from flexsync.core.warehouse import connect, ensure_schema, prepare_data_dir
from flexsync.extract.flex_source import FlexSource
from flexsync.isolation import in_child
from flexsync.loaders.analytics_copy import publish_analytics_copy
from flexsync.runs import RunRecord, last_success
from flexsync.transform import parse_project, run_transform

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from flexsync.extract.flex_landing import LandingResult
    from flexsync.loaders.wealthfolio_loader import LoadAborted, LoadResult

log = logging.getLogger("flexsync")

# The marts only the drift needs: a sync that posts builds them once, after the load
# (the rest of the project before it, to know what to post).
DRIFT_MARTS = ["position_drift", "position_drift_history", "cash_drift",
               "cash_drift_history"]
# What the drift refresh rebuilds once Wealthfolio has changed. stg_wealthfolio__activities
# is a table (the state rebuilt from the snapshot rows): first, so the drift reads the
# snapshot just taken.
DRIFT_MODELS = ["stg_wealthfolio__activities", "activities_to_post", *DRIFT_MARTS]


def require_extract(settings: Settings, files: list[Path]) -> None:
    """Files need only the account guard; a download needs the token and the query too."""
    if files:
        require(settings, "upstream_account_ids")
    else:
        require(settings, "flex_token", "flex_query_id", "upstream_account_ids")


def require_load(settings: Settings, dry_run: bool) -> None:
    """Posting needs Wealthfolio; a dry run posts nothing, so it needs none."""
    if not dry_run:
        require(settings, "wf_base_url", "wf_account_id")


# --------------------------------------------------------------------------- extract


def extract(settings: Settings, record: RunRecord, files: list[Path]) -> None:
    """Land the Flex statement(s) raw in DuckDB: the files given, or a fresh download."""
    with record.stage("extract"):
        results = land_flex_files(settings, files) if files else download_and_land(settings)
    landed = [r for r in results if not r.already_landed]
    rows = sum(r.row_count for r in landed)
    record.counts.update(files_landed=len(landed),
                         files_already_landed=len(results) - len(landed), raw_rows=rows)
    record.log_stage("extract", f"{len(landed)} statement file(s) landed ({rows:,} raw rows), "
                                f"{len(results) - len(landed)} already landed")


def statement_bytes(files: list[Path]) -> int:
    """The size of the statement files given (0 for a download, or what cannot be read:
    the extract reports that)."""
    total = 0
    for path in files:
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total


def land_flex_files(settings: Settings, paths: list[Path]) -> list[LandingResult]:
    """File mode: no token, no network."""
    sources = []
    for path in paths:
        if not path.is_file():
            raise ConfigurationError(f"--flex-file {path}: no such file")
        sources.append(FlexSource(name=str(path), path=path))
    return _land(settings, sources)


def download_and_land(settings: Settings) -> list[LandingResult]:
    """Download mode: SendRequest → GetStatement → land the bytes."""
    from flexsync.extract.flex_client import FlexClient  # httpx: the module doc says why

    download = FlexClient.from_settings(settings).download()
    source = FlexSource(
        name=f"flex query {settings.flex_query_id} ({download.reference_code})",
        content=download.content, query_id=settings.flex_query_id,
        reference_code=download.reference_code, fetched_at=download.fetched_at,
    )
    return _land(settings, [source])


def _land(settings: Settings, sources: list[FlexSource]) -> list[LandingResult]:
    # Imported here, in the extract's child process: it brings pyarrow (≈26 MiB), which
    # the run's thin parent process must never hold (flexsync/isolation.py).
    from flexsync.extract.flex_landing import land_sources

    prepare_data_dir(settings.data_dir)
    remove_orphaned_archive_temps(settings.archive_dir)
    with connect(settings.warehouse_path) as con:
        ensure_schema(con)
        return land_sources(con, sources, settings.upstream_account_ids, settings.archive_dir)


def remove_orphaned_archive_temps(archive_dir: Path) -> int:
    """A run killed while archiving leaves `.tmp-*.gz` beside the archive; we hold the run
    lock, so none is in use: remove them rather than let them fill the volume."""
    removed = 0
    if archive_dir.is_dir():
        for stale in archive_dir.glob("*/.tmp-*.gz"):
            stale.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("removed %d unfinished archive file(s) left by a killed run", removed)
    return removed


# -------------------------------------------------------------------------- snapshot


def snapshot(settings: Settings, record: RunRecord, count_as: str = "wf_snapshot_rows",
             from_day: date | None = None) -> None:
    """Snapshot each target Wealthfolio account into raw_wealthfolio (what changed since
    its last snapshot; with `from_day`, among the activities dated from then on); skipped
    when Wealthfolio is not configured."""
    if not settings.wealthfolio_configured:
        log.info("Wealthfolio not configured (WF_BASE_URL unset): snapshot skipped")
        return
    require(settings, "wf_account_id")
    # httpx, in the stage's child (the module doc says why).
    from flexsync.extract.wealthfolio_snapshot import snapshot_activities
    from flexsync.loaders.wealthfolio_client import WealthfolioClient

    count = 0
    with record.stage("snapshot"):
        with WealthfolioClient.from_settings(settings) as client, \
                connect(settings.warehouse_path) as con:
            for account_id in settings.wf_targets:
                count += int(snapshot_activities(con, client, account_id, record.run_id,
                                                 from_day=from_day).activity_count)
    record.counts[count_as] = count
    record.log_stage("snapshot", f"Wealthfolio snapshot of {count:,} activities")


# ------------------------------------------------------------------------- transform


def prepare_dbt(settings: Settings) -> None:
    """Import dbt and parse the project (≈2 s, no warehouse needed): a sync's dbt worker
    does it while the statement lands, so its build starts sooner."""
    parse_project(settings)


def transform(settings: Settings, record: RunRecord, select: list[str] | None = None,
              label: str = "transform", full_refresh: bool = False,
              exclude: list[str] | None = None) -> None:
    """`dbt build` (all of it, or the `select`ed models, less the `exclude`d), timed and
    counted as `label`."""
    with record.stage(label):
        result = run_transform(settings, record.run_id, select=select,
                               run_at=record.started_at, full_refresh=full_refresh,
                               exclude=exclude)
    record.counts.update({f"{label}_{k}": v for k, v in result.counts.items()})
    record.log_stage(label, result.summary())


def refresh_drift(settings: Settings, record: RunRecord) -> None:
    """Snapshot what the load changed and rebuild the marts that depend on it (drift)."""
    snapshot_after_load(settings, record)
    build_drift_models(settings, record)


def build_drift_models(settings: Settings, record: RunRecord) -> None:
    transform(settings, record, select=DRIFT_MODELS, label="drift")


def snapshot_after_load(settings: Settings, record: RunRecord) -> None:
    """Snapshot Wealthfolio after the load: only the activities dated from the earliest
    day the load created or deleted (the snapshot before the load holds for the older
    ones, and fetching every activity twice a night was what grew most with history);
    none when the load changed nothing; every activity when a day is unknown or no load
    ran."""
    touched = record.wealthfolio_touched
    if touched is not None and not touched:
        log.info("the load changed nothing in Wealthfolio: the snapshot before it holds",
                 extra={"stage": "snapshot"})
        return
    from_day = None if touched is None or None in touched else min(
        day for day in touched if day is not None)
    snapshot(settings, record, count_as="wf_snapshot_rows_after", from_day=from_day)


def refresh_drift_importing_dbt(settings: Settings, record: RunRecord) -> None:
    """`refresh_drift` in a child of its own (`flexsync load`, a big sync's). Its snapshot
    runs first, in a child of this one, and dbt is imported after it: what a snapshot of
    a whole backfill leaves in a process (DuckDB's and Python's freed memory, kept by
    their allocators) would otherwise sit under dbt's build."""
    in_child("snapshot", record, snapshot_after_load, settings, record)
    build_drift_models(settings, record)


# ------------------------------------------------------------------------------ load


def load(settings: Settings, record: RunRecord) -> None:
    """Post marts.activities_to_post; raise WealthfolioError (exit 5) if any row failed,
    after every other row was posted and recorded."""
    # httpx, in the stage's child (the module doc says why).
    from flexsync.loaders.account_preflight import check_accounts, statement_base_currencies
    from flexsync.loaders.wealthfolio_client import WealthfolioClient
    from flexsync.loaders.wealthfolio_loader import (
        LoadAborted,
        load_activities,
        raise_for_failures,
        summary_text,
    )

    result: LoadResult
    aborted: LoadAborted | None = None
    with record.stage("load"):
        with WealthfolioClient.from_settings(settings) as client, \
                connect(settings.warehouse_path) as con:
            # Exit 5 before any post when a target account cannot take the activities.
            check_accounts(client, settings.wf_targets, statement_base_currencies(con))
            try:
                result = load_activities(con, client, record.run_id,
                                         default_account_id=settings.wf_account_id or None)
            except LoadAborted as exc:
                result, aborted = exc.result, exc
    record.counts.update(posted=len(result.posted), already_present=len(result.already_present),
                         failed=len(result.failed))
    record.wealthfolio_touched = result.touched_days
    record.log_stage("load", summary_text(result))
    for failure in result.failed:
        log.warning("not posted, will retry next run: %s — %s", failure.external_id,
                    failure.reason, extra={"external_id": failure.external_id})
    if aborted is not None:
        raise aborted
    raise_for_failures(result)


def show_plan(settings: Settings) -> None:
    """--dry-run: print what would be posted (nothing is sent)."""
    from rich.console import Console

    from flexsync.loaders.wealthfolio_loader import plan_activities

    with connect(settings.warehouse_path) as con:
        plan = plan_activities(con, default_account_id=settings.wf_account_id or None)
    Console(width=160).print(plan.table())


# --------------------------------------------------------------------------- publish


def publish(settings: Settings, record: RunRecord) -> None:
    """Copy the warehouse atomically to analytics.duckdb (after a fully successful run)."""
    with record.stage("publish"):
        publish_analytics_copy(settings)


# ------------------------------------------------------------------------------ push


@contextmanager
def pushed_last(settings: Settings, record: RunRecord, dry_run: bool) -> Iterator[None]:
    """Push the run's metrics when the stages inside are over, with their true outcome.

    Last, because until the analytics copy is in place the run has not succeeded, and a
    success pushed too early would keep IBKRSyncStale quiet after a failed run. A failed
    run's push is best effort: it never hides the run's own error. --dry-run prints the
    metrics of a successful run and pushes nothing.
    """
    try:
        yield
    except FlexsyncError as exc:
        # Not for --dry-run, nor without a gateway, nor twice (the push itself failed).
        if not dry_run and settings.pushgateway_url and "push" not in record.stage_seconds:
            try:
                push(settings, record, exit_code=int(exc.exit_code))
            except Exception as push_exc:  # a broken warehouse or gateway must not mask exc
                log.warning("could not push the failed run's metrics either: %s", push_exc)
        raise
    push(settings, record, exit_code=0, dry_run=dry_run)


def push(settings: Settings, record: RunRecord, exit_code: int, dry_run: bool = False) -> None:
    """One push per run (per account with IBKR_ACCOUNT_MAP: each IBKR account's group
    carries its own drift under its own `account` label); without PUSHGATEWAY_URL (or
    with --dry-run) print them instead."""
    # Imported at the push, after the stages' children are gone (the module doc says why).
    from flexsync.loaders.pushgateway import push_run_metrics, render_registry

    groups: list[str | None] = list(settings.wf_targets) if settings.account_map else [None]
    registries = [(settings.account_label_for(wf) if wf else settings.account_label,
                   _registry(settings, record, exit_code, wf)) for wf in groups]
    if dry_run or not settings.pushgateway_url:
        why = "--dry-run" if dry_run else "PUSHGATEWAY_URL not set"
        for _label, registry in registries:
            text = "\n".join(line for line in render_registry(registry).splitlines()
                             if not line.startswith("#"))
            print(f"Metrics that would be pushed to job {settings.pushgateway_job} ({why}):"
                  f"\n{text}")
        return
    with record.stage("push"):
        for label, registry in registries:
            push_run_metrics(settings.pushgateway_url, settings.pushgateway_job, label,
                             registry, settings.http_timeout_seconds)
    record.log_stage("push", f"metrics pushed to {settings.pushgateway_url} "
                             f"job {settings.pushgateway_job}")


def _registry(settings: Settings, record: RunRecord, exit_code: int,
              wf_account_id: str | None) -> CollectorRegistry:
    from flexsync.loaders.pushgateway import (
        RunFigures,
        build_registry,
        read_cash_drift_rows,
        read_drift_rows,
    )

    with connect(settings.warehouse_path) as con:
        drift = read_drift_rows(con, wf_account_id)
        cash_drift = read_cash_drift_rows(con, wf_account_id)
        unmapped = _unmapped_count(con)
    figures = RunFigures(
        posted=int(record.counts.get("posted", 0)),
        already_present=int(record.counts.get("already_present", 0)),
        failed=int(record.counts.get("failed", 0)),
        unmapped=unmapped,
        exit_code=exit_code,
    )
    label = settings.account_label_for(wf_account_id) if wf_account_id else (
        settings.account_label)
    return build_registry(drift, label, figures, exit_code == 0, datetime.now(UTC),
                          previous_success=last_success(settings),
                          cash_drift_rows=cash_drift)


def _unmapped_count(con: duckdb.DuckDBPyConnection) -> int:
    try:
        row = con.execute("select count(*) from marts.unmapped_transactions").fetchone()
    except duckdb.Error:  # the mart may not exist yet after a failed first build
        return 0
    return int(row[0]) if row else 0

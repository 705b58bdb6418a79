"""The load half of a run: Wealthfolio snapshot, posting, post-load drift, metrics.

`sync_run` strings the stages together: extract → transform → load → analytics copy.
Exit-code rules (SPEC §6): a failed activity makes the run exit 5 even though the
others were posted; the Pushgateway failing makes it exit 7 with the activities
already posted and recorded; the analytics copy is published only after a fully
successful run, and the metrics are pushed after it, with the run's true outcome.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from flexsync.core.config import Settings, require
from flexsync.core.errors import ExitCode, FlexsyncError, WealthfolioError
from flexsync.core.warehouse import connect
from flexsync.pipeline import RunRecord

if TYPE_CHECKING:
    import duckdb
    from prometheus_client import CollectorRegistry

    from flexsync.loaders.wealthfolio_client import WealthfolioClient

log = logging.getLogger("flexsync")


def _client(settings: Settings) -> WealthfolioClient:
    from flexsync.loaders.wealthfolio_client import WealthfolioClient

    return WealthfolioClient.from_settings(settings)


def take_snapshot(settings: Settings, run_id: str) -> int:
    """Snapshot each target Wealthfolio account into raw_wealthfolio (what changed since
    its last snapshot); return how many activities they hold together."""
    from flexsync.extract.wealthfolio_snapshot import snapshot_activities

    require(settings, "wf_account_id")
    count = 0
    with _client(settings) as client, connect(settings.warehouse_path) as con:
        for account_id in settings.wf_targets:
            count += int(snapshot_activities(con, client, account_id, run_id).activity_count)
    return count


def _unmapped_count(settings: Settings) -> int:
    with connect(settings.warehouse_path) as con:
        try:
            row = con.execute("select count(*) from marts.unmapped_transactions").fetchone()
        except Exception:  # the mart may not exist yet after a failed first build
            return 0
    return int(row[0]) if row else 0


def _metrics_registry(settings: Settings, record: RunRecord, success: bool,
                      exit_code: int, wf_account_id: str | None = None) -> CollectorRegistry:
    from flexsync.loaders.pushgateway import (
        RunFigures,
        build_registry,
        read_cash_drift_rows,
        read_drift_rows,
    )

    with connect(settings.warehouse_path) as con:
        drift = read_drift_rows(con, wf_account_id)
        cash_drift = read_cash_drift_rows(con, wf_account_id)
    figures = RunFigures(
        posted=int(record.counts.get("posted", 0)),
        already_present=int(record.counts.get("already_present", 0)),
        failed=int(record.counts.get("failed", 0)),
        unmapped=_unmapped_count(settings),
        exit_code=exit_code,
    )
    label = settings.account_label_for(wf_account_id) if wf_account_id else (
        settings.account_label)
    return build_registry(drift, label, figures, success, datetime.now(UTC),
                          previous_success=_previous_success(settings),
                          cash_drift_rows=cash_drift)


def _previous_success(settings: Settings) -> datetime | None:
    """When the last fully successful run finished (re-pushed by a failed run)."""
    with connect(settings.warehouse_path) as con:
        row = con.execute(
            "select max(finished_at) from sync.runs where outcome = 'success' "
            "and command in ('sync', 'load')").fetchone()
    return row[0].replace(tzinfo=UTC) if row and row[0] else None


def push_metrics(settings: Settings, record: RunRecord, success: bool, exit_code: int,
                 dry_run: bool = False) -> None:
    """One push per run (per account with IBKR_ACCOUNT_MAP: each IBKR account's group
    carries its own drift under its own `account` label); without PUSHGATEWAY_URL (or
    with --dry-run) print them instead."""
    from flexsync.loaders.pushgateway import push_run_metrics, render_registry

    groups: list[str | None] = list(settings.wf_targets) if settings.account_map else [None]
    registries = [(settings.account_label_for(wf) if wf else settings.account_label,
                   _metrics_registry(settings, record, success, exit_code, wf))
                  for wf in groups]
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
    log.info("push:     metrics pushed to %s job %s (%.1f s)", settings.pushgateway_url,
             settings.pushgateway_job, record.stage_seconds["push"], extra={"stage": "push"})


def post_activities(settings: Settings, record: RunRecord) -> None:
    """Post marts.activities_to_post; raise WealthfolioError (exit 5) if any row failed."""
    from flexsync.loaders.wealthfolio_loader import (
        LoadAborted,
        LoadResult,
        load_activities,
        summary_text,
    )

    require(settings, "wf_base_url", "wf_account_id")
    result: LoadResult
    aborted: LoadAborted | None = None
    with record.stage("load"):
        with _client(settings) as client, connect(settings.warehouse_path) as con:
            preflight_accounts(settings, client, con)
            try:
                result = load_activities(con, client, record.run_id,
                                         default_account_id=settings.wf_account_id or None)
            except LoadAborted as exc:
                result, aborted = exc.result, exc
    record.counts.update(posted=len(result.posted), already_present=len(result.already_present),
                         failed=len(result.failed))
    log.info("load:     %s (%.1f s)", summary_text(result), record.stage_seconds["load"],
             extra={"stage": "load"})
    for failure in result.failed:
        log.warning("not posted, will retry next run: %s — %s", failure.external_id,
                    failure.reason, extra={"external_id": failure.external_id})
    if aborted is not None:
        raise aborted
    if result.failed:
        raise WealthfolioError(f"Wealthfolio load incomplete: {summary_text(result)}")


def preflight_accounts(settings: Settings, client: WealthfolioClient,
                       con: duckdb.DuckDBPyConnection) -> None:
    """Exit 5 before any post when a target account cannot take activities (§15.5)."""
    from flexsync.loaders.account_preflight import check_accounts, statement_base_currencies

    check_accounts(client, settings.wf_targets, statement_base_currencies(con))


def refresh_after_load(settings: Settings, record: RunRecord) -> None:
    """Snapshot Wealthfolio again and rebuild the marts that depend on it (drift)."""
    from flexsync.commands import run_transform_stage

    with record.stage("snapshot"):
        count = take_snapshot(settings, record.run_id)
    record.counts["wf_snapshot_rows_after"] = count
    # stg_wealthfolio__activities is a table (the state rebuilt from the snapshot rows):
    # rebuilt first so the drift reads the snapshot just taken.
    run_transform_stage(settings, record,
                        select=["stg_wealthfolio__activities", "activities_to_post",
                                "position_drift", "position_drift_history",
                                "cash_drift", "cash_drift_history"], label="drift")


def print_plan(settings: Settings) -> None:
    from flexsync.loaders.wealthfolio_loader import plan_activities

    with connect(settings.warehouse_path) as con:
        plan = plan_activities(con, default_account_id=settings.wf_account_id or None)
    Console(width=160).print(plan.table())


def load_stage(settings: Settings, record: RunRecord, dry_run: bool) -> int:
    """`flexsync load`: post, refresh drift, push."""
    if dry_run:
        print_plan(settings)
        push_metrics(settings, record, success=True, exit_code=0, dry_run=True)
        return 0
    require(settings, "wf_base_url", "wf_account_id")
    return _load_and_push(settings, record)


def _load(settings: Settings, record: RunRecord) -> FlexsyncError | None:
    """Post, then refresh the drift; the load's error (if any) is returned, not raised."""
    load_error: FlexsyncError | None = None
    try:
        post_activities(settings, record)
    except WealthfolioError as exc:
        load_error = exc
    if load_error is None or record.counts.get("posted", 0):
        # Drift must show Wealthfolio as it is after this run, even a partly failed one.
        try:
            refresh_after_load(settings, record)
        except FlexsyncError as exc:
            load_error = load_error or exc
    return load_error


def _load_and_push(settings: Settings, record: RunRecord) -> int:
    load_error = _load(settings, record)
    code = int(load_error.exit_code) if load_error else int(ExitCode.OK)
    push_metrics(settings, record, success=load_error is None, exit_code=code)
    if load_error is not None:
        raise load_error
    return 0


def sync_run(settings: Settings, record: RunRecord, files: list[Path], dry_run: bool) -> int:
    """extract → transform → load → analytics copy → push (last, with the true outcome)."""
    from flexsync.commands import run_extract_stage, run_transform_stage
    from flexsync.loaders.analytics_copy import publish_analytics_copy

    if files:
        require(settings, "upstream_account_ids")
    else:
        require(settings, "flex_token", "flex_query_id", "upstream_account_ids")
    if not dry_run:
        require(settings, "wf_base_url", "wf_account_id")
    error: FlexsyncError | None = None
    try:
        run_extract_stage(settings, record, files)
        run_transform_stage(settings, record)
        if dry_run:
            print_plan(settings)
            push_metrics(settings, record, success=True, exit_code=0, dry_run=True)
            return 0
        error = _load(settings, record)
        if error is None:
            with record.stage("publish"):
                publish_analytics_copy(settings)
    except FlexsyncError as exc:
        error = exc
    # The push comes last: until the analytics copy is in place the run has not succeeded,
    # and a success pushed too early would keep IBKRSyncStale quiet after a failed run.
    if error is not None:
        _push_failure(settings, record, error)
        raise error
    push_metrics(settings, record, success=True, exit_code=0)
    total = sum(record.stage_seconds.values())
    log.info("sync:     done — %s posted, %s already there, %s unmapped (%.1f s)",
             record.counts.get("posted", 0), record.counts.get("already_present", 0),
             record.counts.get("transform_unmapped", "?"), total)
    return 0


def _push_failure(settings: Settings, record: RunRecord, exc: FlexsyncError) -> None:
    """Best effort: let the dashboards see a failed run (never hides the real error)."""
    if "push" in record.stage_seconds or not settings.pushgateway_url:
        return
    try:
        push_metrics(settings, record, success=False, exit_code=int(exc.exit_code))
    except Exception as push_exc:  # a broken warehouse or gateway must not mask `exc`
        log.warning("could not push the failed run's metrics either: %s", push_exc)

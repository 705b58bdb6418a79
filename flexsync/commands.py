"""Each CLI command as a composition of stages, inside one recorded run.

Read `sync` top to bottom for the nightly job. Its exit-code rules: a failed activity
makes the run exit 5 although the others were posted (and the drift still shows
Wealthfolio as it is after them); the Pushgateway failing makes it exit 7 with the
activities posted and recorded; the analytics copy is published only after a fully
successful run, and the metrics are pushed after it, with the run's true outcome.

The heavy stages (extract, snapshot, transform, load, the drift refresh) each run in a
forked child process (`in_child`, flexsync/isolation.py; a sync's transform, its look
after posting and the drift refresh in one dbt worker, `stage_worker`, that imports dbt
while the extract and the first snapshot run), so this process never holds pyarrow,
ibflex or dbt and the run's peak memory is at most three stages' (a snapshot or a small
load beside the worker), not their sum.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from flexsync import stages
from flexsync.core.config import (
    Settings,
    check_account_map,
    check_wf_base_url,
    load_settings,
    password_goes_outside_in_clear,
)
from flexsync.core.errors import FlexsyncError, WealthfolioError
from flexsync.core.logs import register_secret
from flexsync.isolation import StageWorker, in_child, stage_worker
from flexsync.runs import RunRecord, recorded
from flexsync.status import show_status

log = logging.getLogger("flexsync")


def settings_from_environment(**flags: Any) -> Settings:
    """The environment's settings with the command's flags over them (None: not given)."""
    settings = check_account_map(load_settings().with_overrides(**flags))
    for secret in settings.secrets():
        register_secret(secret)
    check_wf_base_url(settings.wf_base_url)
    if settings.wf_password and password_goes_outside_in_clear(settings.wf_base_url):
        log.warning("WF_BASE_URL %s is plain http to a host outside the cluster: the "
                    "Wealthfolio password crosses the network unencrypted; use https",
                    settings.wf_base_url)
    return settings.with_overrides(data_dir=settings.data_dir.resolve())


# Statement files larger than this land before dbt's worker starts importing: the landing
# child beside the import did not fit the pod with a 60 MB statement (308 MiB; 30 MB: 234;
# benchmarks/README.md, session 8). A nightly 90-day statement is a few MB.
LAND_ALONE_BYTES = 24 * 1024 * 1024


# A sync that posts at most this many activities keeps dbt's worker through the load:
# the worker then snapshots Wealthfolio again and builds the drift marts without a second
# dbt import and parse (≈1.5-2 s a night). A bigger load (a backfill) waits for the worker
# to go: the loader's memory grows with what it posts (62,947 posts: 233 MiB for the run
# and the load child alone), which beside an idle dbt would not fit the pod; a first run's
# 695 posts beside it peak at 242 MiB (benchmarks/README.md, sessions 8-9). A night posts
# tens.
KEEP_DBT_WORKER_MAX_POSTS = 2_000


def sync(settings: Settings, files: list[Path], dry_run: bool) -> int:
    """The nightly job: extract → snapshot → transform → load → drift → publish, push last.

    dbt's worker process starts first, before the run's row is written: it imports dbt
    and parses the project while the row is written, the extract child lands the
    statement and a snapshot child then fetches Wealthfolio's activities (both on the
    other core: at 5 years of history the snapshot of 15,600
    activities took ≈1.3 s of the night on the worker's path; beside its import the pod
    peaked at 229-243 MiB, also with the parsed worker waiting 4 s on a slow snapshot —
    benchmarks/README.md, session 12). Then the worker builds. While the load child
    posts, the worker waits; then it snapshots Wealthfolio again and builds the drift
    marts. When there is more to post than KEEP_DBT_WORKER_MAX_POSTS, the worker goes
    before the load and the drift refresh imports dbt again in a child of its own.
    Statement files of more than LAND_ALONE_BYTES land before the worker starts."""
    land_alone = stages.statement_bytes(files) > LAND_ALONE_BYTES
    dbt = stage_worker("dbt", stages.prepare_dbt, settings)
    with recorded(settings, "sync", first=None if land_alone else dbt) as record:
        stages.require_extract(settings, files)
        stages.require_load(settings, dry_run)
        with stages.pushed_last(settings, record, dry_run):
            if land_alone:
                in_child("extract", record, stages.extract, settings, record, files)
            loaded = False
            with dbt:  # started here after a large statement landed, else with the record
                if not land_alone:
                    in_child("extract", record, stages.extract, settings, record, files)
                in_child("snapshot", record, stages.snapshot, settings, record)
                # A dry run posts nothing, so no drift refresh follows: build it now.
                dbt.call("transform", record, partial(
                    stages.transform, exclude=None if dry_run else stages.DRIFT_MARTS),
                    settings, record)
                if not dry_run and _to_post(record) <= KEEP_DBT_WORKER_MAX_POSTS:
                    _load(settings, record, dry_run, drift_marts_built=False, dbt=dbt)
                    loaded = True
            if not loaded:
                _load(settings, record, dry_run, drift_marts_built=False)
            if not dry_run:
                stages.publish(settings, record)
        record.log_stage(
            "sync", f"done — {record.counts.get('posted', 0)} posted, "
                    f"{record.counts.get('already_present', 0)} already there, "
                    f"{record.counts.get('transform_unmapped', '?')} unmapped",
            seconds=sum(record.stage_seconds.values()))
    return 0


def _to_post(record: RunRecord) -> int:
    return int(record.counts.get("transform_to_post", 0))


def extract(settings: Settings, files: list[Path]) -> int:
    """Land the statement(s), then snapshot Wealthfolio (when configured)."""
    with recorded(settings, "extract") as record:
        stages.require_extract(settings, files)
        in_child("extract", record, stages.extract, settings, record, files)
        in_child("snapshot", record, stages.snapshot, settings, record)
    return 0


def transform(settings: Settings, full_refresh: bool = False) -> int:
    """`dbt build` on what is landed."""
    with recorded(settings, "transform") as record:
        in_child("transform", record, partial(stages.transform, full_refresh=full_refresh),
                 settings, record)
    return 0


def load(settings: Settings, dry_run: bool) -> int:
    """Post what the marts hold, refresh the drift, push last."""
    with recorded(settings, "load") as record:
        stages.require_load(settings, dry_run)
        with stages.pushed_last(settings, record, dry_run):
            _load(settings, record, dry_run)
    return 0


def status(settings: Settings, runs: int) -> int:
    """Print the status tables (not recorded in sync.runs)."""
    show_status(settings, runs)
    return 0


def _load(settings: Settings, record: RunRecord, dry_run: bool, drift_marts_built: bool = True,
          dbt: StageWorker | None = None) -> None:
    """The load half of `sync` and of `load`: post, then refresh the drift — in the sync's
    dbt worker when it is given (it built everything but the drift marts), else in a child
    of its own. --dry-run prints the plan instead and changes nothing."""
    if dry_run:
        stages.show_plan(settings)
        return
    try:
        in_child("load", record, stages.load, settings, record)
    except WealthfolioError:
        # Drift must show Wealthfolio as it is after this run, even a failed one; the
        # load's error stays the run's error. Nothing posted: the snapshot taken before
        # the load still holds, so no new one (Wealthfolio may be down).
        try:
            if record.counts.get("posted", 0):
                _drift(settings, record, dbt, stages.refresh_drift,
                       stages.refresh_drift_importing_dbt)
            elif not drift_marts_built:  # a sync builds them after the load
                drift_marts = partial(stages.transform, select=stages.DRIFT_MARTS,
                                      label="drift")
                _drift(settings, record, dbt, drift_marts, drift_marts)
        except FlexsyncError as exc:
            log.warning("drift not refreshed after the failed load: %s", exc)
        raise
    _drift(settings, record, dbt, stages.refresh_drift, stages.refresh_drift_importing_dbt)


def _drift(settings: Settings, record: RunRecord, dbt: StageWorker | None,
           in_worker: Callable[..., None], in_own_child: Callable[..., None]) -> None:
    """The drift stage in the sync's dbt worker when there is one, else in a child."""
    if dbt is not None:
        dbt.call("drift", record, in_worker, settings, record)
    else:
        in_child("drift", record, in_own_child, settings, record)

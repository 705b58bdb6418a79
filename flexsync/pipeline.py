"""The stages of a run — extract, transform, load — and the run record around them.

Each stage opens the warehouse for as short a time as it can and closes it, so
dbt (in-process) and the loaders can open it in turn. The run lock (an flock on
the data directory) is held by the CLI for the whole command.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from flexsync.core.config import Settings, require
from flexsync.core.errors import ConfigurationError, ExitCode, FlexsyncError
from flexsync.core.logs import scrub
from flexsync.core.warehouse import connect, ensure_schema, prepare_data_dir
from flexsync.extract.flex_source import FlexSource

if TYPE_CHECKING:
    # The landing imports pyarrow (~25 MiB): only a command that lands a file pays it.
    from flexsync.extract.flex_landing import LandingResult

log = logging.getLogger("flexsync")


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass
class RunRecord:
    """What `sync.runs` keeps about one command: stages, counts, outcome."""

    run_id: str
    command: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    stage_seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.stage_seconds[name] = round(
                self.stage_seconds.get(name, 0.0) + time.monotonic() - start, 3
            )


def record_run(settings: Settings, record: RunRecord, exit_code: int, message: str) -> None:
    """Write the run's row; never let bookkeeping hide the run's own error."""
    try:
        with connect(settings.warehouse_path) as con:
            ensure_schema(con)
            outcome = "success" if exit_code == ExitCode.OK else "failed"
            con.execute(
                "insert or replace into sync.runs values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [record.run_id, record.command, record.started_at.replace(tzinfo=None),
                 datetime.now(UTC).replace(tzinfo=None), outcome, int(exit_code),
                 json.dumps(record.stage_seconds),
                 scrub(json.dumps(record.counts, default=str)),
                 # A server's error may echo what it was sent (a login body): never store
                 # a secret in the warehouse, nor from there in analytics.duckdb or status.
                 scrub(message)[:2000]],
            )
    except (FlexsyncError, duckdb.Error) as exc:  # e.g. the disk that failed the run is full
        log.warning("could not record the run in sync.runs: %s", exc)


def record_run_start(settings: Settings, record: RunRecord) -> None:
    """Prepare the warehouse and give the run its row in sync.runs while it runs."""
    prepare_data_dir(settings.data_dir)
    with connect(settings.warehouse_path) as con:
        ensure_schema(con)
        # We hold the run lock, so a row still 'running' is a run that died (SIGKILL,
        # OOM, node loss) before recording its end: say so instead of "running" forever.
        con.execute(
            "update sync.runs set outcome = 'abandoned', message = 'did not finish: the "
            "process was killed or crashed (next run ' || ? || ')' where outcome = 'running'",
            [record.run_id],
        )
        con.execute(
            "insert or replace into sync.runs (run_id, command, started_at, outcome) "
            "values (?, ?, ?, 'running')",
            [record.run_id, record.command, record.started_at.replace(tzinfo=None)],
        )


def land_flex_files(settings: Settings, paths: list[Path]) -> list[LandingResult]:
    """File mode: no token, no network."""
    require(settings, "upstream_account_ids")
    sources = []
    for path in paths:
        if not path.is_file():
            raise ConfigurationError(f"--flex-file {path}: no such file")
        sources.append(FlexSource(name=str(path), path=path))
    return _land(settings, sources)


def download_and_land(settings: Settings,
                      client_factory: Callable[[Settings], Any] | None = None
                      ) -> list[LandingResult]:
    """Download mode: SendRequest → GetStatement → land the bytes."""
    require(settings, "flex_token", "flex_query_id", "upstream_account_ids")
    if client_factory is None:
        from flexsync.extract.flex_client import FlexClient

        client_factory = FlexClient.from_settings
    download = client_factory(settings).download()
    source = FlexSource(
        name=f"flex query {settings.flex_query_id} ({download.reference_code})",
        content=download.content, query_id=settings.flex_query_id,
        reference_code=download.reference_code, fetched_at=download.fetched_at,
    )
    return _land(settings, [source])


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


def _land(settings: Settings, sources: list[FlexSource]) -> list[LandingResult]:
    from flexsync.extract.flex_landing import land_sources

    prepare_data_dir(settings.data_dir)
    remove_orphaned_archive_temps(settings.archive_dir)
    with connect(settings.warehouse_path) as con:
        ensure_schema(con)
        return land_sources(con, sources, settings.upstream_account_ids, settings.archive_dir)

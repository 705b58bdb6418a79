"""Around every command: the run lock, the run's row in sync.runs, SIGTERM, exit codes.

`exit_code` is what the CLI calls: settings, then the lock (exit 8 if another run holds
it), then the command; an expected error prints one line and gives its exit code, an
unexpected one exit 1. `recorded` gives the command its row in sync.runs, which says
"running" while it runs and the outcome after, whatever happens.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import FrameType
from typing import Any

import duckdb

from flexsync.core.config import Settings
from flexsync.core.errors import ExitCode, FlexsyncError, TerminatedError
from flexsync.core.logs import scrub
from flexsync.core.warehouse import RunLock, connect, ensure_schema, prepare_data_dir

log = logging.getLogger("flexsync")


def exit_code(command: str, settings: Callable[[], Settings],
              body: Callable[[Settings], int]) -> int:
    """Run one command under the run lock; errors become one stderr line and a code."""
    try:
        run_settings = settings()
        with RunLock(run_settings.data_dir):
            return body(run_settings)
    except FlexsyncError as exc:
        _say(str(exc))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _say("interrupted")
        return int(ExitCode.UNEXPECTED)
    except Exception as exc:
        _say(f"unexpected error in {command}: {type(exc).__name__}: {exc} "
             "(run with -v for details)")
        log.debug("traceback", exc_info=True)
        return int(ExitCode.UNEXPECTED)


def _say(text: str) -> None:
    print(scrub(text), file=sys.stderr)


@dataclass
class RunRecord:
    """What `sync.runs` keeps about one command: stages, counts, outcome."""

    run_id: str
    command: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    stage_seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    # Set by the load stage (LoadResult.touched_days): the days of the activities it asked
    # Wealthfolio to create or delete; None until a load ran. Not stored in sync.runs.
    wealthfolio_touched: set[date | None] | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (a stage run twice, e.g. the snapshot, adds up)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.stage_seconds[name] = round(
                self.stage_seconds.get(name, 0.0) + time.monotonic() - start, 3
            )

    def log_stage(self, name: str, text: str, seconds: float | None = None) -> None:
        """The stage's one summary line, e.g. `load:     posted 8, ... (1.2 s)`."""
        took = self.stage_seconds.get(name, 0.0) if seconds is None else seconds
        log.info("%-9s %s (%.1f s)", name + ":", text, took, extra={"stage": name})


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@contextmanager
def recorded(settings: Settings, command: str,
             first: AbstractContextManager[object] | None = None) -> Iterator[RunRecord]:
    """The command's row in sync.runs: 'running', then its outcome and exit code (a
    FlexsyncError's, 1 for anything else), written before the error goes on up.

    `first` (a sync's dbt worker) is entered before the row is written, so that dbt's
    import runs beside the row's write (≈0.1 s of the night), and exited before the
    outcome is written: a run that fails before its stages (a missing setting, a
    warehouse that cannot be opened) stops the worker there. A fork that fails (no memory,
    the pids limit) is logged and left to the command, which enters `first` again where
    its stages start, inside the recorded run."""
    record = RunRecord(new_run_id(), command)
    with _sigterm_raises():
        started = False
        try:
            with ExitStack() as beside:
                if first is not None:
                    _enter_early(beside, first)
                _record_start(settings, record)
                started = True
                yield record
        except FlexsyncError as exc:
            if started:
                _record_end(settings, record, int(exc.exit_code), str(exc))
            raise
        except BaseException as exc:
            if started:
                _record_end(settings, record, ExitCode.UNEXPECTED,
                            f"{type(exc).__name__}: {exc}")
            raise
        _record_end(settings, record, ExitCode.OK, "ok")


def _enter_early(stack: ExitStack, first: AbstractContextManager[object]) -> None:
    try:
        stack.enter_context(first)
    except OSError as exc:
        log.warning("could not start %s before the run's record (%s): it starts with the "
                    "stages", first, exc)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn the first SIGTERM into a TerminatedError in the main thread (later ones are
    ignored while the failure is recorded and pushed); the old handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise TerminatedError(
            "terminated by SIGTERM (the Job's activeDeadlineSeconds, an eviction or a node "
            "drain); the run stopped where it was — the next run carries on")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _record_start(settings: Settings, record: RunRecord) -> None:
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


def _record_end(settings: Settings, record: RunRecord, code: int, message: str) -> None:
    """Write the run's outcome; never let bookkeeping hide the run's own error. The row
    exists (`_record_start` made the schema and wrote it), so no schema pass (≈45 ms)."""
    try:
        with connect(settings.warehouse_path) as con:
            outcome = "success" if code == ExitCode.OK else "failed"
            con.execute(
                "insert or replace into sync.runs values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [record.run_id, record.command, record.started_at.replace(tzinfo=None),
                 datetime.now(UTC).replace(tzinfo=None), outcome, int(code),
                 json.dumps(record.stage_seconds),
                 scrub(json.dumps(record.counts, default=str)),
                 # A server's error may echo what it was sent (a login body): never store
                 # a secret in the warehouse, nor from there in analytics.duckdb or status.
                 scrub(message)[:2000]],
            )
    except (FlexsyncError, duckdb.Error) as exc:  # e.g. the disk that failed the run is full
        log.warning("could not record the run in sync.runs: %s", exc)


def last_success(settings: Settings) -> datetime | None:
    """When the last fully successful sync or load finished (a failed run re-pushes it)."""
    with connect(settings.warehouse_path) as con:
        row = con.execute(
            "select max(finished_at) from sync.runs where outcome = 'success' "
            "and command in ('sync', 'load')").fetchone()
    return row[0].replace(tzinfo=UTC) if row and row[0] else None

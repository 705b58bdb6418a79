"""What each CLI command does, stage by stage, with a summary line per stage."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from flexsync.core.config import Settings
from flexsync.core.errors import ExitCode, FlexsyncError, TerminatedError
from flexsync.pipeline import (
    RunRecord,
    download_and_land,
    land_flex_files,
    new_run_id,
    record_run,
    record_run_start,
)

log = logging.getLogger("flexsync")


def _stage_line(name: str, seconds: float, text: str) -> None:
    log.info("%-9s %s (%.1f s)", name + ":", text, seconds, extra={"stage": name})


def run_extract_stage(settings: Settings, record: RunRecord, files: list[Path]) -> None:
    with record.stage("extract"):
        if files:
            results = land_flex_files(settings, files)
        else:
            results = download_and_land(settings)
        landed = [r for r in results if not r.already_landed]
        rows = sum(r.row_count for r in landed)
        record.counts["files_landed"] = len(landed)
        record.counts["files_already_landed"] = len(results) - len(landed)
        record.counts["raw_rows"] = rows
        snapshot_text = snapshot_stage(settings, record)
    _stage_line("extract", record.stage_seconds["extract"],
                f"{len(landed)} statement file(s) landed ({rows:,} raw rows), "
                f"{len(results) - len(landed)} already landed; {snapshot_text}")


def snapshot_stage(settings: Settings, record: RunRecord) -> str:
    """Snapshot Wealthfolio's activities into raw_wealthfolio (skipped without Wealthfolio)."""
    if not settings.wealthfolio_configured:
        log.info("Wealthfolio not configured (WF_BASE_URL unset): snapshot skipped")
        return "Wealthfolio snapshot skipped (not configured)"
    from flexsync.integration import take_snapshot

    count = take_snapshot(settings, record.run_id)
    record.counts["wf_snapshot_rows"] = count
    return f"Wealthfolio snapshot of {count:,} activities"


def run_transform_stage(settings: Settings, record: RunRecord,
                        select: list[str] | None = None, label: str = "transform",
                        full_refresh: bool = False) -> None:
    from flexsync.transform import run_transform

    with record.stage(label):
        result = run_transform(settings, record.run_id, select=select,
                               run_at=record.started_at, full_refresh=full_refresh)
    record.counts.update({f"{label}_{k}": v for k, v in result.counts.items()})
    _stage_line(label, record.stage_seconds[label], result.summary())


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


def _finish(settings: Settings, record: RunRecord, body: Callable[[], object]) -> int:
    """Run a command body, record the run whatever happens, return the exit code."""
    with _sigterm_raises():
        return _finish_body(settings, record, body)


def _finish_body(settings: Settings, record: RunRecord, body: Callable[[], object]) -> int:
    code = int(ExitCode.OK)
    message = "ok"
    record_run_start(settings, record)
    try:
        result = body()
        if isinstance(result, int):
            code = result
    except FlexsyncError as exc:
        code, message = int(exc.exit_code), str(exc)
        record_run(settings, record, code, message)
        raise
    except BaseException as exc:
        record_run(settings, record, ExitCode.UNEXPECTED, f"{type(exc).__name__}: {exc}")
        raise
    record_run(settings, record, code, message if code == 0 else f"exit {code}")
    return code


def extract(settings: Settings, files: list[Path]) -> int:
    record = RunRecord(new_run_id(), "extract")
    return _finish(settings, record, lambda: run_extract_stage(settings, record, files))


def transform(settings: Settings, full_refresh: bool = False) -> int:
    record = RunRecord(new_run_id(), "transform")
    return _finish(settings, record,
                   lambda: run_transform_stage(settings, record, full_refresh=full_refresh))


def load(settings: Settings, dry_run: bool) -> int:
    from flexsync.integration import load_stage

    record = RunRecord(new_run_id(), "load")
    return _finish(settings, record, lambda: load_stage(settings, record, dry_run))


def sync(settings: Settings, files: list[Path], dry_run: bool) -> int:
    from flexsync.integration import sync_run
    from flexsync.transform import preload_dbt

    preload_dbt()
    record = RunRecord(new_run_id(), "sync")
    return _finish(settings, record, lambda: sync_run(settings, record, files, dry_run))


def status(settings: Settings, runs: int) -> int:
    from flexsync.status import show_status

    show_status(settings, runs)
    return 0

"""The T of ELT: `dbt build` in-process (staging → marts, with the data tests).

dbt runs inside this Python process through `dbtRunner`, so a run pays dbt's import
once and no subprocess. The run context reaches the models as environment variables
(FLEXSYNC_RUN_ID, FLEXSYNC_RUN_AT, IBKR_ACCOUNT_ID, read by macros/run_context.sql):
a changed `--vars` value would force dbt to re-parse the whole project every run,
while a changed env var only re-parses the files that read it, so the partial-parse
state baked into the image stays useful.

After a successful build the marts are counted and every row of
marts.unmapped_transactions is logged at WARNING (logger `flexsync.transform`).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from flexsync.core import dbt_compile_cache
from flexsync.core.config import Settings
from flexsync.core.errors import ConfigurationError, DbtError, WarehouseLockedError
from flexsync.core.heap import malloc_trim
from flexsync.core.warehouse import connect, is_lock_message

log = logging.getLogger("flexsync.transform")

FAILED_STATUSES = {"error", "fail", "runtime error"}
MART_COUNTS = {
    "fct_activities": "fct_rows",
    "activities_to_post": "to_post",
    "unmapped_transactions": "unmapped",
    "position_drift": "drift_rows",
}


@dataclass
class TransformResult:
    fct_rows: int = 0
    to_post: int = 0
    unmapped: int = 0
    drift_rows: int = 0
    unmapped_by_reason: dict[str, int] = field(default_factory=dict)
    nodes_run: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "fct_rows": self.fct_rows,
            "to_post": self.to_post,
            "unmapped": self.unmapped,
            "drift_rows": self.drift_rows,
        }

    def summary(self) -> str:
        text = (f"dbt build ok ({self.nodes_run} nodes): {self.fct_rows:,} activities mapped, "
                f"{self.to_post:,} to post, {self.unmapped:,} unmapped, "
                f"{self.drift_rows:,} drift rows")
        if self.warnings:
            text += f"; {len(self.warnings)} dbt warning(s)"
        return text


def find_project_dir() -> Path:
    """The dbt project root: $FLEXSYNC_PROJECT_DIR, else the first parent holding
    dbt_project.yml, walking up from this file, then from the working directory."""
    configured = os.environ.get("FLEXSYNC_PROJECT_DIR", "").strip()
    if configured:
        path = Path(configured).resolve()
        if not (path / "dbt_project.yml").is_file():
            raise ConfigurationError(
                f"FLEXSYNC_PROJECT_DIR={configured}: no dbt_project.yml there"
            )
        return path
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for candidate in (start, *start.parents):
            if (candidate / "dbt_project.yml").is_file():
                return candidate
    raise ConfigurationError(
        "cannot find the dbt project (dbt_project.yml): set FLEXSYNC_PROJECT_DIR"
    )


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the dbt invocation only."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def global_args(project_dir: Path, log_format: str) -> list[str]:
    """Flags every dbt command of a run shares."""
    # --no-write-json: nothing reads target/manifest.json or run_results.json (the outcome
    # comes back in-process), and writing them costs ~0.3 s a run.
    args = ["--project-dir", str(project_dir), "--profiles-dir", str(project_dir),
            "--no-write-json"]
    if log_format == "json":
        args += ["--log-format", "json"]
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # Our own one-line stage summary says what dbt did; dbt's per-node lines are for -v
        # (failures are still printed, and named in the DbtError). Its debug file log
        # too: formatting and writing every statement cost ≈0.3 s a night, and the pod's
        # DBT_LOG_PATH is an emptyDir that goes with the pod.
        args += ["--log-level", "warn", "--log-level-file", "warn"]
    if not sys.stdout.isatty():
        args.append("--no-use-colors")
    return args


# dbt threads once the build is big: one node at a time, so DuckDB's memory_limit is not
# shared by two big nodes. The intermediate IBKR models are tables rebuilt from every
# staged row each night, so not only a build from scratch is big. Two measures, because
# nightly history and a backfill grow differently: nightly 90-day windows land each row
# ≈90 times (raw_ibkr: 761,000 rows at 2 years, 1.9 M at 5) but stage it once (2,800 and
# 6,600 trades), while a 10-year backfill lands 83,000 wide rows and stages all of them.
# Measured (benchmarks/README.md, sessions 6, 8 and 10): two threads ran out of the 64MB
# at 5 years of nights (int_ibkr__symbols_canonicalised) and on the backfill's build
# (int_ibkr__trades_classified, int_ibkr__cash_transactions_classified), and fit at 2 years
# (237 MiB for the pod, 0.5-0.6 s a night faster than one thread). A first daily statement
# lands ≈1,000 rows: the profile's two threads stay.
LARGE_WAREHOUSE_THREADS = 1
LARGE_WAREHOUSE_ROWS = 1_000_000  # raw_ibkr rows
LARGE_STAGED_ROWS = 50_000  # staged trades and cash transactions (raw rows before a first build)


def build_args(project_dir: Path, select: list[str] | None, include_unit_tests: bool,
               log_format: str, skip_seeds: list[str] | None = None,
               threads: int | None = None, exclude: list[str] | None = None) -> list[str]:
    args = ["build", *global_args(project_dir, log_format)]
    if threads is not None:
        args += ["--threads", str(threads)]
    if not include_unit_tests:
        # Unit tests check the SQL logic, not the data: `make test` runs them.
        args += ["--exclude-resource-type", "unit_test"]
    if select:
        args += ["--select", *select]
    if skip_seeds or exclude:
        args += ["--exclude", *(skip_seeds or []), *(exclude or [])]
    if skip_seeds:
        # Seeds already loaded from the same CSV: skip them and the tests on them alone;
        # `cautious` keeps the tests that read a seed *and* a model (codes known to a seed).
        args += ["--indirect-selection", "cautious"]
    return args


def _close_dbt_connections() -> None:
    """dbt-duckdb keeps a process-wide DuckDB instance; drop it so the file is free."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # pragma: no cover - dbt-duckdb is a dependency
        return
    DuckDBConnectionManager.close_all_connections()


def _use_fork_locks() -> None:
    """Design note (private API): dbt makes its locks from `dbt.mp_context._MP_CONTEXT`, a
    'spawn' multiprocessing context, although in-process it only ever runs threads. A
    spawn-context lock is a named semaphore, and the first one starts multiprocessing's
    resource-tracker process to unlink it at exit: a second Python, ~13 MiB of the pod's
    256 MiB (a `Manifest()` shows the child; with this, none). A 'fork'-context lock is
    the same lock without a name, so no tracker starts. dbt has no setting for it, hence
    the module attribute is replaced; it must happen before dbt's manifest module is
    imported (its dataclass binds the context's Lock at import), so `_invoke_dbt` calls
    this first. Should dbt drop the attribute, the
    assignment is inert and dbt keeps its spawn locks: same results, the tracker back."""
    import multiprocessing

    import dbt.mp_context

    dbt.mp_context._MP_CONTEXT = multiprocessing.get_context("fork")  # type: ignore[assignment]


def _trim_after_nodes() -> list[Any]:
    """A dbt callback that hands the heap's free pages back to the kernel after each node.

    DuckDB frees a node's working memory when its query ends, but glibc keeps freed
    chunks in its arenas (every thread has one): the next node's allocations land
    elsewhere and the process' RSS is the sum of the nodes' high-water marks rather than
    the largest. `malloc_trim(0)` releases the free pages of every arena (a few ms a
    node, ~0.4 s CPU over a build: only builds from scratch, the big ones, pay it)."""
    trim = malloc_trim()
    if trim is None:
        return []

    def callback(event: Any) -> None:
        if event.info.name == "NodeFinished":
            trim(0)

    return [callback]


def _invoke_dbt(args: list[str], manifest: Any = None, trim: bool = False) -> Any:
    _use_fork_locks()
    from dbt.cli.main import dbtRunner

    heap_trim = malloc_trim()
    if heap_trim is not None:
        # What the run freed before dbt (the warehouse's DuckDB instance, the run record)
        # goes back to the kernel now rather than under dbt's peak.
        heap_trim(0)
    try:
        callbacks = _trim_after_nodes() if trim else []
        return dbtRunner(manifest=manifest, callbacks=callbacks).invoke(args)
    finally:
        _close_dbt_connections()
        dbt_compile_cache.save()
        if heap_trim is not None:
            heap_trim(0)  # what the build freed goes back before the process goes on


def dbt_target_dir(project_dir: Path) -> Path:
    """Where dbt writes its target/: DBT_TARGET_PATH, relative to the project as dbt
    takes it, else the project's target/."""
    path = Path(os.environ.get("DBT_TARGET_PATH", "").strip() or "target")
    return path if path.is_absolute() else project_dir / path


# The parsed project, per (project, dbt target path): a sync's drift rebuild after posting
# reuses the first build's manifest instead of parsing the project again.
_manifests: dict[tuple[str, str], Any] = {}


def parsed_manifest(project_dir: Path, log_format: str) -> Any:
    """dbt's parsed project (from the partial-parse state when nothing changed)."""
    key = (str(project_dir), os.environ.get("DBT_TARGET_PATH", ""))
    if key not in _manifests:
        dbt_compile_cache.installed(dbt_target_dir(project_dir))
        outcome = _invoke_dbt(["parse", *global_args(project_dir, log_format)])
        if not outcome.success or outcome.result is None:
            text = str(outcome.exception or "see the dbt output above").strip()
            raise DbtError(f"dbt could not parse the project: {text.splitlines()[0]}")
        _manifests[key] = outcome.result
        _out_of_collections()
    return _manifests[key]


def _out_of_collections() -> None:
    """The parsed project and dbt's modules live as long as the process: freeze them, so
    that the collections the build (and a worker's snapshot) set off skip their objects
    instead of walking them every time (≈0.2 s off a night's build). Unfrozen at exit, so
    the interpreter's teardown frees them (duckdb's bindings report survivors as leaks);
    a stage's child never gets there (it leaves with os._exit)."""
    global _unfreeze_at_exit
    gc.freeze()
    if not _unfreeze_at_exit:
        atexit.register(gc.unfreeze)
        _unfreeze_at_exit = True


_unfreeze_at_exit = False


def _macro_closure(manifest: Any, macro_ids: list[str]) -> set[str]:
    seen: set[str] = set()
    pending = list(macro_ids)
    while pending:
        macro_id = pending.pop()
        if macro_id in seen or macro_id not in manifest.macros:
            continue
        seen.add(macro_id)
        pending.extend(manifest.macros[macro_id].depends_on.macros)
    return seen


def incremental_fingerprints(manifest: Any) -> dict[str, str]:
    """schema.table → digest of the SQL that builds it, for every incremental model that
    may be rebuilt from raw (not those with full_refresh=false, e.g. the drift history,
    which exists nowhere else). An incremental table keeps what older SQL computed, so
    when the digest changes the table must be rebuilt from scratch."""
    fingerprints: dict[str, str] = {}
    for node in manifest.nodes.values():
        config = node.config
        if (node.resource_type != "model" or config.materialized != "incremental"
                or config.full_refresh is False):
            continue
        digest = hashlib.sha256(node.raw_code.encode())
        settings = {key: config.get(key) for key in
                    ("unique_key", "incremental_strategy", "on_schema_change")}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        for macro_id in sorted(_macro_closure(manifest, list(node.depends_on.macros))):
            digest.update(macro_id.encode())
            digest.update(manifest.macros[macro_id].macro_sql.encode())
        fingerprints[f"{node.schema}.{node.alias or node.name}"] = digest.hexdigest()
    return fingerprints


def seed_fingerprints(manifest: Any) -> dict[str, str]:
    """schema.table → digest of each seed's CSV and config: a seed whose digest is what
    loaded the table tonight's image would load again unchanged, so the build skips it."""
    fingerprints: dict[str, str] = {}
    for node in manifest.nodes.values():
        if node.resource_type != "seed":
            continue
        digest = hashlib.sha256(node.checksum.checksum.encode())
        config = node.config.to_dict(omit_none=True)
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        fingerprints[f"{node.schema}.{node.alias or node.name}"] = digest.hexdigest()
    return fingerprints


def loaded_seeds(con: duckdb.DuckDBPyConnection, fingerprints: dict[str, str]) -> list[str]:
    """The seeds (by name) whose table exists and was loaded from the same CSV and config."""
    built = dict(con.execute(
        "select relation, fingerprint from sync.dbt_incremental_models").fetchall())
    existing = {f"{schema}.{name}" for schema, name in con.execute(
        "select table_schema, table_name from information_schema.tables").fetchall()}
    return sorted(relation.split(".", 1)[1] for relation, digest in fingerprints.items()
                  if relation in existing and built.get(relation) == digest)


def drop_stale_incremental_models(con: duckdb.DuckDBPyConnection, fingerprints: dict[str, str],
                                  full_refresh: bool) -> list[str]:
    """Drop the incremental tables built by other SQL than tonight's (or all of them on
    --full-refresh) so that dbt builds them again from every landed row."""
    dropped: list[str] = []
    built = dict(con.execute(
        "select relation, fingerprint from sync.dbt_incremental_models").fetchall())
    existing = {
        f"{schema}.{name}": kind for schema, name, kind in con.execute(
            "select table_schema, table_name, table_type from information_schema.tables"
        ).fetchall()
    }
    for relation, fingerprint in sorted(fingerprints.items()):
        if relation not in existing or (not full_refresh
                                        and built.get(relation) == fingerprint):
            continue
        kind = "view" if existing[relation] == "VIEW" else "table"
        schema, name = relation.split(".", 1)
        con.execute(f'drop {kind} "{schema}"."{name}"')
        dropped.append(relation)
    return dropped


def missing_relations(con: duckdb.DuckDBPyConnection, relations: list[str]) -> list[str]:
    """The schema.table names among `relations` that the warehouse does not hold."""
    existing = {f"{schema}.{name}" for schema, name in con.execute(
        "select table_schema, table_name from information_schema.tables").fetchall()}
    return sorted(relation for relation in relations if relation not in existing)


def row_estimates(con: duckdb.DuckDBPyConnection) -> tuple[int, int | None]:
    """About how many rows raw_ibkr holds, and how many trades and cash transactions are
    staged (None before the first build): DuckDB's own counts, no scan, one query."""
    [(raw, staged, staged_tables)] = con.execute(
        "select coalesce(sum(estimated_size) filter (where schema_name = 'raw_ibkr'), 0), "
        "sum(estimated_size) filter (where schema_name = 'staging'), "
        "count(*) filter (where schema_name = 'staging') "
        "from duckdb_tables() where schema_name = 'raw_ibkr' or (schema_name = 'staging' "
        "and table_name in ('stg_ibkr__trades', 'stg_ibkr__cash_transactions'))").fetchall()
    return int(raw), int(staged) if staged_tables else None


def record_incremental_models(con: duckdb.DuckDBPyConnection, fingerprints: dict[str, str],
                              built: set[str]) -> None:
    """Remember which SQL built each incremental table (see drop_stale_incremental_models),
    or which CSV loaded each seed (see loaded_seeds)."""
    rows = [(relation, fingerprint) for relation, fingerprint in fingerprints.items()
            if relation.split(".", 1)[1] in built]
    if rows:
        con.executemany(
            "insert or replace into sync.dbt_incremental_models values (?, ?, now()::timestamp)",
            rows)


def _raise_for_failures(outcome: Any) -> tuple[int, list[str]]:
    """Return (nodes run, warnings); raise DbtError naming the failed nodes."""
    results = list(getattr(outcome.result, "results", None) or [])
    failed: list[str] = []
    warnings: list[str] = []
    for node_result in results:
        status = _status(node_result)
        name = getattr(node_result.node, "unique_id", "?")
        message = (node_result.message or "").strip().splitlines()
        first_line = message[0] if message else status
        if status in FAILED_STATUSES:
            if is_lock_message(node_result.message or ""):
                raise WarehouseLockedError(
                    "dbt could not open the warehouse: another process holds it "
                    f"({first_line})"
                )
            failed.append(f"{name} ({status}: {first_line})")
        elif status == "warn":
            warnings.append(f"{name}: {first_line}")
    if outcome.exception is not None:
        text = str(outcome.exception).strip()
        if is_lock_message(text):
            raise WarehouseLockedError(
                "dbt could not open the warehouse: another process holds it "
                f"({text.splitlines()[0]})"
            )
        raise DbtError(f"dbt build could not run: {text.splitlines()[0] if text else 'error'}")
    if failed or not outcome.success:
        shown = "; ".join(failed[:10]) or "see the dbt output above"
        more = f" (+{len(failed) - 10} more)" if len(failed) > 10 else ""
        raise DbtError(f"dbt build failed: {len(failed)} node(s) failed: {shown}{more}")
    return len(results), warnings


def _status(node_result: Any) -> str:
    return str(getattr(node_result.status, "value", node_result.status)).lower()


def _out_of_memory_nodes(outcome: Any) -> list[str]:
    """The nodes of a build that failed on DuckDB's memory limit (none if it failed
    otherwise too, or could not run)."""
    if outcome.exception is not None:
        return []
    failed = [result for result in getattr(outcome.result, "results", None) or []
              if _status(result) in FAILED_STATUSES]
    if not failed or not all("Out of Memory Error" in (result.message or "")
                             for result in failed):
        return []
    return [getattr(result.node, "name", "?") for result in failed]


def _built_nodes(outcome: Any) -> set[str]:
    results = getattr(outcome.result, "results", None) or []
    return {getattr(r.node, "name", "") for r in results}


def dbt_environment(settings: Settings, run_id: str = "",
                    run_at: datetime | None = None) -> dict[str, str]:
    """What dbt reads from the environment during one of our invocations."""
    moment = (run_at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    return {
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "BROKER_SYNC_DATA_DIR": str(settings.data_dir.resolve()),
        "FLEXSYNC_RUN_ID": run_id,
        "FLEXSYNC_RUN_AT": moment.isoformat(sep=" ", timespec="microseconds"),
        "IBKR_ACCOUNT_ID": settings.wf_account_id,
        "IBKR_ACCOUNT_MAP": settings.account_map_text,
        # The validated setting (config.py), not whatever the process environment holds.
        "IBKR_TIMEZONE": settings.ibkr_timezone,
    }


def parse_project(settings: Settings) -> None:
    """Import dbt and parse the project now (≈2 s), so that later builds in this process
    start at once: a sync does it in its dbt worker while the statement lands
    (flexsync/isolation.py). Parsing reads no warehouse."""
    with _environment(dbt_environment(settings)):
        parsed_manifest(find_project_dir(), settings.log_format)


def run_transform(settings: Settings, run_id: str, select: list[str] | None = None,
                  include_unit_tests: bool = False, run_at: datetime | None = None,
                  full_refresh: bool = False,
                  exclude: list[str] | None = None) -> TransformResult:
    """`dbt build` the project into the warehouse; raise DbtError (exit 6) on any failure.

    full_refresh rebuilds the incremental staging models from every landed row (the
    drift history is never dropped). `exclude` leaves models (and their tests) out."""
    project_dir = find_project_dir()
    with _environment(dbt_environment(settings, run_id, run_at)):
        manifest = parsed_manifest(project_dir, settings.log_format)
        fingerprints = incremental_fingerprints(manifest)
        if select:
            # Drop only what this build rebuilds (the drift rebuild selects no staging).
            fingerprints = {relation: digest for relation, digest in fingerprints.items()
                            if relation.split(".", 1)[1] in select}
        seeds = seed_fingerprints(manifest) if not select else {}
        # One connection for what the build must know first (each open/close ≈30 ms).
        with connect(settings.warehouse_path) as con:
            for relation in drop_stale_incremental_models(con, fingerprints, full_refresh):
                log.info("rebuilding %s from every landed row (%s)", relation,
                         "--full-refresh" if full_refresh else "its SQL changed")
            raw_rows, staged_rows = row_estimates(con)
            from_scratch = bool(fingerprints) and bool(missing_relations(con, list(fingerprints)))
            large = raw_rows > LARGE_WAREHOUSE_ROWS or (
                raw_rows if staged_rows is None or from_scratch else staged_rows
            ) > LARGE_STAGED_ROWS
            # Only a big build from scratch pays for a trim after every node (≈0.4 s).
            big_from_scratch = from_scratch and raw_rows > LARGE_STAGED_ROWS
            skip_seeds = loaded_seeds(con, seeds) if seeds and not full_refresh else []
        fingerprints.update(seeds)

        def build(threads: int | None) -> Any:
            args = build_args(project_dir, select, include_unit_tests, settings.log_format,
                              skip_seeds, threads, exclude)
            log.debug("dbt %s", " ".join(args))
            return _invoke_dbt(args, manifest, trim=big_from_scratch)

        outcome = build(LARGE_WAREHOUSE_THREADS if large else None)
        if not large and (nodes := _out_of_memory_nodes(outcome)):
            # Two nodes share DuckDB's memory_limit; which two overlap varies from night to
            # night, and below the thresholds a pair now and then does not fit (1 night in
            # ≈12 at a year of history in the benchmark). The build is idempotent (tables
            # replaced, incremental models take only new extracts): again, one at a time.
            log.warning("dbt ran out of its DuckDB memory with two nodes at once (%s): "
                        "building again one node at a time", ", ".join(nodes))
            outcome = build(LARGE_WAREHOUSE_THREADS)
    nodes_run, warnings = _raise_for_failures(outcome)
    for warning in warnings:
        log.warning("dbt warning: %s", warning)
    built = _built_nodes(outcome)
    with connect(settings.warehouse_path) as con:
        record_incremental_models(con, fingerprints, built)
        result = _read_marts(con, log_unmapped="unmapped_transactions" in built, run_id=run_id)
    result.nodes_run = nodes_run
    result.warnings = warnings
    return result


def format_amount(value: Decimal | None) -> str:
    """A DECIMAL(38,10) as people write it: 0, -1.1, 12500 (never 0E-10)."""
    if value is None:
        return "?"
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _read_marts(con: duckdb.DuckDBPyConnection, log_unmapped: bool,
                run_id: str) -> TransformResult:
    result = TransformResult()
    existing = {
        row[0] for row in con.execute(
            "select table_name from information_schema.tables where table_schema = 'marts'"
        ).fetchall()
    }
    for table, attribute in MART_COUNTS.items():
        if table in existing:
            row = con.execute(f"select count(*) from marts.{table}").fetchone()
            setattr(result, attribute, int(row[0]) if row else 0)
    if "unmapped_transactions" in existing:
        rows = con.execute(
            "select source, coalesce(source_id, source_row_key), flex_type, asset_category,"
            " broker_account_id, amount, currency, activity_date, reason"
            " from marts.unmapped_transactions"
            " order by source, activity_date, source_row_key"
        ).fetchall()
        for (source, ident, flex_type, category, account, amount, currency, day,
             reason) in rows:
            result.unmapped_by_reason[reason] = result.unmapped_by_reason.get(reason, 0) + 1
            if log_unmapped:
                log.warning(
                    "unmapped %s %s (%s, %s) account %s on %s: %s %s — %s",
                    source, ident, flex_type or "no type", category or "no category",
                    account, day, format_amount(amount), currency or "", reason,
                    extra={"event": "unmapped", "run_id": run_id},
                )
    if log_unmapped and result.unmapped_by_reason:
        parts = ", ".join(f"{count} × {reason}"
                          for reason, count in sorted(result.unmapped_by_reason.items()))
        log.warning("%d IBKR row(s) not mapped (see marts.unmapped_transactions): %s",
                    result.unmapped, parts, extra={"event": "unmapped", "run_id": run_id})
    return result

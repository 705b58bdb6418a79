"""The `flexsync` command line (typer): sync | extract | transform | load | status.

Only the command line lives here: options, help texts and the process exit. Every
command reads its settings from the environment with its flags over them, then runs
`commands.<name>` through `runs.exit_code` (the run lock, one-line errors, the exit
codes listed in the help below).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from flexsync import __version__, commands
from flexsync.core.config import Settings
from flexsync.core.errors import ExitCode
from flexsync.core.heap import PROCESS_MALLOC_ARENAS, limit_malloc_arenas
from flexsync.core.logs import setup_logging
from flexsync.runs import exit_code

app = typer.Typer(
    name="flexsync",
    help=(
        "Keep a self-hosted Wealthfolio in step with an Interactive Brokers account.\n\n"
        "IBKR Flex statement → DuckDB (raw_ibkr.*) → dbt (staging → marts) → new activities "
        "posted to Wealthfolio, position and cash drift pushed to a Prometheus Pushgateway.\n\n"
        "Configuration comes from the environment (IBKR_FLEX_TOKEN, IBKR_FLEX_QUERY_ID, "
        "IBKR_ACCOUNT_ID, IBKR_ACCOUNT_ID_UPSTREAM, WF_BASE_URL, WF_PASSWORD, WF_SESSION_PATH, "
        "PUSHGATEWAY_URL, BROKER_SYNC_DATA_DIR); flags override it. Secrets are read from the "
        "environment only, never from flags.\n\n"
        "Exit codes: 0 ok · 1 unexpected · 2 configuration · 3 account guard · 4 IBKR Flex · "
        "5 Wealthfolio · 6 dbt · 7 Pushgateway · 8 another run holds the warehouse."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Docstrings are wrapped for the source: let the help re-flow each paragraph.
    rich_markup_mode="markdown",
)

DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="BROKER_SYNC_DATA_DIR", show_envvar=True,
    help="Data directory: warehouse.duckdb, analytics.duckdb, the raw archive (default ./data).")]
FlexFileOpt = Annotated[list[Path] | None, typer.Option(
    "--flex-file", help="Land this Flex XML file instead of downloading (repeatable). "
    "Needs no token and no network.")]
AccountOpt = Annotated[str | None, typer.Option(
    "--upstream-account", help="IBKR account id(s) the statements must belong to, comma "
    "separated (the account guard). Env: IBKR_ACCOUNT_ID_UPSTREAM.")]
QueryOpt = Annotated[str | None, typer.Option(
    "--flex-query-id", help="Activity Flex Query id. Env: IBKR_FLEX_QUERY_ID.")]
SendUrlOpt = Annotated[str | None, typer.Option(
    "--flex-send-url", help="Flex SendRequest URL. Env: IBKR_FLEX_SEND_URL.")]
GetUrlOpt = Annotated[str | None, typer.Option(
    "--flex-get-url", help="Fallback GetStatement URL (used when the URL in IBKR's "
    "SendRequest answer fails). Env: IBKR_FLEX_GET_URL.")]
DeadlineOpt = Annotated[float | None, typer.Option(
    "--flex-deadline", help="Seconds to wait for IBKR to generate the statement before "
    "StatementGenerationTimeout (default 600). Env: IBKR_FLEX_DEADLINE_SECONDS.")]
WfUrlOpt = Annotated[str | None, typer.Option(
    "--wf-base-url", help="Wealthfolio server, e.g. http://wealthfolio:8088. Env: WF_BASE_URL.")]
WfAccountOpt = Annotated[str | None, typer.Option(
    "--wf-account-id", help="Wealthfolio account UUID receiving the activities. "
    "Env: IBKR_ACCOUNT_ID.")]
AccountMapOpt = Annotated[str | None, typer.Option(
    "--account-map", help="Several IBKR accounts: `U1111111=<uuid>,U2222222=<uuid>` routes "
    "each IBKR account's activities and drift to its own Wealthfolio account (instead of "
    "--wf-account-id); the account guard then accepts exactly these IBKR accounts. "
    "Env: IBKR_ACCOUNT_MAP.")]
WfSessionOpt = Annotated[Path | None, typer.Option(
    "--wf-session-path", help="Where the Wealthfolio session token is cached (mode 0600). "
    "Env: WF_SESSION_PATH.")]
PushUrlOpt = Annotated[str | None, typer.Option(
    "--pushgateway-url", help="Pushgateway base URL. Env: PUSHGATEWAY_URL. Unset: the "
    "metrics are printed instead of pushed.")]
PushJobOpt = Annotated[str | None, typer.Option(
    "--pushgateway-job", help="Pushgateway job name (default broker-sync-ibkr). "
    "Env: PUSHGATEWAY_JOB.")]
AccountLabelOpt = Annotated[str | None, typer.Option(
    "--account-label", help="Value of the `account` label on the metrics (default ibkr-uk). "
    "Env: PUSHGATEWAY_ACCOUNT_LABEL.")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Print the activities that would be posted and the metrics that would "
    "be pushed; write nothing to Wealthfolio or the Pushgateway.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flexsync {__version__}")
        raise typer.Exit()


@dataclass(frozen=True)
class GlobalOptions:
    """The options given before the command (`flexsync --log-format json sync`)."""

    log_format: str


@app.callback()
def main(
    ctx: typer.Context,
    log_format: Annotated[str, typer.Option(
        "--log-format", envvar="FLEXSYNC_LOG_FORMAT",
        help="text (default) or json (one JSON object per line, for Loki).")] = "text",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version.")] = False,
) -> None:
    if log_format not in ("text", "json"):
        typer.echo(f"--log-format: {log_format!r} is not one of text, json", err=True)
        raise typer.Exit(ExitCode.CONFIGURATION)
    ctx.obj = GlobalOptions(log_format=log_format)
    setup_logging(log_format, logging.DEBUG if verbose else logging.INFO)


def _run(ctx: typer.Context, command: str, body: Callable[[Settings], int],
         **flags: Any) -> NoReturn:
    """Run `body` with this command's settings; exit with its code."""
    options: GlobalOptions = ctx.obj

    def settings() -> Settings:
        return commands.settings_from_environment(log_format=options.log_format, **flags)

    raise typer.Exit(exit_code(command, settings, body))


@app.command()
def extract(
    ctx: typer.Context,
    flex_file: FlexFileOpt = None,
    upstream_account: AccountOpt = None,
    flex_query_id: QueryOpt = None,
    flex_send_url: SendUrlOpt = None,
    flex_get_url: GetUrlOpt = None,
    flex_deadline: DeadlineOpt = None,
    wf_base_url: WfUrlOpt = None,
    wf_account_id: WfAccountOpt = None,
    account_map: AccountMapOpt = None,
    wf_session_path: WfSessionOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Land the Flex statement raw in DuckDB (and snapshot Wealthfolio when configured).

    Without --flex-file the statement is downloaded from the Flex Web Service
    (IBKR_FLEX_TOKEN and IBKR_FLEX_QUERY_ID required). Every statement must belong to
    IBKR_ACCOUNT_ID_UPSTREAM, or nothing is written (exit 3). Landing the same bytes
    twice is a no-op.
    """
    _run(ctx, "extract", lambda settings: commands.extract(settings, flex_file or []),
         data_dir=data_dir, upstream_account_ids=upstream_account,
         flex_query_id=flex_query_id, flex_send_url=flex_send_url,
         flex_get_url=flex_get_url, flex_deadline_seconds=flex_deadline,
         wf_base_url=wf_base_url, wf_account_id=wf_account_id, account_map=account_map,
         wf_session_path=wf_session_path)


@app.command()
def transform(
    ctx: typer.Context,
    wf_account_id: WfAccountOpt = None,
    account_map: AccountMapOpt = None,
    data_dir: DataDirOpt = None,
    full_refresh: Annotated[bool, typer.Option(
        "--full-refresh", help="Rebuild the incremental staging tables (trades, cash, "
        "securities, open positions) from every landed row instead of only the extracts "
        "landed since the last build, and reload the seeds. Never drops the drift "
        "history.")] = False,
) -> None:
    """Run `dbt build` (staging → marts, with the data tests); exit 6 if a model or test fails.

    The staging tables of trades, cash, securities and open positions are incremental: a
    build reads only the extracts landed since the last one. They are rebuilt from every
    landed row by themselves when their SQL changes (an upgrade), or on --full-refresh.
    Seeds (the mapping CSVs) are loaded again only when their file changed.

    Unmapped rows (cash types with no seed row, unsupported asset categories, reversals)
    are logged at WARNING with their type and id, and kept in marts.unmapped_transactions.
    """
    _run(ctx, "transform", lambda settings: commands.transform(settings, full_refresh),
         data_dir=data_dir, wf_account_id=wf_account_id, account_map=account_map)


@app.command()
def load(
    ctx: typer.Context,
    dry_run: DryRunOpt = False,
    wf_base_url: WfUrlOpt = None,
    wf_account_id: WfAccountOpt = None,
    account_map: AccountMapOpt = None,
    wf_session_path: WfSessionOpt = None,
    pushgateway_url: PushUrlOpt = None,
    pushgateway_job: PushJobOpt = None,
    account_label: AccountLabelOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Post marts.activities_to_post to Wealthfolio, refresh drift, push metrics.

    Each activity is posted once with idempotencyKey = its external id; every outcome is
    recorded in sync.posted_activities. A failed row stays pending for the next run
    (exit 5). Pushgateway unreachable: exit 7, activities stay posted and recorded.
    """
    _run(ctx, "load", lambda settings: commands.load(settings, dry_run=dry_run),
         data_dir=data_dir, wf_base_url=wf_base_url, wf_account_id=wf_account_id,
         account_map=account_map, wf_session_path=wf_session_path,
         pushgateway_url=pushgateway_url, pushgateway_job=pushgateway_job,
         account_label=account_label)


@app.command()
def sync(
    ctx: typer.Context,
    flex_file: FlexFileOpt = None,
    dry_run: DryRunOpt = False,
    upstream_account: AccountOpt = None,
    flex_query_id: QueryOpt = None,
    flex_send_url: SendUrlOpt = None,
    flex_get_url: GetUrlOpt = None,
    flex_deadline: DeadlineOpt = None,
    wf_base_url: WfUrlOpt = None,
    wf_account_id: WfAccountOpt = None,
    account_map: AccountMapOpt = None,
    wf_session_path: WfSessionOpt = None,
    pushgateway_url: PushUrlOpt = None,
    pushgateway_job: PushJobOpt = None,
    account_label: AccountLabelOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The nightly job: extract → transform → load (what `make sync` and the CronJob run).

    Prints one summary line per stage with counts and durations. After a fully successful
    run the warehouse is copied atomically to analytics.duckdb for analysts.
    """
    _run(ctx, "sync",
         lambda settings: commands.sync(settings, flex_file or [], dry_run=dry_run),
         data_dir=data_dir, upstream_account_ids=upstream_account,
         flex_query_id=flex_query_id, flex_send_url=flex_send_url,
         flex_get_url=flex_get_url, flex_deadline_seconds=flex_deadline,
         wf_base_url=wf_base_url, wf_account_id=wf_account_id, account_map=account_map,
         wf_session_path=wf_session_path, pushgateway_url=pushgateway_url,
         pushgateway_job=pushgateway_job, account_label=account_label)


@app.command()
def status(
    ctx: typer.Context,
    runs: Annotated[int, typer.Option("--runs", help="How many recent runs to show.")] = 10,
    data_dir: DataDirOpt = None,
) -> None:
    """Show the last runs, pending activities, unmapped rows, current position and cash
    drift and the configured accounts (never secrets)."""
    _run(ctx, "status", lambda settings: commands.status(settings, runs), data_dir=data_dir)


def drop_scripts_directory() -> None:
    """Take the interpreter's scripts directory (a venv's bin/) off the front of sys.path.

    Python puts a script's own directory first on sys.path, and for the `flexsync`
    console script that is bin/, where the daff package (a dbt dependency) also installs
    its command-line copy, `daff.py`. dbt's `import daff` then loaded that 400 KB file
    instead of the package, and compiled it from source every run (no cached bytecode
    is written there with PYTHONDONTWRITEBYTECODE): ≈0.1 s of every night's first build.
    Nothing of ours is imported from bin/."""
    import sysconfig

    scripts = os.path.realpath(sysconfig.get_path("scripts"))
    if sys.path and sys.path[0] and os.path.realpath(sys.path[0]) == scripts:
        del sys.path[0]


def entrypoint() -> None:
    """The `flexsync` console script: the app, then an immediate process exit.

    Design note (private API): `os._exit` skips the interpreter's teardown, which for a
    sync means freeing dbt's ~10^5 parsed-project objects and joining its thread pools:
    ~0.7-1.0 s of every nightly run (benchmarks/README.md), for nothing, since the
    process ends anyway. `os._exit` also skips the atexit handlers, and some must run
    (logging's flush, multiprocessing's cleanup), so they are run first by
    `atexit._run_exitfuncs()`, the function the interpreter itself calls at exit:
    private, but unchanged since Python 3.0; if a Python release drops it the
    AttributeError is loud on the first run, and the fix is to return normally. It is
    safe here because by now every warehouse connection is closed, the run lock
    released and sync.runs written: nothing is left that teardown would finish. Tests
    drive `app` in-process and never come through here; the subprocess tests
    (tests/reliability, `python -m flexsync`) do.

    First, before any thread: the malloc arena limit of the whole process tree
    (flexsync/core/heap.py says why here and not in the environment); and no imports
    from the scripts directory (`drop_scripts_directory`)."""
    limit_malloc_arenas(PROCESS_MALLOC_ARENAS)
    drop_scripts_directory()
    try:
        app(prog_name="flexsync")
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`flexsync status | head`)
            pass
    os._exit(code)

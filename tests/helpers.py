"""Small helpers for tests: run the CLI as a real process, read the warehouse."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb

from flexsync.extract.flex_writer import attribute_column

REPO_ROOT = Path(__file__).resolve().parents[1]
FLEXSYNC = [sys.executable, "-m", "flexsync"]
DEMO_STATEMENT = REPO_ROOT / "demo" / "flex_statement.xml"

# Variables a developer's shell might carry that would leak into a test run.
_CLEARED = (
    "IBKR_FLEX_TOKEN", "IBKR_FLEX_QUERY_ID", "IBKR_ACCOUNT_ID", "IBKR_ACCOUNT_ID_UPSTREAM",
    "WF_BASE_URL", "WF_PASSWORD", "WF_USERNAME", "WF_SESSION_PATH", "PUSHGATEWAY_URL",
    "IBKR_FLEX_SEND_URL", "IBKR_FLEX_GET_URL", "FLEXSYNC_LOG_FORMAT",
)


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update({"BROKER_SYNC_DATA_DIR": str(data_dir), "DO_NOT_TRACK": "1"})
    env.update(extra)
    return env


def run_cli(args: list[str], data_dir: Path, timeout: float = 240, **env: str
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLEXSYNC, *args], env=cli_env(data_dir, **env), cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def query(data_dir: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def table_names(data_dir: Path, schema: str) -> set[str]:
    rows = query(data_dir, "select table_name from information_schema.tables "
                 "where table_schema = ?", [schema])
    return {r[0] for r in rows}


_RENAMED = re.compile(r"^(?P<name>.+)__(?P<tag>[0-9a-f]{8})$")


def attribute_of(column: str) -> str:
    """The attribute a raw column holds: its own name, or the one the landing renamed
    (`flex_writer.attribute_column`: a name differing only in case from another's, or
    named like a lineage column)."""
    match = _RENAMED.match(column)
    if match and attribute_column(match["name"]) == column:
        return match["name"]
    return column


def process_alive(pid: int) -> bool:
    """Whether `pid` still runs: a zombie (not yet reaped) counts as gone — it runs
    nothing and holds no lock."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"

"""Warehouse faults: held by another process, a read-only volume, a corrupt or truncated
file, a full disk. Each: the right exit code, one clear line, no traceback, nothing
posted, and what was there before is unharmed.

The read-only volume and the full disk are real kernel errors (EROFS, ENOSPC), not
permission bits (the tests run as root, and root ignores chmod): a read-only bind mount
and a 3 MiB tmpfs inside a private mount namespace (`unshare --mount`). Where unshare
is not permitted, the read-only case falls back to a data dir below a regular file
(ENOTDIR, which also stops root) and the disk-full case is skipped.
"""

from __future__ import annotations

import functools
import gzip
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks import generate_flex
from tests.helpers import DEMO_STATEMENT, REPO_ROOT
from tests.reliability.conftest import Recorder
from tests.reliability.harness import (
    TRACEBACK,
    CliResult,
    ReliabilityFakeWealthfolio,
    SecretScanner,
    assert_clean_failure,
    file_mode_env,
    lock_is_free,
    process_env,
    readonly,
    run_inprocess,
    run_process,
)


@functools.cache
def private_mounts_available() -> bool:
    """Can this process mount in a private mount namespace (root, unshare allowed)?"""
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        probe = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(tmp)}"],
            capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


def _in_namespace(script: str, env: dict[str, str], timeout: float = 120) -> CliResult:
    """Run a shell script (which runs flexsync) in a private mount namespace."""
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=process_env(env), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        check=False)
    return CliResult(done.returncode, done.stdout, done.stderr)


FLEXSYNC = f"{shlex.quote(sys.executable)} -m flexsync"


def _digest(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes()
            for p in sorted(data_dir.rglob("*")) if p.is_file()}


def test_warehouse_held_by_another_process(demo_data_dir: Path, wf: ReliabilityFakeWealthfolio,
                                           reliability_ledger: Recorder) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys\n"
         "con = duckdb.connect(sys.argv[1])\n"
         "print('ready', flush=True)\n"
         "sys.stdin.readline()\n"
         "con.execute('create table analyst_scratch as select 42 as answer')\n"
         "print(con.execute('select answer from analyst_scratch').fetchone()[0], flush=True)",
         str(demo_data_dir / "warehouse.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        result = run_process(["sync", "--flex-file", str(DEMO_STATEMENT)],
                             file_mode_env(demo_data_dir, wf), timeout=60)
        elapsed = time.monotonic() - started
        holder.stdin.write("go\n")
        holder.stdin.flush()
        answer = holder.stdout.readline().strip()
    finally:
        holder.kill()
        holder.wait()
    scanner = SecretScanner()
    scanner.results(result)
    reliability_ledger(scenario="warehouse held by another process", faults=1, expected=0,
                       in_wealthfolio=len(wf.activities), secrets=len(scanner.hits))
    assert_clean_failure(result, 8, "held by another process")
    assert elapsed < 30
    assert answer == "42", "the process holding the warehouse was harmed"
    assert not wf.requests
    assert not scanner.hits


def test_read_only_data_directory(demo_data_dir: Path, wf: ReliabilityFakeWealthfolio,
                                  tmp_path: Path, reliability_ledger: Recorder) -> None:
    before = _digest(demo_data_dir)
    sync = f"{FLEXSYNC} sync --flex-file {shlex.quote(str(DEMO_STATEMENT))}"
    if private_mounts_available():
        how = "read-only bind mount (EROFS)"
        target = shlex.quote(str(demo_data_dir))
        result = _in_namespace(
            f"mount --bind {target} {target} && mount -o remount,bind,ro {target} && "
            f"{sync}", file_mode_env(demo_data_dir, wf))
        phrase = "not writable"
    else:
        how = "data dir below a regular file (ENOTDIR)"
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        result = run_process(["sync", "--flex-file", str(DEMO_STATEMENT)],
                             file_mode_env(blocker / "data", wf), timeout=60)
        phrase = "cannot create the data directory"
    reliability_ledger(scenario=f"read-only data dir: {how}", faults=1, expected=0,
                       in_wealthfolio=len(wf.activities))
    assert_clean_failure(result, 1, phrase)
    assert not wf.requests
    assert _digest(demo_data_dir) == before


@pytest.mark.parametrize("damage", ["random bytes", "truncated to half"])
def test_corrupt_warehouse(damage: str, demo_data_dir: Path, wf: ReliabilityFakeWealthfolio,
                           reliability_ledger: Recorder) -> None:
    warehouse = demo_data_dir / "warehouse.duckdb"
    if damage == "random bytes":
        warehouse.write_bytes(os.urandom(warehouse.stat().st_size))
    else:
        size = warehouse.stat().st_size
        with warehouse.open("r+b") as handle:
            handle.truncate(size // 2)
    results = [run_process(["sync", "--flex-file", str(DEMO_STATEMENT)],
                           file_mode_env(demo_data_dir, wf), timeout=60),
               run_process(["status"], file_mode_env(demo_data_dir, wf), timeout=60)]
    reliability_ledger(scenario=f"corrupt warehouse: {damage}", faults=1, expected=0,
                       in_wealthfolio=len(wf.activities))
    for result in results:
        assert_clean_failure(result, 1, "cannot open the warehouse")
        assert "move it aside" in result.last_line, result.last_line  # says what to do
    assert not wf.requests
    assert lock_is_free(demo_data_dir)


def test_disk_full_while_landing(data_dir: Path, tmp_path: Path,
                                 reliability_ledger: Recorder) -> None:
    if not private_mounts_available():
        pytest.skip("unshare/mount not permitted here: cannot make a small filesystem")
    statement = tmp_path / "six-mb.xml"
    rows = generate_flex.write_sized_statement(statement, 6 * 1024 * 1024)["rows(Trades)"]
    small, rescued = tmp_path / "small", tmp_path / "rescued"
    small.mkdir()
    small_data = small / "data"
    # Land into a 3 MiB filesystem, then copy what is left out before it disappears.
    result = _in_namespace(
        f"mount -t tmpfs -o size=3m tmpfs {shlex.quote(str(small))} && "
        f"{FLEXSYNC} extract --flex-file {shlex.quote(str(statement))}; code=$?; "
        f"cp -a {shlex.quote(str(small_data))} {shlex.quote(str(rescued))}; exit $code",
        file_mode_env(small_data, None))
    reliability_ledger(scenario="disk full while landing (ENOSPC)", faults=1)
    assert result.code == 1 and TRACEBACK not in result.stderr, result.describe()
    assert "No space left on device" in result.last_line, result.last_line
    with readonly(rescued / "warehouse.duckdb") as con:  # nothing half-landed
        assert con.execute("select count(*) from raw_ibkr.extracts").fetchone() == (0,)
        assert con.execute("select count(*) from raw_ibkr.trades").fetchone() == (0,)
    for archived in rescued.rglob("*.xml.gz"):  # an archive, if kept, is whole
        assert gzip.decompress(archived.read_bytes()) == statement.read_bytes()
    assert not list(rescued.rglob(".tmp*")), "a half-written temporary file was left"
    assert lock_is_free(rescued)
    # With room again (the volume grown: here, the rescued copy) the same file lands.
    again = run_inprocess(["extract", "--flex-file", str(statement)],
                          file_mode_env(rescued, None))
    assert again.code == 0, again.describe()
    with readonly(rescued / "warehouse.duckdb") as con:
        assert con.execute("select count(*) from raw_ibkr.trades").fetchone() == (rows,)

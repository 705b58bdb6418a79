"""The process boundaries of a run (flexsync/isolation.py): a stage in a forked child gives
back its result, its RunRecord changes and its exception; a killed child is a clear error
and leaves no process behind; and the run's own process never imports pyarrow, ibflex or
dbt, so its memory is not the sum of every stage's."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from fakes.wealthfolio import FakeWealthfolio
from flexsync.core.errors import (
    DbtError,
    ExitCode,
    FlexsyncError,
    IBKRAccountMismatchError,
    WealthfolioError,
)
from flexsync.isolation import StageKilledError, in_child, stage_worker
from flexsync.loaders.wealthfolio_loader import LoadAborted, LoadResult
from flexsync.runs import RunRecord
from tests.helpers import DEMO_STATEMENT, REPO_ROOT, cli_env, process_alive

PASSWORD = "iso-Wf-Pa55word"


def _record() -> RunRecord:
    return RunRecord("run-1", "sync")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return False


def _stage_counting(record: RunRecord, posted: int) -> str:
    with record.stage("load"):
        record.counts["posted"] = posted
    return f"pid {os.getpid()}"


def test_the_result_and_the_record_changes_come_back_to_the_parent() -> None:
    record = _record()
    record.counts["raw_rows"] = 3
    result = in_child("load", record, _stage_counting, record, 8)
    assert result != f"pid {os.getpid()}"  # it did run in another process
    assert record.counts == {"raw_rows": 3, "posted": 8}
    assert "load" in record.stage_seconds


def _raise(record: RunRecord, exc: BaseException) -> None:
    record.counts["posted"] = 2  # what the load did before failing must reach the parent
    raise exc


@pytest.mark.parametrize(("exc", "expected_type", "code"), [
    (WealthfolioError("Wealthfolio load incomplete: 1 failed"), WealthfolioError,
     ExitCode.WEALTHFOLIO),
    # LoadAborted(message, result) cannot be unpickled: it arrives as its nearest
    # FlexsyncError ancestor, so commands._load's `except WealthfolioError` still sees it.
    (LoadAborted("Wealthfolio unreachable", LoadResult()), WealthfolioError,
     ExitCode.WEALTHFOLIO),
    (IBKRAccountMismatchError("U7654321", ["U1234567"]), FlexsyncError,
     ExitCode.ACCOUNT_GUARD),
    (ValueError("not a number"), ValueError, ExitCode.UNEXPECTED),
])
def test_a_child_exception_arrives_with_its_type_message_and_exit_code(
        exc: BaseException, expected_type: type[BaseException], code: ExitCode) -> None:
    record = _record()
    with pytest.raises(expected_type) as raised:
        in_child("load", record, _raise, record, exc)
    assert str(raised.value) == str(exc)
    assert int(getattr(raised.value, "exit_code", ExitCode.UNEXPECTED)) == code
    assert record.counts == {"posted": 2}


def _killed_by(record: RunRecord, signum: int, pid_file: Path) -> None:
    pid_file.write_text(str(os.getpid()))
    os.kill(os.getpid(), signum)
    time.sleep(30)


def test_a_child_killed_by_sigkill_is_a_clear_error_and_exit_1(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    with pytest.raises(StageKilledError) as raised:
        in_child("snapshot", _record(), _killed_by, _record(), signal.SIGKILL, pid_file)
    assert raised.value.exit_code == ExitCode.UNEXPECTED
    assert "snapshot" in str(raised.value)
    assert "killed (SIGKILL) — out of memory?" in str(raised.value)
    assert not process_alive(int(pid_file.read_text()))


_PARENT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from flexsync.core.errors import TerminatedError
    from flexsync.isolation import in_child
    from flexsync.runs import RunRecord, _sigterm_raises

    def stage(pid_file):
        Path(pid_file).write_text(str(os.getpid()))
        time.sleep(60)

    with _sigterm_raises():
        try:
            in_child("transform", RunRecord("r", "sync"), stage, sys.argv[1])
        except TerminatedError as exc:
            print("TERMINATED", exc.exit_code, flush=True)
""")


def _start_parent(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(pid_file)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None, "no child started"
        time.sleep(0.05)
    return parent, int(pid_file.read_text())


def test_a_killed_parent_leaves_no_orphan_child_holding_the_run_lock(tmp_path: Path) -> None:
    parent, child = _start_parent(tmp_path)
    parent.kill()  # SIGKILL: no handler runs in the parent
    parent.wait(10)
    assert _gone_within(child, 10), "the stage's child outlived its killed parent"


def test_sigterm_is_passed_on_to_the_child_and_waited_for(tmp_path: Path) -> None:
    parent, child = _start_parent(tmp_path)
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=30)
    assert "TERMINATED 1" in out
    assert not process_alive(child)


_SYNC_THEN_LIST_MODULES = textwrap.dedent("""
    import atexit, sys
    def heavy_modules():
        found = sorted(m for m in ("pyarrow", "dbt", "ibflex", "flexsync.extract.flex_landing",
                                   "httpx") if m in sys.modules)
        print("PARENT-MODULES", ",".join(found) or "-", file=sys.stderr, flush=True)
    atexit.register(heavy_modules)  # the CLI runs the atexit handlers before os._exit
    sys.argv = ["flexsync", *sys.argv[1:]]
    from flexsync.cli import entrypoint
    entrypoint()
""")


def test_the_sync_process_never_imports_pyarrow_ibflex_dbt_or_httpx(tmp_path: Path) -> None:
    with FakeWealthfolio(PASSWORD) as wf:
        wf.create_account("IBKR ISA", "GBP")
        env: dict[str, Any] = {
            "IBKR_ACCOUNT_ID_UPSTREAM": "U1234567", "IBKR_ACCOUNT_ID": next(iter(wf.accounts)),
            "WF_BASE_URL": wf.base_url, "WF_PASSWORD": PASSWORD,
            "WF_SESSION_PATH": str(tmp_path / "wf-session.json"), "PUSHGATEWAY_URL": "",
        }
        result = subprocess.run(
            [sys.executable, "-c", _SYNC_THEN_LIST_MODULES, "-v", "sync", "--flex-file",
             str(DEMO_STATEMENT)],
            env=cli_env(tmp_path / "data", **env), cwd=REPO_ROOT, capture_output=True,
            text=True, timeout=240, check=False)
        posted = len(wf.activities_for(next(iter(wf.accounts))))
    assert result.returncode == 0, result.stderr
    assert posted > 0
    # The stages did run (in their children), and their log lines reached stderr.
    for stage in ("extract:", "transform:", "load:", "drift:"):
        assert stage in result.stderr
    assert "PARENT-MODULES -" in result.stderr, result.stderr[-2000:]


def test_the_run_process_imports_no_client_library_before_its_stages() -> None:
    # What the run holds while its stages' children run: the clients come with the stages
    # that talk to a server (httpx), the metrics library with the push, after them.
    probe = ("import sys, flexsync.cli; print(','.join(m for m in ('httpx', "
             "'prometheus_client', 'pyarrow', 'dbt', 'pygments') if m in sys.modules) or '-')")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == "-"


def _frozen_objects() -> int:
    return gc.get_freeze_count()


def test_a_child_skips_the_parent_objects_in_its_collections_the_parent_does_not() -> None:
    # The child's collector must not write to (and so copy) the pages of every object it
    # inherited; the parent's own collector still frees its garbage after the fork.
    assert gc.get_freeze_count() == 0
    in_child_frozen = in_child("probe", _record(), _frozen_objects)
    with stage_worker("probe", _say, "prepared") as worker:
        in_worker_frozen = worker.call("probe", _record(), _frozen_objects)
    assert in_child_frozen > 1000
    assert in_worker_frozen > 1000
    assert gc.get_freeze_count() == 0


def _say(text: str) -> None:
    print(text)
    print(f"{text} on stderr", file=sys.stderr)


def test_what_a_child_prints_to_an_in_memory_stream_reaches_the_parent(
        capsys: pytest.CaptureFixture[str]) -> None:
    """typer's CliRunner and pytest's capsys give the process in-memory streams: the
    child's copies are not the parent's, so its output is handed over with its result."""
    in_child("show_plan", _record(), _say, "the plan")
    captured = capsys.readouterr()
    assert captured.out == "the plan\n"
    assert captured.err == "the plan on stderr\n"


# --- stage_worker: one child for several stages (a sync's dbt) ------------------------

_PREPARED: list[int] = []


def _prepare(marker: Path) -> None:
    _PREPARED.append(os.getpid())
    marker.write_text(str(os.getpid()))


def _worker_stage(record: RunRecord, name: str) -> tuple[int, list[int]]:
    with record.stage(name):
        record.counts[name] = len(_PREPARED)
    return os.getpid(), list(_PREPARED)


def test_a_worker_prepares_once_then_runs_each_stage_in_the_same_child(
        tmp_path: Path) -> None:
    record = _record()
    record.counts["raw_rows"] = 3
    with stage_worker("dbt", _prepare, tmp_path / "prepared") as worker:
        first_pid, prepared = worker.call("transform", record, _worker_stage, record,
                                          "transform")
        record.counts["posted"] = 5  # what a stage between the two did, in the parent
        second_pid, _ = worker.call("drift", record, _worker_stage, record, "drift")
    assert first_pid == second_pid == int((tmp_path / "prepared").read_text())
    assert first_pid != os.getpid()
    assert prepared == [first_pid]  # prepared once, in the worker, before the first call
    assert _PREPARED == []  # never in the parent
    # Each call saw the parent's record as it was, and its changes came back.
    assert record.counts == {"raw_rows": 3, "transform": 1, "posted": 5, "drift": 1}
    assert {"transform", "drift"} <= set(record.stage_seconds)
    assert _gone_within(first_pid, 10), "the worker outlived its block"


def _fail_to_prepare() -> None:
    raise DbtError("dbt could not parse the project: bad yaml")


def test_an_error_in_prepare_is_the_first_call_s_answer() -> None:
    record = _record()
    with stage_worker("dbt", _fail_to_prepare) as worker, \
            pytest.raises(DbtError, match="could not parse the project: bad yaml") as raised:
        worker.call("transform", record, _worker_stage, record, "transform")
    assert raised.value.exit_code == ExitCode.DBT
    assert "transform" not in record.counts


def test_a_worker_killed_while_idle_is_a_clear_error_at_the_next_call(tmp_path: Path) -> None:
    with stage_worker("dbt", _prepare, tmp_path / "prepared") as worker:
        pid, _ = worker.call("transform", _record(), _worker_stage, _record(), "transform")
        os.kill(pid, signal.SIGKILL)
        assert _gone_within(pid, 10)
        with pytest.raises(StageKilledError, match=r"drift stage's process was killed \(SIGKILL"):
            worker.call("drift", _record(), _worker_stage, _record(), "drift")


def test_a_failure_in_the_block_stops_the_worker_at_once(tmp_path: Path) -> None:
    """A failed extract must not wait for dbt's import: the worker is stopped, not asked."""
    started = time.monotonic()
    with pytest.raises(IBKRAccountMismatchError), \
            stage_worker("dbt", _slow_prepare, tmp_path / "prepared"):
        _wait_for_file(tmp_path / "prepared")
        raise IBKRAccountMismatchError("U7654321", ["U1234567"])
    assert time.monotonic() - started < 10
    assert _gone_within(int((tmp_path / "prepared").read_text()), 5)


def _prepare_like_dbt(marker: Path) -> None:
    """dbt's parser catches what a SIGTERM handler raises, prints it and carries on."""
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException:  # as dbt does
            print("Encountered an error:\nTraceback (most recent call last): ...")


def test_a_failed_extract_stops_a_worker_still_parsing_at_once_and_quietly(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The extract failed (e.g. a gzip bomb) while dbt was still parsing: the worker ends
    at once, without dbt printing the SIGTERM as a traceback (it used to, and lingered
    until killed after TERMINATE_WAIT_SECONDS)."""
    from flexsync.runs import _sigterm_raises

    started = time.monotonic()
    with _sigterm_raises(), pytest.raises(IBKRAccountMismatchError), \
            stage_worker("dbt", _prepare_like_dbt, tmp_path / "prepared"):
        _wait_for_file(tmp_path / "prepared")
        raise IBKRAccountMismatchError("U7654321", ["U1234567"])
    assert time.monotonic() - started < 5
    assert _gone_within(int((tmp_path / "prepared").read_text()), 5)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.out + captured.err


def _slow_prepare(marker: Path) -> None:
    marker.write_text(str(os.getpid()))
    time.sleep(60)


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)


_SIGTERM_AT_THE_FORK = textwrap.dedent("""
    import os, signal, sys, time
    from flexsync.isolation import stage_worker
    from flexsync.runs import _sigterm_raises

    def prepare():
        time.sleep(60)

    with _sigterm_raises():
        codes = []
        for _ in range(int(sys.argv[1])):
            worker = stage_worker("dbt", prepare)
            worker.start()
            os.kill(worker._process.pid, signal.SIGTERM)  # before the worker is under way
            worker._process.join(10)
            codes.append(worker._process.exitcode)
            worker.stop(announce=False)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        print("EXIT", sorted(set(codes)), "PARENT BLOCKS SIGTERM", signal.SIGTERM in mask)
""")


def test_a_sigterm_at_the_worker_s_fork_ends_it_quietly() -> None:
    """The parent passes a SIGTERM on to a worker it has just forked (a failed start of the
    run): the worker must end at once and quietly. Before its own handler is in place it
    would run the parent's, which raises inside multiprocessing's bootstrap and prints a
    traceback; the worker starts with SIGTERM blocked and unblocks it once the handler
    is in place, and the parent's mask is as it was."""
    result = subprocess.run([sys.executable, "-c", _SIGTERM_AT_THE_FORK, "20"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"EXIT [{128 + signal.SIGTERM}] PARENT BLOCKS SIGTERM False" in result.stdout


def _worker_mask(marker: Path) -> None:
    with open("/proc/self/status") as status:
        blocked = next(line for line in status if line.startswith("SigBlk:")).split()[1]
    marker.write_text(blocked)


def test_a_worker_prepares_with_sigterm_deliverable(tmp_path: Path) -> None:
    """The worker unblocks SIGTERM once its handler is in place: a SIGTERM while it
    prepares must reach it."""
    marker = tmp_path / "mask"
    with stage_worker("dbt", _worker_mask, marker):
        _wait_for_file(marker)
    assert not int(marker.read_text(), 16) & (1 << (signal.SIGTERM - 1))


_WORKER_PARENT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from flexsync.core.errors import TerminatedError
    from flexsync.isolation import stage_worker
    from flexsync.runs import RunRecord, _sigterm_raises

    def prepare(pid_file):
        Path(pid_file).write_text(str(os.getpid()))

    def stage():
        time.sleep(60)

    with _sigterm_raises():
        try:
            with stage_worker("dbt", prepare, sys.argv[1]) as worker:
                if sys.argv[2] == "busy":
                    worker.call("transform", RunRecord("r", "sync"), stage)
                else:
                    time.sleep(60)
        except TerminatedError as exc:
            print("TERMINATED", exc.exit_code, flush=True)
""")


@pytest.mark.parametrize("state", ["busy", "idle"])
def test_sigterm_stops_a_busy_or_idle_worker(tmp_path: Path, state: str) -> None:
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, "-c", _WORKER_PARENT, str(pid_file), state],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    _wait_for_file(pid_file)
    time.sleep(0.3)  # into the call (or the wait)
    started = time.monotonic()
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=30)
    assert "TERMINATED 1" in out
    assert time.monotonic() - started < 10, "the worker was not stopped by the SIGTERM"
    assert _gone_within(int(pid_file.read_text()), 5)


def test_a_killed_parent_leaves_no_orphan_worker(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, "-c", _WORKER_PARENT, str(pid_file), "idle"],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    _wait_for_file(pid_file)
    parent.kill()
    parent.wait(10)
    assert _gone_within(int(pid_file.read_text()), 10), "the worker outlived its killed parent"


_COUNT_ARENAS = textwrap.dedent("""
    import ctypes, json, os, sys, tempfile, threading
    import duckdb
    import flexsync.cli
    from flexsync.isolation import in_child
    from flexsync.runs import RunRecord

    libc = ctypes.CDLL("libc.so.6")
    libc.fopen.restype = ctypes.c_void_p
    libc.malloc.restype = ctypes.c_void_p

    def arenas() -> int:
        handle, path = tempfile.mkstemp()
        os.close(handle)
        stream = libc.fopen(path.encode(), b"w")
        libc.malloc_info(0, ctypes.c_void_p(stream))
        libc.fclose(ctypes.c_void_p(stream))
        with open(path) as info:
            heaps = info.read().count("<heap nr=")
        os.unlink(path)
        return heaps

    def arenas_with_threads(count=8):
        ready = threading.Barrier(count + 1)
        done = threading.Event()
        def allocate():
            block = libc.malloc(4096)  # the thread's first malloc takes it an arena
            ready.wait()
            done.wait()
            libc.free(ctypes.c_void_p(block))
        threads = [threading.Thread(target=allocate) for _ in range(count)]
        for thread in threads:
            thread.start()
        ready.wait()
        heaps = arenas()
        done.set()
        for thread in threads:
            thread.join()
        return heaps

    def run():  # as a run: DuckDB's threads in the run's process, then a stage's child
        with duckdb.connect() as con:
            con.execute("select sum(range) from range(1000000)").fetchall()
        counts = {"run": arenas_with_threads(), "stage": in_child(
            "probe", RunRecord("run-1", "sync"), arenas_with_threads)}
        print(json.dumps(counts), file=sys.stderr)

    if sys.argv[1] == "entrypoint":
        # The limit is small here so that these threads reach it: the command's own
        # (PROCESS_MALLOC_ARENAS) is glibc's default on a 2-core machine.
        flexsync.cli.PROCESS_MALLOC_ARENAS = 3
        flexsync.cli.app = lambda prog_name: run()
        flexsync.cli.entrypoint()
    run()
""")


@pytest.mark.parametrize("how", ["entrypoint", "without"])
def test_the_flexsync_command_bounds_the_malloc_arenas_of_its_process_tree(how: str) -> None:
    # glibc gives each new thread an arena of its own, up to 8 per core of the node (not
    # of the pod), and fixes the limit the first time a thread needs one: the command
    # sets it before anything starts a thread (flexsync/core/heap.py), and a stage's
    # child inherits it. Without it (the control), the same threads take an arena each.
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    result = subprocess.run([sys.executable, "-c", _COUNT_ARENAS, how], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stderr.strip().splitlines()[-1])
    if how == "entrypoint":
        assert counts == {"run": 3, "stage": 3}
    else:
        assert counts["run"] > 3, counts
        assert counts["stage"] > 3, counts

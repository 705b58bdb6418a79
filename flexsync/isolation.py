"""Run one heavy stage in a forked child process that exits when the stage is done.

Python never gives a module's memory back, so a process that lands the statement
(pyarrow, ibflex), snapshots Wealthfolio and runs dbt holds all of it at once. The run's
process stays thin (the CLI, the run lock, sync.runs, SIGTERM, exit codes) and forks a
child per heavy stage: the peak is the parent plus the biggest single stage, not the sum.

`in_child(stage, record, fn, *args)` calls `fn(*args)` in the child and gives its result
back, with the RunRecord as the child left it (stage_seconds, counts): the parent's record
takes those values. An exception in the child is raised again in the parent, the same
type, message and exit code (an exception that cannot cross the pipe becomes its nearest
FlexsyncError ancestor that can, or a FlexsyncError with exit 1). A child killed by a
signal (the OOM killer's SIGKILL) is a FlexsyncError naming the stage and the signal.

`stage_worker(name, prepare, *args)` is a child that stays up for several stages:
entered, it forks and runs `prepare(*args)` at once (dbt's import and parse, while the
parent writes the run's row and its other children land the statement and snapshot
Wealthfolio), then `worker.call(stage, record, fn, *args)` runs each stage in it, one at
a time, with the same answers as `in_child` (the arguments and the record cross the pipe
pickled). A sync's two dbt builds share one import and one parse this way.

The child shares the run lock's file with the parent and must never outlive it: it asks
the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), and a SIGTERM or Ctrl-C
in the parent is passed on to the child and waited for before the parent goes on to
record the run. The parent must hold no warehouse connection while a child that uses
the warehouse runs (DuckDB locks the file): every stage opens and closes its own (dbt's
worker touches none while it prepares, so the parent writes the run's row meanwhile).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from types import TracebackType
from typing import Any, TypeVar

from flexsync.core.errors import ExitCode, FlexsyncError, TerminatedError
from flexsync.core.heap import malloc_trim
from flexsync.runs import RunRecord

log = logging.getLogger("flexsync")

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# How long a child may take to unwind after a forwarded SIGTERM (the kubelet's grace
# period is 30 s, and the parent still has to record and push the failure).
TERMINATE_WAIT_SECONDS = 15.0


class StageKilledError(FlexsyncError):
    """A stage's child process was killed by a signal (unexpected, exit 1)."""


def in_child(stage: str, record: RunRecord, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a forked child; its result, record changes and exception come back."""
    _flush_streams()
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(writer, os.getpid(), record, fn, args),
                            name=f"flexsync-{stage}", daemon=False)
    try:
        try:
            with _shared_with_child():
                child.start()
            writer.close()
            ready = wait([reader, child.sentinel])
            try:
                message = reader.recv() if reader in ready or reader.poll() else None
            except EOFError:  # it died without a word: its exit code says how
                message = None
            child.join()
        except BaseException:  # SIGTERM (TerminatedError), Ctrl-C: the child goes first
            _stop(child, stage)
            raise
    finally:
        reader.close()
    return _answer(stage, record, message, child.exitcode)  # type: ignore[no-any-return]


def _answer(stage: str, record: RunRecord, message: Any, exitcode: int | None) -> Any:
    """The parent's side of a stage's reply: output, record changes, result or error."""
    if message is None:
        raise _died(stage, exitcode)
    ok, payload, record_state, output = message
    for name, text in output:  # what the child wrote to an in-memory stdout/stderr
        getattr(sys, name).write(text)
    record.__dict__.update(record_state)
    if ok:
        return payload
    raise payload


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would print the parent's buffered output again


@contextmanager
def _shared_with_child() -> Iterator[None]:
    """Fork inside this block: the child copies as few of the parent's pages as it can.

    Every page the child writes to becomes its own copy, and both copies count against
    the pod. A collection in the child writes to every tracked object it walks, so the
    parent's objects are frozen for the fork (the child's collector skips them; the
    parent unfreezes its own at once, or they would never be collected and duckdb's
    bindings would report them as leaks at exit). Free heap pages go back to the kernel
    first rather than sit in both processes. ≈7 MiB off the backfill transform's peak
    (benchmarks/README.md, session 9).
    """
    gc.collect()
    trim = malloc_trim()
    if trim is not None:
        trim(0)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class StageWorker:
    """The parent's handle on a child that runs several stages (see the module's doc).

    As a context manager it forks the worker when entered and, when the block ends,
    releases it — or stops it at once (SIGTERM passed on, waited for) when the block
    failed. Entering one that runs already changes nothing, and the innermost block's end
    releases it: a sync enters it where the run starts and again around its stages."""

    def __init__(self, name: str, prepare: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.name = name
        self._prepare = (prepare, args)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def __str__(self) -> str:
        return f"the {self.name} worker"

    def __enter__(self) -> StageWorker:
        if self._process is None:
            try:
                self.start()
            except BaseException:  # a SIGTERM just after the fork: no orphan either
                self.stop(announce=False)
                raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is None:
            self.release()
        else:  # SIGTERM, Ctrl-C, a failed stage: the worker goes too
            self.stop(announce=isinstance(exc, TerminatedError | KeyboardInterrupt))

    def start(self) -> None:
        """Fork the worker; it runs `prepare` at once."""
        _flush_streams()
        context = multiprocessing.get_context("fork")
        self._conn, child_end = context.Pipe()
        prepare, args = self._prepare
        self._process = context.Process(target=_worker_main,
                                        args=(child_end, os.getpid(), prepare, args),
                                        name=f"flexsync-{self.name}", daemon=False)
        # A SIGTERM between the fork and the worker's own handler would raise inside
        # multiprocessing's bootstrap and print its traceback: the worker starts with
        # SIGTERM blocked and unblocks it once its handler is in place.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            with _shared_with_child():
                self._process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child_end.close()

    def call(self, stage: str, record: RunRecord, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the worker (args pickled); as `in_child` otherwise."""
        if self._process is None or self._conn is None:
            raise FlexsyncError(f"the {self.name} worker was not started (or released)")
        _flush_streams()
        try:
            self._conn.send((fn, record, args))
        except (BrokenPipeError, ConnectionResetError, EOFError):  # it died while idle
            self._process.join()
            raise _died(stage, self._process.exitcode) from None
        ready = wait([self._conn, self._process.sentinel])
        try:
            message = self._conn.recv() if self._conn in ready or self._conn.poll() else None
        except EOFError:
            message = None
        if message is None:
            self._process.join()
        return _answer(stage, record, message, self._process.exitcode)  # type: ignore[no-any-return]

    def release(self) -> None:
        """Ask the worker to exit and wait for it (its memory goes back)."""
        if self._process is None or self._conn is None:
            return
        try:
            self._conn.send(None)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass
        self._process.join(TERMINATE_WAIT_SECONDS)
        if self._process.is_alive():
            _stop(self._process, self.name)
        self._conn.close()
        self._process = self._conn = None

    def stop(self, announce: bool) -> None:
        """Stop it now (the block failed): SIGTERM passed on and waited for."""
        if self._process is None or self._conn is None:
            return
        self._conn.close()  # an idle worker reads EOF and exits
        _stop(self._process, self.name, announce=announce)
        self._process = self._conn = None


def stage_worker(name: str, prepare: Callable[..., Any], *args: Any) -> StageWorker:
    """A worker that forks and runs `prepare(*args)` when its block is entered, and stages
    later; when the block ends it is released, or stopped (SIGTERM passed on, waited for)
    if the block failed. An error in `prepare` is the answer to the worker's first call."""
    return StageWorker(name, prepare, args)


def _stop(child: multiprocessing.process.BaseProcess, stage: str,
          announce: bool = True) -> None:
    """Forward SIGTERM and wait for the child to unwind; SIGKILL it if it will not."""
    if child.pid is None:  # not started
        return
    if child.is_alive():
        if announce:
            log.info("passing SIGTERM on to the %s stage (pid %d)", stage, child.pid)
        os.kill(child.pid, signal.SIGTERM)
        child.join(TERMINATE_WAIT_SECONDS)
        if child.is_alive():
            log.warning("the %s stage did not stop in %.0f s: killing it", stage,
                        TERMINATE_WAIT_SECONDS)
            child.kill()
    child.join()


def _died(stage: str, exitcode: int | None) -> FlexsyncError:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " — out of memory?" if -exitcode == signal.SIGKILL else ""
        return StageKilledError(f"the {stage} stage's process was killed ({name}){hint}; "
                                "the run stopped there — the next run carries on")
    return StageKilledError(f"the {stage} stage's process exited ({exitcode}) without "
                            "a result")


# ----------------------------------------------------------------------------- child


def _child_main(writer: Connection, parent_pid: int, record: RunRecord,
                fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    _die_with_parent(parent_pid)
    parent_modules = set(sys.modules)
    output = _capture_in_memory_streams()
    _run_and_reply(writer, record, fn, args, parent_modules, output)
    writer.close()


def _worker_main(conn: Connection, parent_pid: int, prepare: Callable[..., Any],
                 prepare_args: tuple[Any, ...]) -> None:
    _die_with_parent(parent_pid)
    parent_modules = set(sys.modules)
    output = _capture_in_memory_streams()
    failure: BaseException | None = None
    # `prepare` holds nothing to unwind (dbt's import and parse: no warehouse), and the
    # TerminatedError a SIGTERM raises inside it was caught by dbt's parser, printed with
    # a traceback, and the worker lingered until killed 15 s later: while preparing, a
    # SIGTERM (the parent stopping: a failed extract, an eviction) ends it at once.
    previous = signal.signal(signal.SIGTERM, _exit_at_once)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked for the fork
    try:
        prepare(*prepare_args)
    except TerminatedError:  # the parent passed a SIGTERM on: it is stopping
        return
    except Exception as exc:  # the first call answers with it
        failure = exc
    finally:
        signal.signal(signal.SIGTERM, previous)
    while (request := _next_request(conn)) is not None:
        fn, call_record, args = request
        if failure is not None:
            fn, args = _raise_it, (failure,)
        if not _run_and_reply(conn, call_record, fn, args, parent_modules, output):
            break  # a SIGTERM or Ctrl-C ended the call: the parent is stopping
    conn.close()


def _exit_at_once(signum: int, frame: Any) -> None:
    os._exit(128 + signum)


def _next_request(conn: Connection) -> Any:
    try:
        return conn.recv()
    except (EOFError, TerminatedError, KeyboardInterrupt):  # the parent is gone or stopping
        return None


def _raise_it(exc: BaseException) -> None:
    raise exc


def _run_and_reply(conn: Connection, record: RunRecord, fn: Callable[..., Any],
                   args: tuple[Any, ...], parent_modules: set[str],
                   output: list[tuple[str, str]]) -> bool:
    """Run the call and send its answer; False when it was stopped by a signal."""
    stopped = False
    try:
        ok, payload = True, fn(*args)
    except BaseException as exc:  # every exception goes to the parent
        if not isinstance(exc, FlexsyncError):
            log.debug("traceback", exc_info=True)
        stopped = isinstance(exc, TerminatedError | KeyboardInterrupt)
        ok, payload = False, _portable(exc, parent_modules)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    written, output[:] = output[:], []
    try:
        try:
            conn.send((ok, payload, dict(vars(record)), written))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # an unpicklable result: still an answer, not a hang
            error = FlexsyncError(f"{type(exc).__name__}: {exc}")
            conn.send((False, error, dict(vars(record)), written))
    except (BrokenPipeError, ConnectionResetError):  # the parent stopped listening
        return False
    return not stopped


def _capture_in_memory_streams() -> list[tuple[str, str]]:
    """A real stdout/stderr (a file descriptor) is shared with the parent: the child's
    lines appear as they are written. An in-memory one (typer's CliRunner, pytest's
    capsys) is the child's own copy, so what the child writes there is kept, in order,
    and written to the parent's when the stage is done."""
    output: list[tuple[str, str]] = []
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            stream.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation is both
            def write(text: str, name: str = name) -> int:
                output.append((name, text))
                return len(text)
            try:  # the logging handlers hold this same stream object
                stream.write = write
            except AttributeError:  # pragma: no cover - a stream that takes no attribute
                pass
    return output


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this child when its parent dies (Linux); a no-op elsewhere."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(int(ExitCode.UNEXPECTED))


def _portable(exc: BaseException, parent_modules: set[str]) -> BaseException:
    """`exc` if it crosses the pipe as itself (and unpickling it in the parent imports
    nothing new there), else its nearest FlexsyncError ancestor that does — so
    `except WealthfolioError` still catches a LoadAborted —, else a FlexsyncError."""
    if type(exc).__module__ in parent_modules and _round_trips(exc):
        return exc
    message = str(exc)
    if isinstance(exc, FlexsyncError):
        for cls in type(exc).__mro__[1:]:
            if issubclass(cls, FlexsyncError) and cls.__module__ in parent_modules:
                try:
                    candidate = cls(message)
                except TypeError:
                    continue
                candidate.exit_code = exc.exit_code  # the instance's: pickled with it
                if _round_trips(candidate):
                    return candidate
    return FlexsyncError(f"unexpected error: {type(exc).__name__}: {message} "
                         "(run with -v for details)")


def _round_trips(exc: BaseException) -> bool:
    try:
        copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, this process
    except Exception:  # any failure means "not portable"
        return False
    return type(copy) is type(exc) and str(copy) == str(exc)

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

The child shares the run lock's file with the parent and must never outlive it: it asks
the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), and a SIGTERM or Ctrl-C
in the parent is passed on to the child and waited for before the parent goes on to
record the run. The parent must hold no warehouse connection while a child runs (DuckDB
locks the file): every stage opens and closes its own.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from flexsync.core.errors import ExitCode, FlexsyncError
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
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would print the parent's buffered output again
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(writer, os.getpid(), record, fn, args),
                            name=f"flexsync-{stage}", daemon=False)
    try:
        try:
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
    if message is None:
        raise _died(stage, child.exitcode)
    ok, payload, record_state, output = message
    for name, text in output:  # what the child wrote to an in-memory stdout/stderr
        getattr(sys, name).write(text)
    record.__dict__.update(record_state)
    if ok:
        return payload  # type: ignore[no-any-return]
    raise payload


def _stop(child: multiprocessing.process.BaseProcess, stage: str) -> None:
    """Forward SIGTERM and wait for the child to unwind; SIGKILL it if it will not."""
    if child.pid is None:  # not started
        return
    if child.is_alive():
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
    try:
        ok, payload = True, fn(*args)
    except BaseException as exc:  # every exception goes to the parent
        if not isinstance(exc, FlexsyncError):
            log.debug("traceback", exc_info=True)
        ok, payload = False, _portable(exc, parent_modules)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        writer.send((ok, payload, dict(vars(record)), output))
    except Exception as exc:  # an unpicklable result: still an answer, not a hang
        error = FlexsyncError(f"{type(exc).__name__}: {exc}")
        writer.send((False, error, dict(vars(record)), output))
    writer.close()


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

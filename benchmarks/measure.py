"""Run a command and measure it: wall time and peak RSS of every process it starts.

Two independent readings of memory:
- `os.wait4` returns the kernel's ru_maxrss for the child, which on Linux is the
  maximum over the child and every descendant it reaped: the exact per-process peak
  (a pod's container limit is hit by the sum, so the sampled tree sum is kept too);
- psutil samples the process tree every SAMPLE_SECONDS: peak per process (by pid and
  name) and the peak of the sum over the tree.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.02
MIB = 1024 * 1024


@dataclass
class Measured:
    argv: list[str]
    wall: float
    returncode: int
    max_process_rss: int  # bytes, from wait4 (kernel peak of the child and descendants)
    tree_rss_peak: int  # bytes, largest sampled sum over the process tree
    processes: dict[str, int] = field(default_factory=dict)  # "name[pid]" -> sampled peak
    stdout: str = ""
    stderr: str = ""

    def check(self) -> Measured:
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"{' '.join(self.argv[:4])} ... exited {self.returncode}:\n{tail}")
        return self


def run(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 1800) -> Measured:
    """Run `argv` to completion, sampling its process tree."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd)
        peaks: dict[int, tuple[str, int]] = {}
        tree_peak = 0
        status = rusage = None
        try:
            root = psutil.Process(proc.pid)
            while True:
                pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                tree_peak = max(tree_peak, _sample(root, peaks))
                if time.perf_counter() - start > timeout:
                    proc.kill()
                    raise TimeoutError(f"{argv[0]} ran longer than {timeout} s")
                time.sleep(SAMPLE_SECONDS)
        except psutil.NoSuchProcess:
            _, status, rusage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            argv=list(argv), wall=wall, returncode=proc.returncode,
            max_process_rss=rusage.ru_maxrss * 1024, tree_rss_peak=tree_peak,
            processes={f"{name}[{pid}]": rss for pid, (name, rss) in peaks.items()},
            stdout=out.read(), stderr=err.read(),
        )


def _sample(root: psutil.Process, peaks: dict[int, tuple[str, int]]) -> int:
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        try:
            rss = proc.memory_info().rss
            name = peaks[proc.pid][0] if proc.pid in peaks else _name(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += rss
        if rss > peaks.get(proc.pid, ("", 0))[1]:
            peaks[proc.pid] = (name, rss)
    return total


def _name(proc: psutil.Process) -> str:
    cmd = proc.cmdline()
    # `python -m x` / `.venv/bin/flexsync sync`: the script and its first argument.
    words = [Path(w).name for w in cmd[:3] if not w.startswith("-")]
    return " ".join(words[-2:]) or proc.name()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mib(value: float) -> float:
    return value / MIB

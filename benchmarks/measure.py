"""Run a command and measure it: wall time and peak RSS of every process it starts.

Two independent readings of memory:
- the kernel's ru_maxrss, read by GNU time (`/usr/bin/time -f %M`) around the command:
  the exact peak of the largest single process (the command or anything it waited
  for). Not os.wait4 from here: a child spawned by a big parent inherits the parent's
  high-water mark at exec, so every command would report this harness's own peak;
- psutil samples the process tree every SAMPLE_SECONDS: peak RSS per process (by pid
  and name) and the peak of the tree's summed PSS (proportional set size: a page shared
  by a forked stage child and its parent counts once, as in the pod's cgroup; a sum of
  RSS would count it twice).
Without /usr/bin/time the sampled per-process peak stands in for the first.
"""

from __future__ import annotations

import contextlib
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
GNU_TIME = Path("/usr/bin/time")


@dataclass
class Measured:
    argv: list[str]
    wall: float
    returncode: int
    max_process_rss: int  # bytes: the kernel's peak of the largest process (GNU time)
    tree_rss_peak: int  # bytes, largest sampled sum of PSS over the process tree
    processes: dict[str, int] = field(default_factory=dict)  # "name[pid]" -> sampled peak
    cpu: float = 0.0  # user + system seconds of the command and its waited-for children
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
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("w+") as maxrss:
        wrapped = list(argv)
        if GNU_TIME.exists():
            wrapped = [str(GNU_TIME), "-q", "-f", "%M %U %S", "-o", maxrss.name, *argv]
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=err, env=env, cwd=cwd)
        peaks: dict[int, tuple[str, int]] = {}
        tree_peak = 0
        status = None
        try:
            root = psutil.Process(proc.pid)
            while True:
                pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                tree_peak = max(tree_peak, _sample(root, peaks))
                if time.perf_counter() - start > timeout:
                    _kill_tree(root)
                    os.wait4(proc.pid, 0)
                    raise TimeoutError(f"{argv[0]} ran longer than {timeout} s")
                time.sleep(SAMPLE_SECONDS)
        except psutil.NoSuchProcess:
            _, status, _ = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        sampled = max((rss for _, rss in peaks.values()), default=0)
        # CPU time is what a loaded machine does not inflate (the wall time it does).
        kernel = maxrss.read().strip().splitlines()
        fields = kernel[-1].split() if kernel else []
        peak = int(fields[0]) * 1024 if fields and fields[0].isdigit() else sampled
        cpu = float(fields[1]) + float(fields[2]) if len(fields) == 3 else 0.0
        return Measured(
            argv=list(argv), wall=wall, returncode=proc.returncode,
            max_process_rss=max(peak, sampled), tree_rss_peak=tree_peak, cpu=cpu,
            processes={f"{name}[{pid}]": rss for pid, (name, rss) in peaks.items()},
            stdout=out.read(), stderr=err.read(),
        )


def _kill_tree(root: psutil.Process) -> None:
    """Kill the command and everything it started (GNU time does not pass SIGKILL on)."""
    try:
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for proc in [*children, root]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(children, timeout=10)


def _sample(root: psutil.Process, peaks: dict[int, tuple[str, int]]) -> int:
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        try:
            full = proc.memory_full_info()
            rss = full.rss
            name = peaks[proc.pid][0] if proc.pid in peaks else _name(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += getattr(full, "pss", rss)
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

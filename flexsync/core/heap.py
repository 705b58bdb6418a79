"""glibc's heap: `malloc_trim`, and the number of malloc arenas a process may have.

glibc keeps freed chunks in its arenas; a process' RSS then stays at its high-water mark,
and a forked child shares (then copies) pages that hold nothing. The run trims before
each fork (flexsync/isolation.py) and dbt's child after each node of a big build
(flexsync/transform.py).

Arenas: glibc gives threads arenas of their own (up to 8 per core of the machine, not of
the pod), and each holds its own free pages. `MALLOC_ARENA_MAX=2` in the image kept
dbt's and DuckDB's threads in less memory, but the landing's parse and its insert thread
then waited on each other's arena lock (≈0.3 s of the 10-year backfill's extract;
benchmarks/README.md, session 14). glibc fixes the limit the first time a thread needs
a new arena, for the process and every child it forks, so one limit holds for the whole
run: sixteen, set by the `flexsync` command before any thread starts (flexsync/cli.py).
It replaces a `MALLOC_ARENA_MAX` (or `GLIBC_TUNABLES` arena limit) given in the
environment, which glibc read at the process' start.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

M_ARENA_MAX = -8  # <malloc.h>
# The run's process tree: glibc's own limit on two cores, so that the landing's threads
# (the parse, the inserts, DuckDB's own, beside those a forked child inherits) each keep
# an arena; on a many-core node glibc would allow 8 per core.
PROCESS_MALLOC_ARENAS = 16


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None
    return function


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim` (call it with 0), or None off glibc."""
    return _libc_function("malloc_trim")


def limit_malloc_arenas(count: int) -> bool:
    """`mallopt(M_ARENA_MAX, count)`; False off glibc. Call it before the process starts
    threads: it only counts until a thread has needed a new arena (glibc then fixes the
    limit, for this process and every child it forks)."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:  # pragma: no cover - not glibc
        return False
    return bool(mallopt(M_ARENA_MAX, count))

"""glibc's heap: `malloc_trim`, and the number of malloc arenas a process may have.

glibc keeps freed chunks in its arenas; a process' RSS then stays at its high-water mark,
and a forked child shares (then copies) pages that hold nothing. The run trims before
each fork (flexsync/isolation.py) and dbt's child after each node of a big build
(flexsync/transform.py).

Arenas: glibc gives threads arenas of their own (up to 8 per core), and each holds its
own free pages. Two arenas keep dbt's and DuckDB's threads in less memory; the landing's
parse and its insert thread run faster with one each (they contended for two: ≈0.3 s of
the 10-year backfill, benchmarks/README.md, session 14). glibc fixes the limit the first
time a thread needs a new arena, and a forked child inherits it fixed. So the run's
process sets none (nor may MALLOC_ARENA_MAX in the environment: that fixes it for the
whole process tree) and every stage's child sets its own before its threads start
(flexsync/isolation.py).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

M_ARENA_MAX = -8  # <malloc.h>
# Every stage's child: two arenas (dbt's build, the snapshot, the load) ...
STAGE_MALLOC_ARENAS = 2
# ... but the landing's: glibc's own limit for two cores (it uses three: the parse, the
# insert thread, the archive's gzip).
LANDING_MALLOC_ARENAS = 16


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
    """`mallopt(M_ARENA_MAX, count)`; False off glibc. It only counts if no thread of
    this process (nor of its parent, before the fork) has needed a new arena under a
    limit yet: call it before the process starts threads."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:  # pragma: no cover - not glibc
        return False
    return bool(mallopt(M_ARENA_MAX, count))

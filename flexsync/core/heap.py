"""glibc's `malloc_trim`: hand the heap's free pages back to the kernel.

glibc keeps freed chunks in its arenas; a process' RSS then stays at its high-water mark,
and a forked child shares (then copies) pages that hold nothing. The run trims before
each fork (flexsync/isolation.py) and dbt's child after each node of a big build
(flexsync/transform.py).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim` (call it with 0), or None off glibc."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None
    return trim

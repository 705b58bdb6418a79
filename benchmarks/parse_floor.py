"""What streaming a Flex file through expat from Python costs before any landing work.

    .venv/bin/python benchmarks/parse_floor.py benchmarks/work/files/backfill-*.xml

The floor under `flexsync extract` (benchmarks/README.md, "Backfill extract floor"):
hashing the bytes, expat tokenising them, and expat building every element's ordered
attribute list as Python strings for a handler that does nothing with them.
"""

from __future__ import annotations

import hashlib
import sys
import time
import xml.parsers.expat
from collections.abc import Callable
from pathlib import Path

CHUNK = 1 << 20


def _seconds(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _sha256(path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)


def _expat(path: Path, with_handler: bool) -> None:
    parser = xml.parsers.expat.ParserCreate()
    parser.ordered_attributes = True
    if with_handler:
        parser.StartElementHandler = lambda tag, attributes: None
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            parser.Parse(chunk, False)
    parser.Parse(b"", True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = Path(argv[0])
    print(f"{path.name}: {path.stat().st_size / 1e6:.0f} MB")
    print(f"sha256 only                              {_seconds(lambda: _sha256(path)):.2f} s")
    print(f"expat, no handler                        {_seconds(lambda: _expat(path, False)):.2f} s")
    print(f"expat, attribute lists to a no-op handler {_seconds(lambda: _expat(path, True)):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

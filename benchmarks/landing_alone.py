"""The landing alone: what `flexsync extract` spends in its landing, without the command.

    .venv/bin/python benchmarks/landing_alone.py FILE DATA_DIR

Prints the seconds from opening a fresh warehouse in DATA_DIR to its close: the schema,
`land_sources` (hash, parse, inserts, archive) and DuckDB's commit — the same calls
`flexsync extract`'s landing child makes, with the same malloc arenas, but none of its
start-up (Python, imports, the run's record, the fork). If this alone is slower than a
target, no work around the landing can meet it (`make bench` says so).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from flexsync.core.heap import PROCESS_MALLOC_ARENAS, limit_malloc_arenas


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    limit_malloc_arenas(PROCESS_MALLOC_ARENAS)  # as the flexsync command, before any thread
    from flexsync.core.warehouse import connect, ensure_schema, prepare_data_dir
    from flexsync.extract.flex_landing import land_sources
    from flexsync.extract.flex_source import FlexSource

    path, data_dir = Path(argv[0]), Path(argv[1])
    prepare_data_dir(data_dir)
    warehouse = data_dir / "warehouse.duckdb"
    if warehouse.exists():
        print(f"{warehouse} exists: the landing alone starts from an empty warehouse",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    with connect(warehouse) as con:
        ensure_schema(con)
        land_sources(con, [FlexSource(path.name, path=path)], (), data_dir / "archive")
    print(f"{time.perf_counter() - start:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

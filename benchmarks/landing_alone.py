"""The landing alone: what `flexsync extract` spends in its landing, without the command.

    .venv/bin/python benchmarks/landing_alone.py FILE DATA_DIR

Prints the seconds `flexsync.stages.land_flex_files` takes on a fresh warehouse in
DATA_DIR: the schema, the landing (hash, parse, inserts, archive) and DuckDB's commit —
what `flexsync extract`'s landing child runs, under the command's malloc arena limit,
but none of its start-up (Python, imports, the run's record, the fork). If this alone
is slower than a target, no work around the landing can meet it (`make bench` says so).
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
    from flexsync.core.config import load_settings
    from flexsync.stages import land_flex_files

    path, data_dir = Path(argv[0]), Path(argv[1])
    settings = load_settings({"BROKER_SYNC_DATA_DIR": str(data_dir)})
    if settings.warehouse_path.exists():
        print(f"{settings.warehouse_path} exists: the landing alone starts from an empty "
              "warehouse", file=sys.stderr)
        return 2
    start = time.perf_counter()
    land_flex_files(settings, [path])
    print(f"{time.perf_counter() - start:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

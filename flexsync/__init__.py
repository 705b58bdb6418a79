"""flexsync: IBKR Flex -> DuckDB -> dbt -> Wealthfolio + Pushgateway."""

import os

# Before anything imports pyarrow: its default allocator (mimalloc) keeps its own arenas
# (~5 MiB of the pod's 256 MiB, measured by benchmarks/run.py); the landing already
# passes the system pool explicitly. An explicit setting in the environment wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

__version__ = "0.1.0"

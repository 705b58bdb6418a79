"""Where the benchmarks run from and write to (benchmarks/work/ is gitignored)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work"
BIN = Path(sys.executable).parent  # the venv's bin: flexsync, dbt
FLEXSYNC = str(BIN / "flexsync")

"""A Wealthfolio account of a ten-year backfill's size, in dbt's DuckDB memory.

A 10-year statement posts ≈63,000 activities. When Wealthfolio changes every one of them
once (an upgrade that adds a field to the activity JSON, a bulk edit), the state holds
two versions of each: `stg_wealthfolio__activities` must still build within the memory
limit dbt runs with in the pod (64MB: profiles.yml), or every night fails from then on.
Reading `fxRate` / `accountCurrency` out of `raw_json` in the state view held DuckDB's JSON
buffers over every version and ran out of it here; they are columns of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

from fakes.wealthfolio.activities import FreshActivitySource
from flexsync.extract.wealthfolio_snapshot import snapshot_activities

ACTIVITIES = 63_000
BUILD_STATE = """
import sys
from pathlib import Path
from flexsync.core.config import Settings
from flexsync.transform import run_transform
run_transform(Settings(data_dir=Path(sys.argv[1]), wf_account_id="acc"), "run-3",
              select=["+stg_wealthfolio__activities"], exclude=["test_type:data"])
"""


def test_a_backfill_sized_account_changed_once_builds_in_dbts_memory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"))
    try:
        source = FreshActivitySource(ACTIVITIES)
        first = snapshot_activities(con, source, "acc", "run-1")
        # Every activity changed once (a second version each), by a Wealthfolio that
        # sends more with each activity: its JSON grows from ≈0.9 to ≈1.4 KB.
        metadata = {"import": {"source": "IBKR Flex", "note": "reconciled " * 40}}
        for i in range(ACTIVITIES):
            source.edits[i] = {"updatedAt": "2026-11-30T02:00:00.654321+00:00",
                               "fxRate": "1.2345" if i % 2 else None, "metadata": metadata}
        second = snapshot_activities(con, source, "acc", "run-2")
    finally:
        con.close()
    assert (first.new_count, second.changed_count) == (ACTIVITIES, ACTIVITIES)
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        sizes = con.execute("select _snapshot_id = ?, avg(length(raw_json)) "
                            "from raw_wealthfolio.activities group by all order by all",
                            [second.snapshot_id]).fetchall()
    assert [round(size, -2) for _, size in sizes] == [900, 1400]

    # dbt in a process of its own, as a run's stage is: dbt imported and run in pytest's
    # process left later tests' forked dbt children hanging.
    env = {k: v for k, v in os.environ.items() if k != "FLEXSYNC_DUCKDB_MEMORY_LIMIT"}
    env |= {"DBT_TARGET_PATH": str(tmp_path / "dbt-target"),
            "DBT_LOG_PATH": str(tmp_path / "dbt-logs")}  # the pod's 64MB: no override
    subprocess.run([sys.executable, "-c", BUILD_STATE, str(data_dir)], env=env, check=True,
                   timeout=240)

    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as con:
        state = con.execute(
            "select count(*), count(distinct wf_activity_id), count(fx_rate), "
            "count(*) filter (where account_currency = 'GBP') "
            "from staging.stg_wealthfolio__activities").fetchall()
    assert state == [(ACTIVITIES, ACTIVITIES, ACTIVITIES // 2, ACTIVITIES)]

"""Hostile answers from the network: a gzip bomb from the Flex endpoint or from
Wealthfolio, and JSON nested 100,000 deep. Each ends quickly with a clear exit 4 / 5 and
nothing landed or posted, instead of gigabytes of memory or a RecursionError (exit 1)."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest

from fakes.flex import FakeFlexService, Raw
from fakes.wealthfolio import Reply
from tests.helpers import DEMO_STATEMENT
from tests.reliability.conftest import Recorder
from tests.reliability.harness import (
    FLEX_TOKEN,
    ReliabilityFakeWealthfolio,
    SecretScanner,
    assert_clean_failure,
    file_mode_env,
    gzip_bomb,
    readonly,
    run_process,
)

# Past both caps (Flex 160 MiB, Wealthfolio 32 MiB), ~200 KiB on the wire.
BOMB_INFLATED = 200 * 1024 * 1024
# Well under the pod's 256 MiB: the bomb is refused long before it could inflate.
TIME_BOUND_SECONDS = 60.0


@functools.cache
def bomb() -> bytes:
    return gzip_bomb(BOMB_INFLATED)


def _landed_rows(data_dir: Path) -> int:
    with readonly(data_dir / "warehouse.duckdb") as con:
        row = con.execute("select count(*) from raw_ibkr.extracts").fetchone()
    return int(row[0]) if row else 0


def test_flex_gzip_bomb_exits_4(wf: ReliabilityFakeWealthfolio, data_dir: Path,
                                reliability_ledger: Recorder) -> None:
    assert len(bomb()) < 1024 * 1024
    with FakeFlexService(token=FLEX_TOKEN) as flex:
        flex.configure(poll_default=Raw(bomb(), "text/xml", content_encoding="gzip"))
        env = file_mode_env(data_dir, wf, IBKR_FLEX_QUERY_ID=flex.query_id,
                            IBKR_FLEX_SEND_URL=flex.send_url, IBKR_FLEX_GET_URL=flex.get_url)
        started = time.monotonic()
        result = run_process(["sync"], env, timeout=120)
        elapsed = time.monotonic() - started
    scanner = SecretScanner()
    scanner.results(result)
    reliability_ledger(scenario="Flex answers a gzip bomb (200 MiB inflated)", faults=1,
                       secrets=len(scanner.hits))
    assert_clean_failure(result, 4, "MiB", "decompressed")
    assert elapsed < TIME_BOUND_SECONDS, elapsed
    assert _landed_rows(data_dir) == 0 and not wf.requests
    assert not scanner.hits, scanner.hits


@pytest.mark.parametrize("hostile", ["gzip bomb", "JSON 100k deep"])
def test_wealthfolio_hostile_answer_exits_5(
        wf: ReliabilityFakeWealthfolio, data_dir: Path, hostile: str,
        reliability_ledger: Recorder) -> None:
    if hostile == "gzip bomb":
        wf.search_reply = Reply(200, bomb(), "application/json", [("Content-Encoding", "gzip")])
        phrases = ("MiB", "decompressed")
    else:
        depth = 100_000
        wf.search_reply = Reply(200, b"[" * depth + b"]" * depth, "application/json")
        phrases = ("nested too deeply",)
    env = file_mode_env(data_dir, wf)
    started = time.monotonic()
    result = run_process(["sync", "--flex-file", str(DEMO_STATEMENT)], env, timeout=180)
    elapsed = time.monotonic() - started
    scanner = SecretScanner()
    scanner.results(result)
    reliability_ledger(scenario=f"Wealthfolio answers {hostile}", faults=1,
                       in_wealthfolio=len(wf.activities), secrets=len(scanner.hits))
    assert_clean_failure(result, 5, *phrases)
    assert elapsed < TIME_BOUND_SECONDS * 2, elapsed
    assert not wf.activities, "nothing may be posted without a snapshot"
    assert not scanner.hits, scanner.hits

"""Hostile `--flex-file`s from the security review: each ends in bounded time within the
pod's 256 MiB, refused with a clear exit 2 and nothing landed — or lands whole when it is
a legitimate (if odd) statement. Peak RSS measured by the kernel, as for the 100 MB file."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import DEMO_STATEMENT, REPO_ROOT
from tests.reliability.conftest import Recorder
from tests.reliability.harness import TRACEBACK, file_mode_env, process_env, readonly

MEMORY_BOUND_MIB = 256  # the CronJob pod's limit
TIME_BOUND_SECONDS = 60.0

_PEAK_RSS = """
import resource, subprocess, sys
run = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
sys.stderr.write(run.stderr)
print(run.returncode, peak)
"""


def _in_trades(rows: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        text = DEMO_STATEMENT.read_text()
        path.write_text(text.replace("</Trades>", rows + "</Trades>", 1))
    return write


def _big_attribute(path: Path) -> None:
    text = DEMO_STATEMENT.read_text()
    head, tail = text.split("</Trades>", 1)
    with path.open("w") as out:
        out.write(head + '<Trade accountId="U1234567" notes="')
        chunk = "x" * (1 << 20)
        for _ in range(200):
            out.write(chunk)
        out.write('" />\n</Trades>' + tail)


def _tag(count: int) -> str:
    return ('<Trade accountId="U1234567" '
            + " ".join(f'a{i}="v{i}"' for i in range(count)) + " />\n")


def _sections(count: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        text = DEMO_STATEMENT.read_text()
        extra = "".join(f'<Sec{i}><Row{i} a="1" /></Sec{i}>\n' for i in range(count))
        path.write_text(text.replace("</Trades>", "</Trades>" + extra, 1))
    return write


@dataclass(frozen=True)
class Hostile:
    name: str
    write: Callable[[Path], None]
    code: int  # 0: lands whole; 2: refused
    phrase: str = ""


CASES = [
    Hostile("1M empty rows (9 MB): lands, ibflex skipped", _in_trades("<Trade/>\n" * 1_000_000),
            0),
    Hostile("a row with 300 attributes: lands", _in_trades(_tag(300)), 0),
    Hostile("a tag with 1,000 attributes", _in_trades(_tag(1000)), 2, "attributes"),
    Hostile("a tag with 4,000 attributes", _in_trades(_tag(4000)), 2, "attributes"),
    Hostile("1,000 attribute names over 100 rows",
            _in_trades("".join('<Trade accountId="U1234567" '
                               + " ".join(f'b{r}_{i}="x"' for i in range(10)) + " />\n"
                               for r in range(100))), 2, "columns"),
    Hostile("5,000 section tags", _sections(5000), 2, "kinds of section"),
    Hostile("a 200 MB attribute", _big_attribute, 2, "without markup"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_flex_file_is_bounded(case: Hostile, data_dir: Path, tmp_path: Path,
                                      reliability_ledger: Recorder) -> None:
    path = tmp_path / "hostile.xml"
    case.write(path)
    env = process_env(file_mode_env(data_dir, None))
    started = time.monotonic()
    probe = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "flexsync", "extract",
         "--flex-file", str(path)], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=300, check=False)
    elapsed = time.monotonic() - started
    code, peak_kib = (int(v) for v in probe.stdout.split())
    peak_mib = peak_kib / 1024
    reliability_ledger(scenario=f"hostile file: {case.name} (exit {code}, {peak_mib:.0f} MiB, "
                       f"{elapsed:.0f} s)", faults=1)
    last = [line for line in probe.stderr.splitlines() if line.strip()][-1]
    assert code == case.code, probe.stderr[-2000:]
    assert TRACEBACK not in probe.stderr
    assert peak_mib <= MEMORY_BOUND_MIB, f"peak RSS {peak_mib:.0f} MiB"
    assert elapsed < TIME_BOUND_SECONDS, f"{elapsed:.0f} s"
    with readonly(data_dir / "warehouse.duckdb") as con:
        extracts = con.execute("select count(*) from raw_ibkr.extracts").fetchone()
        verdict = con.execute("select ok, error from raw_ibkr.flex_validation").fetchall()
    if case.code == 2:
        assert case.phrase in last and "nothing landed" in last, last
        assert extracts == (0,)
        archive = data_dir / "archive"
        assert not archive.exists() or not any(p.is_file() for p in archive.rglob("*"))
    else:
        assert extracts == (1,)
        if "ibflex skipped" in case.name:
            assert verdict[0][0] is None and "elements" in verdict[0][1], verdict

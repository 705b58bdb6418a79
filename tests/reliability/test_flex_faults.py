"""IBKR Flex Web Service faults, end to end through `flexsync sync` in download mode.

Every fault: exit 4, one clear line (no traceback), and nothing written anywhere that
matters — no raw row, no archive entry, not a single Wealthfolio request — and the
token nowhere (it travels in the query string, so every URL in a message is a risk).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fakes.flex import (
    CSV_STATEMENT,
    HTML_PAGE,
    FakeFlexService,
    FlexCode,
    Http,
    Raw,
)
from tests.reliability.conftest import Recorder
from tests.reliability.harness import (
    FLEX_TOKEN,
    ReliabilityFakeWealthfolio,
    SecretScanner,
    assert_clean_failure,
    file_mode_env,
    readonly,
    run_inprocess,
    table_exists,
)

DEADLINE_SECONDS = "3"


@dataclass(frozen=True)
class FlexFault:
    name: str
    phrases: tuple[str, ...]
    scenario: dict[str, Any] = field(default_factory=dict)  # FakeFlexService.configure()
    service: dict[str, Any] = field(default_factory=dict)  # FakeFlexService(...) arguments
    dead_service: bool = False


FAULTS = [
    FlexFault("1012 token expired", ("1012", "token has expired", "IBKR_FLEX_TOKEN"),
              service={"expired_token": FLEX_TOKEN}),
    FlexFault("1015 token invalid", ("1015", "token is invalid", "IBKR_FLEX_TOKEN"),
              service={"token": "a-token-that-is-not-ours"}),
    FlexFault("1019 for ever", ("gave up", "deadline"),
              scenario={"poll_default": FlexCode(1019)}),
    FlexFault("1018 throttled", ("1018",), scenario={"send_default": FlexCode(1018)}),
    FlexFault("HTML maintenance page", ("HTML",),
              scenario={"poll_default": Raw(HTML_PAGE, "text/html; charset=utf-8")}),
    FlexFault("CSV statement", ("CSV", "XML"), scenario={"poll_default": Raw(CSV_STATEMENT)}),
    FlexFault("HTTP 500", ("500",), scenario={"send_default": Http(500)}),
    FlexFault("service unreachable", ("cannot connect",), dead_service=True),
]


@pytest.fixture
def flex_service(request: pytest.FixtureRequest) -> Iterator[FakeFlexService]:
    fault: FlexFault = request.param
    service = FakeFlexService(**{"token": FLEX_TOKEN, **fault.service})
    with service:
        service.configure(**fault.scenario)
        yield service


@pytest.mark.parametrize("flex_service", FAULTS, ids=[f.name for f in FAULTS], indirect=True)
def test_flex_fault_exits_4_and_writes_nothing(
        flex_service: FakeFlexService, wf: ReliabilityFakeWealthfolio, data_dir: Path,
        request: pytest.FixtureRequest, reliability_ledger: Recorder) -> None:
    fault: FlexFault = request.node.callspec.params["flex_service"]
    send_url = flex_service.send_url
    if fault.dead_service:
        send_url = flex_service.dead_get_url.replace("GetStatement", "SendRequest")
    env = file_mode_env(
        data_dir, wf, IBKR_FLEX_QUERY_ID=flex_service.query_id, IBKR_FLEX_SEND_URL=send_url,
        IBKR_FLEX_GET_URL=flex_service.get_url, IBKR_FLEX_DEADLINE_SECONDS=DEADLINE_SECONDS,
        IBKR_FLEX_THROTTLE_SECONDS="1")
    result = run_inprocess(["sync"], env)

    scanner = SecretScanner()
    scanner.results(result)
    scanner.directory(data_dir)
    with readonly(data_dir / "warehouse.duckdb") as con:
        landed = {t: con.execute(f"select count(*) from raw_ibkr.{t}").fetchone()
                  for t in ("extracts", "statements", "trades", "cash_transactions")}
        marts = table_exists(con, "marts", "fct_activities")
    archived = list(data_dir.rglob("*.xml.gz"))
    reliability_ledger(scenario=f"Flex {fault.name}", faults=1, expected=0,
                       in_wealthfolio=len(wf.activities), secrets=len(scanner.hits))

    assert_clean_failure(result, 4, *fault.phrases)
    assert not wf.requests, "Wealthfolio was called although nothing was landed"
    assert all(count == (0,) for count in landed.values()), landed
    assert not marts and not archived
    assert not scanner.hits, scanner.hits
    if not fault.dead_service:
        assert flex_service.requests, "the fake Flex service was never asked"
        assert len(flex_service.requests) <= 12, "retries must be bounded"

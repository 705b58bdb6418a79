"""The reliability report: a pytest plugin that prints the figures table and fails the run
unless every invariant holds.

Tests record figures through the `reliability_ledger` fixture (tests/reliability/
conftest.py); this module keeps them and, when loaded as a plugin
(`pytest -p tests.reliability.report`, what `make reliability` does), prints

    scenario | faults | expected | in WF | lost | duplicated | secrets | result

and sets a non-zero exit status unless lost = 0, duplicated = 0, secrets = 0, at least
one scenario ran and every scenario's test passed. Without the plugin (plain
`make test`) the records are kept in memory and nothing is printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

NOT_APPLICABLE = None  # a scenario with no activities (Flex faults, hostile input ...)


@dataclass
class Scenario:
    nodeid: str
    name: str
    faults: int = 0
    expected: int | None = NOT_APPLICABLE
    in_wealthfolio: int | None = NOT_APPLICABLE
    lost: int = 0
    duplicated: int = 0
    secrets: int = 0
    outcome: str = "running"  # passed | failed | skipped | running


@dataclass
class ReliabilityLedger:
    """Every scenario recorded in this pytest session, in recording order."""

    scenarios: list[Scenario] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # nodeid -> passed/failed/skipped

    def record(self, nodeid: str, *, scenario: str, faults: int = 0,
               expected: int | None = NOT_APPLICABLE, in_wealthfolio: int | None = NOT_APPLICABLE,
               lost: int = 0, duplicated: int = 0, secrets: int = 0) -> Scenario:
        for name, value in (("faults", faults), ("lost", lost), ("duplicated", duplicated),
                            ("secrets", secrets)):
            if value < 0:
                raise ValueError(f"{name} cannot be negative ({value})")
        entry = Scenario(nodeid, scenario, faults, expected, in_wealthfolio, lost, duplicated,
                         secrets)
        self.scenarios.append(entry)
        return entry

    def settle(self) -> None:
        """Give each scenario its test's outcome (a scenario passes only if its test did)."""
        for entry in self.scenarios:
            entry.outcome = self.outcomes.get(entry.nodeid, "running")

    @property
    def totals(self) -> dict[str, int]:
        return {
            "scenarios": len(self.scenarios),
            "faults": sum(s.faults for s in self.scenarios),
            "expected": sum(s.expected or 0 for s in self.scenarios),
            "in_wealthfolio": sum(s.in_wealthfolio or 0 for s in self.scenarios),
            "lost": sum(s.lost for s in self.scenarios),
            "duplicated": sum(s.duplicated for s in self.scenarios),
            "secrets": sum(s.secrets for s in self.scenarios),
        }

    def failed_tests(self) -> list[str]:
        return sorted(n for n, o in self.outcomes.items() if o == "failed")

    def verdict(self) -> list[str]:
        """Reasons the run is not acceptable; empty means every invariant held."""
        self.settle()
        totals = self.totals
        reasons = []
        if not self.scenarios:
            reasons.append("no scenario recorded any figures")
        for key in ("lost", "duplicated", "secrets"):
            if totals[key]:
                reasons.append(f"{key} = {totals[key]} (must be 0)")
        bad = [s.name for s in self.scenarios if s.outcome != "passed"]
        if bad:
            reasons.append(f"{len(bad)} scenario(s) did not pass: {', '.join(bad[:8])}"
                           + (" …" if len(bad) > 8 else ""))
        failed = self.failed_tests()
        if failed:
            reasons.append(f"{len(failed)} reliability test(s) failed")
        return reasons


LEDGER = ReliabilityLedger()

_COLUMNS = ("scenario", "faults", "expected", "in WF", "lost", "duplicated", "secrets",
            "result")


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def render_table(ledger: ReliabilityLedger) -> list[str]:
    ledger.settle()
    rows = [(s.name, _cell(s.faults), _cell(s.expected), _cell(s.in_wealthfolio),
             _cell(s.lost), _cell(s.duplicated), _cell(s.secrets), s.outcome)
            for s in ledger.scenarios]
    totals = ledger.totals
    total_row = (f"TOTAL ({totals['scenarios']} scenarios)", str(totals["faults"]),
                 str(totals["expected"]), str(totals["in_wealthfolio"]), str(totals["lost"]),
                 str(totals["duplicated"]), str(totals["secrets"]),
                 "ok" if not ledger.verdict() else "FAILED")
    widths = [max(len(str(r[i])) for r in [_COLUMNS, *rows, total_row])
              for i in range(len(_COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True)]
        out.append(cells[-1].ljust(widths[-1]))
        return " | ".join(out)

    rule = "-+-".join("-" * w for w in widths)
    return [line(_COLUMNS), rule, *(line(r) for r in rows), rule, line(total_row)]


# --------------------------------------------------------------------------- pytest hooks
# Active only when this module is loaded as a plugin (-p tests.reliability.report).

_session: dict[str, Any] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    _session["session"] = session


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/reliability/" not in report.nodeid.replace("\\", "/"):
        return
    previous = LEDGER.outcomes.get(report.nodeid)
    if report.failed:
        LEDGER.outcomes[report.nodeid] = "failed"  # a failed setup/teardown fails it too
    elif report.skipped and hasattr(report, "wasxfail"):
        LEDGER.outcomes[report.nodeid] = "xfail"  # a known bug, documented in its reason
    elif report.skipped and previous != "failed":
        LEDGER.outcomes[report.nodeid] = "skipped"
    elif report.when == "call" and report.passed and previous is None:
        LEDGER.outcomes[report.nodeid] = "passed"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config
                            ) -> None:
    terminalreporter.section("reliability report")
    for text in render_table(LEDGER):
        terminalreporter.write_line(text)
    for outcome, title in (("xfail", "known product bugs (strict xfail)"),
                           ("skipped", "skipped")):
        names = sorted(n for n, o in LEDGER.outcomes.items() if o == outcome)
        if names:
            terminalreporter.write_line(f"{title} ({len(names)}): " + ", ".join(names))
    reasons = LEDGER.verdict()
    if reasons:
        terminalreporter.write_line("RELIABILITY FAILED: " + "; ".join(reasons), red=True,
                                    bold=True)
        session = _session.get("session")
        if session is not None and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        totals = LEDGER.totals
        skipped = sum(1 for o in LEDGER.outcomes.values() if o == "skipped")
        terminalreporter.write_line(
            f"reliability ok: {totals['scenarios']} scenarios, {totals['faults']} faults "
            f"injected, lost 0, duplicated 0, secrets 0"
            + (f" ({skipped} test(s) skipped: no evidence from them, see above)"
               if skipped else ""), green=True, bold=True)

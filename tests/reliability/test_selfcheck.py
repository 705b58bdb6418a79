"""The evidence machinery itself: the scanner finds planted secrets, the figures count
planted losses and duplicates, the report refuses a broken invariant. A suite whose
counters cannot count would report zeros for ever."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import duckdb

from tests.reliability.harness import (
    ACCOUNT_UUID,
    FLEX_TOKEN,
    WF_PASSWORD,
    ReliabilityFakeWealthfolio,
    SecretScanner,
    wealthfolio_figures,
)
from tests.reliability.report import ReliabilityLedger, render_table


def test_scanner_finds_planted_secrets(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("create schema marts; create table marts.t (a varchar, b varchar, n integer)")
    con.execute("insert into marts.t values ('x', ?, 1)", [f"token={FLEX_TOKEN}"])
    con.close()
    (tmp_path / "archive.xml.gz").write_bytes(gzip.compress(WF_PASSWORD.encode()))
    session = tmp_path / "wf-session.json"
    session.write_text('{"token": "abc"}')
    os.chmod(session, 0o644)
    scanner = SecretScanner()
    scanner.text("stderr", f"login with {WF_PASSWORD}")
    scanner.directory(tmp_path, session_path=session)
    hits = " | ".join(scanner.hits)
    assert "WF_PASSWORD in stderr" in hits
    assert "IBKR_FLEX_TOKEN in warehouse.duckdb:marts.t" in hits
    assert "WF_PASSWORD in archive.xml.gz (decompressed)" in hits
    assert "mode 644" in hits


def test_session_cache_may_hold_the_token_but_not_the_password(tmp_path: Path) -> None:
    session = tmp_path / "wf-session.json"
    session.write_text('{"token": "session-token-1"}')
    os.chmod(session, 0o600)
    scanner = SecretScanner()
    scanner.add_secret("WF session token 1", "session-token-1")
    scanner.session_cache(session)
    assert scanner.hits == []
    scanner.text("a log line", "Bearer session-token-1")
    assert scanner.hits == ["WF session token 1 in a log line"]
    session.write_text(f'{{"password": "{WF_PASSWORD}"}}')
    scanner.session_cache(session)
    assert "WF_PASSWORD in session cache wf-session.json" in scanner.hits


def test_figures_count_planted_losses_and_duplicates() -> None:
    with ReliabilityFakeWealthfolio(WF_PASSWORD) as fake:
        fake.create_account("IBKR", "GBP", account_id=ACCOUNT_UUID)
        for key in ("k1", "k2"):
            fake.activities[key] = {"id": key, "accountId": ACCOUNT_UUID,
                                    "idempotencyKey": key}
        fake.activities["copy"] = {"id": "copy", "accountId": ACCOUNT_UUID,
                                   "idempotencyKey": None}
        figures = wealthfolio_figures(fake, {"k1", "k2", "k3"})
    assert (figures.expected, figures.in_wealthfolio, figures.lost, figures.duplicated) == (
        3, 2, 1, 1)


def test_report_refuses_broken_invariants() -> None:
    ledger = ReliabilityLedger()
    ledger.record("a", scenario="fine", expected=9, in_wealthfolio=9)
    ledger.outcomes["a"] = "passed"
    assert ledger.verdict() == []
    ledger.record("b", scenario="leaky", secrets=1, duplicated=2)
    ledger.outcomes["b"] = "passed"
    ledger.record("c", scenario="broken")
    ledger.outcomes["c"] = "failed"
    reasons = " | ".join(ledger.verdict())
    assert "duplicated = 2" in reasons and "secrets = 1" in reasons
    assert "did not pass: broken" in reasons
    table = "\n".join(render_table(ledger))
    assert "TOTAL (3 scenarios)" in table and "FAILED" in table
    assert ReliabilityLedger().verdict() == ["no scenario recorded any figures"]

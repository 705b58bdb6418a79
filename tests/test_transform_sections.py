"""A later statement without an OpenPositions section must not wipe the broker positions."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from tests.helpers import DEMO_STATEMENT, query, run_cli


def test_statement_without_open_positions_keeps_the_previous_positions(
        data_dir: Path, tmp_path: Path) -> None:
    text = DEMO_STATEMENT.read_text()
    start, end = text.index("<OpenPositions>"), text.index("</OpenPositions>")
    later = tmp_path / "later_cash_only.xml"
    later.write_text(text[:start] + text[end + len("</OpenPositions>"):]
                     .replace('toDate="2026-11-20"', 'toDate="2026-11-21"')
                     .replace('whenGenerated="2026-11-21;02:00:41"',
                              'whenGenerated="2026-11-22;02:00:41"'))
    for path in (DEMO_STATEMENT, later):
        landed = run_cli(["extract", "--flex-file", str(path)], data_dir,
                         IBKR_ACCOUNT_ID_UPSTREAM="U1234567")
        assert landed.returncode == 0, landed.stderr
    sections = query(data_dir, "select sections from raw_ibkr.statements order by to_date")
    assert "OpenPositions" in sections[0][0] and "OpenPositions" not in sections[1][0]
    result = run_cli(["transform"], data_dir)
    assert result.returncode == 0, result.stderr
    rows = dict(query(data_dir, "select symbol, broker_quantity from marts.position_drift"))
    assert rows == {"VUAG.L": Decimal(35), "AAPL": Decimal(10), "EUNL.DE": Decimal(25),
                    "VOD.L": Decimal(500)}

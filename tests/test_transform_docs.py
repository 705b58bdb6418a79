"""docs/mapping.md and the dbt unit tests stay in step with the seeds."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = REPO_ROOT / "seeds" / "cash_type_mapping.csv"
DOC = REPO_ROOT / "docs" / "mapping.md"
WEALTHFOLIO_TYPES = {"BUY", "SELL", "SPLIT", "DIVIDEND", "INTEREST", "DEPOSIT", "WITHDRAWAL",
                     "TRANSFER_IN", "TRANSFER_OUT", "FEE", "TAX", "CREDIT", "ADJUSTMENT",
                     "UNKNOWN"}


def _seed_rows() -> list[tuple[str, str, str, str]]:
    with SEED.open(newline="", encoding="utf-8") as handle:
        return [(r["flex_type"], r["direction"], r["activity_type"], r["subtype"])
                for r in csv.DictReader(handle)]


def _doc_rows(doc: Path = DOC) -> list[tuple[str, str, str, str]]:
    text = doc.read_text(encoding="utf-8")
    match = re.search(r"<!-- mapping-table:start -->(.*?)<!-- mapping-table:end -->", text,
                      re.DOTALL)
    assert match, "docs/mapping.md lost its mapping-table markers"
    rows = []
    for line in match.group(1).strip().splitlines()[2:]:  # header and separator
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        flex_type, direction, activity_type, subtype = cells
        rows.append((flex_type.strip("`"), direction, activity_type, subtype))
    return rows


def test_the_documented_mapping_is_the_seed() -> None:
    assert _doc_rows() == _seed_rows()
    # The table has one home: the README links to it instead of repeating it.
    assert "mapping-table:start" not in (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_the_seed_is_the_spec_list() -> None:
    """docs/mapping.md#cash-transactions: runbook rows, both deposit spellings, safe extensions,
    refunds by sign, with
    Wealthfolio's subtypes (issue 13: WITHHOLDING, NRA_WITHHOLDING, INTEREST_CHARGE,
    MANAGEMENT_FEE, COUPON)."""
    rows = set(_seed_rows())
    assert rows == {
        ("Dividends", "in", "DIVIDEND", ""),
        ("Withholding Tax", "out", "TAX", "WITHHOLDING"),
        ("Broker Interest Received", "in", "INTEREST", ""),
        ("Broker Interest Paid", "out", "FEE", "INTEREST_CHARGE"),
        ("Commission Adjustments", "out", "FEE", ""),
        ("Other Fees", "out", "FEE", ""),
        ("Deposits & Withdrawals", "in", "DEPOSIT", ""),
        ("Deposits & Withdrawals", "out", "WITHDRAWAL", ""),
        ("Deposits/Withdrawals", "in", "DEPOSIT", ""),
        ("Deposits/Withdrawals", "out", "WITHDRAWAL", ""),
        ("Payment In Lieu Of Dividends", "in", "DIVIDEND", ""),
        ("Advisor Fees", "out", "FEE", "MANAGEMENT_FEE"),
        ("Bond Interest Received", "in", "INTEREST", "COUPON"),
        ("Bond Interest Paid", "out", "FEE", ""),
        ("871(m) Withholding", "out", "TAX", "NRA_WITHHOLDING"),
        ("Withholding Tax", "in", "CREDIT", "REFUND"),
        ("871(m) Withholding", "in", "CREDIT", "REFUND"),
        ("Other Fees", "in", "CREDIT", "REFUND"),
        ("Commission Adjustments", "in", "CREDIT", "REBATE"),
    }
    assert {r[2] for r in rows} <= WEALTHFOLIO_TYPES


def _unit_tests() -> dict[str, dict[str, Any]]:
    tests: dict[str, dict[str, Any]] = {}
    for path in (REPO_ROOT / "models").rglob("*.yml"):
        for test in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get(
                "unit_tests", []):
            tests[test["name"]] = test
    return tests


def test_a_dbt_unit_test_exercises_every_seed_row_in_each_direction() -> None:
    tests = _unit_tests()
    mapped = tests["cash_mapping_every_seed_row"]
    refused = tests["cash_mapping_refuses_to_guess"]
    for test in (mapped, refused):
        inputs = {g["input"]: g for g in test["given"]}
        # The real seed is the input (no mocked rows), so the test checks the real mapping.
        assert "rows" not in inputs["ref('cash_type_mapping')"]

    def pairs(test: dict[str, Any]) -> set[tuple[str, str]]:
        given = next(g for g in test["given"]
                     if g["input"] == "ref('stg_ibkr__cash_transactions')")
        return {(r["flex_type"], "in" if r["amount"] > 0 else "out") for r in given["rows"]}

    seed_pairs = {(r[0], r[1]) for r in _seed_rows()}
    assert pairs(mapped) == seed_pairs
    opposite = {(t, "out" if d == "in" else "in") for t, d in seed_pairs} - seed_pairs
    assert opposite <= pairs(refused)
    assert {("Borrow Fees", "out"), ("Broker Fees", "out")} <= pairs(refused)

"""Synthetic Wealthfolio search results in bulk, without a server (and without pytest:
a child process measuring its own memory imports this)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from types import SimpleNamespace
from typing import Any


def activity_details(i: int) -> dict[str, Any]:
    """A realistic ActivityDetails object (≈ 1.3 KB of JSON)."""
    return {
        "id": f"{i:08d}-5c1e-4b7a-9f0e-7d2b3c4a5e6f", "accountId": "acc",
        "assetId": "asset-uuid-0000-0000-0000-000000000000", "activityType": "BUY",
        "subtype": None, "status": "POSTED", "date": "2025-03-14T10:00:00+00:00",
        "quantity": str(i % 997 + 1), "unitPrice": "123.4567", "amount": None, "fee": "1.25",
        "fxRate": None, "currency": "USD", "needsReview": False, "comment": "IBKR trade " * 8,
        "createdAt": "2025-03-15T02:00:00.123456+00:00",
        "updatedAt": "2025-03-15T02:00:00.123456+00:00", "accountName": "IBKR ISA",
        "accountCurrency": "GBP", "assetSymbol": "AAPL", "assetName": "Apple Inc.",
        "exchangeMic": "XNAS", "assetPricingMode": "MARKET", "instrumentType": "EQUITY",
        "sourceSystem": "IBKR", "sourceRecordId": str(1000000 + i), "sourceGroupId": None,
        "idempotencyKey": f"ibkr:trade:{1000000 + i}", "importRunId": None,
        "isUserModified": False, "metadata": None,
    }


class FreshActivitySource:
    """Like the client: every search builds new rows (nothing kept between snapshots)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.edits: dict[int, dict[str, Any]] = {}
        self.deleted: set[int] = set()

    def search_all(self, account_id: str,
                   on_page: Callable[[list[dict[str, Any]]], None] | None = None,
                   *, date_from: date | None = None) -> Any:
        rows = [activity_details(i) | self.edits.get(i, {}) for i in range(self.count)
                if i not in self.deleted]
        return pages_of(dated_from(rows, date_from), on_page)


def dated_from(rows: list[dict[str, Any]], day: date | None) -> list[dict[str, Any]]:
    """Wealthfolio's `dateFrom`: the stored RFC 3339 UTC text from that day on."""
    return rows if day is None else [row for row in rows
                                     if str(row["date"]) >= f"{day.isoformat()}T00:00:00"]


def pages_of(rows: list[dict[str, Any]],
             on_page: Callable[[list[dict[str, Any]]], None] | None,
             page_size: int = 1000) -> Any:
    """What WealthfolioClient.search_all returns: with on_page, the rows page by page
    to it and none kept."""
    if on_page is None:
        return SimpleNamespace(rows=rows, total_row_count=len(rows))
    for start in range(0, len(rows), page_size):
        on_page(rows[start:start + page_size])
    return SimpleNamespace(rows=[], total_row_count=len(rows))

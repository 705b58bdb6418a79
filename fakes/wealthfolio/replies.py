"""What the fake answers: replies, the two error kinds, and the server's exact messages.

Message texts are copied from the server (docs/upstream.md#errors)
because the client matches on them ("Duplicate activity detected", "Record not found",
"database is locked").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

API_PREFIX = "/api/v1"

MSG_NOT_FOUND = "Database operation failed: Record not found: Record not found"
MSG_DATABASE_LOCKED = "Database operation failed: Database query failed: database is locked"
MSG_ASSET_REQUIRED = (
    "Activity error: Invalid data: Asset-backed activities need either asset_id or symbol"
)
MSG_QUOTE_CCY = (
    "Activity error: Invalid data: Quote currency is required. Please re-select the symbol."
)
MSG_DUPLICATE = (
    "Activity error: Invalid data: Duplicate activity detected. "
    "A matching activity already exists (id: {id})."
)
MSG_DUPLICATE_BULK = (
    "Activity error: Invalid data: Duplicate activity detected. "
    "A matching activity already exists."
)
MSG_ACTIVITY_NOT_FOUND = "Activity error: Not found: Record not found"
MSG_INVALID = "Activity error: Invalid data: {}"
MSG_BAD_DATE = "Invalid date format. Expected ISO 8601/RFC3339 or YYYY-MM-DD"
MSG_BAD_TYPE = (
    "Database operation failed: Database query failed: CHECK constraint failed: activity_type"
)
MSG_415 = "Expected request with `Content-Type: application/json`"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False  # close the connection without answering


def json_reply(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    body = json.dumps(payload, default=_json_default, separators=(",", ":")).encode()
    return Reply(status, body, "application/json", list(headers or []))


def text_reply(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, text.encode(), "text/plain; charset=utf-8", list(headers or []))


def error_reply(status: int, message: str) -> Reply:
    return json_reply(status, {"code": status, "message": message})


def too_many(wait: int) -> Reply:
    """The login rate limiter's answer (tower_governor)."""
    return text_reply(429, f"Too Many Requests! Wait for {wait}s",
                      [("x-ratelimit-after", str(wait)), ("retry-after", str(wait))])


class HttpError(Exception):
    """Answer with `reply` as it is (axum's extractor rejections: 415, 400, 422 text)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class DomainError(Exception):
    """A core/storage error: the real server maps it to 400 JSON."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Only holdings carry numbers (rust_decimal serde-float): JSON numbers.
        return float(value)
    raise TypeError(type(value).__name__)


def dec_str(value: Decimal | None) -> str | None:
    """Decimal as the server returns it: the text that was stored, scale kept
    (docs/upstream.md#server-quirks)."""
    if value is None:
        return None
    return format(value, "f")

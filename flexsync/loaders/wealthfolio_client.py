"""The Wealthfolio activity API flexsync uses (docs/upstream.md#wealthfolio): search an
account's activities, check idempotency keys, create, update, delete and link
activities, list the accounts (the preflight). Login, the session cache and retries:
wealthfolio_session.

Every call is retried like any other, creates included: the idempotency key makes a
repeated create safe (a create whose answer was lost comes back as "Duplicate activity
detected", i.e. already present).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal
from urllib.parse import quote

from flexsync.core.config import Secret, Settings
from flexsync.core.errors import WealthfolioError
from flexsync.loaders.wealthfolio_http import Answer, required_field
from flexsync.loaders.wealthfolio_session import WealthfolioSession

log = logging.getLogger("flexsync.wealthfolio")

DUPLICATE_MARKER = "Duplicate activity detected"
NOT_FOUND_MARKER = "Record not found"
_DUPLICATE_ID = re.compile(r"already exists \(id: ([^)\s]+)\)")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CreateOutcome:
    """What happened to one POST /activities."""

    status: Literal["posted", "already_present", "failed"]
    activity_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ActivityPage:
    rows: list[dict[str, Any]]
    total_row_count: int


class WealthfolioClient(WealthfolioSession):
    """The activity API of one Wealthfolio server. Use as a context manager."""

    def __init__(self, base_url: str, password: Secret | str | None, *,
                 # Search pages: Wealthfolio's own front end asks for everything in one
                 # page; 2,000 keeps a page's parsed JSON small (~10 MB) and a
                 # 15,000-activity account at 8 requests (500 a page measured ~0.2 s
                 # slower per snapshot at loopback).
                 page_size: int = 2000, duplicate_chunk: int = 200,
                 **session: Any) -> None:
        super().__init__(base_url, password, **session)
        self.page_size = page_size
        self.duplicate_chunk = duplicate_chunk

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> WealthfolioClient:
        kwargs.setdefault("timeout", settings.http_timeout_seconds)
        kwargs.setdefault("session_path", settings.session_path)
        return cls(settings.wf_base_url, settings.wf_password, **kwargs)

    # ---------------------------------------------------------------- public API

    def search_all(self, account_id: str,
                   on_page: Callable[[list[dict[str, Any]]], None] | None = None,
                   *, date_from: date | None = None) -> ActivityPage:
        """Every activity of the account, all pages (0-based) until totalRowCount; with
        `date_from`, those dated that day or later (Wealthfolio's `dateFrom`, inclusive).

        With `on_page`, each page's rows go to it as they arrive and are not kept
        (ActivityPage.rows stays empty): a 15,000-activity account then never holds
        all its parsed JSON at once."""
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        page, total, fetched = 0, 0, 0
        while True:
            body: dict[str, Any] = {"page": page, "pageSize": self.page_size,
                                    "accountIdFilter": [account_id]}
            if date_from is not None:
                body["dateFrom"] = date_from.isoformat()
            answer = self._ok(self._call("POST", "/activities/search", body,
                                         what="POST /activities/search"),
                              "search activities")
            data = required_field(answer.data, "data", list)
            meta = required_field(answer.data, "meta", dict)
            total = required_field(meta, "totalRowCount", int)
            new_rows: list[dict[str, Any]] = []
            for row in data:
                row_id = row.get("id") if isinstance(row, dict) else None
                if not isinstance(row_id, str):
                    raise WealthfolioError("Wealthfolio search returned an activity without id")
                if row_id not in seen:  # a row shifted across pages while paging
                    seen.add(row_id)
                    new_rows.append(row)
            fetched += len(new_rows)
            last_page = len(data) < self.page_size  # also an empty page
            if on_page is None:
                rows.extend(new_rows)
            elif new_rows:
                on_page(new_rows)
            del answer, data, new_rows
            if fetched >= total or last_page:
                break
            page += 1
            if page > total // max(1, self.page_size) + 2:
                break  # the listing keeps growing under us: stop rather than loop
        if fetched != total:
            log.warning("Wealthfolio search: fetched %d activities, server counted %d "
                        "(activities changed while paging)", fetched, total)
        return ActivityPage(rows, total)

    def search_activities(self, account_id: str) -> list[dict[str, Any]]:
        return self.search_all(account_id).rows

    def check_duplicates(self, keys: Iterable[str]) -> dict[str, str]:
        """{idempotency key: existing activity id} for the keys Wealthfolio already has."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        for start in range(0, len(unique), max(1, self.duplicate_chunk)):
            chunk = unique[start:start + self.duplicate_chunk]
            answer = self._ok(self._call("POST", "/activities/import/check-duplicates",
                                         {"idempotencyKeys": chunk},
                                         what="POST /activities/import/check-duplicates"),
                              "check duplicates")
            duplicates = required_field(answer.data, "duplicates", dict)
            for key, activity_id in duplicates.items():
                if isinstance(key, str) and isinstance(activity_id, str):
                    found[key] = activity_id
        return found

    def create_activity(self, payload: Mapping[str, Any]) -> CreateOutcome:
        """POST one activity. Row-level refusals are outcomes; transport/auth failures raise."""
        key = payload.get("idempotencyKey")
        answer = self._call("POST", "/activities", dict(payload), what="POST /activities")
        if answer.status == 200:
            activity_id = answer.data.get("id") if isinstance(answer.data, dict) else None
            if not isinstance(activity_id, str):
                return CreateOutcome("failed", error="200 OK without an activity id")
            return CreateOutcome("posted", activity_id)
        if answer.status == 400 and DUPLICATE_MARKER in answer.message:
            match = _DUPLICATE_ID.search(answer.message)
            activity_id = match.group(1) if match else None
            if activity_id is None and isinstance(key, str):
                activity_id = self.check_duplicates([key]).get(key)
            return CreateOutcome("already_present", activity_id)
        return CreateOutcome("failed", error=answer.describe())

    def delete_activity(self, activity_id: str) -> dict[str, Any] | None:
        """DELETE /activities/{id} → the deleted Activity; None when Wealthfolio has no
        such activity (already deleted, e.g. by a retried call whose answer was lost).
        The idempotency key is free again afterwards. Other refusals raise
        WealthfolioError."""
        if not activity_id:
            raise WealthfolioError("delete_activity needs an activity id")
        answer = self._call("DELETE", f"/activities/{quote(activity_id, safe='')}",
                            what="DELETE /activities/{id}")
        if self._not_found(answer):
            log.info("Wealthfolio activity %s was already gone", activity_id)
            return None
        data = self._ok(answer, f"delete activity {activity_id}").data
        if not isinstance(data, dict) or data.get("id") != activity_id:
            raise WealthfolioError(
                f"Wealthfolio answered the delete of {activity_id} without that activity")
        return data

    @staticmethod
    def _not_found(answer: Answer) -> bool:
        return answer.status in (400, 404) and NOT_FOUND_MARKER in answer.message

    def list_accounts(self, include_archived: bool = False) -> list[dict[str, Any]]:
        params = {"includeArchived": "true"} if include_archived else None
        answer = self._ok(self._call("GET", "/accounts", params=params, what="GET /accounts"),
                          "list accounts")
        if not isinstance(answer.data, list):
            raise WealthfolioError("Wealthfolio accounts answer is not a list")
        return answer.data

"""The fake's API: which route does what, for the calls flexsync (and its demo and
benchmarks) make. Everything below /api/v1 except healthz and auth/status|login needs a
session when a password (or OIDC) is configured.

Only what flexsync uses is served; the strictness of each route is the server's. A
search filter or bulk operation the fake does not implement is refused with 501, so a
product change that starts relying on one fails loudly instead of passing against a
fake that ignored it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import date
from typing import Any
from urllib.parse import unquote

from fakes.wealthfolio.replies import (
    MSG_DUPLICATE_BULK,
    MSG_NOT_FOUND,
    DomainError,
    HttpError,
    Reply,
    error_reply,
    json_reply,
    text_reply,
)
from fakes.wealthfolio.store import rfc3339
from fakes.wealthfolio.transport import IncomingRequest
from fakes.wealthfolio.validation import (
    BodyShape,
    json_body,
    parse_activity_update,
    parse_new_activity,
)

# Search filters the server honours and the fake does not (flexsync sends none of them).
UNIMPLEMENTED_SEARCH_KEYS = ("activityTypeFilter", "instrumentTypeFilter", "assetIdKeyword",
                             "needsReviewFilter", "sort")
_SEARCH_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Route = tuple[str, str, Callable[..., Reply], bool]  # method, path pattern, handler, protected


def not_implemented(what: str) -> HttpError:
    return HttpError(text_reply(501, f"the fake Wealthfolio does not implement {what}"))


class RoutesMixin:
    lock: threading.RLock
    accounts: dict[str, dict[str, Any]]
    activities: dict[str, dict[str, Any]]
    assets: dict[str, dict[str, Any]]
    idempotency: dict[str, str]
    phantom_duplicates: dict[str, str]
    # From the other mixins (annotations only: the methods live there).
    require_session: Callable[[IncomingRequest], list[tuple[str, str]]]
    _auth_status: Callable[[IncomingRequest], Reply]
    _login: Callable[[IncomingRequest], Reply]
    _prepare: Callable[..., tuple[dict[str, Any], dict[str, Any] | None]]
    _prepare_update: Callable[..., tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]]
    _insert: Callable[[dict[str, Any], dict[str, Any] | None], None]
    _remove_activity: Callable[[str], dict[str, Any]]
    _link: Callable[[str, str], list[dict[str, Any]]]
    _activity_json: Callable[[dict[str, Any]], dict[str, Any]]
    _details_json: Callable[[dict[str, Any]], dict[str, Any]]
    _compute_holdings: Callable[[str, set[str]], list[dict[str, Any]]]

    def _routes(self) -> list[Route]:
        return [
            ("GET", r"/healthz", self._healthz, False),
            ("GET", r"/auth/status", self._auth_status, False),
            ("POST", r"/auth/login", self._login, False),
            ("GET", r"/accounts", self._list_accounts, True),
            ("POST", r"/activities", self._create_activity, True),
            ("PUT", r"/activities", self._update_activity, True),
            ("POST", r"/activities/link", self._link_activities, True),
            ("POST", r"/activities/search", self._search, True),
            ("POST", r"/activities/bulk", self._bulk, True),
            ("POST", r"/activities/import/check-duplicates", self._check_duplicates, True),
            ("DELETE", r"/activities/(?P<id>[^/]+)", self._delete_activity, True),
            ("GET", r"/holdings", self._holdings, True),
        ]

    def _route(self, req: IncomingRequest, sub: str) -> Reply:
        """Answer `req` (path `sub` below /api/v1): 404 unknown path, 405 wrong method."""
        path_matched = False
        for method, pattern, handler, protected in self._routes():
            match = re.fullmatch(pattern, sub)
            if not match:
                continue
            path_matched = True
            if method != req.method:
                continue
            try:
                extra = self.require_session(req) if protected else []
                reply = handler(req, **{k: unquote(v) for k, v in match.groupdict().items()})
                reply.headers.extend(extra)
                return reply
            except HttpError as exc:
                return exc.reply
            except DomainError as exc:
                return error_reply(exc.status, exc.message)
        return Reply(405 if path_matched else 404)

    # ---------------------------------------------------------------- routes

    def _healthz(self, req: IncomingRequest) -> Reply:
        return text_reply(200, "ok")

    def _list_accounts(self, req: IncomingRequest) -> Reply:
        include = req.query.get("includeArchived", ["false"])[-1] == "true"
        with self.lock:
            rows = [dict(a) for a in self.accounts.values() if include or not a["isArchived"]]
        return json_reply(200, rows)

    def _create_activity(self, req: IncomingRequest) -> Reply:
        raw, shape = json_body(req)
        parsed = parse_new_activity(shape, raw, "")
        with self.lock:
            record, asset = self._prepare(parsed, check_duplicate=True)
            self._insert(record, asset)
            return json_reply(200, self._activity_json(record))

    def _bulk(self, req: IncomingRequest) -> Reply:
        """Creates only (the benchmarks preload with it): all or nothing; preparation
        errors → 200 with `errors[]` and nothing written; a key collision → 400."""
        raw, shape = json_body(req)
        body = shape.obj(raw, "", "ActivityBulkMutationRequest")
        if body.get("updates") or body.get("deleteIds"):
            raise not_implemented("bulk updates and deletes")
        creates = body.get("creates") or []
        if not isinstance(creates, list):
            raise shape.fail("creates", "invalid type: map, expected a sequence")
        parsed = [parse_new_activity(shape, item, f"creates[{i}]")
                  for i, item in enumerate(creates)]
        with self.lock:
            prepared: list[tuple[dict[str, Any], dict[str, Any] | None, str | None]] = []
            errors = []
            for item in parsed:
                try:
                    record, asset = self._prepare(item, check_duplicate=False)
                    prepared.append((record, asset, item.get("id")))
                except DomainError as exc:
                    errors.append({"id": item.get("id"), "action": "create",
                                   "message": exc.message})
            if errors:
                return json_reply(200, {"created": [], "updated": [], "deleted": [],
                                        "createdMappings": [], "errors": errors})
            keys = [r["idempotencyKey"] for r, _, _ in prepared]
            if len(set(keys)) != len(keys) or any(
                    k in self.idempotency or k in self.phantom_duplicates for k in keys):
                raise DomainError(MSG_DUPLICATE_BULK)
            created, mappings = [], []
            for record, asset, temp_id in prepared:
                self._insert(record, asset)
                created.append(self._activity_json(record))
                mappings.append({"tempId": temp_id, "activityId": record["id"]})
            return json_reply(200, {"created": created, "updated": [], "deleted": [],
                                    "createdMappings": mappings, "errors": []})

    def _update_activity(self, req: IncomingRequest) -> Reply:
        """PUT /activities (docs/upstream.md#activities): ActivityUpdate = id + the NewActivity
        fields.

        Like the server (activities_service.rs update_activity, repository.rs): the
        existing row is looked up first (unknown id → 400 "Record not found"); decimals
        are patched (a missing key keeps the stored value, null or "" clears it); a
        missing status means POSTED; a missing subtype or metadata keeps the stored one;
        notes are replaced; the asset is resolved from `symbol` again (none → cash);
        idempotencyKey, sourceSystem, sourceRecordId, sourceGroupId and createdAt are
        kept; isUserModified becomes true and needsReview false."""
        raw, shape = json_body(req)
        body, item = parse_activity_update(shape, raw, "")
        with self.lock:
            existing, changes, new_asset = self._prepare_update(body, item)
            if new_asset is not None:
                self.assets[new_asset["id"]] = new_asset
            existing.update(changes)
            return json_reply(200, self._activity_json(existing))

    def _link_activities(self, req: IncomingRequest) -> Reply:
        raw, shape = json_body(req)
        body = shape.obj(raw, "", "LinkTransferActivitiesBody")
        a_id = shape.req_str(body, "activityAId")
        b_id = shape.req_str(body, "activityBId")
        with self.lock:
            return json_reply(200, self._link(a_id, b_id))

    def _delete_activity(self, req: IncomingRequest, id: str) -> Reply:
        with self.lock:
            if id not in self.activities:
                raise DomainError(MSG_NOT_FOUND)
            return json_reply(200, self._activity_json(self._remove_activity(id)))

    def _check_duplicates(self, req: IncomingRequest) -> Reply:
        raw, shape = json_body(req)
        body = shape.obj(raw, "", "CheckDuplicatesRequest")
        if "idempotencyKeys" not in body:
            raise shape.fail("", "missing field `idempotencyKeys`")
        keys = body["idempotencyKeys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise shape.fail("idempotencyKeys", "invalid type, expected a sequence of strings")
        with self.lock:
            found = {k: self.idempotency.get(k) or self.phantom_duplicates.get(k) for k in keys}
        return json_reply(200, {"duplicates": {k: v for k, v in found.items() if v}})

    def _search(self, req: IncomingRequest) -> Reply:
        """`page` (0-based) and `pageSize` required; `accountIdFilter` (one id or a
        list); date descending, then creation order; archived accounts never show;
        `pageSize <= 0` returns everything (docs/upstream.md#server-quirks)."""
        raw, shape = json_body(req)
        body = shape.obj(raw, "", "ActivitySearchBody")
        page = shape.req_int(body, "page")
        page_size = shape.req_int(body, "pageSize")
        accounts = shape.str_or_list(body, "accountIdFilter")
        unsupported = [key for key in UNIMPLEMENTED_SEARCH_KEYS if body.get(key) is not None]
        if unsupported:
            raise not_implemented(f"search by {', '.join(unsupported)}")
        # Inclusive days compared as text with the stored RFC 3339 UTC date, as the
        # server's repository does (`activity_date >= 'YYYY-MM-DDT00:00:00'`).
        day_from = _search_day(shape, body, "dateFrom")
        day_to = _search_day(shape, body, "dateTo")
        since = None if day_from is None else f"{day_from}T00:00:00"
        until = None if day_to is None else f"{day_to}T23:59:59"
        with self.lock:
            shown = {i for i, a in self.accounts.items() if not a["isArchived"]}
            rows = [rec for rec in self.activities.values() if rec["accountId"] in shown
                    and (accounts is None or rec["accountId"] in accounts)
                    and (since is None or rfc3339(rec["activityDate"]) >= since)
                    and (until is None or rfc3339(rec["activityDate"]) <= until)]
            rows.sort(key=lambda r: r["seq"])  # secondary order: createdAt ascending
            rows.sort(key=lambda r: r["activityDate"], reverse=True)
            window = rows[page * page_size:(page + 1) * page_size] if page_size > 0 else rows
            data = [self._details_json(r) for r in window]
        return json_reply(200, {"data": data, "meta": {"totalRowCount": len(rows)}})

    def _holdings(self, req: IncomingRequest) -> Reply:
        if "accountId" not in req.query:
            return text_reply(400, "Failed to deserialize query string: missing field `accountId`")
        account_id = req.query["accountId"][-1]
        with self.lock:
            if account_id == "TOTAL":
                account_ids = {a["id"] for a in self.accounts.values() if not a["isArchived"]}
            elif account_id in self.accounts:
                account_ids = {account_id}
            else:
                raise DomainError(MSG_NOT_FOUND)
            return json_reply(200, self._compute_holdings(account_id, account_ids))


def _search_day(shape: BodyShape, body: dict[str, Any], key: str) -> str | None:
    """`dateFrom`/`dateTo`: a string (else serde's 422) that chrono reads as %Y-%m-%d
    (else the handler's 400 `Invalid dateFrom: …`)."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise shape.fail(key, "invalid type, expected a string")
    if not _SEARCH_DAY.match(value):
        raise DomainError(f"Invalid {key}: input contains invalid characters")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise DomainError(f"Invalid {key}: input is out of range") from None
    return value

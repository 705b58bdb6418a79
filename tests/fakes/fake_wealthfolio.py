"""A strict, in-memory fake of the Wealthfolio v3 web server, over real loopback HTTP.

It implements the behaviour checklist of contracts/wealthfolio-api.md §12: the
`/api/v1` prefix, password login (v3.1+ cookie-only shape, or the older
`accessToken` shapes), Bearer-then-cookie auth, the login rate limit, accounts,
activity creation with the server's validation and normalisation (dates → UTC,
`.L` → MIC XLON, GBp → GBP ÷ 100, absolute values, decimals as strings), the
global idempotency index, check-duplicates, search, update (PUT, patch semantics),
delete, link/unlink of transfer legs (§5.4, §15.4) and holdings, whose cash and
quantities follow Wealthfolio's own rules (tests/fakes/wealthfolio_rules.py, §15.3). Body
errors come back the way axum sends them (415/400/422 as text/plain).

Where the server differs from a naive reading (§15.7) the fake follows the server: a
symbol sent with a cash activity links the asset; ETF/STOCK/FUND are stored as
EQUITY; symbol and MIC are upper-cased before matching; unknown quoteMode strings and
invalid metadata JSON are stored; decimals come back as the stored text (scale kept);
`pageSize <= 0` returns everything; archived and HOLDINGS-mode accounts accept posts
(§15.5) and a HOLDINGS account's holdings ignore activities; holdings are valued
from `set_market_quote` with §15.1's rule (a minor-unit currency wins). Its Yahoo
suffix table is written from Wealthfolio's exchanges.json, never from flexsync's seeds.
It can play an OIDC-only 3.4 server (`oidc_only=True`).

Tests drive failures through fault hooks (`fail_nth_create`, `error_storm`,
`lock_database`, `slow_down`, `malformed_json`, `expire_sessions[_on]`,
`rate_limit_login`, `add_phantom_duplicate`) and assert on `requests` (secrets
removed).

Run it as a process for `make demo`:
    python -m tests.fakes.fake_wealthfolio --host 127.0.0.1 --port 8088 \
        --password P --account-id UUID [--account-currency GBP]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes import wealthfolio_rules

API_PREFIX = "/api/v1"
SESSION_COOKIE = "wf_session"

ACTIVITY_TYPES = frozenset({
    "BUY", "SELL", "SPLIT", "DIVIDEND", "INTEREST", "DEPOSIT", "WITHDRAWAL", "TRANSFER_IN",
    "TRANSFER_OUT", "FEE", "TAX", "CREDIT", "ADJUSTMENT", "UNKNOWN",
})
ASSET_REQUIRED_TYPES = frozenset({"BUY", "SELL", "SPLIT", "DIVIDEND", "ADJUSTMENT"})
ASSET_REQUIRED_SUBTYPES = frozenset({"DRIP", "DIVIDEND_IN_KIND", "STAKING_REWARD"})
ALWAYS_CASH_TYPES = frozenset({"DEPOSIT", "WITHDRAWAL", "FEE", "TAX", "CREDIT"})
# Instrument types the server stores as EQUITY (§15.7).
EQUITY_ALIASES = {"ETF": "EQUITY", "STOCK": "EQUITY", "FUND": "EQUITY"}
STATUSES = ("POSTED", "PENDING", "DRAFT", "VOID")
QUOTE_MODES = ("MARKET", "MANUAL")
# Minor currency units the server converts to the major unit (amounts × 0.01).
MINOR_UNITS = {"GBp": "GBP", "GBX": "GBP", "ZAc": "ZAR", "ZAC": "ZAR", "ILA": "ILS",
               "KWF": "KWD"}
# Yahoo suffix → MIC as the server splits it off a symbol. Written by hand from
# Wealthfolio's own table (crates/market-data/src/resolver/exchanges.json, afadil/wealthfolio
# b66a7151; `.AE` resolves to the last entry, XADS), never imported from flexsync's seeds:
# the fake must be able to disagree with the product.
YAHOO_SUFFIX_MIC = {
    "AE": "XADS", "AQ": "XAQE", "AS": "XAMS", "AT": "XATH", "AX": "XASX", "BA": "XBUE",
    "BD": "XBUD", "BE": "XBER", "BK": "XBKK", "BO": "XBOM", "BR": "XBRU", "CA": "XCAI",
    "CN": "XCNQ", "CO": "XCSE", "DE": "XETR", "DU": "XDUS", "F": "XFRA", "HA": "XHAN",
    "HE": "XHEL", "HK": "XHKG", "HM": "XHAM", "IC": "XICE", "IL": "XLON_IL", "IR": "XDUB",
    "IS": "XIST", "JK": "XIDX", "JO": "XJSE", "KL": "XKLS", "KQ": "XKOS", "KS": "XKRX",
    "L": "XLON", "LJ": "XLJU", "LS": "XLIS", "MC": "XMAD", "MI": "XMIL", "MU": "XMUN",
    "MX": "XMEX", "NE": "XNEO", "NS": "XNSE", "NZ": "XNZE", "OL": "XOSL", "PA": "XPAR",
    "PR": "XPRA", "QA": "DSMD", "RG": "XRIS", "RO": "XBSE", "SA": "BVMF", "SAU": "XSAU",
    "SG": "XSTU", "SI": "XSES", "SN": "XSGO", "SS": "XSHG", "ST": "XSTO", "SW": "XSWX",
    "SZ": "XSHE", "T": "XTKS", "TA": "XTAE", "TL": "XTAL", "TO": "XTSE", "TW": "XTAI",
    "TWO": "XTAI_OTC", "V": "XTSX", "VI": "XWBO", "VS": "XLIT", "WA": "XWAR", "XC": "CXE",
    "XD": "DXE", "ZA": "XZAG",
}

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

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|z|[+-]\d{2}:\d{2})$"
)
_NUMERIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


# --------------------------------------------------------------------------- replies


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


class HttpError(Exception):
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
    """Decimal as the server returns it: the text that was stored, scale kept (§15.7)."""
    if value is None:
        return None
    return format(value, "f")


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _naive_now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


# --------------------------------------------------------------------------- serde-like checks


class _DupAwareDict(dict[str, Any]):
    duplicates: tuple[str, ...] = ()


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = _DupAwareDict()
    dups: list[str] = []
    for key, value in pairs:
        if key in out:
            dups.append(key)
        out[key] = value
    out.duplicates = tuple(dups)
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid number {name}")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, Decimal):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"


class BodyShape:
    """Raises axum/serde-style 422 rejections for a parsed JSON body."""

    def __init__(self, text: str) -> None:
        lines = text.split("\n")
        self.position = f"line {len(lines)} column {len(lines[-1])}"

    def fail(self, path: str, message: str) -> HttpError:
        where = f"{path}: " if path else ""
        return HttpError(text_reply(
            422,
            "Failed to deserialize the JSON body into the target type: "
            f"{where}{message} at {self.position}",
        ))

    def obj(self, value: Any, path: str, type_name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"invalid type: {_describe(value)}, expected struct {type_name}")
        dups = getattr(value, "duplicates", ())
        if dups:
            raise self.fail(path, f"duplicate field `{dups[0]}`")
        return value

    def _child(self, path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def req_str(self, obj: dict[str, Any], key: str, path: str = "") -> str:
        if key not in obj:
            raise self.fail(path, f"missing field `{key}`")
        value = obj[key]
        if not isinstance(value, str):
            raise self.fail(self._child(path, key),
                            f"invalid type: {_describe(value)}, expected a string")
        return value

    def opt_str(self, obj: dict[str, Any], key: str, path: str = "") -> str | None:
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(self._child(path, key),
                            f"invalid type: {_describe(value)}, expected a string")
        return value

    def req_bool(self, obj: dict[str, Any], key: str, path: str = "") -> bool:
        if key not in obj:
            raise self.fail(path, f"missing field `{key}`")
        value = self.opt_bool(obj, key, path)
        if value is None:
            raise self.fail(self._child(path, key), "invalid type: null, expected a boolean")
        return value

    def opt_bool(self, obj: dict[str, Any], key: str, path: str = "") -> bool | None:
        value = obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise self.fail(self._child(path, key),
                        f"invalid type: {_describe(value)}, expected a boolean")

    def req_int(self, obj: dict[str, Any], key: str, path: str = "") -> int:
        if key not in obj:
            raise self.fail(path, f"missing field `{key}`")
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(self._child(path, key),
                            f"invalid type: {_describe(value)}, expected i64")
        return value

    def opt_enum(self, obj: dict[str, Any], key: str, variants: tuple[str, ...],
                 path: str = "") -> str | None:
        value = self.opt_str(obj, key, path)
        if value is not None and value not in variants:
            expected = ", ".join(f"`{v}`" for v in variants)
            raise self.fail(self._child(path, key),
                            f"unknown variant `{value}`, expected one of {expected}")
        return value

    def opt_decimal(self, obj: dict[str, Any], key: str, path: str = "") -> Decimal | None:
        """Numbers arrive as JSON numbers or numeric strings; "" and null mean none."""
        value = obj.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise self.fail(self._child(path, key),
                            f"invalid type: {_describe(value)}, expected a Decimal")
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, Decimal):
            return value
        if isinstance(value, str) and _NUMERIC.match(value):
            try:
                return Decimal(value)
            except InvalidOperation:
                pass
        raise self.fail(self._child(path, key),
                        f"invalid value: {_describe(value)}, expected a Decimal")

    def str_or_list(self, obj: dict[str, Any], key: str, path: str = "") -> list[str] | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise self.fail(self._child(path, key),
                        "data did not match any variant of untagged enum StringOrVec")


# --------------------------------------------------------------------------- requests & faults


@dataclass
class IncomingRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    peer: str


@dataclass
class RecordedRequest:
    """What the fake saw, minus secrets: no Authorization/Cookie values, no password."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any
    auth: str  # "bearer" | "cookie" | "none" | "invalid"
    status: int = 0


@dataclass
class Fault:
    """Applies `action` to matching requests after letting `skip` of them through."""

    action: str  # status | store_then_status | drop | store_then_drop | slow | malformed
    #              | expire_sessions | rate_limit
    method: str | None = None
    path: str | None = None  # path below /api/v1, e.g. "/activities"
    skip: int = 0
    times: int = 1
    status: int = 500
    message: str = "Internal Server Error"
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or self.path == path)


# --------------------------------------------------------------------------- the fake


class FakeWealthfolio:
    """The fake server. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        password: str | None = "wf-test-password",  # noqa: S107 - a test fake
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        login_shape: str = "v3.1",  # "v3.1" cookie only | "v3.0.4" token+cookie | "v3.0" token
        token_ttl_seconds: int = 3600,
        login_burst: int = 5,
        login_replenish_seconds: float = 12.0,  # tower_governor: 5 per 60 s
        oidc_only: bool = False,  # 3.4: SSO only, no password login, tokens still required
    ) -> None:
        if login_shape not in ("v3.1", "v3.0.4", "v3.0"):
            raise ValueError(f"unknown login shape {login_shape!r}")
        self.password = password
        self.oidc_only = oidc_only
        self.host = host
        self.port = port
        self.login_shape = login_shape
        self.token_ttl_seconds = token_ttl_seconds
        self.login_burst = login_burst
        self.login_replenish_seconds = login_replenish_seconds
        self.lock = threading.RLock()
        self.accounts: dict[str, dict[str, Any]] = {}
        self.activities: dict[str, dict[str, Any]] = {}
        self.assets: dict[str, dict[str, Any]] = {}
        # Market data: (SYMBOL, MIC) -> (price, currency as the provider quotes it).
        self.market_quotes: dict[tuple[str, str], tuple[Decimal, str]] = {}
        self.idempotency: dict[str, str] = {}
        self.phantom_duplicates: dict[str, str] = {}
        self.sessions: dict[str, float] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.logins = 0
        self._clock_offset = 0.0
        self._seq = 0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeWealthfolio:
        fake = self

        class Handler(_Handler):
            owner = fake

        server = _QuietServer((self.host, self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeWealthfolio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---------------------------------------------------------------- test helpers

    def now(self) -> float:
        return time.monotonic() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock (session expiry, login rate limit) forward."""
        with self.lock:
            self._clock_offset += seconds

    def create_account(
        self, name: str = "IBKR", currency: str = "GBP", *, account_id: str | None = None,
        tracking_mode: str = "TRANSACTIONS", archived: bool = False,
    ) -> dict[str, Any]:
        with self.lock:
            return self._new_account({
                "name": name, "accountType": "SECURITIES", "group": "Investments",
                "currency": currency, "isDefault": False, "isActive": True,
                "isArchived": archived, "trackingMode": tracking_mode,
            }, account_id)

    def expire_sessions(self) -> None:
        """Every issued token stops working (as when the TTL passes)."""
        with self.lock:
            self.sessions.clear()

    def expire_sessions_on(self, method: str, path: str, skip: int = 0) -> None:
        """Mid-run expiry: sessions expire when the (skip+1)-th matching request arrives."""
        self.add_fault(Fault("expire_sessions", method=method, path=path, skip=skip))

    def add_fault(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def fail_nth_create(self, n: int, *, status: int = 500, store: bool = False,
                        drop: bool = False, times: int = 1) -> Fault:
        """The n-th POST /activities (1-based) fails; `store` keeps the row (lost ack)."""
        action = ("store_then_drop" if store else "drop") if drop else (
            "store_then_status" if store else "status")
        message = "Internal Server Error" if status >= 500 else "Bad Request"
        return self.add_fault(Fault(action, "POST", "/activities", skip=n - 1, times=times,
                                    status=status, message=message))

    def error_storm(self, count: int, *, status: int = 500, method: str | None = None,
                    path: str | None = None, skip: int = 0) -> Fault:
        return self.add_fault(Fault("status", method, path, skip=skip, times=count,
                                    status=status, message="Internal Server Error"))

    def lock_database(self, count: int, *, method: str | None = None,
                      path: str | None = None, skip: int = 0) -> Fault:
        """The 400 Wealthfolio answers while SQLite is locked (every core error is a 400,
        §15.6); the request is not carried out."""
        return self.add_fault(Fault("status", method, path, skip=skip, times=count, status=400,
                                    message=MSG_DATABASE_LOCKED))

    def slow_down(self, delay: float, *, times: int = 1, method: str | None = None,
                  path: str | None = None, skip: int = 0) -> Fault:
        return self.add_fault(Fault("slow", method, path, skip=skip, times=times, delay=delay))

    def malformed_json(self, *, times: int = 1, method: str | None = None,
                       path: str | None = None, skip: int = 0) -> Fault:
        return self.add_fault(Fault("malformed", method, path, skip=skip, times=times))

    def rate_limit_login(self, wait_seconds: int, *, times: int = 1) -> Fault:
        return self.add_fault(Fault("rate_limit", "POST", "/auth/login", times=times,
                                    status=429, delay=wait_seconds))

    def set_market_quote(self, symbol: str, mic: str | None, price: Decimal | str,
                         currency: str) -> None:
        """The provider's latest quote for an asset, e.g. VUAG/XLON 92.15 GBP, VOD/XLON
        71.2 GBp. Holdings then value the asset with §15.1's rule (minor unit wins)."""
        with self.lock:
            self.market_quotes[(symbol.upper(), (mic or "").upper())] = (Decimal(price), currency)

    def add_phantom_duplicate(self, key: str, activity_id: str | None = None) -> str:
        """Report `key` as existing (check-duplicates and create) though it was never posted."""
        activity_id = activity_id or str(uuid.uuid4())
        with self.lock:
            self.phantom_duplicates[key] = activity_id
        return activity_id

    def activities_for(self, account_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [self._activity_json(a) for a in self.activities.values()
                    if a["accountId"] == account_id]

    def activity_by_key(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            activity_id = self.idempotency.get(key)
            return self._activity_json(self.activities[activity_id]) if activity_id else None

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        full = API_PREFIX + path
        return [r for r in self.requests if r.method == method and r.path == full]

    # ---------------------------------------------------------------- dispatch

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled (e.g. a slowed one finishing late)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def handle(self, req: IncomingRequest) -> Reply:
        with self._idle:
            self._in_flight += 1
        try:
            return self._handle_recorded(req)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _handle_recorded(self, req: IncomingRequest) -> Reply:
        auth_kind = self._auth_kind(req)
        record = RecordedRequest(
            method=req.method, path=req.path, query=req.query,
            headers={k: v for k, v in req.headers.items()
                     if k not in ("authorization", "cookie")},
            json=_redacted_json(req), auth=auth_kind,
        )
        with self.lock:
            self.requests.append(record)
        reply = self._handle(req)
        record.status = reply.status if not reply.drop else 0
        return reply

    def _handle(self, req: IncomingRequest) -> Reply:
        if not req.path.startswith(API_PREFIX + "/"):
            return Reply(404)
        sub = req.path[len(API_PREFIX):]
        fault = self._take_fault(req.method, sub)
        if fault is not None:
            if fault.action == "status":
                return error_reply(fault.status, fault.message)
            if fault.action == "drop":
                return Reply(0, drop=True)
            if fault.action == "rate_limit":
                return _too_many(int(fault.delay))
            if fault.action == "slow":
                self._stop.wait(fault.delay)
            if fault.action == "expire_sessions":
                self.expire_sessions()
        reply = self._route(req, sub)
        if fault is not None:
            if fault.action == "store_then_status":
                return error_reply(fault.status, fault.message)
            if fault.action == "store_then_drop":
                return Reply(0, drop=True)
            if fault.action == "malformed" and reply.status == 200:
                return Reply(200, b'{"data":[{"id":"', "application/json")
        return reply

    def _take_fault(self, method: str, sub: str) -> Fault | None:
        with self.lock:
            chosen = None
            for fault in self.faults:
                if fault.times <= 0 or not fault.matches(method, sub):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if chosen is None:
                    fault.times -= 1
                    chosen = fault
            return chosen

    def _route(self, req: IncomingRequest, sub: str) -> Reply:
        routes: list[tuple[str, str, Callable[..., Reply], bool]] = [
            ("GET", r"/healthz", self._healthz, False),
            ("GET", r"/readyz", self._healthz, False),
            ("GET", r"/auth/status", self._auth_status, False),
            ("POST", r"/auth/login", self._login, False),
            ("POST", r"/auth/logout", self._logout, False),
            ("GET", r"/auth/me", self._me, False),
            ("GET", r"/accounts", self._list_accounts, True),
            ("POST", r"/accounts", self._create_account, True),
            ("PUT", r"/accounts/(?P<id>[^/]+)", self._update_account, True),
            ("DELETE", r"/accounts/(?P<id>[^/]+)", self._delete_account, True),
            ("POST", r"/activities", self._create_activity, True),
            ("PUT", r"/activities", self._update_activity, True),
            ("POST", r"/activities/link", self._link_activities, True),
            ("POST", r"/activities/unlink", self._unlink_activities, True),
            ("POST", r"/activities/search", self._search, True),
            ("POST", r"/activities/bulk", self._bulk, True),
            ("POST", r"/activities/import/check-duplicates", self._check_duplicates, True),
            ("DELETE", r"/activities/(?P<id>[^/]+)", self._delete_activity, True),
            ("GET", r"/holdings", self._holdings, True),
        ]
        path_matched = False
        for method, pattern, handler, protected in routes:
            match = re.fullmatch(pattern, sub)
            if not match:
                continue
            path_matched = True
            if method != req.method:
                continue
            try:
                extra: list[tuple[str, str]] = []
                if protected and (self.password is not None or self.oidc_only):
                    extra = self._require_session(req)
                reply = handler(req, **{k: unquote(v) for k, v in match.groupdict().items()})
                reply.headers.extend(extra)
                return reply
            except HttpError as exc:
                return exc.reply
            except DomainError as exc:
                return error_reply(exc.status, exc.message)
        return Reply(405 if path_matched else 404)

    # ---------------------------------------------------------------- auth

    def _bearer(self, req: IncomingRequest) -> tuple[bool, str | None]:
        """(header present, token) — a present but malformed header yields no token."""
        header = req.headers.get("authorization")
        if header is None:
            return False, None
        match = re.fullmatch(r"Bearer ([^\s]+)", header.strip())
        return True, match.group(1) if match else None

    def _cookie_token(self, req: IncomingRequest) -> str | None:
        for part in req.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and value:
                return value
        return None

    def _auth_kind(self, req: IncomingRequest) -> str:
        present, token = self._bearer(req)
        if present:
            return "bearer" if token else "invalid"
        return "cookie" if self._cookie_token(req) else "none"

    def _token_for(self, req: IncomingRequest) -> str | None:
        present, token = self._bearer(req)
        if present:
            return token  # the cookie is never consulted once a header is present
        return self._cookie_token(req)

    def _valid(self, token: str | None) -> bool:
        with self.lock:
            return token is not None and self.sessions.get(token, -math.inf) > self.now()

    def _require_session(self, req: IncomingRequest) -> list[tuple[str, str]]:
        token = self._token_for(req)
        if not self._valid(token):
            raise HttpError(error_reply(401, "Unauthorized"))
        assert token is not None
        # Sliding session: past half its life, a protected answer carries a fresh cookie.
        with self.lock:
            remaining = self.sessions[token] - self.now()
        if remaining < self.token_ttl_seconds / 2 and self.login_shape != "v3.0":
            return [("Set-Cookie", self._session_cookie(self._issue_token()))]
        return []

    def _issue_token(self) -> str:
        now = int(time.time())
        header = _b64({"alg": "HS256", "typ": "JWT"})
        claims = _b64({"sub": "wealthfolio-web", "iat": now, "exp": now + self.token_ttl_seconds})
        token = f"{header}.{claims}.{secrets.token_urlsafe(32)}"
        with self.lock:
            self.sessions[token] = self.now() + self.token_ttl_seconds
        return token

    def _session_cookie(self, token: str) -> str:
        same_site = "Strict" if self.login_shape == "v3.0.4" else "Lax"
        return (f"{SESSION_COOKIE}={token}; HttpOnly; SameSite={same_site}; Path=/api; "
                f"Max-Age={self.token_ttl_seconds}")

    def _rate_limited(self, peer: str) -> int | None:
        """GCRA-like bucket per peer: burst 5, one token back every 12 s."""
        with self.lock:
            now = self.now()
            tokens, last = self._buckets.get(peer, (float(self.login_burst), now))
            tokens = min(float(self.login_burst),
                         tokens + (now - last) / self.login_replenish_seconds)
            if tokens >= 1.0:
                self._buckets[peer] = (tokens - 1.0, now)
                return None
            self._buckets[peer] = (tokens, now)
            return int((1.0 - tokens) * self.login_replenish_seconds)

    def _healthz(self, req: IncomingRequest) -> Reply:
        return text_reply(200, "ok")

    def _auth_status(self, req: IncomingRequest) -> Reply:
        status: dict[str, bool] = {"requiresPassword": self.password is not None}
        if self.oidc_only:  # 3.4 adds the field; the older servers this fake plays lack it
            status["oidcEnabled"] = True
        return json_reply(200, status)

    def _login(self, req: IncomingRequest) -> Reply:
        if self.password is None:
            return error_reply(404, "Authentication is not configured for this server")
        wait = self._rate_limited(req.peer)
        if wait is not None:
            return _too_many(wait)
        body, shape = _json_body(req)
        password = shape.req_str(shape.obj(body, "", "LoginRequest"), "password")
        if not secrets.compare_digest(password.encode(), self.password.encode()):
            return error_reply(401, "Invalid password")
        token = self._issue_token()
        with self.lock:
            self.logins += 1
        if self.login_shape == "v3.1":
            return json_reply(200, {"authenticated": True, "expiresIn": self.token_ttl_seconds},
                              [("Set-Cookie", self._session_cookie(token))])
        payload = {"accessToken": token, "tokenType": "Bearer",
                   "expiresIn": self.token_ttl_seconds}
        headers = [] if self.login_shape == "v3.0" else [
            ("Set-Cookie", self._session_cookie(token))]
        return json_reply(200, payload, headers)

    def _logout(self, req: IncomingRequest) -> Reply:
        token = self._token_for(req)
        with self.lock:
            self.sessions.pop(token or "", None)
        return Reply(204, headers=[("Set-Cookie",
                                    f"{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/api; "
                                    "Max-Age=0")])

    def _me(self, req: IncomingRequest) -> Reply:
        if (self.password is not None or self.oidc_only) and not self._valid(
                self._token_for(req)):
            return error_reply(401, "Unauthorized")
        return json_reply(200, {"authenticated": True})

    # ---------------------------------------------------------------- accounts

    def _new_account(self, body: dict[str, Any], account_id: str | None = None) -> dict[str, Any]:
        if not body["name"].strip():
            raise DomainError("Invalid input: Account name cannot be empty")
        if not body["currency"].strip():
            raise DomainError("Invalid input: Currency cannot be empty")
        now = _naive_now()
        account = {
            "id": account_id or str(uuid.uuid4()), "name": body["name"],
            "accountType": body["accountType"], "group": body.get("group"),
            "currency": body["currency"], "isDefault": body["isDefault"],
            "isActive": body["isActive"], "isArchived": bool(body.get("isArchived") or False),
            "trackingMode": body.get("trackingMode") or "NOT_SET", "createdAt": now,
            "updatedAt": now, "platformId": body.get("platformId"),
            "accountNumber": body.get("accountNumber"), "meta": body.get("meta"),
            "provider": body.get("provider"), "providerAccountId": body.get("providerAccountId"),
        }
        self.accounts[account["id"]] = account
        return dict(account)

    def _account_body(self, req: IncomingRequest, type_name: str) -> dict[str, Any]:
        raw, shape = _json_body(req)
        body = shape.obj(raw, "", type_name)
        for key in ("name", "accountType", "currency"):
            if key != "currency" or type_name == "NewAccount":
                shape.req_str(body, key)
        shape.req_bool(body, "isDefault")
        shape.req_bool(body, "isActive")
        shape.opt_bool(body, "isArchived")
        shape.opt_enum(body, "trackingMode", ("TRANSACTIONS", "HOLDINGS", "NOT_SET"))
        for key in ("group", "platformId", "accountNumber", "meta", "provider",
                    "providerAccountId"):
            shape.opt_str(body, key)
        return body

    def _list_accounts(self, req: IncomingRequest) -> Reply:
        include = req.query.get("includeArchived", ["false"])[-1] == "true"
        with self.lock:
            rows = [dict(a) for a in self.accounts.values() if include or not a["isArchived"]]
        return json_reply(200, rows)

    def _create_account(self, req: IncomingRequest) -> Reply:
        body = self._account_body(req, "NewAccount")
        with self.lock:
            return json_reply(200, self._new_account(body))  # any sent id is ignored

    def _update_account(self, req: IncomingRequest, id: str) -> Reply:
        body = self._account_body(req, "AccountUpdate")
        with self.lock:
            account = self.accounts.get(id)
            if account is None:
                raise DomainError(MSG_NOT_FOUND)
            for key in ("name", "accountType", "group", "isDefault", "isActive", "platformId",
                        "accountNumber", "meta", "provider", "providerAccountId"):
                if key in body:
                    account[key] = body[key]
            if body.get("isArchived") is not None:
                account["isArchived"] = body["isArchived"]
            if body.get("trackingMode"):
                account["trackingMode"] = body["trackingMode"]
            account["updatedAt"] = _naive_now()
            return json_reply(200, dict(account))

    def _delete_account(self, req: IncomingRequest, id: str) -> Reply:
        with self.lock:
            if self.accounts.pop(id, None) is None:
                raise DomainError(MSG_NOT_FOUND)
            for activity_id in [a["id"] for a in self.activities.values()
                                if a["accountId"] == id]:
                self._remove_activity(activity_id)  # ON DELETE CASCADE
        return Reply(204)

    # ---------------------------------------------------------------- activities

    def _create_activity(self, req: IncomingRequest) -> Reply:
        raw, shape = _json_body(req)
        parsed = _parse_new_activity(shape, raw, "")
        with self.lock:
            record, asset = self._prepare(parsed, check_duplicate=True)
            self._insert(record, asset)
            return json_reply(200, self._activity_json(record))

    def _bulk(self, req: IncomingRequest) -> Reply:
        raw, shape = _json_body(req)
        body = shape.obj(raw, "", "ActivityBulkMutationRequest")
        creates = body.get("creates") or []
        updates = body.get("updates") or []
        delete_ids = body.get("deleteIds") or []
        for name, value in (("creates", creates), ("updates", updates),
                            ("deleteIds", delete_ids)):
            if not isinstance(value, list):
                raise shape.fail(name, "invalid type: map, expected a sequence")
        parsed = [_parse_new_activity(shape, item, f"creates[{i}]")
                  for i, item in enumerate(creates)]
        parsed_updates = [_parse_activity_update(shape, item, f"updates[{i}]")
                          for i, item in enumerate(updates)]
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
            prepared_updates = []
            for update_body, update_item in parsed_updates:
                try:
                    prepared_updates.append(self._prepare_update(update_body, update_item))
                except DomainError as exc:
                    errors.append({"id": update_body["id"], "action": "update",
                                   "message": exc.message})
            for activity_id in delete_ids:
                if activity_id not in self.activities:
                    errors.append({"id": activity_id, "action": "delete",
                                   "message": MSG_NOT_FOUND})
            if errors:  # all or nothing
                return json_reply(200, {"created": [], "updated": [], "deleted": [],
                                        "createdMappings": [], "errors": errors})
            keys = [r["idempotencyKey"] for r, _, _ in prepared]
            if len(set(keys)) != len(keys) or any(
                    k in self.idempotency or k in self.phantom_duplicates for k in keys):
                raise DomainError(MSG_DUPLICATE_BULK)
            updated = []
            for existing, changes, new_asset in prepared_updates:
                if new_asset is not None:
                    self.assets[new_asset["id"]] = new_asset
                existing.update(changes)
                updated.append(self._activity_json(existing))
            deleted = [self._activity_json(self._remove_activity(i)) for i in delete_ids]
            created, mappings = [], []
            for record, asset, temp_id in prepared:
                self._insert(record, asset)
                created.append(self._activity_json(record))
                mappings.append({"tempId": temp_id, "activityId": record["id"]})
            return json_reply(200, {"created": created, "updated": updated, "deleted": deleted,
                                    "createdMappings": mappings, "errors": []})

    def _prepare(self, item: dict[str, Any], *, check_duplicate: bool
                 ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        account = self.accounts.get(item["accountId"])
        if account is None:
            raise DomainError(MSG_NOT_FOUND)
        moment = _parse_activity_date(item["activityDate"])
        activity_type = item["activityType"]
        asset, new_asset = self._resolve_asset(item, activity_type)
        currency = item["currency"] or (asset["quoteCcy"] if asset else None) or account[
            "currency"]
        factor = Decimal(1)
        if currency in MINOR_UNITS:
            currency, factor = MINOR_UNITS[currency], Decimal("0.01")
        if activity_type not in ACTIVITY_TYPES:
            raise DomainError(MSG_BAD_TYPE)

        def money(name: str, scaled: bool = True) -> Decimal | None:
            value = item.get(name)
            if value is None:
                return None
            value = abs(value)
            return value * factor if scaled else value

        quantity, unit_price = money("quantity", False), money("unitPrice")
        amount, fee, fx_rate = money("amount"), money("fee"), money("fxRate", False)
        if activity_type in ("TRANSFER_IN", "TRANSFER_OUT") and asset and unit_price is not None:
            amount = None  # value = qty × price
        key = (item.get("idempotencyKey") or "").strip() or _content_hash(
            item["accountId"], activity_type, moment, asset["id"] if asset else "", quantity,
            unit_price, amount, currency, item.get("sourceRecordId"), item.get("notes"))
        if check_duplicate:
            existing = self.idempotency.get(key) or self.phantom_duplicates.get(key)
            if existing:
                raise DomainError(MSG_DUPLICATE.format(id=existing))
        metadata = None
        if item.get("metadata"):
            try:
                metadata = json.loads(item["metadata"])
            except ValueError:
                metadata = item["metadata"]  # stored as sent, not refused (§15.7)
        self._seq += 1
        now = datetime.now(UTC)
        record = {
            "id": str(uuid.uuid4()), "accountId": item["accountId"],
            "assetId": asset["id"] if asset else None, "activityType": activity_type,
            "subtype": item.get("subtype"), "status": item.get("status") or "POSTED",
            "activityDate": moment, "quantity": quantity, "unitPrice": unit_price,
            "amount": amount, "fee": fee, "fxRate": fx_rate, "currency": currency,
            "notes": item.get("notes"), "metadata": metadata,
            "needsReview": bool(item.get("needsReview") or False),
            "sourceSystem": item.get("sourceSystem") or "MANUAL",
            "sourceRecordId": item.get("sourceRecordId"),
            "sourceGroupId": item.get("sourceGroupId"), "idempotencyKey": key,
            "createdAt": now, "updatedAt": now, "seq": self._seq, "isUserModified": False,
        }
        return record, new_asset

    def _resolve_asset(self, item: dict[str, Any], activity_type: str
                       ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(asset, asset-to-create) for the activity's symbol object."""
        sym = item.get("symbol")
        ticker = ((sym or {}).get("symbol") or "").strip()
        asset_id = ((sym or {}).get("id") or "").strip()
        needs_asset = (activity_type in ASSET_REQUIRED_TYPES
                       or item.get("subtype") in ASSET_REQUIRED_SUBTYPES)
        if not ticker and not asset_id:
            if needs_asset:
                raise DomainError(MSG_ASSET_REQUIRED)
            return None, None
        # A symbol sent with DEPOSIT/WITHDRAWAL/FEE/TAX/CREDIT links the asset on the
        # create path (dropping it is the CSV import classifier's rule, §15.7).
        assert sym is not None
        if not ticker:
            asset = self.assets.get(asset_id)
            if asset is None:
                raise DomainError(MSG_NOT_FOUND)
            return asset, None
        # Symbol and MIC are upper-cased before matching (§15.7).
        ticker = ticker.upper()
        mic = (sym.get("exchangeMic") or "").strip().upper() or None
        if "." in ticker:
            head, suffix = ticker.rsplit(".", 1)
            suffix_mic = YAHOO_SUFFIX_MIC.get(suffix.upper())
            if suffix_mic and head:
                ticker, mic = head, mic or suffix_mic  # an explicit MIC beats the suffix
        instrument_type = (sym.get("instrumentType") or "").strip().upper() or (
            "CRYPTO" if re.fullmatch(r"[A-Z0-9]+-[A-Z]{3}", ticker) and not mic else "EQUITY")
        instrument_type = EQUITY_ALIASES.get(instrument_type, instrument_type)
        for asset in self.assets.values():
            if (asset["symbol"], asset["exchangeMic"], asset["instrumentType"]) == (
                    ticker, mic, instrument_type):
                return asset, None
        quote_ccy = (sym.get("quoteCcy") or "").strip() or None
        quote_mode = sym.get("quoteMode") or "MARKET"
        if quote_ccy is None and instrument_type != "CRYPTO" and quote_mode != "MANUAL":
            raise DomainError(MSG_QUOTE_CCY)
        asset = {"id": str(uuid.uuid4()), "symbol": ticker, "exchangeMic": mic,
                 "instrumentType": instrument_type, "quoteCcy": quote_ccy,
                 "name": sym.get("name") or ticker, "quoteMode": quote_mode}
        return asset, asset

    def _insert(self, record: dict[str, Any], asset: dict[str, Any] | None) -> None:
        if asset is not None:
            self.assets[asset["id"]] = asset
        self.activities[record["id"]] = record
        self.idempotency[record["idempotencyKey"]] = record["id"]

    def _remove_activity(self, activity_id: str) -> dict[str, Any]:
        record = self.activities.pop(activity_id)
        if self.idempotency.get(record["idempotencyKey"]) == activity_id:
            del self.idempotency[record["idempotencyKey"]]  # no tombstone: the key is free
        return record

    def _update_activity(self, req: IncomingRequest) -> Reply:
        """PUT /activities (§5.4, §15.4): ActivityUpdate = id + the NewActivity fields.

        Like the server (activities_service.rs update_activity, repository.rs): the
        existing row is looked up first (unknown id → 400 "Record not found"); decimals
        are patched (a missing key keeps the stored value, null or "" clears it); a
        missing status means POSTED; a missing subtype or metadata keeps the stored one;
        notes are replaced; the asset is resolved from `symbol` again (none → cash);
        idempotencyKey, sourceSystem, sourceRecordId, sourceGroupId and createdAt are
        kept; isUserModified becomes true and needsReview false."""
        raw, shape = _json_body(req)
        body, item = _parse_activity_update(shape, raw, "")
        with self.lock:
            existing, changes, new_asset = self._prepare_update(body, item)
            if new_asset is not None:
                self.assets[new_asset["id"]] = new_asset
            existing.update(changes)
            return json_reply(200, self._activity_json(existing))

    def _prepare_update(self, body: dict[str, Any], item: dict[str, Any]
                        ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """(stored row, its new fields, asset to create) for an ActivityUpdate, or a
        DomainError; nothing is written."""
        activity_id = body["id"]
        existing = self.activities.get(activity_id)
        if existing is None:
            raise DomainError(MSG_NOT_FOUND)
        for name, text in (("id", activity_id), ("accountId", item["accountId"]),
                           ("activityType", item["activityType"])):
            if not text.strip():
                raise DomainError(MSG_INVALID.format(f"{name} cannot be empty"))
        account = self.accounts.get(item["accountId"])
        if account is None:
            raise DomainError(MSG_NOT_FOUND)
        activity_type = item["activityType"]
        if activity_type not in ACTIVITY_TYPES:
            raise DomainError(MSG_BAD_TYPE)
        moment = _parse_activity_date(item["activityDate"])
        asset, new_asset = self._resolve_asset(item, activity_type)
        currency = item["currency"] or (asset["quoteCcy"] if asset else None) or account[
            "currency"]
        factor = Decimal(1)
        if currency in MINOR_UNITS:
            currency, factor = MINOR_UNITS[currency], Decimal("0.01")
        patched: dict[str, Decimal | None] = {}
        for name, scaled in (("quantity", False), ("unitPrice", True), ("amount", True),
                             ("fee", True), ("fxRate", False)):
            if name not in body:
                patched[name] = existing[name]  # missing: keep
                continue
            value = item[name]  # null or "" → None: clear
            patched[name] = None if value is None else abs(value) * (factor if scaled else 1)
        metadata = existing["metadata"]
        if item.get("metadata"):
            try:
                metadata = json.loads(item["metadata"])
            except ValueError:
                raise DomainError(MSG_INVALID.format("metadata is not valid JSON")) from None
        changes = {
            "accountId": item["accountId"], "assetId": asset["id"] if asset else None,
            "activityType": activity_type,
            "subtype": item.get("subtype") or existing["subtype"],
            "status": item.get("status") or "POSTED", "activityDate": moment,
            "currency": currency, "notes": item.get("notes"), "metadata": metadata,
            "isUserModified": True, "needsReview": False, "updatedAt": datetime.now(UTC),
            **patched,
        }
        return existing, changes, new_asset

    def _transfer_pair(self, req: IncomingRequest, verb: str
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(TRANSFER_IN, TRANSFER_OUT) named by {activityAId, activityBId}, in that order."""
        raw, shape = _json_body(req)
        body = shape.obj(raw, "", "LinkTransferActivitiesBody")
        a_id = shape.req_str(body, "activityAId")
        b_id = shape.req_str(body, "activityBId")
        if a_id == b_id:
            preposition = "to" if verb == "link" else "from"
            raise DomainError(MSG_INVALID.format(
                f"Cannot {verb} an activity {preposition} itself"))
        a, b = self.activities.get(a_id), self.activities.get(b_id)
        if a is None or b is None:
            raise DomainError(MSG_ACTIVITY_NOT_FOUND)
        kinds = (a["activityType"], b["activityType"])
        if kinds == ("TRANSFER_IN", "TRANSFER_OUT"):
            return a, b
        if kinds == ("TRANSFER_OUT", "TRANSFER_IN"):
            return b, a
        raise DomainError(MSG_INVALID.format(
            f"{verb.capitalize()}ing requires one TRANSFER_IN and one TRANSFER_OUT activity"))

    def _set_transfer_group(self, legs: tuple[dict[str, Any], dict[str, Any]],
                            group_id: str | None) -> Reply:
        now = datetime.now(UTC)
        for leg in legs:
            metadata: dict[str, Any] = (
                leg["metadata"] if isinstance(leg["metadata"], dict) else {})
            flow: dict[str, Any] = (
                metadata["flow"] if isinstance(metadata.get("flow"), dict) else {})
            leg.update({"sourceGroupId": group_id, "isUserModified": True, "updatedAt": now,
                        "metadata": {**metadata, "flow": {**flow,
                                                          "is_external": group_id is None}}})
        return json_reply(200, [self._activity_json(leg) for leg in legs])

    def _link_activities(self, req: IncomingRequest) -> Reply:
        """POST /activities/link (repository.rs link_transfer_activities): one TRANSFER_IN
        and one TRANSFER_OUT of DIFFERENT accounts, neither grouped yet, get a new shared
        sourceGroupId and metadata.flow.is_external=false. A same-account pair (an FX
        conversion) cannot be linked: it must be created with a shared sourceGroupId."""
        with self.lock:
            transfer_in, transfer_out = self._transfer_pair(req, "link")
            if transfer_in["sourceGroupId"] or transfer_out["sourceGroupId"]:
                raise DomainError(MSG_INVALID.format(
                    "One or both activities are already linked to another transfer"))
            if transfer_in["accountId"] == transfer_out["accountId"]:
                raise DomainError(MSG_INVALID.format("Both transfer legs share the same account"))
            return self._set_transfer_group((transfer_in, transfer_out), str(uuid.uuid4()))

    def _unlink_activities(self, req: IncomingRequest) -> Reply:
        """POST /activities/unlink: both legs must share one sourceGroupId; it is cleared
        and metadata.flow.is_external set to true."""
        with self.lock:
            transfer_in, transfer_out = self._transfer_pair(req, "unlink")
            if not transfer_in["sourceGroupId"] or not transfer_out["sourceGroupId"]:
                raise DomainError(MSG_INVALID.format("Both activities must already be linked"))
            if transfer_in["sourceGroupId"] != transfer_out["sourceGroupId"]:
                raise DomainError(MSG_INVALID.format(
                    "Selected activities belong to different linked transfers"))
            return self._set_transfer_group((transfer_in, transfer_out), None)

    def _delete_activity(self, req: IncomingRequest, id: str) -> Reply:
        with self.lock:
            if id not in self.activities:
                raise DomainError(MSG_NOT_FOUND)
            return json_reply(200, self._activity_json(self._remove_activity(id)))

    def _check_duplicates(self, req: IncomingRequest) -> Reply:
        raw, shape = _json_body(req)
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
        raw, shape = _json_body(req)
        body = shape.obj(raw, "", "ActivitySearchBody")
        page = shape.req_int(body, "page")
        page_size = shape.req_int(body, "pageSize")
        accounts = shape.str_or_list(body, "accountIdFilter")
        types = shape.str_or_list(body, "activityTypeFilter")
        instrument_types = shape.str_or_list(body, "instrumentTypeFilter")
        keyword = shape.opt_str(body, "assetIdKeyword")
        needs_review = shape.opt_bool(body, "needsReviewFilter")
        sort = body.get("sort")
        if isinstance(sort, list):
            sort = sort[0] if sort else None
        sort_id, sort_desc = "date", True
        if sort is not None:
            sort_obj = shape.obj(sort, "sort", "Sort")
            sort_id = shape.req_str(sort_obj, "id", "sort")
            sort_desc = shape.req_bool(sort_obj, "desc", "sort")
        bounds = {}
        for key in ("dateFrom", "dateTo"):
            value = shape.opt_str(body, key)
            if value is not None:
                try:
                    bounds[key] = date.fromisoformat(value) if _DATE_ONLY.match(value) else None
                except ValueError:
                    bounds[key] = None
                if bounds[key] is None:
                    raise DomainError(f"Invalid {key}: input contains invalid characters")
        with self.lock:
            rows = []
            for rec in self.activities.values():
                account = self.accounts.get(rec["accountId"])
                if account is None or account["isArchived"]:
                    continue  # archived accounts never show in search
                asset = self.assets.get(rec["assetId"] or "")
                day = rec["activityDate"].date()
                if accounts is not None and rec["accountId"] not in accounts:
                    continue
                if types is not None and rec["activityType"] not in types:
                    continue
                if instrument_types is not None and (
                        asset is None or asset["instrumentType"] not in instrument_types):
                    continue
                if needs_review is not None and (rec["status"] == "DRAFT") != needs_review:
                    continue
                if "dateFrom" in bounds and day < bounds["dateFrom"]:
                    continue
                if "dateTo" in bounds and day > bounds["dateTo"]:
                    continue
                if keyword:
                    fields = [rec["assetId"], rec["notes"]]
                    if asset is not None:
                        fields += [asset["name"], asset["symbol"]]
                    hay = " ".join(f for f in fields if f).lower()
                    if keyword.lower() not in hay:
                        continue
                rows.append(rec)
            key_funcs: dict[str, Callable[[dict[str, Any]], Any]] = {
                "date": lambda r: r["activityDate"],
                "activityType": lambda r: r["activityType"],
                "assetSymbol": lambda r: (self.assets.get(r["assetId"] or "") or {}).get(
                    "symbol") or "",
                "accountName": lambda r: self.accounts[r["accountId"]]["name"],
            }
            rows.sort(key=lambda r: r["seq"])  # secondary order: createdAt ascending
            rows.sort(key=key_funcs.get(sort_id, key_funcs["date"]), reverse=sort_desc)
            # pageSize ≤ 0 returns everything (§15.7).
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

    def _compute_holdings(self, label: str, account_ids: set[str]) -> list[dict[str, Any]]:
        # HOLDINGS-mode accounts are not rebuilt from activities (§15.5): posts there
        # are stored and never move holdings.
        rebuilt = {i for i in account_ids
                   if self.accounts[i].get("trackingMode") != "HOLDINGS"}
        # Cash and quantities by Wealthfolio's rules (wealthfolio_rules, §15.3), keyed by
        # asset id; prices and open dates are the fake's own valuation stand-ins.
        ledger = []
        for account_id in sorted(rebuilt):
            records = [a for a in self.activities.values() if a["accountId"] == account_id]
            ledger += wealthfolio_rules.ledger_from_records(
                records, self.assets, self.accounts[account_id]["currency"], key_by="id")
        books = wealthfolio_rules.compute_books(ledger)
        quantities, cash = books.quantities, books.cash
        posted = sorted((a for a in self.activities.values()
                         if a["accountId"] in rebuilt and a["status"] == "POSTED"),
                        key=lambda a: (a["activityDate"], a["seq"]))
        last_price: dict[str, Decimal] = {}
        open_dates: dict[str, date] = {}
        zero = Decimal(0)
        for a in posted:
            asset_id = a["assetId"]
            if asset_id:
                open_dates.setdefault(asset_id, a["activityDate"].date())
                if a["unitPrice"] is not None:
                    last_price[asset_id] = a["unitPrice"]
        base = next((self.accounts[i]["currency"] for i in sorted(account_ids)), "GBP")
        out: list[dict[str, Any]] = []
        today = datetime.now(UTC).date().isoformat()
        for asset_id, quantity in quantities.items():
            if quantity == 0:
                continue
            asset = self.assets[asset_id]
            price = self._valuation_price(asset, last_price.get(asset_id))
            value = quantity * (price or zero)
            out.append({
                "id": f"SEC-{label}-{asset_id}", "accountId": label, "holdingType": "security",
                "instrument": {
                    "id": asset_id, "symbol": asset["symbol"], "name": asset["name"],
                    "currency": asset["quoteCcy"], "notes": None,
                    "pricingMode": asset["quoteMode"], "preferredProvider": None,
                    "exchangeMic": asset["exchangeMic"], "classifications": None},
                "assetKind": "INVESTMENT", "quantity": quantity,
                "openDate": open_dates.get(asset_id, date.today()).isoformat(), "lots": None,
                "contractMultiplier": Decimal(1), "localCurrency": base, "baseCurrency": base,
                "fxRate": Decimal(1), "marketValue": {"local": value, "base": value},
                "costBasis": None, "price": price, "asOfDate": today,
            })
        for ccy, amount in sorted(cash.items()):
            if amount == 0:
                continue
            out.append({
                "id": f"CASH-{label}-{ccy}", "accountId": label, "holdingType": "cash",
                "instrument": {"id": f"cash:{ccy}", "symbol": ccy, "name": ccy, "currency": ccy,
                               "exchangeMic": None},
                "assetKind": "CASH", "quantity": amount, "localCurrency": ccy,
                "baseCurrency": base, "fxRate": Decimal(1),
                "marketValue": {"local": amount, "base": amount}, "asOfDate": today,
            })
        return out

    def _valuation_price(self, asset: dict[str, Any], last_price: Decimal | None
                         ) -> Decimal | None:
        """Price per unit in the major currency, as holdings_valuation_service.rs gets it.

        With a market quote, `resolve_effective_quote_currency` lets the minor unit win
        when the asset's and the quote's currency differ only in unit (asset GBp + a GBP
        quote of 92.15 -> 92.15 pence), then `normalize_amount` divides a minor-unit price
        by 100. Without one, the last activity's unit price (already major) stands in.
        """
        quote = self.market_quotes.get(
            (asset["symbol"].upper(), (asset["exchangeMic"] or "").upper()))
        if quote is None:
            return last_price
        price, quote_ccy = quote
        asset_ccy = asset["quoteCcy"] or quote_ccy
        effective = quote_ccy
        if MINOR_UNITS.get(asset_ccy, asset_ccy) == MINOR_UNITS.get(quote_ccy, quote_ccy):
            effective = asset_ccy if asset_ccy in MINOR_UNITS else quote_ccy
        return price * Decimal("0.01") if effective in MINOR_UNITS else price

    # ---------------------------------------------------------------- renderers

    def _activity_json(self, rec: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": rec["id"], "accountId": rec["accountId"], "assetId": rec["assetId"],
            "activityType": rec["activityType"], "activityTypeOverride": None,
            "sourceType": None, "subtype": rec["subtype"], "status": rec["status"],
            "activityDate": _rfc3339(rec["activityDate"]),
            "quantity": dec_str(rec["quantity"]), "unitPrice": dec_str(rec["unitPrice"]),
            "amount": dec_str(rec["amount"]), "fee": dec_str(rec["fee"]),
            "fxRate": dec_str(rec["fxRate"]), "currency": rec["currency"], "notes": rec["notes"],
            "sourceSystem": rec["sourceSystem"], "sourceRecordId": rec["sourceRecordId"],
            "sourceGroupId": rec["sourceGroupId"], "idempotencyKey": rec["idempotencyKey"],
            "importRunId": None, "isUserModified": rec.get("isUserModified", False),
            "needsReview": rec["needsReview"],
            "createdAt": _rfc3339(rec["createdAt"]), "updatedAt": _rfc3339(rec["updatedAt"]),
        }
        if rec["metadata"] is not None:
            out["metadata"] = rec["metadata"]
        return out

    def _details_json(self, rec: dict[str, Any]) -> dict[str, Any]:
        account = self.accounts[rec["accountId"]]
        asset = self.assets.get(rec["assetId"] or "")
        amount = rec["amount"]
        if amount is None and rec["quantity"] is not None and rec["unitPrice"] is not None:
            amount = rec["quantity"] * rec["unitPrice"]
        return {
            "id": rec["id"], "accountId": rec["accountId"], "assetId": rec["assetId"] or "",
            "activityType": rec["activityType"], "subtype": rec["subtype"],
            "status": rec["status"], "date": _rfc3339(rec["activityDate"]),
            "quantity": dec_str(rec["quantity"]), "unitPrice": dec_str(rec["unitPrice"]),
            "amount": dec_str(amount), "fee": dec_str(rec["fee"]),
            "fxRate": dec_str(rec["fxRate"]), "currency": rec["currency"],
            "needsReview": rec["needsReview"], "comment": rec["notes"],
            "createdAt": _rfc3339(rec["createdAt"]), "updatedAt": _rfc3339(rec["updatedAt"]),
            "accountName": account["name"], "accountCurrency": account["currency"],
            "assetSymbol": asset["symbol"] if asset else "",
            "assetName": asset["name"] if asset else None,
            "exchangeMic": asset["exchangeMic"] if asset else None,
            "assetPricingMode": asset["quoteMode"] if asset else None,
            "instrumentType": asset["instrumentType"] if asset else None,
            "sourceSystem": rec["sourceSystem"], "sourceRecordId": rec["sourceRecordId"],
            "sourceGroupId": rec["sourceGroupId"], "idempotencyKey": rec["idempotencyKey"],
            "importRunId": None, "isUserModified": rec.get("isUserModified", False),
            "metadata": rec["metadata"],
        }


# --------------------------------------------------------------------------- parsing helpers


def _too_many(wait: int) -> Reply:
    return text_reply(429, f"Too Many Requests! Wait for {wait}s",
                      [("x-ratelimit-after", str(wait)), ("retry-after", str(wait))])


def _b64(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _is_json_content_type(value: str | None) -> bool:
    if not value:
        return False
    mime = value.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/")
                                          and mime.endswith("+json"))


def _json_body(req: IncomingRequest) -> tuple[Any, BodyShape]:
    """axum's Json extractor: 415 without a JSON content type, 400 for invalid JSON."""
    if not _is_json_content_type(req.headers.get("content-type")):
        raise HttpError(text_reply(415, MSG_415))
    try:
        text = req.body.decode("utf-8")
        value = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant,
                           object_pairs_hook=_pairs_hook)
    except (UnicodeDecodeError, ValueError) as exc:
        detail = str(exc)
        if isinstance(exc, json.JSONDecodeError):
            detail = f"{exc.msg.lower()} at line {exc.lineno} column {exc.colno}"
        raise HttpError(text_reply(
            400, f"Failed to parse the request body as JSON: {detail}")) from None
    return value, BodyShape(text)


def _redacted_json(req: IncomingRequest) -> Any:
    try:
        value = json.loads(req.body.decode("utf-8"), parse_float=Decimal) if req.body else None
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(value, dict) and "password" in value:
        value = {**value, "password": "<redacted>"}
    return value


def _parse_new_activity(shape: BodyShape, raw: Any, path: str) -> dict[str, Any]:
    """NewActivity as serde sees it: required keys, types, aliases (422 on any mismatch)."""
    body = shape.obj(raw, path, "NewActivity")
    if "notes" in body and "comment" in body:
        raise shape.fail(path, "duplicate field `notes`")
    if "symbol" in body and "asset" in body:
        raise shape.fail(path, "duplicate field `symbol`")
    item: dict[str, Any] = {}
    for key in ("accountId", "activityType", "activityDate", "currency"):
        item[key] = shape.req_str(body, key, path)
    for key in ("quantity", "unitPrice", "amount", "fee", "fxRate"):
        item[key] = shape.opt_decimal(body, key, path)
    for key in ("subtype", "metadata", "sourceSystem", "sourceRecordId", "sourceGroupId",
                "idempotencyKey", "id"):
        item[key] = shape.opt_str(body, key, path)
    item["notes"] = shape.opt_str(body, "notes" if "notes" in body else "comment", path)
    item["status"] = shape.opt_enum(body, "status", STATUSES, path)
    item["needsReview"] = shape.opt_bool(body, "needsReview", path)
    sym_key = "symbol" if "symbol" in body else "asset"
    sym = body.get(sym_key)
    if sym is not None:
        sym_path = f"{path}.{sym_key}" if path else sym_key
        sym_obj = shape.obj(sym, sym_path, "SymbolInput")
        item["symbol"] = {k: shape.opt_str(sym_obj, k, sym_path) for k in (
            "symbol", "exchangeMic", "quoteCcy", "instrumentType", "kind", "name", "id")}
        # An unknown quoteMode string is stored as sent, not refused (§15.7).
        item["symbol"]["quoteMode"] = shape.opt_str(sym_obj, "quoteMode", sym_path)
    return item


def _parse_activity_update(shape: BodyShape, raw: Any, path: str
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """ActivityUpdate: `id` plus the NewActivity fields; (raw body, parsed fields)."""
    body = shape.obj(raw, path, "ActivityUpdate")
    shape.req_str(body, "id", path)
    return body, _parse_new_activity(shape, raw, path)


def _parse_activity_date(value: str) -> datetime:
    """YYYY-MM-DD (midnight UTC) or RFC 3339 (converted to UTC); anything else is a 400."""
    text = value.strip()
    try:
        if _DATE_ONLY.match(text):
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        match = _RFC3339.match(text)
        if match:
            frac = (match.group(7) or "")[:7].ljust(7, "0") if match.group(7) else ""
            zone = match.group(8)
            zone = "+00:00" if zone in ("Z", "z") else zone
            iso = "{}-{}-{}T{}:{}:{}{}{}".format(*match.group(1, 2, 3, 4, 5, 6), frac, zone)
            return datetime.fromisoformat(iso).astimezone(UTC)
    except ValueError:
        pass
    raise DomainError(MSG_BAD_DATE)


def _content_hash(account_id: str, activity_type: str, moment: datetime, asset_id: str,
                  quantity: Decimal | None, price: Decimal | None, amount: Decimal | None,
                  currency: str, source_record_id: str | None, notes: str | None) -> str:
    parts = [account_id, activity_type, moment.date().isoformat(), asset_id,
             dec_str(quantity) or "", dec_str(price) or "", dec_str(amount) or "", currency,
             source_record_id or "", " ".join((notes or "").split())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


# --------------------------------------------------------------------------- HTTP plumbing


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout test) makes the late answer fail: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeWealthfolio
    protocol_version = "HTTP/1.1"  # keep-alive, like the real server
    timeout = 10  # idle keep-alive connections end on their own
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tests read `requests` instead

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = IncomingRequest(
            method=self.command, path=url.path, query=parse_qs(url.query),
            headers={k.lower(): v for k, v in self.headers.items()}, body=body,
            peer=self.client_address[0],
        )
        try:
            reply = self.owner.handle(req)
        except Exception as exc:  # a bug in the fake should be loud, not a hang
            reply = text_reply(500, f"fake wealthfolio crashed: {exc!r}")
        if reply.drop:
            self.close_connection = True
            return
        self.send_response(reply.status)
        if reply.content_type:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("x-request-id", str(uuid.uuid4()))
        if reply.status not in (204, 304):
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.status not in (204, 304) and self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


# --------------------------------------------------------------------------- process mode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the fake Wealthfolio server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--password", default=None, help="omit to run without auth")
    parser.add_argument("--account-id", default=str(uuid.uuid4()))
    parser.add_argument("--account-name", default="IBKR")
    parser.add_argument("--account-currency", default="GBP")
    parser.add_argument("--login-shape", default="v3.1", choices=("v3.1", "v3.0.4", "v3.0"))
    args = parser.parse_args(argv)
    fake = FakeWealthfolio(args.password, host=args.host, port=args.port,
                           login_shape=args.login_shape)
    fake.create_account(args.account_name, args.account_currency, account_id=args.account_id,
                        tracking_mode="TRANSACTIONS")
    fake.start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"fake-wealthfolio ready on {fake.base_url} account={args.account_id}", flush=True)
    try:
        done.wait()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

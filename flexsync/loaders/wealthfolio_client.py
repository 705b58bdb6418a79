"""HTTP client for the Wealthfolio v3 web server (contracts/wealthfolio-api.md).

Auth: password login only (Wealthfolio has no username). The session token comes
from `accessToken` in the login body (v3.0.x) or from the `wf_session` cookie
(v3.1+); either way it is sent as a Bearer header, cached at the session path
(mode 0600) and reused across runs. A 401 triggers one fresh login per call.
Login 429s are waited out as the server asks, within a bound. A login 404
"Authentication is not configured" is checked before it is believed: Wealthfolio 3.4
answers the same on an OIDC-only server that still requires tokens (§15.6).

Retries: 5xx, 429, the 400s Wealthfolio maps a locked database to, timeouts, dropped
connections and unparseable JSON are retried with capped exponential backoff (at most
`max_attempts` tries) for every call, creates included: the
idempotency key makes a repeated create safe (a create whose answer was lost
comes back as "Duplicate activity detected", i.e. already present).

Secrets: the password and the token never enter a log record, an exception or a
return value; they are registered with the log scrubber, and httpcore's debug
lines (which print response headers, hence Set-Cookie) are filtered.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from http.cookiejar import CookieJar, DefaultCookiePolicy
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx

from flexsync.core.config import Secret, Settings
from flexsync.core.errors import WealthfolioError
from flexsync.core.logs import register_secret, scrub

log = logging.getLogger("flexsync.wealthfolio")

API_PREFIX = "/api/v1"
# The largest answer read, counted after decompression: a search page of 2,000 activities
# is ~2-3 MB of JSON; a gzip bomb (MBs on the wire, GBs inflated) stops here.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
SESSION_COOKIE = "wf_session"
DUPLICATE_MARKER = "Duplicate activity detected"
NOT_FOUND_MARKER = "Record not found"
_DUPLICATE_ID = re.compile(r"already exists \(id: ([^)\s]+)\)")
_WAIT_FOR = re.compile(r"Wait for (\d+)s")
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


# --------------------------------------------------------------------------- log hygiene

_SESSION_IN_TEXT = re.compile(
    r"(wf_session=|Bearer\s+|accessToken[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._~+/=-]+")
_FILTERED_LOGGERS = ("httpx", "httpcore", "httpcore.http11", "httpcore.http2",
                     "httpcore.connection", "httpcore.proxy", "httpcore.socks")


class _SessionScrubFilter(logging.Filter):
    """Redacts session tokens from httpx/httpcore records before any handler sees them.

    httpcore logs response headers at DEBUG, Set-Cookie included, before the client
    has even read the token, so a pattern is needed besides the known-secret list.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = scrub(_SESSION_IN_TEXT.sub(r"\1********", text))
        if clean != text:
            record.msg, record.args = clean, None
        return True


_FILTER = _SessionScrubFilter()


def _install_log_filter() -> None:
    for name in _FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


# --------------------------------------------------------------------------- results


class ActivityNotFoundError(WealthfolioError):
    """Wealthfolio has no activity with that id (400 "…Record not found…")."""

    def __init__(self, message: str, activity_id: str) -> None:
        super().__init__(message)
        self.activity_id = activity_id


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


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    data: Any
    text: str
    headers: httpx.Headers

    @property
    def message(self) -> str:
        """The server's error message: JSON `message`, else the text body's first line."""
        if isinstance(self.data, dict) and isinstance(self.data.get("message"), str):
            return self.data["message"]
        first = self.text.strip().splitlines()[0] if self.text.strip() else ""
        return first[:300] or self.reason

    def describe(self) -> str:
        message = self.message
        head = f"{self.status} {self.reason}".strip()
        return head if message in ("", self.reason) else f"{head}: {message}"


# --------------------------------------------------------------------------- the client


class WealthfolioClient:
    """One Wealthfolio server. Use as a context manager (closes the connection pool)."""

    def __init__(
        self,
        base_url: str,
        password: Secret | str | None,
        *,
        session_path: Path | None = None,
        timeout: float = 30.0,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        max_login_wait: float = 120.0,
        # Search pages: Wealthfolio's own front end asks for everything in one page; 2,000
        # keeps a page's parsed JSON small (~10 MB) and a 15,000-activity account at 8
        # requests (500 a page measured ~0.2 s slower per snapshot at loopback).
        page_size: int = 2000,
        duplicate_chunk: int = 200,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.max_response_bytes = max_response_bytes
        root = base_url.rstrip("/")
        if root.endswith(API_PREFIX):
            root = root[: -len(API_PREFIX)]
        if not root.startswith(("http://", "https://")):
            raise WealthfolioError(f"WF_BASE_URL {base_url!r} is not an http(s) URL")
        self.base_url = root
        self._password = password if isinstance(password, Secret) else Secret(password or "")
        self.session_path = session_path
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_login_wait = max_login_wait
        self.page_size = page_size
        self.duplicate_chunk = duplicate_chunk
        self._sleep = sleep
        self._clock = clock
        self._token: str | None = None
        self._auth_disabled = False
        if self._password:
            register_secret(self._password.get())
        _install_log_filter()
        # A jar that accepts nothing: the token travels as Bearer only, never as a cookie.
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self._http = httpx.Client(
            base_url=root + API_PREFIX, timeout=timeout, transport=transport,
            cookies=httpx.Cookies(no_cookies), follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "flexsync"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> WealthfolioClient:
        kwargs.setdefault("timeout", settings.http_timeout_seconds)
        kwargs.setdefault("session_path", settings.session_path)
        return cls(settings.wf_base_url, settings.wf_password, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WealthfolioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- public API

    def search_all(self, account_id: str,
                   on_page: Callable[[list[dict[str, Any]]], None] | None = None,
                   ) -> ActivityPage:
        """Every activity of the account, all pages (0-based) until totalRowCount.

        With `on_page`, each page's rows go to it as they arrive and are not kept
        (ActivityPage.rows stays empty): a 15,000-activity account then never holds
        all its parsed JSON at once."""
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        page, total, fetched = 0, 0, 0
        while True:
            body = {"page": page, "pageSize": self.page_size, "accountIdFilter": [account_id]}
            answer = self._ok(self._call("POST", "/activities/search", body,
                                         what="POST /activities/search"),
                              "search activities")
            data, meta = _field(answer.data, "data", list), _field(answer.data, "meta", dict)
            total = _field(meta, "totalRowCount", int)
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
            duplicates = _field(answer.data, "duplicates", dict)
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

    def update_activity(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """PUT /activities with an ActivityUpdate (`id` + the NewActivity fields) → the
        updated Activity (§5.4, §15.4).

        Decimals are patched by the server: leave a key out to keep the stored value,
        send null to clear it. Wealthfolio keeps the idempotencyKey, sourceSystem,
        sourceRecordId, sourceGroupId and createdAt, and marks the row isUserModified;
        a missing `status` becomes POSTED and a missing `symbol` makes it a cash row, so
        send both. Raises ActivityNotFoundError when Wealthfolio answers "Record not
        found" (an unknown id; the server gives the same answer for an unknown
        accountId), WealthfolioError for any other refusal. Retried like every call (a
        PUT repeats harmlessly)."""
        activity_id = payload.get("id")
        if not isinstance(activity_id, str) or not activity_id:
            raise WealthfolioError("update_activity needs the activity's `id`")
        answer = self._call("PUT", "/activities", dict(payload), what="PUT /activities")
        if self._not_found(answer):
            raise ActivityNotFoundError(
                f"Wealthfolio has no activity {activity_id} to update ({answer.describe()})",
                activity_id)
        data = self._ok(answer, f"update activity {activity_id}").data
        if not isinstance(data, dict) or data.get("id") != activity_id:
            raise WealthfolioError(
                f"Wealthfolio answered the update of {activity_id} without that activity")
        return data

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

    def link_activities(self, a_id: str, b_id: str) -> list[dict[str, Any]]:
        """POST /activities/link → [TRANSFER_IN, TRANSFER_OUT] (that order, whatever the
        order of the ids), now sharing a new sourceGroupId.

        Wealthfolio links only one TRANSFER_IN and one TRANSFER_OUT of two DIFFERENT
        accounts, neither already linked: an FX conversion within one account cannot be
        linked afterwards; create its legs with a shared `sourceGroupId` instead. Any
        refusal (including an unknown id) raises WealthfolioError with the server's
        message."""
        answer = self._call("POST", "/activities/link",
                            {"activityAId": a_id, "activityBId": b_id},
                            what="POST /activities/link")
        data = self._ok(answer, f"link activities {a_id} and {b_id}").data
        if not isinstance(data, list) or len(data) != 2 or not all(
                isinstance(item, dict) for item in data):
            raise WealthfolioError("Wealthfolio link answer is not a pair of activities")
        return data

    @staticmethod
    def _not_found(answer: _Answer) -> bool:
        return answer.status in (400, 404) and NOT_FOUND_MARKER in answer.message

    def get_holdings(self, account_id: str) -> list[dict[str, Any]]:
        """Holdings of the account; numbers come back as Decimal (the server sends floats)."""
        answer = self._ok(self._call("GET", "/holdings", params={"accountId": account_id},
                                     what="GET /holdings", decimal_ints=True), "read holdings")
        if not isinstance(answer.data, list):
            raise WealthfolioError("Wealthfolio holdings answer is not a list")
        return answer.data

    def list_accounts(self, include_archived: bool = False) -> list[dict[str, Any]]:
        params = {"includeArchived": "true"} if include_archived else None
        answer = self._ok(self._call("GET", "/accounts", params=params, what="GET /accounts"),
                          "list accounts")
        if not isinstance(answer.data, list):
            raise WealthfolioError("Wealthfolio accounts answer is not a list")
        return answer.data

    # ---------------------------------------------------------------- session

    def login(self) -> None:
        """Password login; leaves a fresh token in memory and in the session cache."""
        if not self._password:
            raise WealthfolioError("WF_PASSWORD not provided: Wealthfolio needs it to log in")
        waited = 0.0
        failures = 0
        while True:
            try:
                response = self._send("POST", "/auth/login",
                                      {"password": self._password.get()}, None, {},
                                      "POST /auth/login")
                answer = _answer(response)
            except (httpx.TransportError, _BadJson) as exc:
                failures += 1
                if failures >= self.max_attempts:
                    raise WealthfolioError(
                        f"Wealthfolio login failed at {self.base_url}: {_describe_exc(exc)} "
                        f"({failures} attempts)") from None
                self._backoff(failures, "POST /auth/login", _describe_exc(exc))
                continue
            if answer.status == 200:
                self._accept_login(response, answer)
                return
            if answer.status == 401:
                raise WealthfolioError(
                    f"Wealthfolio rejected WF_PASSWORD ({answer.status} {answer.message})")
            if answer.status == 404 and "not configured" in answer.message:
                self._confirm_auth_off()
                return
            if answer.status == 404:
                raise WealthfolioError(
                    f"no Wealthfolio login endpoint at {self.base_url}{API_PREFIX}/auth/login "
                    "(404 Not Found): is WF_BASE_URL right?")
            if answer.status == 429:
                wait = _login_wait(answer)
                if waited + wait > self.max_login_wait:
                    raise WealthfolioError(
                        f"Wealthfolio login is rate-limited ({answer.describe()}); gave up after "
                        f"waiting {waited:.0f}s (limit {self.max_login_wait:.0f}s)")
                log.warning("Wealthfolio login rate-limited: waiting %.0fs as asked", wait)
                self._sleep(wait)
                waited += wait
                continue
            if answer.status >= 500:
                failures += 1
                if failures < self.max_attempts:
                    self._backoff(failures, "POST /auth/login", answer.describe())
                    continue
            raise WealthfolioError(f"Wealthfolio login failed: {answer.describe()}")

    def _confirm_auth_off(self) -> None:
        """Login said "Authentication is not configured". On 3.4 an OIDC-only server says
        the same and still requires tokens (§15.6): believe it only when the server's
        status does not report OIDC and a protected read works without a token."""
        status: dict[str, Any] = {}
        try:
            answer = _answer(self._http.get("/auth/status"))
            if answer.status == 200 and isinstance(answer.data, dict):
                status = answer.data
            probe = self._http.get("/accounts").status_code
        except (httpx.TransportError, _BadJson) as exc:
            raise WealthfolioError(
                f"Wealthfolio at {self.base_url} has no password login and could not be "
                f"checked further: {_describe_exc(exc)}") from None
        if status.get("oidcEnabled") is True or probe == 401:
            kind = ("accepts only single sign-on (OIDC) logins"
                    if status.get("oidcEnabled") is True
                    else "has no password login configured yet requires a session")
            raise WealthfolioError(
                f"Wealthfolio at {self.base_url} {kind}: flexsync logs in with a password. "
                "Configure password auth on the server as well (WF_AUTH_PASSWORD_HASH, which "
                "can sit beside OIDC) and put that password in WF_PASSWORD")
        log.info("Wealthfolio at %s has no password configured: no login needed",
                 self.base_url)
        self._auth_disabled = True

    def _accept_login(self, response: httpx.Response, answer: _Answer) -> None:
        body = answer.data if isinstance(answer.data, dict) else {}
        token = body.get("accessToken") if isinstance(body.get("accessToken"), str) else None
        token = token or _session_cookie(response)
        if not token:
            raise WealthfolioError("Wealthfolio login answered 200 but sent no session "
                                   "(no accessToken, no wf_session cookie)")
        expires_in = body.get("expiresIn")
        ttl = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        self._set_token(token, ttl)
        log.info("logged in to Wealthfolio at %s", self.base_url)

    def _set_token(self, token: str, ttl_seconds: float) -> None:
        register_secret(token)
        self._token = token
        self._write_cache(token, self._clock() + ttl_seconds)

    def _ensure_session(self) -> None:
        if self._token or self._auth_disabled:
            return
        cached = self._read_cache()
        if cached:
            register_secret(cached)
            self._token = cached
            log.debug("reusing the cached Wealthfolio session")
            return
        if self._password:
            self.login()

    def _forget_session(self) -> None:
        self._token = None
        if self.session_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.session_path.unlink()

    def _read_cache(self) -> str | None:
        path = self.session_path
        if path is None or not path.is_file():
            return None
        try:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)  # someone widened it: tighten before trusting it
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("ignoring an unreadable Wealthfolio session cache at %s", path)
            return None
        if not isinstance(data, dict) or data.get("base_url") != self.base_url:
            return None
        token, expires_at = data.get("token"), data.get("expires_at")
        if not isinstance(token, str) or not isinstance(expires_at, int | float):
            return None
        if expires_at - 60 <= self._clock():
            return None
        return token

    def _write_cache(self, token: str, expires_at: float) -> None:
        path = self.session_path
        if path is None:
            return
        payload = json.dumps({"base_url": self.base_url, "token": token,
                              "expires_at": expires_at}).encode()
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            # Not fatal: the run works, the next one logs in again.
            log.warning("cannot cache the Wealthfolio session at %s: %s", path, exc.strerror)

    def _absorb_session_cookie(self, response: httpx.Response) -> None:
        """Sliding sessions: a protected answer may carry a fresh wf_session cookie."""
        found = _session_cookie_with_ttl(response)
        if found and found[0] != self._token and self._token is not None:
            self._set_token(*found)

    # ---------------------------------------------------------------- transport

    def _call(self, method: str, path: str, body: Any = None, *,
              params: Mapping[str, str] | None = None, what: str,
              decimal_ints: bool = False) -> _Answer:
        """One API call with re-login on 401 (once) and bounded retries on transient failures."""
        relogged = False
        failures = 0
        while True:
            self._ensure_session()
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            try:
                response = self._send(method, path, body, params, headers, what)
                self._absorb_session_cookie(response)
                answer = _answer(response, decimal_ints=decimal_ints)
            except (httpx.TransportError, _BadJson) as exc:
                failures += 1
                if failures >= self.max_attempts:
                    raise WealthfolioError(_transport_message(self.base_url, what, exc,
                                                              failures, self.timeout)) from None
                self._backoff(failures, what, _describe_exc(exc))
                continue
            if answer.status == 401:
                if relogged or not self._password or self._auth_disabled:
                    hint = ("even after a fresh login" if relogged
                            else "though its login said no password is configured"
                            if self._auth_disabled else "and WF_PASSWORD is not set")
                    raise WealthfolioError(
                        f"Wealthfolio refused {what} ({answer.describe()}) {hint}")
                log.info("Wealthfolio session expired or revoked: logging in again")
                self._forget_session()
                self.login()
                relogged = True
                continue
            if (answer.status in _RETRYABLE_STATUS or answer.status >= 500
                    or _is_transient_400(answer)):
                failures += 1
                if failures < self.max_attempts:
                    self._backoff(failures, what, answer.describe(), _retry_after(answer))
                    continue
            return answer

    def _send(self, method: str, path: str, body: Any, params: Mapping[str, str] | None,
              headers: dict[str, str], what: str) -> httpx.Response:
        """One request, its (decompressed) body read in chunks up to the cap."""
        request = self._http.build_request(method, path, json=body, params=params,
                                           headers=headers)
        response = self._http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes(1 << 16):
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise WealthfolioError(
                        f"Wealthfolio {what}: the answer exceeds "
                        f"{self.max_response_bytes // (1 << 20)} MiB once decompressed (a "
                        "runaway or hostile body); stopped reading it")
                chunks.append(chunk)
            # The body, as read() would have stored it (so .content and .text work).
            response._content = b"".join(chunks)
        finally:
            response.close()
        return response

    def _backoff(self, failures: int, what: str, why: str,
                 asked: float | None = None) -> None:
        delay = min(self.backoff_max, self.backoff_initial * (2 ** (failures - 1)))
        if asked is not None:
            delay = min(max(delay, asked), self.backoff_max * 6)
        log.warning("Wealthfolio %s failed (%s); retry %d/%d in %.1fs", what, why, failures,
                    self.max_attempts - 1, delay)
        self._sleep(delay)

    def _ok(self, answer: _Answer, doing: str) -> _Answer:
        if answer.status != 200:
            raise WealthfolioError(f"Wealthfolio could not {doing}: {answer.describe()}")
        return answer


# --------------------------------------------------------------------------- helpers


# Wealthfolio maps every core error to 400 (§15.6), a locked SQLite database and an
# exhausted connection pool included; those pass, so they are retried (bounded).
_TRANSIENT_400 = re.compile(
    r"database( table)? is locked|database is busy|timed out waiting for connection",
    re.IGNORECASE)


def _is_transient_400(answer: _Answer) -> bool:
    return answer.status == 400 and bool(_TRANSIENT_400.search(answer.message))


class _BadJson(Exception):
    """A 200 whose body is not the JSON it should be (truncated, HTML from a proxy ...)."""


def _answer(response: httpx.Response, *, decimal_ints: bool = False) -> _Answer:
    text = response.text
    data: Any = None
    content_type = response.headers.get("content-type", "")
    if "json" in content_type and text:
        try:
            data = json.loads(text, parse_float=Decimal,
                              parse_int=Decimal if decimal_ints else None)
        except RecursionError:
            # Deeper than any answer of Wealthfolio's API: hostile, not transient.
            raise WealthfolioError(
                f"Wealthfolio answered JSON nested too deeply to read ({response.status_code} "
                f"from {response.request.url.path})") from None
        except ValueError:
            if response.status_code == 200:
                raise _BadJson("the answer is not valid JSON") from None
    elif response.status_code == 200 and response.request.method != "DELETE":
        raise _BadJson(f"the answer is {content_type or 'untyped'}, not JSON")
    return _Answer(response.status_code, response.reason_phrase, data, text, response.headers)


def _field(data: Any, name: str, kind: type) -> Any:
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise WealthfolioError(f"Wealthfolio answer lacks {name!r} ({kind.__name__})")
    return value


def _session_cookie(response: httpx.Response) -> str | None:
    found = _session_cookie_with_ttl(response)
    return found[0] if found else None


def _session_cookie_with_ttl(response: httpx.Response) -> tuple[str, float] | None:
    """(token, seconds to live) from a `Set-Cookie: wf_session=...` header, if any."""
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        morsel = jar.get(SESSION_COOKIE)
        if morsel is None or not morsel.value or morsel["max-age"] == "0":
            continue
        max_age = morsel["max-age"]
        return morsel.value, float(max_age) if str(max_age).isdigit() else 3600.0
    return None


def _login_wait(answer: _Answer) -> float:
    """Seconds the rate limiter asks for: Retry-After, x-ratelimit-after, or the body text."""
    for header in ("retry-after", "x-ratelimit-after"):
        value = answer.headers.get(header, "").strip()
        if value.isdigit():
            return max(1.0, float(value))
    match = _WAIT_FOR.search(answer.text)
    return max(1.0, float(match.group(1))) if match else 12.0


def _retry_after(answer: _Answer) -> float | None:
    value = answer.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def _describe_exc(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout ({type(exc).__name__})"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, _BadJson) else text


def _transport_message(base_url: str, what: str, exc: Exception, attempts: int,
                       timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return (f"Wealthfolio at {base_url} did not answer {what} within {timeout:g}s "
                f"({attempts} attempts)")
    if isinstance(exc, _BadJson):
        return (f"Wealthfolio at {base_url} answered {what} with something that is not "
                f"JSON ({exc}; {attempts} attempts): is WF_BASE_URL right?")
    return (f"cannot reach Wealthfolio at {base_url} for {what}: {_describe_exc(exc)} "
            f"({attempts} attempts)")

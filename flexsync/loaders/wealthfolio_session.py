"""A session with the Wealthfolio v3 web server (docs/upstream.md#wealthfolio): login,
the session cache, and one call with its re-login and retries.

Auth: password login only (Wealthfolio has no username). The session token comes
from `accessToken` in the login body (v3.0.x) or from the `wf_session` cookie
(v3.1+); either way it is sent as a Bearer header, cached at the session path
(mode 0600) and reused across runs. A 401 triggers one fresh login per call.
Login 429s are waited out as the server asks, within a bound. A login 404
"Authentication is not configured" is checked before it is believed: Wealthfolio 3.4
answers the same on an OIDC-only server that still requires tokens (docs/upstream.md#auth).

Retries: 5xx, 429, the 400s Wealthfolio maps a locked database to, timeouts, dropped
connections and unparseable JSON are retried with capped exponential backoff (at most
`max_attempts` tries) for every call, creates included (wealthfolio_client says why
that is safe).

Secrets: the password and the token never enter a log record, an exception or a
return value; they are registered with the log scrubber (flexsync.core.logs, which also
scrubs httpcore's debug lines: they print response headers, hence Set-Cookie).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any, Self

import httpx

from flexsync.core.config import Secret
from flexsync.core.errors import WealthfolioError
from flexsync.core.http_body import send_capped
from flexsync.core.logs import register_secret
from flexsync.loaders.wealthfolio_http import (
    RETRYABLE_STATUS,
    Answer,
    BadJson,
    describe_exc,
    is_transient_400,
    read_answer,
    retry_after,
    transport_message,
)

log = logging.getLogger("flexsync.wealthfolio")

API_PREFIX = "/api/v1"
# The largest answer read, counted after decompression: a search page of 2,000 activities
# is ~2-3 MB of JSON; a gzip bomb (MBs on the wire, GBs inflated) stops here.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
SESSION_COOKIE = "wf_session"
_WAIT_FOR = re.compile(r"Wait for (\d+)s")


class WealthfolioSession:
    """A session with one Wealthfolio server: login, the session cache and every call's
    retries (WealthfolioClient adds the API). Use as a context manager (closes the pool)."""

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
        self._sleep = sleep
        self._clock = clock
        self._token: str | None = None
        self._auth_disabled = False
        if self._password:
            register_secret(self._password.get())
        # A jar that accepts nothing: the token travels as Bearer only, never as a cookie.
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self._http = httpx.Client(
            base_url=root + API_PREFIX, timeout=timeout, transport=transport,
            cookies=httpx.Cookies(no_cookies), follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "flexsync"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
                answer = read_answer(response)
            except (httpx.TransportError, BadJson) as exc:
                failures += 1
                if failures >= self.max_attempts:
                    raise WealthfolioError(
                        f"Wealthfolio login failed at {self.base_url}: {describe_exc(exc)} "
                        f"({failures} attempts)") from None
                self._backoff(failures, "POST /auth/login", describe_exc(exc))
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
        the same and still requires tokens (docs/upstream.md#auth): believe it only when the
        server's status does not report OIDC and a protected read works without a token."""
        status: dict[str, Any] = {}
        try:
            answer = read_answer(self._http.get("/auth/status"))
            if answer.status == 200 and isinstance(answer.data, dict):
                status = answer.data
            probe = self._http.get("/accounts").status_code
        except (httpx.TransportError, BadJson) as exc:
            raise WealthfolioError(
                f"Wealthfolio at {self.base_url} has no password login and could not be "
                f"checked further: {describe_exc(exc)}") from None
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

    def _accept_login(self, response: httpx.Response, answer: Answer) -> None:
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
              params: Mapping[str, str] | None = None, what: str) -> Answer:
        """One API call with re-login on 401 (once) and bounded retries on transient failures."""
        relogged = False
        failures = 0
        while True:
            self._ensure_session()
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            try:
                response = self._send(method, path, body, params, headers, what)
                self._absorb_session_cookie(response)
                answer = read_answer(response)
            except (httpx.TransportError, BadJson) as exc:
                failures += 1
                if failures >= self.max_attempts:
                    raise WealthfolioError(transport_message(self.base_url, what, exc,
                                                              failures, self.timeout)) from None
                self._backoff(failures, what, describe_exc(exc))
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
            if (answer.status in RETRYABLE_STATUS or answer.status >= 500
                    or is_transient_400(answer)):
                failures += 1
                if failures < self.max_attempts:
                    self._backoff(failures, what, answer.describe(), retry_after(answer))
                    continue
            return answer

    def _send(self, method: str, path: str, body: Any, params: Mapping[str, str] | None,
              headers: dict[str, str], what: str) -> httpx.Response:
        """One request, its (decompressed) body read in chunks up to the cap."""
        request = self._http.build_request(method, path, json=body, params=params,
                                           headers=headers)
        too_large = WealthfolioError(
            f"Wealthfolio {what}: the answer exceeds "
            f"{self.max_response_bytes // (1 << 20)} MiB once decompressed (a "
            "runaway or hostile body); stopped reading it")
        return send_capped(self._http, request, self.max_response_bytes, lambda: too_large)

    def _backoff(self, failures: int, what: str, why: str,
                 asked: float | None = None) -> None:
        delay = min(self.backoff_max, self.backoff_initial * (2 ** (failures - 1)))
        if asked is not None:
            delay = min(max(delay, asked), self.backoff_max * 6)
        log.warning("Wealthfolio %s failed (%s); retry %d/%d in %.1fs", what, why, failures,
                    self.max_attempts - 1, delay)
        self._sleep(delay)

    def _ok(self, answer: Answer, doing: str) -> Answer:
        if answer.status != 200:
            raise WealthfolioError(f"Wealthfolio could not {doing}: {answer.describe()}")
        return answer


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


def _login_wait(answer: Answer) -> float:
    """Seconds the rate limiter asks for: Retry-After, x-ratelimit-after, or the body text."""
    for header in ("retry-after", "x-ratelimit-after"):
        value = answer.headers.get(header, "").strip()
        if value.isdigit():
            return max(1.0, float(value))
    match = _WAIT_FOR.search(answer.text)
    return max(1.0, float(match.group(1))) if match else 12.0

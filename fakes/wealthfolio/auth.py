"""The session half of the fake: password login, tokens, the login rate limit.

What the client depends on (docs/upstream.md#auth): the three
login shapes (v3.1 cookie only, v3.0.4 token + cookie, v3.0 token), a `Bearer` header
checked before the `wf_session` cookie (a non-Bearer header is a 401), the 401 body,
sessions that expire after their TTL and slide (past half their life a protected answer
carries a fresh cookie), 5 logins per minute per peer, and 3.4's OIDC-only server that
answers login with 404 yet still requires tokens.

A mixin of FakeWealthfolio: the state (`sessions`, `lock`, the settings) is the fake's.
`_issue_token` and `_auth_status` are the hooks tests override.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import threading
import time
from typing import Any

from fakes.wealthfolio.replies import HttpError, Reply, error_reply, json_reply, too_many
from fakes.wealthfolio.transport import IncomingRequest
from fakes.wealthfolio.validation import json_body

SESSION_COOKIE = "wf_session"


class AuthMixin:
    password: str | None
    oidc_only: bool
    login_shape: str
    token_ttl_seconds: int
    login_burst: int
    login_replenish_seconds: float
    lock: threading.RLock
    sessions: dict[str, float]  # token -> expiry on the fake's clock
    logins: int
    _clock_offset: float
    _buckets: dict[str, tuple[float, float]]

    # ---------------------------------------------------------------- clock

    def now(self) -> float:
        return time.monotonic() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock (session expiry, login rate limit) forward."""
        with self.lock:
            self._clock_offset += seconds

    def expire_sessions(self) -> None:
        """Every issued token stops working (as when the TTL passes)."""
        with self.lock:
            self.sessions.clear()

    # ---------------------------------------------------------------- credentials

    @property
    def auth_required(self) -> bool:
        return self.password is not None or self.oidc_only

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

    def auth_kind(self, req: IncomingRequest) -> str:
        """How the request authenticates, for the request log: bearer|cookie|none|invalid."""
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

    def require_session(self, req: IncomingRequest) -> list[tuple[str, str]]:
        """Headers to add to the answer of a protected route; raises the 401."""
        if not self.auth_required:
            return []
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

    # ---------------------------------------------------------------- routes

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
            return too_many(wait)
        body, shape = json_body(req)
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


def _b64(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

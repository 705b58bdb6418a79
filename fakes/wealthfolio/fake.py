"""A strict, in-memory fake of the Wealthfolio v3 web server, over real loopback HTTP.

It serves what flexsync calls (docs/upstream.md#wealthfolio), as strictly as
the server: password login and sessions (auth.py), body validation with the server's
415/400/422 answers (validation.py), activities, accounts and assets with the server's
normalisation, duplicate answers, update/delete and transfer links (store.py), holdings
whose cash and quantities follow Wealthfolio's own rules (holdings.py, rules.py;
docs/upstream.md#cash-rules),
and the routes (routes.py). Tests drive failures through faults.py and assert on
`requests` (secrets removed). It can play an OIDC-only 3.4 server (`oidc_only=True`).

    with FakeWealthfolio("password") as wf:
        account = wf.create_account("IBKR", "GBP")["id"]
        ... WF_BASE_URL=wf.base_url ...

Run it as a process (make demo, the benchmarks): `python -m fakes.wealthfolio --help`.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from http.server import ThreadingHTTPServer
from typing import Any

from fakes.wealthfolio.auth import AuthMixin
from fakes.wealthfolio.faults import Fault, FaultsMixin
from fakes.wealthfolio.holdings import HoldingsMixin
from fakes.wealthfolio.replies import API_PREFIX, Reply
from fakes.wealthfolio.routes import RoutesMixin
from fakes.wealthfolio.store import StoreMixin
from fakes.wealthfolio.transport import IncomingRequest, RecordedRequest, serve


class FakeWealthfolio(AuthMixin, FaultsMixin, StoreMixin, HoldingsMixin, RoutesMixin):
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
        # The books (store.py, holdings.py).
        self.accounts: dict[str, dict[str, Any]] = {}
        self.activities: dict[str, dict[str, Any]] = {}
        self.assets: dict[str, dict[str, Any]] = {}
        self.market_quotes: dict[tuple[str, str], tuple[Decimal, str]] = {}
        self.idempotency: dict[str, str] = {}
        self._seq = 0
        # Sessions (auth.py).
        self.sessions: dict[str, float] = {}
        self.logins = 0
        self._clock_offset = 0.0
        self._buckets: dict[str, tuple[float, float]] = {}
        # Faults (faults.py) and what was asked.
        self.faults: list[Fault] = []
        self.phantom_duplicates: dict[str, str] = {}
        self.requests: list[RecordedRequest] = []
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._server: ThreadingHTTPServer | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeWealthfolio:
        self._server, _ = serve(self, self.host, self.port)
        self.port = self._server.server_address[1]
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

    # ---------------------------------------------------------------- reading it back

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

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled (e.g. a slowed one finishing late)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    # ---------------------------------------------------------------- dispatch

    def handle(self, req: IncomingRequest) -> Reply:
        """One request, from the transport: recorded, then answered."""
        with self._idle:
            self._in_flight += 1
        try:
            record = RecordedRequest.of(req, self.auth_kind(req))
            with self.lock:
                self.requests.append(record)
            reply = self._handle(req)
            record.status = reply.status if not reply.drop else 0
            return reply
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _handle(self, req: IncomingRequest) -> Reply:
        """The answer to `req`, faults included (the hook test subclasses override)."""
        if not req.path.startswith(API_PREFIX + "/"):
            return Reply(404)
        sub = req.path[len(API_PREFIX):]
        return self.with_faults(req.method, sub, lambda: self._route(req, sub))

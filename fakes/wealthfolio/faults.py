"""Fault injection: the failures tests make the fake produce, and where they strike.

A `Fault` matches requests by method and path (below /api/v1), lets `skip` of them
through, then strikes `times` times. Actions: answer an error status (with or without
first carrying the request out: a lost acknowledgement), drop the connection (likewise),
answer slowly, answer malformed JSON, expire every session, or rate-limit the login.
Phantom duplicates make the server claim an idempotency key it never received.

A mixin of FakeWealthfolio (state: `faults`, `phantom_duplicates`, `lock`, `_stop`).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from fakes.wealthfolio.replies import MSG_DATABASE_LOCKED, Reply, error_reply, too_many


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


class FaultsMixin:
    lock: threading.RLock
    faults: list[Fault]
    phantom_duplicates: dict[str, str]  # idempotency key -> the id the server claims
    _stop: threading.Event
    expire_sessions: Callable[[], None]  # AuthMixin's

    # ---------------------------------------------------------------- hooks for tests

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
        docs/upstream.md#errors); the request is not carried out."""
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

    def expire_sessions_on(self, method: str, path: str, skip: int = 0) -> None:
        """Mid-run expiry: sessions expire when the (skip+1)-th matching request arrives."""
        self.add_fault(Fault("expire_sessions", method=method, path=path, skip=skip))

    def add_phantom_duplicate(self, key: str, activity_id: str | None = None) -> str:
        """Report `key` as existing (check-duplicates and create) though it was never posted."""
        activity_id = activity_id or str(uuid.uuid4())
        with self.lock:
            self.phantom_duplicates[key] = activity_id
        return activity_id

    # ---------------------------------------------------------------- applying them

    def _take_fault(self, method: str, sub: str) -> Fault | None:
        """The first armed fault for this request; every match before it spends a skip."""
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

    def with_faults(self, method: str, sub: str, serve: Callable[[], Reply]) -> Reply:
        """`serve()` the request, with the fault that strikes it (if any) around it."""
        fault = self._take_fault(method, sub)
        if fault is None:
            return serve()
        if fault.action == "status":
            return error_reply(fault.status, fault.message)
        if fault.action == "drop":
            return Reply(0, drop=True)
        if fault.action == "rate_limit":
            return too_many(int(fault.delay))
        if fault.action == "slow":
            self._stop.wait(fault.delay)
        if fault.action == "expire_sessions":
            self.expire_sessions()
        reply = serve()
        if fault.action == "store_then_status":
            return error_reply(fault.status, fault.message)
        if fault.action == "store_then_drop":
            return Reply(0, drop=True)
        if fault.action == "malformed" and reply.status == 200:
            return Reply(200, b'{"data":[{"id":"', "application/json")
        return reply

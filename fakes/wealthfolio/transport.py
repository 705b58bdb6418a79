"""The fake's HTTP transport: real loopback HTTP/1.1 in, `IncomingRequest` to the fake,
its `Reply` out (or a dropped connection), and the request log's secret-free record.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from fakes.wealthfolio.replies import Reply, text_reply


@dataclass
class IncomingRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
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

    @classmethod
    def of(cls, req: IncomingRequest, auth: str) -> RecordedRequest:
        return cls(method=req.method, path=req.path, query=req.query,
                   headers={k: v for k, v in req.headers.items()
                            if k not in ("authorization", "cookie")},
                   json=_redacted_json(req), auth=auth)


def _redacted_json(req: IncomingRequest) -> Any:
    try:
        value = json.loads(req.body.decode("utf-8"), parse_float=Decimal) if req.body else None
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(value, dict) and "password" in value:
        value = {**value, "password": "<redacted>"}
    return value


class Handles(Protocol):
    def handle(self, req: IncomingRequest) -> Reply: ...


def serve(owner: Handles, host: str, port: int
          ) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start serving `owner` on (host, port) in a daemon thread; port 0 picks a free one."""

    class Handler(_Handler):
        pass

    Handler.owner = owner
    server = _QuietServer((host, port), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return server, thread


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout test) makes the late answer fail: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: Handles
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

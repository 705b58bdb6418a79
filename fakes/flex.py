"""A strict fake IBKR Flex Web Service on 127.0.0.1 (docs/upstream.md#ibkr-flex-web-service).

It serves the real paths, checks every request the way the real service does
(v=3, token, query id, reference code, a User-Agent) and answers with envelopes
shaped like IBKR's. Tests script what each step answers:

    fake.configure(poll=[FlexCode(1019)] * 3)            # 1019 three times, then the statement
    fake.configure(poll_default=FlexCode(1019))          # 1019 forever
    fake.configure(send=[Http(503)], url_style="whitespace")

Every request is recorded (`fake.requests`); the token is redacted in what they print.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SEND_PATH = "/AccountManagement/FlexWebService/SendRequest"
GET_PATH = "/AccountManagement/FlexWebService/GetStatement"

DEFAULT_TOKEN = "fake-flex-token-5b1d7e0c9a3f42"
DEFAULT_QUERY_ID = "123456"
DEFAULT_TIMESTAMP = "22 November, 2026 09:00 AM EST"
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
BOM = b"\xef\xbb\xbf"

# IBKR's message texts (ibflex ERRORS table; 1001 from ibkr-conduit),
# docs/upstream.md#flex-error-codes.
MESSAGES: dict[int, str] = {
    1001: "Statement could not be generated at this time. Please try again shortly.",
    1003: "Statement is not available.",
    1004: "Statement is incomplete at this time. Please try again shortly.",
    1005: "Settlement data is not ready at this time. Please try again shortly.",
    1006: "FIFO P/L data is not ready at this time. Please try again shortly.",
    1007: "MTM P/L data is not ready at this time. Please try again shortly.",
    1008: "MTM and FIFO P/L data is not ready at this time. Please try again shortly.",
    1009: "The server is under heavy load. Statement could not be generated at this time. "
    "Please try again shortly.",
    1010: "Legacy Flex Queries are no longer supported. Please convert over to Activity "
    "Flex.",
    1011: "Service account is inactive.",
    1012: "Token has expired.",
    1013: "IP restriction.",
    1014: "Query is invalid.",
    1015: "Token is invalid.",
    1016: "Account in invalid.",
    1017: "Reference code is invalid.",
    1018: "Too many requests have been made from this token. Please try again shortly.",
    1019: "Statement generation in progress. Please try again shortly.",
    1020: "Invalid request or unable to validate request.",
    1021: "Statement could not be retrieved at this time. Please try again shortly.",
}

DEFAULT_STATEMENT = b"""<FlexQueryResponse queryName="flexsync" type="AF">
<FlexStatements count="1">
<FlexStatement accountId="U1234567" fromDate="2026-08-24" toDate="2026-11-20"
 period="Last90CalendarDays" whenGenerated="2026-11-21;09:00:00">
<AccountInformation accountId="U1234567" acctAlias="" currency="GBP" name="Demo Holder"
 accountType="Individual" />
<Trades>
<Trade accountId="U1234567" currency="GBP" assetCategory="STK" subCategory="ETF" symbol="VUSA"
 description="VANGUARD S&amp;P 500 UCITS ETF" conid="128831206" listingExchange="LSEETF"
 exchange="LSEETF" tradeID="7000000001" transactionID="9000000001" tradeDate="2026-11-03"
 tradeTime="10:15:02" buySell="BUY" quantity="10" tradePrice="85.12" ibCommission="-3"
 ibCommissionCurrency="GBP" levelOfDetail="EXECUTION" />
</Trades>
<CashTransactions>
<CashTransaction accountId="U1234567" currency="GBP" assetCategory="" symbol="" conid=""
 type="Deposits/Withdrawals" amount="1000" dateTime="2026-11-02;09:30:00"
 description="CASH RECEIPTS / ELECTRONIC FUND TRANSFERS" transactionID="9000000002"
 levelOfDetail="DETAIL" />
</CashTransactions>
<OpenPositions>
<OpenPosition accountId="U1234567" currency="GBP" assetCategory="STK" subCategory="ETF"
 symbol="VUSA" conid="128831206" listingExchange="LSEETF" position="10" markPrice="85.40"
 levelOfDetail="SUMMARY" />
</OpenPositions>
</FlexStatement>
</FlexStatements>
</FlexQueryResponse>
"""

CSV_STATEMENT = (
    b'"ClientAccountID","TradeID","Symbol","Quantity","TradePrice"\n'
    b'"U1234567","7000000001","VUSA","10","85.12"\n'
)
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Scheduled Maintenance</title></head>"
    b"<body><h1>Client Portal is down for maintenance</h1>&nbsp;</body></html>\n"
)
HTML_404 = (
    b"<!DOCTYPE html><html><head><title>404 Not Found</title></head>"
    b"<body>Page not found</body></html>"
)


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class FlexCode:
    """An error envelope. Status defaults to Warn for 1019 (as observed), else Fail."""

    code: int
    message: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class Http:
    """A non-200 HTTP answer with an HTML body (what IBKR's front end serves)."""

    status: int
    body: bytes = HTML_PAGE
    retry_after: str | None = None


@dataclass(frozen=True)
class Raw:
    """A 200 answer with an arbitrary body (CSV, HTML ...)."""

    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    content_encoding: str | None = None  # e.g. "gzip": `body` is already compressed


@dataclass(frozen=True)
class Delay:
    """Sleep before answering (longer than the client's timeout), then answer `then`."""

    seconds: float
    then: Reply | None = None


@dataclass(frozen=True)
class Success:
    """The normal answer: a reference code at SendRequest, the statement at GetStatement."""


Reply = FlexCode | Http | Raw | Delay | Success


@dataclass
class Scenario:
    send: list[Reply] = field(default_factory=list)  # consumed in order ...
    send_default: Reply = field(default_factory=Success)  # ... then this, forever
    poll: list[Reply] = field(default_factory=list)
    poll_default: Reply = field(default_factory=Success)
    # "normal", "whitespace" (newlines around it), "empty", "dead" (a closed port),
    # "unresolvable" (host gdcdyn.interactivebrokers.com: pair it with a DNS-failing
    # transport, so nothing leaves the machine), "custom" (custom_url)
    url_style: str = "normal"
    custom_url: str = ""
    timestamp: str | None = DEFAULT_TIMESTAMP  # None: no timestamp attribute
    xml_declaration: bool = False
    bom: bool = False
    statement: bytes = DEFAULT_STATEMENT


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float

    @property
    def step(self) -> str:
        if self.path == SEND_PATH:
            return "SendRequest"
        if self.path == GET_PATH:
            return "GetStatement"
        return "other"

    @property
    def redacted_params(self) -> dict[str, str]:
        return {k: ("<redacted>" if k == "t" else v) for k, v in self.params.items()}

    def __repr__(self) -> str:
        return f"RecordedRequest({self.step}, {self.redacted_params}, at={self.at:.3f})"


# --------------------------------------------------------------------------- server


class FakeFlexService:
    """The fake service; `with FakeFlexService() as fake:` or start()/stop()."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        query_id: str = DEFAULT_QUERY_ID,
        statement: bytes | None = None,
        expired_token: str | None = None,
        request_limit: int = 200,
    ) -> None:
        self.token = token
        self.query_id = query_id
        self.expired_token = expired_token  # a token the service answers 1012 for
        self.request_limit = request_limit  # beyond it: 429, and `overloaded` is set
        self.overloaded = False
        self._default_statement = statement or DEFAULT_STATEMENT
        self.scenario = Scenario(statement=self._default_statement)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._references: set[str] = set()
        self.issued_references: list[str] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.dead_port = _closed_port()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FakeFlexService:
        self._stopping.clear()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="fake-flex", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes any Delay reply
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeFlexService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- test API

    @property
    def base_url(self) -> str:
        assert self._server is not None, "fake Flex service not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def send_url(self) -> str:
        return self.base_url + SEND_PATH

    @property
    def get_url(self) -> str:
        return self.base_url + GET_PATH

    @property
    def dead_get_url(self) -> str:
        """A GetStatement URL on a closed port: connection refused."""
        return f"http://127.0.0.1:{self.dead_port}{GET_PATH}"

    def configure(self, **changes: Any) -> Scenario:
        """Replace the scenario: fields of Scenario (lists are copied); the rest default."""
        changes.setdefault("statement", self._default_statement)
        for key in ("send", "poll"):
            if key in changes:
                changes[key] = list(changes[key])
        with self._lock:
            self.scenario = Scenario(**changes)
            return self.scenario

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def count(self, step: str | None = None) -> int:
        return sum(1 for r in self.requests if step is None or r.step == step)

    @property
    def sends(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.step == "SendRequest"]

    @property
    def polls(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.step == "GetStatement"]

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self.overloaded = False

    # ----------------------------------------------------------------- behaviour

    def handle(self, path: str, params: dict[str, str], headers: dict[str, str]
               ) -> tuple[int, bytes, dict[str, str], float]:
        """Decide the answer: (status, body, headers, delay before answering)."""
        with self._lock:
            self._requests.append(RecordedRequest(path, params, headers, time.time()))
            if len(self._requests) > self.request_limit:
                self.overloaded = True
                return 429, b"<html><body>Too Many Requests</body></html>", {}, 0.0
            scenario = self.scenario
            if path not in (SEND_PATH, GET_PATH):
                return 404, HTML_404, {"Content-Type": "text/html"}, 0.0
            fail = "Fail"
            # The real service checks the request before anything else.
            if not headers.get("user-agent", "").strip():
                return self._envelope_error(1020, fail)
            if params.get("v") != "3" or "q" not in params:
                return self._envelope_error(1020, fail)
            token = params.get("t", "")
            if self.expired_token is not None and token == self.expired_token:
                return self._envelope_error(1012, fail)
            if token != self.token:
                return self._envelope_error(1015, fail)
            if path == SEND_PATH:
                if params["q"] != self.query_id:
                    return self._envelope_error(1014, fail)
                reply = scenario.send.pop(0) if scenario.send else scenario.send_default
            else:
                if params["q"] not in self._references:
                    return self._envelope_error(1017, fail)
                reply = scenario.poll.pop(0) if scenario.poll else scenario.poll_default
            return self._render(reply, path, params, 0.0)

    def _render(self, reply: Reply, path: str, params: dict[str, str], delay: float
                ) -> tuple[int, bytes, dict[str, str], float]:
        if isinstance(reply, Delay):
            return self._render(reply.then or Success(), path, params, delay + reply.seconds)
        if isinstance(reply, FlexCode):
            if reply.code == 1017 and path == GET_PATH:
                self._references.discard(params["q"])  # that reference is dead from now on
            status, body, headers, _ = self._envelope_error(
                reply.code, reply.status, reply.message)
            return status, body, headers, delay
        if isinstance(reply, Http):
            headers = {"Content-Type": "text/html; charset=utf-8"}
            if reply.retry_after is not None:
                headers["Retry-After"] = reply.retry_after
            return reply.status, reply.body, headers, delay
        if isinstance(reply, Raw):
            raw_headers = {"Content-Type": reply.content_type}
            if reply.content_encoding:
                raw_headers["Content-Encoding"] = reply.content_encoding
            return 200, reply.body, raw_headers, delay
        if path == SEND_PATH:
            reference = "".join(secrets.choice("0123456789") for _ in range(10))
            self._references.add(reference)
            self.issued_references.append(reference)
            return 200, self._envelope_success(reference), _XML, delay
        return 200, self._prefix(self.scenario.statement), _XML, delay

    def _prefix(self, body: bytes) -> bytes:
        if self.scenario.xml_declaration and not body.lstrip().startswith(b"<?xml"):
            body = XML_DECLARATION + body
        if self.scenario.bom:
            body = BOM + body
        return body

    def _open_tag(self) -> str:
        stamp = self.scenario.timestamp
        return "<FlexStatementResponse" + (f' timestamp="{stamp}">' if stamp is not None else ">")

    def _envelope_success(self, reference: str) -> bytes:
        url = {
            "normal": self.get_url,
            "whitespace": f"\n    {self.get_url}  \n  ",
            "empty": "",
            "dead": self.dead_get_url,
            "unresolvable": f"https://gdcdyn.interactivebrokers.com{GET_PATH}",
            "custom": self.scenario.custom_url,
        }[self.scenario.url_style]
        text = (
            f"{self._open_tag()}\n<Status>Success</Status>\n"
            f"<ReferenceCode>{reference}</ReferenceCode>\n<Url>{url}</Url>\n"
            f"</FlexStatementResponse>\n"
        )
        return self._prefix(text.encode())

    def _envelope_error(self, code: int, status: str | None = None, message: str | None = None
                        ) -> tuple[int, bytes, dict[str, str], float]:
        status = status or ("Warn" if code == 1019 else "Fail")
        message = message if message is not None else MESSAGES.get(code, "Unknown error.")
        text = (
            f"{self._open_tag()}\n<Status>{status}</Status>\n<ErrorCode>{code}</ErrorCode>\n"
            f"<ErrorMessage>{message}</ErrorMessage>\n</FlexStatementResponse>\n"
        )
        # IBKR answers its error envelopes with HTTP 200.
        return 200, self._prefix(text.encode()), _XML, 0.0

    def wait_stopping(self, seconds: float) -> None:
        self._stopping.wait(seconds)


_XML = {"Content-Type": "text/xml;charset=utf-8"}


class _Handler(BaseHTTPRequestHandler):
    server_version = "Apache"
    sys_version = ""

    def do_GET(self) -> None:  # http.server's naming
        fake: FakeFlexService = self.server.fake  # type: ignore[attr-defined]
        split = urlsplit(self.path)
        # Repeated parameters: the last one wins, as in most servlet containers.
        params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, body, extra, delay = fake.handle(split.path, params, headers)
        if delay:
            fake.wait_stopping(delay)
        try:
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests inspect fake.requests instead


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def replies(reply: Reply, times: int) -> Iterable[Reply]:
    """`times` copies of a reply, for `configure(poll=replies(FlexCode(1019), 3))`."""
    return [reply] * times

"""IBKR Flex Web Service client: SendRequest, then poll GetStatement (contracts/ibkr-flex.md §2).

Our own httpx client rather than `ibflex.client`: that one re-sends HTTP errors in a
tight loop, gives up after ~25 s, never retries 1001 and rejects envelopes whose
timestamp zone is not EST/EDT (contract §2.4). Policy here (contract §2.6):

* step 1 (SendRequest) retries transient codes a few times, 1018 after >= throttle;
* step 2 (GetStatement) polls 1019/1009/1001/1004-1008/1021 with capped exponential
  backoff until the deadline, backs off >= throttle on 1018, restarts once on 1017;
* everything else fails fast with a message that says what to do;
* HTTP 5xx/429/timeouts/connection errors: bounded retries, each one after a sleep.

The token travels in the query string, so no URL with its query ever reaches a
message, and httpx's own request log lines are scrubbed (flexsync.core.logs).
What the answers mean: flex_errors (codes, errors) and flex_envelope (bodies); where the
token may go: flex_urls.
"""

from __future__ import annotations

import email.utils
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from flexsync import __version__
from flexsync.core.config import Secret, Settings
from flexsync.core.errors import ConfigurationError
from flexsync.core.logs import register_secret
from flexsync.extract.flex_envelope import clean_text, read_body
from flexsync.extract.flex_errors import (
    HINTS,
    POLL_CODES,
    REFERENCE_INVALID,
    THROTTLED,
    FlexClientError,
    FlexConnectionError,
    FlexHTTPError,
    FlexResponseError,
    FlexResponseTooLargeError,
    FlexThrottledError,
    FlexUnexpectedBodyError,
    StatementGenerationTimeout,
    fatal_error,
)
from flexsync.extract.flex_urls import (
    IBKR_DOMAIN,
    check_url,
    origin,
    redacted_url,
    token_may_go_to,
    with_alternate,
)

log = logging.getLogger(__name__)

USER_AGENT: Final = (
    f"flexsync/{__version__} Python/{sys.version_info.major}.{sys.version_info.minor}"
)
SEND: Final = "SendRequest"
GET: Final = "GetStatement"

# The largest answer read, counted after decompression: a 10-year statement is ~110 MB;
# anything past this could not be landed in the pod's 256 MiB anyway, and a gzip bomb
# (2 MiB on the wire, GBs inflated) stops here instead of at the OOM killer.
MAX_STATEMENT_BYTES: Final = 160 * 1024 * 1024
_RETRY_AFTER_CAP: Final = 120.0  # never let a server park the nightly job for long


class _HostUnreachable(Exception):
    """Internal: the `<Url>` host failed to connect; switch to the configured GetStatement URL."""


class _ReferenceInvalid(Exception):
    """Internal: 1017 at GetStatement; restart from SendRequest."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FlexDownload:
    """The statement bytes exactly as IBKR sent them, with what the raw archive records."""

    content: bytes = field(repr=False)
    reference_code: str
    fetched_at: datetime  # UTC
    query_id: str

    def __repr__(self) -> str:
        return (
            f"FlexDownload(reference_code={self.reference_code!r}, query_id={self.query_id!r}, "
            f"fetched_at={self.fetched_at.isoformat()!r}, bytes={len(self.content)})"
        )


# --------------------------------------------------------------------------- client


class FlexClient:
    """Downloads one Activity Flex statement. `sleep`/`clock`/`transport` are for tests."""

    def __init__(
        self,
        send_url: str,
        get_url: str,
        token: Secret,
        query_id: str,
        *,
        deadline_seconds: float = 600.0,
        throttle_seconds: float = 60.0,
        http_timeout: float = 120.0,
        max_http_retries: int = 4,
        max_send_retries: int = 3,
        first_poll_delay: float = 1.0,  # IBKR allows about one request a second
        poll_backoff_start: float = 5.0,
        poll_backoff_cap: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
        max_response_bytes: int = MAX_STATEMENT_BYTES,
    ) -> None:
        self.max_response_bytes = max_response_bytes
        self._token = token.get().strip()
        if not self._token:
            raise ConfigurationError("IBKR_FLEX_TOKEN not provided")
        register_secret(self._token)
        self.query_id = query_id.strip()
        if not self.query_id:
            raise ConfigurationError("IBKR_FLEX_QUERY_ID not provided")
        if not self.query_id.isdigit():
            raise ConfigurationError(
                f"IBKR_FLEX_QUERY_ID: {self.query_id!r} is not a Flex query id (digits only)"
            )
        self.send_url = check_url(send_url, "IBKR_FLEX_SEND_URL")
        self.get_url = check_url(get_url, "IBKR_FLEX_GET_URL")
        self._configured_origins = {origin(self.send_url), origin(self.get_url)}
        for name, value in (
            ("deadline_seconds", deadline_seconds),
            ("throttle_seconds", throttle_seconds),
            ("http_timeout", http_timeout),
            ("first_poll_delay", first_poll_delay),
            ("poll_backoff_start", poll_backoff_start),
            ("poll_backoff_cap", poll_backoff_cap),
        ):
            if value <= 0:
                raise ConfigurationError(f"Flex client: {name} must be positive, got {value}")
        self.deadline_seconds = deadline_seconds
        self.throttle_seconds = throttle_seconds
        self.http_timeout = http_timeout
        self.max_http_retries = max(0, max_http_retries)
        self.max_send_retries = max(0, max_send_retries)
        self.first_poll_delay = first_poll_delay
        self.poll_backoff_start = poll_backoff_start
        self.poll_backoff_cap = max(poll_backoff_cap, poll_backoff_start)
        self._sleep = sleep
        self._clock = clock
        self._transport = transport
        self._started = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> FlexClient:
        """Build from Settings; keyword overrides (sleep, clock, transport ...) win."""
        kwargs: dict[str, Any] = {
            "deadline_seconds": settings.flex_deadline_seconds,
            "throttle_seconds": settings.flex_min_throttle_seconds,
            "http_timeout": settings.http_timeout_seconds,
        }
        kwargs.update(overrides)
        return cls(
            settings.flex_send_url,
            settings.flex_get_url,
            settings.flex_token,
            settings.flex_query_id,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"FlexClient(send={redacted_url(self.send_url)!r}, get={redacted_url(self.get_url)!r}, "
            f"query_id={self.query_id!r}, token=Secret('********'))"
        )

    # ----------------------------------------------------------------- public

    def download(self) -> FlexDownload:
        """SendRequest, then poll GetStatement until the statement arrives."""
        self._started = self._clock()
        deadline = self._started + self.deadline_seconds
        timeout = httpx.Timeout(self.http_timeout, connect=min(10.0, self.http_timeout))
        with httpx.Client(
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            transport=self._transport,
        ) as http:
            for round_ in (1, 2):
                reference, url = self._send_request(http, deadline)
                try:
                    content = self._poll(http, reference, url, deadline)
                except _ReferenceInvalid as exc:
                    if round_ == 2:
                        raise FlexResponseError(
                            REFERENCE_INVALID, exc.message, step=GET,
                            hint=HINTS[REFERENCE_INVALID],
                        ) from None
                    log.warning(
                        "IBKR Flex error 1017 at GetStatement (%s) for reference %s; "
                        "restarting from SendRequest once",
                        exc.message, reference,
                    )
                    self._wait(
                        self.poll_backoff_start, deadline,
                        give_up=FlexResponseError(
                            REFERENCE_INVALID, exc.message, step=GET,
                            hint="no time left before the deadline to restart; try later",
                        ),
                    )
                    continue
                fetched_at = datetime.now(UTC)
                log.info(
                    "Flex statement downloaded: reference %s, %d bytes, %.0f s elapsed",
                    reference, len(content), self._elapsed(),
                )
                return FlexDownload(content, reference, fetched_at, self.query_id)
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------- step 1

    def _send_request(self, http: httpx.Client, deadline: float) -> tuple[str, str]:
        """Returns (reference code, GetStatement URL to poll)."""
        attempt = 0
        send_urls = with_alternate(self.send_url)
        while True:
            attempt += 1
            try:
                response = self._get(http, send_urls[0], self.query_id, step=SEND,
                                     deadline=deadline, fallback_on_connect=len(send_urls) > 1)
            except _HostUnreachable as exc:
                log.warning("SendRequest host %s is unreachable (%s); trying %s",
                            redacted_url(send_urls[0]), exc, redacted_url(send_urls[1]))
                send_urls = send_urls[1:]
                continue
            envelope = read_body(response.content, SEND)
            if envelope is None:
                raise FlexUnexpectedBodyError(
                    f"IBKR Flex SendRequest answered with a statement instead of a reference "
                    f"code; is IBKR_FLEX_SEND_URL ({redacted_url(self.send_url)}) the SendRequest "
                    f"endpoint?"
                )
            code, message = envelope.error_code, envelope.error_message
            if not code:
                if envelope.reference_code:
                    log.info(
                        "Flex SendRequest accepted: reference %s (envelope timestamp %r)",
                        envelope.reference_code, envelope.timestamp,
                    )
                    return envelope.reference_code, self._poll_url(envelope.url)
                raise FlexUnexpectedBodyError(
                    f"IBKR Flex SendRequest answered status {envelope.status or '(none)'!r} "
                    f"without a reference code or error code"
                )
            if code != THROTTLED and code not in POLL_CODES:
                log.warning("IBKR Flex error %s at SendRequest: %s", code, message)
                raise fatal_error(code, message, SEND)
            error_class = FlexThrottledError if code == THROTTLED else FlexResponseError
            if attempt > self.max_send_retries:
                raise error_class(
                    code, message, step=SEND,
                    hint=f"still failing after {attempt} attempts; try later",
                )
            if code == THROTTLED:
                wait = self.throttle_seconds
            else:
                wait = min(max(10.0, self.poll_backoff_start) * 2 ** (attempt - 1),
                           max(60.0, self.poll_backoff_cap))
            self._wait(
                wait, deadline,
                give_up=error_class(
                    code, message, step=SEND,
                    hint=f"no time left before the {self.deadline_seconds:.0f} s deadline "
                    f"to retry; try later",
                ),
                why=f"IBKR Flex error {code} at SendRequest: {message} (attempt {attempt} of "
                f"{self.max_send_retries + 1})",
                level=logging.WARNING,
            )

    # ----------------------------------------------------------------- step 2

    def _poll(self, http: httpx.Client, reference: str, url: str, deadline: float) -> bytes:
        # Where to go when a host is unreachable: the configured GetStatement URL, then
        # the other documented IBKR host of each.
        fallbacks = [u for u in dict.fromkeys(
            [self.get_url, *with_alternate(url)[1:], *with_alternate(self.get_url)[1:]])
            if u != url]
        polls = 0
        streak = 0
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise StatementGenerationTimeout(
                f"IBKR Flex: no time left before the {self.deadline_seconds:.0f} s deadline to "
                f"fetch the statement (reference {reference}); try later"
            )
        self._sleep(min(self.first_poll_delay, remaining))
        while True:
            polls += 1
            try:
                response = self._get(
                    http, url, reference, step=GET, deadline=deadline,
                    fallback_on_connect=bool(fallbacks),
                )
            except _HostUnreachable as exc:
                log.warning(
                    "GetStatement host %s is unreachable (%s); falling back to %s",
                    redacted_url(url), exc, redacted_url(fallbacks[0]),
                )
                url, fallbacks = fallbacks[0], fallbacks[1:]
                continue
            envelope = read_body(response.content, GET)
            if envelope is None:
                return response.content
            code, message = envelope.error_code, envelope.error_message
            if not code:
                raise FlexUnexpectedBodyError(
                    f"IBKR Flex GetStatement answered status {envelope.status or '(none)'!r} "
                    f"without a statement or an error code (reference {reference})"
                )
            log.debug("GetStatement poll %d: IBKR Flex error %s: %s", polls, code, message)
            if code == REFERENCE_INVALID:
                raise _ReferenceInvalid(message)
            if code == THROTTLED:
                wait = self.throttle_seconds
                if deadline - self._clock() < wait:
                    raise FlexThrottledError(
                        code, message, step=GET,
                        hint=f"no time left before the {self.deadline_seconds:.0f} s deadline to "
                        f"back off {wait:.0f} s; run less often and try later",
                    )
            elif code in POLL_CODES:
                wait = min(self.poll_backoff_start * 2**streak, self.poll_backoff_cap)
                streak += 1
            else:
                log.warning("IBKR Flex error %s at GetStatement: %s", code, message)
                raise fatal_error(code, message, GET)
            remaining = deadline - self._clock()
            if remaining <= 0:
                state = (
                    "is still generating the statement" if code == "1019"
                    else "could not produce the statement yet"
                )
                raise StatementGenerationTimeout(
                    f"IBKR Flex error {code}: IBKR {state} ({message}); "
                    f"waited {self._elapsed():.0f} s over {polls} polls "
                    f"(reference {reference}) and gave up at the {self.deadline_seconds:.0f} s "
                    f"deadline (IBKR_FLEX_DEADLINE_SECONDS). Try again later.",
                    code,
                )
            wait = min(wait, remaining)
            log.info(
                "Flex statement not ready (%s), waiting %.0f s, %.0f s elapsed",
                code, wait, self._elapsed(),
            )
            self._sleep(wait)

    def _poll_url(self, returned: str) -> str:
        """The `<Url>` from SendRequest if usable, else the configured GetStatement URL."""
        url = returned.strip()
        if not url:
            return self.get_url
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            log.warning("Flex response Url is not an http(s) URL; using %s",
                        redacted_url(self.get_url))
            return self.get_url
        if not token_may_go_to(url, self._configured_origins):
            log.warning(
                "Flex response Url names %s://%s, neither https on *.%s nor a configured "
                "Flex host: the token is not sent there; using %s",
                parsed.scheme, parsed.host, IBKR_DOMAIN, redacted_url(self.get_url),
            )
            return self.get_url
        return url

    # ----------------------------------------------------------------- HTTP

    def _get(
        self,
        http: httpx.Client,
        url: str,
        q: str,
        *,
        step: str,
        deadline: float,
        fallback_on_connect: bool = False,
    ) -> httpx.Response:
        """One logical GET with bounded, always-sleeping retries on 5xx/429/network errors."""
        where = redacted_url(url)
        params = {"t": self._token, "q": q, "v": "3"}
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            retry_after: float | None = None
            try:
                response = self._fetch(http, url, params, step)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if fallback_on_connect:
                    raise _HostUnreachable(self._describe(exc)) from None
                problem = f"cannot connect to {where} ({self._describe(exc)})"
            except httpx.TimeoutException as exc:
                problem = (
                    f"no answer from {where} within {self.http_timeout:g} s "
                    f"({type(exc).__name__})"
                )
            except httpx.UnsupportedProtocol:
                raise FlexConnectionError(
                    f"IBKR Flex {step}: {where} is not an http(s) URL "
                    f"(check IBKR_FLEX_SEND_URL / IBKR_FLEX_GET_URL)"
                ) from None
            except httpx.TransportError as exc:
                problem = f"connection to {where} failed ({self._describe(exc)})"
            else:
                status = response.status_code
                log.debug("%s attempt %d: HTTP %d from %s", step, attempt, status, where)
                if 200 <= status < 300:
                    return response
                reason = response.reason_phrase
                if status != 429 and status < 500:
                    raise FlexHTTPError(self._http_refusal(step, where, response), status)
                problem = f"HTTP {status} {reason} from {where}".rstrip()
                retry_after = _retry_after_seconds(response.headers.get("Retry-After"))

            error: FlexClientError
            if status is None:
                error = FlexConnectionError(
                    f"IBKR Flex {step}: {problem}; gave up after {_attempts(attempt)} "
                    f"(network or IBKR outage?); try later"
                )
            else:
                error = FlexHTTPError(
                    f"IBKR Flex service unavailable at {step}: {problem}; gave up after "
                    f"{attempt} attempts; try later",
                    status,
                )
            if attempt > self.max_http_retries:
                raise error
            wait = min(self.poll_backoff_start * 2 ** (attempt - 1), self.poll_backoff_cap)
            if retry_after is not None:
                wait = min(max(retry_after, 1.0), _RETRY_AFTER_CAP)
            self._wait(
                wait, deadline, give_up=error,
                why=f"{step}: {problem} (attempt {attempt} of {self.max_http_retries + 1})",
                level=logging.WARNING,
            )

    def _fetch(self, http: httpx.Client, url: str, params: dict[str, str],
               step: str) -> httpx.Response:
        """GET, reading the (decompressed) body in chunks up to the cap."""
        request = http.build_request("GET", url, params=params)
        response = http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes(1 << 16):
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise FlexResponseTooLargeError(
                        f"IBKR Flex {step}: the answer from {redacted_url(url)} exceeds "
                        f"{self.max_response_bytes // (1 << 20)} MiB once decompressed "
                        "(a runaway or hostile body); nothing was landed")
                chunks.append(chunk)
            # The body, as read() would have stored it (so .content and .text work).
            response._content = b"".join(chunks)
        finally:
            response.close()
        return response

    def _http_refusal(self, step: str, where: str, response: httpx.Response) -> str:
        status = response.status_code
        setting = "IBKR_FLEX_SEND_URL" if step == SEND else "IBKR_FLEX_GET_URL"
        text = f"IBKR Flex {step} answered HTTP {status} {response.reason_phrase} from {where}"
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            target = redacted_url(location) if location else "(no Location)"
            return (
                f"{text}, redirecting to {target}; the endpoint may have moved: check {setting}"
            )
        if status in (401, 403):
            return (
                f"{text}; IBKR refused the request (IP block or rate-limit penalty?); "
                f"check {setting} and try later"
            )
        return f"{text}; the endpoint may have moved: check {setting}"

    # ----------------------------------------------------------------- helpers

    def _wait(
        self,
        seconds: float,
        deadline: float,
        *,
        give_up: Exception,
        why: str = "",
        level: int = logging.INFO,
    ) -> None:
        """Sleep `seconds` (> 0), or raise `give_up` when that would pass the deadline."""
        if self._clock() + seconds > deadline:
            raise give_up
        if why:
            log.log(level, "%s, waiting %.0f s, %.0f s elapsed", why, seconds, self._elapsed())
        self._sleep(seconds)

    def _elapsed(self) -> float:
        return self._clock() - self._started

    def _describe(self, exc: Exception) -> str:
        detail = clean_text(str(exc)) if str(exc) else ""
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or HTTP-date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

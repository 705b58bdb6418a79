"""IBKR Flex Web Service client: SendRequest, then poll GetStatement
(docs/upstream.md#ibkr-flex-web-service).

Our own httpx client rather than `ibflex.client`: that one re-sends HTTP errors in a
tight loop, gives up after ~25 s, never retries 1001 and rejects envelopes whose
timestamp zone is not EST/EDT (docs/upstream.md#flex-envelope). Policy here
(docs/upstream.md#flex-retry-policy):

* step 1 (SendRequest) retries transient codes a few times, 1018 after >= throttle;
* step 2 (GetStatement) polls 1019/1009/1001/1004-1008/1021 with capped exponential
  backoff until the deadline, backs off >= throttle on 1018, restarts once on 1017;
* everything else fails fast with a message that says what to do;
* HTTP 5xx/429/timeouts/connection errors: bounded retries, each one after a sleep.

The token travels in the query string, so no URL with its query ever reaches a
message, and httpx's own request log lines are scrubbed (flexsync.core.logs).
What the answers mean: flex_errors (codes, errors) and flex_envelope (bodies); where the
token may go: flex_urls; the GETs with their retries: flex_http.
"""

from __future__ import annotations

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
from flexsync.extract.flex_envelope import read_body
from flexsync.extract.flex_errors import (
    HINTS,
    POLL_CODES,
    REFERENCE_INVALID,
    THROTTLED,
    FlexResponseError,
    FlexThrottledError,
    FlexUnexpectedBodyError,
    StatementGenerationTimeout,
    fatal_error,
)
from flexsync.extract.flex_http import (
    GET,
    MAX_STATEMENT_BYTES,
    SEND,
    FlexTransport,
    HostUnreachable,
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


class FlexClient(FlexTransport):
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
            except HostUnreachable as exc:
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
            except HostUnreachable as exc:
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

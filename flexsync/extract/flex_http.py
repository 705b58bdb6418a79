"""GETs against the Flex Web Service: bounded, always-sleeping retries on 5xx, 429 and
network errors within the run's deadline, a cap on the (decompressed) answer, and
messages that name the host but never the query string (the token travels there).
FlexClient builds on this with the SendRequest / GetStatement protocol."""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import httpx

from flexsync.core.http_body import send_capped
from flexsync.extract.flex_envelope import clean_text
from flexsync.extract.flex_errors import (
    FlexClientError,
    FlexConnectionError,
    FlexHTTPError,
    FlexResponseTooLargeError,
)
from flexsync.extract.flex_urls import redacted_url

# The Flex download logs under one name (what operators and tests filter on).
log = logging.getLogger("flexsync.extract.flex_client")

SEND: Final = "SendRequest"
GET: Final = "GetStatement"
# The largest answer read, counted after decompression: a 10-year statement is ~110 MB;
# anything past this could not be landed in the pod's 256 MiB anyway, and a gzip bomb
# (2 MiB on the wire, GBs inflated) stops here instead of at the OOM killer.
MAX_STATEMENT_BYTES: Final = 160 * 1024 * 1024
_RETRY_AFTER_CAP: Final = 120.0  # never let a server park the nightly job for long


class HostUnreachable(Exception):
    """A host failed to connect; the client switches to its fallback URL."""


class FlexTransport:
    """The HTTP half of FlexClient, which sets this state in its constructor."""

    _token: str
    http_timeout: float
    max_http_retries: int
    poll_backoff_start: float
    poll_backoff_cap: float
    max_response_bytes: int
    _sleep: Callable[[float], None]
    _clock: Callable[[], float]
    _started: float

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
                    raise HostUnreachable(self._describe(exc)) from None
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
        too_large = FlexResponseTooLargeError(
            f"IBKR Flex {step}: the answer from {redacted_url(url)} exceeds "
            f"{self.max_response_bytes // (1 << 20)} MiB once decompressed "
            "(a runaway or hostile body); nothing was landed")
        return send_capped(http, request, self.max_response_bytes, lambda: too_large)

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

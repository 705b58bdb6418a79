"""Reading Wealthfolio's answers: status, message and JSON (money as Decimal), which
failures are transient, and how to describe a transport error without a secret in it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from flexsync.core.errors import WealthfolioError

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Answer:
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


# Wealthfolio maps every core error to 400 (docs/upstream.md#errors), a locked SQLite database and
# an exhausted connection pool included; those pass, so they are retried (bounded).
_TRANSIENT_400 = re.compile(
    r"database( table)? is locked|database is busy|timed out waiting for connection",
    re.IGNORECASE)


def is_transient_400(answer: Answer) -> bool:
    return answer.status == 400 and bool(_TRANSIENT_400.search(answer.message))


class BadJson(Exception):
    """A 200 whose body is not the JSON it should be (truncated, HTML from a proxy ...)."""


def read_answer(response: httpx.Response) -> Answer:
    text = response.text
    data: Any = None
    content_type = response.headers.get("content-type", "")
    if "json" in content_type and text:
        try:
            data = json.loads(text, parse_float=Decimal)
        except RecursionError:
            # Deeper than any answer of Wealthfolio's API: hostile, not transient.
            raise WealthfolioError(
                f"Wealthfolio answered JSON nested too deeply to read ({response.status_code} "
                f"from {response.request.url.path})") from None
        except ValueError:
            if response.status_code == 200:
                raise BadJson("the answer is not valid JSON") from None
    elif response.status_code == 200 and response.request.method != "DELETE":
        raise BadJson(f"the answer is {content_type or 'untyped'}, not JSON")
    return Answer(response.status_code, response.reason_phrase, data, text, response.headers)


def required_field(data: Any, name: str, kind: type) -> Any:
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise WealthfolioError(f"Wealthfolio answer lacks {name!r} ({kind.__name__})")
    return value


def retry_after(answer: Answer) -> float | None:
    value = answer.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def describe_exc(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout ({type(exc).__name__})"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, BadJson) else text


def transport_message(base_url: str, what: str, exc: Exception, attempts: int,
                       timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return (f"Wealthfolio at {base_url} did not answer {what} within {timeout:g}s "
                f"({attempts} attempts)")
    if isinstance(exc, BadJson):
        return (f"Wealthfolio at {base_url} answered {what} with something that is not "
                f"JSON ({exc}; {attempts} attempts): is WF_BASE_URL right?")
    return (f"cannot reach Wealthfolio at {base_url} for {what}: {describe_exc(exc)} "
            f"({attempts} attempts)")

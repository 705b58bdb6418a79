"""Logging: plain text or JSON lines (for Loki), with secrets scrubbed from every record.

The scrubber (`scrub`) is the last line of defence and the only one: code never formats
a secret into a message on purpose, but a URL in an exception (the Flex token travels in
the query string) or a header httpcore prints could carry one, so every record is
rewritten before it is emitted: by the formatters, and at the HTTP libraries' own
loggers by the filters `install_log_filters` puts there (setup_logging calls it).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

_REDACTED = "********"
# The Flex token travels as ?t=... in URLs; scrub it even when we do not know the value.
_TOKEN_PARAM = re.compile(r"([?&]t=)[^&\s'\"]+")
# Wealthfolio session tokens in a Set-Cookie or Authorization header, or a login body:
# httpcore logs response headers before the client has read (and registered) the token.
_SESSION_IN_TEXT = re.compile(
    r"(wf_session=|Bearer\s+|accessToken[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._~+/=-]+")
# The loggers of the HTTP libraries: httpx logs each request URL at INFO, httpcore the
# response headers at DEBUG. Logger filters only see records made by that exact logger.
_HTTP_LOGGERS = ("httpx", "httpcore", "httpcore.connection", "httpcore.http11",
                 "httpcore.http2", "httpcore.proxy", "httpcore.socks")

_secrets: list[str] = []


def _spellings(value: str) -> list[str]:
    """The forms a secret takes once a server or an encoder has echoed it: as is, inside a
    JSON string (quotes, backslashes, control and non-ASCII characters escaped), and
    URL-encoded (a query string or a form body)."""
    forms = [value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             quote(value, safe=""), quote_plus(value)]
    return list(dict.fromkeys(f for f in forms if f))


def register_secret(value: str) -> None:
    if not value:
        return
    for form in _spellings(value):
        if form not in _secrets:
            _secrets.append(form)
    # Longest first: a secret's escaped form may contain its plain form.
    _secrets.sort(key=len, reverse=True)


def scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, _REDACTED)
    text = _TOKEN_PARAM.sub(r"\1" + _REDACTED, text)
    return _SESSION_IN_TEXT.sub(r"\1" + _REDACTED, text)


def scrub_value(value: Any) -> Any:
    """A log field with every string in it scrubbed (before it is JSON-encoded)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))


def without_userinfo(url: str) -> str:
    """A URL safe to print: any user:password@ part removed."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class _ScrubFilter(logging.Filter):
    """Rewrites a record's message at its own logger, before any handler sees it (the
    root handlers' formatters scrub too, but a library's or a test's handler would not)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to fix
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = _ScrubFilter()


def install_log_filters() -> None:
    """Scrub the HTTP libraries' records at their loggers (idempotent)."""
    for name in _HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("stage", "code", "event", "run_id", "external_id"):
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        # Each field is scrubbed before encoding: json.dumps escapes a quote, backslash,
        # tab or non-ASCII character, after which the secret no longer matches as text.
        # The encoded line is scrubbed again, for the escaped spellings.
        return scrub(json.dumps(scrub_value(payload)))


def setup_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)-7s %(message)s",
                                                "%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    install_log_filters()
    # httpx logs full request URLs (with the Flex token) at INFO: keep it quiet.
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

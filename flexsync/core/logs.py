"""Logging: plain text or JSON lines (for Loki), with secrets scrubbed from every record.

The scrubber is the last line of defence: code never formats a secret into a
message on purpose, but a URL in an exception (the Flex token travels in the
query string) could carry one, so every record is rewritten before it is emitted.
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
    return _TOKEN_PARAM.sub(r"\1" + _REDACTED, text)


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
    # httpx logs full request URLs (with the Flex token) at INFO: keep it quiet.
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""Reading a Flex Web Service answer: the statement itself, a FlexStatementResponse
envelope (a reference code, a status or an error code), or something else (HTML, CSV,
other XML), refused with a message that says what it is."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element, ParseError

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from flexsync.core.logs import scrub
from flexsync.extract.flex_errors import FlexUnexpectedBodyError

_BOM: Final = b"\xef\xbb\xbf"
_TITLE_RE: Final = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Envelope:
    """A FlexStatementResponse. The timestamp is kept as text: its zone varies (CET, ...)."""

    status: str
    reference_code: str
    url: str
    error_code: str
    error_message: str
    timestamp: str


def read_body(body: bytes, step: str) -> Envelope | None:
    """None when the body is the statement itself; the envelope when it is one.

    Decided by the XML root tag (not a substring test), after any BOM, whitespace
    or XML declaration. CSV, HTML and other XML raise a clear error.
    """
    head = body.lstrip()
    if head.startswith(_BOM):
        head = head[len(_BOM):].lstrip()
    if not head:
        raise FlexUnexpectedBodyError(f"IBKR Flex {step} answered with an empty body")
    lowered = head[:200].lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        raise FlexUnexpectedBodyError(_html_message(step, head))
    if not head.startswith(b"<"):
        first_line = head.split(b"\n", 1)[0]
        if b"," in first_line or first_line.startswith(b'"'):
            raise FlexUnexpectedBodyError(
                f"IBKR Flex {step} answered with CSV: the Flex query returns CSV; set its "
                f"format to XML in Client Portal (Flex Queries -> edit the query -> "
                f"Delivery Configuration -> Format XML)"
            )
        raise FlexUnexpectedBodyError(
            f"IBKR Flex {step} answered with a body that is not XML "
            f"({len(body)} bytes); expected FlexStatementResponse or FlexQueryResponse"
        )
    root = _root_tag(head)
    if root == "FlexQueryResponse":
        return None
    if root == "FlexStatementResponse":
        return _parse_envelope(head, step)
    if root is not None and root.lower() == "html":
        raise FlexUnexpectedBodyError(_html_message(step, head))
    what = f"XML with root <{clean_text(root)}>" if root else "malformed XML"
    raise FlexUnexpectedBodyError(
        f"IBKR Flex {step} answered with {what}; expected FlexStatementResponse or "
        f"FlexQueryResponse"
    )


def _parse_envelope(head: bytes, step: str) -> Envelope:
    try:
        root: Element = SafeET.fromstring(head, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise FlexUnexpectedBodyError(
            f"IBKR Flex {step} answered with a malformed FlexStatementResponse "
            f"({type(exc).__name__})"
        ) from None

    def child(name: str) -> str:
        for element in root:
            if _local(element.tag) == name:
                return clean_text("".join(element.itertext()).strip())
        return ""

    return Envelope(
        status=child("Status"),
        reference_code=child("ReferenceCode"),
        url=child("Url"),
        error_code=child("ErrorCode"),
        error_message=child("ErrorMessage"),
        # Kept as text, never parsed: IBKR writes "... EST", "... CET" or nothing.
        timestamp=clean_text(root.get("timestamp", "")),
    )


def _html_message(step: str, head: bytes) -> str:
    match = _TITLE_RE.search(head[:4096])
    title = ""
    if match:
        title = " ".join(match.group(1).decode("utf-8", "replace").split())[:80]
        title = f" titled {clean_text(title)!r}"
    return (
        f"IBKR Flex {step}: IBKR answered with an HTML page{title} instead of XML "
        f"(maintenance?); try later"
    )

# ----------------------------------------------------------------- helpers


def clean_text(text: str) -> str:
    """Server- or library-provided text, made safe for messages: no secret, bounded length."""
    return scrub(text)[:300]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class _Trickle(io.BytesIO):
    """Hands iterparse small chunks, so the root's start event comes before any later error."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(512)


def _root_tag(head: bytes) -> str | None:
    """The root element's name from the first start event: statements reach several MB."""
    try:
        for _event, element in SafeET.iterparse(
            _Trickle(head), events=("start",), forbid_dtd=True
        ):
            return _local(element.tag)
    except (ParseError, DefusedXmlException):
        return None
    return None

"""The landing's reader: one streaming pass of defusedxml's expat over a Flex statement.

The walker turns the markup into rows for a `RowSink` (the writer), checks the account
guard at each <FlexStatement> before its rows are buffered, and refuses hostile shapes
(huge tags, too many section kinds) before they can exhaust memory.

Speed: expat reports each tag as one raw string (no Python string per attribute); a
row tag travels on as that string (flexsync/extract/flex_markup.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from xml.sax import SAXParseException

from defusedxml import DefusedXmlException
from defusedxml.expatreader import DefusedExpatParser

from flexsync.core.errors import IBKRAccountMismatchError, InputFileError
from flexsync.extract import flex_markup
from flexsync.extract.flex_source import FlexSource

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 18  # expat holds the GIL for a whole chunk (1 MiB: no measurable change)
RESERVED_TABLES = {"extracts", "statements", "flex_validation"}
# Bounds that keep a hostile --flex-file within the pod (256 MiB) and a bounded time, far
# above real statements (~60 section kinds; tags of a few KiB). Past them the file is
# refused (exit 2) before it can exhaust memory.
MAX_SECTION_TABLES = 256  # distinct raw_ibkr tables one file may create or fill
MAX_MARKUP_BYTES = 8 << 20  # bytes between two `<`: one tag (or text) of at most 8 MiB
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


class RowSink(Protocol):
    """Where the walker puts rows (flexsync.extract.flex_writer.TableWriter)."""

    row_counter: dict[str, int]

    def add(self, table: str, statement_index: int | None, account_id: str | None,
            row_tag: str, attributes: list[str]) -> None: ...

    def add_markup(self, table: str, statement_index: int | None, account_id: str | None,
                   row_tag: str, text: str) -> None: ...


def section_table_name(tag: str) -> str:
    """`CashTransactions` -> `cash_transactions`, `FIFOPerformanceSummaryInBase` -> ..."""
    name = _CAMEL_BOUNDARY.sub("_", tag).lower()
    name = re.sub(r"[^a-z0-9_]", "_", name)
    return f"{name}_section" if name in RESERVED_TABLES else name


@dataclass
class Statement:
    index: int
    attributes: dict[str, str]
    # Section containers present, even empty ones: an absent <OpenPositions> says nothing
    # about positions, an empty one says there are none.
    sections: list[str] = field(default_factory=list)


class FlexReader(DefusedExpatParser):
    """defusedxml's expat reader (no DTD, no entities, no external references) that
    collects each piece of markup, as expat read it, for `StatementWalker.drain`.

    With no element handlers set, expat still checks every tag (well-formedness,
    duplicate attributes, undefined entities) but reports it as one raw string through
    the default handler instead of building a Python string per attribute; row
    elements travel on as that string (flexsync/extract/flex_markup.py). Character data is
    ignored (Flex carries everything in attributes). Call `walker.drain()` after each
    `feed()`.
    """

    def __init__(self, walker: StatementWalker) -> None:
        super().__init__(forbid_dtd=True)
        self.walker = walker

    def reset(self) -> None:
        super().reset()  # installs defusedxml's DTD/entity/external guards
        parser = self._parser
        parser.StartElementHandler = None
        parser.EndElementHandler = None
        # Character data (CDATA sections' included) is dropped by a C function, `len`,
        # so it costs no Python call and never reaches the default handler.
        parser.CharacterDataHandler = len
        parser.ProcessingInstructionHandler = None
        parser.CommentHandler = None
        # A C-level append per piece of markup; the walker drains the list after each
        # chunk. What arrives: tags, comments, PIs, the XML declaration, CDATA markers.
        parser.DefaultHandler = self.walker.pending.append


class StatementWalker:
    """Turns the element stream into rows; the account guard runs at each <FlexStatement>."""

    def __init__(self, source_name: str, writer: RowSink,
                 allowed_accounts: tuple[str, ...]) -> None:
        self.source_name = source_name
        self.writer = writer
        self.allowed_accounts = allowed_accounts
        self.statements: list[Statement] = []
        self.declared_count: str | None = None
        self.tags: list[str] = []  # open elements, root first
        self.attrs: list[list[str]] = []  # their attribute lists
        self.statement: Statement | None = None
        self.account_id: str | None = None
        self.section_table: str | None = None
        # Both derived (from self.statement and the open tags), kept so the row hot path
        # reads one attribute each.
        self.statement_index: int | None = None
        self.row_table: str | None = None  # the section's table while inside its rows
        self.pending: list[str] = []  # expat's default handler appends here
        self.other_elements = 0  # elements that did not take the row fast path
        self.tables: set[str] = set()  # raw_ibkr tables this file fills

    def drain(self) -> None:
        """Walk the markup expat reported since the last call: rows, containers, text."""
        add_row = self.writer.add_markup
        for text in self.pending:
            if text[0] != "<":
                continue  # the `]]>` closing a CDATA section (its text went elsewhere)
            # The hot path: a row element (an empty-element tag inside a section) with an
            # attribute (it has an '=') that splits on '"' as it is (flex_markup).
            table = self.row_table
            if (table is not None and text[-2] == "/" and "=" in text and "&#" not in text
                    and "\n" not in text and "\r" not in text and "\t" not in text
                    and len(text) <= flex_markup.MAX_FAST_TAG):
                add_row(table, self.statement_index, self.account_id,
                        text[1:text.index(" ")], text)
            else:
                self._other_markup(text)
        self.pending.clear()

    def _other_markup(self, text: str) -> None:
        """Containers, end tags, comments, and rows that need expat's reading."""
        kind = text[1]
        if kind == "/":
            self.end(self.tags[-1])
        elif kind in "!?":
            return  # a comment, a PI, the XML declaration, a CDATA section's `<![CDATA[`
        elif text.endswith("/>"):
            tag, attributes = flex_markup.parse_tag(text)
            self.start(tag, attributes)
            self.end(tag)
        else:
            tag, attributes = flex_markup.parse_tag(text[:-1] + "/>")
            self.start(tag, attributes)

    def start(self, tag: str, attributes: list[str]) -> None:
        self.other_elements += 1
        depth = len(self.tags)
        self.tags.append(tag)
        self.attrs.append(attributes)
        if depth == 0:
            if tag != "FlexQueryResponse":
                raise InputFileError(_wrong_root_message(self.source_name, tag))
        elif depth == 1 and tag == "FlexStatements":
            self.declared_count = _attribute(attributes, "count")
        elif depth == 2 and self.tags[1] == "FlexStatements" and tag == "FlexStatement":
            account = _attribute(attributes, "accountId") or ""
            if self.allowed_accounts and account not in self.allowed_accounts:
                raise IBKRAccountMismatchError(account, list(self.allowed_accounts))
            pairs = dict(zip(attributes[0::2], attributes[1::2], strict=True))
            self.statement = Statement(len(self.statements), pairs)
            self.statements.append(self.statement)
            self.statement_index = self.statement.index
            self.account_id = pairs.get("accountId")
        elif depth == 3 and self.statement is not None:
            self.section_table = self._table(tag)
            self.statement.sections.append(tag)
        self._track_rows()

    def _table(self, tag: str) -> str:
        table = section_table_name(tag)
        if table not in self.tables:
            if len(self.tables) >= MAX_SECTION_TABLES:
                raise InputFileError(
                    f"{self.source_name}: more than {MAX_SECTION_TABLES} kinds of section "
                    "(a Flex statement has a few dozen): refused as hostile; nothing landed")
            self.tables.add(table)
        return table

    def _track_rows(self) -> None:
        inside = len(self.tags) >= 4 and self.statement is not None
        self.row_table = self.section_table if inside else None

    def end(self, tag: str) -> None:
        self.tags.pop()
        attributes = self.attrs.pop()
        depth = len(self.tags)
        if depth >= 3:
            if self.statement is not None and self.section_table is not None:
                if attributes:
                    self.writer.add(self.section_table, self.statement.index, self.account_id,
                                    tag, attributes)
                if depth == 3:
                    self.section_table = None
        elif depth == 1:
            if tag != "FlexStatements" and attributes:
                # Root-level extras (a stray <AccountInformation>, <Message>): land them too.
                self.writer.add(self._table(tag), None, None, tag, attributes)
        elif depth == 2 and tag == "FlexStatement":
            self.statement = None
            self.statement_index = None
            self.account_id = None
        self._track_rows()


def _attribute(attributes: list[str], name: str) -> str | None:
    for position in range(0, len(attributes), 2):
        if attributes[position] == name:
            return attributes[position + 1]
    return None


def parse_into(source: FlexSource, writer: RowSink, allowed_accounts: tuple[str, ...],
               on_chunk: Callable[[bytes], object] | None = None,
               ) -> tuple[list[Statement], str | None, int]:
    """Stream the document into `writer`; return its statements, declared count and
    how many elements it holds. `on_chunk` sees every byte read, in order (the archive)."""
    walker = StatementWalker(source.name, writer, allowed_accounts)
    reader = FlexReader(walker)
    total = source.size()
    next_progress = time.monotonic() + 5.0
    since_markup = 0  # bytes since the last `<` (a `<` cannot occur inside a value)
    with source.open() as handle:
        try:
            while chunk := handle.read(READ_CHUNK):
                # expat holds a whole tag before reporting it: a 200 MB attribute would
                # be 200 MB (and more) of memory. Measured before expat sees the bytes.
                first = chunk.find(b"<")
                gap = since_markup + (len(chunk) if first < 0 else first)
                if gap > MAX_MARKUP_BYTES:
                    raise InputFileError(
                        f"{source.name}: {gap / (1 << 20):.0f}+ MiB without markup (a tag or "
                        f"text over {MAX_MARKUP_BYTES >> 20} MiB; a Flex tag is a few KiB): "
                        "refused as hostile; nothing landed")
                since_markup = gap if first < 0 else len(chunk) - chunk.rfind(b"<") - 1
                reader.feed(chunk)
                walker.drain()
                if on_chunk is not None:
                    on_chunk(chunk)
                if time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + 5.0
                    log.info("landing %s: %s rows so far (%.0f of %.0f MB)", source.name,
                             f"{sum(writer.row_counter.values()):,}", handle.tell() / 1e6,
                             total / 1e6)
            reader.close()
        except (SAXParseException, DefusedXmlException):
            walker.drain()  # what came before the error first: the account guard wins
            raise
        walker.drain()
    if not walker.statements:
        raise InputFileError(f"{source.name}: a FlexQueryResponse with no <FlexStatement>; "
                             "nothing landed")
    elements = walker.other_elements + sum(writer.row_counter.values())
    return walker.statements, walker.declared_count, elements


def _wrong_root_message(name: str, tag: str) -> str:
    if tag == "FlexStatementResponse":
        return (f"{name}: this is a Flex Web Service status envelope, not a statement "
                "(the download did not finish); nothing landed")
    if tag.lower() == "html":
        return f"{name}: this is an HTML page, not a Flex statement; nothing landed"
    return f"{name}: root element is <{tag}>, expected <FlexQueryResponse>; nothing landed"

"""Land Flex statements raw in DuckDB: one streaming pass, every attribute VARCHAR.

This is the E and L of ELT. Nothing here interprets a value: every section under
a FlexStatement becomes `raw_ibkr.<section_in_snake_case>`, every attributed
element in it a row, every attribute a VARCHAR column (absent -> NULL, empty ->
''), plus lineage. Typing and mapping happen in dbt.

Order of work, so that a refused file writes nothing:
1. hash the bytes (streamed) — the same bytes landed before are a no-op;
2. parse with defusedxml in one pass inside a single transaction; the account
   guard runs at each <FlexStatement> start, before its rows are buffered (the
   exact bytes are gzipped to a temporary file on a thread meanwhile);
3. record extract + statements + ibflex's verdict; the archive file takes its place;
4. commit. Any error rolls the whole batch back and deletes the temporary archive.

Speed and memory (benchmarks/README.md): expat reports each tag as one raw string
(no Python string per attribute); a row tag travels on as that string, in batches that
DuckDB's CSV reader splits on a second thread while the parse goes on
(flexsync/extract/flex_markup.py); every other tag gets expat's own attribute list and goes in
as Arrow. DuckDB's memory is capped while landing, so the peak RSS does not depend on
the file's size.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import queue
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from xml.sax import SAXParseException

import duckdb
import pyarrow as pa
from defusedxml import DefusedXmlException
from defusedxml.expatreader import DefusedExpatParser

from flexsync.core.errors import IBKRAccountMismatchError, InputFileError
from flexsync.core.warehouse import LINEAGE_COLUMNS
from flexsync.extract import flex_markup
from flexsync.extract.flex_markup import MarkupBatch
from flexsync.extract.flex_validation import validate_with_ibflex

log = logging.getLogger(__name__)

FLUSH_CELLS = 150_000  # buffered attribute values before a batch goes to DuckDB (memory bound)
MARKUP_BATCH_BYTES = 4 << 20  # row markup of one kind sent to DuckDB in one insert
FLUSH_MARKUP_BYTES = 12 << 20  # all buffered row markup: every batch goes to DuckDB
READ_CHUNK = 1 << 18  # expat holds the GIL for a whole chunk (1 MiB: no measurable change)
# DuckDB keeps up to a row group (122,880 rows) of every table in memory until the
# transaction commits; without a limit a backfill near that size peaks at ~480 MB.
# With this limit DuckDB spills to <warehouse>.tmp and the process stays under the
# pod's 256 MiB. Measured: 64 MB can fail the commit ("failed to pin block").
LANDING_MEMORY_LIMIT = "96MB"
# Arrow's default pool (mimalloc) keeps freed batches' memory; malloc returns it.
_ARROW_POOL = pa.system_memory_pool()
RESERVED_TABLES = {"extracts", "statements", "flex_validation"}
# Bounds that keep a hostile --flex-file within the pod (256 MiB) and a bounded time, far
# above real statements (the widest real row: 235 attributes; ~60 section kinds; tags of
# a few KiB). Past them the file is refused (exit 2) before it can exhaust memory.
MAX_TABLE_COLUMNS = 384  # DuckDB keeps every ALTER's table version until commit
MAX_SECTION_TABLES = 256  # distinct raw_ibkr tables one file may create or fill
MAX_MARKUP_BYTES = 8 << 20  # bytes between two `<`: one tag (or text) of at most 8 MiB
# Rows wider than this go through expat and Arrow instead of DuckDB's CSV reader, whose
# buffers grow with the column count (300 attributes ran out of the landing's memory).
CSV_MAX_ATTRIBUTES = 128
# A batch's own row-index column: never an attribute name (those cannot hold NUL).
_ROW_INDEX_KEY = "\x00_row_index"
_LINEAGE_LOWER = frozenset(name.lower() for name in LINEAGE_COLUMNS)
# The constant lineage columns as Arrow types (flexsync.core.warehouse.LINEAGE_COLUMNS).
_LINEAGE_ARROW_TYPES = {"_extract_id": pa.string(), "_file_sha256": pa.string(),
                        "_statement_index": pa.int32(), "_statement_account_id": pa.string(),
                        "_row_tag": pa.string(), "_extracted_at": pa.timestamp("us")}
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def attribute_column(name: str) -> str:
    """The column of an attribute that cannot have its own name: one named like a
    lineage column (`_row_index`), or one differing only in case from another's column
    (DuckDB names are case-insensitive: `quantity` / `QUANTITY`). Derived from the exact
    spelling, so every extract lands that spelling in the same column."""
    return f"{name}__{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def section_table_name(tag: str) -> str:
    """`CashTransactions` -> `cash_transactions`, `FIFOPerformanceSummaryInBase` -> ..."""
    name = _CAMEL_BOUNDARY.sub("_", tag).lower()
    name = re.sub(r"[^a-z0-9_]", "_", name)
    return f"{name}_section" if name in RESERVED_TABLES else name


@dataclass
class FlexSource:
    """Bytes to land: a file on disk, or a download held in memory."""

    name: str
    path: Path | None = None
    content: bytes | None = None
    query_id: str | None = None
    reference_code: str | None = None
    fetched_at: datetime | None = None

    def open(self) -> IO[bytes]:
        if self.path is not None:
            return open(self.path, "rb")
        return io.BytesIO(self.content or b"")

    def size(self) -> int:
        if self.path is not None:
            return self.path.stat().st_size
        return len(self.content or b"")


@dataclass
class LandingResult:
    source: str
    extract_id: str | None
    file_sha256: str
    already_landed: bool = False
    rows_by_table: dict[str, int] = field(default_factory=dict)
    statements: int = 0
    validation: str = ""

    @property
    def row_count(self) -> int:
        return sum(self.rows_by_table.values())


def sha256_of(source: FlexSource) -> str:
    digest = hashlib.sha256()
    with source.open() as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sniff(source: FlexSource) -> None:
    """Refuse obviously wrong bodies with a message that says what they are."""
    with source.open() as handle:
        head = handle.read(2048)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        raise InputFileError(f"{source.name}: the file is empty; nothing landed")
    lower = text[:200].lower()
    if lower.startswith(b"<!doctype html") or lower.startswith(b"<html"):
        raise InputFileError(
            f"{source.name}: this is an HTML page, not a Flex statement "
            "(IBKR maintenance or an error page); nothing landed"
        )
    if not text.startswith(b"<"):
        raise InputFileError(
            f"{source.name}: not XML (CSV?) — set the Flex query's format to XML; nothing landed"
        )


class _Group:
    """Rows of one table that share a statement, a row tag and an attribute list.

    Flex rows of a kind carry the same attributes in the same order, so a batch is
    stored as value lists per attribute list and becomes columns with one
    `zip(*rows)` — no per-row dicts.
    """

    __slots__ = ("names", "row_indexes", "values")

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.values: list[list[str]] = []
        self.row_indexes: list[int] = []


_GroupKey = tuple[str, int | None, str | None, str, tuple[str, ...]]


class _TableWriter:
    """Buffers rows per table; full batches (markup lines, or attribute lists that
    become Arrow tables) go to a background thread that inserts them into DuckDB, so
    the inserts overlap the parse (DuckDB runs without the GIL). The connection
    belongs to that thread until `close()`.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, extract_id: str, sha: str,
                 extracted_at: datetime) -> None:
        self.con = con
        self.extract_id = extract_id
        self.sha = sha
        self.extracted_at = extracted_at
        self.groups: dict[_GroupKey, _Group] = {}
        self.buffered_cells = 0
        self.markup: dict[tuple[str, int | None, str | None, str, int], MarkupBatch] = {}
        self.buffered_markup = 0
        # Markup batches go to DuckDB's CSV reader through files here (TMPDIR: the pod's
        # emptyDir); each is deleted once inserted, the folder when landing ends.
        self._spool = tempfile.TemporaryDirectory(prefix="flexsync-landing-")
        self._spooled = 0
        self.columns: dict[str, list[str]] = {}
        # table -> attribute name (exact spelling) -> its column
        self.column_of: dict[str, dict[str, str]] = {}
        self.row_counter: dict[str, int] = {}  # rows per table so far: the next row's index
        # Two batches in flight at most: memory stays bounded whatever the file size.
        self._queue: queue.Queue[_Batch | MarkupBatch | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._insert_loop, name="flex-insert",
                                        daemon=True)
        self._thread.start()

    def add(self, table: str, statement_index: int | None, account_id: str | None,
            row_tag: str, attributes: list[str]) -> None:
        """`attributes` is expat's ordered list: name, value, name, value, ..."""
        if len(attributes) > 2 * MAX_TABLE_COLUMNS:
            raise InputFileError(
                f"a <{row_tag}> element has {len(attributes) // 2:,} attributes (more than "
                f"{MAX_TABLE_COLUMNS}; real Flex rows have a few hundred at most): refused as "
                "hostile; nothing landed")
        index = self.row_counter.get(table, 0)
        self.row_counter[table] = index + 1
        names = attributes[0::2]
        key = (table, statement_index, account_id, row_tag, tuple(names))
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(names)
        group.values.append(attributes[1::2])
        group.row_indexes.append(index)
        self.buffered_cells += len(names) + len(LINEAGE_COLUMNS)
        if self.buffered_cells >= FLUSH_CELLS:
            self.flush()

    def add_markup(self, table: str, statement_index: int | None, account_id: str | None,
                   row_tag: str, text: str) -> None:
        """A row element's raw empty-element tag, which holds at least one attribute."""
        quotes = text.count('"')
        if quotes > 2 * CSV_MAX_ATTRIBUTES:
            self.add(table, statement_index, account_id, row_tag, flex_markup.parse_tag(text)[1])
            return
        index = self.row_counter.get(table, 0)
        self.row_counter[table] = index + 1
        # One batch per field count, so DuckDB's CSV reader needs no padding.
        key = (table, statement_index, account_id, row_tag, quotes)
        batch = self.markup.get(key)
        if batch is None:
            batch = self.markup[key] = MarkupBatch(table, (statement_index, account_id, row_tag),
                                                   quotes=quotes)
        batch.add(index, text)
        self.buffered_markup += len(text)
        # Few large inserts (each costs DuckDB ~10 ms to plan), and a bounded buffer.
        if batch.nbytes >= MARKUP_BATCH_BYTES:
            self._put(self.markup.pop(key))
            self.buffered_markup -= batch.nbytes
        elif self.buffered_markup >= FLUSH_MARKUP_BYTES:
            self.flush()

    def flush(self) -> None:
        batches, self.markup = self.markup, {}
        self.buffered_markup = 0
        for batch in batches.values():
            self._put(batch)
        groups, self.groups = self.groups, {}
        self.buffered_cells = 0
        for (table, statement_index, account_id, row_tag, _), group in groups.items():
            self._put(_Batch.of(table, (statement_index, account_id, row_tag), group))

    def close(self) -> None:
        """Write what is buffered and wait for the inserts; re-raise their error."""
        self.flush()
        self._stop()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the insert thread without writing more (the caller rolls back)."""
        self.groups = {}
        self.markup = {}
        self._stop()

    def _put(self, batch: _Batch | MarkupBatch) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._spool.cleanup()

    def _insert_loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
                    if isinstance(batch, MarkupBatch):
                        self._insert_markup(batch)
                    else:
                        self._insert(batch)
                except BaseException as exc:  # handed to the parsing thread
                    self._error = exc

    def _table_columns(self, table: str) -> list[str]:
        """The table's columns in order (created with the lineage columns if new)."""
        if table not in self.columns:
            self.con.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'raw_ibkr' and table_name = ? order by ordinal_position",
                [table],
            )
            existing = [row[0] for row in self.con.fetchall()]
            if not existing:
                cols = ", ".join(f'"{n}" {t}' for n, t in LINEAGE_COLUMNS.items())
                self.con.execute(f'create table if not exists raw_ibkr."{table}" ({cols})')
                existing = list(LINEAGE_COLUMNS)
            self.columns[table] = existing
        return self.columns[table]

    def _add_columns(self, table: str, names: list[str]) -> dict[str, str]:
        """Adds the columns the attributes lack; returns attribute name -> its column.

        Nothing is dropped: an attribute named like a lineage column, or differing only
        in case from an existing column, lands in its own column (`attribute_column`)."""
        columns = self._table_columns(table)
        mapping = self.column_of.setdefault(table, {})
        by_lower = {column.lower(): column for column in columns}
        for name in names:
            if name in mapping:
                continue
            lower = name.lower()
            if lower in _LINEAGE_LOWER or by_lower.get(lower, name) != name:
                column = attribute_column(name)
            else:
                column = name
            if column.lower() not in by_lower:
                if len(columns) >= MAX_TABLE_COLUMNS:
                    raise InputFileError(
                        f"raw_ibkr.{table} would need more than {MAX_TABLE_COLUMNS} columns "
                        "(real Flex sections have a few hundred attributes at most): refused "
                        "as hostile; nothing landed")
                self.con.execute(f'alter table raw_ibkr."{table}" add column "{column}" varchar')
                columns.append(column)
                by_lower[column.lower()] = column
                log.debug("raw_ibkr.%s: new column %s", table, column)
            mapping[name] = column
        return mapping

    def _lineage_values(self, lineage: tuple[int | None, str | None, str]) -> dict[str, object]:
        statement_index, account_id, row_tag = lineage
        return {"_extract_id": self.extract_id, "_file_sha256": self.sha,
                "_statement_index": statement_index, "_statement_account_id": account_id,
                "_row_tag": row_tag, "_extracted_at": self.extracted_at}

    def _insert_markup(self, batch: MarkupBatch) -> None:
        """Insert a markup batch: regular signatures in SQL, the rest parsed tag by tag."""
        self._spooled += 1
        path = Path(self._spool.name) / f"{self._spooled}.csv"
        data = batch.csv_bytes()
        path.write_bytes(data)
        try:
            source = flex_markup.read_csv_sql(str(path), batch.width, len(data))
            # Rows of a kind share one signature: try the first row's on the whole batch.
            first = flex_markup.even_fields(batch.lines[0])
            names = flex_markup.signature_names(first, batch.lineage[2])
            predicates: list[tuple[str, list[str]]] = []
            inserted = 0
            if names is not None:
                predicate, inserted = self._insert_signature(batch, source, first, names)
                predicates.append(predicate)
            if inserted < len(batch.lines):
                self._insert_leftovers(batch, source, predicates)
        finally:
            path.unlink(missing_ok=True)

    def _insert_leftovers(self, batch: MarkupBatch, source: str,
                          predicates: list[tuple[str, list[str]]]) -> None:
        """Rows the first signature did not take: other signatures, or expat per tag."""
        lines = batch.lines
        if predicates:
            where = " or ".join(sql for sql, _ in predicates)
            params = [p for _, values in predicates for p in values]
            rows = self.con.execute(f"select c0 from {source} where not coalesce({where}, false)",
                                    params).fetchall()
            wanted = {int(row[0]) for row in rows}
            lines = [line for line in lines if flex_markup.split_line(line)[0] in wanted]
        by_signature: dict[tuple[str, ...], list[str]] = {}
        for line in lines:
            by_signature.setdefault(tuple(flex_markup.even_fields(line)), []).append(line)
        parsed: dict[tuple[str, ...], _Group] = {}
        for signature, signature_lines in by_signature.items():
            names = flex_markup.signature_names(list(signature), batch.lineage[2])
            if names is not None:
                self._insert_signature(batch, source, list(signature), names)
                continue
            for line in signature_lines:
                index, text = flex_markup.split_line(line)
                _, attributes = flex_markup.parse_tag(text)
                names = attributes[0::2]
                group = parsed.get(tuple(names))
                if group is None:
                    group = parsed[tuple(names)] = _Group(names)
                group.values.append(attributes[1::2])
                group.row_indexes.append(index)
        for group in parsed.values():
            self._insert(_Batch.of(batch.table, batch.lineage, group))

    def _insert_signature(self, batch: MarkupBatch, source: str, fields: list[str],
                          names: list[str]) -> tuple[tuple[str, list[str]], int]:
        """Insert the batch's rows whose even fields are `fields` (attribute `names`);
        returns the predicate that selected them and their count."""
        column_of = self._add_columns(batch.table, names)
        # expat refused any tag with a name twice, so every attribute has its own column.
        targets = [column_of[name] for name in names]
        values = [flex_markup.value_sql(position, position in batch.entity_values)
                  for position in range(len(names))]
        lineage = self._lineage_values(batch.lineage)
        predicate, params = flex_markup.signature_predicate(fields)
        column_list = ", ".join(f'"{c}"' for c in [*lineage, "_row_index", *targets])
        select_list = ", ".join(["?"] * len(lineage) + ["cast(c0 as bigint)", *values])
        rows = self.con.execute(
            f'insert into raw_ibkr."{batch.table}" ({column_list}) '
            f"select {select_list} from {source} where {predicate}",
            [*lineage.values(), *params]).fetchall()
        return (predicate, params), int(rows[0][0])

    def _insert(self, batch: _Batch) -> None:
        columns = self._table_columns(batch.table)
        names = [name for name in batch.data.column_names if name != _ROW_INDEX_KEY]
        column_of = self._add_columns(batch.table, names)
        # Aligned to the table's column order and appended positionally through a
        # relation: a registered view, dropped inside the open transaction, would keep
        # every batch's Arrow buffers alive until commit (memory growing with the file).
        rows = batch.data.num_rows
        lineage = {name: pa.repeat(pa.scalar(value, _LINEAGE_ARROW_TYPES[name]), rows,
                                   memory_pool=_ARROW_POOL)
                   for name, value in self._lineage_values(batch.lineage).items()}
        source_of = {column_of[name].lower(): name for name in names}
        source_of["_row_index"] = _ROW_INDEX_KEY
        arrays = []
        for column in columns:
            if column in lineage:
                arrays.append(lineage[column])
            elif column.lower() in source_of:
                arrays.append(batch.data.column(source_of[column.lower()]))
            else:
                arrays.append(pa.nulls(rows, pa.string(), memory_pool=_ARROW_POOL))
        aligned = pa.table(arrays, names=columns)
        self.con.from_arrow(aligned).insert_into(f'raw_ibkr."{batch.table}"')


@dataclass
class _Batch:
    table: str
    lineage: tuple[int | None, str | None, str]  # statement index, its account, row tag
    data: pa.Table

    @classmethod
    def of(cls, table: str, lineage: tuple[int | None, str | None, str],
           group: _Group) -> _Batch:
        # Every attribute (expat refused a name twice in one tag); each spelling gets its
        # own column on insert (_TableWriter._add_columns).
        columns = list(zip(*group.values, strict=True))
        arrays: dict[str, pa.Array] = {
            name: pa.array(columns[p], pa.string(), memory_pool=_ARROW_POOL)
            for p, name in enumerate(group.names)
        }
        arrays[_ROW_INDEX_KEY] = pa.array(group.row_indexes, pa.int64(),
                                          memory_pool=_ARROW_POOL)
        return cls(table, lineage, pa.table(arrays))


@dataclass
class _Statement:
    index: int
    attributes: dict[str, str]
    # Section containers present, even empty ones: an absent <OpenPositions> says nothing
    # about positions, an empty one says there are none.
    sections: list[str] = field(default_factory=list)


class _FlexReader(DefusedExpatParser):
    """defusedxml's expat reader (no DTD, no entities, no external references) that
    collects each piece of markup, as expat read it, for `_StatementWalker.drain`.

    With no element handlers set, expat still checks every tag (well-formedness,
    duplicate attributes, undefined entities) but reports it as one raw string through
    the default handler instead of building a Python string per attribute; row
    elements travel on as that string (flexsync/extract/flex_markup.py). Character data is
    ignored (Flex carries everything in attributes). Call `walker.drain()` after each
    `feed()`.
    """

    def __init__(self, walker: _StatementWalker) -> None:
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


class _StatementWalker:
    """Turns the element stream into rows; the account guard runs at each <FlexStatement>."""

    def __init__(self, source_name: str, writer: _TableWriter,
                 allowed_accounts: tuple[str, ...]) -> None:
        self.source_name = source_name
        self.writer = writer
        self.allowed_accounts = allowed_accounts
        self.statements: list[_Statement] = []
        self.declared_count: str | None = None
        self.tags: list[str] = []  # open elements, root first
        self.attrs: list[list[str]] = []  # their attribute lists
        self.statement: _Statement | None = None
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
            self.statement = _Statement(len(self.statements), pairs)
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


def _parse_into(source: FlexSource, writer: _TableWriter, allowed_accounts: tuple[str, ...]
                ) -> tuple[list[_Statement], str | None, int]:
    """Stream the document into `writer`; return its statements, declared count and
    how many elements it holds."""
    walker = _StatementWalker(source.name, writer, allowed_accounts)
    reader = _FlexReader(walker)
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


class _ArchiveJob:
    """Gzips a source into the archive on a thread while it is being parsed (zlib
    works without the GIL). The file only takes its place on `keep()`, after every
    guard passed; `discard()` leaves no archive entry.
    """

    def __init__(self, source: FlexSource, archive_dir: Path, sha: str) -> None:
        self.target = archive_dir / sha[:2] / f"{sha}.xml.gz"
        self.error: BaseException | None = None
        self.tmp: Path | None = None
        self.thread: threading.Thread | None = None
        self.cancelled = threading.Event()
        if self.target.exists():
            return
        self.made_dirs = [d for d in (archive_dir, self.target.parent) if not d.exists()]
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.target.parent, prefix=".tmp-", suffix=".gz")
        self.tmp = Path(tmp)
        self.thread = threading.Thread(target=self._compress, args=(source, fd),
                                       name="flex-archive", daemon=True)
        self.thread.start()

    def _compress(self, source: FlexSource, fd: int) -> None:
        try:
            # Level 3: ratio ~12 on Flex XML (level 6: 16) at 40 % of level 6's CPU, which
            # the landing needs on a two-core pod.
            with os.fdopen(fd, "wb") as raw, gzip.GzipFile(
                    fileobj=raw, mode="wb", mtime=0, compresslevel=3) as gz, \
                    source.open() as src:
                while not self.cancelled.is_set() and (chunk := src.read(1 << 20)):
                    gz.write(chunk)
        except BaseException as exc:  # handed to keep()
            self.error = exc

    def keep(self) -> Path:
        if self.thread is not None:
            self.thread.join()
            if self.error is not None:
                self.discard()
                raise self.error
            assert self.tmp is not None
            os.replace(self.tmp, self.target)
            self.tmp = None
        return self.target

    def discard(self) -> None:
        self.cancelled.set()
        if self.thread is not None:
            self.thread.join()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
            for directory in reversed(self.made_dirs):
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only when empty


def _already_landed(con: duckdb.DuckDBPyConnection, sha: str) -> str | None:
    # fetchall, not fetchone: DuckDB 2.0 refuses relation calls (the inserts) while a
    # result is left unfinished on the connection.
    rows = con.execute(
        "select extract_id from raw_ibkr.extracts where file_sha256 = ? limit 1", [sha]
    ).fetchall()
    return str(rows[0][0]) if rows else None


def land_sources(con: duckdb.DuckDBPyConnection, sources: list[FlexSource],
                 allowed_accounts: tuple[str, ...], archive_dir: Path) -> list[LandingResult]:
    """Land every source in one transaction: all land, or nothing does."""
    for source in sources:
        _sniff(source)
    previous_limit = con.execute("select current_setting('memory_limit')").fetchall()[0][0]
    con.execute(f"set memory_limit = '{LANDING_MEMORY_LIMIT}'")
    try:
        return _land_all(con, sources, allowed_accounts, archive_dir)
    finally:
        con.execute(f"set memory_limit = '{previous_limit}'")


def _land_all(con: duckdb.DuckDBPyConnection, sources: list[FlexSource],
              allowed_accounts: tuple[str, ...], archive_dir: Path) -> list[LandingResult]:
    results: list[LandingResult] = []
    seen: set[str] = set()
    archives: list[tuple[_ArchiveJob, str]] = []
    con.execute("begin transaction")
    try:
        for source in sources:
            sha = sha256_of(source)
            previous = _already_landed(con, sha)
            if previous or sha in seen:
                log.info("%s: these exact bytes were landed before (extract %s): nothing to do",
                         source.name, previous or "in this run")
                results.append(LandingResult(source.name, previous, sha, already_landed=True))
                continue
            seen.add(sha)
            archives.append((_ArchiveJob(source, archive_dir, sha), sha))
            results.append(_land_one(con, source, sha, allowed_accounts, archive_dir))
        # Archive last, after every guard passed: a refused batch leaves no archive entry.
        for job, sha in archives:
            path = job.keep()
            con.execute("update raw_ibkr.extracts set archive_path = ? where file_sha256 = ?",
                        [str(path), sha])
        con.execute("commit")
    except BaseException:
        for job, _ in archives:
            job.discard()
        # A failed commit (disk full) has already ended the transaction: a second error
        # from the rollback must not replace the real one.
        with contextlib.suppress(duckdb.Error):
            con.execute("rollback")
        raise
    return results


def _land_one(con: duckdb.DuckDBPyConnection, source: FlexSource, sha: str,
              allowed_accounts: tuple[str, ...], archive_dir: Path) -> LandingResult:
    landed_at = datetime.now(UTC).replace(tzinfo=None)
    extract_id = f"{landed_at:%Y%m%dT%H%M%S}-{sha[:12]}-{uuid.uuid4().hex[:6]}"
    writer = _TableWriter(con, extract_id, sha, landed_at)
    try:
        statements, declared, elements = _parse_into(source, writer, allowed_accounts)
        # ibflex (pure Python) validates while the insert thread is still in DuckDB.
        verdict = validate_with_ibflex(source, elements)
        writer.close()
    except DefusedXmlException as exc:
        writer.abort()
        raise InputFileError(
            f"{source.name}: refused hostile XML ({type(exc).__name__}: DTDs, entities and "
            "external references are not allowed in a Flex statement); nothing landed"
        ) from None
    except SAXParseException as exc:
        writer.abort()
        where = f"{exc.getMessage()}: line {exc.getLineNumber()}, column {exc.getColumnNumber()}"
        raise InputFileError(
            f"{source.name}: not a well-formed XML document ({where}); truncated or not a Flex "
            "statement; nothing landed"
        ) from None
    except BaseException:
        writer.abort()
        raise
    for st in statements:
        attrs = st.attributes
        con.execute(
            "insert into raw_ibkr.statements (extract_id, file_sha256, statement_index, "
            "account_id, from_date, to_date, period, when_generated, attributes_json, sections) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [extract_id, sha, st.index, attrs.get("accountId"), attrs.get("fromDate"),
             attrs.get("toDate"), attrs.get("period"), attrs.get("whenGenerated"),
             json.dumps(attrs, sort_keys=True), ",".join(st.sections)],
        )
    if declared is not None and declared != str(len(statements)):
        log.warning("%s: FlexStatements count=%s but %d statements found; all landed",
                    source.name, declared, len(statements))
    con.execute(
        "insert into raw_ibkr.flex_validation values (?, ?, ?, ?, ?, ?, ?)",
        [extract_id, sha, verdict.ok, verdict.error, len(verdict.warnings),
         json.dumps(verdict.warnings), landed_at],
    )
    con.execute(
        "insert into raw_ibkr.extracts values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [extract_id, sha, source.name, source.query_id, source.reference_code,
         source.fetched_at.replace(tzinfo=None) if source.fetched_at else None, landed_at,
         source.size(), None, declared, len(statements), sum(writer.row_counter.values()),
         ",".join(sorted(writer.row_counter))],
    )
    result = LandingResult(source.name, extract_id, sha, rows_by_table=dict(writer.row_counter),
                           statements=len(statements), validation=verdict.summary())
    log.info("landed %s: %d statement(s), %s rows in %d tables; ibflex: %s", source.name,
             result.statements, f"{result.row_count:,}", len(result.rows_by_table),
             result.validation)
    return result

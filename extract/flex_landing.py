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

Speed and memory (benchmarks/README.md): rows travel as expat's attribute lists,
grouped by attribute list into Arrow batches that a second thread appends while
the parse goes on; DuckDB's memory is capped while landing, so the peak RSS does
not depend on the file's size.
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
from xml.sax.handler import feature_string_interning

import duckdb
import pyarrow as pa
from defusedxml import DefusedXmlException
from defusedxml.expatreader import DefusedExpatParser

from extract.flex_validation import validate_with_ibflex
from flexsync.errors import IBKRAccountMismatchError, InputFileError
from flexsync.warehouse import LINEAGE_COLUMNS

log = logging.getLogger(__name__)

FLUSH_CELLS = 150_000  # buffered attribute values before a batch goes to DuckDB (memory bound)
READ_CHUNK = 1 << 20
# DuckDB keeps up to a row group (122,880 rows) of every table in memory until the
# transaction commits; without a limit a backfill near that size peaks at ~480 MB.
# With this limit DuckDB spills to <warehouse>.tmp and the process stays under the
# pod's 256 MiB. Measured: 64 MB can fail the commit ("failed to pin block").
LANDING_MEMORY_LIMIT = "96MB"
# Arrow's default pool (mimalloc) keeps freed batches' memory; malloc returns it.
_ARROW_POOL = pa.system_memory_pool()
RESERVED_TABLES = {"extracts", "statements", "flex_validation"}
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


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
    """Buffers rows per table; full batches become Arrow tables that a background
    thread inserts into DuckDB, so the inserts overlap the parse (DuckDB runs
    without the GIL). The connection belongs to that thread until `close()`.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, extract_id: str, sha: str,
                 extracted_at: datetime) -> None:
        self.con = con
        self.extract_id = extract_id
        self.sha = sha
        self.extracted_at = extracted_at
        self.groups: dict[_GroupKey, _Group] = {}
        self.buffered_cells = 0
        self.columns: dict[str, list[str]] = {}
        self.rows_by_table: dict[str, int] = {}
        self.row_counter: dict[str, int] = {}
        # Two batches in flight at most: memory stays bounded whatever the file size.
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._insert_loop, name="flex-insert",
                                        daemon=True)
        self._thread.start()

    def add(self, table: str, statement_index: int | None, account_id: str | None,
            row_tag: str, attributes: list[str]) -> None:
        """`attributes` is expat's ordered list: name, value, name, value, ..."""
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

    def flush(self) -> None:
        groups, self.groups = self.groups, {}
        self.buffered_cells = 0
        for (table, statement_index, account_id, row_tag, _), group in groups.items():
            self._put(_Batch.of(table, (statement_index, account_id, row_tag), group))
            self.rows_by_table[table] = self.rows_by_table.get(table, 0) + len(group.row_indexes)

    def close(self) -> None:
        """Write what is buffered and wait for the inserts; re-raise their error."""
        self.flush()
        self._stop()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the insert thread without writing more (the caller rolls back)."""
        self.groups = {}
        self._stop()

    def _put(self, batch: _Batch) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _insert_loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:
                try:
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

    def _insert(self, batch: _Batch) -> None:
        columns = self._table_columns(batch.table)
        known = {name.lower() for name in columns}
        for name in batch.data.column_names:
            if name.lower() not in known:
                self.con.execute(
                    f'alter table raw_ibkr."{batch.table}" add column "{name}" varchar')
                columns.append(name)
                known.add(name.lower())
                log.debug("raw_ibkr.%s: new column %s", batch.table, name)
        # Aligned to the table's column order and appended positionally through a
        # relation: a registered view, dropped inside the open transaction, would keep
        # every batch's Arrow buffers alive until commit (memory growing with the file).
        rows = batch.data.num_rows
        statement_index, account_id, row_tag = batch.lineage
        constants: dict[str, pa.Scalar] = {
            "_extract_id": pa.scalar(self.extract_id, pa.string()),
            "_file_sha256": pa.scalar(self.sha, pa.string()),
            "_statement_index": pa.scalar(statement_index, pa.int32()),
            "_statement_account_id": pa.scalar(account_id, pa.string()),
            "_row_tag": pa.scalar(row_tag, pa.string()),
            "_extracted_at": pa.scalar(self.extracted_at, pa.timestamp("us")),
        }
        lineage = {name: pa.repeat(value, rows, memory_pool=_ARROW_POOL)
                   for name, value in constants.items()}
        by_lower = {name.lower(): name for name in batch.data.column_names}
        arrays = []
        for column in columns:
            if column in lineage:
                arrays.append(lineage[column])
            elif column.lower() in by_lower:
                arrays.append(batch.data.column(by_lower[column.lower()]))
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
        # DuckDB column names are case-insensitive: the first spelling of a name wins.
        positions: dict[str, int] = {}
        for position, name in enumerate(group.names):
            positions.setdefault(name.lower(), position)
        columns = list(zip(*group.values, strict=True))
        arrays: dict[str, pa.Array] = {
            group.names[p]: pa.array(columns[p], pa.string(), memory_pool=_ARROW_POOL)
            for p in positions.values()
        }
        arrays["_row_index"] = pa.array(group.row_indexes, pa.int64(), memory_pool=_ARROW_POOL)
        return cls(table, lineage, pa.table(arrays))


@dataclass
class _Statement:
    index: int
    attributes: dict[str, str]
    # Section containers present, even empty ones: an absent <OpenPositions> says nothing
    # about positions, an empty one says there are none.
    sections: list[str] = field(default_factory=list)


class _FlexReader(DefusedExpatParser):
    """defusedxml's expat reader (no DTD, no entities, no external references) with
    the element callbacks wired straight to `_StatementWalker`.

    The SAX layer would wrap every element's attributes in an AttributesImpl and
    ElementTree's pure-Python builder (what defusedxml's iterparse uses) copies
    each attribute in a Python loop; expat's ordered attribute list is handed on
    as it is. Character data is ignored (Flex carries everything in attributes).
    """

    def __init__(self, walker: _StatementWalker) -> None:
        super().__init__(forbid_dtd=True)
        self.setFeature(feature_string_interning, True)  # one str per attribute name
        self.walker = walker

    def reset(self) -> None:
        super().reset()  # installs defusedxml's DTD/entity/external guards
        parser = self._parser
        parser.ordered_attributes = True
        parser.StartElementHandler = self.walker.start
        parser.EndElementHandler = self.walker.end
        parser.CharacterDataHandler = None
        parser.ProcessingInstructionHandler = None


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

    def start(self, tag: str, attributes: list[str]) -> None:
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
            self.account_id = pairs.get("accountId")
        elif depth == 3 and self.statement is not None:
            self.section_table = section_table_name(tag)
            self.statement.sections.append(tag)

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
                self.writer.add(section_table_name(tag), None, None, tag, attributes)
        elif depth == 2 and tag == "FlexStatement":
            self.statement = None
            self.account_id = None


def _attribute(attributes: list[str], name: str) -> str | None:
    for position in range(0, len(attributes), 2):
        if attributes[position] == name:
            return attributes[position + 1]
    return None


def _parse_into(source: FlexSource, writer: _TableWriter,
                allowed_accounts: tuple[str, ...]) -> tuple[list[_Statement], str | None]:
    """Stream the document into `writer`; return its statements and declared count."""
    walker = _StatementWalker(source.name, writer, allowed_accounts)
    reader = _FlexReader(walker)
    total = source.size()
    next_progress = time.monotonic() + 5.0
    with source.open() as handle:
        while chunk := handle.read(READ_CHUNK):
            reader.feed(chunk)
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + 5.0
                log.info("landing %s: %s rows so far (%.0f of %.0f MB)", source.name,
                         f"{sum(writer.row_counter.values()):,}", handle.tell() / 1e6,
                         total / 1e6)
        reader.close()
    if not walker.statements:
        raise InputFileError(f"{source.name}: a FlexQueryResponse with no <FlexStatement>; "
                             "nothing landed")
    return walker.statements, walker.declared_count


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
            # Level 6 (zlib's default): ~95 % of level 9's ratio on Flex XML at ~60 % of the time.
            with os.fdopen(fd, "wb") as raw, gzip.GzipFile(
                    fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz, \
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
        statements, declared = _parse_into(source, writer, allowed_accounts)
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
    verdict = validate_with_ibflex(source)
    con.execute(
        "insert into raw_ibkr.flex_validation values (?, ?, ?, ?, ?, ?, ?)",
        [extract_id, sha, verdict.ok, verdict.error, len(verdict.warnings),
         json.dumps(verdict.warnings), landed_at],
    )
    con.execute(
        "insert into raw_ibkr.extracts values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [extract_id, sha, source.name, source.query_id, source.reference_code,
         source.fetched_at.replace(tzinfo=None) if source.fetched_at else None, landed_at,
         source.size(), None, declared, len(statements), sum(writer.rows_by_table.values()),
         ",".join(sorted(writer.rows_by_table))],
    )
    result = LandingResult(source.name, extract_id, sha, rows_by_table=dict(writer.rows_by_table),
                           statements=len(statements), validation=verdict.summary())
    log.info("landed %s: %d statement(s), %s rows in %d tables; ibflex: %s", source.name,
             result.statements, f"{result.row_count:,}", len(result.rows_by_table),
             result.validation)
    return result

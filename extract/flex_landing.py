"""Land Flex statements raw in DuckDB: one streaming pass, every attribute VARCHAR.

This is the E and L of ELT. Nothing here interprets a value: every section under
a FlexStatement becomes `raw_ibkr.<section_in_snake_case>`, every attributed
element in it a row, every attribute a VARCHAR column (absent -> NULL, empty ->
''), plus lineage. Typing and mapping happen in dbt.

Order of work, so that a refused file writes nothing:
1. hash the bytes (streamed) — the same bytes landed before are a no-op;
2. parse with defusedxml in one pass inside a single transaction; the account
   guard runs at each <FlexStatement> start, before its rows are buffered;
3. archive the exact bytes (gzip), record extract + statements + ibflex's verdict;
4. commit. Any error rolls the whole batch back.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import duckdb
import pyarrow as pa
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, iterparse

from extract.flex_validation import validate_with_ibflex
from flexsync.errors import IBKRAccountMismatchError, InputFileError
from flexsync.warehouse import LINEAGE_COLUMNS

log = logging.getLogger(__name__)

FLUSH_CELLS = 150_000  # buffered attribute values before a batch goes to DuckDB (memory bound)
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


class _TableWriter:
    """Buffers rows per table and writes them to DuckDB in Arrow batches."""

    def __init__(self, con: duckdb.DuckDBPyConnection, extract_id: str, sha: str,
                 extracted_at: datetime) -> None:
        self.con = con
        self.extract_id = extract_id
        self.sha = sha
        self.extracted_at = extracted_at
        self.buffers: dict[str, list[tuple[int | None, str | None, str, int, dict[str, str]]]] = {}
        self.buffered_cells = 0
        self.columns: dict[str, set[str]] = {}
        self.rows_by_table: dict[str, int] = {}
        self.row_counter: dict[str, int] = {}

    def add(self, table: str, statement_index: int | None, account_id: str | None,
            row_tag: str, attributes: dict[str, str]) -> None:
        index = self.row_counter.get(table, 0)
        self.row_counter[table] = index + 1
        self.buffers.setdefault(table, []).append(
            (statement_index, account_id, row_tag, index, attributes)
        )
        self.buffered_cells += len(attributes) + len(LINEAGE_COLUMNS)
        if self.buffered_cells >= FLUSH_CELLS:
            self.flush()

    def _known_columns(self, table: str) -> set[str]:
        if table not in self.columns:
            self.con.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'raw_ibkr' and table_name = ?",
                [table],
            )
            existing = {row[0].lower() for row in self.con.fetchall()}
            if not existing:
                cols = ", ".join(f'"{n}" {t}' for n, t in LINEAGE_COLUMNS.items())
                self.con.execute(f'create table if not exists raw_ibkr."{table}" ({cols})')
                existing = {n.lower() for n in LINEAGE_COLUMNS}
            self.columns[table] = existing
        return self.columns[table]

    def flush(self) -> None:
        for table, rows in self.buffers.items():
            if rows:
                self._write(table, rows)
        self.buffers = {}
        self.buffered_cells = 0

    def _write(self, table: str,
               rows: list[tuple[int | None, str | None, str, int, dict[str, str]]]) -> None:
        known = self._known_columns(table)
        names: dict[str, str] = {}  # lower -> spelling as first seen
        for row in rows:
            for name in row[4]:
                names.setdefault(name.lower(), name)
        for lower, name in names.items():
            if lower not in known:
                self.con.execute(f'alter table raw_ibkr."{table}" add column "{name}" varchar')
                known.add(lower)
                log.debug("raw_ibkr.%s: new column %s", table, name)
        arrays: dict[str, pa.Array] = {
            "_extract_id": pa.array([self.extract_id] * len(rows), pa.string()),
            "_file_sha256": pa.array([self.sha] * len(rows), pa.string()),
            "_statement_index": pa.array([r[0] for r in rows], pa.int32()),
            "_statement_account_id": pa.array([r[1] for r in rows], pa.string()),
            "_row_tag": pa.array([r[2] for r in rows], pa.string()),
            "_row_index": pa.array([r[3] for r in rows], pa.int64()),
            "_extracted_at": pa.array([self.extracted_at] * len(rows), pa.timestamp("us")),
        }
        for name in names.values():
            arrays[name] = pa.array([r[4].get(name) for r in rows], pa.string())
        batch = pa.table(arrays)
        self.con.register("_flex_batch", batch)
        try:
            self.con.execute(f'insert into raw_ibkr."{table}" by name select * from _flex_batch')
        finally:
            self.con.unregister("_flex_batch")
        self.rows_by_table[table] = self.rows_by_table.get(table, 0) + len(rows)


@dataclass
class _Statement:
    index: int
    attributes: dict[str, str]


def _parse_into(source: FlexSource, writer: _TableWriter,
                allowed_accounts: tuple[str, ...]) -> tuple[list[_Statement], str | None]:
    """Stream the document into `writer`; return its statements and declared count."""
    statements: list[_Statement] = []
    declared_count: str | None = None
    stack: list[Any] = []
    statement: _Statement | None = None
    section_tag: str | None = None
    total = source.size()
    next_progress = time.monotonic() + 5.0
    with source.open() as handle:
        events: Iterator[tuple[str, Any]] = iterparse(
            handle, events=("start", "end"), forbid_dtd=True
        )
        for event, elem in events:
            if event == "start":
                depth = len(stack)
                stack.append(elem)
                tag = elem.tag
                if depth == 0:
                    if tag != "FlexQueryResponse":
                        raise InputFileError(_wrong_root_message(source.name, tag))
                elif depth == 1 and tag == "FlexStatements":
                    declared_count = elem.get("count")
                elif depth == 2 and stack[1].tag == "FlexStatements" and tag == "FlexStatement":
                    account = elem.get("accountId", "")
                    if allowed_accounts and account not in allowed_accounts:
                        raise IBKRAccountMismatchError(account, list(allowed_accounts))
                    statement = _Statement(len(statements), dict(elem.attrib))
                    statements.append(statement)
                elif depth == 3 and statement is not None:
                    section_tag = tag
                continue
            # end event
            depth = len(stack) - 1
            stack.pop()
            if depth == 1 and elem.tag != "FlexStatements" and elem.attrib:
                # Root-level extras (a stray <AccountInformation>, <Message>): land them too.
                writer.add(section_table_name(elem.tag), None, None, elem.tag, dict(elem.attrib))
            elif depth >= 3 and statement is not None and section_tag is not None:
                if elem.attrib:
                    writer.add(section_table_name(section_tag), statement.index,
                               statement.attributes.get("accountId"), elem.tag,
                               dict(elem.attrib))
                if depth == 3:
                    section_tag = None
            elif depth == 2 and elem.tag == "FlexStatement":
                statement = None
            # Drop finished elements so memory stays flat on big files.
            elem.clear()
            if stack:
                stack[-1].remove(elem)
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + 5.0
                done = handle.tell()
                log.info("landing %s: %s rows so far (%.0f of %.0f MB)", source.name,
                         f"{sum(writer.rows_by_table.values()):,}", done / 1e6, total / 1e6)
    if not statements:
        raise InputFileError(f"{source.name}: a FlexQueryResponse with no <FlexStatement>; "
                             "nothing landed")
    return statements, declared_count


def _wrong_root_message(name: str, tag: str) -> str:
    if tag == "FlexStatementResponse":
        return (f"{name}: this is a Flex Web Service status envelope, not a statement "
                "(the download did not finish); nothing landed")
    if tag.lower() == "html":
        return f"{name}: this is an HTML page, not a Flex statement; nothing landed"
    return f"{name}: root element is <{tag}>, expected <FlexQueryResponse>; nothing landed"


def _archive(source: FlexSource, archive_dir: Path, sha: str) -> Path:
    target = archive_dir / sha[:2] / f"{sha}.xml.gz"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".gz")
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb",
                                                       mtime=0) as gz, source.open() as src:
            shutil.copyfileobj(src, gz, 1 << 20)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _already_landed(con: duckdb.DuckDBPyConnection, sha: str) -> str | None:
    row = con.execute(
        "select extract_id from raw_ibkr.extracts where file_sha256 = ? limit 1", [sha]
    ).fetchone()
    return str(row[0]) if row else None


def land_sources(con: duckdb.DuckDBPyConnection, sources: list[FlexSource],
                 allowed_accounts: tuple[str, ...], archive_dir: Path) -> list[LandingResult]:
    """Land every source in one transaction: all land, or nothing does."""
    for source in sources:
        _sniff(source)
    results: list[LandingResult] = []
    seen: set[str] = set()
    pending_archives: list[tuple[FlexSource, str]] = []
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
            results.append(_land_one(con, source, sha, allowed_accounts, archive_dir))
            pending_archives.append((source, sha))
        # Archive last, after every guard passed: a refused batch leaves no archive entry.
        for source, sha in pending_archives:
            path = _archive(source, archive_dir, sha)
            con.execute("update raw_ibkr.extracts set archive_path = ? where file_sha256 = ?",
                        [str(path), sha])
        con.execute("commit")
    except BaseException:
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
    except DefusedXmlException as exc:
        raise InputFileError(
            f"{source.name}: refused hostile XML ({type(exc).__name__}: DTDs, entities and "
            "external references are not allowed in a Flex statement); nothing landed"
        ) from None
    except ParseError as exc:
        raise InputFileError(
            f"{source.name}: not a well-formed XML document ({exc}); truncated or not a Flex "
            "statement; nothing landed"
        ) from None
    writer.flush()
    for st in statements:
        attrs = st.attributes
        con.execute(
            "insert into raw_ibkr.statements values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [extract_id, sha, st.index, attrs.get("accountId"), attrs.get("fromDate"),
             attrs.get("toDate"), attrs.get("period"), attrs.get("whenGenerated"),
             json.dumps(attrs, sort_keys=True)],
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

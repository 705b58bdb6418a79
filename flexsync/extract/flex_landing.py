"""Land Flex statements raw in DuckDB: one streaming pass, every attribute VARCHAR.

This is the E and L of ELT. Nothing here interprets a value: every section under
a FlexStatement becomes `raw_ibkr.<section_in_snake_case>`, every attributed
element in it a row, every attribute a VARCHAR column (absent -> NULL, empty ->
''), plus lineage. Typing and mapping happen in dbt.

Order of work, so that a refused file writes nothing:
1. hash the bytes (streamed) — the same bytes landed before are a no-op;
2. parse with defusedxml in one pass inside a single transaction; the account
   guard runs at each <FlexStatement> start, before its rows are buffered (the
   exact bytes the parse reads are gzipped to a temporary file as it goes);
3. record extract + statements + ibflex's verdict; the archive file takes its place;
4. commit. Any error rolls the whole batch back and deletes the temporary archive.

The parts: flex_source (the bytes and a first look), flex_reader (the streaming
parse and the account guard), flex_writer (rows into DuckDB on a second thread),
flex_archive (the gzipped copy), flex_validation (ibflex's verdict). This module is the
transaction around them. Speed and memory: benchmarks/README.md; DuckDB's memory is
capped while landing, so the peak RSS does not depend on the file's size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from xml.sax import SAXParseException

import duckdb
from defusedxml import DefusedXmlException

from flexsync.core.errors import InputFileError
from flexsync.core.warehouse import duckdb_settings
from flexsync.extract.flex_archive import ArchiveJob
from flexsync.extract.flex_reader import parse_into
from flexsync.extract.flex_source import FlexSource, sha256_of, sniff
from flexsync.extract.flex_validation import validate_with_ibflex
from flexsync.extract.flex_writer import TableWriter

log = logging.getLogger(__name__)

# DuckDB keeps up to a row group (122,880 rows) of every table in memory until the
# transaction commits; without a limit a backfill near that size peaks at ~480 MB.
# With this limit DuckDB spills to <warehouse>.tmp and the process stays under the
# pod's 256 MiB. Measured: 64 MB can fail the commit ("failed to pin block").
LANDING_MEMORY_LIMIT = "96MB"
# The inserts run on one DuckDB thread beside the parse: the other core is expat's. Two
# threads made the backfill's inserts slower (1.66 s instead of 1.19 s alone; 0.25 s more
# wall time beside the parse): they contend for the table being appended to.
LANDING_THREADS = 1


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
        sniff(source)
    with duckdb_settings(con, memory_limit=LANDING_MEMORY_LIMIT, threads=LANDING_THREADS):
        return _land_all(con, sources, allowed_accounts, archive_dir)


def _land_all(con: duckdb.DuckDBPyConnection, sources: list[FlexSource],
              allowed_accounts: tuple[str, ...], archive_dir: Path) -> list[LandingResult]:
    results: list[LandingResult] = []
    seen: set[str] = set()
    archives: list[tuple[ArchiveJob, str]] = []
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
            job = ArchiveJob(archive_dir, sha)
            archives.append((job, sha))
            results.append(_land_one(con, source, sha, allowed_accounts, job))
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
              allowed_accounts: tuple[str, ...], archive: ArchiveJob) -> LandingResult:
    landed_at = datetime.now(UTC).replace(tzinfo=None)
    extract_id = f"{landed_at:%Y%m%dT%H%M%S}-{sha[:12]}-{uuid.uuid4().hex[:6]}"
    writer = TableWriter(con, extract_id, sha, landed_at)
    try:
        statements, declared, elements = parse_into(source, writer, allowed_accounts,
                                                        archive.write)
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

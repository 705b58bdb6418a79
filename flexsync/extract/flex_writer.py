"""The landing's writer: buffers the rows the reader finds, per raw_ibkr table, and
inserts them into DuckDB on a background thread while the parse goes on.

A row tag travels as its raw markup, in batches that DuckDB's CSV reader splits
(flexsync/extract/flex_markup.py); rows that need expat's reading go in as Arrow.
Each new attribute becomes a VARCHAR column; nothing is dropped (a name that collides
with another column lands in its own, `attribute_column`).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from flexsync.core.arrow_memory import system_memory_pool
from flexsync.core.errors import InputFileError
from flexsync.core.warehouse import LINEAGE_COLUMNS
from flexsync.extract import flex_markup
from flexsync.extract.flex_markup import MarkupBatch

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

FLUSH_CELLS = 150_000  # buffered attribute values before a batch goes to DuckDB (memory bound)
MARKUP_BATCH_BYTES = 4 << 20  # row markup of one kind sent to DuckDB in one insert
FLUSH_MARKUP_BYTES = 12 << 20  # all buffered row markup: every batch goes to DuckDB
# Bounds that keep a hostile --flex-file within the pod (256 MiB), far above real
# statements (the widest real row: 235 attributes). Past them the file is refused (exit 2).
MAX_TABLE_COLUMNS = 384  # DuckDB keeps every ALTER's table version until commit
# Rows wider than this go through expat and Arrow instead of DuckDB's CSV reader, whose
# buffers grow with the column count (300 attributes ran out of the landing's memory).
CSV_MAX_ATTRIBUTES = 128
# A batch's own row-index column: never an attribute name (those cannot hold NUL).
_ROW_INDEX_KEY = "\x00_row_index"
_LINEAGE_LOWER = frozenset(name.lower() for name in LINEAGE_COLUMNS)


@cache
def _arrow() -> tuple[Any, Any, dict[str, Any]]:
    """pyarrow, its pool and the lineage columns' Arrow types, imported on first use:
    only rows that need expat's reading go in as Arrow, and a process that imports the
    landing without landing a file (`flexsync transform`, `load`: flexsync.stages
    imports it at module level) must not carry pyarrow's 25-27 MiB into dbt's build."""
    import pyarrow

    pool = system_memory_pool()  # flexsync/core/arrow_memory.py says why
    # The constant lineage columns (flexsync.core.warehouse.LINEAGE_COLUMNS).
    types = {"_extract_id": pyarrow.string(), "_file_sha256": pyarrow.string(),
             "_statement_index": pyarrow.int32(), "_statement_account_id": pyarrow.string(),
             "_row_tag": pyarrow.string(), "_extracted_at": pyarrow.timestamp("us")}
    return pyarrow, pool, types


def attribute_column(name: str) -> str:
    """The column of an attribute that cannot have its own name: one named like a
    lineage column (`_row_index`), or one differing only in case from another's column
    (DuckDB names are case-insensitive: `quantity` / `QUANTITY`). Derived from the exact
    spelling, so every extract lands that spelling in the same column."""
    return f"{name}__{hashlib.sha256(name.encode()).hexdigest()[:8]}"


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


class TableWriter:
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
        self._existing: dict[str, list[str]] | None = None  # raw_ibkr's tables when landing began
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
        """The table's columns in order ([] for a table this landing has yet to create)."""
        if self._existing is None:
            # One catalog query for every raw_ibkr table (one per table cost ≈5 ms each).
            self._existing = {}
            self.con.execute(
                "select table_name, column_name from information_schema.columns "
                "where table_schema = 'raw_ibkr' order by table_name, ordinal_position")
            for name, column in self.con.fetchall():
                self._existing.setdefault(name, []).append(column)
        if table not in self.columns:
            self.columns[table] = list(self._existing.get(table, []))
        return self.columns[table]

    def _add_columns(self, table: str, names: list[str]) -> dict[str, str]:
        """Adds the columns the attributes lack; returns attribute name -> its column.

        A new table is created with the lineage columns and these in one statement (an
        ALTER per attribute cost the backfill ≈0.2 s). Nothing is dropped: an attribute
        named like a lineage column, or differing only in case from an existing column,
        lands in its own column (`attribute_column`)."""
        columns = self._table_columns(table)
        create = not columns
        if create:
            columns.extend(LINEAGE_COLUMNS)
        mapping = self.column_of.setdefault(table, {})
        by_lower = {column.lower(): column for column in columns}
        added: list[str] = []
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
                columns.append(column)
                added.append(column)
                by_lower[column.lower()] = column
                log.debug("raw_ibkr.%s: new column %s", table, column)
            mapping[name] = column
        if create:
            typed = [*(f'"{n}" {t}' for n, t in LINEAGE_COLUMNS.items()),
                     *(f'"{c}" varchar' for c in added)]
            self.con.execute(f'create table raw_ibkr."{table}" ({", ".join(typed)})')
        else:
            for column in added:
                self.con.execute(f'alter table raw_ibkr."{table}" add column "{column}" varchar')
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
        pa, pool, lineage_types = _arrow()
        rows = batch.data.num_rows
        lineage = {name: pa.repeat(pa.scalar(value, lineage_types[name]), rows,
                                   memory_pool=pool)
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
                arrays.append(pa.nulls(rows, pa.string(), memory_pool=pool))
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
        # own column on insert (TableWriter._add_columns).
        arrow, pool, _ = _arrow()
        columns = list(zip(*group.values, strict=True))
        arrays: dict[str, pa.Array] = {
            name: arrow.array(columns[p], arrow.string(), memory_pool=pool)
            for p, name in enumerate(group.names)
        }
        arrays[_ROW_INDEX_KEY] = arrow.array(group.row_indexes, arrow.int64(),
                                             memory_pool=pool)
        return cls(table, lineage, arrow.table(arrays))

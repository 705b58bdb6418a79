"""CORE_SECTION_COLUMNS is exactly what reads the raw Flex tables: every column the staging
models read exists on a fresh warehouse (a statement lacking a section or an attribute
still builds), and every listed column is read by a model (or by the account preflight).

The staging SQL is rendered with the project's own Flex macros and bound by DuckDB
against the tables `ensure_schema` creates, so a model that starts reading a new
attribute, or stops reading one, fails here in a second instead of in a nightly run.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import jinja2
import pytest

from flexsync.core.warehouse import CORE_SECTION_COLUMNS, LINEAGE_COLUMNS, ensure_schema
from flexsync.loaders.account_preflight import statement_base_currencies
from tests.helpers import REPO_ROOT

STAGING = REPO_ROOT / "models" / "staging" / "ibkr"
_SOURCE = re.compile(r"source\('ibkr', '(\w+)'\)")


def _render(path: Path) -> str:
    """The model's SQL as dbt would compile it on a first (non-incremental) build."""
    macros = (REPO_ROOT / "macros" / "flex_parsing.sql").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)  # noqa: S701 - SQL, not HTML
    template = env.from_string(macros + "\n" + path.read_text())
    return template.render(
        source=lambda _schema, table: f'raw_ibkr."{table}"',
        config=lambda **_: "",
        landed_since_last_build=lambda *_: "true",
        is_incremental=lambda: False,
    )


def _models() -> dict[str, list[str]]:
    """raw_ibkr table -> the rendered staging models that read it."""
    found: dict[str, list[str]] = {}
    for path in sorted(STAGING.glob("stg_ibkr__*.sql")):
        for table in set(_SOURCE.findall(path.read_text())):
            found.setdefault(table, []).append(_render(path))
    return found


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    ensure_schema(connection)
    return connection


def _binds(con: duckdb.DuckDBPyConnection, sql: str) -> bool:
    try:
        con.execute(f"describe {sql}")
    except duckdb.BinderException:
        return False
    return True


def test_every_staging_model_binds_on_a_fresh_warehouse(con: duckdb.DuckDBPyConnection) -> None:
    for table, models in _models().items():
        for sql in models:
            con.execute(f"describe {sql}")  # raises with the missing column's name
        assert table in CORE_SECTION_COLUMNS or table in ("extracts", "statements"), table


@pytest.mark.parametrize("table", sorted(set(CORE_SECTION_COLUMNS) - {"account_information"}))
def test_every_listed_column_is_read_by_a_staging_model(
        con: duckdb.DuckDBPyConnection, table: str) -> None:
    models = _models().get(table)
    assert models, f"no staging model reads raw_ibkr.{table}: drop it from CORE_SECTION_COLUMNS"
    unread = []
    for column in CORE_SECTION_COLUMNS[table]:
        assert column not in LINEAGE_COLUMNS
        con.execute(f'alter table raw_ibkr."{table}" rename column "{column}" to "unread__"')
        try:
            if all(_binds(con, sql) for sql in models):
                unread.append(column)
        finally:
            con.execute(f'alter table raw_ibkr."{table}" rename column "unread__" to "{column}"')
    assert not unread, f"raw_ibkr.{table}: no staging model reads {unread}"


def test_account_information_columns_are_what_the_preflight_reads(
        con: duckdb.DuckDBPyConnection) -> None:
    con.execute("insert into raw_ibkr.account_information "
                '("accountId", currency, _extracted_at) values (\'U1\', \'EUR\', now())')
    assert statement_base_currencies(con) == {"U1": "EUR"}
    for column in CORE_SECTION_COLUMNS["account_information"]:
        con.execute(f'alter table raw_ibkr.account_information rename column "{column}" '
                    'to "unread__"')
        try:
            assert statement_base_currencies(con) == {}, f"{column} is not read"
        finally:
            con.execute('alter table raw_ibkr.account_information rename column "unread__" '
                        f'to "{column}"')

"""Every landed cell is what a full XML parse reads, whatever the markup looks like.

The landing splits regular row tags on `"` in DuckDB and gives expat every other tag
(flexsync/extract/flex_markup.py). These tests compare every row, value, row tag, statement index
and row index in raw_ibkr with an independent reading by ElementTree: on the twenty real
statements, on the benchmark's synthetic one, and on generated statements whose markup
takes every odd turn XML allows (entities, character references, quotes of both kinds,
line breaks and tabs inside values, irregular spacing, nested rows, comments, CDATA
sections holding tag-like text, attribute sets that vary from row to row).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexsync.core.config import Settings
from flexsync.core.warehouse import LINEAGE_COLUMNS
from flexsync.extract.flex_reader import section_table_name
from flexsync.extract.flex_writer import attribute_column
from flexsync.stages import land_flex_files
from tests.helpers import attribute_of

Row = tuple[int | None, str, dict[str, str]]  # statement index, row tag, attributes
SYSTEM_TABLES = {"extracts", "statements", "flex_validation"}


def _postorder(element: ET.Element) -> Iterator[ET.Element]:
    for child in element:
        yield from _postorder(child)
    yield element


def _first_spelling(attrib: dict[str, str]) -> dict[str, str]:
    """Every attribute under its exact name: nothing is dropped (names differing only in
    case, or named like a lineage column, land in their own columns)."""
    return dict(attrib)


def expected_rows(xml: bytes) -> dict[str, list[Row]]:
    """What landing must produce, read by ElementTree: rows per table, in end-tag order."""
    root = ET.fromstring(xml)
    rows: dict[str, list[Row]] = defaultdict(list)
    statement_index = 0
    for child in root:
        if child.tag != "FlexStatements":
            if child.attrib:  # a root-level extra
                rows[section_table_name(child.tag)].append(
                    (None, child.tag, _first_spelling(child.attrib)))
            continue
        for statement in child:
            if statement.tag != "FlexStatement":
                continue
            for section in statement:
                table = section_table_name(section.tag)
                for element in _postorder(section):
                    if element.attrib:
                        rows[table].append(
                            (statement_index, element.tag, _first_spelling(element.attrib)))
            statement_index += 1
    return dict(rows)


def landed_rows(warehouse: Path) -> dict[str, list[Row]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_schema = 'raw_ibkr'"
        ).fetchall() if r[0] not in SYSTEM_TABLES]
        out: dict[str, list[Row]] = {}
        for table in tables:
            cursor = con.execute(f'select * from raw_ibkr."{table}" order by _row_index')
            names = [d[0] for d in cursor.description]
            records = cursor.fetchall()
            if not records:
                continue
            indexes = [r[names.index("_row_index")] for r in records]
            assert indexes == list(range(len(records))), f"{table}: row indexes not 0..n-1"
            rows: list[Row] = []
            for record in records:
                values: dict[str, Any] = dict(zip(names, record, strict=True))
                attributes = {attribute_of(k): v for k, v in values.items()
                              if k not in LINEAGE_COLUMNS and v is not None}
                rows.append((values["_statement_index"], values["_row_tag"], attributes))
            out[table] = rows
        return out
    finally:
        con.close()


def assert_lands_faithfully(xml_path: Path, data_dir: Path, accounts: tuple[str, ...]) -> None:
    land_flex_files(Settings(data_dir=data_dir, upstream_account_ids=accounts), [xml_path])
    expected = expected_rows(xml_path.read_bytes())
    landed = landed_rows(data_dir / "warehouse.duckdb")
    assert set(landed) == set(expected), xml_path.name
    for table, rows in expected.items():
        got = landed[table]
        assert len(got) == len(rows), (xml_path.name, table)
        for position, (want, have) in enumerate(zip(rows, got, strict=True)):
            assert have == want, (xml_path.name, table, position)


def _accounts(xml: bytes) -> tuple[str, ...]:
    root = ET.fromstring(xml)
    return tuple(dict.fromkeys(s.get("accountId", "") for s in root.iter("FlexStatement")))


def test_real_statements_land_cell_for_cell(shared_samples: Path, tmp_path: Path) -> None:
    for path in sorted(shared_samples.glob("*.xml")):
        assert_lands_faithfully(path, tmp_path / path.stem, _accounts(path.read_bytes()))


def test_names_differing_in_case_or_like_lineage_all_land(tmp_path: Path) -> None:
    """`quantity` / `QUANTITY` and an attribute named `_row_index`: every value lands, each
    spelling in its own column (found by its name on the next extract too)."""
    rows = ('<Trade accountId="U1234567" tradeID="1" quantity="1" QUANTITY="2" '
            'Quantity="3" _row_index="77" _EXTRACT_ID="x" />\n')
    for day in (1, 2):
        path = tmp_path / f"case{day}.xml"
        path.write_text(
            '<FlexQueryResponse><FlexStatements count="1"><FlexStatement accountId="U1234567" '
            f'toDate="2026-11-2{day}"><Trades>{rows}</Trades></FlexStatement></FlexStatements>'
            "</FlexQueryResponse>")
        assert_lands_faithfully(path, tmp_path / f"data{day}", ("U1234567",))
    data_dir = tmp_path / "data1"
    land_flex_files(Settings(data_dir=data_dir, upstream_account_ids=("U1234567",)),
                    [tmp_path / "case2.xml"])
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True)
    try:
        got = con.execute(
            f'select quantity, "{attribute_column("QUANTITY")}", '
            f'"{attribute_column("Quantity")}", "{attribute_column("_row_index")}" '
            "from raw_ibkr.trades order by _extract_id").fetchall()
    finally:
        con.close()
    assert got == [("1", "2", "3", "77"), ("1", "2", "3", "77")]


def test_synthetic_statement_lands_cell_for_cell(tmp_path: Path) -> None:
    from benchmarks.generate_flex import main as generate

    path = tmp_path / "active.xml"
    assert generate([str(path), "--profile", "active"]) == 0
    assert_lands_faithfully(path, tmp_path / "data", ("U1234567",))


# --- generated markup --------------------------------------------------------------------

# Text that takes each way through the landing: plain, entities, character references,
# quotes, whitespace XML normalises, non-ASCII, tag-like text.
_PIECES = ["", "x", "42.5", "S&P 500", "A<B>C", 'say "hi"', "it's", "tab\there", "new\nline",
           "cr\rlf", "é", "中文", "🙂", " lead", "trail ", "]]>", "&amp;", "/>", '"/>', "=",
           "\u00a0", "\u0085"]
_NAMES = ["accountId", "tradeID", "description", "symbol", "x", "a.b", "a-b", "_u", "Ünï",
          "ACCOUNTID", "z9"]


@st.composite
def _value_markup(draw: st.DrawFn) -> tuple[str, str]:
    """A value and one way of writing it inside quotes of the drawn kind."""
    value = "".join(draw(st.lists(st.sampled_from(_PIECES), max_size=4)))
    quote = draw(st.sampled_from(['"', '"', "'"]))
    out = []
    for ch in value:
        style = draw(st.integers(0, 9))
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == quote:
            out.append("&quot;" if quote == '"' else "&apos;")
        elif ch in "\t\n\r" and style < 5:
            out.append(f"&#{ord(ch)};")  # a reference keeps the character itself
        elif style == 0 and ch.isprintable():
            out.append(f"&#x{ord(ch):x};")
        elif ch == ">" and style == 1:
            out.append("&gt;")
        else:
            out.append(ch)
    return quote, "".join(out)


@st.composite
def _tag(draw: st.DrawFn, name: str, depth: int) -> str:
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=0, max_size=5, unique=True))
    parts = []
    for attribute in names:
        quote, text = draw(_value_markup())
        space = draw(st.sampled_from([" ", " ", " ", "  ", "\n", "\t", " \r\n "]))
        equals = draw(st.sampled_from(["=", "=", " = "]))
        parts.append(f"{space}{attribute}{equals}{quote}{text}{quote}")
    close = draw(st.sampled_from(["/>", " />", "/>", "></" + name + ">", "> </" + name + ">"]))
    if depth < 6 and draw(st.integers(0, 7)) == 0:  # a row with rows inside
        inner = "".join(draw(st.lists(_tag("Lot", depth + 1), max_size=2)))
        close = f">{inner}</{name}>"
    return f"<{name}{''.join(parts)}{close}"


@st.composite
def _statement_document(draw: st.DrawFn) -> bytes:
    between = st.sampled_from(["\n", "", "  ", "<!-- <Trade tradeID=\"fake\"/> -->",
                               "<![CDATA[<Trade tradeID=\"fake\"/>]]>", "<?pi x?>", "text"])
    sections = []
    for section in draw(st.lists(st.sampled_from(["Trades", "CashTransactions",
                                                  "OpenPositions", "NewSection"]),
                                 min_size=1, max_size=3)):
        row_tag = {"Trades": "Trade", "CashTransactions": "CashTransaction",
                   "OpenPositions": "OpenPosition"}.get(section, "Thing")
        rows = draw(st.lists(st.tuples(st.sampled_from([row_tag, row_tag, "Order"]), between),
                             max_size=8))
        body = "".join(draw(_tag(tag, 4)) + gap for tag, gap in rows)
        sections.append(f"<{section}>{body}</{section}>\n")
    statement = ('<FlexStatement accountId="U1234567" fromDate="2025-01-01" '
                 'toDate="2025-01-31">\n' + "".join(sections) + "</FlexStatement>")
    header = draw(st.sampled_from(["", '<?xml version="1.0" encoding="UTF-8"?>\n']))
    doc = (f'{header}<FlexQueryResponse queryName="q" type="AF">\n<FlexStatements count="1">\n'
           f"{statement}\n</FlexStatements>\n</FlexQueryResponse>\n")
    return doc.encode()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(doc=_statement_document())
def test_generated_markup_lands_cell_for_cell(doc: bytes, tmp_path_factory:
                                              pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("generated")
    path = base / "statement.xml"
    path.write_bytes(doc)
    assert_lands_faithfully(path, base / "data", ("U1234567",))


def test_an_entity_in_a_regular_row_is_decoded(tmp_path: Path) -> None:
    """The common case of a reference in a real file: `S&amp;P` in a description."""
    doc = (b'<FlexQueryResponse><FlexStatements count="1"><FlexStatement accountId="U1">'
           b'<Trades>' + b"".join(
               b'<Trade tradeID="%d" description="%s" />\n' % (i, escape(d).encode())
               for i, d in enumerate(["S&P 500", "A<B", "plain", "x > y", "&amp;lt;"]))
           + b"</Trades></FlexStatement></FlexStatements></FlexQueryResponse>")
    path = tmp_path / "s.xml"
    path.write_bytes(doc)
    land_flex_files(Settings(data_dir=tmp_path / "d", upstream_account_ids=("U1",)), [path])
    con = duckdb.connect(str(tmp_path / "d" / "warehouse.duckdb"), read_only=True)
    got = con.execute('select description from raw_ibkr.trades order by _row_index').fetchall()
    con.close()
    assert [g[0] for g in got] == ["S&P 500", "A<B", "plain", "x > y", "&amp;lt;"]


def test_a_tag_longer_than_the_fast_path_takes_lands_whole(tmp_path: Path) -> None:
    long_value = "x" * (2 << 20)  # past flex_markup.MAX_FAST_TAG: expat's reading
    doc = ('<FlexQueryResponse><FlexStatements count="1"><FlexStatement accountId="U1">'
           f'<Trades><Trade tradeID="1" description="{long_value}" />\n'
           '<Trade tradeID="2" description="short" />\n'
           "</Trades></FlexStatement></FlexStatements></FlexQueryResponse>").encode()
    path = tmp_path / "long.xml"
    path.write_bytes(doc)
    assert_lands_faithfully(path, tmp_path / "d", ("U1",))


def test_the_spool_folder_is_removed_whether_landing_succeeds_or_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool_root = tmp_path / "tmp"
    spool_root.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool_root))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    rows = "".join(f'<Trade tradeID="{i}" symbol="VOD" />\n' for i in range(2000))
    good = ('<FlexQueryResponse><FlexStatements count="1"><FlexStatement accountId="U1">'
            f"<Trades>{rows}</Trades></FlexStatement></FlexStatements></FlexQueryResponse>")
    (tmp_path / "good.xml").write_text(good)
    (tmp_path / "bad.xml").write_text(good[: len(good) // 2])  # truncated mid-rows
    settings_ = Settings(data_dir=tmp_path / "d", upstream_account_ids=("U1",))
    land_flex_files(settings_, [tmp_path / "good.xml"])
    assert list(spool_root.iterdir()) == []
    from flexsync.core.errors import InputFileError

    with pytest.raises(InputFileError):
        land_flex_files(settings_, [tmp_path / "bad.xml"])
    assert list(spool_root.iterdir()) == []

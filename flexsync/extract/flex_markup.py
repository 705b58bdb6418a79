"""Flex row elements as expat reported them (raw markup) -> DuckDB rows.

Why this exists: building a Python string for every attribute value (7 M of them in a
110 MB statement) was the landing's floor. Here expat still tokenises and checks the
whole document (defusedxml's guards included), but a row element such as

    <Trade accountId="U1" tradeID="42" description="AT&amp;T" />

reaches us as that one string. Rows of a kind are written as lines `<row index>"<markup>`
to a spool file that DuckDB's CSV reader splits on `"` (no quoting): odd fields are the
values, even fields the ` name=` parts. A batch's rows whose even fields are exactly one
regular signature (`<Tag name=`, ` name=` …, ` />`) are inserted with one SQL statement,
without the GIL; the five predefined entities (`S&amp;P 500`) are decoded in SQL, in the
columns where the batch has one.

Anything else gets expat's own reading of that one tag (`parse_tag`), so the values are
exactly what a full parse gives: tags with character references (`&#233;`), tabs or line
breaks (XML normalises them inside values), single-quoted or oddly spaced attributes,
non-ASCII names, very long tags.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from dataclasses import dataclass, field

MAX_FAST_TAG = 1 << 16  # longer tags take the full parse (DuckDB's CSV line limit)
# DuckDB's CSV buffer, at most the batch's size: 4 MiB buffers on a nightly file's small
# batches stayed in the process' RSS through the dbt build (+2-5 MiB on the nightly
# peak); 256 KiB buffers made the backfill 2x slower.
CSV_BUFFER_BYTES = 4 << 20
_NAME = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_FIRST_FIELD = re.compile(rf"<({_NAME}) ({_NAME})=")
_MIDDLE_FIELD = re.compile(rf" ({_NAME})=")
_LAST_FIELDS = frozenset({"/>", " />"})


def parse_tag(text: str) -> tuple[str, list[str]]:
    """expat's reading of one empty-element tag: its name and ordered attributes.

    The document it came from already passed defusedxml's parser, so the tag holds no
    entity but the predefined ones and character references.
    """
    found: list[tuple[str, list[str]]] = []
    parser = xml.parsers.expat.ParserCreate()
    parser.ordered_attributes = True
    parser.StartElementHandler = lambda name, attributes: found.append((name, attributes))
    parser.Parse(text, True)
    return found[0]


def signature_names(fields: list[str], row_tag: str) -> list[str] | None:
    """Attribute names of a regular tag from its even `"`-fields, else None."""
    if len(fields) < 2 or fields[-1] not in _LAST_FIELDS:
        return None
    first = _FIRST_FIELD.fullmatch(fields[0])
    if first is None or first.group(1) != row_tag:
        return None
    names = [first.group(2)]
    for middle in fields[1:-1]:
        match = _MIDDLE_FIELD.fullmatch(middle)
        if match is None:
            return None
        names.append(match.group(1))
    return names


@dataclass
class MarkupBatch:
    """Rows of one table, statement and row tag, still as markup lines."""

    table: str
    lineage: tuple[int | None, str | None, str]  # statement index, its account, row tag
    lines: list[str] = field(default_factory=list)
    quotes: int = 0  # `"` per tag: the same in every line of a batch
    nbytes: int = 0
    entity_values: set[int] = field(default_factory=set)  # value positions holding an `&`

    def add(self, index: int, text: str) -> None:
        self.lines.append(f'{index}"{text}')
        self.nbytes += len(text)
        if "&" in text:
            values = text.split('"')[1::2]
            self.entity_values.update(k for k, value in enumerate(values) if "&" in value)

    @property
    def width(self) -> int:
        """CSV columns: the row index, then every `"`-field of the tag."""
        return self.quotes + 2

    def csv_bytes(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


def split_line(line: str) -> tuple[int, str]:
    """A batch line's row index and tag."""
    index, _, text = line.partition('"')
    return int(index), text


def even_fields(line: str) -> list[str]:
    """A batch line's tag split on `"`, without its values: `<Tag a=`, ` b=`, ..., ` />`."""
    return line.partition('"')[2].split('"')[0::2]


def read_csv_sql(path: str, width: int, size: int) -> str:
    """A `read_csv` call that splits markup lines on `"` into VARCHAR columns c0..cN.

    No quote or escape character, and a null string that XML cannot contain, so an
    empty value stays ''. Every line of a batch has the same number of fields; `size`
    is the file's size in bytes.
    """
    line_limit = MAX_FAST_TAG + 64
    buffer = max(line_limit, min(CSV_BUFFER_BYTES, size + 64))
    columns = ", ".join(f"'c{k}': 'VARCHAR'" for k in range(width))
    literal = path.replace("'", "''")
    return (f"read_csv('{literal}', delim='\"', quote='', escape='', header=false, "
            f"auto_detect=false, columns={{{columns}}}, null_padding=false, "
            f"nullstr='\x01', max_line_size={line_limit}, buffer_size={buffer})")


def signature_predicate(fields: list[str]) -> tuple[str, list[str]]:
    """SQL (and its parameters) matching the rows whose even fields are exactly `fields`
    (every line of a batch has as many fields, so the column count needs no check)."""
    parts = [f"c{1 + 2 * k} = ?" for k in range(len(fields))]
    return "(" + " and ".join(parts) + ")", list(fields)


def value_sql(position: int, decode: bool) -> str:
    """The k-th attribute's value (column c{2k+2}), with predefined entities decoded."""
    column = f"c{2 + 2 * position}"
    if not decode:
        return column
    decoded = column
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "''"),
                         ("&amp;", "&")):  # &amp; last: `&amp;lt;` is the text `&lt;`
        decoded = f"replace({decoded}, '{entity}', '{char}')"
    return f"case when contains({column}, '&') then {decoded} else {column} end"

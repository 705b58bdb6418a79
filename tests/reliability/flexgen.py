"""Generated hostile Flex statements for the property tests.

`documents()` is a hypothesis strategy of `Document`s: one to three statements with
known and unknown sections, known and unknown row tags and attributes, missing
attributes, odd dates and zones, huge and tiny numbers, unicode, ids shared across
statements, cancellations, SUMMARY / ORDER / CLOSED_LOT rows. A `Document` renders to
bytes and says what landing it must produce (`expected_rows`); `outcomes()` says, per
source trade and cash row, what the marts must make of it.

Big realistic statements (disk full, the memory bound) come from the one synthetic
generator, benchmarks/generate_flex.py (`write_sized_statement`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from hypothesis import strategies as st

from flexsync.extract.flex_reader import section_table_name

ALLOWED_ACCOUNTS = ("U1234567", "U7654321")
FOREIGN_ACCOUNT = "U9999999"

# --------------------------------------------------------------------------- values

# Each field is usually plausible (GOOD_*), sometimes odd (ODD_*), rarely random text:
# mostly-sane rows reach the mapped path, where signs, types and dedup matter.
GOOD_DATES = ["2026-09-01", "2026-10-20", "2026-11-13", "2025-12-31"]
ODD_DATES = ["20260901", "2026-02-30", "0001-01-01", "9999-12-31", "", "01/09/2026",
             "not a date", "2026-09-01;09:15:02", "2026-13-01"]
GOOD_TIMES = ["09:15:02", "14:05:00", "16:00:01"]
ODD_TIMES = ["091502", "14:30:00 BST", "14:30:00 EDT", "25:61:61", "", "09:15"]
GOOD_DATETIMES = ["2026-09-01;09:15:02", "2026-11-13;20:20:00", "2026-11-13"]
ODD_DATETIMES = ["2026-09-01 09:15:02", "2026-09-01, 09:15:02", "20260901;091502",
                 "2026-09-01;14:30:00 BST", "2026-09-01T09:15:02", "2026-09-01;09:15:02 -0500",
                 "", "yesterday", "2026-03-29;01:30:00 GMT", "2026-11-13;20:20:00 AEST"]
GOOD_NUMBERS = ["10", "-5", "92.155", "-3", "0.5", "1,234.56", "-1,000", "2.60", "-0.39",
                "1000", "0.712"]
ODD_NUMBERS = ["0", "-0", "0.0000000001", "1e-300", "1E+308", "-1e30",
               "123456789012345678901234567890.123456789", " 12 ", "NaN", "Infinity",
               "-inf", "0x10", "", "abc", "٣", "1.2.3", "+7"]
GOOD_PRICES = ["92.155", "0.5", "1,234.56", "2.60", "1000", "0.712", "10"]
# Negative and huge prices must end in unmapped_transactions, never stop the build.
ODD_PRICES = ["0", "0.0000000001", "1E+308", "123456789012345678901234567890.1", " 12 ",
              "NaN", "", "abc", "1.2.3", "-0.39", "99999999999999999999.5"]
GOOD_CURRENCIES = ["GBP", "USD", "EUR", "GBX"]
# An empty currency must end in unmapped_transactions, never stop the build.
ODD_CURRENCIES = ["CHF", "JPY", "XXX", "gbp", "€", ""]
GOOD_CATEGORIES = ["STK", "ETF", "FUND"]
ODD_CATEGORIES = ["OPT", "FUT", "CASH", "BOND", "CFD", "", "WAR", "stk"]
GOOD_BUY_SELL = ["BUY", "SELL"]
ODD_BUY_SELL = ["BUY (Ca.)", "SELL (Ca.)", "", "HOLD", "buy"]
GOOD_CASH_TYPES = ["Dividends", "Withholding Tax", "Broker Interest Received",
                   "Broker Interest Paid", "Commission Adjustments", "Other Fees",
                   "Deposits & Withdrawals", "Deposits/Withdrawals",
                   "Payment In Lieu Of Dividends", "Advisor Fees", "Bond Interest Received",
                   "Bond Interest Paid"]
ODD_CASH_TYPES = ["Broker Fees", "871(m) Withholding", "Price Adjustments", "", "dividends",
                  "Unknown Thing"]
GOOD_SYMBOLS = ["VOD", "AAPL", "VUAG", "EUNL", "BRK.B", "VOD.L"]
ODD_SYMBOLS = ["RDSA", "", "7203", "ÄÖÜ", "名前", "A B", "AAPL  261218C00250000"]
GOOD_EXCHANGES = ["LSE", "LSEETF", "NASDAQ", "NYSE", "IBIS2", "AEB", "TSE"]
ODD_EXCHANGES = ["TSEJ", "SMART", "CHIXUK", "", "NOWHERE"]
TRADE_LEVELS = ["EXECUTION"] * 6 + [None, "", " EXECUTION ", "ORDER", "CLOSED_LOT"]
CASH_LEVELS = ["DETAIL", "DETAIL", "DETAIL", None, "", "SUMMARY"]
TRADE_ROW_TAGS = ["Trade"] * 12 + ["Order", "SymbolSummary", "Lot", "AssetSummary"]
# Ids come from small pools so that statements and files share them, as overlapping
# Flex windows do.
TRADE_IDS = [str(n) for n in range(7001, 7041)]
TRANSACTION_IDS = [str(n) for n in range(9001, 9041)]
CASH_IDS = [str(n) for n in range(8001, 8041)]

# XML 1.0 allows these characters; attribute values are escaped on output, so any of
# them (quotes, <, &, newlines) must survive landing exactly.
_XML_TEXT = st.characters(
    blacklist_categories=("Cs",),
    blacklist_characters=[chr(c) for c in range(0x20) if c not in (0x9, 0xA, 0xD)]
    + ["\ufffe", "\uffff"])
TEXT = st.text(_XML_TEXT, max_size=24)
NAME_START = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzÄÖÜäöüßñ"
NAME_REST = NAME_START + "0123456789_-."
XML_NAME = st.builds(lambda head, tail: head + tail, st.sampled_from(NAME_START),
                     st.text(st.sampled_from(NAME_REST), max_size=10))
UNKNOWN_SECTIONS = ["FIFOPerformanceSummaryInBase", "NewFancySection", "Order", "Select",
                    "Extracts", "Statements", "CashReport", "Transfers", "SLBActivities",
                    "CorporateActions", "Ünïcödé", "ChangeInDividendAccruals"]


def _value(good: list[str], odd: list[str]) -> st.SearchStrategy[str]:
    """Plausible 16 times in 20, odd 3 times, random text once."""
    return st.integers(0, 19).flatmap(
        lambda n: st.sampled_from(good) if n < 16 else st.sampled_from(odd) if n < 19
        else TEXT)


REQUIRED: frozenset[str] = frozenset()  # any attribute may be missing, currency included


def _currency() -> st.SearchStrategy[str]:
    return _value(GOOD_CURRENCIES, ODD_CURRENCIES)


def _maybe(attrs: dict[str, st.SearchStrategy[str | None]]
           ) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Each attribute present (with a drawn value) or missing."""

    @st.composite
    def build(draw: st.DrawFn) -> list[tuple[str, str]]:
        out = []
        for name, values in attrs.items():
            if name not in REQUIRED and draw(st.integers(0, 24)) == 0:
                continue  # a missing attribute
            value = draw(values)
            if value is not None:
                out.append((name, value))
        extras = draw(st.lists(st.tuples(XML_NAME, TEXT), max_size=2))
        taken = {n.lower() for n, _ in out}
        for name, value in extras:
            if name.lower() not in taken:  # attribute names must be unique
                taken.add(name.lower())
                out.append((name, value))
        return out

    return build()


# --------------------------------------------------------------------------- model


@dataclass
class Row:
    tag: str
    attrs: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        return next((v for n, v in self.attrs if n == name), None)


@dataclass
class Section:
    tag: str
    attrs: list[tuple[str, str]]
    rows: list[Row]


@dataclass
class Statement:
    account: str
    attrs: list[tuple[str, str]]
    sections: list[Section]


@dataclass
class Document:
    statements: list[Statement]
    root_extras: list[Row] = field(default_factory=list)
    encoding: str = "utf-8"  # utf-8 | iso-8859-1 (declared) | utf-16 (BOM)
    declaration: bool = True
    bom: bool = False

    @property
    def accounts(self) -> set[str]:
        return {s.account for s in self.statements}

    def render(self) -> bytes:
        parts = []
        if self.declaration or self.encoding != "utf-8":
            parts.append(f'<?xml version="1.0" encoding="{self.encoding.upper()}"?>\n')
        parts.append("<!-- generated -->\n<FlexQueryResponse queryName=\"gen\" type=\"AF\">\n")
        for extra in self.root_extras:
            parts.append(_element(extra) + "\n")
        parts.append(f'<FlexStatements count="{len(self.statements)}">\n')
        for statement in self.statements:
            attrs = [("accountId", statement.account), *statement.attrs]
            parts.append(f"<FlexStatement{_attributes(attrs)}>\n")
            for section in statement.sections:
                if not section.rows:
                    parts.append(_element(Row(section.tag, section.attrs)) + "\n")
                    continue
                parts.append(f"<{section.tag}{_attributes(section.attrs)}>\n")
                parts.extend(_element(row) + "\n" for row in section.rows)
                parts.append(f"</{section.tag}>\n")
            parts.append("</FlexStatement>\n")
        parts.append("</FlexStatements>\n</FlexQueryResponse>\n")
        text = "".join(parts)
        if self.encoding == "utf-16":
            return text.encode("utf-16")  # with a BOM
        body = text.encode(self.encoding, errors="xmlcharrefreplace")
        return (b"\xef\xbb\xbf" + body) if self.bom else body

    def expected_rows(self) -> dict[str, int]:
        """Rows per raw_ibkr table: every attributed element under a statement's section
        (the section element too), and attributed elements at the root."""
        counts: dict[str, int] = {}
        for statement in self.statements:
            for section in statement.sections:
                table = section_table_name(section.tag)
                rows = sum(1 for row in section.rows if row.attrs) + (1 if section.attrs
                                                                       else 0)
                if rows:
                    counts[table] = counts.get(table, 0) + rows
        for extra in self.root_extras:
            if extra.attrs:
                table = section_table_name(extra.tag)
                counts[table] = counts.get(table, 0) + 1
        return counts

    def rows_of(self, section_tag: str) -> Iterator[tuple[str, Row]]:
        for statement in self.statements:
            for section in statement.sections:
                if section.tag == section_tag:
                    for row in section.rows:
                        yield statement.account, row


def _escape(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;")
            .replace("\t", "&#9;"))


def _attributes(attrs: list[tuple[str, str]]) -> str:
    return "".join(f' {name}="{_escape(value)}"' for name, value in attrs)


def _element(row: Row) -> str:
    return f"<{row.tag}{_attributes(row.attrs)} />"


# --------------------------------------------------------------------------- strategies


def trade_rows() -> st.SearchStrategy[Row]:
    attrs = _maybe({
        "accountId": st.sampled_from([*ALLOWED_ACCOUNTS, ""]),
        "assetCategory": _value(GOOD_CATEGORIES, ODD_CATEGORIES),
        "subCategory": st.sampled_from(["ETF", "COMMON", "", "C"]),
        "symbol": _value(GOOD_SYMBOLS, ODD_SYMBOLS),
        "description": TEXT,
        "conid": st.sampled_from(["265598", "128831207", "29616949", "", "0"]),
        "listingExchange": _value(GOOD_EXCHANGES, ODD_EXCHANGES),
        "exchange": _value(GOOD_EXCHANGES, ODD_EXCHANGES),
        "currency": _currency(),
        "tradeDate": _value(GOOD_DATES, ODD_DATES),
        "tradeTime": _value(GOOD_TIMES, ODD_TIMES),
        "dateTime": _value(GOOD_DATETIMES, ODD_DATETIMES),
        "buySell": _value(GOOD_BUY_SELL, ODD_BUY_SELL),
        "quantity": _value(GOOD_NUMBERS, ODD_NUMBERS),
        "tradePrice": _value(GOOD_PRICES, ODD_PRICES),
        "ibCommission": _value(GOOD_NUMBERS, ODD_NUMBERS),
        "ibCommissionCurrency": _value(GOOD_CURRENCIES, ODD_CURRENCIES),
        "levelOfDetail": st.sampled_from(TRADE_LEVELS),
        "transactionType": st.sampled_from(["ExchTrade"] * 10 + ["TradeCancel", "", "BookTrade"]),
        "origTradeID": st.sampled_from([None] * 12 + ["0", *TRADE_IDS[:3]]),
    })
    return st.builds(_with_trade_ids, st.sampled_from(TRADE_ROW_TAGS), attrs,
                     st.integers(0, len(TRADE_IDS) - 1),
                     st.sampled_from(["both", "both", "both", "trade", "tx", "blank", "none"]),
                     st.integers(0, 4))


def _with_trade_ids(tag: str, attrs: list[tuple[str, str]], k: int, which: str,
                    commission_in_other_currency: int) -> Row:
    """Execution k carries tradeID TRADE_IDS[k] and transactionID TRANSACTION_IDS[k]
    (IBKR never pairs one transaction id with two trade ids); either may be missing.
    The commission is usually in the trade's currency, as IBKR reports it."""
    ids = {"both": [("tradeID", TRADE_IDS[k]), ("transactionID", TRANSACTION_IDS[k])],
           "trade": [("tradeID", TRADE_IDS[k])],
           "tx": [("transactionID", TRANSACTION_IDS[k])],
           "blank": [("tradeID", ""), ("transactionID", TRANSACTION_IDS[k])],
           "none": []}[which]
    taken = {n.lower() for n, _ in ids}
    rest = [(n, v) for n, v in attrs if n.lower() not in taken]
    currency = next((v for n, v in rest if n == "currency"), None)
    if commission_in_other_currency and currency is not None:
        rest = [(n, currency if n == "ibCommissionCurrency" else v) for n, v in rest]
    return Row(tag, ids + rest)


def cash_rows() -> st.SearchStrategy[Row]:
    attrs = _maybe({
        "accountId": st.sampled_from([*ALLOWED_ACCOUNTS, ""]),
        "currency": _currency(),
        "assetCategory": st.sampled_from(["STK", "", "CASH"]),
        "symbol": _value(GOOD_SYMBOLS, ODD_SYMBOLS),
        "conid": st.sampled_from(["265598", "", "29616949"]),
        "listingExchange": _value(GOOD_EXCHANGES, ODD_EXCHANGES),
        "description": TEXT,
        "transactionID": st.one_of(st.sampled_from(CASH_IDS), st.just("")),
        "type": _value(GOOD_CASH_TYPES, ODD_CASH_TYPES),
        "amount": _value(GOOD_NUMBERS, ODD_NUMBERS),
        "dateTime": _value(GOOD_DATETIMES, ODD_DATETIMES),
        "reportDate": _value(GOOD_DATES, ODD_DATES),
        "levelOfDetail": st.sampled_from(CASH_LEVELS),
    })
    return st.builds(Row, st.just("CashTransaction"), attrs)


def position_rows() -> st.SearchStrategy[Row]:
    attrs = _maybe({
        "accountId": st.sampled_from(ALLOWED_ACCOUNTS),
        "assetCategory": _value(GOOD_CATEGORIES, ODD_CATEGORIES),
        "symbol": _value(GOOD_SYMBOLS, ODD_SYMBOLS),
        "conid": st.sampled_from(["265598", "128831207", "29616949", ""]),
        "listingExchange": _value(GOOD_EXCHANGES, ODD_EXCHANGES),
        "currency": _currency(),
        "position": _value(GOOD_NUMBERS, ODD_NUMBERS),
        "markPrice": _value(GOOD_PRICES, ODD_PRICES),
        "reportDate": _value(GOOD_DATES, ODD_DATES),
        "levelOfDetail": st.sampled_from(["SUMMARY", "SUMMARY", "LOT", None]),
    })
    return st.builds(Row, st.sampled_from(["OpenPosition", "OpenPosition", "Lot"]), attrs)


def unknown_sections() -> st.SearchStrategy[Section]:
    row = st.builds(Row, st.one_of(XML_NAME, st.just("Row")),
                    st.lists(st.tuples(XML_NAME, TEXT), max_size=4,
                             unique_by=lambda pair: pair[0].lower()))
    return st.builds(Section, st.one_of(st.sampled_from(UNKNOWN_SECTIONS), XML_NAME),
                     st.lists(st.tuples(XML_NAME, TEXT), max_size=1), st.lists(row, max_size=4))


@st.composite
def statements(draw: st.DrawFn, account: str | None = None) -> Statement:
    sections = [
        Section("Trades", [], draw(st.lists(trade_rows(), max_size=8))),
        Section("CashTransactions", [], draw(st.lists(cash_rows(), max_size=8))),
        Section("OpenPositions", [], draw(st.lists(position_rows(), max_size=3))),
    ]
    if draw(st.booleans()):
        currency = draw(_value(GOOD_CURRENCIES, ODD_CURRENCIES))
        sections.insert(0, Section("AccountInformation", [
            ("accountId", account or ALLOWED_ACCOUNTS[0]), ("currency", currency)], []))
    sections += draw(st.lists(unknown_sections(), max_size=2))
    sections = draw(st.permutations(sections))
    attrs = [("fromDate", draw(_value(GOOD_DATES, ODD_DATES))),
             ("toDate", draw(_value(GOOD_DATES, ODD_DATES))),
             ("whenGenerated", draw(_value(GOOD_DATETIMES, ODD_DATETIMES)))]
    return Statement(account or draw(st.sampled_from(ALLOWED_ACCOUNTS)), attrs, sections)


@st.composite
def documents(draw: st.DrawFn, *, foreign: bool = True, encodings: bool = True) -> Document:
    """A Flex document; with `foreign`, sometimes one for an account not configured."""
    count = draw(st.integers(1, 3))
    chosen = [draw(statements()) for _ in range(count)]
    if count > 1 and draw(st.booleans()):
        # The same rows in two statements (overlapping windows).
        chosen[1].sections = chosen[1].sections + [
            s for s in chosen[0].sections if s.tag in ("Trades", "CashTransactions")]
    if foreign and draw(st.integers(0, 9)) == 0:
        chosen[-1].account = FOREIGN_ACCOUNT
    extras = draw(st.lists(st.builds(Row, st.sampled_from(["AccountInformation", "Message"]),
                                     st.lists(st.tuples(XML_NAME, TEXT), min_size=0,
                                              max_size=2, unique_by=lambda p: p[0].lower())),
                           max_size=1))
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["iso-8859-1", "utf-16"])
                    if encodings else st.just("utf-8"))
    return Document(chosen, extras, encoding, draw(st.booleans()),
                    encoding == "utf-8" and draw(st.booleans()))


# --------------------------------------------------------------------------- outcomes


def _id(value: str | None) -> str | None:
    """How the models read an IBKR id: trimmed, '' and '0' mean none (flex_id)."""
    text = (value or "").strip(" ")
    return None if text in ("", "0") else text


@dataclass
class Expectations:
    """What the marts must account for, from the generated rows (docs/mapping.md#which-rows-count).

    An execution with ids is identified by its transactionID, else its tradeID; the
    latest version of an identity wins (dedup). Execution k is accounted for when its
    trade id reaches fct_activities or unmapped_transactions, or a version without a
    trade id is listed in unmapped_transactions under its transaction id.
    """

    executions: set[int] = field(default_factory=set)  # k of TRADE_IDS/TRANSACTION_IDS
    trade_anonymous: int = 0  # neither id: unmapped under a content key
    cancel_related: set[int] = field(default_factory=set)  # k that may legitimately drop out
    cash_ids: set[str] = field(default_factory=set)
    cash_anonymous: int = 0
    known_trade_ids: set[str] = field(default_factory=set)  # any id an execution carries
    known_cash_ids: set[str] = field(default_factory=set)


def _is_execution(row: Row) -> bool:
    level = row.get("levelOfDetail")
    return row.tag == "Trade" and (level is None or level.strip(" ") in ("", "EXECUTION"))


def _is_detail(row: Row) -> bool:
    level = row.get("levelOfDetail")
    return row.tag == "CashTransaction" and (level is None or level.strip(" ") in ("",
                                                                                   "DETAIL"))


def _is_cancellation(row: Row) -> bool:
    return ((row.get("buySell") or "").strip(" ").endswith("(Ca.)")
            or (row.get("transactionType") or "").strip(" ") in ("TradeCancel",
                                                                  "FracShareCancel"))


def outcomes(docs: list[Document]) -> Expectations:
    out = Expectations()
    for doc in docs:
        for _, row in doc.rows_of("Trades"):
            if not _is_execution(row):
                continue  # Order / SymbolSummary / Lot / ORDER / CLOSED_LOT: documented
            trade_id, tx_id = _id(row.get("tradeID")), _id(row.get("transactionID"))
            if trade_id:
                out.known_trade_ids.add(trade_id)
            if _is_cancellation(row):
                # A cancel and what it cancels may both drop out; a cancel carrying an
                # execution's own ids can be the latest version of that execution.
                for ident in (trade_id, _id(row.get("origTradeID"))):
                    if ident in TRADE_IDS:
                        out.cancel_related.add(TRADE_IDS.index(ident))
                if tx_id in TRANSACTION_IDS:
                    out.cancel_related.add(TRANSACTION_IDS.index(tx_id))
                continue
            if trade_id in TRADE_IDS:
                out.executions.add(TRADE_IDS.index(trade_id))
            elif tx_id in TRANSACTION_IDS:
                out.executions.add(TRANSACTION_IDS.index(tx_id))
            else:
                out.trade_anonymous += 1
        for _, row in doc.rows_of("CashTransactions"):
            if not _is_detail(row):
                continue  # SUMMARY: documented
            cash_id = _id(row.get("transactionID"))
            if cash_id:
                out.cash_ids.add(cash_id)
                out.known_cash_ids.add(cash_id)
            else:
                out.cash_anonymous += 1
    return out

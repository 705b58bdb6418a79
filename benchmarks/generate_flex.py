"""Deterministic synthetic IBKR Activity Flex statements for benchmarks.

Shaped like real exports (attribute sets and order copied from the real samples in
../shared/samples/flex-real: 85 attributes per <Trade>/<Order>, 45 per
<CashTransaction>, 50 per <OpenPosition>, 33 per <SecurityInfo>; dates
`yyyy-MM-dd`, date-times `yyyy-MM-dd;HH:mm:ss`).

The account's history is simulated day by day from a fixed epoch with one seeded
RNG per calendar day, so a given day always produces the same rows and ids
whatever window is asked for: overlapping windows share tradeIDs/transactionIDs
exactly as IBKR's trailing windows do, and the dedup in the models applies.
OpenPositions (SUMMARY) are the simulated holdings at the window's end, so they
agree with the trades.

Output is streamed: trades go straight to the file, cash rows to a temporary file
that is appended after the positions — a 110 MB statement never sits in memory.
Every value is one ibflex 1.1 accepts (so ibflex can be timed on the same bytes);
"unmapped" cash rows are mapped types with the wrong direction (a negative
Dividends reversal, a positive Advisor Fees, ...), plus — only with
`--exotic-cash-types` — types ibflex rejects (`871(m) Withholding`, `Broker Fees`).

    python benchmarks/generate_flex.py out.xml --from 2025-10-03 --to 2025-12-31
    python benchmarks/generate_flex.py out.xml --profile backfill          # ≈110 MB, 10 years
    python benchmarks/generate_flex.py --windows 5 --to 2025-12-31 outdir/  # 5 daily 90-day files
    python benchmarks/generate_flex.py big.xml --size-mb 100     # from the epoch until ≈100 MB

The one generator of realistic synthetic statements: the benchmarks and the tests that
need a big or realistic file (tests/reliability: disk full, the memory bound; landing
fidelity) use it. The hypothesis strategies of hostile statements are another thing
(tests/reliability/flexgen.py).
"""

from __future__ import annotations

import argparse
import collections
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO
from xml.sax.saxutils import quoteattr

ACCOUNT = "U1234567"
EPOCH = date(2015, 1, 1)  # the simulated account opens here; ids count from here

TRADE_ATTRS = (
    "accountId acctAlias model currency fxRateToBase assetCategory subCategory symbol "
    "description conid securityID securityIDType cusip isin figi listingExchange "
    "underlyingConid underlyingSymbol underlyingSecurityID underlyingListingExchange issuer "
    "issuerCountryCode tradeID multiplier relatedTradeID strike reportDate expiry dateTime "
    "putCall tradeDate principalAdjustFactor settleDateTarget transactionType exchange quantity "
    "tradePrice tradeMoney proceeds taxes ibCommission ibCommissionCurrency netCash closePrice "
    "openCloseIndicator notes cost fifoPnlRealized mtmPnl origTradePrice origTradeDate "
    "origTradeID origOrderID origTransactionID buySell clearingFirmID ibOrderID transactionID "
    "ibExecID relatedTransactionID rtn brokerageOrderID orderReference volatilityOrderLink "
    "exchOrderId extExecID orderTime openDateTime holdingPeriodDateTime whenRealized "
    "whenReopened levelOfDetail changeInPrice changeInQuantity orderType traderID isAPIOrder "
    "accruedInt initialInvestment positionActionID serialNumber deliveryType commodityType "
    "fineness weight"
).split()
CASH_ATTRS = (
    "accountId acctAlias model currency fxRateToBase assetCategory subCategory symbol "
    "description conid securityID securityIDType cusip isin figi listingExchange "
    "underlyingConid underlyingSymbol underlyingSecurityID underlyingListingExchange issuer "
    "issuerCountryCode multiplier strike expiry putCall principalAdjustFactor dateTime "
    "settleDate availableForTradingDate amount type tradeID code transactionID reportDate "
    "exDate clientReference actionID levelOfDetail serialNumber deliveryType commodityType "
    "fineness weight"
).split()
POSITION_ATTRS = (
    "accountId acctAlias model currency fxRateToBase assetCategory subCategory symbol "
    "description conid securityID securityIDType cusip isin figi listingExchange "
    "underlyingConid underlyingSymbol underlyingSecurityID underlyingListingExchange issuer "
    "issuerCountryCode multiplier strike expiry putCall principalAdjustFactor reportDate "
    "position markPrice positionValue openPrice costBasisPrice costBasisMoney percentOfNAV "
    "fifoPnlUnrealized side levelOfDetail openDateTime holdingPeriodDateTime vestingDate code "
    "originatingOrderID originatingTransactionID accruedInt serialNumber deliveryType "
    "commodityType fineness weight"
).split()
SECINFO_ATTRS = (
    "currency assetCategory subCategory symbol description conid securityID securityIDType "
    "cusip isin figi listingExchange underlyingConid underlyingSymbol underlyingSecurityID "
    "underlyingListingExchange issuer issuerCountryCode multiplier strike expiry putCall "
    "principalAdjustFactor maturity issueDate underlyingCategory settlementPolicyMethod code "
    "serialNumber deliveryType commodityType fineness weight"
).split()
INSTRUMENT_ATTRS = [a for a in SECINFO_ATTRS if a in TRADE_ATTRS]

# listing exchange -> (currency, country, weight, execution venues, typical price)
LISTINGS: dict[str, tuple[str, str, int, tuple[str, ...], float]] = {
    "LSE": ("GBP", "GB", 14, ("LSE", "CHIXUK", "BATEUK", "TRQXUK", "AQXEUK"), 6.0),
    "LSEETF": ("GBP", "IE", 12, ("LSEETF", "TRWBUKETF", "CHIXUK", "BATEUK"), 60.0),
    "NASDAQ": ("USD", "US", 12, ("ISLAND", "IBKRATS", "DRCTEDGE", "BATS", "IEX"), 150.0),
    "NYSE": ("USD", "US", 10, ("NYSE", "IBKRATS", "ARCA", "DRCTEDGE", "BYX"), 90.0),
    "ARCA": ("USD", "US", 8, ("ARCA", "IBKRATS", "ISLAND", "EDGX"), 300.0),
    "IBIS2": ("EUR", "IE", 6, ("IBIS2", "GETTEX2", "TGATE"), 80.0),
    "IBIS": ("EUR", "DE", 5, ("IBIS", "GETTEX", "TGATE"), 110.0),
    "AEB": ("EUR", "NL", 4, ("AEB", "CHIXEN", "TQEX", "BATEEN"), 45.0),
    "SBF": ("EUR", "FR", 3, ("SBF", "CHIXEN", "BATEEN"), 70.0),
    "EBS": ("CHF", "CH", 3, ("EBS", "CHIXCH"), 95.0),
    "TSE": ("CAD", "CA", 4, ("TSE", "ALPHA", "OMEGA", "CHIXCA"), 40.0),
}
FX_TO_BASE = {"GBP": 1.0, "USD": 0.79, "EUR": 0.86, "CHF": 0.9, "CAD": 0.58}
WORDS = ("GLOBAL ALPHA BRIDGE CROWN DELTA ECHO FORTH GRANITE HARBOUR IRON JUNO KESTREL "
         "LUMEN MERIDIAN NORTHERN ORBIT PIONEER QUARRY RIVER SUMMIT TIDAL UNION VECTOR "
         "WESTERN").split()
FUND_WORDS = ("FTSE ALL-WORLD", "S&P 500 UCITS", "CORE MSCI WORLD", "NASDAQ-100 DIST",
              "FTSE 100", "EUR GOVT BOND", "EM IMI", "GLOBAL AGG HEDGED")

# (type, sign, weight). Mapped types in their mapped direction, then unmapped
# directions (no seed row): they land, and dbt lists them as unmapped.
CASH_MIX: tuple[tuple[str, int, int], ...] = (
    ("Dividends", 1, 22),  # each one also emits a Withholding Tax row (most of them)
    ("Payment In Lieu Of Dividends", 1, 3),
    ("Deposits/Withdrawals", 1, 6),
    ("Deposits/Withdrawals", -1, 2),
    ("Deposits & Withdrawals", 1, 1),
    ("Broker Interest Received", 1, 5),
    ("Broker Interest Paid", -1, 4),
    ("Other Fees", -1, 8),
    ("Other Fees", 1, 1),
    ("Commission Adjustments", -1, 6),
    ("Commission Adjustments", 1, 1),
    ("Advisor Fees", -1, 5),
    ("Withholding Tax", 1, 1),  # refund
    ("Dividends", -1, 1),  # reversal: unmapped
    ("Broker Interest Received", -1, 1),  # unmapped direction
    ("Advisor Fees", 1, 1),  # unmapped direction
)
EXOTIC_CASH = (("871(m) Withholding", -1), ("Broker Fees", -1))


@dataclass(frozen=True)
class Profile:
    """How busy the simulated account is."""

    trades_per_day: float  # executions per business day
    cash_per_day: float  # cash rows per business day (withholding rows included)
    instruments: int
    fx_share: float = 0.02  # share of executions that are FX conversions (unmapped)


PROFILES = {
    # ≈300 executions, ≈400 cash rows and ≈50 positions in a 90-day window.
    "active": Profile(trades_per_day=4.7, cash_per_day=6.3, instruments=56),
    # ≈110 MB over 10 years (full attribute sets).
    "backfill": Profile(trades_per_day=11.6, cash_per_day=12.0, instruments=400),
}


@dataclass
class Instrument:
    conid: int
    listing: str
    currency: str
    price: float
    attrs: dict[str, str]


@dataclass
class Day:
    day: date
    trades: list[str] = field(default_factory=list)  # serialised <Trade>/<Order> rows
    cash: list[str] = field(default_factory=list)
    trade_count: int = 0  # executions only


def _num(value: float, places: int = 4) -> str:
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _element(tag: str, names: list[str], values: dict[str, str]) -> str:
    parts = [f"<{tag}"]
    for name in names:
        parts.append(f" {name}={quoteattr(values.get(name, ''))}")
    parts.append(" />\n")
    return "".join(parts)


def make_instruments(seed: int, count: int) -> list[Instrument]:
    rng = random.Random(f"instruments:{seed}")
    listings = list(LISTINGS)
    weights = [LISTINGS[name][2] for name in listings]
    used: set[str] = set()
    instruments = []
    for index in range(count):
        listing = rng.choices(listings, weights)[0]
        currency, country, _, _, typical = LISTINGS[listing]
        is_etf = listing in ("LSEETF", "IBIS2", "ARCA") or rng.random() < 0.1
        symbol = ""
        while not symbol or symbol in used:
            length = rng.choice((3, 4))
            symbol = "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ") for _ in range(length))
        used.add(symbol)
        if listing == "LSEETF" and rng.random() < 0.3:
            symbol += ".L"  # IBKR sometimes reports LSE ETFs already suffixed (real sample pp_27)
        suffix = ("PLC", "INC", "AG", "NV", "SA", "CORP")
        name = (f"{rng.choice(WORDS)} {rng.choice(FUND_WORDS)}" if is_etf
                else f"{rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(suffix)}")
        isin = f"{country}{rng.randrange(10**9, 10**10)}{index % 10}{rng.randrange(10)}"
        conid = 10_000_000 + index * 7919 + rng.randrange(7919)
        attrs = {
            "currency": currency, "assetCategory": "STK",
            "subCategory": "ETF" if is_etf else "COMMON",
            "symbol": symbol, "description": name, "conid": str(conid), "securityID": isin,
            "securityIDType": "ISIN", "cusip": isin[2:11] if country == "US" else "", "isin": isin,
            "figi": f"BBG{rng.randrange(10**8, 10**9):09d}", "listingExchange": listing,
            "underlyingConid": "", "underlyingSymbol": symbol.removesuffix(".L"),
            "underlyingSecurityID": "", "underlyingListingExchange": "", "issuer": "",
            "issuerCountryCode": country, "multiplier": "1", "strike": "", "expiry": "",
            "putCall": "", "principalAdjustFactor": "", "serialNumber": "", "deliveryType": "",
            "commodityType": "", "fineness": "0.0", "weight": "0.0",
        }
        price = typical * rng.uniform(0.3, 2.5)
        instruments.append(Instrument(conid, listing, currency, price, attrs))
    return instruments


class Simulator:
    """Replays the account from EPOCH; the same seed gives the same rows and ids."""

    def __init__(self, seed: int, profile: Profile, account: str = ACCOUNT,
                 exotic_cash: bool = False) -> None:
        self.seed = seed
        self.profile = profile
        self.account = account
        self.exotic_cash = exotic_cash
        self.instruments = make_instruments(seed, profile.instruments)
        self.holdings: dict[int, int] = {}
        self.cost: dict[int, float] = {}
        self.next_trade_id = 400_000_000
        self.next_transaction_id = 2_000_000_000
        self.next_order_id = 300_000_000
        self.next_action_id = 100_000_000
        self.base = {"accountId": account, "acctAlias": "", "model": ""}

    def days(self, until: date, since: date = EPOCH) -> Iterator[Day]:
        """Simulate every day from EPOCH to `until`; yield the days from `since` with rows."""
        day = EPOCH
        while day <= until:
            emit = day >= since
            result = self._simulate_day(day, emit)
            if emit:
                yield result
            day += timedelta(days=1)

    def _tid(self) -> str:
        self.next_transaction_id += 1 + (self.next_transaction_id % 3)
        return str(self.next_transaction_id)

    def _simulate_day(self, day: date, emit: bool) -> Day:
        rng = random.Random(f"{self.seed}:{day.toordinal()}")
        # Values that change no state come from a second RNG, so a day replays the
        # same way whether its rows are written or only simulated.
        cos = random.Random(f"cosmetic:{self.seed}:{day.toordinal()}")
        for inst in self.instruments:  # prices drift every day, trading or not
            inst.price *= 1.0 + rng.gauss(0.0002, 0.012)
        out = Day(day)
        if day.weekday() >= 5:
            return out
        n_trades = _count(rng, self.profile.trades_per_day)
        n_cash = _count(rng, self.profile.cash_per_day)
        while out.trade_count < n_trades:
            self._order(rng, cos, day, out, emit)
        cash_rows = 0
        while cash_rows < n_cash:
            cash_rows += self._cash(rng, cos, day, out, emit)
        return out

    # ------------------------------------------------------------------ trades
    def _order(self, rng: random.Random, cos: random.Random, day: date, out: Day,
               emit: bool) -> None:
        if rng.random() < self.profile.fx_share:
            self._fx(cos, day, out, emit)
            return
        inst = rng.choice(self.instruments)
        held = self.holdings.get(inst.conid, 0)
        if held > 0 and rng.random() < 0.35:
            qty = -held if rng.random() < 0.08 else -max(1, int(held * rng.uniform(0.05, 0.5)))
        else:
            qty = max(1, int(rng.uniform(200, 6000) / inst.price))
        fills = 1 if abs(qty) < 4 else rng.choice((1, 1, 1, 2, 2, 3))
        parts = _split(rng, abs(qty), fills)
        side = "BUY" if qty > 0 else "SELL"
        sign = 1 if qty > 0 else -1
        order_id = self.next_order_id = self.next_order_id + 1
        when = _clock(rng, inst.listing)
        order_time = f"{day.isoformat()};{when}"
        settle = _add_business_days(day, 2)
        exec_rows = []
        total_money = total_comm = 0.0
        for n, part in enumerate(parts):
            price = round(inst.price * (1 + rng.gauss(0, 0.0015)), 4)
            money = round(part * price, 2)
            commission = -round(max(1.0, money * 0.0005) if inst.currency != "USD"
                                else max(0.35, part * 0.005), 2)
            total_money += money
            total_comm += commission
            self.next_trade_id += 1 + rng.randrange(4)
            trade_id = str(self.next_trade_id)
            transaction_id = self._tid()
            cost_before = self.cost.get(inst.conid, 0.0)
            held_before = self.holdings.get(inst.conid, 0)
            realised = 0.0
            if sign < 0 and held_before > 0:
                avg = cost_before / held_before
                realised = round(part * (price - avg) + commission, 2)
                self.cost[inst.conid] = cost_before - avg * part
            else:
                self.cost[inst.conid] = cost_before + money - commission
            self.holdings[inst.conid] = held_before + sign * part
            if self.holdings[inst.conid] == 0:
                self.cost[inst.conid] = 0.0
            if not emit:
                out.trade_count += 1
                continue
            exec_time = f"{day.isoformat()};{_later(when, n)}"
            values = dict(self.base)
            values.update(inst.attrs)
            values.update({
                "fxRateToBase": _num(FX_TO_BASE[inst.currency], 5), "tradeID": trade_id,
                "relatedTradeID": "", "reportDate": day.isoformat(), "dateTime": exec_time,
                "tradeDate": day.isoformat(), "settleDateTarget": settle.isoformat(),
                "transactionType": "ExchTrade",
                "exchange": cos.choice(LISTINGS[inst.listing][3]),
                "quantity": str(sign * part), "tradePrice": _num(price),
                "tradeMoney": _num(sign * money, 2), "proceeds": _num(-sign * money, 2),
                "taxes": "0", "ibCommission": _num(commission, 2),
                "ibCommissionCurrency": inst.currency,
                "netCash": _num(-sign * money + commission, 2),
                "closePrice": _num(inst.price), "openCloseIndicator": "O" if sign > 0 else "C",
                "notes": "P" if fills > 1 else "", "cost": _num(sign * money - commission, 2),
                "fifoPnlRealized": _num(realised, 2),
                "mtmPnl": _num(sign * part * (inst.price - price), 2),
                "origTradePrice": "0", "origTradeDate": "", "origTradeID": "",
                "origOrderID": "0", "origTransactionID": "0", "buySell": side,
                "clearingFirmID": "", "ibOrderID": str(order_id),
                "transactionID": transaction_id,
                "ibExecID": f"{cos.randrange(16**8):08x}.{cos.randrange(16**8):08x}.01.01",
                "relatedTransactionID": "", "rtn": "",
                "brokerageOrderID": f"{order_id:08x}.0001{n:04x}.{cos.randrange(16**8):08x}.0001",
                "orderReference": "", "volatilityOrderLink": "", "exchOrderId": "N/A",
                "extExecID": f"X{cos.randrange(10**12):012d}", "orderTime": order_time,
                "openDateTime": "", "holdingPeriodDateTime": "", "whenRealized": "",
                "whenReopened": "", "levelOfDetail": "EXECUTION", "changeInPrice": "0",
                "changeInQuantity": "0", "orderType": "LMT" if cos.random() < 0.7 else "MKT",
                "traderID": "", "isAPIOrder": "N", "accruedInt": "0",
                "initialInvestment": "", "positionActionID": "",
            })
            exec_rows.append(_element("Trade", TRADE_ATTRS, values))
            out.trade_count += 1
        if emit:
            order = dict(self.base)
            order.update(inst.attrs)
            order.update({
                "fxRateToBase": _num(FX_TO_BASE[inst.currency], 5), "reportDate": day.isoformat(),
                "dateTime": f"{day.isoformat()};{when}", "tradeDate": day.isoformat(),
                "settleDateTarget": settle.isoformat(), "quantity": str(qty),
                "tradePrice": _num(total_money / abs(qty)),
                "tradeMoney": _num(sign * total_money, 2),
                "proceeds": _num(-sign * total_money, 2), "taxes": "0",
                "ibCommission": _num(total_comm, 2), "ibCommissionCurrency": inst.currency,
                "netCash": _num(-sign * total_money + total_comm, 2),
                "closePrice": _num(inst.price), "openCloseIndicator": "O" if sign > 0 else "C",
                "buySell": side, "ibOrderID": str(order_id), "orderTime": order_time,
                "levelOfDetail": "ORDER", "orderType": "LMT", "isAPIOrder": "N",
            })
            out.trades.append(_element("Order", TRADE_ATTRS, order))
            out.trades.extend(exec_rows)

    def _fx(self, cos: random.Random, day: date, out: Day, emit: bool) -> None:
        """An FX conversion (assetCategory CASH): lands raw, unmapped in the marts."""
        self.next_trade_id += 1
        trade_id = str(self.next_trade_id)
        transaction_id = self._tid()
        out.trade_count += 1
        if not emit:
            return
        pair = cos.choice(("GBP.USD", "EUR.GBP", "GBP.CAD", "EUR.USD"))
        qty = cos.randrange(500, 20000)
        rate = {"GBP.USD": 1.27, "EUR.GBP": 0.86, "GBP.CAD": 1.72, "EUR.USD": 1.09}[pair]
        values = dict(self.base)
        values.update({
            "currency": pair[4:], "fxRateToBase": _num(1 / FX_TO_BASE.get(pair[4:], 1.0), 5),
            "assetCategory": "CASH", "symbol": pair, "description": pair, "conid": "12087797",
            "listingExchange": "", "multiplier": "1", "tradeID": trade_id,
            "reportDate": day.isoformat(), "dateTime": f"{day.isoformat()};{_clock(cos, 'LSE')}",
            "tradeDate": day.isoformat(),
            "settleDateTarget": _add_business_days(day, 2).isoformat(),
            "transactionType": "ExchTrade", "exchange": "IDEALFX", "quantity": str(qty),
            "tradePrice": _num(rate, 5), "tradeMoney": _num(qty * rate, 2),
            "proceeds": _num(-qty * rate, 2), "taxes": "0", "ibCommission": "-2",
            "ibCommissionCurrency": "GBP", "netCash": _num(-qty * rate, 2), "closePrice": "0",
            "openCloseIndicator": "", "buySell": "BUY", "ibOrderID": str(self.next_order_id),
            "transactionID": transaction_id, "levelOfDetail": "EXECUTION", "orderType": "MKT",
            "isAPIOrder": "N", "fineness": "0.0", "weight": "0.0",
        })
        out.trades.append(_element("Trade", TRADE_ATTRS, values))

    # ------------------------------------------------------------------ cash
    def _cash(self, rng: random.Random, cos: random.Random, day: date, out: Day,
              emit: bool) -> int:
        """One cash event (a dividend brings its withholding row); returns rows made."""
        if self.exotic_cash and rng.random() < 0.01:
            kind, sign = rng.choice(EXOTIC_CASH)
        else:
            kind, sign, _ = rng.choices(CASH_MIX, [w for *_, w in CASH_MIX])[0]
        held = [i for i in self.instruments if self.holdings.get(i.conid, 0) > 0]
        needs_asset = kind in ("Dividends", "Payment In Lieu Of Dividends", "Withholding Tax",
                               "871(m) Withholding")
        if needs_asset and not held:
            kind, sign = "Deposits/Withdrawals", 1
            needs_asset = False
        inst = rng.choice(held) if needs_asset else None
        currency = inst.currency if inst else rng.choice(("GBP", "GBP", "USD", "EUR"))
        rows: list[tuple[str, float, str]] = []
        if inst is not None and kind in ("Dividends", "Payment In Lieu Of Dividends"):
            dps = round(inst.price * rng.uniform(0.004, 0.015), 4)
            gross = round(self.holdings[inst.conid] * dps, 2) or 0.01
            label = "CASH DIVIDEND" if kind == "Dividends" else "PAYMENT IN LIEU OF DIVIDEND"
            desc = (f"{inst.attrs['symbol']}({inst.attrs['isin']}) {label} {currency} {dps} "
                    "PER SHARE")
            tail = " (Ordinary Dividend)" if sign > 0 else " - REVERSAL"
            rows.append((kind, sign * gross, desc + tail))
            if sign > 0 and inst.attrs["issuerCountryCode"] not in ("GB", "IE"):
                rows.append(("Withholding Tax", -round(gross * 0.15, 2),
                             f"{desc} - {inst.attrs['issuerCountryCode']} TAX"))
        elif inst is not None:
            amount = round(rng.uniform(1, 50), 2)
            rows.append((kind, sign * amount, f"{inst.attrs['symbol']}({inst.attrs['isin']}) "
                                              f"{kind.upper()} {currency}"))
        else:
            scale = {"Deposits/Withdrawals": 5000, "Deposits & Withdrawals": 5000,
                     "Broker Interest Received": 40, "Broker Interest Paid": 25}.get(kind, 8)
            amount = round(rng.uniform(0.05, 1.0) * scale, 2) or 0.01
            rows.append((kind, sign * amount, _cash_description(kind, currency, day, rng)))
        action_id = ""
        if inst is not None:
            self.next_action_id += 1
            action_id = str(self.next_action_id)
        if not emit:
            for _ in rows:
                self._tid()
            return len(rows)
        when = f"{day.isoformat()};{cos.choice(('20:20:00', '19:30:00', '12:00:00', '00:00:00'))}"
        for flex_type, amount, description in rows:
            values = dict(self.base)
            if inst is not None:
                values.update(inst.attrs)
            else:
                values.update({"multiplier": "0", "fineness": "0.0", "weight": "0.0"})
            values.update({
                "currency": currency, "fxRateToBase": _num(FX_TO_BASE.get(currency, 1.0), 5),
                "description": description, "dateTime": when, "settleDate": day.isoformat(),
                "availableForTradingDate": "", "amount": _num(amount, 2), "type": flex_type,
                "tradeID": "", "code": "", "transactionID": self._tid(),
                "reportDate": day.isoformat(),
                "exDate": (day - timedelta(days=5)).isoformat() if inst is not None else "",
                "clientReference": "", "actionID": action_id, "levelOfDetail": "DETAIL",
            })
            out.cash.append(_element("CashTransaction", CASH_ATTRS, values))
        return len(rows)

    # ------------------------------------------------------------------ snapshot
    def positions(self, as_of: date) -> list[str]:
        rows = []
        nav = sum(self.holdings.get(i.conid, 0) * i.price * FX_TO_BASE[i.currency]
                  for i in self.instruments) or 1.0
        for inst in self.instruments:
            held = self.holdings.get(inst.conid, 0)
            if held == 0:
                continue
            cost = self.cost.get(inst.conid, 0.0)
            value = held * inst.price
            values = dict(self.base)
            values.update(inst.attrs)
            values.update({
                "fxRateToBase": _num(FX_TO_BASE[inst.currency], 5), "reportDate": as_of.isoformat(),
                "position": str(held), "markPrice": _num(inst.price),
                "positionValue": _num(value, 2), "openPrice": _num(cost / held),
                "costBasisPrice": _num(cost / held), "costBasisMoney": _num(cost, 2),
                "percentOfNAV": _num(100 * value * FX_TO_BASE[inst.currency] / nav, 2),
                "fifoPnlUnrealized": _num(value - cost, 2), "side": "Long",
                "levelOfDetail": "SUMMARY", "openDateTime": "", "holdingPeriodDateTime": "",
                "vestingDate": "", "code": "", "originatingOrderID": "",
                "originatingTransactionID": "", "accruedInt": "",
            })
            rows.append(_element("OpenPosition", POSITION_ATTRS, values))
        return rows

    def securities(self) -> list[str]:
        return [_element("SecurityInfo", SECINFO_ATTRS, {
            **inst.attrs, "maturity": "", "issueDate": "", "underlyingCategory": "",
            "settlementPolicyMethod": "", "code": "",
        }) for inst in self.instruments]


def _count(rng: random.Random, mean: float) -> int:
    """Busy and quiet days around `mean` (deterministic per day)."""
    low = int(mean * 0.4)
    high = int(mean * 1.6 + 0.999)
    return rng.randint(low, high)


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    if parts <= 1 or total < parts:
        return [total]
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def _clock(rng: random.Random, listing: str) -> str:
    open_hour = {"NASDAQ": 14, "NYSE": 14, "ARCA": 14, "TSE": 14}.get(listing, 8)
    seconds = rng.randrange(open_hour * 3600 + 1800, (open_hour + 6) * 3600)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _later(clock: str, n: int) -> str:
    h, m, s = (int(x) for x in clock.split(":"))
    total = h * 3600 + m * 60 + s + n * 7
    return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


def _add_business_days(day: date, n: int) -> date:
    while n:
        day += timedelta(days=1)
        if day.weekday() < 5:
            n -= 1
    return day


def _cash_description(kind: str, currency: str, day: date, rng: random.Random) -> str:
    if kind.startswith("Broker Interest"):
        side = "CREDIT" if "Received" in kind else "DEBIT"
        return f"{currency} {side} INT FOR {day:%b-%Y}".upper()
    if kind.startswith("Deposits"):
        return rng.choice(("CASH RECEIPTS / ELECTRONIC FUND TRANSFERS",
                           "DISBURSEMENT INITIATED BY"))
    if kind == "Advisor Fees":
        return f"ADVISOR FEE {day:%b %Y}".upper()
    if kind == "Commission Adjustments":
        return f"COMMISSION ADJUSTMENT {currency}"
    return rng.choice(("SNAPSHOT VALUE BUNDLE FOR " + f"{day:%b %Y}".upper(), "MARKET DATA FEE",
                       "ADR FEE", "BALANCE OF MONTHLY MINIMUM FEE"))


# ---------------------------------------------------------------------- writers
def _header(out: IO[str], account: str, start: date, end: date) -> None:
    generated = end + timedelta(days=1)
    out.write('<FlexQueryResponse queryName="flexsync benchmark" type="AF">\n')
    out.write('<FlexStatements count="1">\n')
    out.write(f'<FlexStatement accountId="{account}" fromDate="{start.isoformat()}" '
              f'toDate="{end.isoformat()}" period="" '
              f'whenGenerated="{generated.isoformat()};06:12:41">\n')
    out.write(f'<AccountInformation accountId="{account}" acctAlias="" model="" currency="GBP" '
              'name="Benchmark Account" accountType="Individual" customerType="Individual" '
              'accountCapabilities="Cash" tradingPermissions="Stocks,Forex" '
              'dateOpened="2014-12-01" dateFunded="2014-12-15" dateClosed="" '
              f'lastTradedDate="{end.isoformat()}" masterName="" ibEntity="IB-UK" />\n')


def write_statement(path: Path, start: date, end: date, seed: int = 7,
                    profile: Profile = PROFILES["active"], account: str = ACCOUNT,
                    exotic_cash: bool = False) -> dict[str, int]:
    """Stream one statement covering [start, end] to `path`; return row counts."""
    sim = Simulator(seed, profile, account, exotic_cash)
    counts = collections.Counter[str]()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as out, \
            tempfile.TemporaryFile("w+", encoding="utf-8", dir=path.parent) as cash:
        _header(out, account, start, end)
        out.write("<Trades>\n")
        for day in sim.days(end, since=start):
            _add_day(day, out, cash, counts)
        out.write("</Trades>\n")
        _write_tail(out, sim, end, cash, counts)
    return dict(counts)


def write_sized_statement(path: Path, target_bytes: int, seed: int = 7,
                          profile: Profile = PROFILES["backfill"], account: str = ACCOUNT,
                          exotic_cash: bool = False) -> dict[str, int]:
    """Stream a statement from EPOCH to the first day its rows reach `target_bytes`
    (the file ends up slightly larger); return row counts as write_statement does —
    `rows(Trades)` is what lands in raw_ibkr.trades.

    The header names the last day, known only at the end: the rows go to temporary
    files first, so nothing big is held in memory."""
    sim = Simulator(seed, profile, account, exotic_cash)
    counts = collections.Counter[str]()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile("w+", encoding="utf-8", dir=path.parent) as trades, \
            tempfile.TemporaryFile("w+", encoding="utf-8", dir=path.parent) as cash:
        written, end = 0, EPOCH
        for day in sim.days(date.max - timedelta(days=1)):
            _add_day(day, trades, cash, counts)
            written += sum(map(len, day.trades)) + sum(map(len, day.cash))
            end = day.day
            if written >= target_bytes:
                break
        with open(path, "w", encoding="utf-8", newline="\n") as out:
            _header(out, account, EPOCH, end)
            out.write("<Trades>\n")
            trades.seek(0)
            shutil.copyfileobj(trades, out, 1 << 20)
            out.write("</Trades>\n")
            _write_tail(out, sim, end, cash, counts)
    return dict(counts)


def _add_day(day: Day, trades: IO[str], cash: IO[str], counts: collections.Counter[str]) -> None:
    trades.writelines(day.trades)
    cash.writelines(day.cash)
    counts["Trade"] += day.trade_count
    counts["rows(Trades)"] += len(day.trades)
    counts["CashTransaction"] += len(day.cash)


def _write_tail(out: IO[str], sim: Simulator, end: date, cash: IO[str],
                counts: collections.Counter[str]) -> None:
    positions = sim.positions(end)
    counts["OpenPosition"] = len(positions)
    out.write("<OpenPositions>\n")
    out.writelines(positions)
    out.write("</OpenPositions>\n<CashTransactions>\n")
    cash.seek(0)
    shutil.copyfileobj(cash, out, 1 << 20)
    out.write("</CashTransactions>\n<SecuritiesInfo>\n")
    securities = sim.securities()
    counts["SecurityInfo"] = len(securities)
    out.writelines(securities)
    out.write("</SecuritiesInfo>\n</FlexStatement>\n</FlexStatements>\n</FlexQueryResponse>\n")


def write_windows(directory: Path, end: date, windows: int, window_days: int = 90,
                  seed: int = 7, profile: Profile = PROFILES["active"],
                  account: str = ACCOUNT, exotic_cash: bool = False) -> list[Path]:
    """`windows` daily statements, each the `window_days` days ending one day later.

    One simulation pass: the last days' rows are kept (small) and each window is
    written from them, with the positions as of its own end.
    """
    sim = Simulator(seed, profile, account, exotic_cash)
    first_end = end - timedelta(days=windows - 1)
    keep_from = first_end - timedelta(days=window_days - 1)
    recent: list[Day] = []
    paths = []
    directory.mkdir(parents=True, exist_ok=True)
    for day in sim.days(end, since=keep_from):
        recent.append(day)
        if day.day >= first_end:
            start = day.day - timedelta(days=window_days - 1)
            path = directory / f"flex_{account}_{start.isoformat()}_{day.day.isoformat()}.xml"
            with open(path, "w", encoding="utf-8", newline="\n") as out, \
                    tempfile.TemporaryFile("w+", encoding="utf-8", dir=directory) as cash:
                _header(out, account, start, day.day)
                out.write("<Trades>\n")
                for past in recent:
                    if past.day >= start:
                        out.writelines(past.trades)
                        cash.writelines(past.cash)
                out.write("</Trades>\n")
                _write_tail(out, sim, day.day, cash, collections.Counter())
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="file to write (a directory with --windows)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="active")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--account", default=ACCOUNT)
    parser.add_argument("--to", dest="end", type=date.fromisoformat, default=date(2025, 12, 31))
    parser.add_argument("--from", dest="start", type=date.fromisoformat,
                        help="window start (default: 90 days, or 10 years for backfill)")
    parser.add_argument("--windows", type=int, help="write this many overlapping daily windows")
    parser.add_argument("--window-days", type=int, default=90)
    parser.add_argument("--size-mb", type=float,
                        help="instead of a window: from the epoch until about this size")
    parser.add_argument("--trades-per-day", type=float, help="override the profile")
    parser.add_argument("--cash-per-day", type=float, help="override the profile")
    parser.add_argument("--instruments", type=int, help="override the profile")
    parser.add_argument("--exotic-cash-types", action="store_true",
                        help="also emit cash types ibflex rejects "
                             "(871(m) Withholding, Broker Fees)")
    args = parser.parse_args(argv)
    base = PROFILES[args.profile]
    profile = Profile(args.trades_per_day or base.trades_per_day,
                      args.cash_per_day or base.cash_per_day,
                      args.instruments or base.instruments, base.fx_share)
    if args.windows:
        paths = write_windows(args.output, args.end, args.windows, args.window_days, args.seed,
                              profile, args.account, args.exotic_cash_types)
        print(f"wrote {len(paths)} windows to {args.output}")
        return 0
    if args.size_mb:
        counts = write_sized_statement(args.output, int(args.size_mb * 1e6), args.seed,
                                       profile, args.account, args.exotic_cash_types)
        print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB): "
              + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
        return 0
    default_days = 3652 if args.profile == "backfill" else args.window_days
    start = args.start or args.end - timedelta(days=default_days - 1)
    counts = write_statement(args.output, start, args.end, args.seed, profile, args.account,
                             args.exotic_cash_types)
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size / 1e6:.1f} MB, {start}..{args.end}): "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

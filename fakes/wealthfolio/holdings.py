"""GET /holdings as the fake computes it: quantities and cash by Wealthfolio's own rules.

Cash per currency and quantity per asset come from `rules` (docs/upstream.md#cash-rules), over the
POSTED activities of the accounts that are rebuilt from activities (HOLDINGS-mode accounts are
not, docs/upstream.md#accounts). Prices are the fake's stand-ins: a market quote set by a test,
valued with the quote-currency rule (docs/upstream.md#quote-currency: a minor-unit currency
wins), else the last activity's unit price. Decimals go out as JSON numbers, as the server's
serde-float does.

A mixin of FakeWealthfolio: the caller holds `lock`.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fakes.wealthfolio import rules
from fakes.wealthfolio.store import MINOR_UNITS


class HoldingsMixin:
    lock: threading.RLock
    accounts: dict[str, dict[str, Any]]
    activities: dict[str, dict[str, Any]]
    assets: dict[str, dict[str, Any]]
    # Market data: (SYMBOL, MIC) -> (price, currency as the provider quotes it).
    market_quotes: dict[tuple[str, str], tuple[Decimal, str]]

    def set_market_quote(self, symbol: str, mic: str | None, price: Decimal | str,
                         currency: str) -> None:
        """The provider's latest quote for an asset, e.g. VUAG/XLON 92.15 GBP, VOD/XLON
        71.2 GBp. Holdings then value the asset with the quote-currency rule
        (docs/upstream.md#quote-currency) (minor unit wins)."""
        with self.lock:
            self.market_quotes[(symbol.upper(), (mic or "").upper())] = (Decimal(price), currency)

    def _compute_holdings(self, label: str, account_ids: set[str]) -> list[dict[str, Any]]:
        # HOLDINGS-mode accounts are not rebuilt from activities (docs/upstream.md#accounts): posts
        # there are stored and never move holdings.
        rebuilt = {i for i in account_ids
                   if self.accounts[i].get("trackingMode") != "HOLDINGS"}
        # Cash and quantities by Wealthfolio's rules (wealthfolio_rules,
        # docs/upstream.md#cash-rules), keyed by
        # asset id; prices and open dates are the fake's own valuation stand-ins.
        ledger = []
        for account_id in sorted(rebuilt):
            records = [a for a in self.activities.values() if a["accountId"] == account_id]
            ledger += rules.ledger_from_records(
                records, self.assets, self.accounts[account_id]["currency"], key_by="id")
        books = rules.compute_books(ledger)
        quantities, cash = books.quantities, books.cash
        posted = sorted((a for a in self.activities.values()
                         if a["accountId"] in rebuilt and a["status"] == "POSTED"),
                        key=lambda a: (a["activityDate"], a["seq"]))
        last_price: dict[str, Decimal] = {}
        open_dates: dict[str, date] = {}
        zero = Decimal(0)
        for a in posted:
            asset_id = a["assetId"]
            if asset_id:
                open_dates.setdefault(asset_id, a["activityDate"].date())
                if a["unitPrice"] is not None:
                    last_price[asset_id] = a["unitPrice"]
        base = next((self.accounts[i]["currency"] for i in sorted(account_ids)), "GBP")
        out: list[dict[str, Any]] = []
        today = datetime.now(UTC).date().isoformat()
        for asset_id, quantity in quantities.items():
            if quantity == 0:
                continue
            asset = self.assets[asset_id]
            price = self._valuation_price(asset, last_price.get(asset_id))
            value = quantity * (price or zero)
            out.append({
                "id": f"SEC-{label}-{asset_id}", "accountId": label, "holdingType": "security",
                "instrument": {
                    "id": asset_id, "symbol": asset["symbol"], "name": asset["name"],
                    "currency": asset["quoteCcy"], "notes": None,
                    "pricingMode": asset["quoteMode"], "preferredProvider": None,
                    "exchangeMic": asset["exchangeMic"], "classifications": None},
                "assetKind": "INVESTMENT", "quantity": quantity,
                "openDate": open_dates.get(asset_id, date.today()).isoformat(), "lots": None,
                "contractMultiplier": Decimal(1), "localCurrency": base, "baseCurrency": base,
                "fxRate": Decimal(1), "marketValue": {"local": value, "base": value},
                "costBasis": None, "price": price, "asOfDate": today,
            })
        for ccy, amount in sorted(cash.items()):
            if amount == 0:
                continue
            out.append({
                "id": f"CASH-{label}-{ccy}", "accountId": label, "holdingType": "cash",
                "instrument": {"id": f"cash:{ccy}", "symbol": ccy, "name": ccy, "currency": ccy,
                               "exchangeMic": None},
                "assetKind": "CASH", "quantity": amount, "localCurrency": ccy,
                "baseCurrency": base, "fxRate": Decimal(1),
                "marketValue": {"local": amount, "base": amount}, "asOfDate": today,
            })
        return out

    def _valuation_price(self, asset: dict[str, Any], last_price: Decimal | None
                         ) -> Decimal | None:
        """Price per unit in the major currency, as holdings_valuation_service.rs gets it.

        With a market quote, `resolve_effective_quote_currency` lets the minor unit win
        when the asset's and the quote's currency differ only in unit (asset GBp + a GBP
        quote of 92.15 -> 92.15 pence), then `normalize_amount` divides a minor-unit price
        by 100. Without one, the last activity's unit price (already major) stands in.
        """
        quote = self.market_quotes.get(
            (asset["symbol"].upper(), (asset["exchangeMic"] or "").upper()))
        if quote is None:
            return last_price
        price, quote_ccy = quote
        asset_ccy = asset["quoteCcy"] or quote_ccy
        effective = quote_ccy
        if MINOR_UNITS.get(asset_ccy, asset_ccy) == MINOR_UNITS.get(quote_ccy, quote_ccy):
            effective = asset_ccy if asset_ccy in MINOR_UNITS else quote_ccy
        return price * Decimal("0.01") if effective in MINOR_UNITS else price

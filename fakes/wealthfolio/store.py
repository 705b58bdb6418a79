"""The fake's books: accounts, activities and assets, and the server's rules for writing them.

Create (docs/upstream.md#activities): validation in the core's order, dates to
UTC, `.L`-style Yahoo suffixes to a MIC, GBp → GBP ÷ 100, absolute values, the global
idempotency index (an explicit key, or a content hash) and its duplicate answer.
Update and delete, linking transfer legs (docs/upstream.md#activities), and where the server differs
from a naive reading (docs/upstream.md#server-quirks): a symbol sent with a cash activity links the
asset; ETF/STOCK/FUND are stored as EQUITY; symbol and MIC are upper-cased before matching;
unknown quoteMode strings and invalid metadata JSON (on create) are stored; archived
and HOLDINGS-mode accounts accept posts (docs/upstream.md#accounts). The Yahoo suffix table is
written from Wealthfolio's exchanges.json, never from flexsync's seeds.

A mixin of FakeWealthfolio: every method expects the caller to hold `lock`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fakes.wealthfolio.replies import (
    MSG_ACTIVITY_NOT_FOUND,
    MSG_ASSET_REQUIRED,
    MSG_BAD_TYPE,
    MSG_DUPLICATE,
    MSG_INVALID,
    MSG_NOT_FOUND,
    MSG_QUOTE_CCY,
    DomainError,
    dec_str,
)
from fakes.wealthfolio.validation import parse_activity_date

ACTIVITY_TYPES = frozenset({
    "BUY", "SELL", "SPLIT", "DIVIDEND", "INTEREST", "DEPOSIT", "WITHDRAWAL", "TRANSFER_IN",
    "TRANSFER_OUT", "FEE", "TAX", "CREDIT", "ADJUSTMENT", "UNKNOWN",
})
ASSET_REQUIRED_TYPES = frozenset({"BUY", "SELL", "SPLIT", "DIVIDEND", "ADJUSTMENT"})
ASSET_REQUIRED_SUBTYPES = frozenset({"DRIP", "DIVIDEND_IN_KIND", "STAKING_REWARD"})
# Instrument types the server stores as EQUITY (docs/upstream.md#server-quirks).
EQUITY_ALIASES = {"ETF": "EQUITY", "STOCK": "EQUITY", "FUND": "EQUITY"}
# Minor currency units the server converts to the major unit (amounts × 0.01).
MINOR_UNITS = {"GBp": "GBP", "GBX": "GBP", "ZAc": "ZAR", "ZAC": "ZAR", "ILA": "ILS",
               "KWF": "KWD"}
# Yahoo suffix → MIC as the server splits it off a symbol. Written by hand from
# Wealthfolio's own table (crates/market-data/src/resolver/exchanges.json, afadil/wealthfolio
# b66a7151; `.AE` resolves to the last entry, XADS), never imported from flexsync's seeds:
# the fake must be able to disagree with the product.
YAHOO_SUFFIX_MIC = {
    "AE": "XADS", "AQ": "XAQE", "AS": "XAMS", "AT": "XATH", "AX": "XASX", "BA": "XBUE",
    "BD": "XBUD", "BE": "XBER", "BK": "XBKK", "BO": "XBOM", "BR": "XBRU", "CA": "XCAI",
    "CN": "XCNQ", "CO": "XCSE", "DE": "XETR", "DU": "XDUS", "F": "XFRA", "HA": "XHAN",
    "HE": "XHEL", "HK": "XHKG", "HM": "XHAM", "IC": "XICE", "IL": "XLON_IL", "IR": "XDUB",
    "IS": "XIST", "JK": "XIDX", "JO": "XJSE", "KL": "XKLS", "KQ": "XKOS", "KS": "XKRX",
    "L": "XLON", "LJ": "XLJU", "LS": "XLIS", "MC": "XMAD", "MI": "XMIL", "MU": "XMUN",
    "MX": "XMEX", "NE": "XNEO", "NS": "XNSE", "NZ": "XNZE", "OL": "XOSL", "PA": "XPAR",
    "PR": "XPRA", "QA": "DSMD", "RG": "XRIS", "RO": "XBSE", "SA": "BVMF", "SAU": "XSAU",
    "SG": "XSTU", "SI": "XSES", "SN": "XSGO", "SS": "XSHG", "ST": "XSTO", "SW": "XSWX",
    "SZ": "XSHE", "T": "XTKS", "TA": "XTAE", "TL": "XTAL", "TO": "XTSE", "TW": "XTAI",
    "TWO": "XTAI_OTC", "V": "XTSX", "VI": "XWBO", "VS": "XLIT", "WA": "XWAR", "XC": "CXE",
    "XD": "DXE", "ZA": "XZAG",
}


class StoreMixin:
    lock: threading.RLock
    accounts: dict[str, dict[str, Any]]
    activities: dict[str, dict[str, Any]]
    assets: dict[str, dict[str, Any]]
    idempotency: dict[str, str]  # idempotency key -> activity id, across all accounts
    phantom_duplicates: dict[str, str]
    _seq: int

    # ---------------------------------------------------------------- accounts

    def create_account(
        self, name: str = "IBKR", currency: str = "GBP", *, account_id: str | None = None,
        tracking_mode: str = "TRANSACTIONS", archived: bool = False,
    ) -> dict[str, Any]:
        """An account as the server stores it (tests set up accounts here, not over HTTP)."""
        now = _naive_now()
        account: dict[str, Any] = {
            "id": account_id or str(uuid.uuid4()), "name": name,
            "accountType": "SECURITIES", "group": "Investments", "currency": currency,
            "isDefault": False, "isActive": True, "isArchived": archived,
            "trackingMode": tracking_mode, "createdAt": now, "updatedAt": now,
            "platformId": None, "accountNumber": None, "meta": None, "provider": None,
            "providerAccountId": None,
        }
        with self.lock:
            self.accounts[account["id"]] = account
        return dict(account)

    # ---------------------------------------------------------------- activities

    def _prepare(self, item: dict[str, Any], *, check_duplicate: bool
                 ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        account = self.accounts.get(item["accountId"])
        if account is None:
            raise DomainError(MSG_NOT_FOUND)
        moment = parse_activity_date(item["activityDate"])
        activity_type = item["activityType"]
        asset, new_asset = self._resolve_asset(item, activity_type)
        currency = item["currency"] or (asset["quoteCcy"] if asset else None) or account[
            "currency"]
        factor = Decimal(1)
        if currency in MINOR_UNITS:
            currency, factor = MINOR_UNITS[currency], Decimal("0.01")
        if activity_type not in ACTIVITY_TYPES:
            raise DomainError(MSG_BAD_TYPE)

        def money(name: str, scaled: bool = True) -> Decimal | None:
            value = item.get(name)
            if value is None:
                return None
            value = abs(value)
            return value * factor if scaled else value

        quantity, unit_price = money("quantity", False), money("unitPrice")
        amount, fee, fx_rate = money("amount"), money("fee"), money("fxRate", False)
        if activity_type in ("TRANSFER_IN", "TRANSFER_OUT") and asset and unit_price is not None:
            amount = None  # value = qty × price
        key = (item.get("idempotencyKey") or "").strip() or _content_hash(
            item["accountId"], activity_type, moment, asset["id"] if asset else "", quantity,
            unit_price, amount, currency, item.get("sourceRecordId"), item.get("notes"))
        if check_duplicate:
            existing = self.idempotency.get(key) or self.phantom_duplicates.get(key)
            if existing:
                raise DomainError(MSG_DUPLICATE.format(id=existing))
        metadata = None
        if item.get("metadata"):
            try:
                metadata = json.loads(item["metadata"])
            except ValueError:
                # stored as sent, not refused (docs/upstream.md#server-quirks)
                metadata = item["metadata"]
        self._seq += 1
        now = datetime.now(UTC)
        record = {
            "id": str(uuid.uuid4()), "accountId": item["accountId"],
            "assetId": asset["id"] if asset else None, "activityType": activity_type,
            "subtype": item.get("subtype"), "status": item.get("status") or "POSTED",
            "activityDate": moment, "quantity": quantity, "unitPrice": unit_price,
            "amount": amount, "fee": fee, "fxRate": fx_rate, "currency": currency,
            "notes": item.get("notes"), "metadata": metadata,
            "needsReview": bool(item.get("needsReview") or False),
            "sourceSystem": item.get("sourceSystem") or "MANUAL",
            "sourceRecordId": item.get("sourceRecordId"),
            "sourceGroupId": item.get("sourceGroupId"), "idempotencyKey": key,
            "createdAt": now, "updatedAt": now, "seq": self._seq, "isUserModified": False,
        }
        return record, new_asset

    def _resolve_asset(self, item: dict[str, Any], activity_type: str
                       ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(asset, asset-to-create) for the activity's symbol object."""
        sym = item.get("symbol")
        ticker = ((sym or {}).get("symbol") or "").strip()
        asset_id = ((sym or {}).get("id") or "").strip()
        needs_asset = (activity_type in ASSET_REQUIRED_TYPES
                       or item.get("subtype") in ASSET_REQUIRED_SUBTYPES)
        if not ticker and not asset_id:
            if needs_asset:
                raise DomainError(MSG_ASSET_REQUIRED)
            return None, None
        # A symbol sent with DEPOSIT/WITHDRAWAL/FEE/TAX/CREDIT links the asset on the
        # create path (dropping it is the CSV import classifier's rule,
        # docs/upstream.md#server-quirks).
        assert sym is not None
        if not ticker:
            asset = self.assets.get(asset_id)
            if asset is None:
                raise DomainError(MSG_NOT_FOUND)
            return asset, None
        # Symbol and MIC are upper-cased before matching (docs/upstream.md#server-quirks).
        ticker = ticker.upper()
        mic = (sym.get("exchangeMic") or "").strip().upper() or None
        if "." in ticker:
            head, suffix = ticker.rsplit(".", 1)
            suffix_mic = YAHOO_SUFFIX_MIC.get(suffix.upper())
            if suffix_mic and head:
                ticker, mic = head, mic or suffix_mic  # an explicit MIC beats the suffix
        instrument_type = (sym.get("instrumentType") or "").strip().upper() or (
            "CRYPTO" if re.fullmatch(r"[A-Z0-9]+-[A-Z]{3}", ticker) and not mic else "EQUITY")
        instrument_type = EQUITY_ALIASES.get(instrument_type, instrument_type)
        for asset in self.assets.values():
            if (asset["symbol"], asset["exchangeMic"], asset["instrumentType"]) == (
                    ticker, mic, instrument_type):
                return asset, None
        quote_ccy = (sym.get("quoteCcy") or "").strip() or None
        quote_mode = sym.get("quoteMode") or "MARKET"
        if quote_ccy is None and instrument_type != "CRYPTO" and quote_mode != "MANUAL":
            raise DomainError(MSG_QUOTE_CCY)
        asset = {"id": str(uuid.uuid4()), "symbol": ticker, "exchangeMic": mic,
                 "instrumentType": instrument_type, "quoteCcy": quote_ccy,
                 "name": sym.get("name") or ticker, "quoteMode": quote_mode}
        return asset, asset

    def _insert(self, record: dict[str, Any], asset: dict[str, Any] | None) -> None:
        if asset is not None:
            self.assets[asset["id"]] = asset
        self.activities[record["id"]] = record
        self.idempotency[record["idempotencyKey"]] = record["id"]

    def _remove_activity(self, activity_id: str) -> dict[str, Any]:
        record = self.activities.pop(activity_id)
        if self.idempotency.get(record["idempotencyKey"]) == activity_id:
            del self.idempotency[record["idempotencyKey"]]  # no tombstone: the key is free
        return record

    def _prepare_update(self, body: dict[str, Any], item: dict[str, Any]
                        ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """(stored row, its new fields, asset to create) for an ActivityUpdate, or a
        DomainError; nothing is written."""
        activity_id = body["id"]
        existing = self.activities.get(activity_id)
        if existing is None:
            raise DomainError(MSG_NOT_FOUND)
        for name, text in (("id", activity_id), ("accountId", item["accountId"]),
                           ("activityType", item["activityType"])):
            if not text.strip():
                raise DomainError(MSG_INVALID.format(f"{name} cannot be empty"))
        account = self.accounts.get(item["accountId"])
        if account is None:
            raise DomainError(MSG_NOT_FOUND)
        activity_type = item["activityType"]
        if activity_type not in ACTIVITY_TYPES:
            raise DomainError(MSG_BAD_TYPE)
        moment = parse_activity_date(item["activityDate"])
        asset, new_asset = self._resolve_asset(item, activity_type)
        currency = item["currency"] or (asset["quoteCcy"] if asset else None) or account[
            "currency"]
        factor = Decimal(1)
        if currency in MINOR_UNITS:
            currency, factor = MINOR_UNITS[currency], Decimal("0.01")
        patched: dict[str, Decimal | None] = {}
        for name, scaled in (("quantity", False), ("unitPrice", True), ("amount", True),
                             ("fee", True), ("fxRate", False)):
            if name not in body:
                patched[name] = existing[name]  # missing: keep
                continue
            value = item[name]  # null or "" → None: clear
            patched[name] = None if value is None else abs(value) * (factor if scaled else 1)
        metadata = existing["metadata"]
        if item.get("metadata"):
            try:
                metadata = json.loads(item["metadata"])
            except ValueError:
                raise DomainError(MSG_INVALID.format("metadata is not valid JSON")) from None
        changes = {
            "accountId": item["accountId"], "assetId": asset["id"] if asset else None,
            "activityType": activity_type,
            "subtype": item.get("subtype") or existing["subtype"],
            "status": item.get("status") or "POSTED", "activityDate": moment,
            "currency": currency, "notes": item.get("notes"), "metadata": metadata,
            "isUserModified": True, "needsReview": False, "updatedAt": datetime.now(UTC),
            **patched,
        }
        return existing, changes, new_asset

    def _transfer_pair(self, a_id: str, b_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(TRANSFER_IN, TRANSFER_OUT) named by {activityAId, activityBId}, in that order."""
        if a_id == b_id:
            raise DomainError(MSG_INVALID.format("Cannot link an activity to itself"))
        a, b = self.activities.get(a_id), self.activities.get(b_id)
        if a is None or b is None:
            raise DomainError(MSG_ACTIVITY_NOT_FOUND)
        kinds = (a["activityType"], b["activityType"])
        if kinds == ("TRANSFER_IN", "TRANSFER_OUT"):
            return a, b
        if kinds == ("TRANSFER_OUT", "TRANSFER_IN"):
            return b, a
        raise DomainError(MSG_INVALID.format(
            "Linking requires one TRANSFER_IN and one TRANSFER_OUT activity"))

    def _link(self, a_id: str, b_id: str) -> list[dict[str, Any]]:
        """POST /activities/link (repository.rs link_transfer_activities): one TRANSFER_IN
        and one TRANSFER_OUT of DIFFERENT accounts, neither grouped yet, get a new shared
        sourceGroupId and metadata.flow.is_external=false. A same-account pair (an FX
        conversion) cannot be linked: it must be created with a shared sourceGroupId."""
        transfer_in, transfer_out = self._transfer_pair(a_id, b_id)
        if transfer_in["sourceGroupId"] or transfer_out["sourceGroupId"]:
            raise DomainError(MSG_INVALID.format(
                "One or both activities are already linked to another transfer"))
        if transfer_in["accountId"] == transfer_out["accountId"]:
            raise DomainError(MSG_INVALID.format("Both transfer legs share the same account"))
        now = datetime.now(UTC)
        group_id = str(uuid.uuid4())
        for leg in (transfer_in, transfer_out):
            metadata: dict[str, Any] = (
                leg["metadata"] if isinstance(leg["metadata"], dict) else {})
            flow: dict[str, Any] = (
                metadata["flow"] if isinstance(metadata.get("flow"), dict) else {})
            leg.update({"sourceGroupId": group_id, "isUserModified": True, "updatedAt": now,
                        "metadata": {**metadata, "flow": {**flow, "is_external": False}}})
        return [self._activity_json(leg) for leg in (transfer_in, transfer_out)]

    # ---------------------------------------------------------------- renderers

    def _activity_json(self, rec: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": rec["id"], "accountId": rec["accountId"], "assetId": rec["assetId"],
            "activityType": rec["activityType"], "activityTypeOverride": None,
            "sourceType": None, "subtype": rec["subtype"], "status": rec["status"],
            "activityDate": rfc3339(rec["activityDate"]),
            "quantity": dec_str(rec["quantity"]), "unitPrice": dec_str(rec["unitPrice"]),
            "amount": dec_str(rec["amount"]), "fee": dec_str(rec["fee"]),
            "fxRate": dec_str(rec["fxRate"]), "currency": rec["currency"], "notes": rec["notes"],
            "sourceSystem": rec["sourceSystem"], "sourceRecordId": rec["sourceRecordId"],
            "sourceGroupId": rec["sourceGroupId"], "idempotencyKey": rec["idempotencyKey"],
            "importRunId": None, "isUserModified": rec.get("isUserModified", False),
            "needsReview": rec["needsReview"],
            "createdAt": rfc3339(rec["createdAt"]), "updatedAt": rfc3339(rec["updatedAt"]),
        }
        if rec["metadata"] is not None:
            out["metadata"] = rec["metadata"]
        return out

    def _details_json(self, rec: dict[str, Any]) -> dict[str, Any]:
        account = self.accounts[rec["accountId"]]
        asset = self.assets.get(rec["assetId"] or "")
        amount = rec["amount"]
        if amount is None and rec["quantity"] is not None and rec["unitPrice"] is not None:
            amount = rec["quantity"] * rec["unitPrice"]
        return {
            "id": rec["id"], "accountId": rec["accountId"], "assetId": rec["assetId"] or "",
            "activityType": rec["activityType"], "subtype": rec["subtype"],
            "status": rec["status"], "date": rfc3339(rec["activityDate"]),
            "quantity": dec_str(rec["quantity"]), "unitPrice": dec_str(rec["unitPrice"]),
            "amount": dec_str(amount), "fee": dec_str(rec["fee"]),
            "fxRate": dec_str(rec["fxRate"]), "currency": rec["currency"],
            "needsReview": rec["needsReview"], "comment": rec["notes"],
            "createdAt": rfc3339(rec["createdAt"]), "updatedAt": rfc3339(rec["updatedAt"]),
            "accountName": account["name"], "accountCurrency": account["currency"],
            "assetSymbol": asset["symbol"] if asset else "",
            "assetName": asset["name"] if asset else None,
            "exchangeMic": asset["exchangeMic"] if asset else None,
            "assetPricingMode": asset["quoteMode"] if asset else None,
            "instrumentType": asset["instrumentType"] if asset else None,
            "sourceSystem": rec["sourceSystem"], "sourceRecordId": rec["sourceRecordId"],
            "sourceGroupId": rec["sourceGroupId"], "idempotencyKey": rec["idempotencyKey"],
            "importRunId": None, "isUserModified": rec.get("isUserModified", False),
            "metadata": rec["metadata"],
        }


def _naive_now() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def rfc3339(moment: datetime) -> str:
    """A stored time as the server keeps and returns it (search's dateFrom/dateTo compare
    this text)."""
    return moment.astimezone(UTC).isoformat()


def _content_hash(account_id: str, activity_type: str, moment: datetime, asset_id: str,
                  quantity: Decimal | None, price: Decimal | None, amount: Decimal | None,
                  currency: str, source_record_id: str | None, notes: str | None) -> str:
    parts = [account_id, activity_type, moment.date().isoformat(), asset_id,
             dec_str(quantity) or "", dec_str(price) or "", dec_str(amount) or "", currency,
             source_record_id or "", " ".join((notes or "").split())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()

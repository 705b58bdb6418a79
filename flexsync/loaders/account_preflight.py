"""Check the Wealthfolio accounts before anything is posted (docs/upstream.md#accounts).

Wealthfolio accepts activities in an archived, inactive or HOLDINGS-mode account and then
ignores them (HOLDINGS accounts are skipped when holdings are rebuilt from activities;
archived ones are left out of search), so a post there "succeeds" and is lost. The
loader therefore reads `GET /accounts?includeArchived=true` first and refuses, with a
message that says what to change, unless every target account exists, is active, is
not archived and tracks transactions. A currency other than the IBKR statement's base
currency is only a warning: Wealthfolio books each activity in its own currency.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import duckdb

from flexsync.core.errors import WealthfolioError

log = logging.getLogger("flexsync.wealthfolio")

# Modes whose accounts Wealthfolio rebuilds from activities (NOT_SET is processed too).
ACTIVITY_TRACKING_MODES = frozenset({"TRANSACTIONS", "NOT_SET"})


class AccountLister(Protocol):
    def list_accounts(self, include_archived: bool = False) -> list[dict[str, Any]]: ...


class AccountPreflightError(WealthfolioError):
    """A target Wealthfolio account cannot receive activities (exit 5, nothing posted)."""


def check_accounts(client: AccountLister, targets: Mapping[str, str | None],
                   base_currencies: Mapping[str, str] | None = None) -> None:
    """Raise AccountPreflightError unless every target account can take activities.

    `targets` maps each Wealthfolio account id to the IBKR account that feeds it (None
    when unknown); `base_currencies` maps IBKR accounts to their statement base currency.
    """
    accounts = {str(a.get("id")): a for a in client.list_accounts(include_archived=True)}
    problems = [problem for account_id, broker in sorted(targets.items())
                if (problem := _problem(account_id, broker, accounts.get(account_id),
                                        accounts.values()))]
    if problems:
        raise AccountPreflightError(
            "Wealthfolio account check failed, nothing was posted:\n  - "
            + "\n  - ".join(problems))
    for account_id, broker in sorted(targets.items()):
        base = (base_currencies or {}).get(broker or "")
        currency = accounts[account_id].get("currency")
        if base and currency and currency != base:
            log.warning(
                "Wealthfolio account %s (%s) is in %s but IBKR account %s reports in %s: "
                "activities keep their own currencies, totals are converted by Wealthfolio",
                accounts[account_id].get("name"), account_id, currency, broker, base)


def _problem(account_id: str, broker: str | None, account: dict[str, Any] | None,
             known: Iterable[dict[str, Any]]) -> str | None:
    source = f" (for IBKR {broker})" if broker else ""
    if account is None:
        usable = [f"{a.get('name')} = {a.get('id')}" for a in known
                  if _problem(str(a.get("id")), None, a, ()) is None]
        hint = ("; accounts that can take activities: " + ", ".join(usable)) if usable else (
            "; Wealthfolio has no account that can take activities: create one "
            "(Tracking mode: Transactions)")
        return (f"account {account_id}{source} does not exist in Wealthfolio: set "
                f"IBKR_ACCOUNT_ID (or IBKR_ACCOUNT_MAP) to an existing account id{hint}")
    name = f"{account.get('name')!r} ({account_id}){source}"
    if account.get("isArchived"):
        return (f"account {name} is archived: Wealthfolio keeps its activities out of "
                "search and holdings; unarchive it in Settings → Accounts, or point "
                "IBKR_ACCOUNT_ID at another account")
    if account.get("isActive") is False:
        return (f"account {name} is inactive: activate it in Settings → Accounts, or point "
                "IBKR_ACCOUNT_ID at another account")
    mode = account.get("trackingMode")
    if mode is not None and str(mode) not in ACTIVITY_TRACKING_MODES:
        return (f"account {name} tracks {mode}: Wealthfolio ignores activities in such an "
                "account when it rebuilds holdings; set its Tracking mode to Transactions "
                "in Settings → Accounts, or point IBKR_ACCOUNT_ID at another account")
    return None


def statement_base_currencies(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """{IBKR account: base currency} from the latest AccountInformation of each account."""
    try:
        rows = con.execute(
            'select "accountId", arg_max(currency, _extracted_at) '
            "from raw_ibkr.account_information "
            'where "accountId" is not null and currency is not null group by 1').fetchall()
    except duckdb.Error:  # no AccountInformation section landed (it is optional)
        return {}
    return {str(account): str(currency) for account, currency in rows}

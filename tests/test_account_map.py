"""IBKR_ACCOUNT_MAP (issue 14): several IBKR accounts, each to its own Wealthfolio account."""

from __future__ import annotations

import pytest

from flexsync.core.config import load_settings
from flexsync.core.errors import ConfigurationError

ISA = "6f1f7a2e-1d0c-4f55-9a35-0d3f2b7c9e11"
GIA = "0b7c2f3e-0000-4000-8000-000000000000"


def test_map_routes_and_guards_exactly_the_mapped_accounts() -> None:
    settings = load_settings({"IBKR_ACCOUNT_MAP": f" U1111111={ISA}, U2222222 = {GIA} ,"})
    assert settings.account_map == (("U1111111", ISA), ("U2222222", GIA))
    assert settings.upstream_account_ids == ("U1111111", "U2222222")
    assert settings.wf_targets == {ISA: "U1111111", GIA: "U2222222"}
    assert settings.account_map_text == f"U1111111={ISA},U2222222={GIA}"
    assert settings.account_label_for(GIA) == "U2222222"
    # The same accounts in IBKR_ACCOUNT_ID_UPSTREAM (any order) are fine.
    same = load_settings({"IBKR_ACCOUNT_MAP": f"U1111111={ISA},U2222222={GIA}",
                          "IBKR_ACCOUNT_ID_UPSTREAM": "U2222222,U1111111"})
    assert set(same.upstream_account_ids) == {"U1111111", "U2222222"}


def test_one_account_form_is_unchanged() -> None:
    settings = load_settings({"IBKR_ACCOUNT_ID": ISA, "IBKR_ACCOUNT_ID_UPSTREAM": "U1111111"})
    assert settings.account_map == () and settings.account_map_text == ""
    assert settings.wf_targets == {ISA: "U1111111"}
    assert settings.account_label_for(ISA) == "ibkr-uk"


@pytest.mark.parametrize(("env", "message"), [
    ({"IBKR_ACCOUNT_MAP": "U1111111"}, "is not IBKR_ACCOUNT=WEALTHFOLIO_ACCOUNT_ID"),
    ({"IBKR_ACCOUNT_MAP": f"U1111111={ISA},U1111111={GIA}"}, "mapped twice"),
    ({"IBKR_ACCOUNT_MAP": "U1 1=x"}, "is not IBKR_ACCOUNT"),
    ({"IBKR_ACCOUNT_MAP": f"U1111111={ISA}", "IBKR_ACCOUNT_ID": GIA}, "both set"),
    ({"IBKR_ACCOUNT_MAP": f"U1111111={ISA}", "IBKR_ACCOUNT_ID_UPSTREAM": "U1111111,U3"},
     "must list exactly the accounts of IBKR_ACCOUNT_MAP"),
])
def test_a_bad_map_is_a_configuration_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_settings(env)
    assert caught.value.exit_code == 2


def test_ibkr_timezone_is_checked() -> None:
    assert load_settings({}).ibkr_timezone == "Europe/London"
    assert load_settings({"IBKR_TIMEZONE": "America/New_York"}).ibkr_timezone == (
        "America/New_York")
    with pytest.raises(ConfigurationError, match="IBKR_TIMEZONE: 'Mars/Olympus' is not an IANA"):
        load_settings({"IBKR_TIMEZONE": "Mars/Olympus"})

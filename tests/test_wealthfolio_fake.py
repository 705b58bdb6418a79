"""The fake Wealthfolio is strict: each item of docs/upstream.md#wealthfolio flexsync uses."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.wealthfolio import FakeWealthfolio
from tests.plugins.wealthfolio_fake import WF_TEST_PASSWORD


def _login(http: httpx.Client, password: str = WF_TEST_PASSWORD) -> httpx.Response:
    return http.post("/auth/login", json={"password": password})


def _session_from(response: httpx.Response) -> str:
    cookie = response.headers["set-cookie"]
    return cookie.split(";", 1)[0].split("=", 1)[1]


@pytest.fixture
def http(fake_wealthfolio: FakeWealthfolio) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_wealthfolio.base_url + "/api/v1", timeout=5) as client:
        yield client


@pytest.fixture
def api(http: httpx.Client) -> httpx.Client:
    """`http` with a valid Bearer token."""
    http.headers["Authorization"] = f"Bearer {_session_from(_login(http))}"
    return http


def _buy(account_id: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accountId": account_id, "activityType": "BUY", "activityDate": "2025-03-14",
        "currency": "GBP", "quantity": "100", "unitPrice": "0.712", "fee": "3",
        "symbol": {"symbol": "VOD", "exchangeMic": "XLON", "quoteCcy": "GBp",
                   "instrumentType": "EQUITY"},
    }
    body.update(extra)
    return body


# ----------------------------------------------------------------------------- basics & auth


def test_public_routes_and_prefix(http: httpx.Client, fake_wealthfolio: FakeWealthfolio) -> None:
    assert http.get("/healthz").text == "ok"
    assert http.get("/auth/status").json() == {"requiresPassword": True}
    assert httpx.get(fake_wealthfolio.base_url + "/activities/search").status_code == 404
    assert http.get("/no-such-route").status_code == 404
    assert http.get("/activities").status_code == 405


def test_login_v31_shape_sets_cookie_and_no_token_in_body(http: httpx.Client) -> None:
    response = _login(http)
    assert response.status_code == 200
    assert response.json() == {"authenticated": True, "expiresIn": 3600}
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("wf_session=")
    for part in ("HttpOnly", "SameSite=Lax", "Path=/api", "Max-Age=3600"):
        assert part in cookie


@pytest.mark.parametrize(("shape", "has_cookie"), [("v3.0.4", True), ("v3.0", False)])
def test_older_login_shapes_return_access_token(shape: str, has_cookie: bool) -> None:
    with FakeWealthfolio("pw", login_shape=shape) as fake:
        response = httpx.post(fake.base_url + "/api/v1/auth/login", json={"password": "pw"})
        body = response.json()
        assert body["tokenType"] == "Bearer" and body["expiresIn"] == 3600
        assert ("set-cookie" in response.headers) is has_cookie
        search = httpx.post(fake.base_url + "/api/v1/activities/search",
                            json={"page": 0, "pageSize": 1},
                            headers={"Authorization": f"Bearer {body['accessToken']}"})
        assert search.status_code == 200


def test_bad_password_and_missing_token(http: httpx.Client) -> None:
    bad = _login(http, "nope")
    assert bad.status_code == 401
    assert bad.json() == {"code": 401, "message": "Invalid password"}
    anon = http.post("/activities/search", json={"page": 0, "pageSize": 10})
    assert anon.status_code == 401
    assert anon.json() == {"code": 401, "message": "Unauthorized"}


def test_bearer_checked_first_then_cookie(http: httpx.Client) -> None:
    token = _session_from(_login(http))
    body = {"page": 0, "pageSize": 10}
    cookie = {"Cookie": f"wf_session={token}"}
    assert http.post("/activities/search", json=body, headers=cookie).status_code == 200
    # A non-Bearer Authorization header wins over a valid cookie: 401.
    basic = {**cookie, "Authorization": "Basic dXNlcjpwdw=="}
    assert http.post("/activities/search", json=body, headers=basic).status_code == 401
    wrong = {**cookie, "Authorization": "Bearer not-a-session"}
    assert http.post("/activities/search", json=body, headers=wrong).status_code == 401
    bearer = {"Authorization": f"Bearer {token}"}
    assert http.post("/activities/search", json=body, headers=bearer).status_code == 200


def test_expired_sessions_get_401(api: httpx.Client, fake_wealthfolio: FakeWealthfolio) -> None:
    body = {"page": 0, "pageSize": 10}
    assert api.post("/activities/search", json=body).status_code == 200
    fake_wealthfolio.expire_sessions()
    assert api.post("/activities/search", json=body).status_code == 401


def test_ttl_expiry_and_sliding_cookie(api: httpx.Client,
                            fake_wealthfolio: FakeWealthfolio) -> None:
    body = {"page": 0, "pageSize": 10}
    fake_wealthfolio.advance(2000)  # past half of the 3600 s TTL: a fresh cookie comes back
    refreshed = api.post("/activities/search", json=body)
    assert refreshed.status_code == 200 and "wf_session=" in refreshed.headers["set-cookie"]
    fake_wealthfolio.advance(2000)
    assert api.post("/activities/search", json=body).status_code == 401


def test_login_rate_limit_five_per_minute(http: httpx.Client,
                                          fake_wealthfolio: FakeWealthfolio) -> None:
    statuses = [_login(http, "wrong").status_code for _ in range(5)]
    assert statuses == [401] * 5
    limited = _login(http)
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("text/plain")
    assert limited.text.startswith("Too Many Requests! Wait for ")
    assert limited.text.endswith("s")
    assert int(limited.headers["retry-after"]) > 0
    fake_wealthfolio.advance(13)  # one token back every 12 s
    assert _login(http).status_code == 200


def test_no_password_means_open_server() -> None:
    with FakeWealthfolio(None) as fake:
        base = fake.base_url + "/api/v1"
        assert httpx.get(base + "/auth/status").json() == {"requiresPassword": False}
        login = httpx.post(base + "/auth/login", json={"password": "x"})
        assert login.status_code == 404
        assert httpx.get(base + "/accounts").status_code == 200


# ----------------------------------------------------------------------------- accounts


def test_accounts_list_hides_archived_and_search_skips_them(
        api: httpx.Client, wf_account_id: str, fake_wealthfolio: FakeWealthfolio) -> None:
    archived = fake_wealthfolio.create_account("Old ISA", "GBP", archived=True)["id"]
    assert api.post("/activities", json=_buy(archived, idempotencyKey="k-1")).status_code \
        == 200
    listed = api.get("/accounts").json()
    assert [a["id"] for a in listed] == [wf_account_id]
    assert listed[0]["trackingMode"] == "TRANSACTIONS" and listed[0]["isArchived"] is False
    all_ids = [a["id"] for a in api.get("/accounts", params={"includeArchived": "true"}).json()]
    assert archived in all_ids
    # Archived accounts' activities never show in search.
    search = api.post("/activities/search", json={"page": 0, "pageSize": 10}).json()
    assert search["meta"]["totalRowCount"] == 0


# ----------------------------------------------------------------------------- create


def test_create_normalises_and_returns_strings(api: httpx.Client, wf_account_id: str) -> None:
    body = _buy(wf_account_id, activityDate="2025-03-14T14:30:00+01:00", currency="GBp",
                unitPrice=71.2, fee="300", quantity="-100",
                symbol={"symbol": "VOD.L", "quoteCcy": "GBp"})
    created = api.post("/activities", json=body).json()
    uuid.UUID(created["id"])
    assert created["activityDate"] == "2025-03-14T13:30:00+00:00"
    assert created["currency"] == "GBP"
    # Pence become pounds (× 0.01) and the text keeps the scale that gives
    # (docs/upstream.md#server-quirks).
    assert created["unitPrice"] == "0.712" and created["fee"] == "3.00"
    assert created["quantity"] == "100"  # absolute value
    assert created["sourceSystem"] == "MANUAL"
    assert len(created["idempotencyKey"]) == 64  # content hash when none is given
    details = api.post("/activities/search", json={"page": 0, "pageSize": 10}).json()["data"][0]
    assert details["assetSymbol"] == "VOD" and details["exchangeMic"] == "XLON"
    assert details["date"] == "2025-03-14T13:30:00+00:00"


def test_date_only_is_midnight_utc_and_bad_dates_400(api: httpx.Client,
                                                     wf_account_id: str) -> None:
    ok = api.post("/activities", json=_buy(wf_account_id, activityDate="2025-03-14"))
    assert ok.json()["activityDate"] == "2025-03-14T00:00:00+00:00"
    for bad in ("14/03/2025", "2025-03-14T10:00:00", "2025-02-30", ""):
        response = api.post("/activities", json=_buy(wf_account_id, activityDate=bad))
        assert response.status_code == 400, bad
        assert "Invalid date format" in response.json()["message"]


@pytest.mark.parametrize("missing", ["accountId", "activityType", "activityDate", "currency"])
def test_required_keys_missing_is_422_text(api: httpx.Client, wf_account_id: str,
                                           missing: str) -> None:
    body = _buy(wf_account_id)
    del body[missing]
    response = api.post("/activities", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith(
        "Failed to deserialize the JSON body into the target type: "
        f"missing field `{missing}`")


def test_body_errors_415_400_422(api: httpx.Client, wf_account_id: str,
                                fake_wealthfolio: FakeWealthfolio) -> None:
    wrong_type = api.post("/activities", content=b"{}", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    assert wrong_type.text == "Expected request with `Content-Type: application/json`"
    no_type = api.post("/activities", content=b"{}")
    assert no_type.status_code == 415
    invalid = api.post("/activities", content=b"{not json",
                       headers={"Content-Type": "application/json"})
    assert invalid.status_code == 400
    assert invalid.text.startswith("Failed to parse the request body as JSON: ")
    both = api.post("/activities", json=_buy(wf_account_id, notes="a", comment="b"))
    assert both.status_code == 422 and "duplicate field" in both.text
    not_number = api.post("/activities", json=_buy(wf_account_id, quantity="ten"))
    assert not_number.status_code == 422
    bad_status = api.post("/activities", json=_buy(wf_account_id, status="LIVE"))
    assert bad_status.status_code == 422 and "unknown variant" in bad_status.text
    # Auth is checked before the body (middleware runs before the extractor).
    anon = httpx.post(fake_wealthfolio.base_url + "/api/v1/activities", content=b"x")
    assert anon.status_code == 401


def test_comment_alias_and_numbers_as_json_numbers(api: httpx.Client,
                                                   wf_account_id: str) -> None:
    created = api.post("/activities", json=_buy(wf_account_id, comment="via alias",
                                                quantity=5, unitPrice=1.25)).json()
    assert created["notes"] == "via alias"
    assert created["quantity"] == "5" and created["unitPrice"] == "1.25"
    sci = api.post("/activities", json=_buy(wf_account_id, quantity="1e2",
                                            idempotencyKey="sci")).json()
    assert sci["quantity"] == "100"


def test_unknown_account_and_type(api: httpx.Client, wf_account_id: str) -> None:
    unknown = api.post("/activities", json=_buy(str(uuid.uuid4())))
    assert unknown.status_code == 400
    assert unknown.json()["message"] == (
        "Database operation failed: Record not found: Record not found")
    bad_type = api.post("/activities", json={
        "accountId": wf_account_id, "activityType": "ADD_HOLDING",
        "activityDate": "2025-03-14", "currency": "GBP", "amount": "1"})
    assert bad_type.status_code == 400


@pytest.mark.parametrize("kind", ["BUY", "SELL", "SPLIT", "DIVIDEND", "ADJUSTMENT"])
def test_asset_required(api: httpx.Client, wf_account_id: str, kind: str) -> None:
    body = _buy(wf_account_id, activityType=kind)
    del body["symbol"]
    response = api.post("/activities", json=body)
    assert response.status_code == 400
    assert response.json()["message"] == (
        "Activity error: Invalid data: Asset-backed activities need either asset_id or symbol")


def test_quote_currency_required_for_new_equity(api: httpx.Client, wf_account_id: str) -> None:
    body = _buy(wf_account_id, symbol={"symbol": "AZN", "exchangeMic": "XLON"})
    response = api.post("/activities", json=body)
    assert response.status_code == 400
    assert response.json()["message"] == (
        "Activity error: Invalid data: Quote currency is required. Please re-select the symbol.")
    manual = _buy(wf_account_id, symbol={"symbol": "AZN", "exchangeMic": "XLON",
                                         "quoteMode": "MANUAL"})
    assert api.post("/activities", json=manual).status_code == 200
    # Once the asset exists, no quote currency is needed.
    again = _buy(wf_account_id, symbol={"symbol": "AZN", "exchangeMic": "XLON"}, quantity="7")
    assert api.post("/activities", json=again).status_code == 200
    # Without a key the content hash dedupes (the fee is not part of it, as in MIRROR).
    same = _buy(wf_account_id, symbol={"symbol": "AZN", "exchangeMic": "XLON"}, quantity="7",
                fee="9")
    assert "Duplicate activity detected" in api.post("/activities", json=same).json()["message"]


def test_assets_keyed_by_symbol_mic_type(api: httpx.Client, wf_account_id: str,
                                         fake_wealthfolio: FakeWealthfolio) -> None:
    first = api.post("/activities", json=_buy(wf_account_id, idempotencyKey="a1")).json()
    suffixed = api.post("/activities", json=_buy(
        wf_account_id, idempotencyKey="a2", symbol={"symbol": "VOD.L", "quoteCcy": "GBp"})).json()
    other_mic = api.post("/activities", json=_buy(
        wf_account_id, idempotencyKey="a3", symbol={"symbol": "VOD", "exchangeMic": "XNAS",
                                        "quoteCcy": "USD"})).json()
    assert first["assetId"] == suffixed["assetId"] != other_mic["assetId"]
    uuid.UUID(first["assetId"])
    assert len(fake_wealthfolio.assets) == 2


def test_cash_activity_has_no_asset(api: httpx.Client, wf_account_id: str) -> None:
    created = api.post("/activities", json={
        "accountId": wf_account_id, "activityType": "DEPOSIT", "activityDate": "2025-03-01",
        "amount": "5000", "currency": "GBP", "idempotencyKey": "dep-1"}).json()
    assert created["assetId"] is None
    row = api.post("/activities/search", json={"page": 0, "pageSize": 5}).json()["data"][0]
    assert row["assetId"] == "" and row["assetSymbol"] == ""
    assert row["amount"] == "5000"


def test_currency_blank_falls_back_to_account(api: httpx.Client, wf_account_id: str) -> None:
    created = api.post("/activities", json={
        "accountId": wf_account_id, "activityType": "FEE", "activityDate": "2025-03-01",
        "amount": "2", "currency": ""}).json()
    assert created["currency"] == "GBP"


def test_global_idempotency_and_exact_duplicate_message(
        api: httpx.Client, wf_account_id: str, fake_wealthfolio: FakeWealthfolio) -> None:
    first = api.post("/activities", json=_buy(wf_account_id, idempotencyKey="ibkr:trade:1"))
    activity_id = first.json()["id"]
    other_account = fake_wealthfolio.create_account("Other", "USD")["id"]
    again = api.post("/activities", json=_buy(other_account, idempotencyKey="ibkr:trade:1"))
    assert again.status_code == 400
    assert again.json() == {"code": 400, "message": (
        "Activity error: Invalid data: Duplicate activity detected. A matching activity "
        f"already exists (id: {activity_id}).")}
    # Keys are kept verbatim, after trimming.
    trimmed = api.post("/activities", json=_buy(wf_account_id, idempotencyKey="  ibkr:trade:1 "))
    assert trimmed.status_code == 400


def test_check_duplicates(api: httpx.Client, wf_account_id: str,
                          fake_wealthfolio: FakeWealthfolio) -> None:
    created = api.post("/activities", json=_buy(wf_account_id, idempotencyKey="a")).json()
    phantom = fake_wealthfolio.add_phantom_duplicate("never-posted")
    answer = api.post("/activities/import/check-duplicates",
                      json={"idempotencyKeys": ["a", "b", "never-posted"]})
    assert answer.json() == {"duplicates": {"a": created["id"], "never-posted": phantom}}
    assert api.post("/activities/import/check-duplicates", json={}).status_code == 422
    # The phantom key is also refused on create, as if it existed.
    refused = api.post("/activities", json=_buy(wf_account_id, idempotencyKey="never-posted"))
    assert f"(id: {phantom})" in refused.json()["message"]


def test_delete_activity_frees_key(api: httpx.Client, wf_account_id: str) -> None:
    created = api.post("/activities", json=_buy(wf_account_id, idempotencyKey="d")).json()
    deleted = api.delete(f"/activities/{created['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == created["id"]
    again = api.delete(f"/activities/{created['id']}")
    assert again.status_code == 400
    assert again.json()["message"] == (
        "Database operation failed: Record not found: Record not found")
    assert api.post("/activities", json=_buy(wf_account_id, idempotencyKey="d")).status_code \
        == 200


def test_bulk_all_or_nothing(api: httpx.Client, wf_account_id: str,
                             fake_wealthfolio: FakeWealthfolio) -> None:
    good = _buy(wf_account_id, idempotencyKey="b1", id="tmp-1")
    bad = _buy(wf_account_id, idempotencyKey="b2", id="tmp-2")
    del bad["symbol"]
    refused = api.post("/activities/bulk", json={"creates": [good, bad]}).json()
    assert refused["created"] == [] and refused["errors"][0]["id"] == "tmp-2"
    assert not fake_wealthfolio.activities
    done = api.post("/activities/bulk", json={"creates": [good]}).json()
    assert done["createdMappings"][0]["tempId"] == "tmp-1"
    clash = api.post("/activities/bulk", json={"creates": [good]})
    assert clash.status_code == 400
    assert clash.json()["message"].endswith("A matching activity already exists.")


# ----------------------------------------------------------------------------- search


def test_search_requires_page_and_page_size(api: httpx.Client) -> None:
    assert api.post("/activities/search", json={"pageSize": 10}).status_code == 422
    assert api.post("/activities/search", json={"page": 0}).status_code == 422
    assert api.post("/activities/search",
                    json={"page": "0", "pageSize": 1}).status_code == 422
    # A filter the server honours but the fake does not implement is refused, not ignored.
    unsupported = api.post("/activities/search",
                           json={"page": 0, "pageSize": 1, "activityTypeFilter": ["BUY"]})
    assert unsupported.status_code == 501


def test_search_by_date_compares_days_with_the_stored_utc_date(
        api: httpx.Client, wf_account_id: str) -> None:
    """The server's repository: `activity_date >= 'YYYY-MM-DDT00:00:00'` and
    `<= 'YYYY-MM-DDT23:59:59'` on the stored RFC 3339 UTC text; both inclusive."""
    for key, when in (("d1", "2025-03-13T23:59:59Z"), ("d2", "2025-03-13T20:30:00-04:00"),
                      ("d3", "2025-03-15T00:00:00+00:00"), ("d4", "2025-03-16T01:00:00+02:00")):
        created = api.post("/activities", json=_buy(wf_account_id, idempotencyKey=key,
                                                    activityDate=when))
        assert created.status_code == 200, created.text

    def keys(**dates: str) -> list[str]:
        answer = api.post("/activities/search", json={"page": 0, "pageSize": 10, **dates})
        assert answer.status_code == 200, answer.text
        assert answer.json()["meta"]["totalRowCount"] == len(answer.json()["data"])
        return sorted(row["idempotencyKey"] for row in answer.json()["data"])

    # d2 is the 14th in UTC (00:30); d4 the 15th (23:00).
    assert keys(dateFrom="2025-03-14") == ["d2", "d3", "d4"]
    assert keys(dateFrom="2025-03-15") == ["d3", "d4"]
    assert keys(dateTo="2025-03-14") == ["d1", "d2"]
    assert keys(dateFrom="2025-03-14", dateTo="2025-03-14") == ["d2"]
    assert keys(dateFrom="2025-03-16") == []

    for bad, message in (("14/03/2025", "Invalid dateFrom: input contains invalid characters"),
                         ("2025-02-30", "Invalid dateFrom: input is out of range")):
        refused = api.post("/activities/search",
                           json={"page": 0, "pageSize": 1, "dateFrom": bad})
        assert refused.status_code == 400
        assert refused.json()["message"] == message
    wrong_type = api.post("/activities/search", json={"page": 0, "pageSize": 1, "dateTo": 20250314})
    assert wrong_type.status_code == 422


def test_search_pages_filters_and_sorts(api: httpx.Client, wf_account_id: str,
                                        fake_wealthfolio: FakeWealthfolio) -> None:
    other = fake_wealthfolio.create_account("Other", "GBP")["id"]
    for day in ("2025-01-01", "2025-03-01", "2025-02-01"):
        api.post("/activities", json=_buy(wf_account_id, activityDate=day,
                                          idempotencyKey=f"k-{day}"))
    api.post("/activities", json=_buy(other, idempotencyKey="other"))
    body = {"page": 0, "pageSize": 2, "accountIdFilter": wf_account_id}
    first = api.post("/activities/search", json=body).json()
    assert first["meta"]["totalRowCount"] == 3
    assert [r["date"][:10] for r in first["data"]] == ["2025-03-01", "2025-02-01"]
    second = api.post("/activities/search", json={**body, "page": 1}).json()
    assert [r["date"][:10] for r in second["data"]] == ["2025-01-01"]
    as_list = api.post("/activities/search",
                       json={**body, "accountIdFilter": [other], "pageSize": 10}).json()
    assert [r["idempotencyKey"] for r in as_list["data"]] == ["other"]
    row = first["data"][0]
    for key in ("id", "accountId", "assetId", "activityType", "date", "quantity", "unitPrice",
                "amount", "fee", "currency", "comment", "assetSymbol", "exchangeMic",
                "instrumentType", "idempotencyKey", "sourceSystem", "sourceRecordId",
                "accountName", "accountCurrency", "status"):
        assert key in row, key
    assert isinstance(row["quantity"], str)


# -----------------------------------------------------------------------------
# docs/upstream.md#server-quirks


def test_cash_activity_with_a_symbol_links_the_asset(api: httpx.Client,
                                                     wf_account_id: str) -> None:
    body = {"accountId": wf_account_id, "activityType": "TAX", "activityDate": "2025-03-14",
            "currency": "USD", "amount": "0.39",
            "symbol": {"symbol": "AAPL", "exchangeMic": "XNAS", "quoteCcy": "USD"}}
    created = api.post("/activities", json=body).json()
    assert created["assetId"]
    details = api.post("/activities/search", json={"page": 0, "pageSize": 10}).json()["data"]
    assert details[0]["assetSymbol"] == "AAPL"


def test_instrument_types_and_case_are_folded(api: httpx.Client, wf_account_id: str,
                                              fake_wealthfolio: FakeWealthfolio) -> None:
    for n, (ticker, mic, kind) in enumerate([("VUAG", "XLON", "ETF"), ("vuag", "xlon", "STOCK"),
                                             ("Vuag", "XLON", "FUND"), ("VUAG", "XLON", None)]):
        symbol = {"symbol": ticker, "exchangeMic": mic, "quoteCcy": "GBP"}
        if kind:
            symbol["instrumentType"] = kind
        assert api.post("/activities", json=_buy(wf_account_id, idempotencyKey=f"k{n}",
                                                 symbol=symbol)).status_code == 200
    assert [(a["symbol"], a["exchangeMic"], a["instrumentType"])
            for a in fake_wealthfolio.assets.values()] == [("VUAG", "XLON", "EQUITY")]


def test_unknown_quote_mode_and_bad_metadata_are_stored(api: httpx.Client,
                                                        wf_account_id: str) -> None:
    body = _buy(wf_account_id, metadata="{not json",
                symbol={"symbol": "NEWCO", "exchangeMic": "XLON", "quoteCcy": "GBP",
                        "quoteMode": "SOMETHING_NEW"})
    assert api.post("/activities", json=body).status_code == 200


def test_page_size_zero_returns_everything(api: httpx.Client, wf_account_id: str) -> None:
    for n in range(3):
        api.post("/activities", json=_buy(wf_account_id, idempotencyKey=f"p{n}"))
    page = api.post("/activities/search", json={"page": 0, "pageSize": 0}).json()
    assert len(page["data"]) == 3 and page["meta"]["totalRowCount"] == 3


def test_holdings_mode_and_archived_accounts_accept_posts(
        api: httpx.Client, fake_wealthfolio: FakeWealthfolio) -> None:
    """Neither refuses a post (docs/upstream.md#accounts); a HOLDINGS account's holdings ignore
    activities."""
    holdings_mode = fake_wealthfolio.create_account("H", "GBP", tracking_mode="HOLDINGS")["id"]
    archived = fake_wealthfolio.create_account("A", "GBP", archived=True)["id"]
    for account in (holdings_mode, archived):
        assert api.post("/activities", json=_buy(account, idempotencyKey=account)
                        ).status_code == 200
    assert api.get("/holdings", params={"accountId": holdings_mode}).json() == []
    assert api.get("/holdings", params={"accountId": archived}).json() != []


# ----------------------------------------------------------------------------- holdings


def test_holdings_from_posted_activities(api: httpx.Client, wf_account_id: str) -> None:
    def post(kind: str, day: str, key: str, **extra: Any) -> None:
        body = _buy(wf_account_id, activityType=kind, activityDate=day, idempotencyKey=key)
        body.update(extra)
        assert api.post("/activities", json=body).status_code == 200, key

    post("BUY", "2025-01-01", "h1")
    post("SELL", "2025-01-02", "h2", quantity="30")
    post("SPLIT", "2025-01-03", "h3", amount="2", quantity=None, unitPrice=None)
    post("TRANSFER_IN", "2025-01-04", "h4", quantity="10")
    post("BUY", "2025-01-05", "h5", status="DRAFT")  # not POSTED: ignored
    holdings = api.get("/holdings", params={"accountId": wf_account_id}).json()
    security = next(h for h in holdings if h["holdingType"] == "security")
    assert security["quantity"] == 150  # (100 − 30) × 2 + 10, as a JSON number
    assert security["instrument"]["symbol"] == "VOD"
    assert security["instrument"]["exchangeMic"] == "XLON"
    assert any(h["holdingType"] == "cash" for h in holdings)
    assert api.get("/holdings").status_code == 400


@pytest.mark.parametrize(("asset_ccy", "quote_price", "quote_ccy", "expected_price"), [
    ("GBP", "92.15", "GBP", "92.15"),   # GBP-quoted ETF (VUAG.L), asset in GBP
    ("GBP", "9215", "GBp", "92.15"),    # GBp-quoted share, asset in GBP: still right
    ("GBp", "9215", "GBp", "92.15"),
    # the minor unit wins (docs/upstream.md#quote-currency) -> 1/100 of its worth
    ("GBp", "92.15", "GBP", "0.9215"),
    ("USD", "10", "USD", "10"),
])
def test_holdings_value_with_the_minor_unit_rule(
        api: httpx.Client, wf_account_id: str, fake_wealthfolio: FakeWealthfolio,
        asset_ccy: str, quote_price: str, quote_ccy: str, expected_price: str) -> None:
    body = _buy(wf_account_id, quantity="10", unitPrice="90",
                symbol={"symbol": "VUAG", "exchangeMic": "XLON", "quoteCcy": asset_ccy})
    assert api.post("/activities", json=body).status_code == 200
    fake_wealthfolio.set_market_quote("vuag", "xlon", quote_price, quote_ccy)
    holdings = api.get("/holdings", params={"accountId": wf_account_id},
                       headers={"Accept": "application/json"}).json()
    security = next(h for h in holdings if h["holdingType"] == "security")
    assert Decimal(str(security["marketValue"]["local"])) == Decimal(expected_price) * 10


# ----------------------------------------------------------------------------- faults


def test_fault_hooks(api: httpx.Client, wf_account_id: str,
                     fake_wealthfolio: FakeWealthfolio) -> None:
    fake_wealthfolio.fail_nth_create(2)
    assert api.post("/activities", json=_buy(wf_account_id, idempotencyKey="f1")).status_code \
        == 200
    failed = api.post("/activities", json=_buy(wf_account_id, idempotencyKey="f2"))
    assert failed.status_code == 500 and fake_wealthfolio.activity_by_key("f2") is None

    fake_wealthfolio.fail_nth_create(1, store=True)
    lost = api.post("/activities", json=_buy(wf_account_id, idempotencyKey="f3"))
    assert lost.status_code == 500 and fake_wealthfolio.activity_by_key("f3") is not None

    fake_wealthfolio.fail_nth_create(1, store=True, drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/activities", json=_buy(wf_account_id, idempotencyKey="f4"))
    assert fake_wealthfolio.activity_by_key("f4") is not None

    fake_wealthfolio.malformed_json(path="/activities/search")
    broken = api.post("/activities/search", json={"page": 0, "pageSize": 1})
    with pytest.raises(ValueError):
        broken.json()

    fake_wealthfolio.error_storm(2, status=503)
    assert [api.get("/accounts").status_code for _ in range(3)] == [503, 503, 200]

    fake_wealthfolio.slow_down(0.5, path="/accounts")
    with pytest.raises(httpx.ReadTimeout):
        api.get("/accounts", timeout=0.1)

    fake_wealthfolio.expire_sessions_on("GET", "/accounts", skip=1)
    assert [api.get("/accounts").status_code for _ in range(2)] == [200, 401]


def test_requests_are_recorded_without_secrets(api: httpx.Client,
                                               fake_wealthfolio: FakeWealthfolio) -> None:
    api.get("/accounts")
    login, accounts = fake_wealthfolio.requests[0], fake_wealthfolio.requests[1]
    assert login.json == {"password": "<redacted>"}
    assert accounts.auth == "bearer" and "authorization" not in accounts.headers
    assert WF_TEST_PASSWORD not in repr(fake_wealthfolio.requests)


def test_runs_as_a_process() -> None:
    account = str(uuid.uuid4())
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakes.wealthfolio", "--host", "127.0.0.1",
         "--port", "0", "--password", "pw", "--account-id", account],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake-wealthfolio ready on http://127.0.0.1:")
        base = line.split()[3]
        token = httpx.post(base + "/api/v1/auth/login", json={"password": "pw"}).headers[
            "set-cookie"].split(";")[0].split("=", 1)[1]
        accounts = httpx.get(base + "/api/v1/accounts",
                             headers={"Authorization": f"Bearer {token}"}).json()
        assert accounts[0]["id"] == account
        assert accounts[0]["trackingMode"] == "TRANSACTIONS"
        assert accounts[0]["currency"] == "GBP"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0


# ----------------------------------------------------------------------------- update, link


def test_update_patches_decimals_and_keeps_identity(api: httpx.Client, wf_account_id: str,
                                                    fake_wealthfolio: FakeWealthfolio) -> None:
    created = api.post("/activities", json=_buy(
        wf_account_id, idempotencyKey="ibkr:u1", sourceSystem="IBKR", sourceRecordId="r1",
        sourceGroupId="g1", notes="first")).json()
    body = {"id": created["id"], "accountId": wf_account_id, "activityType": "BUY",
            "activityDate": "2025-03-15", "currency": "GBP", "unitPrice": "0.8",
            "fee": None, "notes": "second",
            "symbol": {"symbol": "VOD", "exchangeMic": "XLON"}}
    response = api.put("/activities", json=body)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["id"] == created["id"]
    assert updated["quantity"] == "100"  # missing key: kept
    assert updated["unitPrice"] == "0.8"  # value: set
    assert updated["fee"] is None  # null: cleared
    assert updated["activityDate"] == "2025-03-15T00:00:00+00:00"
    assert updated["notes"] == "second"
    assert updated["isUserModified"] is True and updated["needsReview"] is False
    for kept in ("idempotencyKey", "sourceSystem", "sourceRecordId", "sourceGroupId",
                 "createdAt", "assetId"):
        assert updated[kept] == created[kept], kept
    assert created["isUserModified"] is False
    assert (fake_wealthfolio.activity_by_key("ibkr:u1") or {})["unitPrice"] == "0.8"
    row = api.post("/activities/search", json={"page": 0, "pageSize": 10}).json()["data"][0]
    assert row["isUserModified"] is True and row["unitPrice"] == "0.8"


def test_update_status_defaults_to_posted_and_subtype_is_kept(api: httpx.Client,
                                                              wf_account_id: str) -> None:
    created = api.post("/activities", json={
        "accountId": wf_account_id, "activityType": "FEE", "activityDate": "2025-03-01",
        "currency": "GBP", "amount": "5", "subtype": "MANAGEMENT_FEE",
        "status": "PENDING"}).json()
    updated = api.put("/activities", json={
        "id": created["id"], "accountId": wf_account_id, "activityType": "FEE",
        "activityDate": "2025-03-01", "currency": "GBP", "amount": "-7"}).json()
    assert updated["status"] == "POSTED"
    assert updated["subtype"] == "MANAGEMENT_FEE"
    assert updated["amount"] == "7"  # absolute value, as on create


def test_update_errors(api: httpx.Client, wf_account_id: str) -> None:
    created = api.post("/activities", json=_buy(wf_account_id)).json()
    base = {"id": created["id"], "accountId": wf_account_id, "activityType": "BUY",
            "activityDate": "2025-03-15", "currency": "GBP",
            "symbol": {"symbol": "VOD", "exchangeMic": "XLON"}}
    unknown = api.put("/activities", json={**base, "id": str(uuid.uuid4())})
    assert unknown.status_code == 400
    assert unknown.json()["message"].startswith("Database operation failed: Record not found")
    for key in ("id", "accountId", "activityType", "activityDate", "currency"):
        missing = api.put("/activities", json={k: v for k, v in base.items() if k != key})
        assert missing.status_code == 422, key
        assert f"missing field `{key}`" in missing.text
    bad_date = api.put("/activities", json={**base, "activityDate": "15/03/2025"})
    assert bad_date.status_code == 400
    no_asset = api.put("/activities", json={k: v for k, v in base.items() if k != "symbol"})
    assert no_asset.status_code == 400 and "asset_id or symbol" in no_asset.json()["message"]
    other_account = api.put("/activities", json={**base, "accountId": "nope"})
    assert other_account.status_code == 400


def test_delete_returns_the_row_and_unknown_is_400(api: httpx.Client, wf_account_id: str) -> None:
    created = api.post("/activities", json=_buy(wf_account_id, idempotencyKey="d1")).json()
    deleted = api.delete(f"/activities/{created['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == created["id"]
    again = api.delete(f"/activities/{created['id']}")
    assert again.status_code == 400
    assert again.json() == {"code": 400,
                            "message": "Database operation failed: Record not found: "
                                       "Record not found"}


def _transfer(api: httpx.Client, account_id: str, kind: str, **extra: Any) -> dict[str, Any]:
    body = {"accountId": account_id, "activityType": kind, "activityDate": "2025-03-01",
            "currency": "GBP", "amount": "100", **extra}
    response = api.post("/activities", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_link_transfer_legs(api: httpx.Client, wf_account_id: str,
                            fake_wealthfolio: FakeWealthfolio) -> None:
    other = fake_wealthfolio.create_account("Bank", "GBP")["id"]
    out_leg = _transfer(api, wf_account_id, "TRANSFER_OUT")
    in_leg = _transfer(api, other, "TRANSFER_IN", metadata='{"source":{"id":"x"}}')
    linked = api.post("/activities/link",
                      json={"activityAId": out_leg["id"], "activityBId": in_leg["id"]})
    assert linked.status_code == 200, linked.text
    first, second = linked.json()
    assert (first["id"], second["id"]) == (in_leg["id"], out_leg["id"])  # IN first
    assert first["sourceGroupId"] and first["sourceGroupId"] == second["sourceGroupId"]
    assert first["isUserModified"] and second["isUserModified"]
    assert first["metadata"] == {"source": {"id": "x"}, "flow": {"is_external": False}}
    again = api.post("/activities/link",
                     json={"activityAId": in_leg["id"], "activityBId": out_leg["id"]})
    assert again.status_code == 400 and "already linked" in again.json()["message"]


def test_link_is_strict_like_the_server(api: httpx.Client, wf_account_id: str,
                                        fake_wealthfolio: FakeWealthfolio) -> None:
    out_leg = _transfer(api, wf_account_id, "TRANSFER_OUT")
    same_in = _transfer(api, wf_account_id, "TRANSFER_IN", currency="USD")
    deposit = _transfer(api, wf_account_id, "DEPOSIT")

    def link(a: str, b: str) -> httpx.Response:
        return api.post("/activities/link", json={"activityAId": a, "activityBId": b})

    same = link(out_leg["id"], same_in["id"])
    assert same.status_code == 400
    assert same.json()["message"] == ("Activity error: Invalid data: Both transfer legs share "
                                      "the same account")
    wrong_types = link(out_leg["id"], deposit["id"])
    assert wrong_types.status_code == 400
    assert "one TRANSFER_IN and one TRANSFER_OUT" in wrong_types.json()["message"]
    itself = link(out_leg["id"], out_leg["id"])
    assert itself.status_code == 400 and "itself" in itself.json()["message"]
    unknown = link(out_leg["id"], str(uuid.uuid4()))
    assert unknown.status_code == 400 and "Record not found" in unknown.json()["message"]
    shape = api.post("/activities/link", json={"activityAId": out_leg["id"]})
    assert shape.status_code == 422 and "missing field `activityBId`" in shape.text
    stored = fake_wealthfolio.activity_by_key(out_leg["idempotencyKey"]) or {}
    assert stored["sourceGroupId"] is None  # nothing changed


def test_same_account_conversion_keeps_its_group_and_books_both_currencies(
        api: httpx.Client, wf_account_id: str) -> None:
    _transfer(api, wf_account_id, "TRANSFER_OUT", amount="100", fee="1.5",
              sourceGroupId="fx-1")
    leg = _transfer(api, wf_account_id, "TRANSFER_IN", currency="USD", amount="126.5",
                    sourceGroupId="fx-1")
    assert leg["sourceGroupId"] == "fx-1"
    holdings = api.get("/holdings", params={"accountId": wf_account_id}).json()
    cash = {h["instrument"]["symbol"]: h["quantity"] for h in holdings
            if h["holdingType"] == "cash"}
    assert cash == {"GBP": -101.5, "USD": 126.5}
    assert not [h for h in holdings if h["holdingType"] == "security"]


def test_holdings_cash_follows_the_charge_rule(api: httpx.Client, wf_account_id: str) -> None:
    """FEE/TAX book −fee when fee ≠ 0, else −amount (the fake used to book TAX's amount)."""
    for kind, extra in (("DEPOSIT", {"amount": "1000", "fee": "2"}),
                        ("FEE", {"amount": "50", "fee": "3"}),
                        ("TAX", {"amount": "40", "fee": "4"}),
                        ("TAX", {"amount": "7"}),
                        ("WITHDRAWAL", {"amount": "100", "fee": "1"})):
        _transfer(api, wf_account_id, kind, **extra)
    holdings = api.get("/holdings", params={"accountId": wf_account_id}).json()
    cash = [h["quantity"] for h in holdings if h["holdingType"] == "cash"]
    assert cash == [998 - 3 - 4 - 7 - 101]


def test_bulk_updates_and_deletes_are_not_implemented(api: httpx.Client,
                                                     wf_account_id: str) -> None:
    """Only bulk creates are served (the benchmarks preload with them): anything else is
    refused loudly rather than ignored."""
    created = api.post("/activities", json=_buy(wf_account_id, idempotencyKey="bu1")).json()
    refused = api.post("/activities/bulk", json={"deleteIds": [created["id"]]})
    assert refused.status_code == 501
    assert api.post("/activities/search", json={"page": 0, "pageSize": 10}).json()[
        "meta"]["totalRowCount"] == 1


"""WealthfolioClient against the fake over loopback HTTP: auth, cache, retries, paging."""

from __future__ import annotations

import json
import logging
import socket
import stat
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.wealthfolio import FakeWealthfolio, Fault, json_reply
from flexsync.core.config import Secret, Settings
from flexsync.core.errors import WealthfolioError
from flexsync.loaders.wealthfolio_client import WealthfolioClient
from flexsync.loaders.wealthfolio_http import read_answer
from tests.plugins.wealthfolio_fake import WF_TEST_PASSWORD, SleepRecorder

MakeClient = Callable[..., WealthfolioClient]


def _buy(account_id: str, key: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accountId": account_id, "activityType": "BUY", "activityDate": "2025-03-14",
        "currency": "USD", "quantity": "1", "unitPrice": "10", "idempotencyKey": key,
        "symbol": {"symbol": "AAPL", "exchangeMic": "XNAS", "quoteCcy": "USD",
                   "instrumentType": "EQUITY"},
    }
    body.update(extra)
    return body


def _cached_token(path: Path) -> str:
    return str(json.loads(path.read_text())["token"])


# ----------------------------------------------------------------------------- login & session


def test_v31_login_cookie_becomes_bearer_and_is_cached(
        wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio, wf_account_id: str,
        wf_session_path: Path) -> None:
    assert wf_client.search_activities(wf_account_id) == []
    search = fake_wealthfolio.requests_to("POST", "/activities/search")[0]
    assert search.auth == "bearer"  # not a cookie: the jar accepts none
    assert "cookie" not in search.headers
    mode = stat.S_IMODE(wf_session_path.stat().st_mode)
    assert mode == 0o600
    cached = wf_session_path.read_text()
    assert WF_TEST_PASSWORD not in cached
    assert _cached_token(wf_session_path) in fake_wealthfolio.sessions


@pytest.mark.parametrize("shape", ["v3.0.4", "v3.0"])
def test_older_login_shapes_use_access_token(shape: str, tmp_path: Path) -> None:
    with FakeWealthfolio("pw", login_shape=shape) as fake:
        account = fake.create_account()["id"]
        with WealthfolioClient(fake.base_url, "pw", session_path=tmp_path / "s") as client:
            assert client.search_activities(account) == []
        assert _cached_token(tmp_path / "s") in fake.sessions


def test_cached_session_is_reused_across_runs(
        make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio,
        wf_account_id: str) -> None:
    make_wf_client().search_activities(wf_account_id)
    make_wf_client().search_activities(wf_account_id)
    assert fake_wealthfolio.logins == 1
    assert len(fake_wealthfolio.requests_to("POST", "/auth/login")) == 1


def test_cache_for_another_server_is_ignored(
        make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio, wf_account_id: str,
        wf_session_path: Path) -> None:
    wf_session_path.parent.mkdir(parents=True)
    wf_session_path.write_text(json.dumps(
        {"base_url": "http://elsewhere:8088", "token": "x", "expires_at": 9e12}))
    make_wf_client().search_activities(wf_account_id)
    assert fake_wealthfolio.logins == 1


def test_widened_cache_mode_is_tightened(
        make_wf_client: MakeClient, wf_account_id: str, wf_session_path: Path) -> None:
    make_wf_client().search_activities(wf_account_id)
    wf_session_path.chmod(0o644)
    make_wf_client().search_activities(wf_account_id)
    assert stat.S_IMODE(wf_session_path.stat().st_mode) == 0o600


def test_expired_session_logs_in_again_once(
        make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio,
        wf_account_id: str, wf_session_path: Path) -> None:
    make_wf_client().search_activities(wf_account_id)
    old = _cached_token(wf_session_path)
    fake_wealthfolio.expire_sessions()
    client = make_wf_client()
    assert client.search_activities(wf_account_id) == []
    assert fake_wealthfolio.logins == 2
    assert _cached_token(wf_session_path) != old


def test_401_mid_run_relogs_and_continues(
        wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio,
        wf_account_id: str) -> None:
    fake_wealthfolio.expire_sessions_on("POST", "/activities", skip=1)
    outcomes = [wf_client.create_activity(_buy(wf_account_id, f"k{i}")) for i in range(3)]
    assert [o.status for o in outcomes] == ["posted"] * 3
    assert fake_wealthfolio.logins == 2
    assert len(fake_wealthfolio.activities) == 3


def test_401_after_fresh_login_fails(wf_client: WealthfolioClient,
                                     fake_wealthfolio: FakeWealthfolio,
                                     wf_account_id: str) -> None:
    fake_wealthfolio.error_storm(2, status=401, path="/activities/search")
    with pytest.raises(WealthfolioError, match="even after a fresh login"):
        wf_client.search_activities(wf_account_id)
    assert fake_wealthfolio.logins == 2  # the first login, then exactly one more


def test_wrong_password(make_wf_client: MakeClient, wf_account_id: str) -> None:
    client = make_wf_client(password="not-it")
    with pytest.raises(WealthfolioError) as info:
        client.search_activities(wf_account_id)
    assert str(info.value) == "Wealthfolio rejected WF_PASSWORD (401 Invalid password)"


def test_missing_password_against_protected_server(make_wf_client: MakeClient,
                                                   wf_account_id: str) -> None:
    with pytest.raises(WealthfolioError, match="WF_PASSWORD is not set"):
        make_wf_client(password="").search_activities(wf_account_id)


def test_server_without_auth(tmp_path: Path) -> None:
    with FakeWealthfolio(None) as fake:
        account = fake.create_account()["id"]
        with WealthfolioClient(fake.base_url + "/api/v1/", "unused",
                               session_path=tmp_path / "s") as client:
            assert client.search_activities(account) == []
        assert not (tmp_path / "s").exists()


def test_login_429_waits_as_told(make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio,
                                 wf_account_id: str, wf_sleep: SleepRecorder) -> None:
    fake_wealthfolio.rate_limit_login(7, times=2)
    make_wf_client().search_activities(wf_account_id)
    assert wf_sleep.calls == [7.0, 7.0]
    assert fake_wealthfolio.logins == 1


def test_login_429_from_the_real_limiter_with_fake_clock(
        make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio,
        wf_account_id: str) -> None:
    for _ in range(5):  # someone else burnt the burst
        with pytest.raises(WealthfolioError):
            make_wf_client(password="wrong").search_activities(wf_account_id)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        fake_wealthfolio.advance(seconds)

    make_wf_client(sleep=sleep).search_activities(wf_account_id)
    assert waits and 1 <= waits[0] <= 12


def test_login_429_gives_up_beyond_bound(make_wf_client: MakeClient,
                                         fake_wealthfolio: FakeWealthfolio,
                                         wf_account_id: str) -> None:
    fake_wealthfolio.rate_limit_login(100)
    with pytest.raises(WealthfolioError, match=r"rate-limited .*Wait for 100s.*limit 60s"):
        make_wf_client(max_login_wait=60).search_activities(wf_account_id)


# ----------------------------------------------------------------------------- retries


def test_5xx_storm_is_retried_with_backoff(wf_client: WealthfolioClient,
                                           fake_wealthfolio: FakeWealthfolio,
                                           wf_account_id: str, wf_sleep: SleepRecorder) -> None:
    fake_wealthfolio.error_storm(2, status=503, path="/activities/search")
    assert wf_client.search_activities(wf_account_id) == []
    assert wf_sleep.calls == [0.5, 1.0]


def test_5xx_beyond_attempts_is_a_clear_error(wf_client: WealthfolioClient,
                                              fake_wealthfolio: FakeWealthfolio,
                                              wf_account_id: str) -> None:
    fake_wealthfolio.error_storm(10, path="/activities/search")
    with pytest.raises(WealthfolioError) as info:
        wf_client.search_activities(wf_account_id)
    assert str(info.value) == (
        "Wealthfolio could not search activities: 500 Internal Server Error")


def test_check_duplicates_and_create_are_retried(
        wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio,
        wf_account_id: str) -> None:
    fake_wealthfolio.error_storm(1, status=502, path="/activities/import/check-duplicates")
    assert wf_client.check_duplicates(["x"]) == {}
    fake_wealthfolio.fail_nth_create(1)  # not stored: the retry creates it
    outcome = wf_client.create_activity(_buy(wf_account_id, "retry-me"))
    assert outcome.status == "posted"
    assert len(fake_wealthfolio.requests_to("POST", "/activities")) == 2
    assert len(fake_wealthfolio.activities) == 1


def test_wrong_base_url_is_named(tmp_path: Path, fake_wealthfolio: FakeWealthfolio) -> None:
    with WealthfolioClient(fake_wealthfolio.base_url + "/wealthfolio", "pw",
                           session_path=tmp_path / "s") as client, \
            pytest.raises(WealthfolioError, match="is WF_BASE_URL right"):
        client.search_activities("acc")


def test_timeout_is_retried(make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio,
                            wf_account_id: str) -> None:
    fake_wealthfolio.slow_down(0.6, path="/activities/search")
    assert make_wf_client(timeout=0.2).search_activities(wf_account_id) == []
    assert len(fake_wealthfolio.requests_to("POST", "/activities/search")) == 2


def test_persistent_timeout(make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio,
                            wf_account_id: str) -> None:
    fake_wealthfolio.slow_down(0.4, times=3, path="/activities/search")
    with pytest.raises(WealthfolioError, match=r"did not answer .* within 0.1s \(3 attempts\)"):
        make_wf_client(timeout=0.1).search_activities(wf_account_id)


def test_slow_create_is_retried_without_duplicating(
        make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio,
        wf_account_id: str) -> None:
    # The first POST times out on our side; the server stores it late (or not at all):
    # either way the key keeps Wealthfolio at exactly one activity.
    fake_wealthfolio.slow_down(0.5, method="POST", path="/activities")
    outcome = make_wf_client(timeout=0.2).create_activity(_buy(wf_account_id, "slow"))
    assert outcome.status in ("posted", "already_present")
    assert fake_wealthfolio.wait_idle()  # let the late request finish before counting
    stored = fake_wealthfolio.activity_by_key("slow")
    assert stored is not None and stored["id"] == outcome.activity_id
    assert len(fake_wealthfolio.activities) == 1


def test_sliding_session_cookie_refreshes_the_cache(
        wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio, wf_account_id: str,
        wf_session_path: Path) -> None:
    wf_client.search_activities(wf_account_id)
    first = _cached_token(wf_session_path)
    fake_wealthfolio.advance(2000)  # past half the TTL: the answer carries a fresh cookie
    wf_client.search_activities(wf_account_id)
    fresh = _cached_token(wf_session_path)
    assert fresh != first and fresh in fake_wealthfolio.sessions
    fake_wealthfolio.advance(2000)  # the first token is dead now; the fresh one is not
    wf_client.search_activities(wf_account_id)
    assert fake_wealthfolio.logins == 1


def test_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = WealthfolioClient(f"http://127.0.0.1:{port}", "pw", session_path=tmp_path / "s",
                               sleep=lambda _: None, max_attempts=2, timeout=1)
    with client, pytest.raises(WealthfolioError, match="Wealthfolio login failed at http"):
        client.search_activities("acc")


def test_malformed_json_is_retried_then_reported(wf_client: WealthfolioClient,
                                                 fake_wealthfolio: FakeWealthfolio,
                                                 wf_account_id: str) -> None:
    fake_wealthfolio.malformed_json(path="/activities/search")
    assert wf_client.search_activities(wf_account_id) == []
    fake_wealthfolio.malformed_json(times=5, path="/activities/search")
    with pytest.raises(WealthfolioError, match="not JSON"):
        wf_client.search_activities(wf_account_id)


# ----------------------------------------------------------------------------- calls


def test_search_pages_until_total(make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio,
                                  wf_account_id: str) -> None:
    client = make_wf_client(page_size=3)
    for i in range(7):
        assert client.create_activity(_buy(wf_account_id, f"p{i}")).status == "posted"
    other = fake_wealthfolio.create_account("Other")["id"]
    client.create_activity(_buy(other, "elsewhere"))
    page = client.search_all(wf_account_id)
    assert page.total_row_count == 7
    assert sorted(r["idempotencyKey"] for r in page.rows) == [f"p{i}" for i in range(7)]
    bodies = [r.json for r in fake_wealthfolio.requests_to("POST", "/activities/search")]
    assert [b["page"] for b in bodies] == [0, 1, 2]
    assert all(b["pageSize"] == 3 and b["accountIdFilter"] == [wf_account_id] for b in bodies)


def test_check_duplicates_in_chunks(make_wf_client: MakeClient,
                                    fake_wealthfolio: FakeWealthfolio,
                                    wf_account_id: str) -> None:
    client = make_wf_client(duplicate_chunk=2)
    posted = client.create_activity(_buy(wf_account_id, "d3"))
    found = client.check_duplicates(["d1", "d2", "d3", "d4", "d5", "d3"])
    assert found == {"d3": posted.activity_id}
    assert len(fake_wealthfolio.requests_to("POST", "/activities/import/check-duplicates")) == 3


def test_create_outcomes(wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio,
                         wf_account_id: str) -> None:
    posted = wf_client.create_activity(_buy(wf_account_id, "c1"))
    assert posted.status == "posted" and posted.activity_id
    again = wf_client.create_activity(_buy(wf_account_id, "c1"))
    assert (again.status, again.activity_id) == ("already_present", posted.activity_id)
    refused = wf_client.create_activity(_buy(wf_account_id, "c2", symbol=None))
    assert refused.status == "failed"
    assert refused.error == ("400 Bad Request: Activity error: Invalid data: Asset-backed "
                             "activities need either asset_id or symbol")
    shape = wf_client.create_activity({"accountId": wf_account_id})
    assert shape.status == "failed" and shape.error is not None
    assert shape.error.startswith("422 Unprocessable Entity: Failed to deserialize")
    fake_wealthfolio.fail_nth_create(1, times=5)
    storm = wf_client.create_activity(_buy(wf_account_id, "c3"))
    assert (storm.status, storm.error) == ("failed", "500 Internal Server Error")


@pytest.mark.parametrize("drop", [False, True])
def test_lost_acknowledgement_converges_to_already_present(
        wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio, wf_account_id: str,
        drop: bool) -> None:
    fake_wealthfolio.fail_nth_create(1, store=True, drop=drop)
    outcome = wf_client.create_activity(_buy(wf_account_id, "lost"))
    stored = fake_wealthfolio.activity_by_key("lost")
    assert stored is not None
    assert (outcome.status, outcome.activity_id) == ("already_present", stored["id"])
    assert len(fake_wealthfolio.activities) == 1


def test_answer_numbers_are_decimals() -> None:
    """Wealthfolio sends some money as JSON numbers: every answer reads them as Decimal."""
    response = httpx.Response(
        200, headers={"content-type": "application/json"},
        content=b'{"quantity": 2.5, "values": [0.1, {"amount": 1e-2}]}',
        request=httpx.Request("GET", "http://wf.test/api/v1/holdings"))
    data = read_answer(response).data
    assert data["quantity"] == Decimal("2.5")
    assert isinstance(data["quantity"], Decimal)
    assert data["values"] == [Decimal("0.1"), {"amount": Decimal("0.01")}]


def test_from_settings(fake_wealthfolio: FakeWealthfolio, tmp_path: Path,
                       wf_account_id: str) -> None:
    settings = Settings(data_dir=tmp_path, wf_base_url=fake_wealthfolio.base_url,
                        wf_password=Secret(WF_TEST_PASSWORD), http_timeout_seconds=3)
    with WealthfolioClient.from_settings(settings) as client:
        assert client.search_activities(wf_account_id) == []
        assert client.timeout == 3
    assert settings.session_path.exists()


def test_secrets_never_logged(make_wf_client: MakeClient, fake_wealthfolio: FakeWealthfolio,
                              wf_account_id: str, wf_session_path: Path,
                              caplog: pytest.LogCaptureFixture) -> None:
    for name in ("", "httpx", "httpcore", "flexsync"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    errors: list[str] = []
    client = make_wf_client()
    client.create_activity(_buy(wf_account_id, "s1"))
    fake_wealthfolio.expire_sessions()
    client.search_activities(wf_account_id)
    token = _cached_token(wf_session_path)
    fake_wealthfolio.error_storm(1, path="/activities/search")
    client.search_activities(wf_account_id)
    try:
        make_wf_client(password="wrong-" + WF_TEST_PASSWORD,
                       session_path=wf_session_path.with_name("other")).search_activities("x")
    except WealthfolioError as exc:
        errors.append(str(exc))
    assert any("httpcore" in r.name for r in caplog.records)  # debug capture really on
    assert any("wf_session=********" in r.getMessage() for r in caplog.records)
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text + "\n".join(errors)
    assert WF_TEST_PASSWORD not in text
    assert token not in text
    for session in fake_wealthfolio.sessions:
        assert session not in text


# ----------------------------------------------------------------------------- delete


def test_delete_activity_and_already_gone(wf_client: WealthfolioClient,
                                          fake_wealthfolio: FakeWealthfolio,
                                          wf_account_id: str) -> None:
    created = wf_client.create_activity(_buy(wf_account_id, "ibkr:del:1"))
    assert created.activity_id is not None
    deleted = wf_client.delete_activity(created.activity_id)
    assert deleted is not None and deleted["idempotencyKey"] == "ibkr:del:1"
    assert fake_wealthfolio.activity_by_key("ibkr:del:1") is None
    assert wf_client.delete_activity(created.activity_id) is None  # already gone
    # The key is free again: the same activity can be posted anew.
    assert wf_client.create_activity(_buy(wf_account_id, "ibkr:del:1")).status == "posted"


def test_delete_is_retried_and_a_lost_answer_converges(
        wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio,
        wf_account_id: str, wf_sleep: SleepRecorder) -> None:
    created = wf_client.create_activity(_buy(wf_account_id, "ibkr:del:2"))
    assert created.activity_id is not None
    path = f"/activities/{created.activity_id}"
    fake_wealthfolio.add_fault(Fault("store_then_status", "DELETE", path, status=503,
                                     message="Service Unavailable"))
    # The first DELETE deletes but its answer is a 503; the retry finds nothing: None.
    assert wf_client.delete_activity(created.activity_id) is None
    assert len(fake_wealthfolio.requests_to("DELETE", path)) == 2
    assert wf_sleep.calls



# ----------------------------------------------------------------------------- issue 14


def test_locked_database_400_is_retried_bounded(
        wf_client: WealthfolioClient, fake_wealthfolio: FakeWealthfolio, wf_account_id: str,
        wf_sleep: SleepRecorder) -> None:
    fake_wealthfolio.lock_database(2, method="POST", path="/activities")
    outcome = wf_client.create_activity({
        "accountId": wf_account_id, "activityType": "DEPOSIT", "activityDate": "2025-03-01",
        "currency": "GBP", "amount": "100", "idempotencyKey": "locked-1"})
    assert outcome.status == "posted"
    assert wf_sleep.calls == [0.5, 1.0]
    assert len(fake_wealthfolio.activities_for(wf_account_id)) == 1

    fake_wealthfolio.lock_database(10, method="POST", path="/activities")
    failed = wf_client.create_activity({
        "accountId": wf_account_id, "activityType": "DEPOSIT", "activityDate": "2025-03-02",
        "currency": "GBP", "amount": "100", "idempotencyKey": "locked-2"})
    assert failed.status == "failed" and "database is locked" in (failed.error or "")
    assert len(wf_sleep.calls) == 2 + 2  # max_attempts=3: two more waits, then it stops


def test_validation_400_is_not_retried(wf_client: WealthfolioClient, wf_account_id: str,
                                       wf_sleep: SleepRecorder) -> None:
    outcome = wf_client.create_activity({
        "accountId": wf_account_id, "activityType": "BUY", "activityDate": "2025-03-01",
        "currency": "GBP", "quantity": "1", "unitPrice": "1"})
    assert outcome.status == "failed" and "Asset-backed activities" in (outcome.error or "")
    assert wf_sleep.calls == []


def test_oidc_only_server_is_not_taken_for_no_auth(tmp_path: Path) -> None:
    """3.4 answers login 404 "not configured" on an OIDC-only server too (docs/upstream.md#auth)."""
    with FakeWealthfolio(None, oidc_only=True) as fake:
        account = fake.create_account()["id"]
        with WealthfolioClient(fake.base_url, "a-password", session_path=tmp_path / "s",
                               sleep=lambda _: None) as client:
            with pytest.raises(WealthfolioError) as info:
                client.search_activities(account)
        message = str(info.value)
        assert "single sign-on (OIDC)" in message and "WF_AUTH_PASSWORD_HASH" in message
        assert info.value.exit_code == 5
        assert fake.requests_to("POST", "/activities/search") == []


def test_no_password_login_but_tokens_required_is_told(tmp_path: Path) -> None:
    """A server without the 3.4 status field that still wants a session: say so."""
    with FakeWealthfolio(None) as fake:
        fake.oidc_only = True
        fake.create_account()
        status = {"requiresPassword": False}
        fake._auth_status = lambda req: json_reply(200, status)  # type: ignore[method-assign]
        with WealthfolioClient(fake.base_url, "pw", session_path=tmp_path / "s") as client:
            with pytest.raises(WealthfolioError, match="requires a session"):
                client.list_accounts()

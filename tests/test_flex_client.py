"""FlexClient against the strict fake Flex Web Service (docs/upstream.md#flex-failure-modes).

Waiting goes through a fake clock that advances on sleep, so minutes of IBKR
back-off run in milliseconds; request counts are asserted everywhere so a tight
loop fails the test instead of hanging it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from datetime import UTC
from typing import Any

import httpx
import pytest

from fakes.flex import (
    CSV_STATEMENT,
    DEFAULT_STATEMENT,
    GET_PATH,
    HTML_404,
    HTML_PAGE,
    SEND_PATH,
    Delay,
    FakeFlexService,
    FlexCode,
    Http,
    Raw,
)
from flexsync.core.config import Secret, Settings
from flexsync.core.errors import ConfigurationError, ExitCode, FlexServiceError
from flexsync.extract.flex_client import USER_AGENT, FlexClient
from flexsync.extract.flex_errors import (
    FlexConnectionError,
    FlexHTTPError,
    FlexResponseError,
    FlexThrottledError,
    FlexTokenError,
    FlexUnexpectedBodyError,
    StatementGenerationTimeout,
)

pytestmark = pytest.mark.timeout(30)


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, f"client asked for a non-positive sleep: {seconds}"
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def ftime() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(fake_flex: FakeFlexService, ftime: FakeTime) -> Any:
    def make(**overrides: Any) -> FlexClient:
        kwargs: dict[str, Any] = {
            "send_url": fake_flex.send_url,
            "get_url": fake_flex.get_url,
            "token": Secret(fake_flex.token),
            "query_id": fake_flex.query_id,
            "deadline_seconds": 600.0,
            "http_timeout": 5.0,
            "sleep": ftime.sleep,
            "clock": ftime.clock,
        }
        kwargs.update(overrides)
        return FlexClient(**kwargs)

    return make


def poll_waits(ftime: FakeTime) -> list[float]:
    """Sleeps after the first-poll delay."""
    return ftime.sleeps[1:]


# --------------------------------------------------------------------------- happy path


def test_happy_path_downloads_the_statement(fake_flex: FakeFlexService, make_client: Any,
                                            ftime: FakeTime) -> None:
    download = make_client().download()

    assert download.content == DEFAULT_STATEMENT
    assert download.reference_code == fake_flex.issued_references[0]
    assert download.query_id == fake_flex.query_id
    assert download.fetched_at.tzinfo is UTC
    assert [r.step for r in fake_flex.requests] == ["SendRequest", "GetStatement"]
    send, poll = fake_flex.requests
    assert send.params == {"t": fake_flex.token, "q": fake_flex.query_id, "v": "3"}
    assert poll.params == {"t": fake_flex.token, "q": download.reference_code, "v": "3"}
    assert poll.path == GET_PATH
    for request in fake_flex.requests:
        assert request.headers["user-agent"] == USER_AGENT
        assert USER_AGENT.startswith("flexsync/") and "Python/3." in USER_AGENT
    assert ftime.sleeps == [1.0]  # a short pause before polling: ~1 request/s
    assert "content" not in repr(download) and fake_flex.token not in repr(download)


def test_from_settings_uses_the_settings_fields(fake_flex: FakeFlexService,
                                                ftime: FakeTime) -> None:
    settings = Settings(
        flex_token=Secret(fake_flex.token), flex_query_id=fake_flex.query_id,
        flex_send_url=fake_flex.send_url, flex_get_url=fake_flex.get_url,
        flex_deadline_seconds=42.0, flex_min_throttle_seconds=7.0, http_timeout_seconds=3.0,
    )
    client = FlexClient.from_settings(settings, sleep=ftime.sleep, clock=ftime.clock)
    assert (client.deadline_seconds, client.throttle_seconds, client.http_timeout) == (42, 7, 3)
    assert client.download().content == DEFAULT_STATEMENT
    assert fake_flex.token not in repr(client)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"token": Secret("")}, "IBKR_FLEX_TOKEN not provided"),
        ({"query_id": ""}, "IBKR_FLEX_QUERY_ID not provided"),
        ({"query_id": "12ab"}, "IBKR_FLEX_QUERY_ID"),
        ({"send_url": "ftp://example.com/x"}, "IBKR_FLEX_SEND_URL"),
        ({"get_url": "not a url"}, "IBKR_FLEX_GET_URL"),
    ],
)
def test_bad_configuration_is_a_configuration_error(make_client: Any, overrides: dict[str, Any],
                                                    needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        make_client(**overrides)


# --------------------------------------------------------------------------- polling


def test_1019_three_times_then_success_with_growing_waits(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime) -> None:
    fake_flex.configure(poll=[FlexCode(1019)] * 3)
    download = make_client().download()

    assert download.content == DEFAULT_STATEMENT
    assert (fake_flex.count("SendRequest"), fake_flex.count("GetStatement")) == (1, 4)
    assert poll_waits(ftime) == [5.0, 10.0, 20.0]


def test_1019_forever_times_out_at_the_deadline(fake_flex: FakeFlexService, make_client: Any,
                                                ftime: FakeTime) -> None:
    fake_flex.configure(poll_default=FlexCode(1019))
    with pytest.raises(StatementGenerationTimeout) as info:
        make_client(deadline_seconds=300).download()

    err = info.value
    assert err.code == "1019" and err.exit_code == ExitCode.IBKR_FLEX
    assert isinstance(err, FlexServiceError)
    text = str(err)
    assert "IBKR Flex error 1019" in text and "still generating" in text
    assert "waited 300 s" in text and "try again later" in text.lower()
    # 1 s first pause, then 5, 10, 20, 40, 60, 60, 60 and the 44 s left: capped, bounded.
    assert poll_waits(ftime) == [5, 10, 20, 40, 60, 60, 60, 44]
    assert max(ftime.sleeps) <= 60
    assert ftime.now - 1000.0 == pytest.approx(300)
    assert fake_flex.count("GetStatement") == 9 and fake_flex.count("SendRequest") == 1


def test_1019_statement_ready_on_the_last_poll_at_the_deadline_is_kept(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime) -> None:
    # ibflex throws away a statement that arrives on the last allowed poll; we must not.
    fake_flex.configure(poll=[FlexCode(1019)] * 8)
    assert make_client(deadline_seconds=300).download().content == DEFAULT_STATEMENT
    assert fake_flex.count("GetStatement") == 9


@pytest.mark.parametrize("code", [1001, 1004, 1005, 1006, 1007, 1008, 1009, 1021])
def test_transient_codes_at_getstatement_are_polled(code: int, fake_flex: FakeFlexService,
                                                    make_client: Any, ftime: FakeTime) -> None:
    fake_flex.configure(poll=[FlexCode(code)] * 2)
    assert make_client().download().content == DEFAULT_STATEMENT
    assert (fake_flex.count("SendRequest"), fake_flex.count("GetStatement")) == (1, 3)
    assert poll_waits(ftime) == [5.0, 10.0]


@pytest.mark.parametrize("code", [1001, 1009, 1019, 1021])
def test_transient_codes_at_sendrequest_are_retried(code: int, fake_flex: FakeFlexService,
                                                    make_client: Any, ftime: FakeTime) -> None:
    fake_flex.configure(send=[FlexCode(code)])
    assert make_client().download().content == DEFAULT_STATEMENT
    assert (fake_flex.count("SendRequest"), fake_flex.count("GetStatement")) == (2, 1)
    assert ftime.sleeps[0] >= 10  # step-1 backoff starts at 10 s


def test_1001_forever_at_sendrequest_gives_up_after_bounded_retries(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime) -> None:
    fake_flex.configure(send_default=FlexCode(1001))
    with pytest.raises(FlexResponseError) as info:
        make_client(max_send_retries=3).download()
    assert info.value.code == "1001"
    assert "IBKR Flex error 1001 at SendRequest" in str(info.value)
    assert fake_flex.count() == 4
    assert ftime.sleeps == [10, 20, 40]


# --------------------------------------------------------------------------- 1018 throttle


def test_1018_at_sendrequest_backs_off_at_least_the_throttle(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime) -> None:
    fake_flex.configure(send=[FlexCode(1018)])
    assert make_client().download().content == DEFAULT_STATEMENT
    assert fake_flex.count("SendRequest") == 2
    assert ftime.sleeps[0] >= 60


def test_1018_at_getstatement_backs_off_at_least_the_throttle(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime) -> None:
    fake_flex.configure(poll=[FlexCode(1018), FlexCode(1019)])
    assert make_client().download().content == DEFAULT_STATEMENT
    assert fake_flex.count("GetStatement") == 3
    assert poll_waits(ftime)[0] >= 60
    assert poll_waits(ftime)[1] == 5.0  # a 1018 does not inflate the 1019 backoff


def test_1018_forever_is_bounded_by_the_deadline(fake_flex: FakeFlexService, make_client: Any,
                                                 ftime: FakeTime) -> None:
    fake_flex.configure(poll_default=FlexCode(1018))
    with pytest.raises(FlexThrottledError) as info:
        make_client(deadline_seconds=300).download()
    assert info.value.code == "1018" and "IBKR Flex error 1018" in str(info.value)
    assert all(wait >= 60 for wait in poll_waits(ftime))
    assert ftime.now - 1000.0 <= 300
    assert fake_flex.count("GetStatement") == 5  # at 1, 61, 121, 181, 241 s


def test_1018_counts_against_the_deadline_at_sendrequest(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime) -> None:
    fake_flex.configure(send_default=FlexCode(1018))
    with pytest.raises(FlexThrottledError) as info:
        make_client(deadline_seconds=100).download()
    assert info.value.code == "1018"
    assert fake_flex.count("SendRequest") == 2 and ftime.sleeps == [60]


# --------------------------------------------------------------------------- fatal codes


def test_expired_token_1012_fails_fast_and_says_how_to_rotate(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime) -> None:
    fake_flex.expired_token = "expired-token-0000"
    with pytest.raises(FlexTokenError) as info:
        make_client(token=Secret("expired-token-0000")).download()
    err = info.value
    assert err.code == "1012" and err.exit_code == ExitCode.IBKR_FLEX
    text = str(err)
    assert "IBKR Flex error 1012" in text and "expired" in text
    assert "Flex Web Service Configuration" in text and "IBKR_FLEX_TOKEN" in text
    assert "secret/broker-sync" in text and "broker-sync-secrets" in text
    assert "expired-token-0000" not in text
    assert fake_flex.count() == 1 and ftime.sleeps == []


def test_invalid_token_1015_fails_fast_and_says_how_to_rotate(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime) -> None:
    with pytest.raises(FlexTokenError) as info:
        make_client(token=Secret("not-the-token-1234")).download()
    text = str(info.value)
    assert info.value.code == "1015" and "IBKR Flex error 1015" in text
    assert "invalid" in text and "IBKR_FLEX_TOKEN" in text and "Client Portal" in text
    assert "not-the-token-1234" not in text
    assert fake_flex.count() == 1 and ftime.sleeps == []


def test_wrong_query_id_1014_fails_fast(fake_flex: FakeFlexService, make_client: Any) -> None:
    with pytest.raises(FlexResponseError) as info:
        make_client(query_id="999999").download()
    assert info.value.code == "1014" and "IBKR_FLEX_QUERY_ID" in str(info.value)
    assert fake_flex.count() == 1


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        (1003, "not available"),
        (1010, "Activity Flex Query"),
        (1011, "inactive"),
        (1012, "IBKR_FLEX_TOKEN"),
        (1013, "IP"),
        (1014, "IBKR_FLEX_QUERY_ID"),
        (1015, "IBKR_FLEX_TOKEN"),
        (1016, "account"),
        (1017, "IBKR Flex error 1017"),
        (1020, "IBKR_FLEX_QUERY_ID"),
    ],
)
def test_fatal_codes_at_sendrequest_fail_fast(code: int, needle: str,
                                              fake_flex: FakeFlexService, make_client: Any,
                                              ftime: FakeTime) -> None:
    fake_flex.configure(send=[FlexCode(code)])
    with pytest.raises(FlexResponseError) as info:
        make_client().download()
    assert info.value.code == str(code)
    assert f"IBKR Flex error {code} at SendRequest" in str(info.value)
    assert needle in str(info.value)
    assert fake_flex.count() == 1 and ftime.sleeps == []


@pytest.mark.parametrize("code", [1003, 1011, 1012, 1013, 1016, 1020, 1099])
def test_fatal_codes_at_getstatement_fail_fast(code: int, fake_flex: FakeFlexService,
                                               make_client: Any) -> None:
    fake_flex.configure(poll=[FlexCode(code)])
    with pytest.raises(FlexResponseError) as info:
        make_client().download()
    assert info.value.code == str(code)
    assert f"IBKR Flex error {code} at GetStatement" in str(info.value)
    assert (fake_flex.count("SendRequest"), fake_flex.count("GetStatement")) == (1, 1)


# --------------------------------------------------------------------------- 1017 restart


def test_1017_once_restarts_from_sendrequest(fake_flex: FakeFlexService, make_client: Any,
                                             ftime: FakeTime) -> None:
    fake_flex.configure(poll=[FlexCode(1017)])
    download = make_client().download()
    assert download.content == DEFAULT_STATEMENT
    assert [r.step for r in fake_flex.requests] == [
        "SendRequest", "GetStatement", "SendRequest", "GetStatement"]
    first, second = fake_flex.issued_references
    assert download.reference_code == second != first
    assert fake_flex.polls[1].params["q"] == second
    assert all(wait > 0 for wait in ftime.sleeps)


def test_1017_twice_fails(fake_flex: FakeFlexService, make_client: Any) -> None:
    fake_flex.configure(poll=[FlexCode(1017), FlexCode(1017)])
    with pytest.raises(FlexResponseError) as info:
        make_client().download()
    assert info.value.code == "1017" and "IBKR Flex error 1017" in str(info.value)
    assert (fake_flex.count("SendRequest"), fake_flex.count("GetStatement")) == (2, 2)


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize("status", [500, 503, 429])
@pytest.mark.parametrize("step", ["send", "poll"])
def test_http_5xx_and_429_are_retried_with_sleeps(status: int, step: str,
                                                  fake_flex: FakeFlexService, make_client: Any,
                                                  ftime: FakeTime) -> None:
    fake_flex.configure(**{step: [Http(status), Http(status)]})
    assert make_client().download().content == DEFAULT_STATEMENT
    assert fake_flex.count() == 4
    if step == "send":
        assert ftime.sleeps == [5.0, 10.0, 1.0]  # then the first-poll pause
    else:
        assert poll_waits(ftime) == [5.0, 10.0]


def test_http_429_honours_retry_after_capped(fake_flex: FakeFlexService, make_client: Any,
                                             ftime: FakeTime) -> None:
    fake_flex.configure(send=[Http(429, retry_after="7"), Http(429, retry_after="86400"),
                              Http(429, retry_after="0")])
    assert make_client().download().content == DEFAULT_STATEMENT
    assert ftime.sleeps[:3] == [7.0, 120.0, 1.0]


@pytest.mark.parametrize("step", ["send", "poll"])
def test_http_503_forever_is_bounded(step: str, fake_flex: FakeFlexService, make_client: Any,
                                     ftime: FakeTime) -> None:
    fake_flex.configure(**{f"{step}_default": Http(503)})
    with pytest.raises(FlexHTTPError) as info:
        make_client(max_http_retries=4).download()
    err = info.value
    assert err.status == 503 and err.exit_code == ExitCode.IBKR_FLEX
    assert "HTTP 503" in str(err) and "5 attempts" in str(err)
    assert fake_flex.count("SendRequest" if step == "send" else "GetStatement") == 5
    waits = ftime.sleeps if step == "send" else poll_waits(ftime)
    assert waits == [5.0, 10.0, 20.0, 40.0]


def test_http_errors_stop_at_the_deadline(fake_flex: FakeFlexService, make_client: Any,
                                          ftime: FakeTime) -> None:
    fake_flex.configure(send_default=Http(500))
    with pytest.raises(FlexHTTPError):
        make_client(deadline_seconds=20, max_http_retries=50).download()
    assert fake_flex.count() == 3 and ftime.sleeps == [5.0, 10.0]


@pytest.mark.parametrize(("step", "setting"), [("send", "IBKR_FLEX_SEND_URL"),
                                               ("poll", "IBKR_FLEX_GET_URL")])
@pytest.mark.parametrize("status", [404, 400, 410])
def test_http_4xx_fails_at_once(step: str, setting: str, status: int,
                                fake_flex: FakeFlexService, make_client: Any,
                                ftime: FakeTime) -> None:
    fake_flex.configure(**{f"{step}_default": Http(status, body=HTML_404)})
    with pytest.raises(FlexHTTPError) as info:
        make_client().download()
    text = str(info.value)
    assert info.value.status == status and f"HTTP {status}" in text
    assert "may have moved" in text and setting in text
    assert "<html" not in text.lower() and "?" not in text.split("HTTP")[1]
    assert fake_flex.count() == (1 if step == "send" else 2)
    assert ftime.sleeps == ([] if step == "send" else [1.0])


def test_unknown_path_is_a_404_from_the_fake(fake_flex: FakeFlexService, make_client: Any) -> None:
    with pytest.raises(FlexHTTPError) as info:
        make_client(send_url=fake_flex.base_url + "/portal.flexweb/api/v1/flexQuery").download()
    assert info.value.status == 404 and fake_flex.count() == 1


# --------------------------------------------------------------------------- timeouts, hosts


def test_slow_response_times_out_with_bounded_retries(fake_flex: FakeFlexService,
                                                      make_client: Any, ftime: FakeTime) -> None:
    fake_flex.configure(send_default=Delay(1.0))
    started = time.monotonic()
    with pytest.raises(FlexConnectionError) as info:
        make_client(http_timeout=0.3, max_http_retries=1).download()
    elapsed = time.monotonic() - started
    assert "no answer" in str(info.value) and "0.3 s" in str(info.value)
    assert fake_flex.count() == 2 and ftime.sleeps == [5.0]
    assert elapsed < 2.0


def test_slow_response_once_then_ok(fake_flex: FakeFlexService, make_client: Any,
                                    ftime: FakeTime) -> None:
    fake_flex.configure(poll=[Delay(1.0)])
    assert make_client(http_timeout=0.3).download().content == DEFAULT_STATEMENT
    assert fake_flex.count("GetStatement") == 2


def test_dead_url_host_falls_back_to_configured_get_url(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime,
        caplog: pytest.LogCaptureFixture) -> None:
    # The <Url> names an IBKR host that cannot be reached (a transport refuses it: nothing
    # leaves the machine).
    fake_flex.configure(url_style="unresolvable", poll=[FlexCode(1019)])
    caplog.set_level(logging.INFO, logger="flexsync.extract.flex_client")
    transport = DnsFailingTransport()
    download = make_client(transport=transport).download()
    assert download.content == DEFAULT_STATEMENT
    # The poll that hit the dead host never arrived; both arriving polls used the fallback.
    assert fake_flex.count("GetStatement") == 2
    assert transport.refused == ["gdcdyn.interactivebrokers.com"]
    assert "falling back" in caplog.text and "gdcdyn.interactivebrokers.com" in caplog.text


def test_dead_send_url_is_bounded_connection_error(fake_flex: FakeFlexService,
                                                   make_client: Any, ftime: FakeTime) -> None:
    dead = f"http://127.0.0.1:{fake_flex.dead_port}{SEND_PATH}"
    with pytest.raises(FlexConnectionError) as info:
        make_client(send_url=dead, max_http_retries=2).download()
    assert "cannot connect" in str(info.value) and "3 attempts" in str(info.value)
    assert ftime.sleeps == [5.0, 10.0] and fake_flex.count() == 0


def test_dead_url_and_dead_fallback_fail_bounded(fake_flex: FakeFlexService, make_client: Any,
                                                 ftime: FakeTime) -> None:
    fake_flex.configure(url_style="unresolvable")
    dead_fallback = f"http://127.0.0.1:{fake_flex.dead_port}/other{GET_PATH}"
    transport = DnsFailingTransport()
    with pytest.raises(FlexConnectionError):
        make_client(get_url=dead_fallback, max_http_retries=2, transport=transport).download()
    assert fake_flex.count() == 1 and poll_waits(ftime) == [5.0, 10.0]
    # The <Url> host, the configured fallback, then the other documented IBKR host (retried).
    assert transport.refused == ["gdcdyn.interactivebrokers.com"] + [
        "ndcdyn.interactivebrokers.com"] * 3


class DnsFailingTransport(httpx.HTTPTransport):
    """Fails name resolution for IBKR's hosts (as gdcdyn/ndcdyn sometimes do), so no test
    request can leave the machine; every other host is served for real."""

    def __init__(self, suffix: str = "interactivebrokers.com") -> None:
        super().__init__()
        self.suffix = suffix
        self.refused: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host.endswith(self.suffix):
            self.refused.append(request.url.host)
            raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)
        return super().handle_request(request)


def test_unresolvable_url_host_falls_back_to_configured_get_url(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime) -> None:
    fake_flex.configure(url_style="unresolvable")
    transport = DnsFailingTransport()
    download = make_client(transport=transport).download()
    assert download.content == DEFAULT_STATEMENT
    # No retries against a host that does not resolve: the configured URL comes first.
    assert transport.refused == ["gdcdyn.interactivebrokers.com"]
    assert fake_flex.count("GetStatement") == 1


@pytest.mark.parametrize(("first", "other"), [
    ("ndcdyn.interactivebrokers.com", "gdcdyn.interactivebrokers.com"),
    ("gdcdyn.interactivebrokers.com", "ndcdyn.interactivebrokers.com"),
])
def test_unresolvable_send_host_falls_back_to_the_other_documented_host(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime,
        first: str, other: str) -> None:
    transport = DnsFailingTransport()
    with pytest.raises(FlexConnectionError):
        make_client(send_url=f"https://{first}{SEND_PATH}", transport=transport,
                    max_http_retries=0).download()
    # Both documented hosts were tried, once each, in order; none was reached.
    assert transport.refused == [first, other]
    assert fake_flex.count() == 0


def test_unresolvable_send_host_then_the_other_host_answers(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime) -> None:
    # The other documented host serves: a transport that routes it to the fake (loopback).
    port = int(fake_flex.base_url.rsplit(":", 1)[1])

    class OtherHostServes(DnsFailingTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.host == "gdcdyn.interactivebrokers.com":
                request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=port)
                request.headers["Host"] = f"127.0.0.1:{port}"
                return httpx.HTTPTransport.handle_request(self, request)
            return super().handle_request(request)

    transport = OtherHostServes()
    download = make_client(send_url=f"https://ndcdyn.interactivebrokers.com{SEND_PATH}",
                           transport=transport).download()
    assert download.content == DEFAULT_STATEMENT
    assert transport.refused == ["ndcdyn.interactivebrokers.com"]
    assert fake_flex.count("SendRequest") == 1


@pytest.mark.parametrize("style", ["http-ibkr", "foreign-https", "foreign-loopback"])
def test_url_on_a_foreign_host_never_gets_the_token(
        fake_flex: FakeFlexService, make_client: Any, ftime: FakeTime, style: str,
        caplog: pytest.LogCaptureFixture) -> None:
    with FakeFlexService(token=fake_flex.token) as thief:
        url = {
            "http-ibkr": f"http://gdcdyn.interactivebrokers.com{GET_PATH}",
            "foreign-https": f"https://flex.example.net{GET_PATH}",
            # Another port on loopback: not a configured origin.
            "foreign-loopback": thief.get_url,
        }[style]
        fake_flex.configure(url_style="custom", custom_url=url)
        transport = DnsFailingTransport()
        caplog.set_level(logging.WARNING, logger="flexsync.extract.flex_client")
        download = make_client(transport=transport).download()
        assert download.content == DEFAULT_STATEMENT
        assert thief.count() == 0 and transport.refused == []
        assert fake_flex.polls[0].path == GET_PATH
        assert "the token is not sent there" in caplog.text
        assert fake_flex.token not in caplog.text


def test_empty_url_uses_configured_get_url(fake_flex: FakeFlexService, make_client: Any) -> None:
    fake_flex.configure(url_style="empty")
    assert make_client().download().content == DEFAULT_STATEMENT
    assert fake_flex.polls[0].path == GET_PATH


# --------------------------------------------------------------------------- bodies


def test_url_wrapped_in_whitespace_is_stripped(fake_flex: FakeFlexService,
                                               make_client: Any) -> None:
    fake_flex.configure(url_style="whitespace")
    assert make_client().download().content == DEFAULT_STATEMENT
    assert fake_flex.polls[0].path == GET_PATH


@pytest.mark.parametrize(
    "timestamp",
    ["22 November, 2026 09:00 AM CET", "22 November, 2026 09:00 AM CEST",
     "2026-11-22T09:00:00+01:00", "", None],
)
def test_any_envelope_timestamp_is_accepted(timestamp: str | None, fake_flex: FakeFlexService,
                                            make_client: Any) -> None:
    fake_flex.configure(timestamp=timestamp, poll=[FlexCode(1019)])
    assert make_client().download().content == DEFAULT_STATEMENT


@pytest.mark.parametrize(("declaration", "bom"), [(True, False), (True, True), (False, True)])
def test_xml_declaration_and_bom_prefixes(declaration: bool, bom: bool,
                                          fake_flex: FakeFlexService, make_client: Any) -> None:
    fake_flex.configure(xml_declaration=declaration, bom=bom, poll=[FlexCode(1019)])
    download = make_client().download()
    assert download.content.endswith(DEFAULT_STATEMENT)  # the bytes exactly as sent
    assert fake_flex.count("GetStatement") == 2


def test_leading_whitespace_before_statement(fake_flex: FakeFlexService,
                                             make_client: Any) -> None:
    fake_flex.configure(statement=b"\r\n  " + DEFAULT_STATEMENT)
    assert make_client().download().content == b"\r\n  " + DEFAULT_STATEMENT


def test_root_tag_decides_not_a_substring(fake_flex: FakeFlexService, make_client: Any) -> None:
    # An error envelope whose message mentions FlexQueryResponse is still an error.
    fake_flex.configure(poll=[FlexCode(1003, message="No FlexQueryResponse for this period.")])
    with pytest.raises(FlexResponseError) as info:
        make_client().download()
    assert info.value.code == "1003"


def test_csv_body_is_a_clear_error(fake_flex: FakeFlexService, make_client: Any) -> None:
    fake_flex.configure(poll=[Raw(CSV_STATEMENT, "text/csv")])
    with pytest.raises(FlexUnexpectedBodyError) as info:
        make_client().download()
    assert "returns CSV" in str(info.value) and "XML" in str(info.value)
    assert isinstance(info.value, FlexServiceError) and info.value.code is None
    assert fake_flex.count() == 2


@pytest.mark.parametrize("step", ["send", "poll"])
def test_html_200_body_is_a_clear_error(step: str, fake_flex: FakeFlexService,
                                        make_client: Any) -> None:
    fake_flex.configure(**{step: [Raw(HTML_PAGE, "text/html")]})
    with pytest.raises(FlexUnexpectedBodyError) as info:
        make_client().download()
    assert "HTML page" in str(info.value) and "maintenance" in str(info.value)
    assert "Scheduled Maintenance" in str(info.value)
    assert fake_flex.count() == (1 if step == "send" else 2)


@pytest.mark.parametrize("body", [b"", b"   \n", b"<Other/>", b"<FlexQueryRes", b"plain text"])
def test_other_bodies_are_clear_errors(body: bytes, fake_flex: FakeFlexService,
                                       make_client: Any) -> None:
    fake_flex.configure(poll=[Raw(body)])
    with pytest.raises(FlexUnexpectedBodyError, match="GetStatement"):
        make_client().download()
    assert fake_flex.count() == 2


def test_statement_at_sendrequest_is_a_clear_error(fake_flex: FakeFlexService,
                                                   make_client: Any) -> None:
    fake_flex.configure(send=[Raw(DEFAULT_STATEMENT, "text/xml")])
    with pytest.raises(FlexUnexpectedBodyError, match="IBKR_FLEX_SEND_URL"):
        make_client().download()


# --------------------------------------------------------------------------- logging, secrets


def test_progress_is_logged_per_poll(fake_flex: FakeFlexService, make_client: Any,
                                     caplog: pytest.LogCaptureFixture) -> None:
    fake_flex.configure(poll=[FlexCode(1019)] * 2)
    caplog.set_level(logging.INFO, logger="flexsync.extract.flex_client")
    download = make_client().download()
    lines = [r.getMessage() for r in caplog.records if r.name == "flexsync.extract.flex_client"]
    assert any(download.reference_code in line for line in lines)
    assert "Flex statement not ready (1019), waiting 5 s, 1 s elapsed" in lines
    assert "Flex statement not ready (1019), waiting 10 s, 6 s elapsed" in lines


def test_log_filters_come_from_setup_logging_not_from_imports() -> None:
    """One place installs the scrubbing filters on httpx/httpcore: setup_logging (every
    CLI command calls it). Importing the clients changes no logger."""
    code = (
        "import logging\n"
        "import flexsync.extract.flex_client, flexsync.loaders.wealthfolio_client\n"
        "names = ('httpx', 'httpcore', 'httpcore.http11')\n"
        "assert not any(logging.getLogger(n).filters for n in names), 'filter at import'\n"
        "from flexsync.core.logs import setup_logging\n"
        "setup_logging()\n"
        "assert all(logging.getLogger(n).filters for n in names), 'no filter after setup'\n"
        "record = logging.LogRecord('httpcore.http11', logging.DEBUG, 'x.py', 1,\n"
        "    'send %s', ('GET /x?t=tok123&q=1 Set-Cookie: wf_session=abc.def',), None)\n"
        "logging.getLogger('httpcore.http11').filter(record)\n"
        "assert record.getMessage() == 'send GET /x?t=********&q=1 Set-Cookie: "
        "wf_session=********', record.getMessage()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_token_never_appears_in_logs_or_errors(fake_flex: FakeFlexService, make_client: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    for name in ("", "httpx", "httpcore", "flexsync.extract.flex_client"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    token = fake_flex.token
    texts: list[str] = []

    def run(scenario: dict[str, Any], **overrides: Any) -> None:
        fake_flex.configure(**scenario)
        client = make_client(**overrides)
        texts.append(repr(client))
        try:
            texts.append(repr(client.download()))
        except FlexServiceError as exc:
            texts.extend([str(exc), repr(exc), str(exc.__cause__), repr(exc.args)])

    run({})
    run({"url_style": "dead", "poll": [FlexCode(1019)]})
    run({"send_default": Http(503)}, max_http_retries=1)
    run({"poll_default": Http(404)})
    run({"poll_default": FlexCode(1019)}, deadline_seconds=30)
    run({"poll": [Raw(CSV_STATEMENT)]})
    run({"poll": [FlexCode(1012, message=f"Token {token} has expired.")]})
    run({"send_default": Delay(1.0)}, http_timeout=0.2, max_http_retries=0)
    run({}, send_url=f"http://127.0.0.1:{fake_flex.dead_port}{SEND_PATH}", max_http_retries=0)
    fake_flex.expired_token = token
    run({})

    # httpx logged the request URLs (so this test would see a leak) ...
    assert any(r.name == "httpx" and "t=********" in r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("httpcore") for r in caplog.records)
    # ... and neither the log, the messages nor the exceptions carry the token.
    assert token not in caplog.text
    assert all(token not in r.getMessage() for r in caplog.records)
    assert all(token not in text for text in texts), [t for t in texts if token in t]
    assert len(texts) >= 18


def test_httpx_errors_are_not_chained_into_our_errors(fake_flex: FakeFlexService,
                                                      make_client: Any) -> None:
    with pytest.raises(FlexConnectionError) as info:
        make_client(send_url=f"http://127.0.0.1:{fake_flex.dead_port}{SEND_PATH}",
                    max_http_retries=0).download()
    err = info.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


# --------------------------------------------------------------------------- fake strictness


def test_fake_rejects_what_ibkr_rejects(fake_flex: FakeFlexService) -> None:
    def ask(path: str, params: dict[str, str], user_agent: str = "test/1") -> str:
        response = httpx.get(fake_flex.base_url + path, params=params,
                             headers={"User-Agent": user_agent})
        assert response.status_code == 200
        return response.text

    good = {"t": fake_flex.token, "q": fake_flex.query_id, "v": "3"}
    assert "<ErrorCode>1020</ErrorCode>" in ask(SEND_PATH, {**good, "v": "2"})
    assert "<ErrorCode>1020</ErrorCode>" in ask(SEND_PATH, {"t": fake_flex.token, "q": "1"})
    assert "<ErrorCode>1020</ErrorCode>" in ask(SEND_PATH, good, user_agent="")
    assert "<ErrorCode>1015</ErrorCode>" in ask(SEND_PATH, {**good, "t": "wrong"})
    assert "<ErrorCode>1014</ErrorCode>" in ask(SEND_PATH, {**good, "q": "999"})
    assert "<ErrorCode>1017</ErrorCode>" in ask(GET_PATH, {**good, "q": "0000000000"})
    ok = ask(SEND_PATH, good)
    assert "<Status>Success</Status>" in ok and f"<Url>{fake_flex.get_url}</Url>" in ok
    assert ok.startswith('<FlexStatementResponse timestamp="')
    reference = fake_flex.issued_references[-1]
    assert ask(GET_PATH, {**good, "q": reference}).startswith("<FlexQueryResponse")
    # A 1019 envelope is a Warn, as on the real service.
    fake_flex.configure(poll=[FlexCode(1019)])
    assert "<Status>Warn</Status>" in ask(GET_PATH, {**good, "q": reference})
    assert all("<redacted>" in repr(r) and fake_flex.token not in repr(r)
               for r in fake_flex.requests)


def test_fake_stops_tight_loops() -> None:
    with FakeFlexService(request_limit=3) as fake:
        for _ in range(4):
            httpx.get(fake.send_url, params={"t": fake.token, "q": fake.query_id, "v": "3"})
        assert fake.overloaded and fake.count() == 4

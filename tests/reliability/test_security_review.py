"""The security review's findings, each reproduced as a scenario and shown closed.

A secret must never reach the warehouse, the analytics copy, `status` or a log line in
any spelling: as is, JSON-escaped (a password with a quote, backslash, tab or non-ASCII
character), or URL-encoded. The Flex token must only go to IBKR (or the configured
hosts), and a WF_BASE_URL with credentials in it is refused.
"""

from __future__ import annotations

import json
import secrets
import stat
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from fakes.flex import FakeFlexService
from tests.helpers import DEMO_STATEMENT
from tests.reliability.conftest import Recorder
from tests.reliability.harness import (
    ACCOUNT_UUID,
    FLEX_TOKEN,
    ReliabilityFakeWealthfolio,
    SecretScanner,
    assert_clean_failure,
    file_mode_env,
    readonly,
    run_inprocess,
    run_process,
)

# A password json.dumps rewrites: quote, backslash, tab, non-ASCII.
AWKWARD_PASSWORD = f'rlb"q\\b\tü-{secrets.token_hex(8)}'


def spellings(value: str) -> dict[str, str]:
    return {
        "as is": value,
        "JSON-escaped": json.dumps(value)[1:-1],
        "JSON-escaped (UTF-8)": json.dumps(value, ensure_ascii=False)[1:-1],
        "URL-encoded": quote(value, safe=""),
        "form-encoded": quote_plus(value),
    }


def awkward_scanner() -> SecretScanner:
    scanner = SecretScanner()
    for how, form in spellings(AWKWARD_PASSWORD).items():
        scanner.add_secret(f"WF_PASSWORD ({how})", form)
    return scanner


@pytest.fixture
def awkward_wf() -> ReliabilityFakeWealthfolio:
    fake = ReliabilityFakeWealthfolio(AWKWARD_PASSWORD)
    fake.create_account("IBKR ISA", "GBP", account_id=ACCOUNT_UUID)
    with fake:
        yield fake  # type: ignore[misc]


def runs_messages(data_dir: Path) -> list[str]:
    with readonly(data_dir / "warehouse.duckdb") as con:
        return [r[0] or "" for r in con.execute("select message from sync.runs").fetchall()]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_login_400_echoing_the_password_is_scrubbed_everywhere(
        awkward_wf: ReliabilityFakeWealthfolio, demo_data_dir: Path, log_format: str,
        reliability_ledger: Recorder) -> None:
    awkward_wf.echo_login_body = True
    env = file_mode_env(demo_data_dir, awkward_wf, WF_PASSWORD=AWKWARD_PASSWORD,
                        FLEXSYNC_LOG_FORMAT=log_format)
    result = run_process(["sync", "--flex-file", str(DEMO_STATEMENT)], env)
    status = run_process(["status"], env)
    scanner = awkward_scanner()
    scanner.results(result, status)
    scanner.directory(demo_data_dir, session_path=demo_data_dir / "wf-session.json")
    reliability_ledger(scenario=f"WF 400 echoes the login body ({log_format} logs)", faults=1,
                       secrets=len(scanner.hits))
    assert_clean_failure(result, 5)
    # The echo did reach sync.runs (so the scan saw it), masked.
    assert any("********" in m and "deserialize" in m for m in runs_messages(demo_data_dir))
    assert status.code == 0, status.describe()
    assert not scanner.hits, scanner.hits


def test_refused_create_echoing_the_password_is_scrubbed_in_the_ledger(
        awkward_wf: ReliabilityFakeWealthfolio, demo_data_dir: Path,
        reliability_ledger: Recorder) -> None:
    awkward_wf.refuse_creates_with = f"field password={AWKWARD_PASSWORD!s} not allowed"
    env = file_mode_env(demo_data_dir, awkward_wf, WF_PASSWORD=AWKWARD_PASSWORD,
                        FLEXSYNC_LOG_FORMAT="json")
    result = run_process(["sync", "--flex-file", str(DEMO_STATEMENT)], env)
    scanner = awkward_scanner()
    scanner.results(result)
    scanner.directory(demo_data_dir, session_path=demo_data_dir / "wf-session.json")
    with readonly(demo_data_dir / "warehouse.duckdb") as con:
        errors = [r[0] for r in con.execute(
            "select error from sync.posted_activities where status = 'failed'").fetchall()]
    reliability_ledger(scenario="WF refusal echoes the password (ledger, JSON logs)", faults=1,
                       secrets=len(scanner.hits))
    assert_clean_failure(result, 5)
    assert errors and all("********" in e for e in errors), errors
    # Every JSON log line is still valid JSON once scrubbed.
    for line in result.stderr.splitlines():
        if line.startswith("{"):
            json.loads(line)
    assert not scanner.hits, scanner.hits


def test_json_log_fields_are_scrubbed_before_encoding() -> None:
    import logging

    from flexsync.core.logs import JsonFormatter, register_secret

    register_secret(AWKWARD_PASSWORD)
    record = logging.LogRecord("flexsync", logging.WARNING, __file__, 1,
                               "refused: %s", (AWKWARD_PASSWORD,), None)
    record.external_id = f"id-{AWKWARD_PASSWORD}"
    line = JsonFormatter().format(record)
    payload = json.loads(line)
    assert payload["msg"] == "refused: ********"
    assert payload["external_id"] == "id-********"
    for form in spellings(AWKWARD_PASSWORD).values():
        assert form not in line


def test_analytics_copy_is_not_world_readable(
        wf: ReliabilityFakeWealthfolio, demo_data_dir: Path,
        reliability_ledger: Recorder) -> None:
    env = file_mode_env(demo_data_dir, wf)
    result = run_inprocess(["sync", "--flex-file", str(DEMO_STATEMENT)], env)
    assert result.code == 0, result.describe()
    mode = stat.S_IMODE((demo_data_dir / "analytics.duckdb").stat().st_mode)
    reliability_ledger(scenario="analytics.duckdb mode", faults=0)
    assert mode == 0o640, oct(mode)


@pytest.mark.parametrize("url", ["http://admin:{pw}@127.0.0.1:{port}",
                                 "http://{pw}@127.0.0.1:{port}"])
def test_wf_base_url_with_credentials_is_refused(
        wf: ReliabilityFakeWealthfolio, data_dir: Path, url: str,
        reliability_ledger: Recorder) -> None:
    port = wf.base_url.rsplit(":", 1)[1]
    bad = url.format(pw=quote("urlPw" + secrets.token_hex(6), safe=""), port=port)
    password_in_url = bad.split("@")[0].rsplit(":", 1)[-1].lstrip("/")
    env = file_mode_env(data_dir, wf, WF_BASE_URL=bad)
    result = run_inprocess(["sync", "--flex-file", str(DEMO_STATEMENT)], env)
    scanner = SecretScanner()
    scanner.add_secret("password in WF_BASE_URL", password_in_url)
    scanner.results(result)
    scanner.directory(data_dir)
    reliability_ledger(scenario="WF_BASE_URL with user:password@", faults=1,
                       secrets=len(scanner.hits))
    assert_clean_failure(result, 2, "WF_BASE_URL", "user:password@")
    assert not wf.requests
    assert not scanner.hits, scanner.hits


def test_password_over_plain_http_outside_the_cluster_is_detected() -> None:
    from flexsync.core.config import password_goes_outside_in_clear as outside

    for url in ("http://wealthfolio.example.com:8088", "http://93.184.216.34:8088"):
        assert outside(url), url
    for url in ("https://wealthfolio.example.com", "http://wealthfolio.wealthfolio:8088",
                "http://wealthfolio:8088", "http://wf.broker.svc.cluster.local",
                "http://127.0.0.1:8088", "http://10.1.2.3:8088"):
        assert not outside(url), url


def test_password_over_plain_http_outside_the_cluster_warns_once(data_dir: Path) -> None:
    env = file_mode_env(data_dir, None, WF_BASE_URL="http://wealthfolio.example.com:8088")
    result = run_inprocess(["status"], env)
    assert result.code == 0, result.describe()
    assert result.stderr.count("plain http to a host outside the cluster") == 1, result.stderr
    quiet = run_inprocess(["status"], file_mode_env(
        data_dir, None, WF_BASE_URL="http://wealthfolio.wealthfolio:8088"))
    assert "plain http" not in quiet.stderr


def test_flex_url_on_a_foreign_host_never_gets_the_token(
        wf: ReliabilityFakeWealthfolio, data_dir: Path, reliability_ledger: Recorder) -> None:
    with FakeFlexService(token=FLEX_TOKEN) as flex, FakeFlexService(token=FLEX_TOKEN) as thief:
        flex.configure(url_style="custom", custom_url=thief.get_url)
        env = file_mode_env(data_dir, wf, IBKR_FLEX_QUERY_ID=flex.query_id,
                            IBKR_FLEX_SEND_URL=flex.send_url, IBKR_FLEX_GET_URL=flex.get_url,
                            IBKR_FLEX_DEADLINE_SECONDS="30")
        result = run_inprocess(["sync", "--dry-run"], env)
        scanner = SecretScanner()
        scanner.results(result)
        reliability_ledger(scenario="Flex <Url> on a foreign host", faults=1,
                           secrets=len(scanner.hits) + thief.count())
        assert result.code == 0, result.describe()
        assert thief.count() == 0, "the token went to a host the Flex response named"
        assert flex.count("GetStatement") >= 1
        assert "the token is not sent there" in result.stderr
        assert not scanner.hits, scanner.hits

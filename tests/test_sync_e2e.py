"""End to end over real loopback HTTP: Flex XML in → Wealthfolio requests and Pushgateway
series out, through the real CLI process, real DuckDB, real dbt and a real Pushgateway."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from fakes.flex import FakeFlexService
from fakes.wealthfolio import FakeWealthfolio
from flexsync.transform import dbt_target_dir
from tests.helpers import DEMO_STATEMENT, FLEXSYNC, REPO_ROOT, cli_env, query, run_cli
from tests.plugins.pushgateway import RunningPushgateway

PASSWORD = "e2e-Wf-Pa55word"

EXPECTED_KEYS = {
    "ibkr:trade:7001", "ibkr:trade:7002", "ibkr:trade:7003", "ibkr:trade:7004",
    "ibkr:cash:8001", "ibkr:cash:8002", "ibkr:cash:8003", "ibkr:cash:8004", "ibkr:cash:8005",
}


@pytest.fixture
def wf() -> Any:
    with FakeWealthfolio(PASSWORD) as fake:
        fake.create_account("IBKR ISA", "GBP")
        yield fake


def _account(fake: FakeWealthfolio) -> str:
    return next(iter(fake.accounts))


def _env(fake: FakeWealthfolio, data_dir: Path, push: RunningPushgateway | None = None,
         **extra: str) -> dict[str, str]:
    env = {
        "IBKR_ACCOUNT_ID_UPSTREAM": "U1234567",
        "IBKR_ACCOUNT_ID": _account(fake),
        "WF_BASE_URL": fake.base_url,
        "WF_PASSWORD": PASSWORD,
        "WF_SESSION_PATH": str(data_dir / "wf-session.json"),
        "PUSHGATEWAY_URL": push.url if push else "",
        "FLEXSYNC_HTTP_TIMEOUT_SECONDS": "5",
    }
    env.update(extra)
    return env


def _sync(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["-v", "sync", *args], data_dir, **env)


def _sync_file(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return _sync(data_dir, env, "--flex-file", str(DEMO_STATEMENT))


def _creates(fake: FakeWealthfolio) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests_to("POST", "/activities")]


def _keys_in(fake: FakeWealthfolio) -> list[str]:
    return sorted(a["idempotencyKey"] for a in fake.activities_for(_account(fake)))


def _drift(push: RunningPushgateway) -> dict[str, float]:
    return {s.labels["symbol"]: s.value for s in push.samples("ibkr_position_drift_shares")}


def test_download_sync_posts_exactly_the_expected_activities(
        wf: FakeWealthfolio, fake_flex: FakeFlexService, flex_env: dict[str, str],
        pushgateway: RunningPushgateway, data_dir: Path) -> None:
    fake_flex.configure(statement=DEMO_STATEMENT.read_bytes())
    env = _env(wf, data_dir, pushgateway, **flex_env)
    result = _sync(data_dir, env)
    assert result.returncode == 0, result.stderr
    for stage in ("extract:", "transform:", "load:", "drift:", "push:"):
        assert stage in result.stderr, stage

    assert _keys_in(wf) == sorted(EXPECTED_KEYS)
    by_key = {body["idempotencyKey"]: body for body in _creates(wf)}
    assert set(by_key) == EXPECTED_KEYS  # each posted once, nothing else
    account = _account(wf)
    for body in by_key.values():
        assert body["accountId"] == account
        assert body["sourceSystem"] == "IBKR"
        assert body["sourceRecordId"] == body["idempotencyKey"].rsplit(":", 1)[1]
        for name in ("quantity", "unitPrice", "amount", "fee"):
            assert name not in body or body[name] is None or isinstance(body[name], str)

    vuag = by_key["ibkr:trade:7001"]
    assert vuag["activityType"] == "BUY"
    assert vuag["activityDate"].startswith("2026-09-01")
    assert vuag["symbol"] == {"symbol": "VUAG", "exchangeMic": "XLON", "quoteCcy": "GBP",
                              "instrumentType": "EQUITY"}
    assert (Decimal(vuag["quantity"]), Decimal(vuag["unitPrice"]), Decimal(vuag["fee"])) == (
        Decimal(40), Decimal("92.155"), Decimal(3))
    assert vuag["currency"] == "GBP"
    assert "VANGUARD" in vuag["notes"]

    sell = by_key["ibkr:trade:7004"]
    assert sell["activityType"] == "SELL" and Decimal(sell["quantity"]) == 5
    assert Decimal(sell["unitPrice"]) == Decimal("95.01")

    aapl = by_key["ibkr:trade:7002"]
    assert aapl["symbol"]["symbol"] == "AAPL" and aapl["symbol"]["quoteCcy"] == "USD"
    assert aapl["symbol"]["exchangeMic"] == "XNAS"
    eunl = by_key["ibkr:trade:7003"]
    assert eunl["symbol"]["exchangeMic"] == "XETR" and eunl["currency"] == "EUR"

    dividend = by_key["ibkr:cash:8002"]
    assert dividend["activityType"] == "DIVIDEND"
    assert dividend["symbol"]["symbol"] == "AAPL"
    assert Decimal(dividend["amount"]) == Decimal("2.60") and dividend["currency"] == "USD"
    assert dividend["activityDate"].startswith("2026-11-13")

    cash_expectations = {
        "ibkr:cash:8001": ("DEPOSIT", Decimal(10000), "GBP"),
        "ibkr:cash:8003": ("TAX", Decimal("0.39"), "USD"),
        "ibkr:cash:8004": ("INTEREST", Decimal("4.12"), "GBP"),
        "ibkr:cash:8005": ("FEE", Decimal("1.50"), "USD"),
    }
    for key, (kind, amount, currency) in cash_expectations.items():
        body = by_key[key]
        assert (body["activityType"], Decimal(body["amount"]), body["currency"]) == (
            kind, amount, currency), key
        # Withholding tax names its instrument (Wealthfolio links the asset); the rest
        # are pure cash.
        assert (body.get("symbol") or {}).get("symbol") == (
            "AAPL" if key == "ibkr:cash:8003" else None), key

    # Drift: VOD was bought before the Flex window → its whole position is drift.
    assert _drift(pushgateway) == {"AAPL": 0.0, "EUNL.DE": 0.0, "VOD.L": 500.0, "VUAG.L": 0.0}
    success = pushgateway.samples("ibkr_sync_last_success_timestamp_seconds")
    assert success and abs(success[0].value - time.time()) < 300
    posted = pushgateway.samples("ibkr_sync_activities_posted")
    assert posted[0].value == 9
    assert pushgateway.samples("ibkr_sync_unmapped_transactions")[0].value == 2

    # The ledger has every id once, as posted.
    ledger = query(data_dir, "select external_id, status from sync.posted_activities")
    assert sorted(ledger) == sorted((k, "posted") for k in EXPECTED_KEYS)

    # Two looks at Wealthfolio: every activity before posting; after it, those dated from
    # the earliest day posted (UTC), which holds all nine.
    earliest = min(datetime.fromisoformat(body["activityDate"]).astimezone(UTC).date()
                   for body in by_key.values())
    looks = query(data_dir, "select date_from, activity_count from raw_wealthfolio.snapshots "
                            "order by snapshot_at")
    assert looks == [(None, 0), (earliest, 9)]

    # Secrets: nowhere in the output, the warehouse, the metrics, the archive.
    secrets = [flex_env["IBKR_FLEX_TOKEN"], PASSWORD]
    haystacks = [result.stdout, result.stderr, pushgateway.metrics_text()]
    haystacks += _all_warehouse_text(data_dir / "warehouse.duckdb")
    haystacks += _all_warehouse_text(data_dir / "analytics.duckdb")
    for secret in secrets:
        assert not any(secret in text for text in haystacks)
    # Nor in dbt's target path: its compiled SQL and manifest, and the templates flexsync
    # keeps there between runs (flexsync/core/dbt_compile_cache.py).
    target_files = [p for p in dbt_target_dir(REPO_ROOT).rglob("*") if p.is_file()]
    assert any(p.name == "flexsync_compiled.marshal" for p in target_files)
    for path in target_files:
        content = path.read_bytes()
        assert not any(secret.encode() in content for secret in secrets), path
    session = data_dir / "wf-session.json"
    assert session.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in session.read_text()

    # A second run posts nothing and keeps the drift.
    creates_before = len(_creates(wf))
    again = _sync(data_dir, env)
    assert again.returncode == 0, again.stderr
    assert len(_creates(wf)) == creates_before
    assert _keys_in(wf) == sorted(EXPECTED_KEYS)
    assert _drift(pushgateway) == {"AAPL": 0.0, "EUNL.DE": 0.0, "VOD.L": 500.0, "VUAG.L": 0.0}
    # Nothing posted: the look before the load is the only one (it still holds).
    assert query(data_dir, "select date_from, activity_count from raw_wealthfolio.snapshots "
                           "order by snapshot_at")[2:] == [(None, 9)]
    assert "the load changed nothing in Wealthfolio" in again.stderr


def _all_warehouse_text(path: Path) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        texts = []
        columns = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type = 'VARCHAR'").fetchall()
        for schema, table, column in columns:
            rows = con.execute(f'select "{column}" from "{schema}"."{table}"').fetchall()
            texts.extend(str(r[0]) for r in rows if r[0] is not None)
        return texts
    finally:
        con.close()


VOD_TRADE = (
    '<Trade accountId="U1234567" currency="GBP" assetCategory="STK" subCategory="COMMON" '
    'symbol="VOD" description="VODAFONE GROUP PLC" conid="29616949" isin="GB00BH4HKS39" '
    'listingExchange="LSE" tradeID="7101" transactionID="9101" tradeDate="2026-09-02" '
    'tradeTime="10:00:00" dateTime="2026-09-02;10:00:00" buySell="BUY" quantity="500" '
    'tradePrice="0.7010" ibCommission="-3" ibCommissionCurrency="GBP" exchange="LSE" '
    'levelOfDetail="EXECUTION" />\n')


def test_lse_assets_are_valued_at_their_worth_whatever_the_provider_quotes(
        wf: FakeWealthfolio, data_dir: Path, tmp_path: Path) -> None:
    """docs/upstream.md#quote-currency: a GBP-quoted ETF (VUAG) and a GBp-quoted share (VOD) bought
    on the LSE are valued at price × quantity; an asset created in GBp would value VUAG at 1/100."""
    statement = DEMO_STATEMENT.read_text()
    anchor = statement.index("<Trade ")
    flex = tmp_path / "with_vod.xml"
    flex.write_text(statement[:anchor] + VOD_TRADE + statement[anchor:])
    result = _sync(data_dir, _env(wf, data_dir), "--flex-file", str(flex))
    assert result.returncode == 0, result.stderr
    assets = {(a["symbol"], a["exchangeMic"]): a for a in wf.assets.values()}
    assert assets[("VUAG", "XLON")]["quoteCcy"] == "GBP"
    assert assets[("VOD", "XLON")]["quoteCcy"] == "GBP"

    wf.set_market_quote("VUAG", "XLON", "92.15", "GBP")   # Yahoo quotes VUAG.L in pounds
    wf.set_market_quote("VOD", "XLON", "71.20", "GBp")    # and VOD.L in pence
    holdings = {h["instrument"]["symbol"]: h for h in wf._compute_holdings(
        _account(wf), {_account(wf)}) if h["holdingType"] == "security"}
    assert holdings["VUAG"]["quantity"] == 35
    assert holdings["VUAG"]["marketValue"]["local"] == Decimal("92.15") * 35
    assert holdings["VOD"]["marketValue"]["local"] == Decimal("0.7120") * 500


def _two_account_statement(path: Path) -> Path:
    """The demo statement plus a second IBKR account's copy (U7654321, its own ids)."""
    text = DEMO_STATEMENT.read_text()
    start, end = text.index("<FlexStatement "), text.index("</FlexStatements>")
    second = re.sub(r'(tradeID|transactionID)="(\d+)"',
                    lambda m: f'{m.group(1)}="{int(m.group(2)) + 100000}"',
                    text[start:end].replace('accountId="U1234567"', 'accountId="U7654321"'))
    second = second.replace('quantity="40"', 'quantity="60"')  # a different VUAG buy
    both = text[:end] + second + text[end:]
    path.write_text(both.replace('<FlexStatements count="1">', '<FlexStatements count="2">'))
    return path


def test_two_ibkr_accounts_reach_two_wealthfolio_accounts(
        wf: FakeWealthfolio, pushgateway: RunningPushgateway, data_dir: Path,
        tmp_path: Path) -> None:
    """IBKR_ACCOUNT_MAP routes each IBKR account's activities, drift and metrics."""
    isa = _account(wf)
    gia = wf.create_account("IBKR GIA", "GBP")["id"]
    env = _env(wf, data_dir, pushgateway, IBKR_ACCOUNT_MAP=f"U1234567={isa},U7654321={gia}")
    del env["IBKR_ACCOUNT_ID"], env["IBKR_ACCOUNT_ID_UPSTREAM"]
    flex = _two_account_statement(tmp_path / "two.xml")
    result = _sync(data_dir, env, "--flex-file", str(flex))
    assert result.returncode == 0, result.stderr

    first = sorted(a["idempotencyKey"] for a in wf.activities_for(isa))
    second = sorted(a["idempotencyKey"] for a in wf.activities_for(gia))
    assert first == sorted(EXPECTED_KEYS)
    assert second == sorted(f"{k.rsplit(':', 1)[0]}:{int(k.rsplit(':', 1)[1]) + 100000}"
                            for k in EXPECTED_KEYS)
    buys = {a["idempotencyKey"]: a for a in wf.activities_for(gia)}
    assert buys["ibkr:trade:107001"]["quantity"] == "60"

    # Drift per Wealthfolio account, and the metrics carry each IBKR account's label.
    rows = query(data_dir, "select wf_account_id, broker_account_id, symbol, drift "
                 "from marts.position_drift order by 1, 3")
    assert {(r[0], r[1]) for r in rows} == {(isa, "U1234567"), (gia, "U7654321")}
    assert {(r[0], r[2]): r[3] for r in rows}[(gia, "VUAG.L")] == Decimal(-20)  # IBKR 35, WF 60 - 5
    series = {(s.labels["account"], s.labels["symbol"]): s.value
              for s in pushgateway.samples("ibkr_position_drift_shares")}
    assert series[("U1234567", "VOD.L")] == 500.0 and series[("U7654321", "VOD.L")] == 500.0
    assert series[("U1234567", "VUAG.L")] == 0.0 and series[("U7654321", "VUAG.L")] == -20.0

    # The guard accepts exactly the mapped accounts (a fresh warehouse: landing the
    # same bytes again would be a no-op).
    other = tmp_path / "other-data"
    wrong = _sync(other, {**_env(wf, other), "IBKR_ACCOUNT_ID": "",
                          "IBKR_ACCOUNT_ID_UPSTREAM": "", "IBKR_ACCOUNT_MAP": f"U1234567={isa}"},
                  "--flex-file", str(flex))
    assert wrong.returncode == 3, wrong.stderr
    assert "U7654321" in wrong.stderr


def test_position_closed_at_ibkr_but_held_in_wealthfolio_is_drift(
        wf: FakeWealthfolio, pushgateway: RunningPushgateway, data_dir: Path,
        make_wf_client: Any) -> None:
    client = make_wf_client(base_url=wf.base_url, password=PASSWORD)
    outcome = client.create_activity({
        "accountId": _account(wf), "activityType": "BUY", "activityDate": "2026-01-05",
        "symbol": {"symbol": "MSFT", "exchangeMic": "XNAS", "quoteCcy": "USD",
                   "instrumentType": "EQUITY"},
        "quantity": "3", "unitPrice": "410", "currency": "USD",
    })
    assert outcome.status == "posted"
    result = _sync_file(data_dir, _env(wf, data_dir, pushgateway))
    assert result.returncode == 0, result.stderr
    drift = _drift(pushgateway)
    assert drift["MSFT"] == -3.0
    assert drift["VOD.L"] == 500.0
    rows = query(data_dir, "select broker_quantity, wf_quantity, drift from marts.position_drift "
                 "where symbol = 'MSFT'")
    assert rows == [(None, Decimal(3), Decimal(-3))] or rows[0][1:] == (Decimal(3), Decimal(-3))


def test_500_on_the_third_create_then_the_next_run_completes(
        wf: FakeWealthfolio, pushgateway: RunningPushgateway, data_dir: Path) -> None:
    wf.fail_nth_create(3, times=4)  # the third create and all 3 of its retries fail
    env = _env(wf, data_dir, pushgateway)
    first = _sync_file(data_dir, env)
    assert first.returncode == 5, first.stderr
    assert "posted 8, already there 0, failed 1" in first.stderr
    assert "Traceback" not in first.stderr
    assert len(_keys_in(wf)) == 8
    failed = query(data_dir, "select external_id, error from sync.posted_activities "
                   "where status = 'failed'")
    assert len(failed) == 1 and "500" in failed[0][1]
    assert not pushgateway.samples("ibkr_sync_last_success_timestamp_seconds")
    assert pushgateway.samples("ibkr_sync_activities_failed")[0].value == 1
    assert not (data_dir / "analytics.duckdb").exists()

    second = _sync_file(data_dir, env)
    assert second.returncode == 0, second.stderr
    assert _keys_in(wf) == sorted(EXPECTED_KEYS)  # every activity exactly once
    creates = [b["idempotencyKey"] for b in _creates(wf)]
    assert creates.count(failed[0][0]) >= 2  # retried in the next run
    assert pushgateway.samples("ibkr_sync_last_success_timestamp_seconds")


def test_session_expiry_mid_run_means_one_relogin(
        wf: FakeWealthfolio, data_dir: Path) -> None:
    wf.expire_sessions_on("POST", "/activities", skip=2)
    result = _sync_file(data_dir, _env(wf, data_dir))
    assert result.returncode == 0, result.stderr
    assert len(wf.requests_to("POST", "/auth/login")) == 2
    assert _keys_in(wf) == sorted(EXPECTED_KEYS)


def test_wrong_password_exits_5_and_posts_nothing(wf: FakeWealthfolio, data_dir: Path) -> None:
    result = _sync_file(data_dir, _env(wf, data_dir, WF_PASSWORD="not-the-password"))
    assert result.returncode == 5
    assert "Wealthfolio rejected WF_PASSWORD" in result.stderr
    assert "not-the-password" not in result.stderr
    assert _keys_in(wf) == []


@pytest.mark.parametrize("problem", ["holdings", "archived", "missing"])
def test_an_account_that_would_swallow_activities_exits_5_with_nothing_posted(
        wf: FakeWealthfolio, data_dir: Path, problem: str) -> None:
    account = _account(wf)
    if problem == "holdings":
        wf.accounts[account]["trackingMode"] = "HOLDINGS"
    elif problem == "archived":
        wf.accounts[account]["isArchived"] = True
    env = _env(wf, data_dir)
    if problem == "missing":
        env["IBKR_ACCOUNT_ID"] = "0b7c2f3e-0000-4000-8000-000000000000"
    result = _sync_file(data_dir, env)
    assert result.returncode == 5, result.stderr
    assert "Wealthfolio account check failed, nothing was posted" in result.stderr
    assert {"holdings": "Tracking mode to Transactions", "archived": "unarchive it",
            "missing": "does not exist"}[problem] in result.stderr
    assert wf.requests_to("POST", "/activities") == []
    assert wf.activities == {}
    assert query(data_dir, "select count(*) from sync.posted_activities") == [(0,)]
    # The drift marts (built after the load in a sync) are built all the same, from the
    # snapshot taken before it: this run's drift, one row per IBKR position.
    [(run_id,)] = query(data_dir, "select run_id from sync.runs")
    assert query(data_dir, "select count(*), count(*) filter (where drift <> 0) from "
                 "marts.position_drift_history where run_id = ?", [run_id]) == [(4, 4)]


# --- exit codes, each class triggered for real ---------------------------------------------


def test_exit_2_configuration_before_any_network_call(wf: FakeWealthfolio,
                                                      data_dir: Path) -> None:
    result = run_cli(["sync"], data_dir, **_env(wf, data_dir))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "IBKR_FLEX_TOKEN not provided"
    assert wf.requests == []
    missing_wf = run_cli(["sync", "--flex-file", str(DEMO_STATEMENT)], data_dir,
                         IBKR_ACCOUNT_ID_UPSTREAM="U1234567")
    assert missing_wf.returncode == 2
    assert "WF_BASE_URL not provided" in missing_wf.stderr


def test_exit_3_account_guard(wf: FakeWealthfolio, data_dir: Path) -> None:
    result = _sync_file(data_dir, _env(wf, data_dir, IBKR_ACCOUNT_ID_UPSTREAM="U0000001"))
    assert result.returncode == 3
    assert "IBKRAccountMismatchError" in result.stderr
    assert wf.requests_to("POST", "/activities") == []


def test_exit_4_flex_token_expired(wf: FakeWealthfolio, fake_flex: FakeFlexService,
                                   flex_env: dict[str, str], data_dir: Path) -> None:
    env = _env(wf, data_dir, **{**flex_env, "IBKR_FLEX_TOKEN": "an-old-expired-token"})
    result = _sync(data_dir, env)
    assert result.returncode == 4
    assert "IBKR Flex error 1015" in result.stderr or "IBKR Flex error 1012" in result.stderr
    assert "an-old-expired-token" not in result.stderr
    assert wf.requests_to("POST", "/activities") == []


def test_exit_6_dbt_failure_names_the_model(wf: FakeWealthfolio, data_dir: Path) -> None:
    assert run_cli(["extract", "--flex-file", str(DEMO_STATEMENT)], data_dir,
                   IBKR_ACCOUNT_ID_UPSTREAM="U1234567").returncode == 0
    con = duckdb.connect(str(data_dir / "warehouse.duckdb"))
    # Schema drift flexsync cannot heal (a dropped column is re-added, empty): a column
    # of the wrong type.
    con.execute('alter table raw_ibkr.trades alter column "tradePrice" type date '
                'using cast(null as date)')
    con.close()
    result = run_cli(["transform"], data_dir, IBKR_ACCOUNT_ID=_account(wf))
    assert result.returncode == 6, result.stderr
    assert "stg_ibkr__trades" in result.stderr
    assert "Traceback" not in result.stderr


def test_exit_7_pushgateway_down_keeps_activities(wf: FakeWealthfolio, data_dir: Path) -> None:
    env = _env(wf, data_dir, PUSHGATEWAY_URL="http://127.0.0.1:9")
    result = _sync_file(data_dir, env)
    assert result.returncode == 7, result.stderr
    assert _keys_in(wf) == sorted(EXPECTED_KEYS)
    statuses = {r[0] for r in query(data_dir, "select status from sync.posted_activities")}
    assert statuses == {"posted"}


def test_exit_8_second_sync_while_the_first_runs(wf: FakeWealthfolio,
                                                 data_dir: Path) -> None:
    wf.slow_down(1.5, times=3, method="POST", path="/activities")
    env = cli_env(data_dir, **_env(wf, data_dir))
    first = subprocess.Popen([*FLEXSYNC, "sync", "--flex-file", str(DEMO_STATEMENT)],
                             env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not wf.requests_to("POST", "/activities") and time.monotonic() < deadline:
            time.sleep(0.1)
        start = time.monotonic()
        second = subprocess.run([*FLEXSYNC, "sync", "--flex-file", str(DEMO_STATEMENT)],
                                env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=60, check=False)
        assert second.returncode == 8, second.stderr
        assert time.monotonic() - start < 15
        assert "another flexsync run holds the warehouse lock" in second.stderr
        status = subprocess.run([*FLEXSYNC, "status"], env=env, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
        assert status.returncode == 8
        _, err = first.communicate(timeout=180)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    assert _keys_in(wf) == sorted(EXPECTED_KEYS)


def test_exit_1_unexpected_data_dir_is_a_file(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("oops")
    result = run_cli(["extract", "--flex-file", str(DEMO_STATEMENT)], not_a_dir,
                     IBKR_ACCOUNT_ID_UPSTREAM="U1234567")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(not_a_dir) in result.stderr


def test_json_logs_and_dry_run(wf: FakeWealthfolio, data_dir: Path) -> None:
    result = run_cli(["--log-format", "json", "sync", "--dry-run", "--flex-file",
                      str(DEMO_STATEMENT)], data_dir, **_env(wf, data_dir))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert {"ts", "level", "msg"} <= set(records[0])
    assert any(r.get("stage") == "transform" for r in records)
    # dry run: nothing written to Wealthfolio, the plan and the metrics printed
    assert wf.requests_to("POST", "/activities") == []
    assert "ibkr:trade:7001" in result.stdout
    assert "ibkr_position_drift_shares" in result.stdout
    assert "would be pushed" in result.stdout

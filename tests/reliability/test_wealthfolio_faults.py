"""Wealthfolio faults through the strict fake, via `flexsync load` on the demo warehouse.

Each persistent fault: the run exits 5 with a one-line summary and no traceback, the
retries are bounded, nothing is doubled and the ledger never claims more than
Wealthfolio has; once the fault clears, the next run posts the rest and everything is
in Wealthfolio exactly once. Transient faults are absorbed within one run (exit 0).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fakes.wealthfolio import Fault
from flexsync.loaders.wealthfolio_client import WealthfolioClient
from tests.plugins.pushgateway import free_port
from tests.reliability.conftest import Recorder
from tests.reliability.harness import (
    WF_PASSWORD,
    CliResult,
    ReliabilityFakeWealthfolio,
    assert_clean_failure,
    conclude,
    file_mode_env,
    ledger_rows,
    partial_problems,
    run_inprocess,
)

MAX_ATTEMPTS = 4  # WealthfolioClient's default: one call is tried at most this often


def _load(data_dir: Path, wf: ReliabilityFakeWealthfolio, **extra: str) -> CliResult:
    return run_inprocess(["load"], file_mode_env(data_dir, wf, **extra))


def _attempts_per_key(wf: ReliabilityFakeWealthfolio) -> Counter[str]:
    return Counter(r.json["idempotencyKey"] for r in wf.requests_to("POST", "/activities"))


def _recover(data_dir: Path, wf: ReliabilityFakeWealthfolio, first: CliResult
             ) -> list[CliResult]:
    """The fault clears; the next run must finish the job."""
    assert not partial_problems(wf, data_dir), partial_problems(wf, data_dir)
    wf.clear_faults()
    assert wf.wait_idle(10)
    second = _load(data_dir, wf)
    assert second.code == 0, second.describe()
    return [first, second]


def test_500_storm_on_creates(demo_data_dir: Path, wf: ReliabilityFakeWealthfolio,
                              reliability_ledger: Recorder) -> None:
    wf.error_storm(MAX_ATTEMPTS + 2, method="POST", path="/activities")
    first = _load(demo_data_dir, wf)
    assert_clean_failure(first, 5, "Wealthfolio load incomplete", "posted 8", "failed 1",
                         "500 Internal Server Error")
    attempts = _attempts_per_key(wf)
    assert max(attempts.values()) == MAX_ATTEMPTS, attempts  # bounded, then the next row
    assert ("ibkr:cash:8001", "failed", None) in ledger_rows(demo_data_dir)
    runs = _recover(demo_data_dir, wf, first)
    conclude(reliability_ledger, "WF 500 storm on creates", MAX_ATTEMPTS + 2, wf,
             demo_data_dir, runs)


def test_create_timeouts(demo_data_dir: Path, wf: ReliabilityFakeWealthfolio,
                         reliability_ledger: Recorder) -> None:
    # The third activity's answers never arrive in time; the server still stores it
    # (the first slowed request), so this is also a lost acknowledgement.
    wf.slow_down(2.5, times=MAX_ATTEMPTS, method="POST", path="/activities", skip=2)
    first = _load(demo_data_dir, wf, FLEXSYNC_HTTP_TIMEOUT_SECONDS="1")
    assert_clean_failure(first, 5, "did not answer POST /activities within 1s",
                         f"{MAX_ATTEMPTS} attempts")
    assert wf.wait_idle(10)
    assert max(_attempts_per_key(wf).values()) == MAX_ATTEMPTS
    assert len(wf.activities) == 3  # two answered, one stored after we gave up
    runs = _recover(demo_data_dir, wf, first)
    statuses = {k: s for k, s, _ in ledger_rows(demo_data_dir)}
    assert list(statuses.values()).count("already_present") == 1  # the lost ack, recovered
    conclude(reliability_ledger, "WF create timeouts (lost ack)", MAX_ATTEMPTS, wf,
             demo_data_dir, runs)


def test_unusable_at_login_down_500_storm_429(demo_data_dir: Path,
                                              wf: ReliabilityFakeWealthfolio,
                                              reliability_ledger: Recorder) -> None:
    """Three nights Wealthfolio cannot even be logged in to: nothing posted, three clear
    exit-5 lines with bounded retries; the fourth night posts everything."""
    dead = f"http://127.0.0.1:{free_port()}"
    down = _load(demo_data_dir, wf, WF_BASE_URL=dead)
    assert_clean_failure(down, 5, "Wealthfolio login failed at", "ConnectError",
                         f"{MAX_ATTEMPTS} attempts")
    assert not wf.requests

    wf.error_storm(50)
    storm = _load(demo_data_dir, wf)
    assert_clean_failure(storm, 5, "Wealthfolio login failed", "500")
    assert len(wf.requests) == MAX_ATTEMPTS  # bounded: four logins, then it gives up
    wf.clear_faults()

    wf.rate_limit_login(600)
    limited = _load(demo_data_dir, wf)
    assert_clean_failure(limited, 5, "rate-limited", "gave up")
    assert len(wf.requests) == MAX_ATTEMPTS + 1  # asked to wait 600 s: gave up at once
    assert not wf.activities
    runs = [down, storm, *_recover(demo_data_dir, wf, limited)]
    conclude(reliability_ledger, "WF unusable at login: down, 500 storm, 429 (3 runs)",
             2 + MAX_ATTEMPTS, wf, demo_data_dir, runs)


def test_connection_dropped_after_storing(demo_data_dir: Path, wf: ReliabilityFakeWealthfolio,
                                          reliability_ledger: Recorder) -> None:
    # From the fifth create on, Wealthfolio stores the activity and the connection dies
    # before the answer: every retry is refused as a duplicate and dropped too.
    wf.add_fault(Fault("store_then_drop", "POST", "/activities", skip=4, times=100))
    first = _load(demo_data_dir, wf)
    assert_clean_failure(first, 5, "cannot reach Wealthfolio", "POST /activities",
                         f"{MAX_ATTEMPTS} attempts")
    assert max(_attempts_per_key(wf).values()) == MAX_ATTEMPTS
    assert len(wf.activities) == 5
    runs = _recover(demo_data_dir, wf, first)
    conclude(reliability_ledger, "WF connection dropped after storing", MAX_ATTEMPTS, wf,
             demo_data_dir, runs)


def test_401_mid_run_with_a_rotated_password(demo_data_dir: Path,
                                             wf: ReliabilityFakeWealthfolio,
                                             reliability_ledger: Recorder) -> None:
    session = demo_data_dir / "wf-session.json"
    with WealthfolioClient(wf.base_url, WF_PASSWORD, session_path=session) as client:
        client.login()  # a cached session from an earlier run
    wf.password = "rotated-by-the-admin"  # the fake server's new password
    wf.expire_sessions_on("POST", "/activities", skip=3)
    first = _load(demo_data_dir, wf)
    assert_clean_failure(first, 5, "Wealthfolio rejected WF_PASSWORD", "401")
    assert len(wf.activities) == 3
    wf.password = WF_PASSWORD
    runs = _recover(demo_data_dir, wf, first)
    conclude(reliability_ledger, "WF 401 mid-run, password rotated", 2, wf, demo_data_dir,
             runs)


def test_malformed_json_from_search(demo_data_dir: Path, wf: ReliabilityFakeWealthfolio,
                                    reliability_ledger: Recorder) -> None:
    # Creates succeed; the post-load snapshot gets truncated JSON every time.
    wf.malformed_json(times=100, method="POST", path="/activities/search")
    first = _load(demo_data_dir, wf)
    assert_clean_failure(first, 5, "not JSON", "POST /activities/search")
    assert len(wf.activities) == 9
    assert len(wf.requests_to("POST", "/activities/search")) == MAX_ATTEMPTS
    runs = _recover(demo_data_dir, wf, first)
    conclude(reliability_ledger, "WF malformed JSON (search)", MAX_ATTEMPTS, wf, demo_data_dir,
             runs)


def test_duplicate_answer_for_a_key_never_posted(demo_data_dir: Path,
                                                 wf: ReliabilityFakeWealthfolio,
                                                 reliability_ledger: Recorder) -> None:
    # Wealthfolio claims ibkr:trade:7002 exists, but no activity of the account has it.
    # Trusting that would lose the trade for ever (the ledger never re-posts a settled id).
    phantom = wf.add_phantom_duplicate("ibkr:trade:7002")
    first = _load(demo_data_dir, wf)
    assert_clean_failure(first, 5, "failed 1", "ibkr:trade:7002")
    assert phantom in first.stderr or "not in account" in first.stderr
    assert wf.activity_by_key("ibkr:trade:7002") is None
    runs = _recover(demo_data_dir, wf, first)
    assert wf.activity_by_key("ibkr:trade:7002") is not None
    conclude(reliability_ledger, "WF duplicate answer, key never posted", 1, wf,
             demo_data_dir, runs)


def test_transient_faults_are_absorbed_in_one_run(demo_data_dir: Path,
                                                  wf: ReliabilityFakeWealthfolio,
                                                  reliability_ledger: Recorder) -> None:
    """429 on login, two 500s, a lost ack behind a 500, a malformed answer to a stored
    create, a dropped connection after storing, a session expiring mid-run: exit 0."""
    wf.rate_limit_login(1)
    wf.error_storm(2, method="POST", path="/activities")  # creates #1, #2
    wf.fail_nth_create(5, store=True)  # #5 stored, answered 500
    wf.malformed_json(method="POST", path="/activities", skip=6)  # #7 stored, bad JSON
    wf.add_fault(Fault("store_then_drop", "POST", "/activities", skip=8))  # #9
    wf.expire_sessions_on("POST", "/activities", skip=10)  # #11: 401, log in again
    result = _load(demo_data_dir, wf)
    assert result.code == 0, result.describe()
    assert wf.logins == 2
    statuses = Counter(s for _, s, _ in ledger_rows(demo_data_dir))
    assert statuses == {"posted": 6, "already_present": 3}, statuses  # 3 lost acks
    assert "Wealthfolio login rate-limited: waiting 1s as asked" in result.stderr
    conclude(reliability_ledger, "WF transient faults (6 kinds, one run)", 7, wf,
             demo_data_dir, [result])

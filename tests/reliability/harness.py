"""What the reliability scenarios share: the secrets, running the CLI (in-process or as a
real process that can be SIGKILLed), the invariants, and the secret scanner.

Secrets are random per pytest session, so a hit anywhere can only come from this run.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from fakes.wealthfolio import (
    API_PREFIX,
    FakeWealthfolio,
    IncomingRequest,
    Reply,
    error_reply,
)
from tests.helpers import DEMO_STATEMENT, REPO_ROOT

FLEX_TOKEN = f"rlbFlexTok{secrets.token_hex(12)}"
WF_PASSWORD = f"rlb-Wf-{secrets.token_hex(10)}!"
SECRETS = {"IBKR_FLEX_TOKEN": FLEX_TOKEN, "WF_PASSWORD": WF_PASSWORD}

ACCOUNT_UUID = "6f1f7a2e-1d0c-4f55-9a35-0d3f2b7c9e11"
UPSTREAM = "U1234567"
DEMO_EXPECTED = frozenset({
    "ibkr:trade:7001", "ibkr:trade:7002", "ibkr:trade:7003", "ibkr:trade:7004",
    "ibkr:cash:8001", "ibkr:cash:8002", "ibkr:cash:8003", "ibkr:cash:8004", "ibkr:cash:8005",
})

# Every variable flexsync reads: cleared so a developer's shell cannot leak into a run.
FLEXSYNC_VARIABLES = (
    "IBKR_FLEX_TOKEN", "IBKR_FLEX_QUERY_ID", "IBKR_ACCOUNT_ID", "IBKR_ACCOUNT_ID_UPSTREAM",
    "WF_BASE_URL", "WF_PASSWORD", "WF_USERNAME", "WF_SESSION_PATH", "PUSHGATEWAY_URL",
    "PUSHGATEWAY_JOB", "PUSHGATEWAY_ACCOUNT_LABEL", "IBKR_FLEX_SEND_URL", "IBKR_FLEX_GET_URL",
    "IBKR_FLEX_DEADLINE_SECONDS", "IBKR_FLEX_THROTTLE_SECONDS", "FLEXSYNC_HTTP_TIMEOUT_SECONDS",
    "FLEXSYNC_LOG_FORMAT", "BROKER_SYNC_DATA_DIR",
)
TRACEBACK = "Traceback (most recent call last)"


# --------------------------------------------------------------------------- the CLI


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None  # an exception that escaped the CLI (a bug)

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def describe(self) -> str:
        return (f"exit {self.code}; exception {self.exception!r}\n--- stderr (tail)\n"
                f"{self.stderr[-3000:]}\n--- stdout (tail)\n{self.stdout[-1500:]}")


def run_inprocess(args: list[str], env: Mapping[str, str]) -> CliResult:
    """`flexsync ARGS` inside this process (dbt's import is paid once per session).

    The CLI's logging setup replaces the root handlers; they are restored afterwards so
    the test process keeps logging where it did.
    """
    from typer.testing import CliRunner

    from flexsync.cli import app

    full_env: dict[str, str | None] = {name: None for name in FLEXSYNC_VARIABLES}
    full_env.update(env)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        result = CliRunner().invoke(app, args, env=full_env, catch_exceptions=True)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    escaped = None if isinstance(result.exception, SystemExit) else result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr, escaped)


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in FLEXSYNC_VARIABLES}
    base.update({"DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
                 "PYTHONUNBUFFERED": "1"})
    base.update(env)
    return base


class FlexsyncProcess:
    """`flexsync ARGS` as a real process (own session, so SIGKILL reaches it all), with
    its stderr read line by line so a test can act when a stage line appears."""

    def __init__(self, args: list[str], env: Mapping[str, str], *,
                 launcher: bool = False) -> None:
        module = "tests.reliability.launcher" if launcher else "flexsync"
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], env=process_env(env), cwd=REPO_ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, start_new_session=True,
        )
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines),
                             daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines),
                             daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.killed = False

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._changed:
                sink.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 120.0) -> str:
        """Block until a stderr line matches; fail if the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.stderr_lines[seen:]:
                    if regex.search(line):
                        return line
                seen = len(self.stderr_lines)
                if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError(
                        f"flexsync ended (exit {self.proc.returncode}) before a line matching "
                        f"{pattern!r}:\n{self.stderr[-3000:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n"
                                         f"{self.stderr[-3000:]}")
                self._changed.wait(min(left, 0.2))

    def wait_until(self, condition: Callable[[], bool], timeout: float = 120.0,
                   what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"flexsync ended (exit {self.proc.returncode}) before "
                                     f"{what}:\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached within {timeout}s")
            time.sleep(0.002)

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, no atexit — a pod OOM-kill or node loss."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.killed = True
        self.wait(30)

    def wait(self, timeout: float = 300.0) -> CliResult:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise AssertionError(f"flexsync {self.args} did not finish in {timeout}s:\n"
                                 f"{self.stderr[-3000:]}") from None
        for reader in self._readers:
            reader.join(10)
        return CliResult(self.proc.returncode, self.stdout, self.stderr)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    @property
    def stdout(self) -> str:
        return "".join(self.stdout_lines)


def run_process(args: list[str], env: Mapping[str, str], timeout: float = 300.0) -> CliResult:
    return FlexsyncProcess(args, env).wait(timeout)


def assert_clean_failure(result: CliResult, code: int, *phrases: str) -> None:
    """The contract for an expected failure: the exit code, a clear last line, no traceback."""
    assert result.exception is None, result.describe()
    assert result.code == code, result.describe()
    assert TRACEBACK not in result.stderr and TRACEBACK not in result.stdout, result.describe()
    for phrase in phrases:
        assert phrase in result.last_line, (phrase, result.describe())


# --------------------------------------------------------------------------- the fake


class ReliabilityFakeWealthfolio(FakeWealthfolio):
    """The strict fake plus one fault it lacks: store the n-th create, then stall before
    answering (the window in which Wealthfolio has the activity and flexsync does not
    know it yet). It also remembers every session token it issued, for the scanner."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stall_create: int | None = None
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.creates_seen = 0
        self.issued_tokens: list[str] = []
        # Servers that echo what they were sent: a 400 quoting the login body, or a
        # create refused with this text in its message.
        self.echo_login_body = False
        self.refuse_creates_with: str | None = None
        # A hostile answer to every activity search (a gzip bomb, JSON nested 100k deep).
        self.search_reply: Reply | None = None

    def _issue_token(self) -> str:
        token = super()._issue_token()
        with self.lock:
            self.issued_tokens.append(token)
        return token

    def _handle(self, req: IncomingRequest) -> Reply:
        if self.echo_login_body and req.method == "POST" and req.path == API_PREFIX + "/auth/login":
            return error_reply(400, "Failed to deserialize the JSON body into the target type: "
                               f"unexpected field in {req.body.decode('utf-8', 'replace')}")
        if (self.search_reply is not None and req.method == "POST"
                and req.path == API_PREFIX + "/activities/search"):
            return self.search_reply
        if (self.refuse_creates_with is not None and req.method == "POST"
                and req.path == API_PREFIX + "/activities"):
            return error_reply(400, f"Invalid activity: {self.refuse_creates_with}")
        if req.method != "POST" or req.path != API_PREFIX + "/activities":
            return super()._handle(req)
        with self.lock:
            self.creates_seen += 1
            number = self.creates_seen
        reply = super()._handle(req)
        if number == self.stall_create:
            self.stalled.set()
            self.release.wait(60)
        return reply

    def stall_nth_create(self, number: int) -> None:
        """Store the `number`-th create (counted over the fake's life), then stall."""
        self.stalled.clear()
        self.release.clear()
        self.stall_create = number

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()
            self.phantom_duplicates.clear()
        self.stall_create = None
        self.release.set()


def gzip_bomb(inflated_bytes: int, fill: bytes = b" ") -> bytes:
    """A gzip stream of `inflated_bytes` of one byte (about 1/1000 of that on the wire),
    compressed chunk by chunk so the test never holds the inflated form."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    chunk = fill * (1 << 20)
    parts = [packer.compress(chunk) for _ in range(inflated_bytes // len(chunk))]
    parts.append(packer.flush())
    return b"".join(parts)


# --------------------------------------------------------------------------- figures


@dataclass
class Figures:
    expected: int
    in_wealthfolio: int
    lost: int
    duplicated: int
    problems: list[str] = field(default_factory=list)


def wealthfolio_figures(fake: FakeWealthfolio, expected: Iterable[str],
                        account_id: str = ACCOUNT_UUID) -> Figures:
    """Expected activities vs what Wealthfolio holds, counted from the fake's own store.

    lost: expected keys with no activity. duplicated: every activity beyond one per
    expected key (a second copy, or anything flexsync should never have created),
    in any account.
    """
    wanted = set(expected)
    everywhere = [a for a in fake.activities.values()]
    keys = [a.get("idempotencyKey") for a in everywhere]
    present = wanted & {k for k in keys if k}
    problems = []
    stray = [a for a in everywhere if a["accountId"] != account_id]
    if stray:
        problems.append(f"{len(stray)} activities in another account")
    unexpected = sorted({str(k) for k in keys if k not in wanted})
    if unexpected:
        problems.append(f"activities nobody expected: {unexpected[:5]}")
    return Figures(len(wanted), len(present), len(wanted - present),
                   len(everywhere) - len(present), problems)


def ledger_rows(data_dir: Path) -> list[tuple[str, str, str | None]]:
    with readonly(data_dir / "warehouse.duckdb") as con:
        if not table_exists(con, "sync", "posted_activities"):
            return []
        return [(r[0], r[1], r[2]) for r in con.execute(
            "select external_id, status, wf_activity_id from sync.posted_activities "
            "order by recorded_at, external_id").fetchall()]


def ledger_problems(data_dir: Path, fake: FakeWealthfolio, expected: Iterable[str], *,
                    final: bool) -> list[str]:
    """The ledger agrees with Wealthfolio: nothing settled twice, every settled id is in
    Wealthfolio under the id the ledger names; when `final`, every expected id is settled
    and its latest status says so."""
    wanted = set(expected)
    by_key = {a["idempotencyKey"]: a["id"] for a in fake.activities.values()}
    settled: dict[str, list[str | None]] = {}
    latest: dict[str, str] = {}
    for key, status, wf_id in ledger_rows(data_dir):
        latest[key] = status
        if status in ("posted", "already_present"):
            settled.setdefault(key, []).append(wf_id)
    problems = []
    for key, ids in settled.items():
        if len(ids) > 1:
            problems.append(f"{key} settled {len(ids)} times")
        if key not in wanted:
            problems.append(f"{key} settled but not expected")
        if key not in by_key:
            problems.append(f"{key} settled in the ledger but not in Wealthfolio")
        elif ids[0] is not None and ids[0] != by_key[key]:
            problems.append(f"{key}: ledger says {ids[0]}, Wealthfolio has {by_key[key]}")
    if final:
        for key in sorted(wanted):
            if latest.get(key) not in ("posted", "already_present"):
                problems.append(f"{key}: latest ledger status {latest.get(key)!r}")
    return problems


class readonly:  # used like a function, as duckdb.connect is
    """Open a DuckDB file read-only, as an analyst would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        self.con = duckdb.connect(str(self.path), read_only=True)
        return self.con

    def __exit__(self, *exc: object) -> None:
        if self.con is not None:
            self.con.close()


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = con.execute("select count(*) from information_schema.tables where table_schema = ? "
                      "and table_name = ?", [schema, table]).fetchone()
    return bool(row and row[0])


def warehouse_problems(data_dir: Path, *, marts_required: bool) -> list[str]:
    """The warehouse opens read-only and its tables answer queries; so does the analysts'
    copy if there is one (it must never be half a file)."""
    problems = []
    try:
        with readonly(data_dir / "warehouse.duckdb") as con:
            con.execute("select count(*) from sync.runs").fetchone()
            con.execute("select count(*) from sync.posted_activities").fetchone()
            con.execute("select count(*) from raw_ibkr.extracts").fetchone()
            if table_exists(con, "marts", "fct_activities"):
                con.execute("select count(*) from marts.fct_activities").fetchone()
                con.execute("select count(*) from marts.activities_to_post").fetchone()
            elif marts_required:
                problems.append("marts.fct_activities missing")
    except duckdb.Error as exc:
        problems.append(f"warehouse unreadable: {exc}")
    analytics = data_dir / "analytics.duckdb"
    if analytics.exists():
        try:
            with readonly(analytics) as con:
                con.execute("select count(*) from marts.fct_activities").fetchone()
        except duckdb.Error as exc:
            problems.append(f"analytics.duckdb is not a complete database: {exc}")
    return problems


def lock_is_free(data_dir: Path) -> bool:
    """The run lock can be taken at once (an flock dies with its process)."""
    from flexsync.core.errors import WarehouseLockedError
    from flexsync.core.warehouse import RunLock

    lock = RunLock(data_dir)
    try:
        lock.acquire()
    except WarehouseLockedError:
        return False
    lock.release()
    return True


# --------------------------------------------------------------------------- secrets


@dataclass
class SecretScanner:
    """Looks for the session's secrets in texts, warehouses, archives and other files.

    `secrets` maps a name to a value that must never be found. The Wealthfolio session
    cache may hold a session token (that is its job) but never the password, and must
    be mode 0600. Every hit is a string saying where.
    """

    secrets: dict[str, str] = field(default_factory=lambda: dict(SECRETS))
    hits: list[str] = field(default_factory=list)
    scanned: list[str] = field(default_factory=list)

    def add_secret(self, name: str, value: str) -> None:
        if value:
            self.secrets[name] = value

    def text(self, where: str, text: str, allowed: Iterable[str] = ()) -> None:
        self.scanned.append(where)
        for name, value in self.secrets.items():
            if name not in allowed and value in text:
                self.hits.append(f"{name} in {where}")

    def data(self, where: str, blob: bytes, allowed: Iterable[str] = ()) -> None:
        self.scanned.append(where)
        for name, value in self.secrets.items():
            if name not in allowed and value.encode() in blob:
                self.hits.append(f"{name} in {where}")

    def duckdb_file(self, path: Path) -> None:
        """Every VARCHAR column of every table (and view) in every schema."""
        self.scanned.append(str(path))
        with readonly(path) as con:
            columns = con.execute(
                "select table_schema, table_name, column_name from information_schema.columns"
                " where data_type = 'VARCHAR' order by 1, 2").fetchall()
            tables: dict[tuple[str, str], list[str]] = {}
            for schema, table, column in columns:
                tables.setdefault((schema, table), []).append(column)
            for (schema, table), names in tables.items():
                for name, value in self.secrets.items():
                    where = " or ".join(f'contains("{c}", ?)' for c in names)
                    try:
                        row = con.execute(f'select count(*) from "{schema}"."{table}" '
                                          f"where {where}", [value] * len(names)).fetchone()
                    except duckdb.Error as exc:  # a view over a table a later run dropped
                        if "does not exist" in str(exc) or "Binder Error" in str(exc):
                            continue
                        raise
                    if row and row[0]:
                        self.hits.append(f"{name} in {path.name}:{schema}.{table} "
                                         f"({row[0]} rows)")

    def session_cache(self, path: Path) -> None:
        if not path.exists():
            return
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != 0o600:
            self.hits.append(f"session cache {path} has mode {mode:o}, not 600")
        self.data(f"session cache {path.name}", path.read_bytes(),
                  allowed=[n for n in self.secrets if n.startswith("WF session")])

    def directory(self, root: Path, session_path: Path | None = None) -> None:
        """Every file under `root`: DuckDB files through SQL and as bytes, gzip archives
        decompressed, everything else as bytes."""
        if not root.exists():
            return
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if session_path is not None and path == session_path:
                self.session_cache(path)
                continue
            blob = path.read_bytes()
            self.data(str(path.relative_to(root)), blob)
            if path.suffix == ".gz":
                self.data(f"{path.relative_to(root)} (decompressed)", gzip.decompress(blob))
            elif path.suffix == ".duckdb" and blob[8:12] == b"DUCK":
                try:
                    self.duckdb_file(path)
                except duckdb.Error as exc:
                    if "not a valid DuckDB" not in str(exc) and "Corrupt" not in str(exc):
                        raise

    def results(self, *outputs: CliResult | FlexsyncProcess) -> None:
        for number, out in enumerate(outputs):
            self.text(f"run {number + 1} stderr", out.stderr)
            self.text(f"run {number + 1} stdout", out.stdout)

    def fake_tokens(self, fake: ReliabilityFakeWealthfolio) -> None:
        """Session tokens are secrets too, except in the session cache."""
        for number, token in enumerate(fake.issued_tokens):
            self.add_secret(f"WF session token {number + 1}", token)


# --------------------------------------------------------------------------- environment


def file_mode_env(data_dir: Path, fake: FakeWealthfolio | None, *,
                  push_url: str = "", **extra: str) -> dict[str, str]:
    """A production-like environment: both secrets are set (the token too, though file
    mode does not need it, so a leak of either would show)."""
    env = {
        "BROKER_SYNC_DATA_DIR": str(data_dir),
        "IBKR_ACCOUNT_ID_UPSTREAM": UPSTREAM,
        "IBKR_ACCOUNT_ID": ACCOUNT_UUID,
        "IBKR_FLEX_TOKEN": FLEX_TOKEN,
        "IBKR_FLEX_QUERY_ID": "123456",
        "WF_PASSWORD": WF_PASSWORD,
        "WF_SESSION_PATH": str(data_dir / "wf-session.json"),
        "PUSHGATEWAY_URL": push_url,
        "FLEXSYNC_HTTP_TIMEOUT_SECONDS": "5",
    }
    if fake is not None:
        env["WF_BASE_URL"] = fake.base_url
    env.update(dbt_isolation_env())
    env.update(extra)
    return env


_DBT_DIRS: dict[str, Path] = {}


def set_dbt_dirs(target: Path, logs: Path) -> None:
    _DBT_DIRS["target"] = target
    _DBT_DIRS["logs"] = logs


def dbt_isolation_env() -> dict[str, str]:
    """dbt's target/ and logs/ for this session only: other sessions on the machine
    cannot interleave their partial-parse files with ours, and the secret sweep reads
    exactly what our runs wrote."""
    if not _DBT_DIRS:
        return {}
    return {"DBT_TARGET_PATH": str(_DBT_DIRS["target"]), "DBT_LOG_PATH": str(_DBT_DIRS["logs"])}


def dbt_dirs() -> list[Path]:
    return list(_DBT_DIRS.values())


def demo_statement_with_more(tmp: Path) -> tuple[Path, frozenset[str]]:
    """The demo statement a day later: one more trade and one more deposit."""
    text = DEMO_STATEMENT.read_text()
    trade = ('<Trade accountId="U1234567" currency="USD" assetCategory="STK" '
             'subCategory="COMMON" symbol="AAPL" description="APPLE INC" conid="265598" '
             'listingExchange="NASDAQ" tradeID="7006" transactionID="9006" '
             'tradeDate="2026-11-20" tradeTime="15:00:00" buySell="BUY" quantity="2" '
             'tradePrice="230.10" ibCommission="-1" ibCommissionCurrency="USD" '
             'exchange="ISLAND" levelOfDetail="EXECUTION" />\n')
    cash = ('<CashTransaction accountId="U1234567" currency="GBP" assetCategory="" symbol="" '
            'description="ELECTRONIC FUND TRANSFER" conid="" transactionID="8007" '
            'type="Deposits/Withdrawals" amount="250" dateTime="2026-11-20;10:00:00" '
            'levelOfDetail="DETAIL" />\n')
    text = (text.replace("</Trades>", trade + "</Trades>", 1)
            .replace("</CashTransactions>", cash + "</CashTransactions>", 1)
            .replace('toDate="2026-11-20"', 'toDate="2026-11-21"', 1))
    path = tmp / "flex_statement_day2.xml"
    path.write_text(text)
    return path, DEMO_EXPECTED | {"ibkr:trade:7006", "ibkr:cash:8007"}


# --------------------------------------------------------------------------- conclusion


def pending_count(data_dir: Path) -> int:
    with readonly(data_dir / "warehouse.duckdb") as con:
        if not table_exists(con, "marts", "activities_to_post"):
            return -1
        row = con.execute("select count(*) from marts.activities_to_post").fetchone()
    return int(row[0]) if row else 0


def conclude(record: Callable[..., Any], scenario: str, faults: int,
             fake: ReliabilityFakeWealthfolio, data_dir: Path,
             runs: Iterable[CliResult | FlexsyncProcess],
             expected: Iterable[str] = DEMO_EXPECTED, metrics_text: str = "") -> Figures:
    """After the last run of a scenario: count, scan, record in the report, then assert
    convergence (every activity once in Wealthfolio, ledger settled, warehouse readable,
    nothing pending, no secret anywhere)."""
    wanted = frozenset(expected)
    scanner = SecretScanner()
    scanner.fake_tokens(fake)
    scanner.results(*runs)
    scanner.text("pushed metrics", metrics_text)
    scanner.directory(data_dir, session_path=data_dir / "wf-session.json")
    figures = wealthfolio_figures(fake, wanted)
    problems = figures.problems + ledger_problems(data_dir, fake, wanted, final=True)
    problems += warehouse_problems(data_dir, marts_required=True)
    pending = pending_count(data_dir)
    if pending:
        problems.append(f"{pending} activities still pending in marts.activities_to_post")
    if not lock_is_free(data_dir):
        problems.append("the run lock is still held")
    if not (data_dir / "wf-session.json").exists():
        problems.append("no Wealthfolio session cache was written (nothing to check)")
    record(scenario=scenario, faults=faults, expected=figures.expected,
           in_wealthfolio=figures.in_wealthfolio, lost=figures.lost,
           duplicated=figures.duplicated, secrets=len(scanner.hits))
    assert not scanner.hits, scanner.hits
    assert (figures.lost, figures.duplicated) == (0, 0), figures
    assert not problems, problems
    return figures


def partial_problems(fake: ReliabilityFakeWealthfolio, data_dir: Path,
                     expected: Iterable[str] = DEMO_EXPECTED) -> list[str]:
    """Between a failed (or killed) run and the next: nothing doubled, the ledger never
    claims what Wealthfolio does not have, the warehouse and the lock are fine."""
    figures = wealthfolio_figures(fake, expected)
    problems = list(figures.problems)
    if figures.duplicated:
        problems.append(f"{figures.duplicated} duplicated activities")
    problems += ledger_problems(data_dir, fake, expected, final=False)
    problems += warehouse_problems(data_dir, marts_required=False)
    if not lock_is_free(data_dir):
        problems.append("stale run lock")
    return problems

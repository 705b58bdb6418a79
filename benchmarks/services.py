"""The local services a sync talks to: the fake Wealthfolio and a real Pushgateway.

Both listen on free 127.0.0.1 ports and are stopped by their own pid.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.paths import REPO

WF_PASSWORD = "bench-password-not-a-secret"
WF_ACCOUNT = "6f1f7a2e-1d0c-4f55-9a35-0d3f2b7c9e11"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    name: str
    url: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start (code {proc.returncode})")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready at {url}")


def start_fake_wealthfolio(log: Path) -> Service:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakes.wealthfolio", "--host", "127.0.0.1",
         "--port", str(port), "--password", WF_PASSWORD, "--account-id", WF_ACCOUNT,
         "--account-currency", "GBP"],
        cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_ready(f"{url}/api/v1/healthz", proc, "fake Wealthfolio")
    return Service("fake-wealthfolio", url, proc)


def start_pushgateway(log: Path) -> Service | None:
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        return None
    port = free_port()
    proc = subprocess.Popen(
        # Debian's default persists to /var/lib/prometheus: keep each run's gateway fresh.
        [binary, f"--web.listen-address=127.0.0.1:{port}",
         f"--persistence.file={log.parent / f'pushgateway-{port}.data'}"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_ready(f"{url}/-/ready", proc, "prometheus-pushgateway")
    return Service("pushgateway", url, proc)


@contextlib.contextmanager
def services(log_dir: Path) -> Iterator[tuple[Service, Service | None]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    wf = start_fake_wealthfolio(log_dir / "fake-wealthfolio.log")
    try:
        pg = start_pushgateway(log_dir / "pushgateway.log")
        try:
            yield wf, pg
        finally:
            if pg:
                pg.stop()
    finally:
        wf.stop()


class WealthfolioSession:
    """Just enough of the Wealthfolio API to preload the fake (bulk create) and read it."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/") + "/api/v1", timeout=300)
        self.http.post("/auth/login", json={"password": WF_PASSWORD}).raise_for_status()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def bulk_create(self, payloads: Sequence[dict[str, Any]], chunk: int = 500) -> int:
        created = 0
        for start in range(0, len(payloads), chunk):
            answer = self.call("POST", "/activities/bulk",
                               {"creates": list(payloads[start:start + chunk])})
            if answer.get("errors"):
                raise RuntimeError(f"bulk preload refused: {answer['errors'][:3]}")
            created += len(answer.get("created", []))
        return created

    def search_all(self, account_id: str, page_size: int = 1000) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        page = 0
        while True:
            answer = self.call("POST", "/activities/search", {
                "page": page, "pageSize": page_size, "accountIdFilter": [account_id]})
            data = answer.get("data") or []
            rows.extend(data)
            if len(data) < page_size:
                return rows
            page += 1

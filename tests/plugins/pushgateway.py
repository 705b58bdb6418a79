"""A real Pushgateway (Debian's `prometheus-pushgateway`) on loopback, one per test.

Install: `apt-get install -y --no-install-recommends prometheus-pushgateway prometheus`.
Without the binary the tests skip locally but fail under CI=true, so CI cannot go
green by silently testing nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

PUSHGATEWAY_BINARY = "prometheus-pushgateway"
APT_HINT = "apt-get install -y --no-install-recommends prometheus-pushgateway prometheus"
READY_DEADLINE_SECONDS = 10.0


def require_binary(name: str) -> str:
    """Path of a tool the tests need: skip when missing locally, fail when CI=true."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} not found on PATH (install with: {APT_HINT})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningPushgateway:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as resp:
            return str(resp.read().decode("utf-8"))

    def metrics(self) -> dict[str, list[Sample]]:
        """Samples per metric family name, as the gateway exposes them now."""
        return {
            family.name: list(family.samples)
            for family in text_string_to_metric_families(self.metrics_text())
        }

    def samples(self, name: str) -> list[Sample]:
        """Samples whose own name is `name` (so a gauge's series, not its family's others)."""
        return [s for samples in self.metrics().values() for s in samples if s.name == name]


def _wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[RunningPushgateway]:
    binary = require_binary(PUSHGATEWAY_BINARY)
    log_path = tmp_path / "pushgateway.log"
    # The free port can be taken between probe and bind: try a few ports.
    for _ in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [
                    binary,
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--persistence.file={tmp_path / 'pushgateway.persist'}",
                    "--log.level=warn",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if _wait_ready(url, process, log_path):
            break
        _stop(process)
    else:
        tail = log_path.read_text(errors="replace")[-2000:]
        pytest.fail(f"{PUSHGATEWAY_BINARY} did not become ready; its log:\n{tail}")
    try:
        yield RunningPushgateway(url=url, process=process, log_path=log_path)
    finally:
        _stop(process)

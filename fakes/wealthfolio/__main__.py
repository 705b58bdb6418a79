"""Run the fake Wealthfolio as a process (make demo, the benchmarks):

    python -m fakes.wealthfolio --host 127.0.0.1 --port 8088 \
        --password P --account-id UUID [--account-currency GBP]

It prints one "fake-wealthfolio ready on URL account=ID" line and serves until SIGINT or
SIGTERM (exit 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import uuid

from fakes.wealthfolio.fake import FakeWealthfolio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the fake Wealthfolio server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--password", default=None, help="omit to run without auth")
    parser.add_argument("--account-id", default=str(uuid.uuid4()))
    parser.add_argument("--account-name", default="IBKR")
    parser.add_argument("--account-currency", default="GBP")
    parser.add_argument("--login-shape", default="v3.1", choices=("v3.1", "v3.0.4", "v3.0"))
    args = parser.parse_args(argv)
    fake = FakeWealthfolio(args.password, host=args.host, port=args.port,
                           login_shape=args.login_shape)
    fake.create_account(args.account_name, args.account_currency, account_id=args.account_id,
                        tracking_mode="TRANSACTIONS")
    fake.start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"fake-wealthfolio ready on {fake.base_url} account={args.account_id}", flush=True)
    try:
        done.wait()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m tests.reliability.launcher ARGS`: the flexsync CLI with a stall point.

RELIABILITY_STALL_AT=publish makes the analytics copy write half of the file, flush it
to disk, say so on stderr and stall, so a test can SIGKILL the process in the middle of
the copy every time instead of hoping to hit a window of a few milliseconds. Nothing
else changes: the rest is the real `flexsync` entry point.
"""

from __future__ import annotations

import os
import sys
import time
import types

STALL_MARKER = "RELIABILITY-STALL"
STALL_SECONDS = 120.0  # the test kills us long before; this only bounds a broken test


def _stall_publish() -> None:
    import shutil

    import flexsync.loaders.analytics_copy as analytics

    def half_then_stall(source: str | os.PathLike[str], target: str | os.PathLike[str],
                        **_: object) -> None:
        with open(source, "rb") as src, open(target, "wb") as dst:
            size = os.fstat(src.fileno()).st_size
            dst.write(src.read(max(1, size // 2)))
            dst.flush()
            os.fsync(dst.fileno())
        print(f"{STALL_MARKER} publish: {size // 2} of {size} bytes written", file=sys.stderr,
              flush=True)
        time.sleep(STALL_SECONDS)

    # Only the analytics module sees the stalling copy; landing's archive copy is untouched.
    analytics.shutil = types.SimpleNamespace(  # type: ignore[assignment]
        copyfile=half_then_stall, **{k: getattr(shutil, k) for k in ("copy", "move")})


def main() -> None:
    if os.environ.get("RELIABILITY_STALL_AT") == "publish":
        _stall_publish()
    from flexsync.cli import app

    app(prog_name="flexsync")


if __name__ == "__main__":
    main()

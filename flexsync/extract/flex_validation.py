"""ibflex as a non-blocking validator: its verdict is recorded, it never decides what lands."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from flexsync.extract.flex_source import FlexSource

# ibflex builds the whole document in memory (≈7.5 MiB of RSS per MiB of XML, on top
# of the landing's own ≈140 MiB); above this size we record "skipped" rather than
# break the pod's 256 MiB memory limit. Measured peaks of `flexsync extract`:
# 8.2 MiB file 205 MiB, 15.9 MiB file 267 MiB. A daily 90-day file is ≈1.2 MiB.
MAX_VALIDATE_BYTES = 10 * 1024 * 1024
# ibflex's memory grows with elements, not bytes: 1M empty rows (9 MB) took 3.5 GB. A
# daily file holds a few hundred elements; a 10 MiB real one ~15,000.
MAX_VALIDATE_ELEMENTS = 20_000


@dataclass
class Verdict:
    ok: bool | None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok is None:
            return f"skipped ({self.error})"
        if self.ok:
            return f"ok, {len(self.warnings)} warning(s)" if self.warnings else "ok"
        return f"error: {self.error}"


def validate_with_ibflex(source: FlexSource, elements: int = 0) -> Verdict:
    size = source.size()
    if size > MAX_VALIDATE_BYTES:
        return Verdict(None, f"file of {size / 1e6:.0f} MB is above the validator's "
                             f"{MAX_VALIDATE_BYTES // (1024 * 1024)} MiB bound")
    if elements > MAX_VALIDATE_ELEMENTS:
        return Verdict(None, f"{elements:,} elements are above the validator's "
                             f"{MAX_VALIDATE_ELEMENTS:,} bound")
    with source.open() as handle:
        content = handle.read()
    from ibflex import parser  # imported lazily: only needed here

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser.parse(content)
        except Exception as exc:  # ibflex raises many kinds; any of them is a verdict
            return Verdict(False, f"{type(exc).__name__}: {exc}"[:2000],
                           [str(w.message) for w in caught][:500])
    return Verdict(True, None, [str(w.message) for w in caught][:500])

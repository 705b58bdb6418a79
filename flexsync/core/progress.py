"""Progress on long work: a rich bar on a terminal, a plain line every few seconds otherwise
(CronJob logs, Loki), so a long backfill or a big post never looks hung."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

log = logging.getLogger("flexsync")


class StepProgress:
    """`with StepProgress("posting", total) as p: ... p.advance()`."""

    def __init__(self, label: str, total: int, every_seconds: float = 5.0,
                 interactive: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.every = every_seconds
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._next = time.monotonic() + every_seconds
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> StepProgress:
        if self.interactive and self.total > 1:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self.done)
        elif time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every
            log.info("%s: %d of %d", self.label, self.done, self.total)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

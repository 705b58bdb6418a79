"""The raw archive: each landed file gzipped under `<archive>/<sha[:2]>/<sha>.xml.gz`,
written on a thread while the file is parsed and kept only when the landing commits."""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import threading
from pathlib import Path

from flexsync.extract.flex_source import FlexSource


class ArchiveJob:
    """Gzips a source into the archive on a thread while it is being parsed (zlib
    works without the GIL). The file only takes its place on `keep()`, after every
    guard passed; `discard()` leaves no archive entry.
    """

    def __init__(self, source: FlexSource, archive_dir: Path, sha: str) -> None:
        self.target = archive_dir / sha[:2] / f"{sha}.xml.gz"
        self.error: BaseException | None = None
        self.tmp: Path | None = None
        self.thread: threading.Thread | None = None
        self.cancelled = threading.Event()
        if self.target.exists():
            return
        self.made_dirs = [d for d in (archive_dir, self.target.parent) if not d.exists()]
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.target.parent, prefix=".tmp-", suffix=".gz")
        self.tmp = Path(tmp)
        self.thread = threading.Thread(target=self._compress, args=(source, fd),
                                       name="flex-archive", daemon=True)
        self.thread.start()

    def _compress(self, source: FlexSource, fd: int) -> None:
        try:
            # Level 3: ratio ~12 on Flex XML (level 6: 16) at 40 % of level 6's CPU, which
            # the landing needs on a two-core pod.
            with os.fdopen(fd, "wb") as raw, gzip.GzipFile(
                    fileobj=raw, mode="wb", mtime=0, compresslevel=3) as gz, \
                    source.open() as src:
                while not self.cancelled.is_set() and (chunk := src.read(1 << 20)):
                    gz.write(chunk)
        except BaseException as exc:  # handed to keep()
            self.error = exc

    def keep(self) -> Path:
        if self.thread is not None:
            self.thread.join()
            if self.error is not None:
                self.discard()
                raise self.error
            assert self.tmp is not None
            os.replace(self.tmp, self.target)
            self.tmp = None
        return self.target

    def discard(self) -> None:
        self.cancelled.set()
        if self.thread is not None:
            self.thread.join()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
            for directory in reversed(self.made_dirs):
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only when empty

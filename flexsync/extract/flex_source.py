"""A Flex statement to land: its bytes (a file or a download), their hash, and a first
look that refuses what is obviously not a statement before anything is written."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from flexsync.core.errors import InputFileError


@dataclass
class FlexSource:
    """Bytes to land: a file on disk, or a download held in memory."""

    name: str
    path: Path | None = None
    content: bytes | None = None
    query_id: str | None = None
    reference_code: str | None = None
    fetched_at: datetime | None = None

    def open(self) -> IO[bytes]:
        if self.path is not None:
            return open(self.path, "rb")
        return io.BytesIO(self.content or b"")

    def size(self) -> int:
        if self.path is not None:
            return self.path.stat().st_size
        return len(self.content or b"")


def sha256_of(source: FlexSource) -> str:
    digest = hashlib.sha256()
    with source.open() as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sniff(source: FlexSource) -> None:
    """Refuse obviously wrong bodies with a message that says what they are."""
    with source.open() as handle:
        head = handle.read(2048)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        raise InputFileError(f"{source.name}: the file is empty; nothing landed")
    lower = text[:200].lower()
    if lower.startswith(b"<!doctype html") or lower.startswith(b"<html"):
        raise InputFileError(
            f"{source.name}: this is an HTML page, not a Flex statement "
            "(IBKR maintenance or an error page); nothing landed"
        )
    if not text.startswith(b"<"):
        raise InputFileError(
            f"{source.name}: not XML (CSV?) — set the Flex query's format to XML; nothing landed"
        )


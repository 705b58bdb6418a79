"""Reading an HTTP answer without trusting its size: both clients' one rule."""

from __future__ import annotations

from collections.abc import Callable

import httpx


def send_capped(http: httpx.Client, request: httpx.Request, max_bytes: int,
                too_large: Callable[[], Exception]) -> httpx.Response:
    """Send `request`, reading the (decompressed) body in chunks; past `max_bytes` raise
    `too_large()` instead of holding a runaway or hostile body in memory."""
    response = http.send(request, stream=True)
    try:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes(1 << 16):
            size += len(chunk)
            if size > max_bytes:
                raise too_large()
            chunks.append(chunk)
        # The body, as read() would have stored it (so .content and .text work).
        response._content = b"".join(chunks)
    finally:
        response.close()
    return response

"""Where the Flex token may travel, and how a URL appears in a message.

The token goes in the query string, so a URL is never printed whole (`redacted_url` drops the
query), and the token only goes to IBKR's own https hosts or to the hosts configured in
IBKR_FLEX_SEND_URL / IBKR_FLEX_GET_URL: never to whatever host a response names.
"""

from __future__ import annotations

from typing import Final

import httpx

from flexsync.core.errors import ConfigurationError

# The token travels in the query string: it goes over https to IBKR's own hosts, or to the
# hosts configured in IBKR_FLEX_SEND_URL / IBKR_FLEX_GET_URL (trusted by whoever set them),
# never to whatever host a response names.
IBKR_DOMAIN: Final = "interactivebrokers.com"
# IBKR documents two Flex hosts; when one does not resolve (it happens), the other serves.
ALTERNATE_HOSTS: Final = {
    "ndcdyn.interactivebrokers.com": "gdcdyn.interactivebrokers.com",
    "gdcdyn.interactivebrokers.com": "ndcdyn.interactivebrokers.com",
}


def check_url(url: str, setting: str) -> str:
    url = url.strip()
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(f"{setting}: not an http(s) URL")
    return url


def origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host.lower(), parsed.port


def with_alternate(url: str) -> list[str]:
    """The URL, then the same URL on the other documented IBKR Flex host, if it has one."""
    parsed = httpx.URL(url)
    other = ALTERNATE_HOSTS.get(parsed.host.lower())
    return [url] if other is None else [url, str(parsed.copy_with(host=other))]


def redacted_url(url: str) -> str:
    """host[:port]/path of a URL: never its query string (the token lives there)."""
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL:
        return "(invalid URL)"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.host}{port}{parsed.path}"


def token_may_go_to(url: str, configured_origins: set[tuple[str, str, int | None]]) -> bool:
    """https on IBKR's domain, or exactly a configured origin (scheme, host, port)."""
    parsed = httpx.URL(url)
    host = parsed.host.lower()
    if parsed.scheme == "https" and (host == IBKR_DOMAIN or host.endswith("." + IBKR_DOMAIN)):
        return True
    return origin(url) in configured_origins

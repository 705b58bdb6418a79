"""Fixtures for the fake IBKR Flex Web Service (fakes/flex.py).

`fake_flex` is a running fake with the default scenario (the statement arrives at
the first poll). Point the CLI at it with the `flex_env` mapping:

    def test_sync(fake_flex, flex_env, monkeypatch):
        fake_flex.configure(statement=(FIXTURES / "flex" / "demo.xml").read_bytes())
        for name, value in flex_env.items():
            monkeypatch.setenv(name, value)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakes.flex import FakeFlexService


@pytest.fixture
def fake_flex() -> Iterator[FakeFlexService]:
    with FakeFlexService() as fake:
        yield fake


@pytest.fixture
def flex_env(fake_flex: FakeFlexService) -> dict[str, str]:
    """Environment variables that point flexsync at `fake_flex`, with short waits."""
    return {
        "IBKR_FLEX_TOKEN": fake_flex.token,
        "IBKR_FLEX_QUERY_ID": fake_flex.query_id,
        "IBKR_FLEX_SEND_URL": fake_flex.send_url,
        "IBKR_FLEX_GET_URL": fake_flex.get_url,
        "IBKR_FLEX_DEADLINE_SECONDS": "30",
        "IBKR_FLEX_THROTTLE_SECONDS": "1",
    }

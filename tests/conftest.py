"""Shared pytest configuration. Fixtures live in tests/plugins/, one module per area."""

from __future__ import annotations

import os

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")

pytest_plugins = [
    "tests.plugins.common",
    "tests.plugins.flex_fake",
    "tests.plugins.wealthfolio_fake",
    "tests.plugins.pushgateway",
]

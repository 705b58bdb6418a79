"""Settings from the environment (README.md#configuration), overridable by CLI flags.

Secrets (the Flex token, the Wealthfolio password) are wrapped in `Secret`, whose
str/repr never shows the value, so a settings object can be logged safely.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flexsync.core.errors import ConfigurationError
from flexsync.core.logs import without_userinfo

DEFAULT_SEND_URL = (
    "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService/SendRequest"
)
DEFAULT_GET_URL = (
    "https://gdcdyn.interactivebrokers.com/AccountManagement/FlexWebService/GetStatement"
)


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    flex_token: Secret = field(default_factory=lambda: Secret(""))
    flex_query_id: str = ""
    flex_send_url: str = DEFAULT_SEND_URL
    flex_get_url: str = DEFAULT_GET_URL
    flex_deadline_seconds: float = 600.0
    flex_min_throttle_seconds: float = 60.0
    wf_account_id: str = ""
    upstream_account_ids: tuple[str, ...] = ()
    # IBKR_ACCOUNT_MAP: (IBKR account, Wealthfolio account) pairs; empty = one account.
    account_map: tuple[tuple[str, str], ...] = ()
    wf_base_url: str = ""
    wf_password: Secret = field(default_factory=lambda: Secret(""))
    wf_session_path: Path | None = None
    pushgateway_url: str = ""
    pushgateway_job: str = "broker-sync-ibkr"
    account_label: str = "ibkr-uk"
    http_timeout_seconds: float = 30.0
    log_format: str = "text"
    # The zone of IBKR's times when the Flex query writes none (read by the dbt models
    # from IBKR_TIMEZONE; checked here so a typo is a configuration error, exit 2).
    ibkr_timezone: str = "Europe/London"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def analytics_path(self) -> Path:
        return self.data_dir / "analytics.duckdb"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"

    @property
    def session_path(self) -> Path:
        return self.wf_session_path or (self.data_dir / ".wealthfolio-session")

    @property
    def wealthfolio_configured(self) -> bool:
        return bool(self.wf_base_url)

    @property
    def account_map_text(self) -> str:
        """IBKR_ACCOUNT_MAP as dbt reads it ('' in the one-account form)."""
        return ",".join(f"{ibkr}={wf}" for ibkr, wf in self.account_map)

    @property
    def wf_targets(self) -> dict[str, str | None]:
        """{Wealthfolio account: the IBKR account it receives (None: all of them)}."""
        if self.account_map:
            return {wf: ibkr for ibkr, wf in self.account_map}
        if not self.wf_account_id:
            return {}
        upstream = self.upstream_account_ids
        return {self.wf_account_id: upstream[0] if len(upstream) == 1 else None}

    def account_label_for(self, wf_account_id: str) -> str:
        """The Pushgateway `account` label of a Wealthfolio account's series: the
        configured label with one account, the IBKR account id with IBKR_ACCOUNT_MAP."""
        if self.account_map:
            return self.wf_targets.get(wf_account_id) or self.account_label
        return self.account_label

    def secrets(self) -> list[str]:
        """Secret values, for scrubbing log output."""
        return [s.get() for s in (self.flex_token, self.wf_password) if s]

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply CLI flags: None means "flag not given, keep the environment's value"."""
        known = {f.name for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise KeyError(key)
            if value is None:
                continue
            if key in ("flex_token", "wf_password") and isinstance(value, str):
                value = Secret(value)
            if key == "upstream_account_ids" and isinstance(value, str):
                value = parse_account_list(value)
            if key == "account_map" and isinstance(value, str):
                value = parse_account_map(value)
            if key in ("data_dir", "wf_session_path") and isinstance(value, str):
                value = Path(value)
            clean[key] = value
        return replace(self, **clean)

    def describe(self) -> dict[str, str]:
        """Non-secret view of the configuration, for `flexsync status`."""
        return {
            "data dir": str(self.data_dir),
            "IBKR account(s) (guard)": ", ".join(self.upstream_account_ids) or "(not set)",
            "Wealthfolio account": (
                ", ".join(f"{ibkr} → {wf}" for ibkr, wf in self.account_map)
                or self.wf_account_id or "(not set)"),
            "Wealthfolio URL": without_userinfo(self.wf_base_url) or "(not set: file mode)",
            "Flex query id": self.flex_query_id or "(not set)",
            "Flex token": "set" if self.flex_token else "(not set)",
            "Wealthfolio password": "set" if self.wf_password else "(not set)",
            "Pushgateway": without_userinfo(self.pushgateway_url) or "(not set)",
            "Pushgateway job / account label": f"{self.pushgateway_job} / {self.account_label}",
        }


_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def parse_account_list(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    for item in items:
        if not _ACCOUNT_RE.match(item):
            raise ConfigurationError(
                f"IBKR_ACCOUNT_ID_UPSTREAM: {item!r} is not an IBKR account id (e.g. U1234567)"
            )
    return items


_WF_ID_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def parse_account_map(value: str) -> tuple[tuple[str, str], ...]:
    """`U1111111=<uuid>,U2222222=<uuid>` → pairs, each IBKR account once."""
    pairs: list[tuple[str, str]] = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        ibkr, sep, wf = (part.strip() for part in item.partition("="))
        if not sep or not _ACCOUNT_RE.match(ibkr) or not _WF_ID_RE.match(wf):
            raise ConfigurationError(
                f"IBKR_ACCOUNT_MAP: {item!r} is not IBKR_ACCOUNT=WEALTHFOLIO_ACCOUNT_ID "
                "(e.g. U1111111=6f1f7a2e-1d0c-4f55-9a35-0d3f2b7c9e11)")
        if any(ibkr == seen for seen, _ in pairs):
            raise ConfigurationError(f"IBKR_ACCOUNT_MAP: {ibkr} is mapped twice")
        pairs.append((ibkr, wf))
    return tuple(pairs)


def check_account_map(settings: Settings) -> Settings:
    """With IBKR_ACCOUNT_MAP the guard accepts exactly the mapped IBKR accounts."""
    if not settings.account_map:
        return settings
    if settings.wf_account_id:
        raise ConfigurationError(
            "IBKR_ACCOUNT_ID and IBKR_ACCOUNT_MAP are both set: use IBKR_ACCOUNT_ID for one "
            "account, IBKR_ACCOUNT_MAP for several")
    mapped = tuple(ibkr for ibkr, _ in settings.account_map)
    if settings.upstream_account_ids and set(settings.upstream_account_ids) != set(mapped):
        raise ConfigurationError(
            f"IBKR_ACCOUNT_ID_UPSTREAM ({', '.join(settings.upstream_account_ids)}) must "
            f"list exactly the accounts of IBKR_ACCOUNT_MAP ({', '.join(mapped)}), or be "
            "left unset")
    return replace(settings, upstream_account_ids=mapped)


def _float_env(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: {raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigurationError(f"{name}: must be positive, got {raw!r}")
    return value


def _timezone_env(env: dict[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"{name}: {raw!r} is not an IANA time zone (e.g. Europe/London, "
            "America/New_York)") from None
    return raw


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)

    def get(name: str) -> str:
        return env.get(name, "").strip()

    session = get("WF_SESSION_PATH")
    return check_account_map(Settings(
        data_dir=Path(get("BROKER_SYNC_DATA_DIR") or "./data"),
        flex_token=Secret(get("IBKR_FLEX_TOKEN")),
        flex_query_id=get("IBKR_FLEX_QUERY_ID"),
        flex_send_url=get("IBKR_FLEX_SEND_URL") or DEFAULT_SEND_URL,
        flex_get_url=get("IBKR_FLEX_GET_URL") or DEFAULT_GET_URL,
        flex_deadline_seconds=_float_env(env, "IBKR_FLEX_DEADLINE_SECONDS", 600.0),
        flex_min_throttle_seconds=_float_env(env, "IBKR_FLEX_THROTTLE_SECONDS", 60.0),
        wf_account_id=get("IBKR_ACCOUNT_ID"),
        upstream_account_ids=parse_account_list(get("IBKR_ACCOUNT_ID_UPSTREAM")),
        wf_base_url=get("WF_BASE_URL").rstrip("/"),
        wf_password=Secret(env.get("WF_PASSWORD", "")),
        wf_session_path=Path(session) if session else None,
        pushgateway_url=get("PUSHGATEWAY_URL").rstrip("/"),
        pushgateway_job=get("PUSHGATEWAY_JOB") or "broker-sync-ibkr",
        account_label=get("PUSHGATEWAY_ACCOUNT_LABEL") or "ibkr-uk",
        http_timeout_seconds=_float_env(env, "FLEXSYNC_HTTP_TIMEOUT_SECONDS", 30.0),
        log_format=get("FLEXSYNC_LOG_FORMAT") or "text",
        account_map=parse_account_map(get("IBKR_ACCOUNT_MAP")),
        ibkr_timezone=_timezone_env(env, "IBKR_TIMEZONE", "Europe/London"),
    ))


def require(settings: Settings, *names: str) -> None:
    """Raise ConfigurationError naming the first missing setting (by its env name)."""
    env_names = {
        "flex_token": "IBKR_FLEX_TOKEN",
        "flex_query_id": "IBKR_FLEX_QUERY_ID",
        "wf_account_id": "IBKR_ACCOUNT_ID (or IBKR_ACCOUNT_MAP)",
        "upstream_account_ids": "IBKR_ACCOUNT_ID_UPSTREAM",
        "wf_base_url": "WF_BASE_URL",
        "wf_password": "WF_PASSWORD",
        "pushgateway_url": "PUSHGATEWAY_URL",
    }
    for name in names:
        if name == "wf_account_id" and settings.account_map:
            continue  # IBKR_ACCOUNT_MAP names the accounts instead
        if not getattr(settings, name):
            raise ConfigurationError(f"{env_names.get(name, name)} not provided")


# Host names that stay inside the cluster (or the machine): a Service name, service.namespace,
# or the cluster domain. A password over plain http to anything else crosses a network we
# do not own.
_CLUSTER_SUFFIXES = (".svc", ".svc.cluster.local", ".cluster.local", ".local", ".internal",
                     ".localhost")


def check_wf_base_url(url: str) -> None:
    """Refuse a WF_BASE_URL carrying user:password@: it would leak into logs, sync.runs and
    the session cache, and httpx's Basic auth would override the Bearer session."""
    if not url:
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigurationError("WF_BASE_URL: not a URL") from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ConfigurationError(
            "WF_BASE_URL must not contain user:password@ (Wealthfolio has no user name and "
            "the password goes in WF_PASSWORD): remove it from the URL"
        )


def password_goes_outside_in_clear(url: str) -> bool:
    """True for plain http:// to a host that is neither loopback/private nor a cluster name."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    host = parts.hostname.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return not ("." not in host or host == "localhost" or host.endswith(_CLUSTER_SUFFIXES)
                    or host.count(".") == 1)  # service.namespace
    return not (address.is_private or address.is_loopback or address.is_link_local)

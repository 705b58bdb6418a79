"""What the IBKR Flex Web Service's answers mean: its error codes, the hint for each fatal
one, and the errors the Flex client raises (all FlexServiceError: exit 3)."""

from __future__ import annotations

from typing import Final

from flexsync.core.errors import FlexServiceError

# Codes IBKR answers while the statement is not ready (or it is briefly unable to serve it).
POLL_CODES: Final = frozenset(
    {"1001", "1004", "1005", "1006", "1007", "1008", "1009", "1019", "1021"}
)
THROTTLED: Final = "1018"
REFERENCE_INVALID: Final = "1017"
TOKEN_CODES: Final = frozenset({"1012", "1015"})

_HOW_TO_ROTATE = (
    "generate a new Flex token in IBKR Client Portal (Performance & Reports -> Flex Queries "
    "-> Flex Web Service Configuration) and update IBKR_FLEX_TOKEN: in the cluster, "
    "`vault kv patch secret/broker-sync ibkr_flex_token=...` (synced to broker-sync-secrets)"
)
# What to do about each fatal code; the IBKR message text is shown as well.
HINTS: Final[dict[str, str]] = {
    "1003": "the statement is not available: check the Flex query's period and that the "
    "account has data for it",
    "1010": "legacy Flex queries are no longer supported: create an Activity Flex Query in "
    "Client Portal and set IBKR_FLEX_QUERY_ID to its id",
    "1011": "the IBKR service account is inactive: check the account's status in Client Portal",
    "1012": "the Flex token has expired: " + _HOW_TO_ROTATE,
    "1013": "IP restriction: this host's public IP is not allowed to use the Flex token; "
    "add it to the token's allowed IPs in Flex Web Service Configuration (or lift the "
    "restriction)",
    "1014": "the Flex query is invalid: check IBKR_FLEX_QUERY_ID (the numeric id of the "
    "Activity Flex Query in Client Portal) and that the query still exists",
    "1015": "the Flex token is invalid: check that IBKR_FLEX_TOKEN holds the current token, "
    "or " + _HOW_TO_ROTATE,
    "1016": "the account is invalid: check the Flex query's account selection and that the "
    "account is open",
    "1017": "IBKR rejected the reference code again after a fresh SendRequest; try later",
    "1020": "IBKR could not validate the request: check IBKR_FLEX_TOKEN and "
    "IBKR_FLEX_QUERY_ID",
}


class FlexClientError(FlexServiceError):
    """Base of the Flex client's errors; `.code` is the IBKR error code when one is known."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class FlexResponseError(FlexClientError):
    """IBKR answered with an error code (`<ErrorCode>` in a FlexStatementResponse)."""

    def __init__(self, code: str, message: str, *, step: str = "", hint: str = "") -> None:
        self.ibkr_message = message
        self.step = step
        text = f"IBKR Flex error {code}"
        if step:
            text += f" at {step}"
        text += f": {message}" if message else ""
        if hint:
            text += f" ({hint})"
        super().__init__(text, code)


class FlexTokenError(FlexResponseError):
    """1012 token expired / 1015 token invalid: a human has to rotate the token."""


class FlexThrottledError(FlexResponseError):
    """1018: too many requests for this token."""


class StatementGenerationTimeout(FlexClientError):
    """IBKR kept saying "not ready" until the deadline."""


class FlexHTTPError(FlexClientError):
    """An HTTP status we do not retry, or retries of 5xx/429 exhausted."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class FlexConnectionError(FlexClientError):
    """Timeouts or connection/DNS failures, retries exhausted."""


class FlexUnexpectedBodyError(FlexClientError):
    """A 200 answer that is neither a statement nor an envelope (CSV, HTML, other XML)."""


class FlexResponseTooLargeError(FlexClientError):
    """An answer past the size cap (a runaway body or a decompression bomb)."""


def fatal_error(code: str, message: str, step: str) -> FlexResponseError:
    """The error for a code that no retry will cure, with what to do about it."""
    hint = HINTS.get(code, "")
    if code in TOKEN_CODES:
        return FlexTokenError(code, message, step=step, hint=hint)
    return FlexResponseError(code, message, step=step, hint=hint)

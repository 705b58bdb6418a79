"""Error classes and the exit code each one maps to (README.md#exit-codes).

Every error the program expects carries its exit code, so the CLI turns any of
them into one clear line on stderr and the right code, never a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    CONFIGURATION = 2
    ACCOUNT_GUARD = 3
    IBKR_FLEX = 4
    WEALTHFOLIO = 5
    DBT = 6
    PUSHGATEWAY = 7
    LOCKED = 8


class FlexsyncError(Exception):
    """Base for every error the CLI reports as one line with an exit code."""

    exit_code: ExitCode = ExitCode.UNEXPECTED


class ConfigurationError(FlexsyncError):
    exit_code = ExitCode.CONFIGURATION


class InputFileError(FlexsyncError):
    """A Flex file that cannot be landed: not XML, hostile XML, wrong root, truncated."""

    exit_code = ExitCode.CONFIGURATION


class IBKRAccountMismatchError(FlexsyncError):
    exit_code = ExitCode.ACCOUNT_GUARD

    def __init__(self, found: str, expected: list[str]) -> None:
        self.found = found
        self.expected = expected
        super().__init__(
            f"IBKRAccountMismatchError: the Flex statement is for IBKR account {found!r} "
            f"but IBKR_ACCOUNT_ID_UPSTREAM is {', '.join(expected)!r}; nothing was written"
        )


class FlexServiceError(FlexsyncError):
    """The IBKR Flex Web Service refused, failed or timed out."""

    exit_code = ExitCode.IBKR_FLEX


class WealthfolioError(FlexsyncError):
    exit_code = ExitCode.WEALTHFOLIO


class DbtError(FlexsyncError):
    exit_code = ExitCode.DBT


class PushgatewayError(FlexsyncError):
    exit_code = ExitCode.PUSHGATEWAY


class WarehouseLockedError(FlexsyncError):
    exit_code = ExitCode.LOCKED


class TerminatedError(FlexsyncError):
    """SIGTERM: the Job's activeDeadlineSeconds, an eviction, a node drain. Raised in the
    main thread so the run is recorded and its failure pushed before the kill's grace
    period ends."""

    exit_code = ExitCode.UNEXPECTED


class WarehouseError(FlexsyncError):
    """The warehouse file cannot be opened (corrupt, read-only directory, ...)."""

    exit_code = ExitCode.UNEXPECTED

"""The one family of user-facing errors.

The CLI turns any :class:`HpsearchError` into a clean message and a non-zero
exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class HpsearchError(Exception):
    """A problem the user can fix: bad input, missing data, bad configuration."""


class ConfigError(HpsearchError):
    """A trial config, study file or ``--set`` override is invalid."""


class DataError(HpsearchError):
    """A dataset is missing, empty, corrupt or of an unexpected shape."""


class TrialFailed(HpsearchError):
    """A trial could not finish (NaN loss, out of memory, exception)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def failure_reason(error: BaseException) -> str:
    """A short reason for a failed trial: nan_loss, out_of_memory, interrupted, exception:<Type>."""
    if isinstance(error, TrialFailed):
        return error.reason
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    text = f"{type(error).__name__} {error}".lower()
    if "resourceexhausted" in text or "out of memory" in text or isinstance(error, MemoryError):
        return "out_of_memory"
    if isinstance(error, ConfigError):
        return "invalid_config"
    if any(sign in text for sign in _CONNECTION_SIGNS):
        return "tracking_unreachable"
    return f"exception:{type(error).__name__}"


_CONNECTION_SIGNS = (
    "max retries exceeded",
    "connection refused",
    "failed to establish a new connection",
    "connectionerror",
    "remotedisconnected",
)

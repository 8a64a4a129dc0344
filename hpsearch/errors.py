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


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, cut to about ``limit`` characters.

    ``'aaaa…' (100000 characters)``, ``[0, 1, 2…] (5000 items)``: a huge value read from a
    file is named, not echoed whole (nor built whole: containers are shown through reprlib).
    """
    import reprlib

    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        shown = repr(value[:limit])
        return f"{shown[:-1][:limit]}…{shown[-1]} ({len(value)} characters)"
    brief = reprlib.Repr()
    brief.maxstring = brief.maxother = brief.maxlong = limit
    brief.maxlist = brief.maxtuple = brief.maxset = brief.maxdict = limit // 4
    try:
        shown = brief.repr(value)
        size = len(value)  # type: ignore[arg-type]
        count = f"{size} item{'' if size == 1 else 's'}"
    except TypeError:
        count = f"{len(repr(value))} characters"
    except ValueError:  # an int too long for str() (Python's 4300-digit limit)
        return f"<{type(value).__name__} of more than {limit} digits>"
    if len(shown) <= limit and "..." not in shown:
        return shown
    return f"{shown[:limit]}… ({count})"

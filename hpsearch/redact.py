"""Passwords never reach logs, params, tags, artifacts or the console."""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(://[^/\s:@]+:)[^@\s]+@")


def hide_password(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``, in a URL or in any text."""
    return _CREDENTIALS.sub(r"\1***@", text)


class _RedactingFilter:
    """A logging filter that masks passwords in every record it sees."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        masked = hide_password(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def redact_logs(*logger_names: str) -> None:
    """Mask passwords in what the handlers of these loggers (and the root logger) write."""
    import logging

    for name in ("", *logger_names):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _RedactingFilter) for f in handler.filters):
                handler.addFilter(_RedactingFilter())

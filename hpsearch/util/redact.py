"""Passwords never reach logs, params, tags, artifacts or the console.

Not SQLAlchemy's ``make_url(u).render_as_string(hide_password=True)``: it reads one whole URL (it
raises on the log lines and error messages masked here), and on tests/test_redact.py's 29 forms
it gives 11 right, leaking ``?password=`` and the tail of an unencoded ``@`` in a password.
"""

from __future__ import annotations

import re

#: ``scheme://`` and the authority after it (up to the path, query, fragment or whitespace);
#: a scheme starts where no scheme character precedes it (linear time on long words)
_AUTHORITY = re.compile(
    r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://(?=(?P<authority>[^/?#\s]*))"
)
#: the rest of a URL: up to whitespace or the next ``scheme://``
_REST_OF_URL = re.compile(r"(?:(?!://)\S)*")
#: query (or fragment, or ``;``-separated) parameters whose value is a secret: these names,
#: and names ending in ``_password``, ``-token``, ``.secret``, ``x-api-key``...; a value
#: runs to the next ``&``, ``#`` or whitespace (after a ``;``, to the next ``;`` too)
_SECRET_NAMES = r"password|passwd|secret|token|access_token|api[_\-]?key|credentials"
_SECRET_PARAMETER = re.compile(
    rf"(?P<name>(?:[?&#]|(?P<semicolon>;))"
    rf"(?:(?:[\w.\-]*[_.\-])?(?:{_SECRET_NAMES})|pwd|pass|key|sslpassword|auth)=)"
    r"(?P<value>(?(semicolon)[^&#;\s]+|[^&#\s]+))",
    re.IGNORECASE,
)
MASK = "***"


def hide_password(text: str) -> str:
    """Every credential a URL carries -> ``***``, in a URL or anywhere in a text.

    ``scheme://user:secret@host`` -> ``scheme://user:***@host`` (up to the last ``@`` before
    the path, so an unencoded ``@`` in the password is masked too; an empty user, as in
    ``redis://:secret@host``, too), and secret query parameters (``?password=``, ``&token=``,
    ``api_key``, ``sslpassword``...) -> ``name=***``. User, host, port, database and the other
    query parameters stay readable.
    """
    return _SECRET_PARAMETER.sub(rf"\g<name>{MASK}", _hide_userinfo_passwords(text))


def _hide_userinfo_passwords(text: str) -> str:
    pieces, done = [], 0
    for match in _AUTHORITY.finditer(text):
        start, end = _password_span(text, match)
        if start < done or start == end:
            continue
        pieces += [text[done:start], MASK]
        done = end
    return "".join(pieces) + text[done:]


def _password_span(text: str, match: re.Match[str]) -> tuple[int, int]:
    """Where the password of the URL at ``match`` is in ``text``; an empty span if none."""
    authority, begin = match["authority"], match.start("authority")
    colon = authority.find(":")
    if colon < 0 or authority.startswith("["):  # no colon, or an IPv6 host: [::1]:8080
        return begin, begin
    at = authority.rfind("@")
    if at > colon:  # user:password@host, the password up to the last @
        return begin + colon + 1, begin + at
    if at >= 0:  # user@host:port, no password
        return begin, begin
    # No @ before the path: host:port, or a password holding an unencoded / ? or #
    # (postgresql://u:pa/ss@host/db), which SQLAlchemy still reads as one: after a colon that
    # starts no port, mask up to the last @ before whitespace (or the next URL).
    after = authority[colon + 1 :]
    if not after or after.isdigit():
        return begin, begin
    start = begin + colon + 1
    rest = _REST_OF_URL.match(text, start)  # never None: the pattern matches ""
    at = text.rfind("@", start, rest.end() if rest else len(text))
    if at < 0:
        return begin, begin
    return start, at


class _RedactingFilter:
    """A logging filter that masks passwords in every record it sees: its message, and the
    traceback a handler writes after it (an exception's text often holds a URL)."""

    def filter(self, record) -> bool:
        import logging

        message = record.getMessage()
        masked = hide_password(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:  # formatted here as a handler would
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = hide_password(record.exc_text)
        return True


def redact_logs(*logger_names: str) -> None:
    """Mask passwords in what the handlers of these loggers (and the root logger) write."""
    import logging

    for name in ("", *logger_names):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _RedactingFilter) for f in handler.filters):
                handler.addFilter(_RedactingFilter())

"""Checks of storage and tracking URLs before anything is written.

A malformed URL or an unreachable server is a user error: a clear message
(passwords masked) and a non-zero exit, with nothing created anywhere.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from hpsearch.errors import HpsearchError
from hpsearch.util.redact import hide_password

TRACKING_SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks")


def default_storage(tracking_uri: str) -> str:
    """A SQLite file beside a local MLflow store (else in the working directory)."""
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite" and tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).parent
        return f"sqlite:///{folder / 'optuna.db'}"
    if parts.scheme in ("", "file"):
        return f"sqlite:///{Path(parts.path).parent / 'optuna.db'}"
    return "sqlite:///optuna.db"


def check_storage(url: str) -> None:
    """Fail early on a malformed Optuna storage URL or an unreachable database."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    shown = hide_password(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise HpsearchError(
            f"malformed storage URL {shown!r}: expected e.g. sqlite:///optuna.db or "
            "postgresql://user:password@host:5432/database"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        _check_folder(parsed.database, f"storage {shown}")
        return
    try:
        args = {"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {}
        engine = create_engine(parsed, connect_args=args)
        with engine.connect():
            pass
        engine.dispose()
    except NoSuchModuleError:
        raise HpsearchError(f"storage {shown}: unknown database dialect") from None
    except ImportError as error:
        raise HpsearchError(
            f"storage {shown}: database driver missing ({error}); for PostgreSQL: "
            "pip install 'psycopg[binary]'"
        ) from None
    except SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error  # only a DBAPIError has .orig
        reason = hide_password(str(cause).strip().splitlines()[0])
        raise HpsearchError(f"cannot connect to storage {shown}: {reason}") from None


def check_tracking(uri: str) -> None:
    """Fail early on a malformed tracking URI or a tracking server that does not answer."""
    shown = hide_password(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme and scheme not in TRACKING_SCHEMES and len(scheme) > 1:  # "C:" is a drive
        raise HpsearchError(
            f"malformed tracking URI {shown!r}: expected http(s)://host:port, "
            "sqlite:///path/mlflow.db or a local folder"
        )
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise HpsearchError(f"malformed tracking URI {shown!r}: no host")
        if not tracking_reachable(uri, timeout=10):
            raise HpsearchError(
                f"MLflow tracking server {shown} unreachable (its /health check failed); "
                "start one with `hpsearch server`, or leave --tracking-uri out for the local store"
            )
    elif scheme == "sqlite":
        _check_folder(uri.removeprefix("sqlite:///"), f"tracking store {shown}")


def _check_folder(database: str | None, what: str) -> None:
    if database and database != ":memory:":
        folder = Path(database).expanduser().parent
        if not folder.is_dir():
            raise HpsearchError(f"{what}: folder {folder} does not exist")


def tracking_reachable(uri: str, timeout: float = 5.0) -> bool:
    """Whether a tracking server answers its health check (always true for local stores)."""
    import urllib.request
    from urllib.parse import urlunsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return True
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    health = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(health, timeout=timeout) as reply:
            return reply.status == 200
    except OSError:
        return False

"""What every command shares: error handling, signals, tracking and storage options."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

import click

from hpsearch.errors import HpsearchError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow prints run links with the tracking URI, credentials included; hpsearch prints its own.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# Bounded retries against a tracking server that went away (MLflow's default waits minutes).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def fail(error: HpsearchError) -> NoReturn:
    """A user error: one clean message, passwords masked, exit status 2."""
    say_error(error)
    sys.exit(2)


def say_error(error: HpsearchError) -> None:
    """``Error: ...`` on stderr, passwords masked (also for an error a command goes on after)."""
    from hpsearch.util.redact import hide_password

    click.echo(f"Error: {hide_password(str(error))}", err=True)


class HpsearchGroup(click.Group):
    """The project's errors (:class:`HpsearchError`) are caught here, once for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HpsearchError as error:
            fail(error)


VERBOSE_ENV = "HPSEARCH_VERBOSE"


def load_keras_quietly() -> None:
    """Import Keras (TensorFlow under it) and start its devices with their native start-up
    lines (absl's "All log messages before absl::InitializeLog()", oneDNN, CUDA stubs, each
    printed once per library copy) held back; shown with ``hpsearch --verbose`` or when the
    import fails."""
    if "keras" in sys.modules or os.environ.get(VERBOSE_ENV):
        import keras  # noqa: F401
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                tf.config.list_physical_devices()  # where CUDA's "failed call to cuInit" is said
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def stop_on_sigterm() -> None:
    """SIGTERM behaves as Ctrl-C: the running trial and its run are closed before exit."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


class WorkerCount(click.ParamType):
    """``--workers``: a number of worker processes (1 or more), or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            self.fail(f"{value!r}: expected a whole number of at least 1, or 'auto'", param, ctx)
        return number


WORKERS_HELP = (
    "Run it in N local worker processes (several on one GPU each take their share of its "
    "memory); 'auto': as many as the GPU's memory holds for the study's network (1 without "
    "a GPU)."
)


def storage_option(function):
    return click.option(
        "--storage",
        envvar="HPSEARCH_STORAGE",
        default=None,
        help="Optuna storage URL, or $HPSEARCH_STORAGE (default: optuna.db beside a local "
        "MLflow store).",
    )(function)


def tracking_option(function):
    return click.option(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the local store).",
    )(function)


#: MLflow 3's tracking URI when none is set (tests/test_cli_help.py holds it to MLflow's own)
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_in_effect(tracking_uri: str | None) -> str:
    """The option, else the URI MLflow uses now, else ``$MLFLOW_TRACKING_URI``, else MLflow's
    default; without importing MLflow unless it is loaded already."""
    if tracking_uri:
        return tracking_uri
    if "mlflow" in sys.modules:
        import mlflow

        return mlflow.get_tracking_uri()
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def storage_url(storage: str | None, tracking_uri: str | None) -> str:
    """The Optuna storage (default: beside the MLflow store), both URLs checked first.

    Imports neither MLflow nor Keras: bad input is refused in well under a second.
    """
    from hpsearch.util.connections import check_storage, check_tracking, default_storage

    uri = tracking_in_effect(tracking_uri)
    check_tracking(uri)
    url = storage or default_storage(uri)
    if storage:
        check_storage(url)
    return url


def use_tracking(tracking_uri: str | None) -> str:
    """Point MLflow at ``tracking_uri`` after checking it; returns the URI in effect."""
    from hpsearch.util.connections import check_tracking

    uri = tracking_in_effect(tracking_uri)
    check_tracking(uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    return uri


def storage_for(storage: str | None, tracking_uri: str | None) -> str:
    """:func:`storage_url`, then MLflow pointed at the tracking URI."""
    url = storage_url(storage, tracking_uri)
    use_tracking(tracking_uri)
    return url

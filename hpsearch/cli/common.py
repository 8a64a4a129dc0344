"""What every command shares: error handling, signals, tracking and storage options."""

from __future__ import annotations

import os
import signal
import sys

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

DATASETS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "folder")


def fail(error: HpsearchError) -> None:
    """A user error: one clean message, passwords masked, exit status 2."""
    from hpsearch.redact import hide_password

    click.echo(f"Error: {hide_password(str(error))}", err=True)
    sys.exit(2)


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


def use_tracking(tracking_uri: str | None) -> str:
    """Point MLflow at ``tracking_uri`` after checking it; returns the URI in effect."""
    from hpsearch.connections import check_tracking
    from hpsearch.tracking import set_tracking_uri

    if tracking_uri:
        check_tracking(tracking_uri)
    uri = set_tracking_uri(tracking_uri)
    if not tracking_uri:
        check_tracking(uri)
    return uri


def storage_for(storage: str | None, tracking_uri: str | None) -> str:
    """Check and use the tracking URI; the Optuna storage (default: beside the MLflow store)."""
    from hpsearch.driver import default_storage

    uri = use_tracking(tracking_uri)
    return storage or default_storage(uri)

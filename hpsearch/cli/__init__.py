"""The ``hpsearch`` command line. Heavy libraries are imported inside commands."""

from __future__ import annotations

import os

import click

from hpsearch.cli.choose import best, combine, report
from hpsearch.cli.common import VERBOSE_ENV, HpsearchGroup
from hpsearch.cli.reproduce import reproduce
from hpsearch.cli.search import search, server, validate, worker
from hpsearch.cli.train import show_config, train

ENVIRONMENT = {
    "HPSEARCH_STORAGE": "Optuna storage URL (as --storage)",
    "MLFLOW_TRACKING_URI": "MLflow tracking URI (as --tracking-uri)",
    "MLFLOW_BACKEND_STORE_URI": "the server's backend store (as server --backend-store-uri)",
    "HPSEARCH_CIFAR10": "a local CIFAR-10 copy (folder or archive) used before downloading",
    "HPSEARCH_CACHE_DIR": "decoded datasets (default ~/.cache/hpsearch)",
    "HPSEARCH_SPOOL_DIR": "completed trials' artifacts until uploaded (local disk)",
    "HPSEARCH_WORKER_INDEX": "this worker's number among the study's (as --worker-index)",
    "HPSEARCH_TRACEBACKS": "1: print full tracebacks of failed trials and errors",
    "HPSEARCH_FAILPOINT": "tests only: stop the process at a named point of a trial",
    "HPSEARCH_VERBOSE": "1: as --verbose",
    "HPSEARCH_PROGRESS": "lines: plain progress lines, no bar, even on a terminal",
    "KERAS_BACKEND": "tensorflow (default) or jax",
}


def _epilog() -> str:
    width = max(map(len, ENVIRONMENT))
    lines = [f"  {name.ljust(width)}  {what}" for name, what in ENVIRONMENT.items()]
    return "\b\nEnvironment:\n" + "\n".join(lines)


@click.group(cls=HpsearchGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_epilog())
@click.version_option(package_name="hpsearch")
@click.option("-v", "--verbose", is_flag=True,
              help="Also show TensorFlow's, absl's and CUDA's start-up lines.")
def main(verbose: bool) -> None:
    """MLflow-tracked hyperparameter search for Keras image classifiers."""
    if verbose:  # in the environment: the worker processes a search starts inherit it
        os.environ[VERBOSE_ENV] = "1"


for command in (search, worker, validate, reproduce, best, combine, report, train, show_config,
                server):
    main.add_command(command)

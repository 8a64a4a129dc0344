"""The ``hpsearch`` command line. Heavy libraries are imported inside commands."""

from __future__ import annotations

import click

from hpsearch.cli.choose import best, combine, report
from hpsearch.cli.reproduce import reproduce
from hpsearch.cli.search import search, server, validate, worker
from hpsearch.cli.train import show_config, train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpsearch")
def main() -> None:
    """MLflow-tracked hyperparameter search for Keras image classifiers."""


for command in (search, worker, validate, reproduce, best, combine, report, train, show_config,
                server):
    main.add_command(command)

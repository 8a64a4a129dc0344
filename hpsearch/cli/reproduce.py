"""``hpsearch reproduce``: the whole reference study, in order, and its reproduction report."""

from __future__ import annotations

import sys

import click

from hpsearch.choose.reference import STUDY_ORDER
from hpsearch.cli.common import (
    WORKERS_HELP,
    WorkerCount,
    load_keras_quietly,
    stop_on_sigterm,
    storage_for,
    storage_option,
    tracking_option,
)


@click.command()
@click.option("--only", multiple=True, metavar="STUDY",
              help=f"Run only these reference studies (repeatable): {', '.join(STUDY_ORDER)}.")
@click.option("--data-dir", default=None,
              help="A local copy of CIFAR-10 (the official cifar-10-python.tar.gz or an image "
                   "folder/archive); default: $HPSEARCH_CIFAR10, else Keras's downloader.")
@click.option("--limit", type=click.IntRange(min=0), default=0,
              help="At most N images per split (train, validation, test), stratified; "
                   "0: every image.")
@click.option("--epochs-scale", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Multiply every epoch cap (20 -> 20 x S, at least 1) for a smaller run.")
@click.option("--repeats", type=int, default=None,
              help="Train every configuration N times with other seeds (default: each file's).")
@click.option("--quick", is_flag=True,
              help="The whole path at toy size (100 images a split, 1-2 epochs, 1 repeat): "
                   "proves the report's shape, reproduces nothing.")
@click.option("--report-only", is_flag=True,
              help="Train nothing: write the report from the trials the storage holds.")
@click.option("--workers", type=WorkerCount(), default=1, show_default=True,
              help=WORKERS_HELP.replace("Run it", "Run each study", 1))
@storage_option
@tracking_option
@click.option("--output", type=click.Path(file_okay=False), default="reports", show_default=True,
              help="Folder of reproduction.md and its figures (reproduction/).")
@click.option("-q", "--quiet", is_flag=True, help="One line per trial, no per-epoch progress.")
def reproduce(only, data_dir, limit, epochs_scale, repeats, quick, report_only, workers, storage,
              tracking_uri, output, quiet) -> None:  # fmt: skip
    """Run every reference study in the study's order, then write the reproduction report.

    Each study resumes where it stopped: run the same command again after an interruption.
    A scaled-down run (--quick, --limit, --epochs-scale, --repeats) uses study names of its
    own (dropout.quick, dropout.n4000-e0.2), so it never mixes with the full-size studies.
    The report, reports/reproduction.md, sets each test accuracy the study reported beside
    ours (mean ± sd over repeats) and each of its findings beside a verdict from our runs;
    it is also logged on an MLflow run of its own (experiment "reproduction").
    """
    from pathlib import Path

    stop_on_sigterm()
    try:
        from hpsearch.choose import reproduce as reproduction

        scale = reproduction.Scale.make(quick, limit or None, epochs_scale, repeats)
        data_dir = data_dir or None  # MLproject passes "" for "not given"
        planned = reproduction.plan(tuple(only), scale, data_dir)  # every file checked first
        url = storage_for(storage, tracking_uri)
        load_keras_quietly()
        if report_only:
            reproduction.write(planned, scale, url, Path(output), 0.0, click.echo)
            return
        reproduction.run(tuple(only), scale, url, data_dir, Path(output), workers,
                         echo=click.echo, verbose=0 if quiet else 2)  # fmt: skip
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume", err=True)
        sys.exit(130)

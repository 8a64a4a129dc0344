"""``hpsearch train`` and ``hpsearch config``: one config, trained and tracked."""

from __future__ import annotations

import os
from typing import Any

import click

from hpsearch.choices import DATASET_NAMES
from hpsearch.cli.common import (
    load_keras_quietly,
    tracking_in_effect,
    tracking_option,
    use_tracking,
)


def config_options(function):
    """``--config FILE`` and ``--set KEY=VALUE``: a trial config and its overrides."""
    function = click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE",
        help="Override one config key (repeatable; several space-separated allowed).",
    )(function)  # fmt: skip
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), default=None,
        help="YAML trial config (see `hpsearch config` for keys and defaults).",
    )(function)  # fmt: skip


@click.command()
@config_options
@click.option(
    "--dataset",
    type=click.Choice(DATASET_NAMES),
    default="digits",
    show_default=True,
    help="digits is bundled with scikit-learn (offline); folder reads "
    "train/<class>/* and test/<class>/* from --data-dir.",
)
@click.option(
    "--data-dir",
    default=None,
    help="Local copy of the dataset (directory or archive). Without it, "
    "cifar10/cifar100/mnist/fashion_mnist use Keras's downloader.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=0,
    help="At most N samples per split (stratified), for quick runs; 0: all.",
)
@click.option(
    "--validation-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of the training set held out.",
)
@tracking_option
@click.option(
    "--experiment", default="hpsearch-train", show_default=True, help="MLflow experiment name."
)
@click.option("--run-name", default=None, help="MLflow run name.")
@click.option(
    "--evaluate-test",
    type=click.BOOL,
    is_flag=False,
    flag_value=True,
    default=False,
    help="Also evaluate once on the test set (flag, or true/false).",
)
@click.option("--no-tracking", is_flag=True, help="Train without logging to MLflow.")
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch progress.")
def train(
    config_path: str | None,
    overrides: tuple[str, ...],
    dataset: str,
    data_dir: str | None,
    limit: int | None,
    validation_fraction: float,
    tracking_uri: str | None,
    experiment: str,
    run_name: str | None,
    evaluate_test: bool,
    no_tracking: bool,
    quiet: bool,
) -> None:
    """Train one config, evaluate it, and log it to MLflow."""
    _train(
        config_path,
        overrides,
        dict(
            dataset=dataset,
            data_dir=data_dir or None,
            limit=limit or None,
            validation_fraction=validation_fraction,
        ),
        tracking_uri,
        experiment,
        run_name,
        evaluate_test,
        no_tracking,
        quiet,
    )


def _train(
    config_path: str | None,
    overrides: tuple[str, ...],
    data: dict[str, Any],
    tracking_uri: str | None,
    experiment: str,
    run_name: str | None,
    evaluate_test: bool,
    no_tracking: bool,
    quiet: bool,
) -> None:
    from hpsearch.config import load_config, make_data_spec, parse_overrides

    config = load_config(config_path or None, parse_overrides(overrides))
    spec = make_data_spec(data)
    say = (lambda *_: None) if quiet else click.echo
    if not no_tracking:  # a bad tracking URI is refused before anything heavy loads
        from hpsearch.util.connections import check_tracking

        check_tracking(tracking_in_effect(tracking_uri))
    load_keras_quietly()
    say(f"loading {spec.dataset}" + (f" from {spec.data_dir}" if spec.data_dir else ""))

    from hpsearch.tracking.trial import load_splits, tracked_trial
    from hpsearch.util.progress import quiet_progress

    with quiet_progress(quiet):  # decoding an archive: no progress under -q
        splits, fingerprint = load_splits(spec)
    say(
        f"train {len(splits.x_train)}, validation {len(splits.x_val)}, test {len(splits.x_test)}"
        f" images of {splits.input_shape}, {splits.num_classes} classes"
    )
    verbose = 0 if quiet else 2
    if no_tracking:
        result = tracked_trial(
            config, spec, splits, None, evaluate_test=evaluate_test, verbose=verbose
        )
        run_id = None
    else:
        from hpsearch.tracking import TrialRun, where_to_look

        use_tracking(tracking_uri)
        # Under `mlflow run`, MLflow Projects made a run already: nest under it.
        parent = os.environ.get("MLFLOW_RUN_ID")
        tags = {"hpsearch.command": "train"}
        with TrialRun(experiment, run_name, tags, parent_run_id=parent) as run:
            result = tracked_trial(
                config, spec, splits, run, fingerprint, evaluate_test=evaluate_test, verbose=verbose
            )
        run_id, exp_id = run.run_id, run.experiment_id
    metrics = result.final_metrics()
    summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    click.echo(f"done: {summary}")
    if run_id:
        click.echo(f"MLflow run {run_id}: {where_to_look(exp_id, run_id)}")


@click.command("config")
@config_options
def show_config(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved trial config as YAML, and what each key allows."""
    from hpsearch.config import TrialConfig, allowed_values, load_config, parse_overrides

    config = load_config(config_path, parse_overrides(overrides))
    click.echo(config.to_yaml().rstrip())
    click.echo("\n# allowed values:")
    for key in TrialConfig.model_fields:
        click.echo(f"#   {key}: {allowed_values(key)}")

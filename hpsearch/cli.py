"""The ``hpsearch`` command line. Heavy libraries are imported inside commands."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from hpsearch.errors import HpsearchError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

DATASETS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "folder")


def _fail(error: HpsearchError) -> None:
    click.echo(f"Error: {error}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpsearch")
def main() -> None:
    """MLflow-tracked hyperparameter search for Keras image classifiers."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML trial config (see `hpsearch config` for keys and defaults).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one config key (repeatable; several space-separated allowed).",
)
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
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
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the local store).",
)
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
    try:
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
    except HpsearchError as error:
        _fail(error)


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
    say(f"loading {spec.dataset}" + (f" from {spec.data_dir}" if spec.data_dir else ""))

    from hpsearch.trial import load_splits, tracked_trial

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
        from hpsearch.tracking import TrialRun, set_tracking_uri, where_to_look

        set_tracking_uri(tracking_uri)
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


def _study_overrides(overrides: tuple[str, ...], data_dir: str | None, limit: int | None):
    from hpsearch.config import parse_overrides

    data = {"data_dir": data_dir} if data_dir else {}
    if limit:
        data["limit"] = limit
    return parse_overrides(overrides), data


@main.command()
@click.argument("study_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(study_files: tuple[str, ...]) -> None:
    """Check study files without running them."""
    from hpsearch.space import grid_size
    from hpsearch.study import load_study

    failed = False
    for path in study_files:
        try:
            study = load_study(path)
        except HpsearchError as error:
            click.echo(f"Error: {error}", err=True)
            failed = True
            continue
        size = f", grid of {grid_size(study)}" if study.sampler.type == "grid" else ""
        click.echo(
            f"{path}: ok (study {study.name}, {study.sampler.type} sampler{size}, "
            f"pruner {study.pruner.type}, {len(study.space)} searched factors)"
        )
    if failed:
        sys.exit(2)


@main.command()
@click.argument("study_file", type=click.Path(dir_okay=False))
@click.option(
    "--n-trials",
    type=click.IntRange(min=0),
    default=0,
    help="The study's total number of trials (default: the study file's; "
    "0: the file's). Finished trials count; a rerun resumes.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=0,
    help="Stop starting trials after S seconds (0: the study file's, if any).",
)
@click.option(
    "--storage",
    default=None,
    help="Optuna storage URL (default: optuna.db beside the local MLflow store).",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the local store).",
)
@click.option("--data-dir", default=None, help="Override the study's data directory/archive.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=0,
    help="Override the study's samples per split (0: the file's).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Fix a trial-config key for every trial (repeatable).",
)
@click.option("-q", "--quiet", is_flag=True, help="One line per trial, no per-epoch progress.")
def search(
    study_file: str,
    n_trials: int,
    timeout: float,
    storage: str | None,
    tracking_uri: str | None,
    data_dir: str | None,
    limit: int,
    overrides: tuple[str, ...],
    quiet: bool,
) -> None:
    """Run or resume the Optuna study a study file describes, tracked in MLflow."""
    try:
        from hpsearch.study import load_study

        fixed, data = _study_overrides(overrides, data_dir or None, limit or None)
        spec = load_study(study_file, fixed, data)
        from hpsearch.driver import describe, run_search

        outcome = run_search(
            spec,
            _storage_for(storage, tracking_uri),
            n_trials or None,
            timeout or None,
            echo=click.echo,
            verbose=0 if quiet else 2,
        )
    except HpsearchError as error:
        _fail(error)
    click.echo(describe(outcome))
    if outcome.interrupted:
        sys.exit(130)


def _storage_for(storage: str | None, tracking_uri: str | None) -> str:
    """Point MLflow at ``tracking_uri``; the Optuna storage (default: beside the MLflow store)."""
    from hpsearch.driver import default_storage
    from hpsearch.tracking import set_tracking_uri

    uri = set_tracking_uri(tracking_uri)
    return storage or default_storage(uri)


@main.command()
@click.option("--study", "study_name", required=True, help="Name of the Optuna study.")
@click.option(
    "--storage",
    default=None,
    help="Optuna storage URL (default: optuna.db beside the local MLflow store).",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the local store).",
)
@click.option(
    "--export",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the best trial's model (or, with --retrain, the retrained one) here.",
)
@click.option(
    "--retrain",
    is_flag=True,
    help="Retrain on training + validation data for the trial's best epoch count, "
    "then evaluate once on the test set (logged as a 'final' run).",
)
@click.option(
    "--experiment",
    default="final",
    show_default=True,
    help="MLflow experiment of the retrained run.",
)
@click.option(
    "--model-name",
    default=None,
    help="Register the retrained model under this name in the MLflow registry.",
)
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch progress.")
def best(
    study_name: str,
    storage: str | None,
    tracking_uri: str | None,
    export: str | None,
    retrain: bool,
    experiment: str,
    model_name: str | None,
    quiet: bool,
) -> None:
    """Show the best trial of a study; export or retrain its model."""
    from pathlib import Path

    try:
        from hpsearch.chooser import Combination, best_trial, finalize, load_study

        winner = best_trial(load_study(study_name, _storage_for(storage, tracking_uri)))
        click.echo(
            f"study {winner.study}: best trial {winner.number}, "
            f"value {winner.value:.4f}, MLflow run {winner.run_id}"
        )
        click.echo(winner.config.to_yaml().rstrip())
        if retrain:
            combination = Combination(winner.config, winner.data, {}, [winner])
            epochs = winner.best_epoch or winner.config.epochs
            outcome = finalize(
                combination,
                epochs,
                experiment,
                model_name,
                Path(export) if export else None,
                echo=click.echo,
                verbose=0 if quiet else 2,
            )
            _say_final(outcome)
        elif export:
            from hpsearch.tracking import download_artifact

            if not winner.run_id:
                raise HpsearchError(f"trial {winner.number} has no MLflow run to export from")
            download_artifact(winner.run_id, "model.keras", Path(export))
            click.echo(f"exported trial {winner.number}'s model to {export}")
    except HpsearchError as error:
        _fail(error)


def _say_final(outcome) -> None:
    click.echo(
        f"test accuracy {outcome.test_accuracy:.4f}, test loss {outcome.test_loss:.4f} "
        f"after {outcome.epochs} epochs; MLflow run {outcome.run_id}"
    )
    if outcome.model_version:
        click.echo(f"registered model version {outcome.model_version}")
    if outcome.export:
        click.echo(f"exported to {outcome.export} (keras.saving.load_model takes raw images)")


@main.command()
@click.argument("study_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--storage",
    default=None,
    help="Optuna storage URL (default: optuna.db beside the local MLflow store).",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the local store).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Base config key (beats every study's winner), e.g. --set epochs=50.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=0),
    default=0,
    help="Epochs of the final fit (0: the best trial's best epoch for one study, "
    "else found by early stopping on the validation split).",
)
@click.option("--data-dir", default=None, help="Override the studies' data directory/archive.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=0,
    help="Override the studies' samples per split (0: theirs).",
)
@click.option(
    "--export",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the final model here (.keras).",
)
@click.option(
    "--experiment", default="final", show_default=True, help="MLflow experiment of the final run."
)
@click.option(
    "--model-name",
    default="hpsearch-final",
    show_default=True,
    help="Registered model name in the MLflow model registry ('' to skip).",
)
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch progress.")
def combine(
    study_files: tuple[str, ...],
    storage: str | None,
    tracking_uri: str | None,
    overrides: tuple[str, ...],
    epochs: int,
    data_dir: str | None,
    limit: int,
    export: str | None,
    experiment: str,
    model_name: str,
    quiet: bool,
) -> None:
    """Assemble the combined final model from studies, retrain, test, register, export."""
    from pathlib import Path

    try:
        from hpsearch.config import parse_overrides
        from hpsearch.study import load_study as load_study_file

        base = parse_overrides(overrides)
        # `mlflow run -P studies="a.yaml b.yaml"` passes one space-separated argument
        specs = [load_study_file(path) for arg in study_files for path in arg.split()]
        from hpsearch.chooser import combine as merge
        from hpsearch.chooser import finalize, selection_epochs, study_bests

        bests = study_bests(specs, _storage_for(storage, tracking_uri))
        combination = merge(bests, base)
        data = {k: v for k, v in (("data_dir", data_dir), ("limit", limit or None)) if v}
        if data:
            combination.data = combination.data.model_copy(update=data)
        for key, source in combination.sources.items():
            value = combination.config.to_params()[key]
            click.echo(f"  {key} = {value}  (from {source})")
        verbose = 0 if quiet else 2
        final_epochs = (
            epochs
            or combination.epochs
            or selection_epochs(combination, experiment, click.echo, verbose)
        )
        outcome = finalize(
            combination,
            final_epochs,
            experiment,
            model_name or None,
            Path(export) if export else None,
            echo=click.echo,
            verbose=verbose,
        )
    except HpsearchError as error:
        _fail(error)
    _say_final(outcome)


@main.command()
@click.argument("studies", nargs=-1, required=True)
@click.option(
    "--storage",
    default=None,
    help="Optuna storage URL (default: optuna.db beside the local MLflow store).",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the local store).",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default="reports",
    show_default=True,
    help="Folder for the reports (one subfolder per study).",
)
def report(
    studies: tuple[str, ...], storage: str | None, tracking_uri: str | None, output: str
) -> None:
    """Write each study's reproduction table and figures; log them on its parent run.

    STUDIES are study files (studies/dropout.yaml) or study names (dropout).
    """
    from pathlib import Path

    try:
        from hpsearch.chooser import load_study
        from hpsearch.study import load_study as load_study_file

        names = [load_study_file(s).name if s.endswith((".yaml", ".yml")) else s for s in studies]
        url = _storage_for(storage, tracking_uri)
        loaded = [load_study(name, url) for name in names]
        from hpsearch.report import write_report
        from hpsearch.tracking import log_folder

        for study in loaded:
            path, rows = write_report(study, Path(output) / study.study_name)
            parent = study.user_attrs.get("mlflow_parent_run_id")
            if parent:
                log_folder(parent, path.parent, "report")
            click.echo(
                f"{path}: {len(rows)} trials" + (" (logged on the parent run)" if parent else "")
            )
    except HpsearchError as error:
        _fail(error)


@main.command("config")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML trial config to start from.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one config key (repeatable).",
)
def show_config(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Print the resolved trial config as YAML, and what each key allows."""
    from hpsearch.config import TrialConfig, allowed_values, load_config, parse_overrides

    try:
        config = load_config(config_path, parse_overrides(overrides))
    except HpsearchError as error:
        _fail(error)
    click.echo(config.to_yaml().rstrip())
    click.echo("\n# allowed values:")
    for key in TrialConfig.model_fields:
        click.echo(f"#   {key}: {allowed_values(key)}")


if __name__ == "__main__":
    main()

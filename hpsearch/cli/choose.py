"""``hpsearch best``, ``combine`` and ``report``: the chooser's commands."""

from __future__ import annotations

import click

from hpsearch.cli.common import (
    load_keras_quietly,
    storage_for,
    storage_option,
    storage_url,
    tracking_option,
    use_tracking,
)
from hpsearch.errors import HpsearchError


@click.command()
@click.argument("study", required=False)
@click.option("--study", "study_option", default=None, metavar="NAME",
              help="The study's name (the same as STUDY).")
@storage_option
@tracking_option
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
    study: str | None,
    study_option: str | None,
    storage: str | None,
    tracking_uri: str | None,
    export: str | None,
    retrain: bool,
    experiment: str,
    model_name: str | None,
    quiet: bool,
) -> None:
    """Show the best trial of a study; export or retrain its model.

    STUDY is a study file (studies/smoke.yaml) or a study name (smoke); without one, the
    storage's only study.
    """
    from pathlib import Path

    from hpsearch.choose.chooser import Combination, best_trial, describe_best, finalize, load_study

    url = storage_url(storage, tracking_uri)
    found = load_study(study_name(study or study_option), url)  # before MLflow is loaded
    use_tracking(tracking_uri)
    load_keras_quietly()
    winner = best_trial(found)
    click.echo(f"study {winner.study}: {describe_best(winner)}")
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
        from hpsearch.tracking import MissingArtifact, download_artifact

        if not winner.run_id:
            raise HpsearchError(f"trial {winner.number} has no MLflow run to export from")
        try:
            download_artifact(winner.run_id, "model.keras", Path(export))
        except MissingArtifact as missing:
            why = (
                f" yet: it waits for upload in {missing.waiting} (its worker is uploading "
                "it, or the study's next search or worker on this machine will); or"
                if missing.waiting
                else " (its worker died before uploading it);"
            )
            raise HpsearchError(
                f"trial {winner.number} (MLflow run {winner.run_id}) has no model.keras"
                f"{why} retrain it with "
                f"`hpsearch best --study {found.study_name} --retrain --export {export}`"
            ) from None
        names = _class_names_into(Path(export), winner.run_id)
        click.echo(f"exported trial {winner.number}'s model to {export} (raw uint8 images in, "
                   f"probabilities of {names} out; see its metadata.json)")  # fmt: skip


def _class_names_into(exported, run_id: str) -> str:
    """The class names the exported model predicts, added to its metadata if missing
    (a trial from before hpsearch wrote them there); said shortly."""
    import json
    import tempfile
    from pathlib import Path

    from hpsearch.model.export import add_metadata, read_metadata
    from hpsearch.tracking import MissingArtifact, download_artifact

    names = read_metadata(exported).get("class_names")
    if names is None:
        with tempfile.TemporaryDirectory(prefix="hpsearch-names-") as tmp:
            try:
                kept = download_artifact(run_id, "class_names.json", Path(tmp) / "names.json")
            except MissingArtifact:
                return "unnamed classes"
            names = json.loads(kept.read_text())
        add_metadata(exported, {"class_names": names})
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"{len(names)} classes ({shown})"


def _say_final(outcome) -> None:
    click.echo(
        f"test accuracy {outcome.test_accuracy:.4f}, test loss {outcome.test_loss:.4f} "
        f"after {outcome.epochs} epochs; MLflow run {outcome.run_id}"
    )
    if outcome.model_version:
        click.echo(f"registered model version {outcome.model_version}")
    if outcome.export:
        click.echo(f"exported to {outcome.export} (keras.saving.load_model takes raw uint8 "
                   "images; class names in its metadata.json)")  # fmt: skip


@click.command()
@click.argument("study_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@storage_option
@tracking_option
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

    from hpsearch.config import parse_overrides
    from hpsearch.search.study_file import load_study as load_study_file

    base = parse_overrides(overrides)
    # `mlflow run -P studies="a.yaml b.yaml"` passes one space-separated argument
    specs = [load_study_file(path) for arg in study_files for path in arg.split()]
    from hpsearch.choose.chooser import combine as merge
    from hpsearch.choose.chooser import finalize, selection_epochs, study_bests

    bests = study_bests(specs, storage_for(storage, tracking_uri))
    load_keras_quietly()
    combination = merge(bests, base)
    data = {k: v for k, v in (("data_dir", data_dir), ("limit", limit or None)) if v}
    if data:
        combination.data = combination.data.model_copy(update=data)
    unused = combination.config.inapplicable()
    for key, source in combination.sources.items():
        if key not in unused:  # momentum taken from a study, say, with Adam chosen
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
    _say_final(outcome)


def study_name(given: str | None) -> str | None:
    """A study's name from a study file (``studies/dropout.yaml``) or as given (``dropout``)."""
    if given is None or not given.endswith((".yaml", ".yml")):
        return given
    from hpsearch.search.study_file import load_study as load_study_file

    return load_study_file(given).name


@click.command()
@click.argument("studies", nargs=-1, required=True)
@storage_option
@tracking_option
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default="reports",
    show_default=True,
    help="Folder for the reports (one subfolder per study).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the errors.")
def report(
    studies: tuple[str, ...],
    storage: str | None,
    tracking_uri: str | None,
    output: str,
    quiet: bool,
) -> None:
    """Write each study's reproduction table and figures; log them on its parent run.

    STUDIES are study files (studies/dropout.yaml) or study names (dropout).
    """
    from pathlib import Path

    from hpsearch.choose.chooser import load_study

    names = [study_name(s) for s in studies]
    url = storage_url(storage, tracking_uri)
    loaded = [load_study(name, url) for name in names]  # before MLflow is loaded
    use_tracking(tracking_uri)
    from hpsearch.choose.report import write_report
    from hpsearch.records import StudyRecord
    from hpsearch.tracking import log_folder

    for study in loaded:
        path, rows = write_report(study, Path(output) / study.study_name)
        parent = StudyRecord.of(study).mlflow_parent_run_id
        if parent:
            log_folder(parent, path.parent, "report")
        if not quiet:
            click.echo(f"{path}: {len(rows)} trials"
                       + (" (logged on the parent run)" if parent else ""))  # fmt: skip

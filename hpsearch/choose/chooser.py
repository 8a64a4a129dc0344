"""The chooser: best trials, the combined final model, its test evaluation and export.

Combination rule (the reference study's): start from the base configuration
(the schema's defaults plus ``--set``), and for every factor take the value
from the best trial of the study that varied it. When several studies varied
the same factor, the study whose best trial scored better wins (ties: the
later study on the command line). A single study contributes its best trial's
whole configuration (a joint study's winner, fixed settings included).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

import hpsearch
from hpsearch.choose.repeats import best_group, group_trials
from hpsearch.config import DataSpec, TrialConfig, make_config, make_data_spec
from hpsearch.errors import HpsearchError
from hpsearch.records import StudyRecord, TrialRecord
from hpsearch.search.study_file import StudyFile
from hpsearch.util.redact import hide_password


@dataclass
class BestTrial:
    study: str
    number: int
    value: float
    config: TrialConfig
    run_id: str | None
    best_epoch: int | None
    data: DataSpec
    searched: list[str]
    maximize: bool
    # the configuration's repeats: ``value`` is their mean (the number's own trial is the
    # best of them, whose model is exported), ``sd`` their sample standard deviation
    n: int = 1
    sd: float = 0.0

    def better_than(self, other: BestTrial) -> bool:
        return self.value > other.value if self.maximize else self.value < other.value


@dataclass
class Combination:
    """A final configuration and where each of its values came from."""

    config: TrialConfig
    data: DataSpec
    sources: dict[str, str] = field(default_factory=dict)  # factor -> "study#trial"
    winners: list[BestTrial] = field(default_factory=list)
    epochs: int | None = None  # known when one trial supplied the whole config


def load_study(name: str | None, storage: str) -> optuna.Study:
    """The Optuna study ``name``, or a clear error listing what the storage holds.

    Without a name, the storage's only study. A SQLite file that does not exist is
    reported as such, not created.
    """
    if storage.startswith("sqlite:///"):
        path = Path(storage.removeprefix("sqlite:///").split("?", 1)[0])
        if str(path) != ":memory:" and not path.exists():
            raise HpsearchError(
                f"no study{f' named {name!r}' if name else ''}: the storage file "
                f"{path.resolve()} does not exist; "
                "run `hpsearch search STUDY.yaml` first, or pass --storage"
            )
    try:
        names = optuna.get_all_study_names(storage)
    except Exception as error:  # bad URL, unreachable database
        raise HpsearchError(f"storage {hide_password(storage)}: {error}") from None
    known = ", ".join(sorted(names)) or "none"
    if name is None:
        if len(names) != 1:
            raise HpsearchError(
                f"name the study (a study file or a name): {hide_password(storage)} holds "
                f"{len(names)} studies ({known})"
            )
        name = names[0]
    if name not in names:
        raise HpsearchError(
            f"no study named {name!r} in {hide_password(storage)} (studies there: {known}); "
            "run `hpsearch search STUDY.yaml` first, or pass --storage"
        )
    return optuna.load_study(study_name=name, storage=storage)


def best_trial(study: optuna.Study) -> BestTrial:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        counts = {s.name.lower(): 0 for s in TrialState}
        for trial in study.get_trials(deepcopy=False):
            counts[trial.state.name.lower()] += 1
        summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        raise HpsearchError(
            f"study {study.study_name!r} has no completed trial ({summary or 'no trials'})"
        )
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    group = best_group(group_trials(complete), maximize)  # by the mean over repeats
    if group is None:  # a completed trial has a value: never
        raise HpsearchError(f"study {study.study_name!r} has no completed trial with a value")
    best = group.best_trial(maximize)
    mean, sd, n = group.summary()
    about, record = StudyRecord.of(study), TrialRecord.of(best)
    return BestTrial(
        study=study.study_name,
        number=best.number,
        value=float(mean),
        n=n,
        sd=sd,
        config=make_config(record.config or {}, f"trial {best.number}"),
        run_id=record.mlflow_run_id,
        best_epoch=record.best_epoch,
        data=make_data_spec(about.data or {}, f"study {study.study_name}"),
        searched=list(about.searched if about.searched is not None else best.params),
        maximize=maximize,
    )


def describe_best(best: BestTrial) -> str:
    """``best trial 7, value 0.8123, MLflow run ...``, with the repeats' spread when there are."""
    if best.n > 1:
        value = (
            f"value {best.value:.4f} ± {best.sd:.4f} (mean ± sd of {best.n} repeats of its "
            "configuration; the best repeat's model)"
        )
    else:
        value = f"value {best.value:.4f}"
    return f"best trial {best.number}, {value}, MLflow run {best.run_id}"


def combine(bests: Sequence[BestTrial], base: dict[str, Any]) -> Combination:
    """Merge per-factor winners onto ``base`` (see the module docstring for the rule)."""
    datasets = {best.data.dataset for best in bests}
    if len(datasets) > 1:
        raise HpsearchError(f"studies ran on different datasets ({', '.join(sorted(datasets))})")
    if len(bests) == 1:
        best = bests[0]
        values = {**best.config.model_dump(), **base}
        sources = {key: f"{best.study}#{best.number}" for key in best.searched}
        config = make_config(values, "combined config")
        return Combination(config, best.data, sources, [best], best.best_epoch)
    ranked = sorted(enumerate(bests), key=lambda item: _rank(item[1], bests))
    values = dict(base)
    sources = {}
    for _, best in ranked:  # worst first, so better studies overwrite
        trial_values = best.config.model_dump()
        for key in best.searched:
            if key in trial_values and key not in base:
                values[key] = trial_values[key]
                sources[key] = f"{best.study}#{best.number}"
    config = make_config(values, "combined config")
    return Combination(config, bests[0].data, sources, list(bests))


def _rank(best: BestTrial, bests: Sequence[BestTrial]) -> int:
    """How many other studies this one beats (ties broken by position: later wins)."""
    position = list(bests).index(best)
    return sum(
        best.better_than(other) or (best.value == other.value and position > index)
        for index, other in enumerate(bests)
        if other is not best
    )


def code_version() -> str:
    """The package version, plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(hpsearch.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{hpsearch.__version__}+{commit}" if commit else hpsearch.__version__


@dataclass
class FinalOutcome:
    run_id: str
    test_accuracy: float
    test_loss: float
    epochs: int
    model_version: str | None
    export: Path | None


def finalize(
    combination: Combination,
    epochs: int,
    experiment: str,
    model_name: str | None,
    export: Path | None,
    echo: Callable[[str], None] = print,
    verbose: int = 2,
) -> FinalOutcome:
    """Retrain on training + validation data, evaluate once on the test set, log, register."""
    from hpsearch.model.builder import inference_network, tested_model
    from hpsearch.model.export import model_metadata, save_model
    from hpsearch.tracking.trial import load_splits
    from hpsearch.training.runner import train_final
    from hpsearch.util.progress import quiet_progress

    config, spec = combination.config, combination.data
    with quiet_progress(verbose == 0):  # decoding an archive: no progress under -q
        splits, fingerprint = load_splits(spec)
    lineage = {
        "hpsearch.studies": ",".join(dict.fromkeys(b.study for b in combination.winners)),
        "hpsearch.trials": ",".join(f"{b.study}#{b.number}" for b in combination.winners),
        "hpsearch.sources": ", ".join(f"{k}={v}" for k, v in combination.sources.items()),
        "hpsearch.data_fingerprint": fingerprint,
        "hpsearch.code_version": code_version(),
    }
    echo(
        f"retraining on {len(splits.x_train) + len(splits.x_val)} training + validation images "
        f"for {epochs} epochs, then one evaluation on {len(splits.x_test)} test images"
    )
    from hpsearch.tracking import TrialRun

    with TrialRun(experiment, "final", {**lineage, "hpsearch.command": "final"}) as run:
        run.log_params({**config.to_params(), **spec.to_params(), "final_epochs": str(epochs)})
        result = train_final(config, splits, epochs, [run.epoch_logger()], verbose=verbose)
        network = inference_network(result.model)  # Grad-CAM reads the network's own head
        model = tested_model(network, config)  # exported: mirror-averaged if test_time_flip
        with tempfile.TemporaryDirectory(prefix="hpsearch-final-") as tmp:
            metrics = _write_final_artifacts(Path(tmp), result, network, config, splits)
            run.log_metrics(metrics)
            run.log_artifacts(Path(tmp))
        about = model_metadata(splits.class_names, splits.x_test.shape[1:],
                               mlflow_run_id=run.run_id, **lineage)  # fmt: skip
        if export is not None:
            export.parent.mkdir(parents=True, exist_ok=True)
            save_model(model, export, about)
        version = None
        if model_name:
            version = run.register_model(model, model_name, lineage, splits.x_test[:2], about)
    return FinalOutcome(run.run_id, result.test_accuracy, result.test_loss, epochs, version, export)


def _write_final_artifacts(folder, result, network, config, splits) -> dict[str, float]:
    import csv

    import numpy as np

    from hpsearch.choose.analysis import (
        confused_pairs,
        grad_cam,
        per_class_accuracy,
        save_grad_cam,
        save_misclassified_gallery,
    )
    from hpsearch.figures.plots import save_confusion_matrix, save_training_curves

    predicted = np.argmax(result.test_probabilities, axis=1)
    names = splits.class_names
    save_confusion_matrix(splits.y_test, predicted, names, folder / "confusion_matrix_test.png",
                          title=f"the final model on the test set "
                          f"(accuracy {100 * result.test_accuracy:.2f}%)")  # fmt: skip
    last = len(result.history.get("loss") or ()) or result.epochs  # no early stopping: the last
    save_training_curves(result.history, folder / "training_curves.png", last,
                         "The final fit on training + validation images: loss and accuracy per "
                         f"epoch; the weights kept are the last epoch's ({last})")  # fmt: skip
    per_class = per_class_accuracy(splits.y_test, predicted, names)
    with open(folder / "per_class_accuracy.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("class", "accuracy"), *per_class.items()])
    with open(folder / "confused_pairs.csv", "w", newline="") as handle:
        pairs = confused_pairs(splits.y_test, predicted, names, top=10)
        csv.writer(handle).writerows([("true", "predicted", "count"), *pairs])
    save_misclassified_gallery(splits.x_test, splits.y_test, predicted, result.test_probabilities,
                               names, folder / "misclassified.png")  # fmt: skip
    sample = np.arange(min(8, len(splits.x_test)))
    heatmaps = grad_cam(network, splits.x_test[sample])
    save_grad_cam(splits.x_test[sample], heatmaps, splits.y_test[sample], predicted[sample],
                  names, folder / "grad_cam.png")  # fmt: skip
    (folder / "config.yaml").write_text(config.to_yaml())
    metrics = {"test_accuracy": result.test_accuracy, "test_loss": result.test_loss,
               "fit_time_s": result.fit_time_s}  # fmt: skip
    safe = {name: "".join(c if c.isalnum() else "_" for c in name) for name in names}
    metrics.update({f"test_accuracy_{safe[k]}": v for k, v in per_class.items() if v == v})
    return metrics


def selection_epochs(
    combination: Combination, experiment: str, echo: Callable[[str], None], verbose: int
) -> int:
    """Epochs for the final fit: early stopping on the validation split, as in a trial."""
    from hpsearch.tracking import TrialRun
    from hpsearch.tracking.trial import load_splits, tracked_trial
    from hpsearch.util.progress import quiet_progress

    with quiet_progress(verbose == 0):  # decoding an archive: no progress under -q
        splits, fingerprint = load_splits(combination.data)
    echo(f"choosing the epoch count: up to {combination.config.epochs} epochs, early stopping")
    with TrialRun(experiment, "epoch-selection", {"hpsearch.command": "combine"}) as run:
        result = tracked_trial(
            combination.config, combination.data, splits, run, fingerprint, verbose=verbose
        )
    return result.best_epoch


def study_bests(specs: Sequence[StudyFile], storage: str) -> list[BestTrial]:
    return [best_trial(load_study(spec.name, storage)) for spec in specs]

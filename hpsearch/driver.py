"""The study driver (who proposes): an Optuna study over a study file's space.

Creates or resumes the Optuna study, opens (or reopens) the study's MLflow
parent run, runs each proposed config as a nested trial run, reports epochs
to the pruner, and writes the study summary on the parent run at the end.
Failed trials are recorded with their reason and the study goes on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import keras
import optuna
from optuna.trial import TrialState

from hpsearch.config import make_config
from hpsearch.errors import HpsearchError, failure_reason
from hpsearch.progress import StudyProgress
from hpsearch.samplers import make_pruner, make_sampler
from hpsearch.space import grid_size, suggest
from hpsearch.study import EPOCH_METRIC, StudyFile
from hpsearch.summary import completed, write_summary
from hpsearch.tracking import (
    StudyRun,
    TrialRun,
    hide_password,
    link_project_run,
    where_to_look,
)
from hpsearch.trial import load_splits, tracked_trial

PARENT_ATTR = "mlflow_parent_run_id"
TrialCallbacks = Callable[[optuna.Trial], Sequence[keras.callbacks.Callback]]


@dataclass
class SearchOutcome:
    study_name: str
    parent_run_id: str
    experiment_id: str
    counts: dict[str, int]
    best_trial: int | None
    best_value: float | None
    best_run_id: str | None
    interrupted: bool = False


def default_storage(tracking_uri: str) -> str:
    """A SQLite file beside a local MLflow store (else in the working directory)."""
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite" and tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).parent
        return f"sqlite:///{folder / 'optuna.db'}"
    if parts.scheme in ("", "file"):
        return f"sqlite:///{Path(parts.path).parent / 'optuna.db'}"
    return "sqlite:///optuna.db"


def trial_seed(study_seed: int, number: int) -> int:
    """Per-trial seed: distinct per trial, the same for the same study seed and number."""
    return (study_seed * 1_000_003 + number * 7_919 + 1) % (2**31 - 1)


def trials_to_run(study: optuna.Study, spec: StudyFile, n_trials: int | None) -> int | None:
    """What is left of the study's total (grid: its size); failed trials do not count."""
    total = n_trials or spec.n_trials
    if spec.sampler.type == "grid":
        total = min(total or grid_size(spec), grid_size(spec))
    if total is None:
        return None
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    return max(0, total - done)


def open_study(spec: StudyFile, storage: str) -> optuna.Study:
    try:
        return optuna.create_study(
            study_name=spec.name,
            storage=storage,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec),
            direction=spec.objective.direction,
            load_if_exists=True,
        )
    except (ValueError, ImportError, optuna.exceptions.OptunaError) as error:
        raise HpsearchError(f"storage {hide_password(storage)}: {error}") from None


class _Objective:
    """Runs one proposed trial as a nested MLflow run and returns the objective value."""

    def __init__(self, spec, splits, fingerprint, parent, verbose, extra_callbacks) -> None:
        self.spec, self.splits, self.fingerprint = spec, splits, fingerprint
        self.parent, self.verbose, self.extra_callbacks = parent, verbose, extra_callbacks

    def __call__(self, trial: optuna.Trial) -> float:
        values = suggest(trial, self.spec)
        values["seed"] = trial_seed(self.spec.sampler.seed, trial.number)
        trial.set_user_attr("seed", values["seed"])
        tags = {
            "optuna.study_name": self.spec.name,
            "optuna.trial_number": str(trial.number),
            "hpsearch.command": "search",
        }
        with TrialRun(self.spec.name, f"trial-{trial.number:03d}", tags, self.parent) as run:
            trial.set_user_attr("mlflow_run_id", run.run_id)
            try:
                config = make_config(values, f"trial {trial.number}")
                trial.set_user_attr("config", config.model_dump(mode="json"))
                callbacks = list(self.extra_callbacks(trial)) if self.extra_callbacks else []
                if self.spec.pruner.type != "none":
                    from optuna_integration import KerasPruningCallback

                    monitor = EPOCH_METRIC[self.spec.objective.metric]
                    callbacks.append(KerasPruningCallback(trial, monitor))
                result = tracked_trial(
                    config, self.spec.data, self.splits, run, self.fingerprint,
                    callbacks, evaluate_test=self.spec.evaluate_test, verbose=self.verbose,
                )  # fmt: skip
            except optuna.TrialPruned:
                run.end("pruned")
                raise
            except BaseException as error:
                trial.set_user_attr("fail_reason", failure_reason(error))
                raise
            finally:
                keras.backend.clear_session()
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("wall_time_s", result.wall_time_s)
        return result.final_metrics()[self.spec.objective.metric]


def run_search(
    spec: StudyFile,
    storage: str,
    n_trials: int | None = None,
    timeout: float | None = None,
    echo: Callable[[str], None] = print,
    verbose: int = 2,
    extra_callbacks: TrialCallbacks | None = None,
) -> SearchOutcome:
    """Run (or resume) the study until its trial total or the timeout is reached."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(spec, storage)
    splits, fingerprint = load_splits(spec.data)
    to_run = trials_to_run(study, spec, n_trials)
    parent = StudyRun(
        spec.name,
        study.user_attrs.get(PARENT_ATTR),
        tags={"optuna.study_name": spec.name, "hpsearch.storage": hide_password(storage)},
        params=_study_params(spec),
    )
    study.set_user_attr(PARENT_ATTR, parent.run_id)
    study.set_user_attr("data", spec.data.model_dump())
    study.set_user_attr("searched", list(spec.space))
    study.set_user_attr("objective", spec.objective.metric)
    link_project_run(parent.run_id)
    echo(
        f"[{spec.name}] {'resuming' if parent.resumed else 'starting'}: "
        f"{to_run if to_run is not None else 'unlimited'} trials to run"
        f"{f', timeout {timeout or spec.timeout:g}s' if (timeout or spec.timeout) else ''}; "
        f"{len(splits.x_train)} training images; storage {hide_password(storage)}"
    )
    objective = _Objective(spec, splits, fingerprint, parent.run_id, verbose, extra_callbacks)
    interrupted = False
    status = "FINISHED"
    try:
        if to_run != 0:
            study.optimize(
                objective,
                n_trials=to_run,
                timeout=timeout or spec.timeout,
                catch=(Exception,),
                callbacks=[StudyProgress(to_run, echo)],
                gc_after_trial=True,
            )
    except KeyboardInterrupt:
        interrupted, status = True, "KILLED"
    finally:
        _log_summary(study, parent)
        parent.close(status)
    return _outcome(study, parent, interrupted)


def _study_params(spec: StudyFile) -> dict[str, str]:
    return {
        "study": spec.name,
        "objective": f"{spec.objective.direction} {spec.objective.metric}",
        "sampler": spec.sampler.type,
        "sampler_seed": str(spec.sampler.seed),
        "pruner": spec.pruner.type,
        "n_trials": str(spec.n_trials),
        "space": ", ".join(spec.space) or "none",
        **spec.data.to_params(),
    }


def _log_summary(study: optuna.Study, parent: StudyRun) -> None:
    metrics, tags = {}, {}
    if completed(study):
        best = study.best_trial
        metrics = {"best_value": best.value, "best_trial_number": best.number}
        tags = {
            "best_trial_number": str(best.number),
            "best_run_id": best.user_attrs.get("mlflow_run_id", ""),
        }
    with tempfile.TemporaryDirectory(prefix="hpsearch-study-") as tmp:
        write_summary(study, Path(tmp))
        parent.log_summary(metrics, tags, Path(tmp))


def _outcome(study: optuna.Study, parent: StudyRun, interrupted: bool) -> SearchOutcome:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    counts = {
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
    }
    best = study.best_trial if completed(study) else None
    return SearchOutcome(
        study_name=study.study_name,
        parent_run_id=parent.run_id,
        experiment_id=parent.experiment_id,
        counts=counts,
        best_trial=best.number if best else None,
        best_value=best.value if best else None,
        best_run_id=best.user_attrs.get("mlflow_run_id") if best else None,
        interrupted=interrupted,
    )


def describe(outcome: SearchOutcome) -> str:
    """The closing lines: counts, best trial, where to look."""
    counts = ", ".join(f"{n} {k}" for k, n in outcome.counts.items())
    lines = [f"[{outcome.study_name}] {counts}"]
    if outcome.best_trial is not None:
        lines.append(
            f"best: trial {outcome.best_trial}, value {outcome.best_value:.4f}, "
            f"MLflow run {outcome.best_run_id}"
        )
    else:
        lines.append("no trial completed yet")
    lines.append(f"runs: {where_to_look(outcome.experiment_id)}")
    if outcome.interrupted:
        lines.append("interrupted: run the same command again to resume the study")
    return "\n".join(lines)

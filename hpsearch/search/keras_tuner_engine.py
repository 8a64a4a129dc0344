"""The keras_tuner engine: the same study files, run by KerasTuner's tuners, tracked the same way.

The study's ``space`` becomes KerasTuner hyperparameters (``hp.Choice``, ``hp.Float``,
``hp.Int``, ``hp.conditional_scope`` for ``when``) in a :class:`StudyHyperModel` whose
``build`` is hpsearch's model builder; the sampler picks KerasTuner's oracle (random,
bayesian, hyperband). :class:`TrackedTuner` runs every trial it is given through
:func:`hpsearch.tracking.trial.tracked_trial` in a nested :class:`~hpsearch.tracking.TrialRun`,
exactly as the Optuna engine does, and mirrors it into an Optuna study of the same name in the
same storage (params, value, state and its :class:`~hpsearch.records.TrialRecord`), so the
parent run's summary, ``hpsearch best``, ``combine`` and ``report`` work on either engine's
studies unchanged.

KerasTuner's project directory lies beside the Optuna storage
(``<folder of optuna.db>/keras_tuner/<study>``) and is never overwritten: a rerun reloads it
and goes on, retrying the trial an interruption cut short. One process runs a keras_tuner
study (KerasTuner's own distributed mode is not used).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import optuna
from optuna.trial import TrialState

from hpsearch.compat import study_storage
from hpsearch.compat import trial_id as storage_trial_id
from hpsearch.config import make_config
from hpsearch.errors import HpsearchError, failure_reason
from hpsearch.records import StudyRecord, TrialRecord
from hpsearch.search.keras_tuner_space import StudyHyperModel, distribution, make_oracle
from hpsearch.search.lifecycle import Engine, Search, trial_seed
from hpsearch.search.options import WorkerOptions
from hpsearch.search.storage import make_storage
from hpsearch.search.study_file import EPOCH_METRIC
from hpsearch.search.study_progress import StudyProgress
from hpsearch.tracking import TrialRun, close_lost_run, close_unclosed_runs
from hpsearch.tracking.trial import tracked_trial
from hpsearch.training.session import release_trial_state
from hpsearch.util.redact import hide_password

ENGINE = "keras_tuner"
WEIGHTS = "hpsearch-weights.npz"  # a trial's kept weights, for hyperband's next rounds


def project_dir(storage: str, study_name: str) -> Path:
    """KerasTuner's project folder: beside a SQLite storage, else in the working directory."""
    root = Path(".")
    if storage.startswith("sqlite:///"):
        root = Path(storage.removeprefix("sqlite:///")).parent
    return root / "keras_tuner" / study_name


# --- the search space as KerasTuner hyperparameters -------------------------------------------


class _Stop(Exception):
    """Raised before a trial is created to end KerasTuner's search loop."""


# --- the tuner --------------------------------------------------------------------------------


class _WarmStart(keras.callbacks.Callback):
    """Hyperband's later rounds: start from the weights an earlier trial kept."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None) -> None:
        with np.load(self.path) as saved:
            self.model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])


class TrackedTuner(keras_tuner.Tuner):
    """A KerasTuner tuner whose trials are hpsearch trials: tracked, mirrored, seeded."""

    def __init__(self, search: Search, directory: Path) -> None:
        study, splits = search.spec, search.splits
        self.lifecycle, self.study, self.optuna_study = search, study, search.study
        self.splits, self.fingerprint, self.verbose = splits, search.fingerprint, search.verbose
        self.total = search.n_trials or study.n_trials
        self.progress = StudyProgress(self.total, search.echo)
        self.stopping = False  # the failure rule said stop
        self.fatal: HpsearchError | None = None  # the tracking server stayed away
        hypermodel = StudyHyperModel(
            study, splits.input_shape, splits.num_classes, len(splits.x_train)
        )
        hypermodel.declare_only = True
        super().__init__(
            oracle=make_oracle(study),
            hypermodel=hypermodel,
            directory=str(directory.parent),
            project_name=directory.name,
            overwrite=False,
            executions_per_trial=study.sampler.executions_per_trial,
        )
        hypermodel.declare_only = False

    # which trials run

    def counts(self) -> tuple[int, int]:
        """(trials that count toward the total, failed trials) in KerasTuner's project."""
        trials = self.oracle.trials.values()
        failed = sum(t.status in ("FAILED", "INVALID") for t in trials)
        return len(self.oracle.trials) - failed, failed

    def left(self) -> int | None:
        """Trials still to complete (a trial cut short counts: it runs again)."""
        done = sum(t.status == "COMPLETED" for t in self.oracle.trials.values())
        return None if self.total is None else max(0, self.total - done)

    def pre_create_trial(self) -> None:
        """Before KerasTuner picks the next trial: stop at the deadline or after failures.

        The total is KerasTuner's ``max_trials``, raised by the failed trials (they do not
        count), so that a trial cut short earlier is still retried before it stops.
        """
        close_unclosed_runs()
        if self.fatal is not None:
            raise _Stop
        deadline = self.lifecycle.deadline  # set as the trials start
        if deadline is not None and time.monotonic() >= deadline:
            raise _Stop
        if self.stopping:
            raise _Stop
        self.oracle.max_trials = None if self.total is None else self.total + self.counts()[1]

    # one trial

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args, **kwargs) -> dict:
        """Every execution as a nested MLflow run; the trial mirrored into the Optuna study."""
        hp = trial.hyperparameters
        number = int(trial.trial_id)
        seed = trial_seed(self.study.sampler.seed, number)
        values = self.hypermodel.values(hp, seed)
        params = {k: values[k] for k in self.study.space if k in values}
        distributions = {k: distribution(self.study.space[k]) for k in params}
        mirror = self._ask(params, distributions)
        record = TrialRecord(seed=seed, worker=f"{socket.gethostname()}:{os.getpid()}",
                             keras_tuner_trial_id=trial.trial_id)  # fmt: skip
        warm, tags = None, {"keras_tuner.trial_id": trial.trial_id,
                            "keras_tuner.tuner": self.study.sampler.type}  # fmt: skip
        if "tuner/epochs" in hp.values:  # hyperband: the epochs it asks for
            initial = int(hp.values.get("tuner/initial_epoch", 0))
            values["epochs"] = int(hp.values["tuner/epochs"])
            earlier = hp.values.get("tuner/trial_id")
            if earlier and (self._trial_path(earlier) / WEIGHTS).exists():
                warm = self._trial_path(earlier) / WEIGHTS
                values["epochs"] -= initial
                tags["keras_tuner.initial_epoch"] = str(initial)
                tags["keras_tuner.resumed_from"] = str(earlier)
                record.resumed_from_keras_tuner_trial = earlier
                record.initial_epoch = initial
        try:
            results = self._executions(mirror, values, tags, warm)
        except BaseException as error:
            record.fail_reason = failure_reason(error)
            self._tell(mirror, None, record)
            if not isinstance(error, KeyboardInterrupt):
                try:
                    self.stopping = self.lifecycle.streak.after(record.fail_reason)
                except HpsearchError as lost:  # the tracking server stayed away
                    self.fatal = lost  # the search stops before the next trial
            raise
        finally:
            release_trial_state()
        self.lifecycle.streak.after(None)
        metric = self.study.objective.metric
        value = float(np.mean([result.final_metrics()[metric] for _, result, _ in results]))
        maximize = self.study.objective.direction == "maximize"
        run_id, best, config = sorted(
            results, key=lambda item: item[1].final_metrics()[metric], reverse=maximize
        )[0]
        if self.study.sampler.type == "hyperband":
            path = self._trial_path(trial.trial_id) / WEIGHTS
            np.savez(path, *best.model.get_weights())
        record = dataclasses.replace(
            record,
            mlflow_run_id=run_id,
            config=config.model_dump(mode="json"),
            seed=config.seed,
            epochs_run=sum(result.epochs_run for _, result, _ in results),
            best_epoch=best.best_epoch + (record.initial_epoch or 0),
            wall_time_s=sum(result.wall_time_s for _, result, _ in results),
            fit_time_s=sum(result.fit_time_s for _, result, _ in results),
            repeat=0,
            kept_val_accuracy=best.kept_val_accuracy,
            **best.test_metrics,  # evaluate_test: the best execution's kept weights, once
        )
        if len(results) > 1:  # the best execution's run, config and seed stand for the trial
            record.mlflow_run_ids = [run for run, _, _ in results]
        self._tell(mirror, value, record, best.history.get(EPOCH_METRIC[metric]))
        return {metric: value}

    def _executions(self, mirror, values, tags, warm) -> list[tuple[str, Any, Any]]:
        """Each execution in its own nested run: (run id, TrialResult, TrialConfig) each."""
        runs = []
        executions = self.executions_per_trial
        for execution in range(executions):
            seed = values["seed"] if execution == 0 else (values["seed"] + execution) % (2**31 - 1)
            name = f"trial-{mirror.number:03d}" + (f"-{execution}" if executions > 1 else "")
            run_tags = {
                "optuna.study_name": self.study.name,
                "optuna.trial_number": str(mirror.number),
                "hpsearch.command": "search",
                "hpsearch.repeat": "0",  # KerasTuner repeats within a trial (its executions)
                **tags,
                **({"keras_tuner.execution": str(execution)} if executions > 1 else {}),
            }
            with TrialRun(self.study.name, name, run_tags, self.lifecycle.parent.run_id) as run:
                if execution == 0:
                    TrialRecord(mlflow_run_id=run.run_id).write(mirror)
                config = make_config({**values, "seed": seed}, f"trial {mirror.number}")
                if execution == 0:
                    TrialRecord(config=config.model_dump(mode="json")).write(mirror)
                result = tracked_trial(
                    config, self.study.data, self.splits, run, self.fingerprint,
                    [_WarmStart(warm)] if warm else [],
                    evaluate_test=self.study.evaluate_test, verbose=self.verbose,
                )  # fmt: skip
            runs.append((run.run_id, result, config))
        return runs

    # the Optuna mirror

    def _ask(self, params: dict, distributions: dict) -> optuna.Trial:
        self.optuna_study.enqueue_trial(params, skip_if_exists=False)
        return self.optuna_study.ask(fixed_distributions=distributions)

    def _tell(self, mirror: optuna.Trial, value, record: TrialRecord, curve=None) -> None:
        record.write(mirror)
        for step, point in enumerate(curve or []):
            mirror.report(float(point), step)
        if value is None or not math.isfinite(value):
            self.optuna_study.tell(mirror, state=TrialState.FAIL)
        else:
            self.optuna_study.tell(mirror, value)
        frozen = self.optuna_study.get_trials(deepcopy=False)[mirror.number]
        self.progress(self.optuna_study, frozen)

    def _trial_path(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id))


# --- the engine --------------------------------------------------------------------------------


class KerasTunerEngine(Engine):
    """KerasTuner's tuners (random, bayesian, hyperband); one process, its project on disk."""

    name = ENGINE

    @classmethod
    def default_options(cls) -> WorkerOptions:
        return WorkerOptions(heartbeat=0, max_retry=0)  # one process: no heartbeats

    def open_study(self) -> tuple[optuna.Study, bool]:
        """The Optuna study the KerasTuner trials are mirrored into."""
        spec, storage = self.search.spec, self.search.storage_url
        store = make_storage(storage, WorkerOptions(heartbeat=0))
        sampler = optuna.samplers.RandomSampler(seed=spec.sampler.seed)  # unused: fixed params
        direction = spec.objective.direction
        try:
            study = optuna.create_study(
                study_name=spec.name, storage=store, direction=direction, sampler=sampler
            )
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=spec.name, storage=store, sampler=sampler)
            created = False
        engine = StudyRecord.of(study).engine or "optuna"
        if not created and engine != ENGINE and study.get_trials(deepcopy=False):
            raise HpsearchError(
                f"study {spec.name!r} in {hide_password(storage)} was run by the optuna engine; "
                "give the keras_tuner study another name, or use another --storage"
            )
        StudyRecord(engine=ENGINE).write(study)
        return study, created or StudyRecord.of(study).mlflow_parent_run_id is None

    def reap_lost(self) -> None:
        """Trials left RUNNING by a process that died: FAIL them and close their MLflow runs.

        (One process runs a keras_tuner study: any RUNNING trial is a dead process's.)
        """
        study = self.search.study
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            record = TrialRecord.of(trial)
            if record.mlflow_run_id:
                close_lost_run(record.mlflow_run_id)
            TrialRecord(fail_reason="worker_lost").write_to_storage(
                study_storage(study), storage_trial_id(trial)
            )
            study.tell(trial.number, state=TrialState.FAIL)

    def announce(self, created: bool) -> str:
        search, spec = self.search, self.search.spec
        folder = project_dir(search.storage_url, spec.name)
        study = search.study
        if not (folder / "oracle.json").exists() and StudyRecord.of(study).keras_tuner_project:
            search.echo(f"[{spec.name}] no KerasTuner project at {folder}: "
                        "starting a new one in the study")  # fmt: skip
        StudyRecord(keras_tuner_project=str(folder.resolve())).write(study)
        _tag_parent(search, {"hpsearch.engine": ENGINE, "keras_tuner.project_dir": str(folder),
                             "keras_tuner.tuner": spec.sampler.type})  # fmt: skip
        self.tuner = TrackedTuner(search, folder)
        count = self.tuner.left()
        total = search.n_trials or spec.n_trials
        left = "trials until its schedule ends" if count is None else f"{count} of {total} left"
        return (
            f"[{spec.name}] {'resuming' if self.tuner.oracle.trials else 'starting'} with "
            f"KerasTuner ({spec.sampler.type}, project {folder}): {left}"
        )

    def run(self) -> None:
        tuner = self.tuner
        with contextlib.suppress(_Stop), tuner.progress.bar(self.search.study):
            tuner.search(verbose=1 if self.search.verbose else 0)
        if tuner.fatal is not None:
            raise tuner.fatal

    def finishing(self, interrupted: bool) -> None:
        if interrupted and hasattr(self, "tuner"):
            with contextlib.suppress(Exception):
                self.tuner.save()  # the cut trial stays ongoing: KerasTuner retries it on resume


def _tag_parent(search: Search, tags: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="hpsearch-tags-") as empty:
        search.parent.log_summary({}, tags, Path(empty))

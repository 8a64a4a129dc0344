"""The keras_tuner engine: the same study files, run by KerasTuner's tuners, tracked the same way.

The study's ``space`` becomes KerasTuner hyperparameters (``hp.Choice``, ``hp.Float``,
``hp.Int``, ``hp.conditional_scope`` for ``when``) in a :class:`StudyHyperModel` whose
``build`` is hpsearch's model builder; the sampler picks KerasTuner's oracle (random,
bayesian, hyperband). :class:`TrackedTuner` runs every trial it is given through
:func:`hpsearch.tracking.trial.tracked_trial` in a nested :class:`~hpsearch.tracking.TrialRun`,
exactly as the Optuna engine does, and mirrors it into an Optuna study of the same name in the
same storage (params, value, state and the driver's user attributes), so the parent run's summary,
``hpsearch best``, ``combine`` and ``report`` work on either engine's studies unchanged.

KerasTuner's project directory lies beside the Optuna storage
(``<folder of optuna.db>/keras_tuner/<study>``) and is never overwritten: a rerun reloads it
and goes on, retrying the trial an interruption cut short. One process runs a keras_tuner
study (KerasTuner's own distributed mode is not used).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from hpsearch.config import make_config
from hpsearch.datasets import Splits
from hpsearch.errors import ConfigError, HpsearchError, failure_reason
from hpsearch.model.builder import build_model
from hpsearch.search.engines import ENGINE_ATTR, check_engine  # noqa: F401 - kt_engine's API
from hpsearch.search.optuna_engine import (
    PARENT_ATTR,
    SearchOutcome,
    WorkerOptions,
    _outcome,
    find_parent,
    finish_parent,
    make_storage,
    trial_seed,
)
from hpsearch.search.study_file import EPOCH_METRIC, Factor, StudyFile
from hpsearch.tracking import (
    StudyRun,
    TrialRun,
    close_lost_run,
    close_unclosed_runs,
    wait_for_tracking,
)
from hpsearch.tracking.trial import load_splits, tracked_trial
from hpsearch.training.session import release_trial_state
from hpsearch.util.progress import StudyProgress, quiet_progress
from hpsearch.util.redact import hide_password, redact_logs

ENGINE = "keras_tuner"
TRIAL_ID_ATTR = "keras_tuner_trial_id"
HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/trial_id")
WEIGHTS = "hpsearch-weights.npz"  # a trial's kept weights, for hyperband's next rounds


def project_dir(storage: str, study_name: str) -> Path:
    """KerasTuner's project folder: beside a SQLite storage, else in the working directory."""
    root = Path(".")
    if storage.startswith("sqlite:///"):
        root = Path(storage.removeprefix("sqlite:///")).parent
    return root / "keras_tuner" / study_name


# --- the search space as KerasTuner hyperparameters -------------------------------------------


def choice_codec(choices: list[Any]) -> dict[Any, Any]:
    """KerasTuner value -> study value for a ``choices`` factor.

    A KerasTuner ``Choice`` holds values of one type (str, int, float or bool); a mixed list
    such as ``[none, 0.2]`` or ``[null, 1.0e-3]`` is offered to KerasTuner as strings.
    """
    kinds = {type(value) for value in choices}
    if len(kinds) == 1 and kinds <= {str, int, float, bool}:
        return {value: value for value in choices}
    encoded = [value if isinstance(value, str) else json.dumps(value) for value in choices]
    if len(set(encoded)) < len(encoded):  # e.g. both "0.2" and 0.2
        encoded = [json.dumps(value) for value in choices]
    return dict(zip(encoded, choices, strict=True))


def _encode(factor: Factor, value: Any) -> Any:
    for kt_value, study_value in choice_codec(factor.choices or []).items():
        if study_value == value and type(study_value) is type(value):
            return kt_value
    return None


def _declare(hp: keras_tuner.HyperParameters, key: str, factor: Factor) -> Any:
    if factor.choices is not None:
        return hp.Choice(key, list(choice_codec(factor.choices)))
    if factor.is_integer:
        step = None if factor.log else int(factor.step or 1)
        sampling = "log" if factor.log else "linear"
        low, high = factor.bounds
        return hp.Int(key, int(low), int(high), step=step, sampling=sampling)
    sampling = "log" if factor.log else "linear"
    low, high = factor.bounds
    return hp.Float(key, low, high, step=factor.step, sampling=sampling)


def _decode(factor: Factor, value: Any) -> Any:
    if factor.choices is not None:
        return choice_codec(factor.choices)[value]
    if factor.is_integer:
        return int(value)
    value = float(value)
    if factor.step:  # snap onto the step grid (exact for Optuna's distribution)
        value = factor.low + round((value - factor.low) / factor.step) * factor.step
        value = min(max(round(value, 12), factor.low), factor.high)
    return value


def space_values(hp: keras_tuner.HyperParameters, study: StudyFile) -> dict[str, Any]:
    """Declare the study's space on ``hp``; the fixed keys plus each active factor's value.

    Mirrors :func:`hpsearch.search.space.suggest`: factors in file order; a ``when`` on a factor
    declared before becomes ``hp.conditional_scope``; a ``when`` on any other key (fixed, or
    declared later) is decided here, on the values known so far.
    """
    values: dict[str, Any] = dict(study.fixed)
    declared: set[str] = set()
    for key, factor in study.space.items():
        scopes, possible = [], True
        for parent, allowed in (factor.when or {}).items():
            if parent not in declared:
                possible = possible and values.get(parent) in allowed
                continue
            parent_factor = study.space[parent]
            if parent_factor.choices is not None:
                allowed = [_encode(parent_factor, v) for v in allowed]
                allowed = [v for v in allowed if v is not None]
            if not allowed:
                possible = False
            scopes.append((parent, allowed))
        if not possible:
            continue
        with contextlib.ExitStack() as stack:
            for parent, allowed in scopes:
                stack.enter_context(hp.conditional_scope(parent, allowed))
            _declare(hp, key, factor)
        declared.add(key)
        if hp.is_active(key) and key in hp.values:
            values[key] = _decode(factor, hp.values[key])
    return values


def distribution(factor: Factor) -> BaseDistribution:
    """The Optuna distribution the Optuna engine would suggest this factor from."""
    if factor.choices is not None:
        return CategoricalDistribution(factor.choices)
    if factor.is_integer:
        step = 1 if factor.log else int(factor.step or 1)
        low, high = factor.bounds
        return IntDistribution(int(low), int(high), log=factor.log, step=step)
    low, high = factor.bounds
    return FloatDistribution(low, high, log=factor.log, step=factor.step)


class StudyHyperModel(keras_tuner.HyperModel):
    """hpsearch's model builder as a KerasTuner HyperModel over a study's space.

    While KerasTuner explores the space (``declare_only``, as a tuner starts), ``build`` only
    declares the hyperparameters: a combination the trial config refuses then fails its own
    trial (``invalid_config``), as with Optuna, instead of the whole search.
    """

    def __init__(self, study: StudyFile, input_shape, num_classes: int, train_size: int) -> None:
        super().__init__(name=study.name)
        self.study = study
        self.input_shape, self.num_classes, self.train_size = input_shape, num_classes, train_size
        self.declare_only = False

    def values(self, hp: keras_tuner.HyperParameters, seed: int = 0) -> dict[str, Any]:
        """The trial-config values ``hp`` stands for (fixed keys, active factors, seed)."""
        return {**space_values(hp, self.study), "seed": seed}

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model | None:
        values = self.values(hp)
        if self.declare_only:
            return None
        config = make_config(values, f"{self.study.name}: keras_tuner trial")
        steps = math.ceil(self.train_size / config.batch_size)
        return build_model(config, self.input_shape, self.num_classes, steps)


class _Stop(Exception):
    """Raised before a trial is created to end KerasTuner's search loop."""


# --- the tuner --------------------------------------------------------------------------------


def make_oracle(study: StudyFile) -> keras_tuner.Oracle:
    """KerasTuner's oracle for the study's sampler; KerasTuner takes seed 0 as 'random'."""
    spec = study.sampler
    direction = "max" if study.objective.direction == "maximize" else "min"
    common = {
        "objective": keras_tuner.Objective(study.objective.metric, direction),
        "seed": spec.seed + 1,
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": 10**9,  # hpsearch stops after 5 in a row itself
    }
    if spec.type == "random":
        return keras_tuner.oracles.RandomSearchOracle(**common)
    if spec.type == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            num_initial_points=spec.n_startup_trials, **common
        )
    if spec.type == "hyperband":
        return keras_tuner.oracles.HyperbandOracle(
            max_epochs=max_epochs(study),
            factor=spec.factor,
            hyperband_iterations=spec.hyperband_iterations,
            **common,
        )
    raise ConfigError(f"{study.name}: sampler.type {spec.type!r} is not a keras_tuner sampler")


def max_epochs(study: StudyFile) -> int:
    from hpsearch.config import TrialConfig

    return study.sampler.max_epochs or int(
        study.fixed.get("epochs", TrialConfig.model_fields["epochs"].default)
    )


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

    def __init__(
        self,
        study: StudyFile,
        optuna_study: optuna.Study,
        parent: StudyRun,
        splits: Splits,
        fingerprint: str,
        total: int | None,
        deadline: float | None,
        echo: Callable[[str], None],
        verbose: int,
        options: WorkerOptions,
        directory: Path,
    ) -> None:
        self.study, self.optuna_study, self.parent = study, optuna_study, parent
        self.splits, self.fingerprint = splits, fingerprint
        self.total, self.deadline, self.echo, self.verbose = total, deadline, echo, verbose
        self.options = options
        self.progress = StudyProgress(total, echo)
        self.failures_in_a_row = 0
        self.last_failure: str | None = None
        self.fatal: HpsearchError | None = None
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
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise _Stop
        if self.failures_in_a_row >= self.options.max_failures_in_a_row:
            self.echo(
                f"[{self.study.name}] stopping: {self.failures_in_a_row} trials in a row failed "
                f"(last: {self.last_failure}); fix the cause and rerun to resume"
            )
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
        attrs = {"seed": seed, "worker": f"{socket.gethostname()}:{os.getpid()}",
                 TRIAL_ID_ATTR: trial.trial_id}  # fmt: skip
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
                attrs["resumed_from_keras_tuner_trial"] = earlier
                attrs["initial_epoch"] = initial
        try:
            results = self._executions(mirror, values, tags, warm)
        except BaseException as error:
            self.last_failure = reason = failure_reason(error)
            self._tell(mirror, None, {**attrs, "fail_reason": reason})
            if reason != "tracking_unreachable":
                self.failures_in_a_row += 1
            elif not isinstance(error, KeyboardInterrupt):
                try:
                    wait_for_tracking(self.options.tracking_wait, self.echo)
                except HpsearchError as lost:
                    self.fatal = lost  # the search stops before the next trial
            raise
        finally:
            release_trial_state()
        self.failures_in_a_row = 0
        metric = self.study.objective.metric
        value = float(np.mean([result.final_metrics()[metric] for _, result, _ in results]))
        maximize = self.study.objective.direction == "maximize"
        run_id, best, config = sorted(
            results, key=lambda item: item[1].final_metrics()[metric], reverse=maximize
        )[0]
        if self.study.sampler.type == "hyperband":
            path = self._trial_path(trial.trial_id) / WEIGHTS
            np.savez(path, *best.model.get_weights())
        attrs.update(
            mlflow_run_id=run_id,
            config=config.model_dump(mode="json"),
            seed=config.seed,
            epochs_run=sum(result.epochs_run for _, result, _ in results),
            best_epoch=best.best_epoch + int(attrs.get("initial_epoch", 0)),
            wall_time_s=sum(result.wall_time_s for _, result, _ in results),
            fit_time_s=sum(result.fit_time_s for _, result, _ in results),
            repeat=0,
            kept_val_accuracy=best.kept_val_accuracy,
            **best.test_metrics,  # evaluate_test: the best execution's kept weights, once
        )
        if len(results) > 1:  # the best execution's run, config and seed stand for the trial
            attrs["mlflow_run_ids"] = [run for run, _, _ in results]
        self._tell(mirror, value, attrs, best.history.get(EPOCH_METRIC[metric]))
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
            with TrialRun(self.study.name, name, run_tags, self.parent.run_id) as run:
                if execution == 0:
                    mirror.set_user_attr("mlflow_run_id", run.run_id)
                config = make_config({**values, "seed": seed}, f"trial {mirror.number}")
                if execution == 0:
                    mirror.set_user_attr("config", config.model_dump(mode="json"))
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

    def _tell(self, mirror: optuna.Trial, value, attrs: dict, curve=None) -> None:
        for key, item in attrs.items():
            mirror.set_user_attr(key, item)
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


# --- the search -------------------------------------------------------------------------------


def open_mirror(spec: StudyFile, storage: str) -> tuple[optuna.Study, bool]:
    """The Optuna study the KerasTuner trials are mirrored into; True when it is new."""
    store = make_storage(storage, WorkerOptions(heartbeat=0))
    sampler = optuna.samplers.RandomSampler(seed=spec.sampler.seed)  # unused: params are fixed
    direction = spec.objective.direction
    try:
        study = optuna.create_study(
            study_name=spec.name, storage=store, direction=direction, sampler=sampler
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=spec.name, storage=store, sampler=sampler)
        created = False
    engine = study.user_attrs.get(ENGINE_ATTR, "optuna")
    if not created and engine != ENGINE and study.get_trials(deepcopy=False):
        raise HpsearchError(
            f"study {spec.name!r} in {hide_password(storage)} was run by the optuna engine; "
            "give the keras_tuner study another name, or use another --storage"
        )
    study.set_user_attr(ENGINE_ATTR, ENGINE)
    return study, created or PARENT_ATTR not in study.user_attrs


def _reap_lost_trials(study: optuna.Study) -> None:
    """Trials left RUNNING by a process that died: FAIL them and close their MLflow runs."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            close_lost_run(run_id)
        from hpsearch.optuna_compat import study_storage, trial_id

        study_storage(study).set_trial_user_attr(trial_id(trial), "fail_reason", "worker_lost")
        study.tell(trial.number, state=TrialState.FAIL)


def run_search(
    spec: StudyFile,
    storage: str,
    n_trials: int | None = None,
    timeout: float | None = None,
    echo: Callable[[str], None] = print,
    verbose: int = 2,
    options: WorkerOptions | None = None,
) -> SearchOutcome:
    """Run (or resume) a keras_tuner study until its total, the hyperband schedule or timeout."""
    options = options or WorkerOptions(heartbeat=0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    redact_logs("optuna", "mlflow")
    study, created = open_mirror(spec, storage)
    _reap_lost_trials(study)
    with quiet_progress(verbose == 0):  # decoding an archive: no progress under -q
        splits, fingerprint = load_splits(spec.data)
    parent = find_parent(study, spec, storage, created)
    folder = project_dir(storage, spec.name)
    if not (folder / "oracle.json").exists() and study.user_attrs.get("keras_tuner_project"):
        echo(f"[{spec.name}] no KerasTuner project at {folder}: starting a new one in the study")
    study.set_user_attr("keras_tuner_project", str(folder.resolve()))
    _tag_parent(parent, {"hpsearch.engine": ENGINE, "keras_tuner.project_dir": str(folder),
                         "keras_tuner.tuner": spec.sampler.type})  # fmt: skip
    total = n_trials or spec.n_trials
    limit = timeout or spec.timeout
    deadline = time.monotonic() + limit if limit else None
    interrupted = False
    tuner = None
    try:
        tuner = TrackedTuner(spec, study, parent, splits, fingerprint, total, deadline, echo,
                             verbose, options, folder)  # fmt: skip
        count = tuner.left()
        left = "trials until its schedule ends" if count is None else f"{count} of {total} left"
        echo(
            f"[{spec.name}] {'resuming' if tuner.oracle.trials else 'starting'} with KerasTuner "
            f"({spec.sampler.type}): {left}{f', timeout {limit:g}s' if limit else ''}; "
            f"{len(splits.x_train)} training images; storage {hide_password(storage)}; "
            f"project {folder}"
        )
        with contextlib.suppress(_Stop), tuner.progress.bar(study):
            tuner.search(verbose=1 if verbose else 0)
        if tuner.fatal is not None:
            raise tuner.fatal
    except KeyboardInterrupt:
        interrupted = True
        if tuner is not None:
            with contextlib.suppress(Exception):
                tuner.save()  # the cut trial stays ongoing: KerasTuner retries it on resume
    finally:
        finish_parent(study, parent, "KILLED" if interrupted else "FINISHED")
    return _outcome(study, parent, interrupted)


def _tag_parent(parent: StudyRun, tags: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="hpsearch-tags-") as empty:
        parent.log_summary({}, tags, Path(empty))

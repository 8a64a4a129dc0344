"""The Optuna engine: Optuna's samplers propose, each trial a nested MLflow run.

Inside the lifecycle of :mod:`hpsearch.search.lifecycle`: opens (or joins) the Optuna study
with the study file's sampler and pruner, runs each proposed config through
:func:`~hpsearch.tracking.trial.tracked_trial`, reports epochs to the pruner, and records the
trial on Optuna (:class:`~hpsearch.records.TrialRecord`). Several processes may share the study
(``hpsearch worker``): each takes trials until the total is reached. A trial's artifacts go up
on a background thread while the next one trains, their figures drawn in another process.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from typing import Any

import keras
import optuna
from optuna.trial import TrialState

from hpsearch.compat import grid_exhausted
from hpsearch.config import make_config
from hpsearch.errors import failure_reason
from hpsearch.figures.drawing import DrawingProcess
from hpsearch.records import TrialRecord
from hpsearch.search.lifecycle import Engine, Search, trial_seed
from hpsearch.search.lost_trials import (
    LOST,
    SETTLING,
    StaleTrialReaper,
    fail_lost_trials,
    mend_interrupted_run,
    process_start,
    run_again,
)
from hpsearch.search.samplers import make_pruner, make_sampler
from hpsearch.search.space import REPEAT, SearchSpace
from hpsearch.search.storage import make_storage
from hpsearch.search.study_file import EPOCH_METRIC, StudyFile
from hpsearch.search.study_progress import StudyProgress
from hpsearch.tracking import TrialRun, ValidationData, close_unclosed_runs
from hpsearch.tracking.trial import tracked_trial
from hpsearch.tracking.uploads import Uploader
from hpsearch.training.session import release_trial_state
from hpsearch.util import failpoints

# Heartbeats and stale-trial retries are marked experimental in Optuna; they are what we use.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

UPLOAD_WAIT_S = 300.0  # at the end, wait this long for the last background uploads
WAIT_POLL_S = 5.0  # while the study's last trials run elsewhere, look again this often


def open_study(
    spec: StudyFile,
    space: SearchSpace,
    storage: optuna.storages.BaseStorage,
    worker: int | str | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists; True when this process created it.

    ``space``: the study's (:meth:`SearchSpace.of`); ``worker``: this process's identity
    among several workers (seeds its sampler).
    """
    settings: dict[str, Any] = {
        "sampler": make_sampler(spec.sampler, space, worker),
        "pruner": make_pruner(spec.pruner, space),
    }
    try:
        study = optuna.create_study(
            study_name=spec.name, storage=storage, direction=spec.objective.direction, **settings
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=spec.name, storage=storage, **settings), False


def trials_left(study: optuna.Study, total: int | None) -> int | None:
    """What is left of the study's ``total`` (:meth:`SearchSpace.total`); failed trials do
    not count."""
    if total is None:
        return None
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    return max(0, total - done)


class OptunaEngine(Engine):
    """Optuna's samplers and pruners; any number of processes on one storage."""

    name = "optuna"

    def open_study(self) -> tuple[optuna.Study, bool]:
        search = self.search
        self.total = search.space.total(search.n_trials or search.spec.n_trials)
        storage = make_storage(search.storage_url, search.options)
        return open_study(search.spec, search.space, storage, search.options.worker)

    def announce(self, created: bool) -> str:
        search = self.search
        running = len(search.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        return (
            f"[{search.spec.name}] {'starting' if created else 'resuming'}: "
            f"{trials_left(search.study, self.total)} of {self.total or 'unlimited'} trials left"
            f"{f' ({running} running in other workers)' if running else ''}"
        )

    def run(self) -> None:
        search = self.search
        self.objective = _Objective(search)
        _run_trials(search, self.total, self.objective)

    def finishing(self, interrupted: bool) -> None:
        if hasattr(self, "objective"):
            self.objective.uploader.go()  # the last uploads run while the summary is drawn

    def before_logging(self) -> None:
        if hasattr(self, "objective"):
            _finish_uploads(self.objective, self.search.warn)

    def close(self, interrupted: bool) -> None:
        if not hasattr(self, "objective"):
            return
        _finish_uploads(self.objective, self.search.warn)  # at once when done already
        self.objective.drawer.close()
        if interrupted:
            mend_interrupted_run(self.search.study, self.objective.last_run)


class _UploadsDuringFit(keras.callbacks.Callback):
    """Lets background uploads run only while ``fit`` trains past its first epoch.

    The main thread then spends its time in the framework's kernels, without
    the GIL; run anywhere else (tracing, between trials, building the next
    model) the uploads would compete with it for the interpreter. Held again
    at each epoch's end, before the pruner and the epoch logger run.
    """

    def __init__(self, uploader: Uploader) -> None:
        super().__init__()
        self.uploader = uploader
        self.epochs = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch >= 1:
            self.uploader.go()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.uploader.hold()
        self.epochs += 1

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.epochs <= 1:  # a one-epoch trial: no later epoch to upload in
            self.uploader.go()


class _Objective:
    """Runs one proposed trial as a nested MLflow run and returns the objective value."""

    def __init__(self, search: Search) -> None:
        self.spec, self.space = search.spec, search.space
        self.splits, self.fingerprint = search.splits, search.fingerprint
        self.parent, self.verbose = search.parent.run_id, search.verbose
        self.extra_callbacks = search.extra_callbacks
        self.validation = ValidationData.of(self.splits, self.fingerprint)  # remakes the
        # figures of runs whose worker died before drawing them
        self.uploader = Uploader()  # artifacts go up while the next trial trains
        self.drawer = DrawingProcess()  # and their figures are drawn in another process
        self.last_run: tuple[int, str] | None = None  # (trial number, run id) of the last trial

    def __call__(self, trial: optuna.Trial) -> float:
        self.last_failure: str | None = None
        self.last_number = trial.number
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except BaseException as error:
            self.last_failure = failure_reason(error)
            TrialRecord(fail_reason=self.last_failure).write(trial)
            raise
        finally:
            self.uploader.hold()  # this trial's uploads wait for the next trial's second epoch
            release_trial_state()

    def _run(self, trial: optuna.Trial) -> float:
        values = self.space.suggest(trial)
        values["seed"] = trial_seed(self.spec.sampler.seed, trial.number)
        repeat = int(trial.params.get(REPEAT, TrialRecord.of(trial).repeat or 0))
        TrialRecord(
            seed=values["seed"],
            repeat=repeat,
            worker=f"{socket.gethostname()}:{os.getpid()}",
            worker_start=process_start(os.getpid()),
        ).write(trial)
        tags = {
            "optuna.study_name": self.spec.name,
            "optuna.trial_number": str(trial.number),
            "hpsearch.command": "search",
            "hpsearch.repeat": str(repeat),
        }
        name = f"trial-{trial.number:03d}"
        with TrialRun(self.spec.name, name, tags, self.parent, self.uploader, self.drawer) as run:
            self.last_run = (trial.number, run.run_id)
            TrialRecord(mlflow_run_id=run.run_id).write(trial)
            config = make_config(values, f"trial {trial.number}")
            TrialRecord(config=config.model_dump(mode="json")).write(trial)
            callbacks = [_UploadsDuringFit(self.uploader)]  # first: holds before the others
            callbacks += list(self.extra_callbacks(trial)) if self.extra_callbacks else []
            if self.spec.pruner.type != "none":
                from hpsearch.search.pruning import EpochPruningCallback

                monitor = EPOCH_METRIC[self.spec.objective.metric]
                callbacks.append(EpochPruningCallback(trial, monitor))
            if failpoints.enabled():
                callbacks.append(failpoints.EpochFailpoints(config.epochs))
            failpoints.reached("building")
            try:
                result = tracked_trial(
                    config, self.spec.data, self.splits, run, self.fingerprint,
                    callbacks, evaluate_test=self.spec.evaluate_test, verbose=self.verbose,
                )  # fmt: skip
            except optuna.TrialPruned:
                run.end("pruned")
                raise
        return self._record(trial, result)

    def _record(self, trial: optuna.Trial, result) -> float:
        """The finished trial's figures for Optuna (its run is closed as completed by now)."""
        TrialRecord(
            epochs_run=result.epochs_run,
            best_epoch=result.best_epoch,
            wall_time_s=result.wall_time_s,
            fit_time_s=result.fit_time_s,
            kept_val_accuracy=result.kept_val_accuracy,
            **result.test_metrics,  # evaluate_test: the kept weights' score
        ).write(trial)
        self._enqueue_repeats(trial)
        return result.final_metrics()[self.spec.objective.metric]

    def _enqueue_repeats(self, trial: optuna.Trial) -> None:
        """A sampled configuration's first training done: queue its other repeats.

        (A grid draws repeats as an axis of its own; other samplers propose each
        configuration once, and its repeats run the same params with new seeds.)
        """
        repeats = self.space.repeats
        if repeats == 1 or self.space.grid or TrialRecord.of(trial).repeat:
            return
        for repeat in range(1, repeats):
            trial.study.enqueue_trial(
                trial.params,
                user_attrs=TrialRecord(repeat=repeat, repeat_of=trial.number).to_attrs(),
            )


def _finish_uploads(objective: _Objective, echo: Callable[[str], None]) -> None:
    """Wait for the last trials' artifacts and run closings, then retry what failed
    (and finish what dead workers left in the spool)."""
    uploader = objective.uploader
    if not uploader.drain(2.0):  # say so only when it takes a while
        echo(f"waiting for {uploader.pending()} background upload(s) to finish")
        if not uploader.drain(UPLOAD_WAIT_S):
            echo(f"background uploads still running after {UPLOAD_WAIT_S:g}s; leaving them")
    close_unclosed_runs(objective.validation)


def _run_trials(search: Search, total: int | None, objective: _Objective) -> None:
    """One trial at a time while the study's total, this process's share and time allow.

    When all that is left of the total is running in other workers, wait for
    them: they finish, or fail (and are retried here) once found lost.
    """
    study, name, options = search.study, search.spec.name, search.options
    echo, warn, handler, deadline = search.echo, search.warn, search.handler, search.deadline
    progress = StudyProgress(total, echo)
    ran = 0
    waiting = False
    with StaleTrialReaper(study, options.heartbeat, handler), progress.bar(study):
        while True:
            with SETTLING:  # a lost trial failed here has its retry queued too
                fail_lost_trials(study, handler)
                done, running = _done_and_running(study)
            if total is not None and done >= total:
                break
            if options.max_trials is not None and ran >= options.max_trials:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if total is not None and done + running >= total:  # the rest runs elsewhere
                if options.heartbeat <= 0:
                    warn(
                        f"[{name}] {running} trial(s) still running in other workers; "
                        "without heartbeats a lost one is never failed: rerun once they end"
                    )
                    break
                if not waiting:
                    grace = options.grace or 4 * options.heartbeat
                    echo(
                        f"[{name}] waiting for {running} trial(s) running in other "
                        f"workers (one whose worker is lost is retried within {grace}s)"
                    )
                waiting = True
                time.sleep(min(WAIT_POLL_S, options.heartbeat))
                continue
            waiting = False
            if ran:
                if failpoints.armed("uploading"):  # stop in this upload, not some trials later
                    objective.uploader.drain(60.0)
                failpoints.reached("between_trials")
            close_unclosed_runs(objective.validation)
            try:
                study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress])
            except ValueError:  # "Cannot tell a FAIL trial": another worker failed it as lost
                mine = study.get_trials(deepcopy=False)[objective.last_number]
                if mine.state != TrialState.FAIL or TrialRecord.of(mine).fail_reason != LOST:
                    raise
                warn(f"[{name}] trial {mine.number} was failed as lost while it ran "
                     "(its heartbeat was late by more than --grace); its retry runs "
                     "instead")  # fmt: skip
            ran += 1
            if objective.last_failure == "tracking_unreachable":  # says nothing of the config
                failed = study.get_trials(deepcopy=False)[objective.last_number]
                run_again(study, failed, max_retry=options.max_retry)
                search.streak.after(objective.last_failure)  # waits for the server
                continue
            if search.streak.after(objective.last_failure):
                break
            if grid_exhausted(study):
                _warn_grid_points_lost(study, name, warn)
                break


def _warn_grid_points_lost(study: optuna.Study, name: str, warn: Callable) -> None:
    """Optuna's grid counts a failed point as visited: name each point that never completed."""
    trials = study.get_trials(deepcopy=False)
    ran = {_key(t.params) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    given_up: dict[tuple, optuna.trial.FrozenTrial] = {}
    for trial in trials:
        if trial.state == TrialState.FAIL and _key(trial.params) not in ran:
            given_up[_key(trial.params)] = trial  # the last failure of that point
    for trial in given_up.values():
        reason = TrialRecord.of(trial).fail_reason or "unknown"
        warn(f"[{name}] grid point {trial.params} did not complete: trial {trial.number} "
             f"failed ({reason}); the grid does not run a failed point again"
             + (" (raise --max-retry for lost workers)" if reason == "worker_lost" else ""))


def _key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _done_and_running(study: optuna.Study) -> tuple[int, int]:
    """Trials that count toward the total (completed, pruned), and those running elsewhere."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    done = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
    return done, states.count(TrialState.RUNNING)

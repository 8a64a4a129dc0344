"""The study driver (who proposes): an Optuna study over a study file's space.

Creates or resumes the Optuna study, opens (or reopens) the study's MLflow
parent run, runs each proposed config as a nested trial run, reports epochs
to the pruner, and writes the study summary on the parent run at the end.
Failed trials are recorded with their reason and the study goes on.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import keras
import optuna
from optuna.trial import TrialState

from hpsearch.config import make_config
from hpsearch.errors import HpsearchError, failure_reason
from hpsearch.figures.drawing import DrawingProcess
from hpsearch.optuna_compat import grid_exhausted, stale_trial_ids, study_storage
from hpsearch.search.samplers import make_pruner, make_sampler
from hpsearch.search.space import REPEAT, grid_size, suggest
from hpsearch.search.study_file import EPOCH_METRIC, StudyFile
from hpsearch.search.summary import completed, write_summary
from hpsearch.tracking import (
    StudyRun,
    TrialRun,
    ValidationData,
    close_lost_run,
    close_orphaned_run,
    close_unclosed_runs,
    link_project_run,
    mark_run_interrupted,
    wait_for_tracking,
    where_to_look,
)
from hpsearch.tracking.trial import load_splits, tracked_trial
from hpsearch.tracking.uploads import Uploader
from hpsearch.training.session import (
    freeze_startup_objects,
    release_trial_state,
    thaw_startup_objects,
)
from hpsearch.util import failpoints
from hpsearch.util.connections import default_storage  # noqa: F401 - where callers found it
from hpsearch.util.progress import StudyProgress, quiet_progress
from hpsearch.util.redact import hide_password, redact_logs

# Heartbeats and stale-trial retries are marked experimental in Optuna; they are what we use.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

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


def trial_seed(study_seed: int, number: int) -> int:
    """Per-trial seed: distinct per trial, the same for the same study seed and number."""
    return (study_seed * 1_000_003 + number * 7_919 + 1) % (2**31 - 1)


def trials_to_run(study: optuna.Study, spec: StudyFile, n_trials: int | None) -> int | None:
    """What is left of the study's total (grid: its size); failed trials do not count."""
    total = study_total(spec, n_trials)
    if total is None:
        return None
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    return max(0, total - done)


@dataclass
class WorkerOptions:
    """How a process takes part in a (possibly shared) study."""

    heartbeat: int = 30  # seconds between a running trial's heartbeats; 0: off
    grace: int | None = None  # a trial without heartbeat this long is failed (default 4x)
    max_retry: int = 2  # a trial failed by a lost worker is retried this often
    max_trials: int | None = None  # at most this many trials in this process
    tracking_wait: float = 300.0  # seconds to wait for an unreachable tracking server
    max_failures_in_a_row: int = 5  # then stop: something is wrong with every trial
    # who this process is among the study's workers: an index, or "host:pid"; it seeds the
    # sampler so that workers propose different points (None: the study's only process)
    worker: int | str | None = None


def make_storage(url: str, options: WorkerOptions) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage, with heartbeats and retries of trials whose worker died."""
    from hpsearch.util.connections import check_storage

    check_storage(url)
    kwargs: dict = {}
    if options.heartbeat > 0:
        kwargs = {
            "heartbeat_interval": options.heartbeat,
            "grace_period": options.grace or 4 * options.heartbeat,
            "heartbeat_stale_trial_callback": StaleTrialHandler(options.max_retry),
        }
    for attempt in range(3):
        try:
            storage = optuna.storages.RDBStorage(url, **kwargs)
            break
        except Exception as error:  # bad URL, unreachable database, missing driver
            message = str(error).splitlines()[0]
            if attempt < 2 and _lost_schema_race(message):
                time.sleep(1.0 + attempt)  # the other worker's tables are there now
                continue
            raise HpsearchError(f"storage {hide_password(url)}: {hide_password(message)}") from None
    if storage.engine.dialect.name == "sqlite":
        _write_ahead_log(storage.engine)
    # Optuna's schema checks left idle connections in the pool; a worker needs two (its
    # trials and its heartbeat), and a PostgreSQL server has about 100 for every worker
    storage.engine.dispose()
    return storage


def _lost_schema_race(message: str) -> bool:
    """Two workers started at once on a new storage both created Optuna's tables."""
    return any(sign in message for sign in (
        "UNIQUE constraint failed: alembic_version",  # SQLite
        "alembic_version_pkc",  # PostgreSQL: duplicate key
        "already exists",
    ))  # fmt: skip


def _write_ahead_log(engine) -> None:
    """SQLite in write-ahead-log mode, synced at checkpoints rather than at every commit.

    A trial makes a dozen small commits (ask, suggestions, user attributes, one
    report per epoch, tell); in SQLite's default rollback-journal mode each waits
    for the disk (47 ms of Optuna per trial; 27 ms in WAL mode). The database stays
    consistent if the process dies; a power cut can lose the last commits. Readers
    no longer block the writer, which helps several workers on one file. The mode
    is kept in the file: it leaves ``optuna.db-wal`` and ``optuna.db-shm`` beside
    it while the study is open, so the file needs a local disk, not a network share.
    """
    import sqlite3

    from sqlalchemy import event

    def pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # a no-op once the file is in WAL mode
            cursor.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError:  # locked by another worker mid-switch: default mode
            pass
        finally:
            cursor.close()

    event.listen(engine, "connect", pragmas)  # the caller disposes of the connections open now


class StaleTrialHandler:
    """Closes the MLflow run of a trial whose worker died, then has Optuna retry it."""

    def __init__(self, max_retry: int) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            close_lost_run(run_id)
        _close_orphaned_runs(study, trial.user_attrs.get("worker"))
        retry = copy.copy(trial)  # the retry copies the user attributes, not the failure's
        retry.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "fail_reason"}
        self.retry(study, retry)


LOST = "worker_lost"


def fail_lost_trials(
    study: optuna.Study, handler: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None
) -> list[int]:
    """Fail the RUNNING trials whose worker is gone; returns their numbers.

    A trial is lost when its worker process ran on this machine and no longer
    exists (found at once: see :func:`_worker_gone`), or when its heartbeat
    stopped for the grace period (any machine: Optuna's stale trials). Each gets
    ``fail_reason: worker_lost`` and then its FAIL state (a finished trial takes
    no attributes; a trial that finishes or is failed by another worker meanwhile
    is left alone), then ``handler`` (a :class:`StaleTrialHandler`: closes its
    MLflow run FAILED and queues its retry). Optuna's own check for stale trials
    at the start of each trial runs the storage's callback alone: a trial failed
    there in the instant between two of these checks lacks ``fail_reason``.
    """
    storage = study_storage(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    ids: set[int] = set()
    if getattr(storage, "get_heartbeat_interval", lambda: None)() is not None:
        ids.update(stale_trial_ids(storage, study_id))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _worker_gone(trial.user_attrs):
            ids.add(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    me = f"{socket.gethostname()}:{os.getpid()}"  # alive: its own trial is never lost
    ids -= {storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("worker") == me}  # fmt: skip
    failed = []
    for trial_id in sorted(ids):
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", LOST)
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished after all, or failed by another worker first
        trial = storage.get_trial(trial_id)
        failed.append(trial.number)
        if handler is not None:
            handler(study, trial)
    return failed


def _worker_gone(attrs: dict) -> bool:
    """Whether the process a trial's ``worker`` (``host:pid``) names is known to be dead.

    Only a process of this machine can be checked. With ``worker_start`` (Linux:
    the boot, PID namespace and start time of the process) recorded, a process
    that is gone, a zombie, or a new process that reuses the pid is dead, and a
    worker of another PID namespace (another container of the same host name)
    is left to the heartbeat. Without it (another system), ``os.kill(pid, 0)``
    decides, and a reused pid keeps the trial until its heartbeat goes stale:
    a wait, never a live trial failed.
    """
    host, _, pid_text = str(attrs.get("worker", "")).rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid, recorded = int(pid_text), attrs.get("worker_start")
    if recorded:
        here = _process_start(os.getpid())
        if here is None or recorded.rsplit("/", 1)[0] != here.rsplit("/", 1)[0]:
            return False  # another boot or PID namespace: not for this process to judge
        return _process_start(pid) != recorded
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's
        return False
    return False


def _process_start(pid: int) -> str | None:
    """``boot id/PID namespace/start time`` of a live process (Linux /proc); else None."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name: fields 3 on
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
        return None
    return f"{boot}/{namespace}/{fields[19]}"  # field 22: start time, ticks since boot


def _close_orphaned_runs(study: optuna.Study, worker: str | None) -> None:
    """Runs of a dead worker's last finished trials that its uploads never got to close."""
    if not worker:
        return
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=states)
        if t.user_attrs.get("worker") == worker and t.user_attrs.get("mlflow_run_id")
    ]
    for trial in sorted(done, key=lambda t: t.number)[-2:]:  # at most two can be pending
        outcome = "completed" if trial.state == TrialState.COMPLETE else "pruned"
        close_orphaned_run(trial.user_attrs["mlflow_run_id"], outcome)


def open_study(
    spec: StudyFile, storage: optuna.storages.BaseStorage, worker: int | str | None = None
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists; True when this process created it.

    ``worker``: this process's identity among several workers (seeds its sampler).
    """
    settings: dict[str, Any] = {"sampler": make_sampler(spec, worker), "pruner": make_pruner(spec)}
    try:
        study = optuna.create_study(
            study_name=spec.name, storage=storage, direction=spec.objective.direction, **settings
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=spec.name, storage=storage, **settings), False


def find_parent(study: optuna.Study, spec: StudyFile, storage_url: str, created: bool) -> StudyRun:
    """The study's MLflow parent run: made by the process that created the study."""
    run_id = study.user_attrs.get(PARENT_ATTR)
    waited = 0.0
    while run_id is None and not created and waited < 30:  # its creator is making it now
        time.sleep(1.0)
        waited += 1.0
        again = optuna.load_study(study_name=spec.name, storage=study_storage(study))
        run_id = again.user_attrs.get(PARENT_ATTR)
    parent = StudyRun(
        spec.name,
        run_id,
        tags={"optuna.study_name": spec.name, "hpsearch.storage": hide_password(storage_url)},
        params=_study_params(spec),
    )
    if parent.run_id != run_id:
        study.set_user_attr(PARENT_ATTR, parent.run_id)
        study.set_user_attr("data", spec.data.model_dump())
        study.set_user_attr("searched", spec.searched_keys())
        study.set_user_attr("repeats", spec.repeats)
        study.set_user_attr("objective", spec.objective.metric)
    link_project_run(parent, spec.name)
    return parent


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

    def __init__(self, spec, splits, fingerprint, parent, verbose, extra_callbacks) -> None:
        self.spec, self.splits, self.fingerprint = spec, splits, fingerprint
        self.validation = ValidationData.of(splits, fingerprint)  # remakes dead workers' figures
        self.parent, self.verbose, self.extra_callbacks = parent, verbose, extra_callbacks
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
            trial.set_user_attr("fail_reason", self.last_failure)
            raise
        finally:
            self.uploader.hold()  # this trial's uploads wait for the next trial's second epoch
            release_trial_state()

    def _run(self, trial: optuna.Trial) -> float:
        values = suggest(trial, self.spec)
        values["seed"] = trial_seed(self.spec.sampler.seed, trial.number)
        repeat = int(trial.params.get(REPEAT, trial.user_attrs.get("repeat", 0)))
        trial.set_user_attr("seed", values["seed"])
        trial.set_user_attr("repeat", repeat)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("worker_start", _process_start(os.getpid()))
        tags = {
            "optuna.study_name": self.spec.name,
            "optuna.trial_number": str(trial.number),
            "hpsearch.command": "search",
            "hpsearch.repeat": str(repeat),
        }
        name = f"trial-{trial.number:03d}"
        with TrialRun(self.spec.name, name, tags, self.parent, self.uploader, self.drawer) as run:
            self.last_run = (trial.number, run.run_id)
            trial.set_user_attr("mlflow_run_id", run.run_id)
            config = make_config(values, f"trial {trial.number}")
            trial.set_user_attr("config", config.model_dump(mode="json"))
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
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("wall_time_s", result.wall_time_s)
        trial.set_user_attr("fit_time_s", result.fit_time_s)
        trial.set_user_attr("kept_val_accuracy", result.kept_val_accuracy)
        for key, value in result.test_metrics.items():  # evaluate_test: the kept weights' score
            trial.set_user_attr(key, value)
        self._enqueue_repeats(trial)
        return result.final_metrics()[self.spec.objective.metric]

    def _enqueue_repeats(self, trial: optuna.Trial) -> None:
        """A sampled configuration's first training done: queue its other repeats.

        (A grid draws repeats as an axis of its own; other samplers propose each
        configuration once, and its repeats run the same params with new seeds.)
        """
        repeats = self.spec.repeats
        if repeats == 1 or self.spec.sampler.type == "grid" or trial.user_attrs.get("repeat"):
            return
        for repeat in range(1, repeats):
            trial.study.enqueue_trial(
                trial.params, user_attrs={"repeat": repeat, "repeat_of": trial.number}
            )


def run_search(
    spec: StudyFile,
    storage: str,
    n_trials: int | None = None,
    timeout: float | None = None,
    echo: Callable[[str], None] = print,
    verbose: int = 2,
    extra_callbacks: TrialCallbacks | None = None,
    options: WorkerOptions | None = None,
    warn: Callable[[str], None] | None = None,
) -> SearchOutcome:
    """Run (or resume, or join) the study until its trial total or the timeout is reached.

    Any number of processes may run this on the same storage: each takes trials
    until the study's total is reached (waiting for the last ones running
    elsewhere), and the last one to finish closes the parent run. The data are
    loaded before anything is written: bad data leave no study behind. ``warn``
    (default: ``echo``) gets what goes wrong on the way (the CLI: stderr).
    """
    options = options or WorkerOptions()
    warn = warn or echo
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    redact_logs("optuna", "mlflow")
    quiet_trial_failures()
    with quiet_progress(verbose == 0):  # decoding an archive: no progress under -q
        splits, fingerprint = load_splits(spec.data)  # bad data: nothing written yet
    study, created = open_study(spec, make_storage(storage, options), options.worker)
    parent = find_parent(study, spec, storage, created)
    total = study_total(spec, n_trials)
    handler = StaleTrialHandler(options.max_retry)
    fail_lost_trials(study, handler)  # a worker killed here a moment ago: its trial runs again
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    echo(
        f"[{spec.name}] {'starting' if created else 'resuming'}: "
        f"{trials_to_run(study, spec, n_trials)} of {total or 'unlimited'} trials left"
        f"{f' ({running} running in other workers)' if running else ''}"
        f"{f', timeout {timeout or spec.timeout:g}s' if (timeout or spec.timeout) else ''}; "
        f"{len(splits.x_train)} training images; storage {hide_password(storage)}"
    )
    objective = _Objective(spec, splits, fingerprint, parent.run_id, verbose, extra_callbacks)
    freeze_startup_objects()
    interrupted = False
    try:
        _run_trials(
            study, spec, objective, options, total, timeout or spec.timeout, echo, warn, handler
        )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        objective.uploader.go()  # the last uploads run while the summary is drawn
        status = "KILLED" if interrupted else "FINISHED"
        try:
            uploads = lambda: _finish_uploads(objective, warn)  # noqa: E731
            finish_parent(study, parent, status, before_logging=uploads, handler=handler)
        finally:
            _finish_uploads(objective, warn)  # at once when done already
            objective.drawer.close()
            if interrupted:
                _mend_interrupted_run(study, objective.last_run)
            thaw_startup_objects()
    return _outcome(study, parent, interrupted)


def _mend_interrupted_run(study: optuna.Study, last_run: tuple[int, str] | None) -> None:
    """Ctrl-C after a trial's run was closed as completed but before Optuna recorded it.

    Optuna then records the trial as failed (reason ``interrupted``); its run is
    marked the same way, so the two stores agree, and its configuration is queued
    to run again first: an interruption says nothing of the configuration, and
    Optuna's grid counts a failed point as visited, so a rerun would skip it. A
    trial left RUNNING because Optuna's own write was cut short is failed and
    retried through its stopped heartbeat, which also closes its run.
    """
    if last_run is None:
        return
    number, run_id = last_run
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is not None and trial.state == TrialState.FAIL:
        mark_run_interrupted(run_id)
        if trial.user_attrs.get("fail_reason") == "interrupted":
            run_again(study, trial, max_retry=None)


def run_again(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retry: int | None) -> None:
    """Queue a failed trial's configuration (a WAITING trial; at most ``max_retry`` times).

    For failures that say nothing of the configuration (interrupted, tracking
    server lost): Optuna's grid counts a failed point as visited.
    """
    retry = copy.copy(trial)  # the retry copies the user attributes, not the failure's
    retry.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "fail_reason"}
    optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)(study, retry)


UPLOAD_WAIT_S = 300.0


def _finish_uploads(objective: _Objective, echo: Callable[[str], None]) -> None:
    """Wait for the last trials' artifacts and run closings, then retry what failed
    (and finish what dead workers left in the spool)."""
    uploader = objective.uploader
    if not uploader.drain(2.0):  # say so only when it takes a while
        echo(f"waiting for {uploader.pending()} background upload(s) to finish")
        if not uploader.drain(UPLOAD_WAIT_S):
            echo(f"background uploads still running after {UPLOAD_WAIT_S:g}s; leaving them")
    close_unclosed_runs(objective.validation)


def study_total(spec: StudyFile, n_trials: int | None) -> int | None:
    """The study's total number of trials (grid: at most its size)."""
    total = n_trials or spec.n_trials
    if spec.sampler.type == "grid":
        return min(total or grid_size(spec), grid_size(spec))  # repeats are a grid axis
    return total * spec.repeats if total else total


WAIT_POLL_S = 5.0  # while the study's last trials run elsewhere, look again this often


def _run_trials(study, spec, objective, options, total, timeout, echo, warn, handler) -> None:
    """One trial at a time while the study's total, this process's share and time allow.

    When all that is left of the total is running in other workers, wait for
    them: they finish, or fail (and are retried here) once found lost.
    """
    deadline = time.monotonic() + timeout if timeout else None
    progress = StudyProgress(total, echo)
    ran = failures_in_a_row = 0
    waiting = False
    with StaleTrialReaper(study, options.heartbeat, handler), progress.bar(study):
        while True:
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
                        f"[{spec.name}] {running} trial(s) still running in other workers; "
                        "without heartbeats a lost one is never failed: rerun once they end"
                    )
                    break
                if not waiting:
                    grace = options.grace or 4 * options.heartbeat
                    echo(
                        f"[{spec.name}] waiting for {running} trial(s) running in other "
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
                if mine.state != TrialState.FAIL or mine.user_attrs.get("fail_reason") != LOST:
                    raise
                warn(f"[{spec.name}] trial {mine.number} was failed as lost while it ran "
                     "(its heartbeat was late by more than --grace); its retry runs "
                     "instead")  # fmt: skip
            ran += 1
            if objective.last_failure == "tracking_unreachable":
                failed = study.get_trials(deepcopy=False)[objective.last_number]
                run_again(study, failed, max_retry=options.max_retry)
                wait_for_tracking(options.tracking_wait, warn)
                continue
            failures_in_a_row = failures_in_a_row + 1 if objective.last_failure else 0
            if failures_in_a_row >= options.max_failures_in_a_row:
                warn(
                    f"[{spec.name}] stopping: {failures_in_a_row} trials in a row failed "
                    f"(last: {objective.last_failure}); fix the cause and rerun to resume"
                )
                break
            if grid_exhausted(study):
                _warn_grid_points_lost(study, spec, warn)
                break


def _warn_grid_points_lost(study: optuna.Study, spec: StudyFile, warn: Callable) -> None:
    """Optuna's grid counts a failed point as visited: name each point that never completed."""
    trials = study.get_trials(deepcopy=False)
    ran = {_key(t.params) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    given_up: dict[tuple, optuna.trial.FrozenTrial] = {}
    for trial in trials:
        if trial.state == TrialState.FAIL and _key(trial.params) not in ran:
            given_up[_key(trial.params)] = trial  # the last failure of that point
    for trial in given_up.values():
        reason = trial.user_attrs.get("fail_reason", "unknown")
        warn(f"[{spec.name}] grid point {trial.params} did not complete: trial {trial.number} "
             f"failed ({reason}); the grid does not run a failed point again"
             + (" (raise --max-retry for lost workers)" if reason == "worker_lost" else ""))


def _key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _done_and_running(study: optuna.Study) -> tuple[int, int]:
    """Trials that count toward the total (completed, pruned), and those running elsewhere."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    done = states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED)
    return done, states.count(TrialState.RUNNING)


class _QuietTrialFailures(logging.Filter):
    """Optuna's warning about a failed (or interrupted) trial, in one line.

    Optuna logs each one with the exception's traceback and a second line
    ("failed with value None"); hpsearch prints its own line per trial with the
    reason and records the error's text on the trial's run. The error's text
    stays on Optuna's line; ``HPSEARCH_TRACEBACKS=1`` keeps the tracebacks.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Trial ") and message.endswith(" failed with value None."):
            return False
        if record.exc_info and not os.environ.get("HPSEARCH_TRACEBACKS"):
            record.exc_info = record.exc_text = None
        return True


def quiet_trial_failures() -> None:
    """Install :class:`_QuietTrialFailures` on Optuna's log handlers (once)."""
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _QuietTrialFailures) for f in handler.filters):
            handler.addFilter(_QuietTrialFailures())


def finish_parent(
    study: optuna.Study,
    parent: StudyRun,
    status: str,
    before_logging: Callable[[], None] | None = None,
    handler: StaleTrialHandler | None = None,
) -> None:
    """Write the summary; close the parent run unless other workers are still running.

    ``before_logging`` runs between drawing the summary and logging it (the driver
    waits there for its last background uploads, which ran meanwhile). Lost
    trials are failed first, through ``handler`` (default: one with 2 retries).
    """
    fail_lost_trials(study, handler or StaleTrialHandler(WorkerOptions.max_retry))
    _log_summary(study, parent, before_logging)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if status != "FINISHED" or not running:
        parent.close(status)


class StaleTrialReaper:
    """Fails lost workers' trials (:func:`fail_lost_trials`) every ``interval`` seconds.

    Optuna checks for stale trials only when a worker starts a trial; this thread
    makes a lost worker's trial FAIL (and be retried) within the grace period even
    while every other worker is busy in a long trial.
    """

    def __init__(
        self, study: optuna.Study, interval: float, handler: StaleTrialHandler | None = None
    ) -> None:
        self.study, self.interval, self.handler = study, interval, handler
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="stale-trials", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a transient storage error must not kill it
                fail_lost_trials(self.study, self.handler)

    def __enter__(self) -> StaleTrialReaper:
        if self.interval > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()


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


def _log_summary(
    study: optuna.Study, parent: StudyRun, before_logging: Callable[[], None] | None = None
) -> None:
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    if completed(study):
        best = study.best_trial
        metrics = {"best_value": cast(float, best.value), "best_trial_number": best.number}
        tags = {
            "best_trial_number": str(best.number),
            "best_run_id": best.user_attrs.get("mlflow_run_id", ""),
        }
    with tempfile.TemporaryDirectory(prefix="hpsearch-study-") as tmp:
        write_summary(study, Path(tmp))
        if before_logging is not None:
            before_logging()
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

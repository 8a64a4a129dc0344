"""Trials whose worker died: found (dead process, or stopped heartbeat), failed, their runs
closed, their configurations run again."""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpsearch.compat import stale_trial_ids, study_storage
from hpsearch.records import TrialRecord
from hpsearch.tracking import close_lost_run, close_orphaned_run, mark_run_interrupted

LOST = "worker_lost"  # the fail_reason of a trial whose worker is gone


class StaleTrialHandler:
    """Closes the MLflow run of a trial whose worker died, then has Optuna retry it."""

    def __init__(self, max_retry: int) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        record = TrialRecord.of(trial)
        if record.mlflow_run_id:
            close_lost_run(record.mlflow_run_id)
        _close_orphaned_runs(study, record.worker)
        retry = copy.copy(trial)  # the retry copies the user attributes, not the failure's
        retry.user_attrs = record.without_failure()
        self.retry(study, retry)


#: Held while lost trials are failed and their retries queued: a trial loop that counts the
#: study's trials under it never sees a lost trial failed but its retry not queued yet (and
#: starts a new trial in the retry's place).
SETTLING = threading.RLock()


def fail_lost_trials(
    study: optuna.Study, handler: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None
) -> list[int]:
    """Fail the RUNNING trials whose worker is gone (see :func:`_fail_lost_trials`)."""
    with SETTLING:
        return _fail_lost_trials(study, handler)


def _fail_lost_trials(
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
        if _worker_gone(TrialRecord.of(trial)):
            ids.add(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    me = f"{socket.gethostname()}:{os.getpid()}"  # alive: its own trial is never lost
    ids -= {storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if TrialRecord.of(t).worker == me}  # fmt: skip
    failed = []
    for trial_id in sorted(ids):
        try:
            TrialRecord(fail_reason=LOST).write_to_storage(storage, trial_id)
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished after all, or failed by another worker first
        trial = storage.get_trial(trial_id)
        failed.append(trial.number)
        if handler is not None:
            handler(study, trial)
    return failed


def _worker_gone(record: TrialRecord) -> bool:
    """Whether the process a trial's ``worker`` (``host:pid``) names is known to be dead.

    Only a process of this machine can be checked. With ``worker_start`` (Linux:
    the boot, PID namespace and start time of the process) recorded, a process
    that is gone, a zombie, or a new process that reuses the pid is dead, and a
    worker of another PID namespace (another container of the same host name)
    is left to the heartbeat. Without it (another system), ``os.kill(pid, 0)``
    decides, and a reused pid keeps the trial until its heartbeat goes stale:
    a wait, never a live trial failed.
    """
    host, _, pid_text = str(record.worker or "").rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid, recorded = int(pid_text), record.worker_start
    if recorded:
        here = process_start(os.getpid())
        if here is None or recorded.rsplit("/", 1)[0] != here.rsplit("/", 1)[0]:
            return False  # another boot or PID namespace: not for this process to judge
        return process_start(pid) != recorded
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's
        return False
    return False


def process_start(pid: int) -> str | None:
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
        (t, record)
        for t in study.get_trials(deepcopy=False, states=states)
        if (record := TrialRecord.of(t)).worker == worker and record.mlflow_run_id
    ]
    for trial, record in sorted(done, key=lambda item: item[0].number)[-2:]:  # at most two
        outcome = "completed" if trial.state == TrialState.COMPLETE else "pruned"  # pending
        close_orphaned_run(str(record.mlflow_run_id), outcome)


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


def mend_interrupted_run(study: optuna.Study, last_run: tuple[int, str] | None) -> None:
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
        if TrialRecord.of(trial).fail_reason == "interrupted":
            run_again(study, trial, max_retry=None)


def run_again(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retry: int | None) -> None:
    """Queue a failed trial's configuration (a WAITING trial; at most ``max_retry`` times).

    For failures that say nothing of the configuration (interrupted, tracking
    server lost): Optuna's grid counts a failed point as visited.
    """
    retry = copy.copy(trial)  # the retry copies the user attributes, not the failure's
    retry.user_attrs = TrialRecord.of(trial).without_failure()
    optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)(study, retry)

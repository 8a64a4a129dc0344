"""The lifecycle of a search, the same for both engines; an engine only proposes and trains.

One process runs (or resumes, or joins) a study:

1. load the data (bad data: nothing written yet);
2. open the study's Optuna storage and study (:class:`Engine.open_study`; the KerasTuner
   engine mirrors its trials into an Optuna study, so readers see one kind of study);
3. find or open the study's MLflow parent run (:func:`find_parent`);
4. fail the trials of workers that died meanwhile (:class:`Engine.reap_lost`);
5. run trials (:meth:`Engine.run`), stopping after too many failures in a row or when the
   tracking server stays away (:class:`FailureStreak`, the one rule both engines follow);
6. whatever ended it (Ctrl-C included): write the study summary on the parent run, and close
   the parent run unless other workers still run trials (:func:`finish_parent`).

The engine is chosen in :mod:`hpsearch.search.engines`, from the study file.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

import optuna
from optuna.trial import TrialState

from hpsearch.compat import study_storage
from hpsearch.records import StudyRecord, TrialRecord
from hpsearch.search.lost_trials import StaleTrialHandler, fail_lost_trials
from hpsearch.search.options import WorkerOptions
from hpsearch.search.space import SearchSpace
from hpsearch.search.study_file import StudyFile
from hpsearch.search.summary import completed, write_summary
from hpsearch.tracking import StudyRun, link_project_run, wait_for_tracking, where_to_look
from hpsearch.tracking.trial import load_splits
from hpsearch.training.session import freeze_startup_objects, thaw_startup_objects
from hpsearch.util.progress import quiet_progress
from hpsearch.util.redact import hide_password, redact_logs

if TYPE_CHECKING:
    import keras

    from hpsearch.datasets import Splits

TrialCallbacks = Callable[[optuna.Trial], Sequence["keras.callbacks.Callback"]]


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


class FailureStreak:
    """When to stop, after each trial: the rule both engines follow.

    A trial that lost the tracking server says nothing of its configuration: wait for the
    server (bounded by ``tracking_wait``; :class:`~hpsearch.errors.HpsearchError` when it stays
    away) and go on, the streak unchanged. Any other failure adds to the streak, a success
    ends it; ``max_failures_in_a_row`` failures in a row stop the search: something is wrong
    with every trial, not with one configuration.
    """

    def __init__(self, study_name: str, options: WorkerOptions, warn: Callable[[str], None]):
        self.study_name, self.options, self.warn = study_name, options, warn
        self.count = 0
        self.last: str | None = None

    def after(self, reason: str | None) -> bool:
        """Record how a trial ended (``reason``: its failure's, None: it did not fail);
        True when the search should stop."""
        if reason == "tracking_unreachable":
            wait_for_tracking(self.options.tracking_wait, self.warn)
            return False
        self.count = self.count + 1 if reason else 0
        self.last = reason or self.last
        if self.count >= self.options.max_failures_in_a_row:
            self.warn(
                f"[{self.study_name}] stopping: {self.count} trials in a row failed "
                f"(last: {reason}); fix the cause and rerun to resume"
            )
            return True
        return False


@dataclass
class Search:
    """One process's run of a study: what the lifecycle set up, for the engine to use.

    ``space`` is made from ``spec`` once, here; ``deadline`` is set as the trials start.
    """

    spec: StudyFile
    storage_url: str
    options: WorkerOptions
    n_trials: int | None
    timeout: float | None
    echo: Callable[[str], None]
    warn: Callable[[str], None]
    verbose: int
    extra_callbacks: TrialCallbacks | None = None
    splits: Splits = cast("Splits", None)  # set once the data are loaded
    fingerprint: str = ""
    study: optuna.Study = cast(optuna.Study, None)  # set once the storage is open
    parent: StudyRun = cast(StudyRun, None)
    deadline: float | None = None  # when to stop starting trials (time.monotonic); None: never
    space: SearchSpace = field(init=False)
    handler: StaleTrialHandler = field(init=False)
    streak: FailureStreak = field(init=False)

    def __post_init__(self) -> None:
        self.space = SearchSpace.of(self.spec)
        self.handler = StaleTrialHandler(self.options.max_retry)
        self.streak = FailureStreak(self.spec.name, self.options, self.warn)

    @property
    def time_limit(self) -> float | None:
        return self.timeout or self.spec.timeout

    def announcement(self, engine_part: str) -> str:
        """What this process is about to run: the engine's part, then the time and data."""
        timeout = f", timeout {self.time_limit:g}s" if self.time_limit else ""
        return (f"{engine_part}{timeout}; {len(self.splits.x_train)} training images; "
                f"storage {hide_password(self.storage_url)}")  # fmt: skip


class Engine(ABC):
    """Who proposes and trains a study's trials, inside the lifecycle of :func:`run_search`."""

    name: ClassVar[str]

    def __init__(self, search: Search) -> None:
        self.search = search

    @classmethod
    def default_options(cls) -> WorkerOptions:
        return WorkerOptions()

    @abstractmethod
    def open_study(self) -> tuple[optuna.Study, bool]:
        """The study's Optuna study, and whether this process is the one to make its parent run."""

    def reap_lost(self) -> None:
        """Fail the trials of workers that died (and queue their retries)."""
        fail_lost_trials(self.search.study, self.search.handler)

    @abstractmethod
    def announce(self, created: bool) -> str:
        """What this process is about to run, as the engine sees it ("[study] starting: ...");
        the lifecycle adds the time limit and the data."""

    @abstractmethod
    def run(self) -> None:
        """Run trials until the study's total, the deadline or the failure rule says stop."""

    def finishing(self, interrupted: bool) -> None:
        """The trials are over (or cut short): before the summary is drawn."""
        return None

    def before_logging(self) -> None:
        """Between drawing the summary and logging it on the parent run."""
        return None

    def close(self, interrupted: bool) -> None:
        """After the parent run is finished, whatever happened."""
        return None


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

    The study file's ``engine`` runs the trials. Any number of processes may run an Optuna
    study on the same storage: each takes trials until the study's total is reached (waiting
    for the last ones running elsewhere), and the last one to finish closes the parent run.
    ``warn`` (default: ``echo``) gets what goes wrong on the way (the CLI: stderr).
    """
    from hpsearch.search.engines import check_engine, engine_class

    check_engine(spec.name, spec.engine, storage)  # before anything is written
    engine_type = engine_class(spec.engine)
    search = Search(spec, storage, options or engine_type.default_options(), n_trials, timeout,
                    echo, warn or echo, verbose, extra_callbacks)  # fmt: skip
    engine = engine_type(search)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    redact_logs("optuna", "mlflow")
    quiet_trial_failures()
    with quiet_progress(verbose == 0):  # decoding an archive: no progress under -q
        search.splits, search.fingerprint = load_splits(spec.data)  # bad data: nothing written
    search.study, created = engine.open_study()
    search.parent = find_parent(search.study, spec, storage, created, search.space.searched_keys())
    engine.reap_lost()  # a worker killed here a moment ago: its trial runs again
    echo(search.announcement(engine.announce(created)))
    freeze_startup_objects()
    interrupted = False
    try:
        limit = search.time_limit
        search.deadline = time.monotonic() + limit if limit else None
        engine.run()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        engine.finishing(interrupted)
        status = "KILLED" if interrupted else "FINISHED"
        try:
            finish_parent(search.study, search.parent, status, engine.before_logging,
                          search.handler)  # fmt: skip
        finally:
            engine.close(interrupted)
            thaw_startup_objects()
    return outcome(search.study, search.parent, interrupted)


def find_parent(
    study: optuna.Study, spec: StudyFile, storage_url: str, created: bool, searched: list[str]
) -> StudyRun:
    """The study's MLflow parent run: made by the process that created the study.

    ``searched``: the keys that vary between its trials (:meth:`SearchSpace.searched_keys`).
    """
    run_id = StudyRecord.of(study).mlflow_parent_run_id
    waited = 0.0
    while run_id is None and not created and waited < 30:  # its creator is making it now
        time.sleep(1.0)
        waited += 1.0
        again = optuna.load_study(study_name=spec.name, storage=study_storage(study))
        run_id = StudyRecord.of(again).mlflow_parent_run_id
    parent = StudyRun(
        spec.name,
        run_id,
        tags={"optuna.study_name": spec.name, "hpsearch.storage": hide_password(storage_url)},
        params=_study_params(spec),
    )
    if parent.run_id != run_id:
        StudyRecord(
            mlflow_parent_run_id=parent.run_id,
            data=spec.data.model_dump(),
            searched=searched,
            repeats=spec.repeats,
            objective=spec.objective.metric,
        ).write(study)
    link_project_run(parent, spec.name)
    return parent


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
            "best_run_id": TrialRecord.of(best).mlflow_run_id or "",
        }
    with tempfile.TemporaryDirectory(prefix="hpsearch-study-") as tmp:
        write_summary(study, Path(tmp))
        if before_logging is not None:
            before_logging()
        parent.log_summary(metrics, tags, Path(tmp))


def outcome(study: optuna.Study, parent: StudyRun, interrupted: bool) -> SearchOutcome:
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
        best_run_id=TrialRecord.of(best).mlflow_run_id if best else None,
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

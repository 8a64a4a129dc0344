"""Tracking: the only package that talks to MLflow.

Each module has one job:

- :mod:`~hpsearch.tracking.runs`: the run objects — a trial's run
  (:class:`TrialRun`, its per-epoch Keras callback), a study's parent run
  (:class:`StudyRun`), run-context tags, the tracking URI, experiments, links to
  the run ``mlflow run`` made;
- :mod:`~hpsearch.tracking.retries`: the MLflow calls that failed while the
  tracking server was away, kept and made again (:func:`close_unclosed_runs`),
  and the closing of runs whose trial ended elsewhere;
- :mod:`~hpsearch.tracking.spool`: the durable upload spool, where a finished
  trial's artifacts wait for upload, and the takeover of dead workers' entries;
- :mod:`~hpsearch.tracking.artifacts`: a trial's artifacts (figures, summary,
  model), made from the trial as it ends or again from a kept model;
- :mod:`~hpsearch.tracking.reading`: reading back what runs recorded;
- :mod:`~hpsearch.tracking.tags`: the tags hpsearch sets on runs;
- :mod:`~hpsearch.tracking.uploads`: the background thread artifacts are sent on;
- :mod:`~hpsearch.tracking.trial`: one tracked trial, runner and tracking together.

The names callers use are re-exported here.
"""

from hpsearch.tracking.artifacts import TRIAL_ARTIFACTS, ValidationData
from hpsearch.tracking.reading import (
    MissingArtifact,
    download_artifact,
    log_folder,
    metric_history,
    run_metrics,
)
from hpsearch.tracking.retries import (
    close_lost_run,
    close_orphaned_run,
    close_unclosed_runs,
    mark_run_interrupted,
    wait_for_tracking,
)
from hpsearch.tracking.runs import (
    EPOCH_METRICS,
    EpochLogger,
    StudyRun,
    TrialRun,
    context_tags,
    experiment_id,
    link_project_run,
    set_tracking_uri,
    where_to_look,
)
from hpsearch.tracking.spool import SPOOL_ENV, finish_spooled_uploads, spool_dir
from hpsearch.tracking.tags import INCOMPLETE_TAG, OUTCOME_TAG, REASON_TAG

__all__ = [
    "EPOCH_METRICS",
    "INCOMPLETE_TAG",
    "OUTCOME_TAG",
    "REASON_TAG",
    "SPOOL_ENV",
    "TRIAL_ARTIFACTS",
    "EpochLogger",
    "MissingArtifact",
    "StudyRun",
    "TrialRun",
    "ValidationData",
    "close_lost_run",
    "close_orphaned_run",
    "close_unclosed_runs",
    "context_tags",
    "download_artifact",
    "experiment_id",
    "finish_spooled_uploads",
    "link_project_run",
    "log_folder",
    "mark_run_interrupted",
    "metric_history",
    "run_metrics",
    "set_tracking_uri",
    "spool_dir",
    "wait_for_tracking",
    "where_to_look",
]

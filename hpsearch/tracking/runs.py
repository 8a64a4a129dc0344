"""Run objects: the MLflow runs of a study and of its trials, and where to find them.

A :class:`TrialRun` is one MLflow run for one trial: params at the start,
one batched metrics call per epoch (a Keras callback), final metrics and
artifacts at the end, and an outcome tag plus a terminal status whatever
ended it — no run is left RUNNING. A :class:`StudyRun` is a study's parent
run, reopened when the study resumes; under ``mlflow run`` it is the run
MLflow Projects made, or is linked to it (:func:`link_project_run`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np

from hpsearch.tracking import retries
from hpsearch.tracking.artifacts import ValidationData, _TrialArtifacts
from hpsearch.tracking.retries import _log_batch, _send_artifacts
from hpsearch.tracking.spool import _refresh_spooled, _spool
from hpsearch.tracking.tags import OUTCOME_TAG, REASON_TAG
from hpsearch.util.redact import hide_password

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from hpsearch.config import DataSpec, TrialConfig
    from hpsearch.datasets import Splits
    from hpsearch.figures.drawing import DrawingProcess
    from hpsearch.tracking.uploads import Uploader
    from hpsearch.training.runner import TrialResult

# Keras's per-epoch log names -> the MLflow metric each is logged as; the learning rate
# gets a name of its own, apart from the `learning_rate` param (None: the optimizer's default)
EPOCH_METRICS = {"loss": "loss", "accuracy": "accuracy", "val_loss": "val_loss",
                 "val_accuracy": "val_accuracy", "learning_rate": "epoch_learning_rate",
                 "sgd": "sgd"}  # fmt: skip

_EXPERIMENT_OF_RUN: dict[str, str] = {}  # parent run id -> its experiment id


@functools.cache
def context_tags() -> dict[str, str]:
    """MLflow's own run-context tags (user, source name and type, git commit), once a process.

    The git commit is that of the folder hpsearch runs in when MLflow finds none for the
    entry point (an installed ``hpsearch`` command is not in a repository).
    """
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.git_utils import get_git_branch, get_git_commit

    tags = dict(resolve_tags({}))
    if "mlflow.source.git.commit" not in tags:
        commit = get_git_commit(os.getcwd())
        if commit:
            tags["mlflow.source.git.commit"] = commit
            branch = get_git_branch(os.getcwd())
            if branch:
                tags["mlflow.source.git.branch"] = branch
    return tags


def set_tracking_uri(uri: str | None) -> str:
    """Use ``uri`` (else ``MLFLOW_TRACKING_URI``, else MLflow's local default); return it."""
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)
    return mlflow.get_tracking_uri()


# MLflow 3's UI opens an experiment in the view its kind names; without the tag it guesses,
# and an experiment of trial runs opened as a GenAI one (traces, no runs table)
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment ``name`` (created if missing), marked as a model-training experiment."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an older hpsearch, or by hand
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return experiment.experiment_id


def where_to_look(exp_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of a run or experiment, or the command that opens a local store."""
    import mlflow

    uri = hide_password(mlflow.get_tracking_uri())
    page = f"#/experiments/{exp_id}/runs" + (f"/{run_id}" if run_id else "")
    if uri.startswith(("http://", "https://")):
        return f"{re.sub(r'//[^/@]+@', '//', uri).rstrip('/')}/{page}"  # no credentials in links
    return f"run `mlflow ui --backend-store-uri {uri}` and open http://127.0.0.1:5000/{page}"


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's training/validation loss and accuracy and learning rate in one call."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        super().__init__()
        self.client, self.run_id = client, run_id

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(logged, float(logs[name]), now, epoch + 1)
            for name, logged in EPOCH_METRICS.items()
            if logs and name in logs
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
        _refresh_spooled()


class TrialRun:
    """One MLflow run for one trial; use as a context manager.

    With ``parent_run_id`` the run is nested under that run, in its experiment.
    With an ``uploader``, the artifacts are drawn and sent, and the run closed,
    on its background thread (in that order), while the caller goes on. With a
    ``drawer``, the two figures are drawn in its process (:mod:`hpsearch.figures.drawing`).
    """

    def __init__(
        self,
        experiment: str,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        uploader: Uploader | None = None,
        drawer: DrawingProcess | None = None,
    ) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.uploader, self.drawer = uploader, drawer
        tags = dict(tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
            if parent_run_id not in _EXPERIMENT_OF_RUN:
                run = self.client.get_run(parent_run_id)
                _EXPERIMENT_OF_RUN[parent_run_id] = run.info.experiment_id
            exp_id = _EXPERIMENT_OF_RUN[parent_run_id]
        else:
            exp_id = experiment_id(self.client, experiment)
        tags = {**context_tags(), **tags}
        run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
        self.run_id: str = run.info.run_id
        self.ended = False
        self.experiment_id: str = run.info.experiment_id

    def __enter__(self) -> TrialRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        if self.ended:
            return False
        if exc is None:
            self.end("completed")
        else:
            from hpsearch.errors import failure_reason

            interrupted = isinstance(exc, KeyboardInterrupt)
            status = "KILLED" if interrupted else "FAILED"
            self.end("failed", reason=failure_reason(exc), detail=str(exc), status=status)
        return False

    def end(
        self, outcome: str, reason: str | None = None, detail: str = "", status: str | None = None
    ) -> None:
        """Tag the outcome (completed, pruned, failed) and close the run.

        When the tracking server cannot be reached, the run is remembered and
        closed by :func:`close_unclosed_runs` once it can.
        """
        self.ended = True
        tags = {OUTCOME_TAG: outcome}
        if reason:
            tags[REASON_TAG] = reason
        if detail:
            tags["hpsearch.failure_detail"] = hide_password(detail[:4000])
        status = status or ("FAILED" if outcome == "failed" else "FINISHED")
        ended = int(time.time() * 1000)  # the trial's end, not its background uploads'
        self._later(f"close run {self.run_id}", retries.PENDING.close, self.client, self.run_id,
                    status, tags, ended)  # fmt: skip

    def _later(self, what: str, job, *args) -> None:
        """Run ``job(*args)`` on the uploader's thread when there is one, else now."""
        if self.uploader is None:
            job(*args)
        else:
            self.uploader.submit(what, lambda: job(*args))

    def log_params(self, params: Mapping[str, str], tags: Mapping[str, str] | None = None) -> None:
        """Params (and tags) in one call; on the uploader's thread when there is one."""
        from mlflow.entities import Param, RunTag

        batch = {
            "params": [Param(k, str(v)) for k, v in params.items()],
            "tags": [RunTag(k, str(v)) for k, v in (tags or {}).items()],
        }
        self._later(f"params of run {self.run_id}", _log_batch, self.client, self.run_id, batch)

    def log_dataset(self, spec: DataSpec, fingerprint: str, context: str = "training") -> None:
        """The trial's data as an MLflow dataset input (the runs table's Dataset column):
        its name, the data fingerprint as digest, and where it came from."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        source: dict[str, Any]
        if spec.data_dir:
            source_type, source = "local", {"uri": str(Path(spec.data_dir).expanduser().resolve())}
        else:  # a loader: scikit-learn's digits, Keras's downloads
            source_type, source = "code", {"tags": {"hpsearch.dataset": spec.dataset}}
        split = f"limit={spec.limit or 'all'}, validation={spec.validation_fraction:g}"
        entity = Dataset(name=f"{spec.dataset} ({split})", digest=fingerprint or "unknown",
                         source_type=source_type, source=json.dumps(source))  # fmt: skip
        inputs = [DatasetInput(entity, [InputTag("mlflow.data.context", context)])]
        self._later(f"dataset of run {self.run_id}", self.client.log_inputs, self.run_id, inputs)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
        )

    def log_artifacts(self, folder: Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder))

    def register_model(
        self,
        model: keras.Model,
        name: str,
        tags: Mapping[str, str],
        example: np.ndarray,
        metadata: Mapping[str, Any],
    ) -> str:
        """Log ``model`` as this run's MLflow model, register it as ``name``; the new version.

        With a signature and an input example of raw images (what ``mlflow models
        serve`` takes), and ``metadata`` (class names, input) in its MLmodel file.
        """
        import mlflow
        from mlflow.models import infer_signature

        signature = infer_signature(example, model.predict(example, verbose=0))
        with tempfile.TemporaryDirectory(prefix="hpsearch-mlmodel-") as tmp:
            # saved, then logged: mlflow.keras.log_model with an input example fails
            # (mlflow/mlflow#16183, open in 3.17: it writes the example before the folder)
            folder = Path(tmp) / "model"
            folder.mkdir()
            mlflow.keras.save_model(
                model,
                str(folder),
                signature=signature,
                input_example=example,
                metadata=dict(metadata),
                pip_requirements=[f"keras=={keras.__version__}"],
            )
            self.client.log_artifacts(self.run_id, str(folder), "model")
        registered = mlflow.register_model(f"runs:/{self.run_id}/model", name)
        version = str(registered.version)
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value))
        return version

    def epoch_logger(self) -> EpochLogger:
        return EpochLogger(self.client, self.run_id)

    def log_result(
        self, result: TrialResult, config: TrialConfig, splits: Splits, fingerprint: str = ""
    ) -> None:
        """Final metrics and the artifacts: curves, confusion matrix, summary, config, model.

        The model and config are first kept in the upload spool
        (:mod:`hpsearch.tracking.spool`), here and now, so the trial is never
        reported complete with its model only in memory; the rest is made and
        sent by :meth:`_later`.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = {k: float(v) for k, v in result.final_metrics().items()}
        metrics = [Metric(k, v, now, 0) for k, v in final.items()]
        self._later(f"metrics of run {self.run_id}", _log_batch, self.client, self.run_id,
                    {"metrics": metrics})  # fmt: skip
        artifacts = _TrialArtifacts.of(result, config, splits)
        folder = _spool(self.run_id, artifacts, final, ValidationData.of(splits, fingerprint).key())
        self._later(f"artifacts of run {self.run_id}", _send_artifacts, self.client,
                    self.run_id, folder, artifacts, self.drawer)  # fmt: skip


class StudyRun:
    """The parent run of a study: created once, reopened when the study resumes."""

    def __init__(
        self,
        experiment: str,
        run_id: str | None,
        tags: Mapping[str, str],
        params: Mapping[str, str],
    ) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        self.client = MlflowClient()
        self.resumed = False
        if run_id:
            try:
                run = self.client.get_run(run_id)
                self.client.update_run(run_id, status="RUNNING")
                self.resumed = True
            except MlflowException:
                run_id = None  # recorded on another tracking server: start a new parent
        if not run_id:
            exp_id = experiment_id(self.client, experiment)
            run = _project_run_in(self.client, exp_id)  # `mlflow run` made it: it is the parent
            if run is None:
                run = self.client.create_run(exp_id, run_name=experiment,
                                             tags={**context_tags(), **tags})  # fmt: skip
            given = run.data.params  # the project's parameters, when `mlflow run` made the run
            resolved = {(f"resolved_{k}" if given.get(k, str(v)) != str(v) else k): str(v)
                        for k, v in params.items()}  # fmt: skip
            self.client.log_batch(
                run.info.run_id,
                params=[Param(k, v) for k, v in resolved.items() if given.get(k) != v],
                tags=[RunTag(k, v) for k, v in {**tags, "mlflow.runName": experiment}.items()]
                + [RunTag("hpsearch.role", "study")],
            )
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id

    def log_summary(
        self, metrics: Mapping[str, float], tags: Mapping[str, str], folder: Path
    ) -> None:
        """Best-trial metrics and tags, and every file in ``folder`` as an artifact."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        self.client.log_artifacts(self.run_id, str(folder))

    def close(self, status: str = "FINISHED") -> None:
        retries.PENDING.close(self.client, self.run_id, status, {})


def _project_run_in(client: MlflowClient, exp_id: str):
    """The run ``mlflow run`` made for this process (``$MLFLOW_RUN_ID``), if it is in ``exp_id``."""
    from mlflow.exceptions import MlflowException

    project_run = os.environ.get("MLFLOW_RUN_ID")
    if not project_run:
        return None
    try:
        run = client.get_run(project_run)
    except MlflowException:
        return None
    return run if run.info.experiment_id == exp_id else None


def link_project_run(study: StudyRun, name: str) -> None:
    """Under ``mlflow run`` into another experiment (or for a study made earlier), link the run
    MLflow Projects made and the study's parent run both ways, with a note that says where
    the trials are and how to make the project run the parent itself."""
    project_run = os.environ.get("MLFLOW_RUN_ID")
    if not project_run or project_run == study.run_id:
        return
    client = study.client
    client.set_tag(study.run_id, "hpsearch.project_run_id", project_run)
    client.set_tag(project_run, "hpsearch.study_parent_run_id", study.run_id)
    client.set_tag(project_run, "mlflow.note.content", (
        f"This `mlflow run` ran the hpsearch study **{name}**. Its parent run and its trials "
        f"are in the experiment `{name}`: {where_to_look(study.experiment_id, study.run_id)}. "
        f"With `mlflow run ... --experiment-name {name}` this run is the study's parent run "
        "itself (for a new study)."))  # fmt: skip

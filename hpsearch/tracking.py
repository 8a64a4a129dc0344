"""Tracking: the only module that talks to MLflow.

A :class:`TrialRun` is one MLflow run for one trial: params at the start,
one batched metrics call per epoch (a Keras callback), final metrics and
artifacts at the end, and an outcome tag plus a terminal status whatever
ended it — no run is left RUNNING.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from hpsearch.connections import tracking_reachable
from hpsearch.redact import hide_password

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from hpsearch.config import TrialConfig
    from hpsearch.datasets import Splits
    from hpsearch.drawing import DrawingProcess
    from hpsearch.runner import TrialResult
    from hpsearch.uploads import Uploader

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "sgd")
OUTCOME_TAG = "hpsearch.outcome"  # completed | pruned | failed
REASON_TAG = "hpsearch.failure_reason"


def set_tracking_uri(uri: str | None) -> str:
    """Use ``uri`` (else ``MLFLOW_TRACKING_URI``, else MLflow's local default); return it."""
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)
    return mlflow.get_tracking_uri()


def experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name)


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
            Metric(name, float(logs[name]), now, epoch + 1)
            for name in EPOCH_METRICS
            if logs and name in logs
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)


class TrialRun:
    """One MLflow run for one trial; use as a context manager.

    With ``parent_run_id`` the run is nested under that run, in its experiment.
    With an ``uploader``, the artifacts are drawn and sent, and the run closed,
    on its background thread (in that order), while the caller goes on. With a
    ``drawer``, the two figures are drawn in its process (:mod:`hpsearch.drawing`).
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
        run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
        self.run_id: str = run.info.run_id
        self.ended = False
        self.experiment_id: str = run.info.experiment_id

    def __enter__(self) -> TrialRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
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
        self._later(f"close run {self.run_id}", _close, self.client, self.run_id, status, tags)

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

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
        )

    def log_artifacts(self, folder: Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder))

    def register_model(
        self, model: keras.Model, name: str, tags: Mapping[str, str], example: np.ndarray
    ) -> str:
        """Log ``model`` as this run's MLflow model, register it as ``name``; the new version."""
        import mlflow
        from mlflow.models import infer_signature

        signature = infer_signature(example, model.predict(example, verbose=0))
        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.keras.log_model(
                model,
                name="model",
                registered_model_name=name,
                signature=signature,
                pip_requirements=[f"keras=={keras.__version__}"],
            )
        version = str(info.registered_model_version)
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value))
        return version

    def epoch_logger(self) -> EpochLogger:
        return EpochLogger(self.client, self.run_id)

    def log_result(self, result: TrialResult, config: TrialConfig, splits: Splits) -> None:
        """Final metrics and the artifacts: curves, confusion matrix, summary, config, model."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in result.final_metrics().items()]
        self._later(f"metrics of run {self.run_id}", _log_batch, self.client, self.run_id,
                    {"metrics": metrics})  # fmt: skip
        folder = Path(tempfile.mkdtemp(prefix="hpsearch-"))
        artifacts = _TrialArtifacts.of(result, config, splits)
        self._later(f"artifacts of run {self.run_id}", _send_artifacts, self.client,
                    self.run_id, folder, artifacts, self.drawer)  # fmt: skip


_UNCLOSED: dict[str, tuple[str, dict[str, str]]] = {}  # run id -> (status, tags)
_UNSENT: dict[str, Path] = {}  # run id -> folder of artifacts whose upload failed
_UNLOGGED: dict[str, list[dict]] = {}  # run id -> log_batch arguments whose call failed
_EXPERIMENT_OF_RUN: dict[str, str] = {}  # parent run id -> its experiment id


def _log_batch(client: MlflowClient, run_id: str, batch: dict) -> None:
    """``client.log_batch(run_id, **batch)``; kept for a retry if that fails."""
    try:
        client.log_batch(run_id, **batch)
    except Exception:
        _UNLOGGED.setdefault(run_id, []).append(batch)  # sent again by close_unclosed_runs
        raise


def _drawn_here(function: Callable[..., Path], *args, **kwargs) -> Callable[[], Path]:
    """A figure drawn in this process now, in the shape of ``DrawingProcess.submit``'s answer."""
    path = function(*args, **kwargs)
    return lambda: path


def _send_artifacts(
    client: MlflowClient,
    run_id: str,
    folder: Path,
    artifacts: _TrialArtifacts,
    drawer: DrawingProcess | None,
) -> None:
    """Write the artifacts into ``folder`` and log them; kept for a retry if that fails."""
    try:
        artifacts.write(folder, drawer)
        client.log_artifacts(run_id, str(folder))
    except Exception:
        _UNSENT[run_id] = folder  # sent again by close_unclosed_runs
        raise
    shutil.rmtree(folder, ignore_errors=True)


def _close(client: MlflowClient, run_id: str, status: str, tags: Mapping[str, str]) -> None:
    from mlflow.entities import RunTag

    try:
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        client.set_terminated(run_id, status)
        _UNCLOSED.pop(run_id, None)
    except Exception:  # noqa: BLE001 - the server is away: close it when it is back
        _UNCLOSED[run_id] = (status, dict(tags))


def close_unclosed_runs() -> int:
    """Close the runs whose closing failed earlier; returns how many are still open."""
    from mlflow import MlflowClient

    if _UNSENT or _UNCLOSED or _UNLOGGED:
        client = MlflowClient()
        for run_id, batches in list(_UNLOGGED.items()):
            try:
                while batches:
                    client.log_batch(run_id, **batches[0])
                    batches.pop(0)
            except Exception:  # noqa: BLE001 - still away: try again next time
                continue
            _UNLOGGED.pop(run_id, None)
        for run_id, folder in list(_UNSENT.items()):
            try:
                client.log_artifacts(run_id, str(folder))
            except Exception:  # noqa: BLE001 - still away: try again next time
                continue
            _UNSENT.pop(run_id, None)
            shutil.rmtree(folder, ignore_errors=True)
        for run_id, (status, tags) in list(_UNCLOSED.items()):
            _close(client, run_id, status, tags)
    return len(_UNCLOSED)


def close_lost_run(run_id: str) -> None:
    """Close the run of a trial whose worker died (its heartbeat stopped)."""
    from mlflow import MlflowClient

    tags = {OUTCOME_TAG: "failed", REASON_TAG: "worker_lost"}
    _close(MlflowClient(), run_id, "FAILED", tags)


def mark_run_interrupted(run_id: str) -> None:
    """Mark as interrupted a run closed as completed whose trial Optuna records as failed."""
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        if client.get_run(run_id).data.tags.get(OUTCOME_TAG) != "completed":
            return  # closed as failed or pruned: already what Optuna says
    except Exception:  # noqa: BLE001 - unknown run or server away: nothing to mend now
        return
    _close(client, run_id, "KILLED", {OUTCOME_TAG: "failed", REASON_TAG: "interrupted"})


def close_orphaned_run(run_id: str, outcome: str) -> None:
    """Close a finished trial's run left RUNNING by a worker that died before closing it."""
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        if client.get_run(run_id).info.status != "RUNNING":
            return
    except Exception:  # noqa: BLE001 - unknown run or server away: nothing to close now
        return
    tags = {OUTCOME_TAG: outcome, "hpsearch.artifacts_incomplete": "true"}
    _close(client, run_id, "FINISHED", tags)


def wait_for_tracking(limit_s: float, echo) -> None:
    """After a trial lost the tracking server: wait for it (bounded), then close open runs."""
    import mlflow

    from hpsearch.errors import HpsearchError

    raw = mlflow.get_tracking_uri()
    uri = hide_password(raw)
    deadline = time.monotonic() + limit_s
    if not tracking_reachable(raw):
        echo(f"MLflow tracking server {uri} unreachable; waiting up to {limit_s:g}s for it")
    while not tracking_reachable(raw):
        if time.monotonic() >= deadline:
            raise HpsearchError(
                f"MLflow tracking server {uri} unreachable for {limit_s:g}s; stopping. "
                "Everything recorded so far is kept: run the same command to resume."
            )
        time.sleep(2.0)
    close_unclosed_runs()


def download_artifact(run_id: str, path: str, destination: Path) -> Path:
    """Copy one artifact of a run to ``destination`` (a file path)."""
    import shutil

    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="hpsearch-download-") as tmp:
        local = MlflowClient().download_artifacts(run_id, path, tmp)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, destination)
    return destination


def log_folder(run_id: str, folder: Path, artifact_path: str) -> None:
    from mlflow import MlflowClient

    MlflowClient().log_artifacts(run_id, str(folder), artifact_path)


def run_metrics(run_id: str) -> dict[str, float]:
    from mlflow import MlflowClient

    return dict(MlflowClient().get_run(run_id).data.metrics)


def metric_history(run_id: str, name: str) -> list[float]:
    from mlflow import MlflowClient

    history = MlflowClient().get_metric_history(run_id, name)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


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
            run = self.client.create_run(exp_id, run_name=experiment, tags=dict(tags))
            self.client.log_batch(
                run.info.run_id,
                params=[Param(k, str(v)) for k, v in params.items()],
                tags=[RunTag("hpsearch.role", "study")],
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
        _close(self.client, self.run_id, status, {})


def link_project_run(study_run_id: str) -> None:
    """Under ``mlflow run``, point the run MLflow Projects made at the study's parent run."""
    project_run = os.environ.get("MLFLOW_RUN_ID")
    if project_run and project_run != study_run_id:
        from mlflow import MlflowClient

        MlflowClient().set_tag(project_run, "hpsearch.study_parent_run_id", study_run_id)


@dataclass
class _TrialArtifacts:
    """What a trial's artifacts are made of, taken from the trial as it ends.

    The validation predictions behind the confusion matrix are made, the
    figures drawn and the files written from this, possibly on the uploader's
    thread while the next trial already trains.
    """

    history: dict[str, list[float]]
    val_images: np.ndarray
    val_labels: np.ndarray
    class_names: tuple[str, ...]
    best_epoch: int
    config_yaml: str
    model: keras.Model  # the trained model, augmentation layers included (its summary)
    network: keras.Model  # the inference network, augmentation layers removed

    @classmethod
    def of(cls, result: TrialResult, config: TrialConfig, splits: Splits) -> _TrialArtifacts:
        from hpsearch.builder import inference_model

        return cls(
            history=result.history,
            val_images=splits.x_val,
            val_labels=splits.y_val,
            class_names=tuple(splits.class_names),
            best_epoch=result.best_epoch,
            config_yaml=config.to_yaml(),
            model=result.model,
            network=inference_model(result.model, config),
        )

    def write(self, folder: Path, drawer: DrawingProcess | None = None) -> list[Path]:
        """Curves, validation confusion matrix, model summary, config, model.

        The two figures are drawn by ``drawer`` when there is one, else here;
        the model is saved while the drawing process draws them.
        """
        from hpsearch.plots import save_confusion_matrix, save_training_curves
        from hpsearch.runner import predict

        submit = drawer.submit if drawer is not None else _drawn_here
        predicted = np.argmax(predict(self.network, self.val_images), axis=1)  # the kept weights
        matrix = submit(  # the larger request first, while the drawing process is idle
            save_confusion_matrix,
            self.val_labels,
            predicted,
            self.class_names,
            folder / "confusion_matrix.png",
            title=f"validation (best epoch {self.best_epoch})",
        )
        curves = submit(save_training_curves, self.history, folder / "training_curves.png")
        summary = io.StringIO()
        self.model.summary(print_fn=lambda line, **_: summary.write(line + "\n"))
        (folder / "model_summary.txt").write_text(summary.getvalue())
        (folder / "config.yaml").write_text(self.config_yaml)
        self.network.save(folder / "model.keras")
        return [
            curves(),
            matrix(),
            folder / "model_summary.txt",
            folder / "config.yaml",
            folder / "model.keras",
        ]

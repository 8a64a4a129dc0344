"""Tracking: the only module that talks to MLflow.

A :class:`TrialRun` is one MLflow run for one trial: params at the start,
one batched metrics call per epoch (a Keras callback), final metrics and
artifacts at the end, and an outcome tag plus a terminal status whatever
ended it — no run is left RUNNING.

The upload spool. A finished trial's artifacts are uploaded on a background
thread while the next trial trains; a worker killed meanwhile would lose them.
So before the trial is reported complete, :meth:`TrialRun.log_result` saves
its ``model.keras`` and ``config.yaml`` into ``<spool>/<run id>/artifacts/``
and writes ``<spool>/<run id>/run.json`` (run id, tracking URI without its
password, owner ``host:pid``, what is left to do: ``upload``, ``close``, and
the final metrics and history to log and draw again) — about 30-100 ms per
trial for a small CNN on a busy 2-core CPU, on the training thread. The
background job adds the figures and the summary, uploads the folder and
removes the entry once the run is also closed.

Where: ``$HPSEARCH_SPOOL_DIR``, else ``hpsearch-spool`` beside a local MLflow
store (the folder of ``sqlite:///…/mlflow.db`` or of a ``mlruns`` folder),
else ``~/.cache/hpsearch/spool`` (``$XDG_CACHE_HOME``) for a tracking server.
Entries are per run id, so workers on one machine share a spool safely.

Who finishes an entry: its owner, which holds an exclusive ``flock`` on the
entry's ``lock`` file for as long as the entry is its own. The kernel lets go
of that lock when the owner dies (kill -9 included), so any other process that
gets it knows the owner is gone: :func:`finish_spooled_uploads` (run by
:func:`close_unclosed_runs`, so at a search's start and before every trial)
takes over such entries of the current tracking URI — uploads, logs the final
metrics, closes the run as the manifest says, and removes the entry. An
entry written on another host (a spool on a shared disk, where locks may not
reach across hosts) is taken over only once its manifest is 10 minutes old;
owners touch their manifests while they train. Without ``fcntl`` (Windows)
entries are finished by their owner only.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import keras
import numpy as np

from hpsearch.errors import HpsearchError
from hpsearch.util import failpoints
from hpsearch.util.connections import tracking_reachable
from hpsearch.util.redact import hide_password

try:
    import fcntl
except ImportError:  # Windows: no takeover of a dead worker's spool entries
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from hpsearch.config import DataSpec, TrialConfig
    from hpsearch.datasets import Splits
    from hpsearch.figures.drawing import DrawingProcess
    from hpsearch.tracking.uploads import Uploader
    from hpsearch.training.runner import TrialResult

log = logging.getLogger(__name__)

# Keras's per-epoch log names -> the MLflow metric each is logged as; the learning rate
# gets a name of its own, apart from the `learning_rate` param (None: the optimizer's default)
EPOCH_METRICS = {"loss": "loss", "accuracy": "accuracy", "val_loss": "val_loss",
                 "val_accuracy": "val_accuracy", "learning_rate": "epoch_learning_rate",
                 "sgd": "sgd"}  # fmt: skip
OUTCOME_TAG = "hpsearch.outcome"  # completed | pruned | failed
REASON_TAG = "hpsearch.failure_reason"
INCOMPLETE_TAG = "hpsearch.artifacts_incomplete"  # "true" (unknown) or the missing files
TRIAL_ARTIFACTS = (
    "training_curves.png",
    "confusion_matrix.png",
    "model_summary.txt",
    "config.yaml",
    "model.keras",
    "class_names.json",  # what each of the model's outputs is (index -> class, e.g. a folder)
)
SPOOL_ENV = "HPSEARCH_SPOOL_DIR"
OTHER_HOST_STALE_S = 600.0  # another host's spool entry untouched this long is taken over


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
        self._later(f"close run {self.run_id}", _close, self.client, self.run_id, status, tags,
                    ended)  # fmt: skip

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

        The model and config are first kept in the upload spool (see the module
        docstring), here and now, so the trial is never reported complete with
        its model only in memory; the rest is made and sent by :meth:`_later`.
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


_UNCLOSED: dict[str, tuple[str, dict[str, str], int | None]] = {}  # id -> (status, tags, end)
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
    """Write the rest of the artifacts into ``folder`` (the run's spool entry) and log them.

    Kept for a retry by this process if that fails, and in the spool for
    another process if this one dies first.
    """
    try:
        artifacts.write(folder, drawer)
        failpoints.reached("uploading")
        client.log_artifacts(run_id, str(folder))
    except Exception:
        _UNSENT[run_id] = folder  # sent again by close_unclosed_runs
        raise
    _spool_step_done(run_id, "upload")


def _close(
    client: MlflowClient,
    run_id: str,
    status: str,
    tags: Mapping[str, str],
    end_time: int | None = None,
) -> None:
    from mlflow.entities import RunTag

    try:
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        client.set_terminated(run_id, status, end_time=end_time)
        _UNCLOSED.pop(run_id, None)
    except Exception:  # noqa: BLE001 - the server is away: close it when it is back
        _UNCLOSED[run_id] = (status, dict(tags), end_time)
        return
    _spool_step_done(run_id, "close")


def close_unclosed_runs(validation: ValidationData | None = None) -> int:
    """Close the runs whose closing failed earlier; returns how many are still open.

    Also finishes what dead workers left in the upload spool
    (:func:`finish_spooled_uploads`; ``validation`` as there).
    """
    from mlflow import MlflowClient

    _refresh_spooled(force=True)
    finish_spooled_uploads(validation)
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
            _spool_step_done(run_id, "upload")
        for run_id, (status, tags, end_time) in list(_UNCLOSED.items()):
            _close(client, run_id, status, tags, end_time)
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


# The upload spool (see the module docstring).


@dataclass
class _SpoolEntry:
    folder: Path
    lock: int | None  # the descriptor holding the flock on ``folder / "lock"``
    manifest: dict


_SPOOLED: dict[str, _SpoolEntry] = {}  # run id -> this process's spool entries
_SPOOL_MUTEX = threading.Lock()  # the uploader thread and the main thread both finish steps
_REFRESHED = [0.0]  # when this process last touched its manifests (time.monotonic)
REFRESH_S = 60.0


def spool_dir(uri: str | None = None) -> Path:
    """Where finished trials' artifacts wait for upload (see the module docstring)."""
    from urllib.parse import urlsplit

    import mlflow

    if os.environ.get(SPOOL_ENV):
        return Path(os.environ[SPOOL_ENV]).expanduser()
    uri = uri or mlflow.get_tracking_uri()
    parts = urlsplit(uri)
    if parts.scheme == "sqlite" and uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///").split("?")[0]).parent / "hpsearch-spool"
    if parts.scheme in ("", "file"):
        return Path(parts.path).parent / "hpsearch-spool"  # beside the mlruns folder
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "hpsearch" / "spool"


def _lock(folder: Path, wait: bool) -> int | None:
    """An exclusive ``flock`` on ``folder / "lock"``: its descriptor; None when it is held."""
    if fcntl is None:
        return None
    descriptor = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        os.close(descriptor)
        if wait:
            raise
        return None
    return descriptor


def _write_manifest(folder: Path, manifest: dict) -> None:
    temporary = folder / "run.json.tmp"
    temporary.write_text(json.dumps(manifest))
    os.replace(temporary, folder / "run.json")  # a reader sees the old manifest or the new


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _spool(
    run_id: str, artifacts: _TrialArtifacts, metrics: Mapping[str, float], data: str
) -> Path:
    """Keep a completed trial's model and config in the spool; the folder for the rest."""
    import mlflow

    root = spool_dir()
    folder = root / run_id
    try:
        for attempt in range(3):  # another process may remove the empty spool meanwhile
            try:
                (folder / "artifacts").mkdir(parents=True, exist_ok=True)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        lock = _lock(folder, wait=True)
        try:
            artifacts.keep(folder / "artifacts")
            manifest = {
                "run_id": run_id,
                "tracking_uri": hide_password(mlflow.get_tracking_uri()),
                "owner": f"{socket.gethostname()}:{os.getpid()}",
                "todo": ["upload", "close"],
                "close": {"status": "FINISHED", "tags": {OUTCOME_TAG: "completed"}},
                "artifacts": list(TRIAL_ARTIFACTS),
                "metrics": dict(metrics),
                "history": {k: [float(v) for v in vs] for k, vs in artifacts.history.items()},
                "best_epoch": artifacts.best_epoch,
                "data": data,  # which validation split the figures need (ValidationData.key)
            }
            _write_manifest(folder, manifest)  # last: an entry without one is not complete
        except BaseException:
            if lock is not None:
                os.close(lock)
            shutil.rmtree(folder, ignore_errors=True)
            raise
    except OSError as error:
        raise HpsearchError(
            f"cannot keep the trial's artifacts in the upload spool {root}: {error} "
            f"(set {SPOOL_ENV} to a writable folder on a local disk)"
        ) from None
    with _SPOOL_MUTEX:
        _SPOOLED[run_id] = _SpoolEntry(folder, lock, manifest)
    return folder / "artifacts"


def _spool_step_done(run_id: str, step: str) -> None:
    """``step`` (upload, close) of this process's spool entry is done; the entry goes with both."""
    try:
        with _SPOOL_MUTEX:
            entry = _SPOOLED.get(run_id)
            if entry is None:
                return
            todo = [s for s in entry.manifest["todo"] if s != step]
            entry.manifest["todo"] = todo
            if todo:
                _write_manifest(entry.folder, entry.manifest)
                if step == "upload":
                    shutil.rmtree(entry.folder / "artifacts", ignore_errors=True)
                return
            del _SPOOLED[run_id]
        _remove_entry(entry.folder, entry.lock)
    except OSError as error:
        log.warning("upload spool: could not record %s of run %s: %s", step, run_id, error)


def _remove_entry(folder: Path, lock: int | None) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if lock is not None:
        os.close(lock)
    if not os.environ.get(SPOOL_ENV):  # a folder the user named stays
        try:
            folder.parent.rmdir()  # the default spool itself, once empty
        except OSError:
            pass


def _refresh_spooled(force: bool = False) -> None:
    """Touch this process's manifests now and then, so other hosts see their owner lives."""
    if not _SPOOLED:
        return
    now = time.monotonic()
    if not force and now - _REFRESHED[0] < REFRESH_S:
        return
    _REFRESHED[0] = now
    with _SPOOL_MUTEX:
        folders = [entry.folder for entry in _SPOOLED.values()]
    for folder in folders:
        try:
            os.utime(folder / "run.json")
        except OSError:
            pass


def finish_spooled_uploads(validation: ValidationData | None = None) -> int:
    """Upload and close what dead workers left in the spool; how many runs were finished.

    Takes over the entries of the current tracking URI whose owner is gone (its
    lock is free; another host's entry must also be untouched for
    ``OTHER_HOST_STALE_S``): uploads the artifacts (the training curves drawn
    again from the kept history; the confusion matrix and model summary made
    again from the kept model when ``validation`` is the split it was trained
    with, as in a rerun of the same study), logs the final metrics the run lacks, sets the
    outcome tag the manifest names, removes ``hpsearch.artifacts_incomplete``
    (or sets it to the files that could not be made again), closes the run if it
    is still RUNNING, and removes the entry. A run that was closed as failed
    meanwhile (its trial failed in Optuna) gets the artifacts and keeps its
    status and tags. Failures are logged; the entry is tried again next time.
    """
    import mlflow

    try:
        root = spool_dir()
        folders = sorted(root.iterdir()) if fcntl is not None and root.is_dir() else []
    except OSError as error:
        log.warning("upload spool: cannot read it: %s", error)
        return 0
    uri, host = hide_password(mlflow.get_tracking_uri()), socket.gethostname()
    finished, client = 0, None
    for folder in folders:
        if folder.name in _SPOOLED or not folder.is_dir():
            continue
        try:
            lock = _lock(folder, wait=False)
        except OSError:
            continue  # removed meanwhile
        if lock is None:
            continue  # its owner lives (or another process is taking it over)
        try:
            manifest = _read_manifest(folder)
            if manifest is None:  # its owner died while keeping the files: trial not complete
                if _age(folder) > OTHER_HOST_STALE_S:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            if manifest.get("tracking_uri") != uri:
                continue
            owner = str(manifest.get("owner", ""))
            if owner.rpartition(":")[0] != host and _age(folder / "run.json") < OTHER_HOST_STALE_S:
                continue
            if client is None:
                from mlflow import MlflowClient

                client = MlflowClient()
            finished += _finish_entry(client, folder, manifest, validation)
        except Exception as error:  # noqa: BLE001 - server away, say: try again next time
            first = (hide_password(str(error)).splitlines() or [type(error).__name__])[0]
            log.warning("upload spool: run %s not finished yet: %s", folder.name, first)
        finally:
            os.close(lock)
    return finished


def _finish_entry(
    client: MlflowClient, folder: Path, manifest: dict, validation: ValidationData | None
) -> int:
    """Upload, log and close one dead worker's spool entry, then remove it; 1 if finished."""
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    run_id = manifest["run_id"]
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        log.warning("upload spool: run %s is gone from %s; dropping its entry", run_id,
                    manifest.get("tracking_uri"))  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
        return 0
    if "upload" in manifest.get("todo", []):
        artifacts = folder / "artifacts"
        curves = artifacts / "training_curves.png"
        if not curves.exists() and manifest.get("history"):
            from hpsearch.figures.plots import save_training_curves

            save_training_curves(manifest["history"], curves, int(manifest.get("best_epoch", 0)))
        if validation is not None and manifest.get("data") == validation.key():
            _remake_from_model(artifacts, validation, int(manifest.get("best_epoch", 0)))
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, 0)
            for k, v in manifest.get("metrics", {}).items()
            if k not in run.data.metrics
        ]
        if metrics:
            client.log_batch(run_id, metrics=metrics)
        client.log_artifacts(run_id, str(artifacts))
        uploaded = {a.path for a in client.list_artifacts(run_id)}
        manifest["missing"] = [n for n in manifest.get("artifacts", ()) if n not in uploaded]
        manifest["todo"] = [s for s in manifest["todo"] if s != "upload"]
        _write_manifest(folder, manifest)
    missing = manifest.get("missing", [])
    close = manifest.get("close", {})
    status, tags = close.get("status", "FINISHED"), dict(close.get("tags", {}))
    if run.info.status in ("RUNNING", status):  # open, or closed as it ended (or as an orphan)
        if missing:
            tags[INCOMPLETE_TAG] = ", ".join(missing)
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        if not missing and INCOMPLETE_TAG in run.data.tags:
            client.delete_tag(run_id, INCOMPLETE_TAG)
        if run.info.status == "RUNNING":
            client.set_terminated(run_id, status)
    shutil.rmtree(folder, ignore_errors=True)
    log.warning(
        "upload spool: finished run %s, left by worker %s (gone)%s", run_id,
        manifest.get("owner"), f"; could not make again: {', '.join(missing)}" if missing else "",
    )  # fmt: skip
    return 1


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


class MissingArtifact(HpsearchError):
    """A run has no artifact of that name (say, its worker died before uploading it)."""

    def __init__(self, message: str, waiting: Path | None = None) -> None:
        super().__init__(message)
        self.waiting = waiting  # the file in this machine's upload spool, if it is there


def download_artifact(run_id: str, path: str, destination: Path) -> Path:
    """Copy one artifact of a run to ``destination`` (a file path).

    :class:`MissingArtifact` when the run has no such artifact; its message says
    so when the artifact is still waiting in this machine's upload spool.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="hpsearch-download-") as tmp:
        try:
            local = MlflowClient().download_artifacts(run_id, path, tmp)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            spooled = spool_dir() / run_id / "artifacts" / path
            waiting = spooled if spooled.is_file() else None
            where = f"; it waits for upload in {waiting}" if waiting else ""
            raise MissingArtifact(f"MLflow run {run_id} has no {path}{where}", waiting) from None
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
        _close(self.client, self.run_id, status, {})


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


@dataclass(frozen=True)
class ValidationData:
    """The validation split a trial's confusion matrix is drawn from, and what names it."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    fingerprint: str  # the dataset's (hpsearch.data_fingerprint)

    @classmethod
    def of(cls, splits: Splits, fingerprint: str) -> ValidationData:
        return cls(splits.x_val, splits.y_val, tuple(splits.class_names), fingerprint)

    def key(self) -> str:
        """The dataset and this split of it (the same limit, seed and size give the same key)."""
        import hashlib

        labels = hashlib.sha1(np.ascontiguousarray(self.labels).tobytes()).hexdigest()[:16]
        return f"{self.fingerprint}/{self.images.shape}/{labels}"


def _remake_from_model(folder: Path, validation: ValidationData, best_epoch: int) -> None:
    """The confusion matrix and model summary a dead worker had not written, from its model."""
    from hpsearch.figures.plots import save_confusion_matrix
    from hpsearch.training.runner import predict

    matrix, summary = folder / "confusion_matrix.png", folder / "model_summary.txt"
    if matrix.exists() and summary.exists():
        return
    network = keras.saving.load_model(folder / "model.keras", compile=False)
    if not matrix.exists():
        predicted = np.argmax(predict(network, validation.images), axis=1)
        save_confusion_matrix(validation.labels, predicted, validation.class_names, matrix,
                              title=f"validation (best epoch {best_epoch})")  # fmt: skip
    if not summary.exists():  # the inference network's: the augmentation layers are not kept
        lines = io.StringIO()
        network.summary(print_fn=lambda line, **_: lines.write(line + "\n"))
        summary.write_text(lines.getvalue())


@dataclass
class _TrialArtifacts:
    """What a trial's artifacts are made of, taken from the trial as it ends.

    The model and config are kept at once (:meth:`keep`, into the spool); the
    validation predictions behind the confusion matrix are made, the figures
    drawn and the summary written from this (:meth:`write`), possibly on the
    uploader's thread while the next trial already trains.
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
        from hpsearch.model.builder import inference_model

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

    def keep(self, folder: Path) -> None:
        """The config, the inference model and its class names (the files the other
        artifacts cannot remake)."""
        (folder / "config.yaml").write_text(self.config_yaml)
        (folder / "class_names.json").write_text(json.dumps(list(self.class_names)))
        from hpsearch.model.export import model_metadata, save_model

        shape = self.val_images.shape[1:]
        save_model(self.network, folder / "model.keras", model_metadata(self.class_names, shape))

    def write(self, folder: Path, drawer: DrawingProcess | None = None) -> list[Path]:
        """Curves, validation confusion matrix, model summary; config and model when not kept.

        The two figures are drawn by ``drawer`` when there is one, else here;
        the summary is written while the drawing process draws them.
        """
        from hpsearch.figures.plots import save_confusion_matrix, save_training_curves
        from hpsearch.training.runner import predict

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
        curves = submit(save_training_curves, self.history, folder / "training_curves.png",
                        self.best_epoch)  # fmt: skip
        summary = io.StringIO()
        self.model.summary(print_fn=lambda line, **_: summary.write(line + "\n"))
        (folder / "model_summary.txt").write_text(summary.getvalue())
        if not (folder / "model.keras").exists():
            self.keep(folder)
        return [
            curves(),
            matrix(),
            folder / "model_summary.txt",
            folder / "config.yaml",
            folder / "model.keras",
            folder / "class_names.json",
        ]

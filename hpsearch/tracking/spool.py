"""The upload spool: a finished trial's artifacts, kept on disk until they are uploaded.

A finished trial's artifacts are uploaded on a background thread while the next trial trains; a
worker killed meanwhile would lose them. So before the trial is reported complete,
:meth:`~hpsearch.tracking.runs.TrialRun.log_result` saves its ``model.keras`` and
``config.yaml`` into ``<spool>/<run id>/artifacts/`` and writes ``<spool>/<run id>/run.json``
(run id, tracking URI without its password, owner ``host:pid``, what is left to do:
``upload``, ``close``, and the final metrics and history to log and draw again), on the
training thread. The background job adds the figures and the summary, uploads the folder and
removes the entry once the run is also closed.

Where: ``$HPSEARCH_SPOOL_DIR``, else ``hpsearch-spool`` beside a local MLflow
store (the folder of ``sqlite:///…/mlflow.db`` or of a ``mlruns`` folder),
else ``~/.cache/hpsearch/spool`` (``$XDG_CACHE_HOME``) for a tracking server.
Entries are per run id, so workers on one machine share a spool safely.

Who finishes an entry: its owner, which holds an exclusive ``flock`` on the
entry's ``lock`` file for as long as the entry is its own. The kernel lets go
of that lock when the owner dies (kill -9 included), so any other process that
gets it knows the owner is gone: :func:`finish_spooled_uploads` (run by
:func:`~hpsearch.tracking.retries.close_unclosed_runs`, so at a search's start and before
every trial) takes over such entries of the current tracking URI — uploads, logs the final
metrics, closes the run as the manifest says, and removes the entry. An
entry written on another host (a spool on a shared disk, where locks may not
reach across hosts) is taken over only once its manifest is 10 minutes old;
owners touch their manifests while they train. Without ``fcntl`` (Windows)
entries are finished by their owner only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpsearch.errors import HpsearchError
from hpsearch.tracking.artifacts import TRIAL_ARTIFACTS, ValidationData, _remake_from_model
from hpsearch.tracking.tags import INCOMPLETE_TAG, OUTCOME_TAG
from hpsearch.util.redact import hide_password

try:
    import fcntl
except ImportError:  # Windows: no takeover of a dead worker's spool entries
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from hpsearch.tracking.artifacts import _TrialArtifacts

log = logging.getLogger(__name__)

SPOOL_ENV = "HPSEARCH_SPOOL_DIR"
OTHER_HOST_STALE_S = 600.0  # another host's spool entry untouched this long is taken over


@dataclass
class _SpoolEntry:
    folder: Path
    lock: int | None  # the descriptor holding the flock on ``folder / "lock"``
    manifest: dict


REFRESH_S = 60.0  # how often this process touches its manifests while it trains


class SpooledRuns:
    """This process's spool entries (run id -> entry), until their run is uploaded and closed.

    The uploader's thread and the main loop both finish steps, so a lock guards
    the entries, their manifests' writes and when they were last touched;
    readers get copies.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _SpoolEntry] = {}
        self._refreshed = 0.0  # when this process last touched its manifests (time.monotonic)

    def add(self, run_id: str, entry: _SpoolEntry) -> None:
        with self._lock:
            self._entries[run_id] = entry

    def owns(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._entries

    def run_ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def step_done(self, run_id: str, step: str) -> _SpoolEntry | None:
        """Record ``step`` of the run's entry as done (in its manifest; the kept artifacts go
        with the upload); the entry, no longer this process's, once both steps are done."""
        with self._lock:
            entry = self._entries.get(run_id)
            if entry is None:
                return None
            todo = [s for s in entry.manifest["todo"] if s != step]
            entry.manifest["todo"] = todo
            if todo:
                _write_manifest(entry.folder, entry.manifest)
                if step == "upload":
                    shutil.rmtree(entry.folder / "artifacts", ignore_errors=True)
                return None
            del self._entries[run_id]
            return entry

    def due_for_refresh(self, force: bool = False) -> list[Path]:
        """The entries' folders, when their manifests are due to be touched again (else none)."""
        with self._lock:
            if not self._entries:
                return []
            now = time.monotonic()
            if not force and now - self._refreshed < REFRESH_S:
                return []
            self._refreshed = now
            return [entry.folder for entry in self._entries.values()]


SPOOLED = SpooledRuns()  # this process's


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
    SPOOLED.add(run_id, _SpoolEntry(folder, lock, manifest))
    return folder / "artifacts"


def _spool_step_done(run_id: str, step: str) -> None:
    """``step`` (upload, close) of this process's spool entry is done; the entry goes with both."""
    try:
        entry = SPOOLED.step_done(run_id, step)
        if entry is not None:
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
    folders = SPOOLED.due_for_refresh(force)
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
        if SPOOLED.owns(folder.name) or not folder.is_dir():
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

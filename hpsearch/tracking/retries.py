"""Retries: the MLflow calls that failed while the tracking server was away, made again.

A run's params and metrics batches, the upload of its artifacts folder and its
closing may fail (the server is down, the network is away); each failure is
remembered, and :func:`close_unclosed_runs` makes the calls again, in order,
when the driver asks (at a search's start, before every trial, and once the
server is back: :func:`wait_for_tracking`), forgetting each call once it
succeeds. It also finishes what dead workers left in the upload spool
(:mod:`hpsearch.tracking.spool`). Also here: closing the runs of trials that
ended elsewhere (a lost worker, an interrupted or orphaned trial).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from hpsearch.tracking.spool import _refresh_spooled, _spool_step_done, finish_spooled_uploads
from hpsearch.tracking.tags import OUTCOME_TAG, REASON_TAG
from hpsearch.util import failpoints
from hpsearch.util.connections import tracking_reachable
from hpsearch.util.redact import hide_password

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from hpsearch.figures.drawing import DrawingProcess
    from hpsearch.tracking.artifacts import ValidationData, _TrialArtifacts

Closing = tuple[str, dict[str, str], int | None]  # a run's terminal status, tags, end time


class PendingCalls:
    """The MLflow calls that failed, kept to be made again: run closings, artifact uploads,
    metric batches.

    The uploader's thread records failures while the main loop makes the calls
    again, so a lock guards the three dicts: every read and write holds it,
    readers get copies, and no MLflow call is made while it is held.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unclosed: dict[str, Closing] = {}  # run id -> how to close it
        self._unsent: dict[str, Path] = {}  # run id -> folder of artifacts whose upload failed
        self._unlogged: dict[str, list[dict]] = {}  # run id -> failed log_batch arguments, in order

    def record_close(
        self, run_id: str, status: str, tags: Mapping[str, str], end_time: int | None
    ) -> None:
        with self._lock:
            self._unclosed[run_id] = (status, dict(tags), end_time)

    def record_upload(self, run_id: str, folder: Path) -> None:
        with self._lock:
            self._unsent[run_id] = folder

    def record_batch(self, run_id: str, batch: dict) -> None:
        with self._lock:
            self._unlogged.setdefault(run_id, []).append(batch)

    def forget_close(self, run_id: str) -> None:
        with self._lock:
            self._unclosed.pop(run_id, None)

    def forget_upload(self, run_id: str) -> None:
        with self._lock:
            self._unsent.pop(run_id, None)

    def forget_batch(self, run_id: str, batch: dict) -> None:
        """Forget ``batch`` itself (not an equal one) once it was sent."""
        with self._lock:
            batches = self._unlogged.get(run_id, [])
            for index, kept in enumerate(batches):
                if kept is batch:
                    del batches[index]
                    break
            if not batches:
                self._unlogged.pop(run_id, None)

    def unclosed(self) -> dict[str, Closing]:
        """The runs to close again (a copy)."""
        with self._lock:
            return dict(self._unclosed)

    def unsent(self) -> dict[str, Path]:
        """The artifact folders to upload again (a copy)."""
        with self._lock:
            return dict(self._unsent)

    def unlogged(self) -> dict[str, list[dict]]:
        """The metric batches to log again, each run's in order (a copy)."""
        with self._lock:
            return {run_id: list(batches) for run_id, batches in self._unlogged.items()}

    def empty(self) -> bool:
        with self._lock:
            return not (self._unclosed or self._unsent or self._unlogged)

    def close(
        self,
        client: MlflowClient,
        run_id: str,
        status: str,
        tags: Mapping[str, str],
        end_time: int | None = None,
    ) -> None:
        """Tag and terminate a run; kept to be closed again if that fails."""
        from mlflow.entities import RunTag

        try:
            if tags:
                client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            client.set_terminated(run_id, status, end_time=end_time)
        except Exception:  # noqa: BLE001 - the server is away: close it when it is back
            self.record_close(run_id, status, tags, end_time)
            return
        self.forget_close(run_id)
        _spool_step_done(run_id, "close")

    def resend(self, client: MlflowClient) -> None:
        """Make the kept calls again, from a copy; forget each one that succeeds.

        A run's batches go in order and stop at the first that fails again.
        """
        for run_id, batches in self.unlogged().items():
            for batch in batches:
                try:
                    client.log_batch(run_id, **batch)
                except Exception:  # noqa: BLE001 - still away: try again next time
                    break
                self.forget_batch(run_id, batch)
        for run_id, folder in self.unsent().items():
            try:
                client.log_artifacts(run_id, str(folder))
            except Exception:  # noqa: BLE001 - still away: try again next time
                continue
            self.forget_upload(run_id)
            _spool_step_done(run_id, "upload")
        for run_id, (status, tags, end_time) in self.unclosed().items():
            self.close(client, run_id, status, tags, end_time)


PENDING = PendingCalls()  # this process's: filled by the uploader's thread, resent by the main loop


def _log_batch(client: MlflowClient, run_id: str, batch: dict) -> None:
    """``client.log_batch(run_id, **batch)``; kept for a retry if that fails."""
    try:
        client.log_batch(run_id, **batch)
    except Exception:
        PENDING.record_batch(run_id, batch)  # sent again by close_unclosed_runs
        raise


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
        PENDING.record_upload(run_id, folder)  # sent again by close_unclosed_runs
        raise
    _spool_step_done(run_id, "upload")



def close_unclosed_runs(validation: ValidationData | None = None) -> int:
    """Close the runs whose closing failed earlier; returns how many are still open.

    Also sends again the metric batches and artifacts whose sending failed, and
    finishes what dead workers left in the upload spool
    (:func:`finish_spooled_uploads`; ``validation`` as there).
    """
    from mlflow import MlflowClient

    _refresh_spooled(force=True)
    finish_spooled_uploads(validation)
    if not PENDING.empty():
        PENDING.resend(MlflowClient())
    return len(PENDING.unclosed())


def close_lost_run(run_id: str) -> None:
    """Close the run of a trial whose worker died (its heartbeat stopped)."""
    from mlflow import MlflowClient

    tags = {OUTCOME_TAG: "failed", REASON_TAG: "worker_lost"}
    PENDING.close(MlflowClient(), run_id, "FAILED", tags)


def mark_run_interrupted(run_id: str) -> None:
    """Mark as interrupted a run closed as completed whose trial Optuna records as failed."""
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        if client.get_run(run_id).data.tags.get(OUTCOME_TAG) != "completed":
            return  # closed as failed or pruned: already what Optuna says
    except Exception:  # noqa: BLE001 - unknown run or server away: nothing to mend now
        return
    PENDING.close(client, run_id, "KILLED", {OUTCOME_TAG: "failed", REASON_TAG: "interrupted"})


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
    PENDING.close(client, run_id, "FINISHED", tags)


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

"""Reading what runs recorded: their metrics, a metric's history, one artifact; and
logging a folder of files to a run after the fact (the chooser's reports)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hpsearch.errors import HpsearchError
from hpsearch.tracking.spool import spool_dir


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

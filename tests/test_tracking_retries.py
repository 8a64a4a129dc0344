"""Unit tests of tracking's retries: a close, a log_batch or an upload that fails is
remembered, sent again by ``close_unclosed_runs`` while the server is still away, and
forgotten once it succeeds; the upload spool follows.

Real MlflowClients, no mocks: the calls fail against a tracking URI where nothing listens
(MLflow's HTTP retries turned off), and succeed against a local SQLite store.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow
import pytest
from conftest import free_port
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from hpsearch.tracking import OUTCOME_TAG, REASON_TAG, close_unclosed_runs, retries
from hpsearch.tracking import spool as spooling
from hpsearch.tracking.retries import _log_batch, _send_artifacts
from hpsearch.tracking.spool import _spool


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for the module: making its tables takes seconds."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('retries') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri)  # creates the tables
    return uri


@pytest.fixture
def store(store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The store made current, empty retry lists, a spool in tmp; (client, a new run's id)."""
    monkeypatch.setattr(retries, "PENDING", retries.PendingCalls())  # this test's alone
    monkeypatch.setattr(spooling, "SPOOLED", spooling.SpooledRuns())
    monkeypatch.setenv(spooling.SPOOL_ENV, str(tmp_path / "spool"))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store_uri)
    client = MlflowClient()
    experiment = client.create_experiment(
        f"retries-{uuid.uuid4().hex[:8]}", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    yield client, client.create_run(experiment).info.run_id
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def away(monkeypatch: pytest.MonkeyPatch) -> str:
    """A tracking URI where nothing listens; MLflow gives up at once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    return f"http://127.0.0.1:{free_port()}"


def still_away(uri: str) -> int:
    """``close_unclosed_runs`` while the tracking server is still away: how many stay open."""
    current = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return close_unclosed_runs()
    finally:
        mlflow.set_tracking_uri(current)


def test_a_failed_close_is_remembered_retried_while_away_and_forgotten_once_closed(store, away):
    client, run_id = store
    tags = {OUTCOME_TAG: "failed", REASON_TAG: "worker_lost"}
    retries.PENDING.close(MlflowClient(tracking_uri=away), run_id, "FAILED", tags, end_time=1234)
    assert retries.PENDING.unclosed() == {run_id: ("FAILED", tags, 1234)}  # no error raised: kept
    assert client.get_run(run_id).info.status == "RUNNING"

    assert still_away(away) == 1
    assert retries.PENDING.unclosed() == {run_id: ("FAILED", tags, 1234)}

    assert close_unclosed_runs() == 0
    assert retries.PENDING.unclosed() == {}
    run = client.get_run(run_id)
    assert (run.info.status, run.info.end_time) == ("FAILED", 1234)
    assert run.data.tags[OUTCOME_TAG] == "failed" and run.data.tags[REASON_TAG] == "worker_lost"


def test_a_close_that_succeeds_leaves_nothing_to_retry(store):
    client, run_id = store
    retries.PENDING.close(client, run_id, "FINISHED", {OUTCOME_TAG: "completed"})
    assert retries.PENDING.unclosed() == {}
    assert client.get_run(run_id).info.status == "FINISHED"


def test_failed_log_batches_are_kept_in_order_and_sent_once_on_the_retry(store, away):
    client, run_id = store
    unreachable = MlflowClient(tracking_uri=away)
    batches = [{"metrics": [Metric("val_accuracy", 0.1 * (step + 1), 1000 + step, step)]}
               for step in range(3)]  # fmt: skip
    _log_batch(client, run_id, batches[0])  # sent: nothing kept
    assert retries.PENDING.unlogged() == {}
    for batch in batches[1:]:
        with pytest.raises(MlflowException):  # the caller still hears of the failure
            _log_batch(unreachable, run_id, batch)
    assert retries.PENDING.unlogged() == {run_id: batches[1:]}

    assert still_away(away) == 0  # no run left open, but the batches are still kept
    assert retries.PENDING.unlogged() == {run_id: batches[1:]}

    close_unclosed_runs()
    assert retries.PENDING.unlogged() == {}
    history = client.get_metric_history(run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.1), (1, 0.2), (2, 0.1 * 3)]
    close_unclosed_runs()  # forgotten: nothing is sent twice
    assert len(client.get_metric_history(run_id, "val_accuracy")) == 3


class _Files:
    """Stands in for a trial's ``_TrialArtifacts`` (a model, drawn figures): small files."""

    history = {"val_accuracy": [0.4, 0.5]}
    best_epoch = 2

    def keep(self, folder: Path) -> None:
        (folder / "config.yaml").write_text("epochs: 2\n")

    def write(self, folder: Path, drawer=None) -> list[Path]:
        (folder / "model_summary.txt").write_text("a summary\n")
        return [folder / "config.yaml", folder / "model_summary.txt"]


def manifest(run_id: str, spool: Path) -> dict:
    return json.loads((spool / run_id / "run.json").read_text())


def test_a_failed_upload_stays_in_the_spool_is_sent_on_the_retry_then_the_entry_goes(
    store, away, tmp_path
):
    client, run_id = store
    spool = tmp_path / "spool"
    folder = _spool(run_id, _Files(), {"val_accuracy": 0.5}, "data-key")
    assert folder == spool / run_id / "artifacts"
    assert manifest(run_id, spool)["todo"] == ["upload", "close"]

    with pytest.raises(MlflowException):
        _send_artifacts(MlflowClient(tracking_uri=away), run_id, folder, _Files(), None)
    assert retries.PENDING.unsent() == {run_id: folder}
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "model_summary.txt"]
    assert manifest(run_id, spool)["todo"] == ["upload", "close"]  # nothing done yet
    assert still_away(away) == 0 and retries.PENDING.unsent() == {run_id: folder}

    close_unclosed_runs()
    assert retries.PENDING.unsent() == {}
    assert sorted(a.path for a in client.list_artifacts(run_id)) == [
        "config.yaml", "model_summary.txt"
    ]  # fmt: skip
    assert manifest(run_id, spool)["todo"] == ["close"]  # uploaded: the spool's copy goes
    assert not folder.exists()

    retries.PENDING.close(client, run_id, "FINISHED", {OUTCOME_TAG: "completed"})
    assert not (spool / run_id).exists() and spooling.SPOOLED.run_ids() == []  # both steps done
    assert client.get_run(run_id).info.status == "FINISHED"


def test_an_upload_and_a_close_both_failing_are_both_done_by_one_retry(store, away, tmp_path):
    client, run_id = store
    unreachable = MlflowClient(tracking_uri=away)
    folder = _spool(run_id, _Files(), {"val_accuracy": 0.5}, "data-key")
    with pytest.raises(MlflowException):
        _send_artifacts(unreachable, run_id, folder, _Files(), None)
    retries.PENDING.close(unreachable, run_id, "FINISHED", {OUTCOME_TAG: "completed"})
    assert still_away(away) == 1

    assert close_unclosed_runs() == 0
    assert retries.PENDING.unsent() == {} and retries.PENDING.unclosed() == {}
    assert spooling.SPOOLED.run_ids() == []
    assert not (tmp_path / "spool" / run_id).exists()
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags[OUTCOME_TAG]) == ("FINISHED", "completed")
    assert {a.path for a in client.list_artifacts(run_id)} == {"config.yaml", "model_summary.txt"}

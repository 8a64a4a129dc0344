"""Trial runs read right in MLflow: their duration is the trial's (not its background
uploads'), and they carry MLflow's own context tags (user, source, git commit)."""

from __future__ import annotations

import subprocess
import time

import pytest

from hpsearch.tracking import TrialRun, context_tags
from hpsearch.tracking.uploads import Uploader

pytestmark = pytest.mark.slow  # trials that train, on fresh SQLite MLflow stores


def test_a_run_ends_when_its_trial_ends_not_when_its_uploads_do(stores):
    _, client = stores
    uploader = Uploader()
    uploader.hold()  # as between trials: the uploads wait for the next trial's second epoch
    with TrialRun("durations", "trial-000", uploader=uploader) as run:
        started = client.get_run(run.run_id).info.start_time
        time.sleep(0.3)  # the trial trains
        uploader.submit("slow upload", lambda: time.sleep(2.0))
        ended = int(time.time() * 1000)
    time.sleep(0.5)
    uploader.drain()
    info = client.get_run(run.run_id).info
    assert info.status == "FINISHED"
    assert abs(info.end_time - ended) < 200, (info.end_time - ended)  # not 2.5 s later
    assert info.end_time - started < 1500


def test_trial_runs_carry_mlflows_context_tags_and_the_git_commit(stores, tmp_path, monkeypatch):
    _, client = stores
    repo = tmp_path / "project"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "study.yaml").write_text("name: x\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "study"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    monkeypatch.chdir(repo)
    context_tags.cache_clear()
    try:
        with TrialRun("context", "trial-000") as run:
            pass
    finally:
        context_tags.cache_clear()
    tags = client.get_run(run.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] and tags["mlflow.user"]


def test_experiments_open_in_mlflows_model_training_view(stores):
    """MLflow 3's UI opens an experiment without a kind as a GenAI one (no runs table)."""
    _, client = stores
    with TrialRun("kind", "trial-000"):
        pass
    experiment = client.get_experiment_by_name("kind")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    legacy = client.create_experiment("made-before")  # by an older hpsearch, or by hand
    with TrialRun("made-before", "trial-000"):
        pass
    tags = client.get_experiment(legacy).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_trials_data_is_an_mlflow_dataset_input_named_and_digested(stores, tmp_path):
    from hpsearch.config import DataSpec

    _, client = stores
    with TrialRun("datasets", "trial-000") as run:
        run.log_dataset(DataSpec(dataset="digits", limit=300), "0123456789abcdef")
    with TrialRun("datasets", "trial-001") as local:
        local.log_dataset(DataSpec(dataset="folder", data_dir=str(tmp_path)), "fedcba9876543210")
    (given,) = client.get_run(run.run_id).inputs.dataset_inputs
    assert given.dataset.name == "digits (limit=300, validation=0.2)"
    assert given.dataset.digest == "0123456789abcdef" and given.dataset.source_type == "code"
    assert {t.key: t.value for t in given.tags} == {"mlflow.data.context": "training"}
    (folder,) = client.get_run(local.run_id).inputs.dataset_inputs
    assert folder.dataset.source_type == "local" and str(tmp_path) in folder.dataset.source

"""`hpsearch train` end to end: the real CLI against a real MLflow server process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import TRIAL_ARTIFACTS
from mlflow import MlflowClient

from hpsearch.config import DataSpec, TrialConfig

pytestmark = pytest.mark.slow  # the real CLI trains against a real MLflow server

EPOCH_METRICS = {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_learning_rate"}


def hpsearch(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "hpsearch.cli", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(mlflow_server, tmp_path_factory):
    """One real tracked training run on digits, shared by the assertions below."""
    done = hpsearch(
        "train", "--dataset", "digits",
        "--set", "architecture=baseline1 epochs=3 batch_size=64 batch_norm=before",
        "--set", "dropout=0.1",
        "--tracking-uri", mlflow_server, "--experiment", "train-cli-test",
        "--evaluate-test",
        cwd=tmp_path_factory.mktemp("train-cwd"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", done.stdout).group(1)
    client = MlflowClient(tracking_uri=mlflow_server)
    return client, client.get_run(run_id), done.stdout


def test_train_logs_every_factor_as_a_param(trained):
    _, run, _ = trained
    params = run.data.params
    assert set(TrialConfig.model_fields) | set(DataSpec.model_fields) <= set(params)
    assert params["architecture"] == "baseline1"
    assert params["batch_norm"] == "before"
    assert params["dropout"] == "0.1"
    assert params["augmentation"] == "none"
    assert params["dataset"] == "digits"


def test_train_logs_per_epoch_metrics(trained):
    client, run, _ = trained
    epochs = int(run.data.metrics["epochs_run"])
    assert 1 <= epochs <= 3
    for name in EPOCH_METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(
            range(1, epochs + 1)
        ), name
    rates = client.get_metric_history(run.info.run_id, "epoch_learning_rate")
    assert rates and all(m.value == pytest.approx(1e-3) for m in rates)
    assert client.get_metric_history(run.info.run_id, "learning_rate") == []  # the param's name


def test_train_logs_final_metrics_artifacts_and_outcome(trained):
    client, run, stdout = trained
    metrics = run.data.metrics
    assert 0.2 < metrics["best_val_accuracy"] <= 1.0  # well above chance (0.1) on digits
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and "test_loss" in metrics
    assert metrics["wall_time_s"] > 0
    assert run.info.status == "FINISHED"
    assert run.data.tags["hpsearch.outcome"] == "completed"
    assert len(run.data.tags["hpsearch.data_fingerprint"]) == 16
    logged = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert TRIAL_ARTIFACTS <= logged
    assert f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in stdout
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as folder:  # which class each output index is
        names = client.download_artifacts(run.info.run_id, "class_names.json", folder)
        assert json.loads(open(names).read()) == [str(digit) for digit in range(10)]


def test_logged_config_artifact_matches_params(trained, tmp_path):
    client, run, _ = trained
    path = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    from hpsearch.config import load_config

    assert load_config(path).to_params() == {
        k: v for k, v in run.data.params.items() if k in TrialConfig.model_fields
    }


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("batch_norm=middle", "batch_norm"), ("colour=red", "colour"), ("epochs", "key=value")],
)
def test_bad_set_exits_non_zero_naming_the_key(value, fragment, tmp_path):
    done = hpsearch("train", "--set", value, cwd=tmp_path)
    assert done.returncode != 0
    assert fragment in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists(), "a rejected command writes nothing"


def test_train_runs_on_the_jax_backend(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "hpsearch.cli", "train", "--no-tracking", "--quiet",
         "--dataset", "digits", "--limit", "200",
         "--set", "architecture=baseline1 epochs=2 batch_norm=before",
         "--set", "augmentation=standard+cutout+gridmask+mixup"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best_val_accuracy" in done.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import keras; print(keras.backend.backend())"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert probe.stdout.strip() == "jax"

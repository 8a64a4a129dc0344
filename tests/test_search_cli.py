"""`hpsearch search` end to end: the real CLI, a real MLflow server, SQLite Optuna storage."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import optuna
import pytest
from conftest import command, environment, interrupt_during_trial, parents_and_children
from mlflow import MlflowClient

from hpsearch.config import DataSpec, TrialConfig

pytestmark = pytest.mark.slow  # the real CLI trains studies against a real MLflow server

ROOT = Path(__file__).parents[1]
OUTCOME = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}


def test_smoke_study_gives_one_parent_and_one_child_per_trial(mlflow_server, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    started = time.monotonic()
    done = subprocess.run(
        command("search", str(ROOT / "studies" / "smoke.yaml"), "--storage", storage,
                "--tracking-uri", mlflow_server, "--quiet"),
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=environment(),
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best: trial" in done.stdout and "#/experiments/" in done.stdout
    print(f"smoke study wall time: {seconds:.1f} s")

    trials = optuna.load_study(study_name="smoke", storage=storage).trials
    assert len(trials) == 6
    client = MlflowClient(tracking_uri=mlflow_server)
    parents, children = parents_and_children(client, "smoke")
    assert len(parents) == 1 and len(children) == len(trials)
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    assert sorted(by_number) == [t.number for t in trials]
    keys = set(TrialConfig.model_fields) | set(DataSpec.model_fields)
    for trial in trials:
        run = by_number[trial.number]
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert run.data.tags["optuna.study_name"] == "smoke"
        assert run.data.tags["hpsearch.outcome"] == OUTCOME[trial.state.name]
        assert run.info.status in ("FINISHED", "FAILED")
        assert keys <= set(run.data.params)
        assert run.data.params["seed"] == str(trial.user_attrs["seed"])
        (data,) = client.get_run(run.info.run_id).inputs.dataset_inputs  # the Dataset column
        assert data.dataset.digest == run.data.tags["hpsearch.data_fingerprint"]
        for name, value in trial.params.items():
            shown = TrialConfig(**{name: value}).to_params(mark_unused=False)[name]
            assert run.data.params[name] == shown or (
                name == "learning_rate" and float(run.data.params[name]) == pytest.approx(value)
            )
        if run.data.params["optimizer"] == "adam":
            assert "momentum" not in trial.params  # conditional factor
            assert run.data.params["momentum"] == "n/a"  # not logged as if Adam used it
    best = parent.data.tags["best_run_id"]
    assert best == by_number[int(parent.data.tags["best_trial_number"])].info.run_id
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "best_config.yaml", "optimization_history.png"} <= artifacts


def test_interrupt_then_resume_keeps_trial_numbers_and_parent(mlflow_server, tmp_path):
    study = tmp_path / "resume.yaml"
    study.write_text(
        "name: resume\nsampler: {type: random, seed: 0}\nn_trials: 4\n"
        "data: {dataset: digits, limit: 400}\n"
        "fixed: {architecture: baseline2, epochs: 4, batch_size: 16, patience: 10}\n"
        "space: {batch_norm: {choices: [none, before]}}\n"
    )
    args = command("search", str(study), "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                   "--tracking-uri", mlflow_server)  # fmt: skip
    returncode, rest = interrupt_during_trial(args, tmp_path, "[resume] trial 0")
    assert returncode == 130, rest[-3000:]
    assert "interrupted" in rest

    client = MlflowClient(tracking_uri=mlflow_server)
    parents, children = parents_and_children(client, "resume")
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert all(c.info.status != "RUNNING" for c in children)
    first_parent = parents[0].info.run_id

    resumed = subprocess.run(args + ["--quiet"], capture_output=True, text=True, timeout=600,
                             cwd=tmp_path, env=environment())  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    trials = optuna.load_study(
        study_name="resume", storage=f"sqlite:///{tmp_path / 'optuna.db'}"
    ).trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))
    assert sum(t.state.name == "COMPLETE" for t in trials) == 4
    parents, children = parents_and_children(client, "resume")
    assert [p.info.run_id for p in parents] == [first_parent]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == len(trials)
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == numbers
    killed = [c for c in children if c.info.status == "KILLED"]
    assert len(killed) == 1 and killed[0].data.tags["hpsearch.failure_reason"] == "interrupted"

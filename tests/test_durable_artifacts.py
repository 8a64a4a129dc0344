"""A completed trial's artifacts survive its worker: the upload spool, its takeover, and
``best --export`` on a run without its model. Real MLflow, Optuna, Keras and processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import keras
import optuna
import pytest
from conftest import TRIAL_ARTIFACTS, command, environment, parents_and_children
from mlflow import MlflowClient
from optuna.trial import TrialState

from hpsearch.config import DataSpec, make_config
from hpsearch.search.lifecycle import run_search
from hpsearch.search.study_file import parse_study
from hpsearch.tracking import TrialRun, finish_spooled_uploads
from hpsearch.tracking.trial import load_splits, tracked_trial
from hpsearch.tracking.uploads import Uploader

pytestmark = pytest.mark.slow  # real workers killed after training, an MLflow server

TINY = {"dataset": "digits", "limit": 100}


def entries(spool: Path) -> list[str]:
    """The run ids waiting in a spool folder."""
    return sorted(p.name for p in spool.iterdir()) if spool.is_dir() else []


def test_a_worker_killed_before_uploading_a_completed_trial_leaves_it_to_the_next_run(
    mlflow_server, tmp_path
):
    study = tmp_path / "durable.yaml"
    study.write_text(textwrap.dedent("""\
        name: durable
        sampler: {type: random, seed: 5}
        n_trials: 2
        data: {dataset: digits, limit: 100}
        fixed: {architecture: baseline1, epochs: 2, batch_size: 32}
        space: {batch_norm: {choices: [none, before]}}
        """))  # fmt: skip
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    spool = tmp_path / "spool"
    env = {**environment(), "HPSEARCH_SPOOL_DIR": str(spool)}
    args = command("search", str(study), "--storage", storage, "--tracking-uri", mlflow_server,
                   "--heartbeat", "1", "--grace", "2")  # fmt: skip
    victim = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines, done = [], False
    for line in victim.stdout:
        lines.append(line)
        done = done or line.startswith("[durable] trial 0 complete")
        # Trial 1 is training: trial 0's uploads wait for trial 1's second epoch.
        if done and line.startswith("Epoch 1/"):
            break
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert done, "".join(lines)[-3000:]

    trial0 = optuna.load_study(study_name="durable", storage=storage).trials[0]
    assert trial0.state == TrialState.COMPLETE
    run_id = trial0.user_attrs["mlflow_run_id"]
    client = MlflowClient(tracking_uri=mlflow_server)
    # What the defect was: Optuna has the trial complete, MLflow has no model of it ...
    assert client.get_run(run_id).info.status == "RUNNING"
    assert client.list_artifacts(run_id) == []
    # ... but the spool has it.
    assert entries(spool) == [run_id]
    assert (spool / run_id / "artifacts" / "model.keras").stat().st_size > 0
    assert (spool / run_id / "run.json").is_file()

    time.sleep(3)  # past the grace period: the rerun fails trial 1 (and retries it) at once
    rerun = subprocess.run(args + ["--quiet"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "upload spool: finished run " + run_id in rerun.stderr

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["hpsearch.outcome"] == "completed"
    # The rerun (same study, same data) made what the dead worker never made from its model.
    assert "hpsearch.artifacts_incomplete" not in run.data.tags
    uploaded = {a.path for a in client.list_artifacts(run_id)}
    assert uploaded == TRIAL_ARTIFACTS
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(trial0.value)  # metrics too
    model = keras.saving.load_model(client.download_artifacts(run_id, "model.keras", str(tmp_path)))
    splits, _ = load_splits(DataSpec(**TINY))
    accuracy = float((model.predict(splits.x_val, verbose=0).argmax(1) == splits.y_val).mean())
    assert accuracy == pytest.approx(run.data.metrics["kept_val_accuracy"], abs=1e-6)
    assert entries(spool) == []

    trials = optuna.load_study(study_name="durable", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    _, children = parents_and_children(client, "durable")
    assert all(c.info.status != "RUNNING" for c in children)


def test_the_spool_holds_a_trial_before_optuna_records_it_and_is_empty_after_a_search(
    stores, monkeypatch, tmp_path
):
    monkeypatch.delenv("HPSEARCH_SPOOL_DIR", raising=False)
    storage, client = stores
    spool = tmp_path / "hpsearch-spool"  # beside the local MLflow store
    seen: dict[int, tuple] = {}

    class Probe(keras.callbacks.Callback):
        def __init__(self, trial) -> None:
            super().__init__()
            self.trial = trial

        def on_train_begin(self, logs=None) -> None:
            done = self.trial.study.get_trials(states=(TrialState.COMPLETE,))
            seen[self.trial.number] = (
                [t.user_attrs["mlflow_run_id"] for t in done],
                entries(spool),
                [(spool / e / "artifacts" / "model.keras").is_file() for e in entries(spool)],
            )

    spec = parse_study(
        {"name": "spooled", "sampler": {"type": "grid"}, "data": TINY,
         "fixed": {"architecture": "baseline1", "epochs": 2, "batch_size": 32},
         "space": {"batch_norm": {"choices": ["none", "after"]}}},
        "spooled.yaml",
    )  # fmt: skip
    outcome = run_search(spec, storage, echo=lambda _: None, verbose=0,
                         extra_callbacks=lambda trial: [Probe(trial)])  # fmt: skip
    assert outcome.counts["complete"] == 2
    # When trial 1 starts, trial 0 is complete in Optuna and its model is in the spool.
    completed, waiting, with_model = seen[1]
    assert waiting == completed and with_model == [True]
    assert entries(spool) == [] and not spool.exists()
    _, children = parents_and_children(client, "spooled")
    for run in children:
        assert run.info.status == "FINISHED"
        assert "hpsearch.artifacts_incomplete" not in run.data.tags
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == TRIAL_ARTIFACTS


def test_a_live_workers_spool_entry_is_left_to_it(stores, monkeypatch, tmp_path):
    monkeypatch.delenv("HPSEARCH_SPOOL_DIR", raising=False)
    _, client = stores
    spool = tmp_path / "hpsearch-spool"
    splits, fingerprint = load_splits(DataSpec(**TINY))
    uploader = Uploader()
    uploader.hold()  # as while the next trial builds and traces its model
    config = make_config({"architecture": "baseline1", "epochs": 1, "seed": 1})
    with TrialRun("live", "trial-000", uploader=uploader) as run:
        tracked_trial(config, DataSpec(**TINY), splits, run, fingerprint, verbose=0)
    assert entries(spool) == [run.run_id]

    assert finish_spooled_uploads() == 0  # this process's own entry
    other = textwrap.dedent(f"""\
        from hpsearch.tracking import finish_spooled_uploads, set_tracking_uri
        set_tracking_uri({f"sqlite:///{tmp_path / 'mlflow.db'}"!r})
        print(finish_spooled_uploads())
        """)
    taken = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True,
                           cwd=tmp_path, env=environment(), timeout=120)  # fmt: skip
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert taken.stdout.split() == ["0"]  # another process on this host: its owner lives
    assert entries(spool) == [run.run_id]
    assert client.get_run(run.run_id).info.status == "RUNNING"

    assert uploader.drain(timeout=120)
    assert entries(spool) == []
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.run_id)} == TRIAL_ARTIFACTS


def test_best_export_of_a_trial_without_its_model_says_so_and_suggests_retraining(
    stores, monkeypatch, tmp_path
):
    monkeypatch.delenv("HPSEARCH_SPOOL_DIR", raising=False)
    storage, client = stores
    spec = parse_study(
        {"name": "modelless", "n_trials": 1, "data": TINY,
         "fixed": {"architecture": "baseline1", "epochs": 1, "batch_size": 32}},
        "modelless.yaml",
    )  # fmt: skip
    outcome = run_search(spec, storage, echo=lambda _: None, verbose=0)
    run = client.get_run(outcome.best_run_id)
    model = Path(urlsplit(run.info.artifact_uri).path) / "model.keras"
    model.unlink()  # as if its worker had died before uploading it

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        command("best", "--study", "modelless", "--storage", storage, "--tracking-uri", tracking,
                "--export", "best.keras"),
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environment(),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert (
        f"trial {outcome.best_trial} (MLflow run {outcome.best_run_id}) has no model.keras"
        in done.stderr
    )
    assert "hpsearch best --study modelless --retrain --export best.keras" in done.stderr
    assert sum(line.startswith("Error:") for line in done.stderr.splitlines()) == 1
    assert not (tmp_path / "best.keras").exists()

"""The chooser: best trial, combine, export, registry, report — on real tiny studies."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from hpsearch.choose.chooser import best_trial, combine, load_study
from hpsearch.choose.report import write_report
from hpsearch.errors import HpsearchError
from hpsearch.model.export import read_metadata
from hpsearch.search.lifecycle import run_search
from hpsearch.search.study_file import parse_study

pytestmark = pytest.mark.slow  # trains studies (module fixture); the real CLI, an MLflow server

DATA = {"dataset": "digits", "limit": 150}
FIXED = {"architecture": "baseline1", "epochs": 2, "batch_size": 32}


def grid(name: str, space: dict) -> dict:
    return {"name": name, "sampler": {"type": "grid", "seed": 0}, "data": DATA,
            "fixed": FIXED, "space": space}  # fmt: skip


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Two tiny real studies (plus a conflicting third) in one SQLite storage and MLflow store."""
    folder = tmp_path_factory.mktemp("chooser")
    here = os.getcwd()
    os.chdir(folder)  # a SQLite MLflow store keeps artifacts in ./mlruns
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    storage = f"sqlite:///{folder / 'optuna.db'}"
    specs = {
        "norm": grid("norm", {"batch_norm": {"choices": ["none", "after"]}}),
        "drop": grid("drop", {"dropout": {"choices": ["none", 0.3]},
                              "optimizer": {"choices": ["adam", "sgd"]}}),
        "weak": grid("weak", {"batch_norm": {"choices": ["before"]},
                              "learning_rate": {"choices": [1e-6]}}),
    }  # fmt: skip
    for name, spec in specs.items():
        run_search(parse_study(spec, f"{name}.yaml"), storage, echo=lambda _: None, verbose=0)
    yield folder, storage
    mlflow.set_tracking_uri(previous)
    os.chdir(here)


def test_combine_takes_each_factor_from_the_study_that_varied_it(studies):
    _, storage = studies
    bests = {n: best_trial(load_study(n, storage)) for n in ("norm", "drop", "weak")}
    combination = combine([bests["norm"], bests["drop"]], base={"epochs": 3})
    config = combination.config
    assert config.batch_norm == bests["norm"].config.batch_norm
    assert config.dropout == bests["drop"].config.dropout
    assert config.optimizer == bests["drop"].config.optimizer
    assert config.epochs == 3  # base beats winners
    assert config.architecture == "baseline2"  # fixed settings of the studies are not findings
    assert combination.sources["batch_norm"] == f"norm#{bests['norm'].number}"
    # conflict: 'weak' varied batch_norm too but scored worse, so 'norm' wins wherever it stands
    assert bests["weak"].value < bests["norm"].value
    for order in (["weak", "norm", "drop"], ["norm", "drop", "weak"]):
        merged = combine([bests[n] for n in order], base={}).config
        assert merged.batch_norm == bests["norm"].config.batch_norm
        assert merged.learning_rate == 1e-6  # only 'weak' varied it


def test_single_study_contributes_its_best_trial_whole(studies):
    _, storage = studies
    best = best_trial(load_study("drop", storage))
    combination = combine([best], base={})
    assert combination.config == best.config
    assert combination.epochs == best.best_epoch


def test_missing_study_and_study_without_completed_trial_give_clear_errors(studies):
    _, storage = studies
    with pytest.raises(HpsearchError, match=r"no study named 'nope'.*studies there: drop, norm"):
        load_study("nope", storage)
    empty = optuna.create_study(study_name="empty", storage=storage)
    empty.tell(empty.ask(), state=optuna.trial.TrialState.FAIL)
    with pytest.raises(HpsearchError, match=r"'empty' has no completed trial \(1 fail\)"):
        best_trial(load_study("empty", storage))


def test_report_lists_every_trial(studies):
    folder, storage = studies
    study = load_study("drop", storage)
    path, rows = write_report(study, folder / "report")
    assert [row.number for row in rows] == [t.number for t in study.trials] == [0, 1, 2, 3]
    text = path.read_text()
    for trial in study.trials:
        assert f"| {trial.number} | drop |" in text
    assert text.count("| drop |") == 4
    assert {"validation_curves.png", "accuracy_by_setting.png"} <= {
        p.name for p in path.parent.iterdir()
    }


def hpsearch(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "hpsearch.cli", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd, env=env)  # fmt: skip


def test_search_combine_export_register_and_predict(mlflow_server, tmp_path):
    study = tmp_path / "tiny.yaml"
    study.write_text(
        textwrap.dedent("""\
        name: tiny
        sampler: {type: grid, seed: 0}
        data: {dataset: digits, limit: 200}
        fixed: {architecture: baseline1, epochs: 3, batch_size: 32}
        space: {batch_norm: {choices: [none, before]}}
        """)
    )
    storage = ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--tracking-uri", mlflow_server]
    searched = hpsearch("search", str(study), *storage, "-q", cwd=tmp_path)
    assert searched.returncode == 0, searched.stderr[-2000:]

    shown = hpsearch("best", str(study), *storage, "--export", "best.keras", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert re.search(r"best trial \d, value 0\.\d+, MLflow run [0-9a-f]{32}", shown.stdout)
    assert (tmp_path / "best.keras").stat().st_size > 0
    digits = [str(d) for d in range(10)]
    assert read_metadata(tmp_path / "best.keras")["class_names"] == digits
    assert "probabilities of 10 classes (0, 1, 2, 3, ...)" in shown.stdout
    alone = hpsearch("best", *storage, cwd=tmp_path)  # the storage's only study, by name too
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert alone.stdout and shown.stdout.startswith(alone.stdout)  # then "exported ... to ..."

    final = tmp_path / "final.keras"
    combined = hpsearch("combine", str(study), *storage, "--export", str(final),
                        "--model-name", "tiny-final", "--set", "test_time_flip=true", "-q",
                        cwd=tmp_path)  # fmt: skip
    assert combined.returncode == 0, combined.stderr[-2000:]
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", combined.stdout).group(1)
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    logged = run.data.metrics["test_accuracy"]
    assert run.data.params["test_time_flip"] == "True"  # scored, and exported, mirror-averaged
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"confusion_matrix_test.png", "per_class_accuracy.csv", "confused_pairs.csv",
            "misclassified.png", "grad_cam.png"} <= artifacts  # fmt: skip
    assert sum(k.startswith("test_accuracy_") for k in run.data.metrics) == 10

    about = read_metadata(final)  # what the exported file says it predicts, and from what
    assert about["class_names"] == digits and about["mlflow_run_id"] == run_id
    assert about["input"] == {"shape": [8, 8, 1], "dtype": "uint8", "range": [0, 255]}

    version = client.get_model_version("tiny-final", "1")
    assert version.run_id == run_id
    assert version.tags["hpsearch.studies"] == "tiny"
    assert re.fullmatch(r"tiny#\d", version.tags["hpsearch.trials"])
    assert len(version.tags["hpsearch.data_fingerprint"]) == 16
    assert version.tags["hpsearch.code_version"].startswith("0.")
    served = served_predictions(mlflow_server, "models:/tiny-final/1", tmp_path)

    # a fresh process with nothing but Keras: raw uint8 images in, probabilities out
    probe = textwrap.dedent(f"""\
        import keras, numpy as np
        from sklearn.datasets import load_digits
        from hpsearch.datasets import load_dataset, split_dataset
        splits = split_dataset(load_dataset("digits"), 0.2, seed=0, limit=200)
        model = keras.saving.load_model({str(final)!r})
        assert model.get_layer("mirror_average")
        probabilities = model.predict(splits.x_test, verbose=0)
        assert probabilities.shape == (len(splits.x_test), 10), probabilities.shape
        print(model.predict(splits.x_test[:2], verbose=0).tolist())
        print(float(np.mean(probabilities.argmax(1) == splits.y_test)))
        """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) == pytest.approx(logged, abs=1e-9)
    # the served registered model answers the input example (the first two test images) alike
    local = json.loads(done.stdout.strip().splitlines()[-2])
    np.testing.assert_allclose(served, local, atol=1e-5)


def served_predictions(tracking: str, model_uri: str, tmp_path) -> list:
    """``mlflow models serve`` the model (a real server process) and post it the input example
    logged with it: raw uint8 images as JSON; its predictions."""
    from mlflow.artifacts import download_artifacts

    source = MlflowClient(tracking_uri=tracking).get_model_version_download_uri(
        *model_uri.removeprefix("models:/").split("/"))  # fmt: skip
    folder = download_artifacts(source, dst_path=str(tmp_path / "served"), tracking_uri=tracking)
    mlmodel = (Path(folder) / "MLmodel").read_text()
    assert "class_names:" in mlmodel and "signature:" in mlmodel, mlmodel
    example = json.loads((Path(folder) / "serving_input_example.json").read_text())
    assert np.asarray(example["inputs"]).shape == (2, 8, 8, 1)  # raw images, not features

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
         "local", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the model server did not answer /ping in 180 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=json.dumps(example).encode(),
            headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as answer:
            predictions = json.loads(answer.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.communicate(timeout=30)
    assert np.asarray(predictions).shape == (2, 10)
    return predictions


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["best", "--study", "ghost"], "no study named 'ghost'"),
        (["best", "ghost"], "no study named 'ghost'"),
        (["best"], "no study: the storage file"),
        (["report", "ghost"], "no study named 'ghost'"),
    ],
)
def test_commands_on_a_missing_study_exit_non_zero_with_a_clear_message(args, fragment, tmp_path):
    done = hpsearch(*args, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", cwd=tmp_path)
    assert done.returncode == 2
    assert fragment in done.stderr and "Traceback" not in done.stderr

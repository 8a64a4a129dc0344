"""The keras_tuner engine end to end: the real CLI, KerasTuner, a real MLflow server, SQLite.

The same tiny study runs with both engines and must leave the same MLflow layout; conditional
factors reach KerasTuner as conditional scopes; ``best --export``, ``report`` and ``combine``
work on a KerasTuner study; a failing trial fails alone; hyperband trains the epochs it asks
for; an interrupted KerasTuner search resumes and grows; bad engines and samplers are refused
naming the choices.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import optuna
import pytest
from conftest import command, environment, interrupt_during_trial
from mlflow import MlflowClient

from hpsearch.config import DataSpec, TrialConfig
from hpsearch.search.study_file import parse_study

STUDY = """\
name: {name}
{engine}objective: {{metric: best_val_accuracy, direction: maximize}}
sampler: {{type: random, seed: 0}}
n_trials: 3
data: {{dataset: digits, limit: 150}}
fixed: {{architecture: baseline1, epochs: 2, batch_size: 64}}
space:
  batch_norm: {{choices: [none, before]}}
  optimizer: {{choices: [adam, sgd_momentum, rmsprop_momentum]}}
  learning_rate: {{low: 1.0e-4, high: 3.0e-2, log: true}}
  momentum: {{low: 0.5, high: 0.95, when: {{optimizer: [sgd_momentum, rmsprop_momentum]}}}}
  dropout: {{choices: [none, 0.2]}}
"""
ENGINE_TAGS = ("keras_tuner.", "hpsearch.engine")  # what only the keras_tuner engine adds


def hpsearch(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=environment())  # fmt: skip


def study_runs(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def ours(keys) -> set[str]:
    return {k for k in keys if not k.startswith(ENGINE_TAGS)}


@pytest.mark.slow
def test_keras_tuner_study_has_the_same_run_layout_as_optuna(mlflow_server, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kt_file, optuna_file = tmp_path / "tiny_kt.yaml", tmp_path / "tiny_optuna.yaml"
    kt_file.write_text(STUDY.format(name="tiny_kt", engine="engine: keras_tuner\n"))
    optuna_file.write_text(STUDY.format(name="tiny_optuna", engine=""))
    optuna.storages.RDBStorage(storage)  # its tables, before two processes share it
    searches = [  # both engines at once: two processes, one storage, one tracking server
        subprocess.Popen(command("search", str(path), "--storage", storage, "--tracking-uri",
                                 mlflow_server, "--quiet"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=tmp_path, env=environment())
        for path in (kt_file, optuna_file)
    ]  # fmt: skip
    for process in searches:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        assert "best: trial" in out
    assert (tmp_path / "keras_tuner" / "tiny_kt" / "oracle.json").exists()  # beside optuna.db

    client = MlflowClient(tracking_uri=mlflow_server)
    layout = {}
    for name in ("tiny_kt", "tiny_optuna"):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.trials
        assert [t.state.name for t in trials] == ["COMPLETE"] * 3
        parents, children = study_runs(client, name)
        assert len(parents) == 1 and len(children) == 3
        parent = parents[0]
        assert parent.info.status == "FINISHED"
        assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
        assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
        assert all(c.info.status == "FINISHED" for c in children)
        by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
        assert sorted(by_number) == [0, 1, 2]
        for trial in trials:
            run = by_number[trial.number]
            assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
            assert run.data.tags["hpsearch.outcome"] == "completed"
            assert run.data.tags["optuna.study_name"] == name
            assert run.data.params["seed"] == str(trial.user_attrs["seed"])
            assert trial.user_attrs["config"]["optimizer"] == run.data.params["optimizer"]
            assert trial.value == pytest.approx(run.data.metrics["best_val_accuracy"])
            history = client.get_metric_history(run.info.run_id, "val_accuracy")
            assert len(history) == trial.user_attrs["epochs_run"]
            # the conditional factor: searched exactly when its condition holds
            assert ("momentum" in trial.params) == (
                trial.params["optimizer"] in ("sgd_momentum", "rmsprop_momentum")
            )
        child = children[0]
        layout[name] = {
            "params": {frozenset(c.data.params) for c in children},
            "tags": {frozenset(ours(c.data.tags)) for c in children},
            "metrics": {frozenset(c.data.metrics) for c in children},
            "artifacts": {a.path for a in client.list_artifacts(child.info.run_id)},
            "parent_params": set(parent.data.params),
            "parent_tags": ours(parent.data.tags),
            "parent_metrics": set(parent.data.metrics),
            "parent_artifacts": {a.path for a in client.list_artifacts(parent.info.run_id)},
            "study_attrs": set(study.user_attrs) - {"engine", "keras_tuner_project"},
        }
        assert parent.data.tags["best_run_id"] == by_number[study.best_trial.number].info.run_id
    kt, op = layout["tiny_kt"], layout["tiny_optuna"]
    assert kt == op
    assert len(kt["params"]) == 1  # every child run has the same param names
    assert next(iter(kt["params"])) == set(TrialConfig.model_fields) | set(DataSpec.model_fields)
    tags = next(iter(kt["tags"]))
    assert {"hpsearch.outcome", "optuna.study_name", "optuna.trial_number",
            "hpsearch.data_fingerprint"} <= tags  # fmt: skip
    assert {"trials.csv", "best_config.yaml", "optimization_history.png"} <= kt["parent_artifacts"]
    assert {"model.keras", "config.yaml", "training_curves.png"} <= kt["artifacts"]
    kt_parent = study_runs(client, "tiny_kt")[0][0]
    assert kt_parent.data.tags["hpsearch.engine"] == "keras_tuner"
    kt_children = study_runs(client, "tiny_kt")[1]
    assert sorted(c.data.tags["keras_tuner.trial_id"] for c in kt_children) == ["0", "1", "2"]

    # hpsearch best --export and report work on the KerasTuner study unchanged
    export, reports = tmp_path / "m.keras", tmp_path / "reports"
    store = ["--storage", storage, "--tracking-uri", mlflow_server]
    best = in_process("best", "--study", "tiny_kt", *store, "--export", str(export))
    assert "best trial" in best and export.exists()
    import keras
    import numpy as np

    model = keras.saving.load_model(export)
    assert model.predict(np.zeros((2, 8, 8, 1), "uint8"), verbose=0).shape == (2, 10)
    in_process("report", "tiny_kt", *store, "--output", str(reports))
    combined = in_process("combine", str(kt_file), *store, "--model-name", "", "--epochs", "1")
    assert "(from tiny_kt#" in combined and "test accuracy" in combined
    text = (reports / "tiny_kt" / "report.md").read_text()
    assert text.count("| complete |") == 3, text


def in_process(*args: str) -> str:
    """Run an hpsearch command in this process (no second TensorFlow start); its output."""
    import mlflow
    from click.testing import CliRunner

    from hpsearch.cli import main

    previous = mlflow.get_tracking_uri()
    try:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        mlflow.set_tracking_uri(previous)
    assert result.exit_code == 0, result.output[-3000:]
    return result.output


@pytest.mark.slow
def test_conditional_and_mixed_factors_reach_keras_tuner():
    import keras
    import keras_tuner

    from hpsearch.search.keras_tuner_space import StudyHyperModel, distribution, space_values

    study = parse_study(
        {
            "name": "cond",
            "engine": "keras_tuner",
            "sampler": {"type": "random"},
            "n_trials": 40,
            "fixed": {"architecture": "baseline1", "epochs": 1},
            "space": {
                "optimizer": {"choices": ["adam", "sgd_momentum"]},
                "momentum": {"low": 0.5, "high": 0.9, "when": {"optimizer": ["sgd_momentum"]}},
                "dropout": {"choices": ["none", 0.2]},  # mixed types: strings for KerasTuner
                "learning_rate": {"choices": [None, 0.001]},
                "batch_size": {"low": 16, "high": 64, "step": 16},
                "patience": {"low": 1, "high": 3, "when": {"dropout": [0.2]}},
                "lr_schedule": {"choices": ["constant"], "when": {"architecture": ["baseline2"]}},
            },
        },
        "cond.yaml",
    )
    hp = keras_tuner.HyperParameters()
    space_values(hp, study)
    names = {p.name: p for p in hp.space}
    assert set(names) == {
        "optimizer",
        "momentum",
        "dropout",
        "learning_rate",
        "batch_size",
        "patience",
    }  # fmt: skip  (lr_schedule: its condition is fixed false)
    assert [c.name for c in names["momentum"].conditions] == ["optimizer"]
    assert names["patience"].conditions[0].values == ["0.2"]
    assert isinstance(names["batch_size"], keras_tuner.engine.hyperparameters.Int)

    oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=40, seed=3)
    oracle.update_space(hp)
    seen = set()
    for _ in range(40):
        values = oracle._random_values()
        if values is None:
            break
        trial_hp = oracle.get_space()
        trial_hp.values = values
        decoded = space_values(trial_hp, study)
        assert ("momentum" in values) == (values["optimizer"] == "sgd_momentum")
        assert ("momentum" in decoded) == (decoded["optimizer"] == "sgd_momentum")
        assert ("patience" in decoded) == (decoded["dropout"] == 0.2)
        assert decoded["dropout"] in ("none", 0.2) and decoded["learning_rate"] in (None, 0.001)
        assert decoded["batch_size"] in (16, 32, 48, 64) and "lr_schedule" not in decoded
        for key, value in decoded.items():
            if key in study.space:
                assert distribution(study.space[key])._contains(
                    distribution(study.space[key]).to_internal_repr(value)
                )
        seen.add((decoded["optimizer"], decoded["dropout"]))
    assert len(seen) == 4

    model = StudyHyperModel(study, (8, 8, 1), 10, 2).build(trial_hp)
    assert isinstance(model, keras.Model) and model.output_shape == (None, 10)


BAD = [
    ("engine: pytorch\n", ["engine", "pytorch", "optuna", "keras_tuner"]),
    ("engine: keras_tuner\nsampler: {type: tpe}\n",
     ["sampler.type", "'tpe'", "keras_tuner engine", "random, bayesian, hyperband"]),
    ("sampler: {type: hyperband}\n",
     ["sampler.type", "'hyperband'", "optuna engine", "grid, random, tpe, cmaes, qmc"]),
    ("engine: keras_tuner\nsampler: {type: random}\npruner: {type: median}\n",
     ["pruner.type", "keras_tuner engine does not prune"]),
    ("sampler: {type: random, max_epochs: 3}\n", ["sampler.max_epochs", "keras_tuner engine"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "fragments"),
    BAD,
    ids=["engine", "kt_tpe", "optuna_hyperband", "kt_pruner", "optuna_max_epochs"],
)
def test_bad_engine_or_sampler_is_refused_naming_the_choices(text, fragments, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nn_trials: 2\ndata: {dataset: digits}\n" + text)
    done = hpsearch("validate", str(path), cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert str(path) in done.stderr and "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, done.stderr


def test_search_with_an_engine_that_lacks_the_sampler_exits_2_and_writes_nothing(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(name="lacks", engine="").replace("type: random", "type: tpe"))
    store = ["--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    done = hpsearch("search", str(path), "--engine", "keras_tuner", *store, cwd=tmp_path)
    assert done.returncode == 2
    assert "sampler.type" in done.stderr and "random, bayesian, hyperband" in done.stderr
    unknown = hpsearch("search", str(path), "--engine", "pytorch", *store, cwd=tmp_path)
    assert unknown.returncode == 2
    assert "'optuna'" in unknown.stderr and "'keras_tuner'" in unknown.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


@pytest.mark.slow
def test_interrupted_keras_tuner_search_resumes_and_grows(mlflow_server, tmp_path):
    study = tmp_path / "resume_kt.yaml"
    study.write_text(
        "name: resume_kt\nengine: keras_tuner\nsampler: {type: bayesian, seed: 0}\nn_trials: 3\n"
        "data: {dataset: digits, limit: 200}\n"
        "fixed: {architecture: baseline1, epochs: 16, batch_size: 8, patience: 20}\n"
        "space: {batch_norm: {choices: [none, before]},"
        " learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}}\n"
    )
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = command("search", str(study), "--storage", storage, "--tracking-uri", mlflow_server)
    returncode, rest = interrupt_during_trial(args, tmp_path, "[resume_kt] trial 0")
    assert returncode == 130, rest[-3000:]
    assert "interrupted" in rest

    client = MlflowClient(tracking_uri=mlflow_server)
    parents, children = study_runs(client, "resume_kt")
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert all(c.info.status != "RUNNING" for c in children)
    first_parent = parents[0].info.run_id
    before = optuna.load_study(study_name="resume_kt", storage=storage).trials
    assert [t.state.name for t in before] == ["COMPLETE", "FAIL"]
    assert before[1].user_attrs["fail_reason"] == "interrupted"

    # rerun with a larger total: the cut trial is retried, then the project grows to 4 trials
    rerun = hpsearch(*args[3:], "--quiet", "--set", "epochs=2", "--n-trials", "4", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    announced = r"resuming with KerasTuner \(bayesian, project \S+resume_kt\): 3 of 4 left; \d+ "
    assert re.search(announced + "training images; storage sqlite:", rerun.stdout), rerun.stdout

    trials = optuna.load_study(study_name="resume_kt", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE",
                                              "COMPLETE"]  # fmt: skip
    assert trials[0].params == before[0].params  # earlier trials kept
    assert trials[0].user_attrs["mlflow_run_id"] == before[0].user_attrs["mlflow_run_id"]
    ids = [t.user_attrs["keras_tuner_trial_id"] for t in trials]
    assert ids[1] == ids[2] and trials[2].params == trials[1].params  # the cut trial, retried
    assert len({int(i) for i in ids}) == 4  # KerasTuner's project holds 4 trials
    parents, children = study_runs(client, "resume_kt")
    assert [p.info.run_id for p in parents] == [first_parent]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == len(trials)
    killed = [c for c in children if c.info.status == "KILLED"]
    assert len(killed) == 1 and killed[0].data.tags["hpsearch.failure_reason"] == "interrupted"
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == list(range(5))


def tiny(name: str, sampler: dict, space: dict, **settings) -> dict:
    return {
        "name": name,
        "engine": "keras_tuner",
        "sampler": sampler,
        "data": {"dataset": "digits", "limit": 120},
        "fixed": {"architecture": "baseline1", "epochs": 2, "batch_size": 32},
        "space": space,
        **settings,
    }


@pytest.mark.slow
def test_a_failing_trial_is_recorded_failed_and_the_search_goes_on(stores):
    from hpsearch.search.lifecycle import run_search

    storage, client = stores
    spec = parse_study(
        tiny("failing_kt", {"type": "random", "seed": 0}, n_trials=3, space={
            # three rates for baseline1's two blocks: a trial that draws it cannot run
            "dropout": {"choices": ["none", "0.2/0.5/0.7"]},
            "learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
        }),
        "failing_kt.yaml",
    )  # fmt: skip
    outcome = run_search(spec, storage, echo=lambda _: None, verbose=0)
    trials = optuna.load_study(study_name="failing_kt", storage=storage).trials
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert outcome.counts == {"complete": 3, "pruned": 0, "failed": len(failed)}
    assert failed and all(t.params["dropout"] == "0.2/0.5/0.7" for t in failed)
    assert all(t.user_attrs["fail_reason"] == "invalid_config" for t in failed)
    parents, children = study_runs(client, "failing_kt")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    by_number = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    assert len(by_number) == len(trials)
    for trial in failed:
        run = by_number[trial.number]
        assert run.info.status == "FAILED"
        assert run.data.tags["hpsearch.outcome"] == "failed"
        assert run.data.tags["hpsearch.failure_reason"] == "invalid_config"


@pytest.mark.slow
def test_hyperband_trains_the_epochs_keras_tuner_asks_for(stores, tmp_path):
    from hpsearch.search.lifecycle import run_search

    storage, client = stores
    spec = parse_study(
        tiny("hyperband_kt", {"type": "hyperband", "seed": 0, "max_epochs": 3, "factor": 3},
             space={"learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}}),
        "hyperband_kt.yaml",
    )  # fmt: skip
    outcome = run_search(spec, storage, echo=lambda _: None, verbose=0)
    assert outcome.counts["complete"] >= 4 and outcome.counts["failed"] == 0
    trials = optuna.load_study(study_name="hyperband_kt", storage=storage).trials
    _, children = study_runs(client, "hyperband_kt")
    runs = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    epochs = [t.user_attrs["epochs_run"] for t in trials]
    assert set(epochs) >= {1, 3}  # hyperband's short first round and its full-length trials
    resumed = [t for t in trials if "resumed_from_keras_tuner_trial" in t.user_attrs]
    assert resumed, "a later round continues an earlier trial"
    for trial in resumed:
        run = runs[trial.number]
        start = trial.user_attrs["initial_epoch"]
        assert run.data.tags["keras_tuner.initial_epoch"] == str(start)
        assert int(run.data.params["epochs"]) == 3 - start  # trains only the epochs left
        earlier = next(t for t in trials if t.user_attrs["keras_tuner_trial_id"]
                       == trial.user_attrs["resumed_from_keras_tuner_trial"])  # fmt: skip
        assert trial.params == earlier.params
    assert (tmp_path / "keras_tuner" / "hyperband_kt" / "oracle.json").exists()

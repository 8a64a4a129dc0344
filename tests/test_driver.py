"""The study driver in-process: grids, failures, pruning, on real Optuna/MLflow/Keras."""

from __future__ import annotations

import itertools
import math

import keras
import optuna
import pytest
from conftest import parents_and_children
from optuna.trial import TrialState

from hpsearch.search.lifecycle import run_search
from hpsearch.search.study_file import parse_study


def tiny_study(name: str, **settings) -> dict:
    return {
        "name": name,
        "data": {"dataset": "digits", "limit": 120},
        "fixed": {"architecture": "baseline1", "epochs": 2, "batch_size": 32},
        **settings,
    }


@pytest.mark.slow
def test_grid_study_enumerates_exactly_its_grid(stores):
    storage, client = stores
    spec = parse_study(
        tiny_study(
            "grid",
            sampler={"type": "grid", "seed": 3},
            space={
                "batch_norm": {"choices": ["none", "after"]},
                "dropout": {"choices": ["none", 0.3]},
            },
        ),
        "grid.yaml",
    )
    outcome = run_search(spec, storage, echo=lambda _: None, verbose=0)
    assert outcome.counts == {"complete": 4, "pruned": 0, "failed": 0}
    trials = optuna.load_study(study_name="grid", storage=storage).trials
    combos = {(t.params["batch_norm"], t.params["dropout"]) for t in trials}
    assert combos == set(itertools.product(["none", "after"], ["none", 0.3]))
    again = run_search(spec, storage, echo=lambda _: None, verbose=0)  # nothing left to run
    assert sum(again.counts.values()) == 4 and again.parent_run_id == outcome.parent_run_id
    parents, children = parents_and_children(client, "grid")
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.params["batch_norm"] for c in children} == {"none", "after"}
    summary = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"trials.csv", "best_config.yaml", "optimization_history.png"} <= summary
    assert parents[0].data.tags["best_run_id"] == outcome.best_run_id


class PoisonWeights(keras.callbacks.Callback):
    """Makes the loss NaN by writing NaN into the output kernel (a real diverged fit)."""

    def on_train_batch_end(self, batch, logs=None):
        kernel = self.model.get_layer("probabilities").kernel
        kernel.assign(keras.ops.full(kernel.shape, math.nan))


class Explode(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        raise RuntimeError("simulated crash inside training")


@pytest.mark.slow
def test_nan_and_raising_trials_fail_with_reason_and_the_study_goes_on(stores):
    storage, client = stores
    spec = parse_study(
        tiny_study("failing", sampler={"type": "random", "seed": 0}, n_trials=4,
                   space={"batch_norm": {"choices": ["none", "before"]}}),
        "failing.yaml",
    )  # fmt: skip
    poison = {1: [PoisonWeights()], 2: [Explode()]}
    outcome = run_search(
        spec, storage, echo=lambda _: None, verbose=0,
        extra_callbacks=lambda trial: poison.get(trial.number, []),
    )  # fmt: skip
    trials = optuna.load_study(study_name="failing", storage=storage).trials
    assert [t.state for t in trials[:3]] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert trials[1].user_attrs["fail_reason"] == "nan_loss"
    assert trials[2].user_attrs["fail_reason"] == "exception:RuntimeError"
    # the study went on after the failures, until its total of 4 completed trials
    assert [t.state for t in trials[3:]] == [TrialState.COMPLETE] * 3
    assert outcome.counts == {"complete": 4, "pruned": 0, "failed": 2}
    _, children = parents_and_children(client, "failing")
    by_trial = {int(c.data.tags["optuna.trial_number"]): c for c in children}
    assert by_trial[1].info.status == "FAILED"
    assert by_trial[1].data.tags["hpsearch.failure_reason"] == "nan_loss"
    assert by_trial[2].data.tags["hpsearch.failure_reason"] == "exception:RuntimeError"
    assert "simulated crash" in by_trial[2].data.tags["hpsearch.failure_detail"]
    assert by_trial[0].info.status == "FINISHED"
    assert all(c.info.status != "RUNNING" for c in children)


@pytest.mark.slow
def test_a_study_whose_every_trial_fails_stops_instead_of_looping(stores):
    storage, _ = stores
    spec = parse_study(tiny_study("doomed", sampler={"type": "random"}, n_trials=20), "d.yaml")
    lines = []
    outcome = run_search(spec, storage, echo=lines.append, verbose=0,
                         extra_callbacks=lambda trial: [Explode()])  # fmt: skip
    assert outcome.counts == {"complete": 0, "pruned": 0, "failed": 5}
    assert "5 trials in a row failed" in lines[-1]


@pytest.mark.slow
def test_pruned_study_prunes_and_saves_epochs(stores):
    storage, client = stores
    settings = dict(
        sampler={"type": "grid", "seed": 1},
        fixed={"architecture": "baseline1", "epochs": 4, "batch_size": 32, "patience": 10},
        space={"learning_rate": {"choices": [3e-3, 1e-3, 1e-6, 2e-6, 3e-6, 5e-6]}},
    )
    pruned = parse_study(
        tiny_study("pruned", pruner={"type": "median", "n_startup_trials": 2,
                                     "n_warmup_steps": 0}, **settings),
        "pruned.yaml",
    )  # fmt: skip
    outcome = run_search(pruned, storage, echo=lambda _: None, verbose=0)
    assert outcome.counts["pruned"] >= 1
    trials = optuna.load_study(study_name="pruned", storage=storage).trials
    epochs = sum(t.user_attrs.get("epochs_run", t.last_step or 0)
                 for t in trials)  # fmt: skip
    assert epochs < 6 * 4
    _, children = parents_and_children(client, "pruned")
    outcomes = {c.data.tags["hpsearch.outcome"] for c in children}
    assert outcomes == {"completed", "pruned"}
    assert all(c.info.status == "FINISHED" for c in children)


def test_sqlite_storage_writes_ahead_and_a_second_worker_reads_while_it_writes(tmp_path):
    import sqlite3

    from hpsearch.search.options import WorkerOptions
    from hpsearch.search.storage import make_storage

    url = f"sqlite:///{tmp_path}/optuna.db"
    first = make_storage(url, WorkerOptions(heartbeat=0))
    study = optuna.create_study(storage=first, study_name="wal", direction="maximize")
    trial = study.ask()
    trial.report(0.5, step=1)
    second = make_storage(url, WorkerOptions(heartbeat=0))
    assert [t.state for t in optuna.load_study(study_name="wal", storage=second).trials] == [
        TrialState.RUNNING
    ]
    study.tell(trial, 0.75)
    assert optuna.load_study(study_name="wal", storage=second).best_value == 0.75
    with first.engine.connect() as connection:  # NORMAL (1): synced at checkpoints, not commits
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    with sqlite3.connect(tmp_path / "optuna.db") as plain:  # the mode is kept in the file
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.slow
def test_ctrl_c_after_the_run_closed_but_before_optuna_recorded_the_trial(stores, monkeypatch):
    from hpsearch.search import optuna_engine as driver

    def interrupted(self, trial, result):  # Ctrl-C lands just after the run's `with` block
        raise KeyboardInterrupt

    monkeypatch.setattr(driver._Objective, "_record", interrupted)
    storage, client = stores
    spec = parse_study(tiny_study("ctrl-c", n_trials=3), "ctrl-c.yaml")
    assert run_search(spec, storage, echo=lambda _: None, verbose=0).interrupted
    trial, again = optuna.load_study(study_name="ctrl-c", storage=storage).trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"] == "interrupted"
    # its configuration is queued to run first on the next run, without the failure's reason
    assert again.state == TrialState.WAITING and again.params == trial.params
    assert again.system_attrs["failed_trial"] == trial.number
    assert "fail_reason" not in again.user_attrs
    run = client.get_run(trial.user_attrs["mlflow_run_id"])  # says the same as Optuna
    assert run.info.status == "KILLED"
    assert run.data.tags["hpsearch.outcome"] == "failed"
    assert run.data.tags["hpsearch.failure_reason"] == "interrupted"


def test_summary_draws_importances_only_for_two_completed_trials_with_searched_params(tmp_path):
    from hpsearch.search.summary import write_summary

    def drawn(objective, trials: int) -> set[str]:
        study = optuna.create_study(direction="maximize")
        study.optimize(objective, n_trials=trials)
        return {path.name for path in write_summary(study, tmp_path) if path.suffix == ".png"}

    assert drawn(lambda trial: 0.5, 3) == {"optimization_history.png"}  # nothing searched
    searched = lambda trial: trial.suggest_float("learning_rate", 1e-4, 1e-2)  # noqa: E731
    assert drawn(searched, 1) == {"optimization_history.png"}
    assert drawn(searched, 3) == {"optimization_history.png", "param_importances.png"}
    assert (tmp_path / "param_importances.png").stat().st_size > 0


def test_the_summary_leaves_matplotlibs_settings_as_it_found_them(tmp_path):
    import matplotlib

    from hpsearch.search.summary import write_summary

    study = optuna.create_study(direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("learning_rate", 1e-4, 1e-2), n_trials=3)
    before = dict(matplotlib.rcParams)
    drawn = {path.name for path in write_summary(study, tmp_path)}
    assert {"optimization_history.png", "param_importances.png"} <= drawn
    assert dict(matplotlib.rcParams) == before  # not Optuna's ggplot style from now on


def test_the_progress_line_counts_outcomes_and_names_the_best_trial_as_optuna_does():
    from hpsearch.search.study_progress import StudyProgress

    for direction, values in (("maximize", [0.3, 0.9, None, 0.9, 0.1]),
                              ("minimize", [0.3, 0.9, None, 0.1, 0.1])):  # fmt: skip
        lines: list[str] = []
        study = optuna.create_study(direction=direction)

        def objective(trial, values=values):
            value = values[trial.number]
            if value is None:
                raise optuna.TrialPruned()
            return value

        study.optimize(objective, n_trials=len(values), callbacks=[StudyProgress(5, lines.append)])
        best = study.best_trial
        assert best.number == (1 if direction == "maximize" else 3)  # the earliest of equals
        counts = "5/5 done: 4 complete, 1 pruned, 0 failed"
        assert lines[-1].endswith(f"| {counts} | best {best.value:.4f} (trial {best.number})")
        assert "trial 2 pruned" in lines[2] and "best" in lines[2]

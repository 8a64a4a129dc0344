"""Workers of one study propose different points; a lone seeded process stays reproducible.

Real Optuna (SQLite), real MLflow, real Keras on tiny digits models."""

from __future__ import annotations

import re
import subprocess
import textwrap

import optuna
import pytest
from conftest import command, environment
from optuna.trial import TrialState

from hpsearch.search.lifecycle import run_search
from hpsearch.search.samplers import make_sampler, worker_seed
from hpsearch.search.space import SearchSpace
from hpsearch.search.study_file import parse_study

TINY = """\
    data: {dataset: digits, limit: 100}
    fixed: {architecture: baseline1, epochs: 1, batch_size: 32}
    """


def write_study(folder, name: str, body: str):
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(TINY) + textwrap.dedent(body))
    return path


def search(folder, study, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command("search", str(study), "--storage", f"sqlite:///{folder / 'optuna.db'}",
                "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--quiet", *args),
        capture_output=True, text=True, timeout=900, cwd=folder, env=environment(),
    )  # fmt: skip


def test_worker_seeds_differ_by_worker_and_stay_the_study_seed_for_a_lone_process():
    assert worker_seed(7, None) == 7  # a lone `hpsearch search`: the study's seed, as before
    seeds = {worker_seed(7, index) for index in range(8)} | {worker_seed(7, "host:1234")}
    assert len(seeds) == 9 and 7 not in seeds
    assert worker_seed(7, 3) == worker_seed(7, 3) != worker_seed(8, 3)  # stable, per study seed
    spec = parse_study({"name": "s", "sampler": {"type": "random", "seed": 7}, "n_trials": 1},
                       "s.yaml")  # fmt: skip
    space = SearchSpace.of(spec)

    def first_draw(worker):
        study = optuna.create_study(sampler=make_sampler(spec.sampler, space, worker))
        return study.ask().suggest_float("x", 0.0, 1.0)

    assert first_draw(None) == first_draw(None) != first_draw(0) != first_draw(1)


@pytest.mark.slow
def test_two_workers_propose_different_learning_rates_and_one_summary_is_printed(tmp_path):
    study = write_study(tmp_path, "spread", """\
        sampler: {type: random, seed: 5}
        n_trials: 4
        space: {learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}}
        """)  # fmt: skip
    done = search(tmp_path, study, "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(study_name="spread", storage=f"sqlite:///{tmp_path}/optuna.db")
    rates = [t.params["learning_rate"] for t in trials.trials]
    print(f"2 workers, learning rates: {rates}")
    assert [t.state for t in trials.trials] == [TrialState.COMPLETE] * 4
    assert len({t.user_attrs["worker"] for t in trials.trials}) == 2  # both took part
    assert len(set(rates)) == 4, rates  # no two trials trained the same configuration
    # the summary once (from the launcher), not once per worker and again
    assert done.stdout.count("best: trial") == 1, done.stdout
    assert done.stdout.count("[spread] 4 complete, 0 pruned, 0 failed") == 1
    for finished, total in re.findall(r"\| (\d+)/(\d+) done", done.stdout):
        assert int(finished) <= int(total)


@pytest.mark.slow
def test_two_workers_on_a_grid_visit_each_point_exactly_once(tmp_path):
    study = write_study(tmp_path, "grid2", """\
        sampler: {type: grid, seed: 1}
        space: {batch_norm: {choices: [none, before]}, dropout: {choices: [none, 0.2]}}
        """)  # fmt: skip
    done = search(tmp_path, study, "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(study_name="grid2", storage=f"sqlite:///{tmp_path}/optuna.db")
    points = sorted((t.params["batch_norm"], str(t.params["dropout"])) for t in trials.trials)
    assert points == [("before", "0.2"), ("before", "none"), ("none", "0.2"), ("none", "none")]
    assert all(t.state == TrialState.COMPLETE for t in trials.trials)
    assert len({t.user_attrs["worker"] for t in trials.trials}) == 2


@pytest.mark.slow
def test_a_lone_process_with_a_seed_draws_the_same_trials_on_every_run_from_scratch(stores):
    storage, _ = stores
    spec = parse_study(
        {"name": "again", "sampler": {"type": "tpe", "seed": 11, "n_startup_trials": 2},
         "n_trials": 3, "data": {"dataset": "digits", "limit": 100},
         "fixed": {"architecture": "baseline1", "epochs": 1, "batch_size": 32},
         "space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                   "batch_norm": {"choices": ["none", "before"]}}},
        "again.yaml",
    )  # fmt: skip
    second = storage.replace("optuna.db", "optuna-again.db")
    drawn = []
    for url in (storage, second):
        run_search(spec, url, echo=lambda _: None, verbose=0)
        study = optuna.load_study(study_name="again", storage=url)
        drawn.append([t.params for t in study.trials])
    assert drawn[0] == drawn[1] and len(drawn[0]) == 3
    assert len({p["learning_rate"] for p in drawn[0]}) == 3

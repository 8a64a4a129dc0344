"""Repeats and explicit points: every configuration N times, aggregated as mean, sd and n."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.choose.chooser import best_trial, describe_best
from hpsearch.choose.repeats import config_key, group_trials, mean_sd
from hpsearch.choose.report import write_report
from hpsearch.errors import ConfigError
from hpsearch.search.lifecycle import run_search
from hpsearch.search.space import SearchSpace
from hpsearch.search.study_file import parse_study


def tiny(name: str, **settings) -> dict:
    return {
        "name": name,
        "data": {"dataset": "digits", "limit": 100},
        "fixed": {"architecture": "baseline1", "batch_size": 32},
        "evaluate_test": True,
        **settings,
    }


@pytest.mark.slow
def test_grid_runs_every_point_once_per_repeat_with_its_own_seed(stores, tmp_path):
    storage, client = stores
    spec = parse_study(tiny("points", sampler={"type": "grid"}, repeats=2, points=[
        {"dropout": 0.2, "dropout_placement": "conv", "epochs": 1},
        {"dropout": 0.2, "dropout_placement": "conv", "epochs": 2},
    ]), "points.yaml")  # fmt: skip
    assert SearchSpace.of(spec).grid_size() == 4
    outcome = run_search(spec, storage, echo=lambda _: None, verbose=0)
    assert outcome.counts == {"complete": 4, "pruned": 0, "failed": 0}
    study = optuna.load_study(study_name="points", storage=storage)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    seen = sorted((t.user_attrs["config"]["epochs"], t.user_attrs["repeat"]) for t in trials)
    assert seen == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert len({t.user_attrs["seed"] for t in trials}) == 4
    for trial in trials:  # the kept weights scored once on the test set, and on validation
        assert 0 <= trial.user_attrs["test_accuracy"] <= 1
        assert 0 <= trial.user_attrs["kept_val_accuracy"] <= 1
    groups = group_trials(trials)
    assert [len(g.trials) for g in groups] == [2, 2]
    # best: the configuration with the best mean over its repeats, the best repeat's run
    best = best_trial(study)
    means = {g.key: g.summary() for g in groups}
    top = max(means.values(), key=lambda s: s[0])
    assert (best.value, best.sd, best.n) == pytest.approx(top)
    assert "2 repeats" in describe_best(best)
    assert config_key(best.config.model_dump(mode="json")) in means
    runs = client.search_runs([outcome.experiment_id], "tags.`hpsearch.repeat` = '1'")
    assert len(runs) == 2
    path, rows = write_report(study, tmp_path / "report")
    text = path.read_text()
    assert "## By configuration" in text and text.count(" ± ") >= 2
    assert {r.setting for r in rows} == {
        "dropout=0.2, dropout_placement=conv, epochs=1",
        "dropout=0.2, dropout_placement=conv, epochs=2",
    }


@pytest.mark.slow
def test_other_samplers_repeat_a_configuration_by_enqueueing_it(stores):
    storage, _ = stores
    spec = parse_study(tiny("tpe", sampler={"type": "tpe", "seed": 1}, n_trials=2, repeats=2,
                            fixed={"architecture": "baseline1", "epochs": 1, "batch_size": 32},
                            space={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}),
                       "tpe.yaml")  # fmt: skip
    outcome = run_search(spec, storage, echo=lambda _: None, verbose=0)
    assert outcome.counts["complete"] == 4  # 2 configurations x 2 repeats
    trials = optuna.load_study(study_name="tpe", storage=storage).trials
    groups = group_trials(trials)
    assert len(groups) == 2 and all(len(g.trials) == 2 for g in groups)
    for group in groups:
        assert sorted(t.user_attrs["repeat"] for t in group.trials) == [0, 1]
        assert len({t.params["learning_rate"] for t in group.trials}) == 1
        assert len({t.user_attrs["seed"] for t in group.trials}) == 2


def test_mean_sd_of_repeats():
    assert mean_sd([0.5]) == (0.5, 0.0)
    mean, sd = mean_sd([0.1, 0.3])
    assert mean == pytest.approx(0.2) and sd == pytest.approx(0.1414, abs=1e-4)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"repeats": 0}, "repeats"),
        ({"repeats": "two"}, "repeats"),
        ({"sampler": {"type": "tpe"}, "n_trials": 2, "points": [{"epochs": 1}]},
         "points: explicit settings need the grid sampler"),
        ({"sampler": {"type": "grid"}, "points": [{"wingspan": 1}]}, "unknown key 'wingspan'"),
        ({"sampler": {"type": "grid"}, "points": [{"batch_size": 32}]},
         "batch_size is also in fixed"),
        ({"sampler": {"type": "grid"}, "points": [{"epochs": 1}, {"epochs": 1}]},
         "listed twice"),
        ({"sampler": {"type": "grid"}, "points": [{"epochs": 0}]}, "points[0]"),
        ({"engine": "keras_tuner", "sampler": {"type": "random"}, "n_trials": 2, "repeats": 2},
         "repeats: a setting of the optuna engine"),
    ],
)  # fmt: skip
def test_bad_repeats_and_points_name_the_key(settings, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_study(tiny("bad", **settings), "bad.yaml")

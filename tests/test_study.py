"""Study files: every shipped file validates, bad files are rejected before anything runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from conftest import command, environment, pruned_study

from hpsearch.search.space import SearchSpace
from hpsearch.search.study_file import load_study, parse_study

STUDIES = sorted((Path(__file__).parents[1] / "studies").glob("*.yaml"))
REFERENCE = {
    "baselines", "batch_norm", "batch_size", "initializer", "dropout", "weight_decay",
    "activation_bn", "optimizers", "learning_rate", "augmentation", "combined", "joint", "smoke",
    "optimizer_switch",
}  # fmt: skip


def test_every_reference_experiment_has_a_study_file():
    assert {path.stem for path in STUDIES} == REFERENCE


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_shipped_study_file_validates_and_cites_its_finding(path):
    study = load_study(path)
    assert study.name == path.stem
    assert len(study.description) > 40


def test_grid_studies_vary_the_factor_of_their_experiment():
    weight_decay = load_study(STUDIES[0].parent / "weight_decay.yaml")
    space = SearchSpace.of(weight_decay)
    assert space.grid_size() == 36  # 3 kinds x 6 magnitudes, with and without dropout
    assert space.total(None) == 36 == space.total(100) and space.total(10) == 10
    dropout = SearchSpace.of(load_study(STUDIES[0].parent / "dropout.yaml"))
    assert dropout.grid_size() == 4 and not dropout.factors  # four explicit points
    assert dropout.searched_keys() == ["dropout", "dropout_placement", "epochs"]


def test_conditional_factor_is_suggested_only_when_its_condition_holds():
    study = parse_study(
        {
            "name": "cond",
            "n_trials": 30,
            "space": {
                "optimizer": {"choices": ["adam", "sgd_momentum"]},
                "momentum": {"low": 0.5, "high": 0.9, "when": {"optimizer": ["sgd_momentum"]}},
            },
        },
        "cond.yaml",
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seen = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = seen.ask()
        values = SearchSpace.of(study).suggest(trial)
        assert ("momentum" in values) == (values["optimizer"] == "sgd_momentum")
        seen.tell(trial, 0.0)
    assert {t.params["optimizer"] for t in seen.trials} == {"adam", "sgd_momentum"}


BASE = "name: bad\nn_trials: 2\ndata: {dataset: digits}\n"
BAD_FILES = [
    ("unknown_key", BASE + "colour: red\n", ["colour", "unknown key"]),
    ("unknown_factor", BASE + "space: {wingspan: {choices: [1, 2]}}\n", ["space.wingspan", "unknown factor"]),
    ("unknown_sampler", BASE + "sampler: {type: annealing}\n", ["sampler.type", "annealing", "tpe"]),
    ("unknown_pruner", BASE + "pruner: {type: guillotine}\n", ["pruner.type", "guillotine", "hyperband"]),
    ("low_above_high", BASE + "space: {learning_rate: {low: 0.1, high: 0.01}}\n", ["space.learning_rate", "low (0.1) must be below high"]),
    ("empty_choices", BASE + "space: {batch_norm: {choices: []}}\n", ["space.batch_norm", "choices is empty"]),
    ("wrong_type", "name: bad\nn_trials: many\n", ["n_trials", "many"]),
    ("bad_choice_value", BASE + "space: {batch_norm: {choices: [none, sideways]}}\n", ["batch_norm", "sideways"]),
    ("when_unknown", BASE + "space: {momentum: {low: 0.5, high: 0.9, when: {optimiser: [sgd]}}}\n", ["space.momentum.when", "optimiser"]),
    ("bad_fixed", BASE + "fixed: {epochs: 0}\n", ["fixed", "epochs"]),
    ("grid_without_values", "name: bad\nsampler: {type: grid}\nspace: {learning_rate: {low: 0.001, high: 0.1}}\n", ["space.learning_rate", "grid"]),
    ("not_a_mapping", "- 1\n- 2\n", ["expected a mapping"]),
    ("bootstrap_auto", BASE + "pruner: {type: successive_halving, bootstrap_count: 2}\n", ["pruner", "bootstrap_count", "min_resource"]),
]  # fmt: skip


@pytest.mark.parametrize(("bootstrap", "first_two_pruned"), [(0, False), (2, True)])
def test_bootstrap_count_prunes_the_first_trials_at_a_rung(bootstrap, first_two_pruned, tmp_path):
    study = pruned_study(tmp_path, epochs=9, type="successive_halving", min_resource=1,
                         bootstrap_count=bootstrap)  # fmt: skip
    decisions = []
    for value in (0.5, 0.6, 0.7):  # each the best so far at the first rung (epoch 1)
        trial = study.ask()
        trial.report(value, step=1)
        decisions.append(trial.should_prune())
        study.tell(trial, value)
    assert decisions == [first_two_pruned, first_two_pruned, False]


def hpsearch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*args), capture_output=True, text=True, timeout=120, cwd=cwd, env=environment()
    )


@pytest.mark.parametrize(("label", "text", "fragments"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_study_file_is_rejected_naming_file_and_key(label, text, fragments, tmp_path):
    path = tmp_path / f"{label}.yaml"
    path.write_text(text)
    with pytest.raises(Exception) as caught:
        load_study(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_search_on_a_bad_file_exits_non_zero_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_FILES[1][1])
    done = hpsearch(
        "search", str(bad),
        "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "bad.yaml" in done.stderr and "wingspan" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_validate_command_checks_every_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_FILES[0][1])
    good = hpsearch("validate", *map(str, STUDIES), cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert good.stdout.count(": ok") == len(STUDIES)
    mixed = hpsearch("validate", str(STUDIES[0]), str(bad), cwd=tmp_path)
    assert mixed.returncode == 2
    assert "colour" in mixed.stderr and ": ok" in mixed.stdout

"""The shipped study files run what the reference study ran: every number has its trial.

Each number of SPEC's table (and the study's text) is held against the study file and
grid point that reproduces it: a file that drifts from the study (a batch size, an
initialiser, an epoch cap, a placement) no longer matches, and this fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpsearch.choose.reference import REFERENCE_NUMBERS, STUDY_ORDER, reference_numbers
from hpsearch.config import make_config
from hpsearch.search.space import SearchSpace
from hpsearch.search.study_file import load_study

STUDIES = Path(__file__).parents[1] / "studies"
SPEC = Path(__file__).parents[2] / "shared" / "SPEC.md"
TEXT = Path(__file__).parents[2] / "shared" / "reference" / "study.txt"


def grid_configs(name: str) -> list[dict]:
    """Every configuration the study file's grid trains (resolved trial configs)."""
    spec = load_study(STUDIES / f"{name}.yaml")
    grid = SearchSpace.of(spec).grid_axes()
    configs = [dict(spec.fixed)]
    for key, values in grid.items():
        if key == "repeat":
            continue
        if key == "point":
            configs = [{**c, **spec.points[i]} for c in configs for i in values]
        else:
            configs = [{**c, key: v} for c in configs for v in values]
    return [make_config(c).model_dump() for c in configs]


def test_twelve_numbers_from_the_study_text():
    assert len(REFERENCE_NUMBERS) == 12
    assert len({n.key for n in REFERENCE_NUMBERS}) == 12
    assert sorted(n.test_accuracy for n in REFERENCE_NUMBERS) == sorted(
        [64.89, 73.67, 79.26, 75.54, 80.33, 81.03, 83.7, 83.7, 82.2, 83.7, 81.3, 78.6]
    )
    if TEXT.is_file():  # beside the checkout: every number is in the study's own words
        text = TEXT.read_text()
        for number in REFERENCE_NUMBERS:
            assert f"{number.test_accuracy:g}%" in text, number


@pytest.mark.skipif(not SPEC.is_file(), reason="../shared/SPEC.md is not beside the checkout")
def test_every_number_of_specs_table_is_a_reference_number():
    table = re.findall(r"^\|[^|]+\|[^|]+\| (\d+\.\d+)% \|$", SPEC.read_text(), re.MULTILINE)
    assert sorted(map(float, table)) == sorted(
        {n.key: n.test_accuracy for n in REFERENCE_NUMBERS if n.key != "augmentation_none"}.values()
    )


@pytest.mark.parametrize("number", REFERENCE_NUMBERS, ids=lambda n: n.key)
def test_each_number_has_exactly_one_setting_in_its_study_file(number):
    matching = [c for c in grid_configs(number.study) if number.matches(c)]
    assert len(matching) == 1, (number.key, number.setting)
    spec = load_study(STUDIES / f"{number.study}.yaml")
    assert spec.evaluate_test  # scored on the test set, as the study did
    assert f"{number.test_accuracy:g}%" in spec.description  # the file cites its number


def test_every_reference_study_file_follows_the_study():
    for name in STUDY_ORDER:
        spec = load_study(STUDIES / f"{name}.yaml")
        assert spec.data.dataset == "cifar10" and spec.data.data_dir is None
        assert spec.evaluate_test, name
        assert spec.sampler.type == "grid", name
        assert "Section 3" in spec.description, name
        for config in grid_configs(name):
            assert config["patience"] == 3 and config["monitor"] == "val_loss", name


def test_the_study_carries_he_and_batch_256_forward_from_the_dropout_study_on():
    after = STUDY_ORDER[STUDY_ORDER.index("dropout"):]
    for name in after:
        for config in grid_configs(name):
            assert config["kernel_initializer"] == "he_normal", name
            assert config["batch_size"] == 256, name
    for config in grid_configs("baselines") + grid_configs("batch_norm"):
        assert (config["kernel_initializer"], config["batch_size"]) == ("glorot_uniform", 32)


def test_batch_norm_on_both_baselines_and_weight_decay_with_and_without_dropout():
    placements = {(c["architecture"], c["batch_norm"]) for c in grid_configs("batch_norm")}
    assert placements == {(a, b) for a in ("baseline1", "baseline2")
                          for b in ("none", "before", "after")}  # fmt: skip
    dropouts = {c["dropout"] for c in grid_configs("weight_decay")}
    assert dropouts == {(), (0.2, 0.5, 0.7)}


def test_the_nine_optimizers_the_text_supports():
    optimizers = [c["optimizer"] for c in grid_configs("optimizers")]
    assert len(optimizers) == 9 and "sgd" not in optimizers and "rmsprop" not in optimizers
    tuned = {c["optimizer"] for c in grid_configs("learning_rate")}
    assert tuned == {"rmsprop_momentum", "adam", "sgd_momentum", "adamax"} <= set(optimizers)


def test_a_trial_config_finds_its_number_and_a_scaled_one_too():
    config = make_config({"architecture": "baseline2", "kernel_initializer": "he_normal",
                          "batch_size": 256, "dropout": 0.5, "dropout_placement": "conv",
                          "epochs": 50}).model_dump()  # fmt: skip
    assert [n.key for n in reference_numbers("dropout", config)] == ["dropout_0.5_50"]
    assert reference_numbers("baselines", config) == []
    scaled = {**config, "epochs": 10}
    found = reference_numbers("dropout.n2500-e0.2", scaled, lambda e: round(e * 0.2))
    assert [n.key for n in found] == ["dropout_0.5_50"]

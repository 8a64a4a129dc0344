"""The trial-config schema: defaults, parsing, and errors that name key, value and choices."""

from __future__ import annotations

import pytest

from hpsearch.config import (
    DataSpec,
    TrialConfig,
    load_config,
    make_config,
    make_data_spec,
    parse_overrides,
)
from hpsearch.errors import ConfigError


def test_config_defaults_are_the_reference_study():
    config = TrialConfig()
    assert config.architecture == "baseline2"
    assert config.batch_norm == "none"
    assert config.activation == "relu"
    assert config.kernel_initializer == "glorot_uniform"
    assert config.dropout == () and config.dropout_rates() == (0.0, 0.0, 0.0)
    assert config.weight_decay == "none"
    assert config.optimizer == "adam" and config.learning_rate is None
    assert config.batch_size == 32 and config.epochs == 20 and config.patience == 3
    assert config.augmentation == ()


@pytest.mark.parametrize(
    ("raw", "rates"),
    [
        ("none", (0.0, 0.0, 0.0)),
        (0.2, (0.2, 0.2, 0.2)),
        ("0.2/0.5/0.7", (0.2, 0.5, 0.7)),
        ([0.1, 0.2, 0.3], (0.1, 0.2, 0.3)),
    ],
)
def test_config_dropout_forms(raw, rates):
    assert make_config({"dropout": raw}).dropout_rates() == rates


def test_config_augmentation_combinations_parse_and_log_flat():
    config = make_config({"augmentation": "standard+mixup", "dropout": "0.2/0.5/0.7"})
    assert config.augmentation == ("standard", "mixup")
    params = config.to_params()
    assert params["augmentation"] == "standard+mixup"
    assert params["dropout"] == "0.2/0.5/0.7"
    assert params["learning_rate"] == "default"
    assert set(params) == set(TrialConfig.model_fields)
    assert all(isinstance(v, str) for v in params.values())


def test_the_names_are_declared_once_and_every_one_is_built():
    from hpsearch.choices import ARCHITECTURES, AUGMENTATIONS, DATASET_NAMES, OPTIMIZERS
    from hpsearch.config import ARCHITECTURE_BLOCKS, USES_MOMENTUM, allowed_values
    from hpsearch.datasets import DATASET_NAMES as LOADED
    from hpsearch.model.optimizers import _OPTIMIZERS

    assert allowed_values("architecture") == "one of " + ", ".join(ARCHITECTURES)
    assert allowed_values("optimizer") == "one of " + ", ".join(OPTIMIZERS)
    assert ", ".join(AUGMENTATIONS) in allowed_values("augmentation")
    assert tuple(_OPTIMIZERS) == OPTIMIZERS and USES_MOMENTUM <= set(OPTIMIZERS)
    assert tuple(ARCHITECTURE_BLOCKS) == ARCHITECTURES
    assert LOADED is DATASET_NAMES
    for name in DATASET_NAMES:
        assert make_data_spec({"dataset": name}).dataset == name
    with pytest.raises(ConfigError) as refused:
        make_data_spec({"dataset": "imagenet"})
    assert all(repr(name) in str(refused.value) for name in DATASET_NAMES)


def test_factors_a_trial_does_not_use_are_logged_as_not_applicable():
    adam = make_config({"optimizer": "adam"}).to_params()
    assert adam["momentum"] == "n/a" and adam["weight_decay_magnitude"] == "n/a"
    assert adam["batch_norm_momentum"] == "n/a" and adam["dropout_placement"] == "n/a"
    assert adam["switch_epoch"] == adam["switch_learning_rate"] == adam["warmup_epochs"] == "n/a"
    used = make_config({"optimizer": "sgd_momentum", "momentum": 0.8, "weight_decay": "l2",
                        "batch_norm": "before", "dropout": 0.2, "lr_schedule": "cosine",
                        "warmup_epochs": 2}).to_params()  # fmt: skip
    assert used["momentum"] == "0.8" and used["weight_decay_magnitude"] == "0.0001"
    assert used["batch_norm_momentum"] == "0.99" and used["dropout_placement"] == "block"
    assert used["warmup_epochs"] == "2"
    switch = make_config({"optimizer": "adam", "optimizer_switch": "epoch"}).to_params()
    assert switch["switch_epoch"] == "10" and switch["switch_patience"] == "n/a"


def test_config_yaml_round_trip(tmp_path):
    config = make_config({"dropout": [0.2, 0.5, 0.7], "augmentation": ["cutout"], "seed": 7})
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config
    default = make_config({})  # written as a study file writes it, and read back
    assert "dropout: none\n" in default.to_yaml() and "augmentation: none\n" in default.to_yaml()
    path.write_text(default.to_yaml())
    assert load_config(path) == default


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        ({"batch_norm": "middle"}, ["batch_norm", "'middle'", "none, before, after"]),
        ({"optimizer": "adamm"}, ["optimizer", "'adamm'", "sgd_nesterov"]),
        ({"learning_rate": -1}, ["learning_rate", "-1", "greater than 0"]),
        ({"dropout": 1.5}, ["dropout", "1.5", "[0, 1)"]),
        ({"dropout": "0.2/0.5"}, ["dropout", "3 blocks", "[0.2, 0.5]"]),
        ({"weight_decay_magnitude": 1.0}, ["weight_decay_magnitude", "1.0", "le 0.1"]),
        ({"augmentation": "standard+foo"}, ["augmentation", "'foo'", "gridmask"]),
        ({"colour": "red"}, ["unknown key 'colour'", "'red'", "batch_norm"]),
        ({"warmup_epochs": 2}, ["warmup_epochs", "lr_schedule: cosine", "constant"]),
        ({"warmup_epochs": 20, "lr_schedule": "cosine"}, ["warmup_epochs (20)", "epochs (20)"]),
        ({"label_smoothing": 1.0}, ["label_smoothing", "1.0", "in [0, 1)"]),
    ],
)
def test_config_rejects_bad_values_naming_key_value_and_choices(values, fragments):
    with pytest.raises(ConfigError) as caught:
        make_config(values)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_overrides_parse_yaml_values_and_several_per_item():
    overrides = parse_overrides(["epochs=2 learning_rate=1e-3", "dropout=[0.2,0.5,0.7]"])
    assert overrides == {"epochs": 2, "learning_rate": 1e-3, "dropout": [0.2, 0.5, 0.7]}
    assert make_config(overrides).dropout == (0.2, 0.5, 0.7)


@pytest.mark.parametrize("item", ["epochs", "=3", "nonsense=1"])
def test_overrides_reject_malformed_items(item):
    with pytest.raises(ConfigError, match="--set"):
        parse_overrides([item])


def test_load_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: batch_size: got 'many'"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listed)


def test_data_spec_validates():
    assert DataSpec().dataset == "digits"
    with pytest.raises(ConfigError, match="dataset"):
        make_data_spec({"dataset": "imagenet"})
    with pytest.raises(ConfigError, match="validation_fraction"):
        make_data_spec({"validation_fraction": 1.5})

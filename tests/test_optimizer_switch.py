"""Adam switched to SGD with momentum (SWATS): Adam's updates, then SGD's, and the switch."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from conftest import run_under_jax

from hpsearch.config import DataSpec, make_config
from hpsearch.errors import ConfigError
from hpsearch.model.builder import build_network
from hpsearch.model.optimizers import SwitchingAdam, SwitchToSgd, build_optimizer
from hpsearch.tracking.trial import load_splits
from hpsearch.training.runner import run_trial


def digits():
    return load_splits(DataSpec(dataset="digits", limit=300))[0]


@pytest.fixture(scope="module")
def splits():
    return digits()


def network(splits, small: bool = False) -> keras.Model:
    """baseline1 for the digits (seed 0); ``small``: one dense layer, quick to compile."""
    keras.utils.set_random_seed(0)
    if not small:
        return build_network(make_config({"architecture": "baseline1"}), splits.input_shape, 10)
    return keras.Sequential([
        keras.Input(splits.input_shape), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])  # fmt: skip


def fitted(splits, optimizer, epochs: int, callbacks=(), model=None, small: bool = False):
    """``network`` fitted on the digits in order; returns (model, history)."""
    if model is None:
        model = network(splits, small)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    onehot = keras.utils.to_categorical(splits.y_train, 10)
    history = model.fit(
        splits.x_train, onehot, batch_size=64, epochs=epochs, shuffle=False, verbose=0,
        callbacks=list(callbacks),
    )  # fmt: skip
    return model, history.history


def adam_then_sgd(splits, rate: float = 0.05, small: bool = False):
    """A SwitchingAdam run switched before epoch 2, and Adam for 1 epoch then SGD for 1.

    Returns (callback, history, switched model, reference model).
    """
    config = make_config({"optimizer_switch": "epoch", "switch_epoch": 2,
                          "switch_learning_rate": rate})  # fmt: skip
    switch = SwitchToSgd(config)
    switched, history = fitted(splits, build_optimizer(config, 5), 2, [switch], small=small)
    reference, _ = fitted(splits, keras.optimizers.Adam(), 1, small=small)
    reference, _ = fitted(splits, keras.optimizers.SGD(rate, momentum=0.9), 1, model=reference)
    return switch, history, switched, reference


def assert_same_weights(a: keras.Model, b: keras.Model, rtol=1e-6, atol=1e-7) -> None:
    for mine, theirs in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=atol)


@pytest.mark.slow
def test_switching_adam_updates_as_adam_before_the_switch(splits):
    optimizer = SwitchingAdam(learning_rate=2e-3)
    switching, _ = fitted(splits, optimizer, 2)
    adam, _ = fitted(splits, keras.optimizers.Adam(learning_rate=2e-3), 2)
    assert not optimizer.switched
    assert float(optimizer.learning_rate) == pytest.approx(2e-3)
    assert_same_weights(switching, adam)


@pytest.mark.slow
def test_switch_to_sgd_switches_at_the_epoch_then_updates_as_sgd_with_momentum(splits, tmp_path):
    switch, history, switched, reference = adam_then_sgd(splits)
    assert switch.switched_epoch == 2 and history["sgd"] == [0.0, 1.0]
    optimizer = switched.optimizer
    assert optimizer.switched and float(optimizer.learning_rate) == pytest.approx(0.05)
    assert_same_weights(switched, reference, rtol=1e-5, atol=1e-6)
    # a compiled save keeps the optimizer, its phase and its SGD rate
    switched.save(tmp_path / "switched.keras")
    loaded = keras.saving.load_model(tmp_path / "switched.keras")
    assert isinstance(loaded.optimizer, SwitchingAdam)
    assert loaded.optimizer.switch_learning_rate == 0.05 and loaded.optimizer.switched
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.05)


def test_switching_adam_estimates_the_rate_from_the_global_adam_step():
    first = keras.Variable(np.array([[0.5, -1.0], [2.0, 0.1]], "float32"))
    second = keras.Variable(np.array([0.3, -0.2, 0.7], "float32"))
    optimizer = SwitchingAdam(learning_rate=0.01)
    optimizer.build([first, second])
    assert math.isnan(optimizer.swats_estimate)
    rng = np.random.default_rng(0)
    beta_2, lam = 0.999, 0.0
    for step in (1, 2, 3):
        before = np.concatenate([first.numpy().ravel(), second.numpy().ravel()])
        grads = [rng.normal(size=v.shape).astype("float32") for v in (first, second)]
        optimizer.apply(grads, [first, second])
        p = np.concatenate([first.numpy().ravel(), second.numpy().ravel()]) - before
        g = np.concatenate([grad.ravel() for grad in grads])
        gamma = p @ p / -(p @ g)  # one vector over all variables, as in the paper
        lam = beta_2 * lam + (1 - beta_2) * gamma
        assert optimizer.swats_estimate == pytest.approx(lam / (1 - beta_2**step), rel=1e-4)
    estimate = optimizer.swats_estimate
    assert math.isfinite(estimate) and estimate > 0
    rate = optimizer.switch_to_sgd()  # SWATS's SGD step: (1 - beta_1) * Lambda * velocity
    assert rate == pytest.approx(0.1 * estimate) and optimizer.switched
    assert float(optimizer.learning_rate) == pytest.approx(rate)
    # the first SGD step: velocity = -rate * g (from zero), w += velocity
    before = second.numpy().copy()
    grads = [np.ones(first.shape, "float32"), np.full(second.shape, 2.0, "float32")]
    optimizer.apply(grads, [first, second])
    np.testing.assert_allclose(second.numpy(), before - rate * 2.0, rtol=1e-6)
    assert optimizer.swats_estimate == pytest.approx(estimate, rel=1e-3)  # kept after the switch


def test_switch_to_sgd_plateau_switches_after_patience_epochs_without_a_better_val_loss():
    config = make_config({"optimizer_switch": "plateau", "switch_patience": 2})
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=build_optimizer(config, 1), loss="mse")
    switch = SwitchToSgd(config)
    switch.set_model(model)
    switch.on_train_begin()
    phases = []
    # 1.0 best; 1.1 stalls; 0.9 best again; 0.95, 0.9 stall twice: SGD from the 6th epoch
    for epoch, loss in enumerate([1.0, 1.1, 0.9, 0.95, 0.9, 0.8, 0.85]):
        switch.on_epoch_begin(epoch)
        logs = {"val_loss": loss}
        switch.on_epoch_end(epoch, logs)
        phases.append(logs["sgd"])
    assert switch.switched_epoch == 6 and model.optimizer.switched
    assert phases == [0.0] * 5 + [1.0] * 2
    assert switch.sgd_learning_rate == pytest.approx(1e-3)  # no Adam step: Adam's own rate


@pytest.mark.slow
def test_run_trial_with_an_epoch_switch_logs_sgds_rate_from_the_switch(splits):
    config = make_config({"architecture": "baseline1", "epochs": 3, "patience": 3, "batch_size": 64,
                          "optimizer_switch": "epoch", "switch_epoch": 2})  # fmt: skip
    result = run_trial(config, splits, verbose=0)
    history = result.history
    assert result.epochs_run == 3 and all(math.isfinite(v) for v in history["loss"])
    assert history["sgd"] == [0.0, 1.0, 1.0]
    rates = history["learning_rate"]  # Adam's, then SWATS's estimate for SGD
    assert rates[0] == pytest.approx(1e-3)
    assert rates[1] == rates[2] and rates[1] > 0 and rates[1] != rates[0]


def test_config_refuses_an_optimizer_switch_without_adam():
    with pytest.raises(ConfigError, match="optimizer_switch.*optimizer: adam"):
        make_config({"optimizer": "sgd", "optimizer_switch": "epoch"})


def test_build_optimizer_switches_only_when_asked_and_only_at_a_constant_rate():
    assert type(build_optimizer(make_config({}), 10)) is keras.optimizers.Adam
    switching = build_optimizer(make_config({"optimizer_switch": "plateau"}), 10)
    assert isinstance(switching, SwitchingAdam) and switching.switch_learning_rate is None
    restored = SwitchingAdam.from_config(switching.get_config())
    assert restored.get_config() == switching.get_config()
    cosine = make_config({"optimizer_switch": "epoch", "lr_schedule": "cosine"})
    with pytest.raises(ConfigError, match="lr_schedule: constant"):
        build_optimizer(cosine, 10)


@pytest.mark.slow
def test_switching_adam_runs_on_the_jax_backend():
    run_under_jax(
        """
        import sys
        import keras, numpy as np
        assert keras.backend.backend() == "jax", keras.backend.backend()
        sys.path.insert(0, "tests")
        from test_optimizer_switch import adam_then_sgd, assert_same_weights, digits
        switch, history, switched, reference = adam_then_sgd(digits(), small=True)
        assert switch.switched_epoch == 2 and history["sgd"] == [0.0, 1.0], history
        assert_same_weights(switched, reference, rtol=1e-5, atol=1e-6)
        print("ok")
        """
    )

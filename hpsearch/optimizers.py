"""Optimizer and learning-rate schedule from a trial config."""

from __future__ import annotations

import inspect

import keras

from hpsearch.config import TrialConfig

# name -> (Keras class, extra constructor arguments besides the learning rate)
_OPTIMIZERS: dict[str, tuple[type, dict[str, bool]]] = {
    "sgd": (keras.optimizers.SGD, {}),
    "sgd_momentum": (keras.optimizers.SGD, {"momentum": True}),
    "sgd_nesterov": (keras.optimizers.SGD, {"momentum": True, "nesterov": True}),
    "rmsprop": (keras.optimizers.RMSprop, {}),
    "rmsprop_momentum": (keras.optimizers.RMSprop, {"momentum": True}),
    "adam": (keras.optimizers.Adam, {}),
    "adamax": (keras.optimizers.Adamax, {}),
    "adagrad": (keras.optimizers.Adagrad, {}),
    "adadelta": (keras.optimizers.Adadelta, {}),
    "nadam": (keras.optimizers.Nadam, {}),
    "ftrl": (keras.optimizers.Ftrl, {}),
    "adamw": (keras.optimizers.AdamW, {}),
    "lion": (keras.optimizers.Lion, {}),
}


def initial_learning_rate(config: TrialConfig) -> float:
    """The configured learning rate, or the Keras optimizer's own default."""
    if config.learning_rate is not None:
        return config.learning_rate
    cls, _ = _OPTIMIZERS[config.optimizer]
    return float(inspect.signature(cls).parameters["learning_rate"].default)


def build_optimizer(config: TrialConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer the config names, with its momentum/nesterov and schedule."""
    cls, extras = _OPTIMIZERS[config.optimizer]
    kwargs: dict[str, object] = {}
    if extras.get("momentum"):
        kwargs["momentum"] = config.momentum
    if extras.get("nesterov"):
        kwargs["nesterov"] = True
    rate: float | keras.optimizers.schedules.LearningRateSchedule = initial_learning_rate(config)
    if config.lr_schedule == "cosine":
        warmup = config.warmup_epochs * steps_per_epoch  # linear from 0, then the cosine
        rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else rate,
            decay_steps=max(1, config.epochs * steps_per_epoch - warmup),
            warmup_target=rate if warmup else None,
            warmup_steps=warmup,
        )
    return cls(learning_rate=rate, **kwargs)

"""Optimizer and learning-rate schedule from a trial config; Adam-to-SGD switching (SWATS)."""

from __future__ import annotations

import inspect
import math

import keras
from keras import ops

from hpsearch.choices import Optimizer
from hpsearch.config import USES_MOMENTUM, TrialConfig
from hpsearch.errors import ConfigError

# name -> Keras class; those in USES_MOMENTUM take the config's momentum, sgd_nesterov Nesterov's
_OPTIMIZERS: dict[Optimizer, type] = {
    "sgd": keras.optimizers.SGD,
    "sgd_momentum": keras.optimizers.SGD,
    "sgd_nesterov": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "rmsprop_momentum": keras.optimizers.RMSprop,
    "adam": keras.optimizers.Adam,
    "adamax": keras.optimizers.Adamax,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
    "nadam": keras.optimizers.Nadam,
    "ftrl": keras.optimizers.Ftrl,
    "adamw": keras.optimizers.AdamW,
    "lion": keras.optimizers.Lion,
}


def initial_learning_rate(config: TrialConfig) -> float:
    """The configured learning rate, or the Keras optimizer's own default."""
    if config.learning_rate is not None:
        return config.learning_rate
    cls = _OPTIMIZERS[config.optimizer]
    return float(inspect.signature(cls).parameters["learning_rate"].default)


def build_optimizer(config: TrialConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer the config names, with its momentum/nesterov and schedule."""
    cls = _OPTIMIZERS[config.optimizer]
    kwargs: dict[str, object] = {}
    if config.optimizer in USES_MOMENTUM:
        kwargs["momentum"] = config.momentum
    if config.optimizer == "sgd_nesterov":
        kwargs["nesterov"] = True
    rate: float | keras.optimizers.schedules.LearningRateSchedule = initial_learning_rate(config)
    if config.optimizer_switch != "none":
        if config.lr_schedule != "constant":
            raise ConfigError(
                f"optimizer_switch: {config.optimizer_switch} needs lr_schedule: constant (got "
                f"{config.lr_schedule}): after the switch SGD runs at one rate of its own"
            )
        return SwitchingAdam(learning_rate=rate, switch_learning_rate=config.switch_learning_rate)
    if config.lr_schedule == "cosine":
        warmup = config.warmup_epochs * steps_per_epoch  # linear from 0, then the cosine
        rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else rate,
            decay_steps=max(1, config.epochs * steps_per_epoch - warmup),
            warmup_target=rate if warmup else None,
            warmup_steps=warmup,
        )
    return cls(learning_rate=rate, **kwargs)


@keras.saving.register_keras_serializable(package="hpsearch")
class SwitchingAdam(keras.optimizers.Adam):
    """Adam that switches to SGD with momentum when told (SWATS, Keskar & Socher 2017).

    Until :meth:`switch_to_sgd` is called (by :class:`SwitchToSgd`, between epochs) the
    updates are exactly ``keras.optimizers.Adam``'s. Afterwards each variable follows
    ``keras.optimizers.SGD(momentum=beta_1)``: ``v = beta_1 * v - rate * g; w = w + v``, its
    velocity starting from zero at the switch. The momentum is Adam's ``beta_1`` (0.9), as in
    SWATS, not the trial config's ``momentum`` field.

    The phase is a non-trainable variable (0: Adam, 1: SGD): both updates are computed in
    every step and one is selected with ``keras.ops.where``, so the compiled train step is
    traced once and stays valid across the switch (TensorFlow and JAX alike).

    SWATS's rate estimate is global, as in the paper: after each Adam step, with ``p`` the
    step of all variables as one vector and ``g`` the gradient, if ``p.g != 0``,
    ``gamma = p.p / (-p.g)`` and ``lambda = beta_2 * lambda + (1 - beta_2) * gamma``. At the
    switch, ``Lambda = lambda / (1 - beta_2**k)`` (``k``: the Adam steps taken, as in the paper)
    and SGD's rate (in Keras's form above) is ``(1 - beta_1) * Lambda``: the paper's SGD
    phase, ``v = beta_1 * v + g; w = w - (1 - beta_1) * Lambda * v``, is the same update.
    ``switch_learning_rate``, when given, is SGD's rate instead (used as it is). Where no
    usable estimate exists (a switch before any step, or a non-positive or non-finite
    ``Lambda``), SGD takes Adam's learning rate.

    ``learning_rate`` reads as the rate in effect: Adam's before the switch, SGD's after
    (what the trial's per-epoch ``learning_rate`` metric logs). Setting it sets Adam's.
    """

    def __init__(self, learning_rate=0.001, switch_learning_rate=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.switch_learning_rate = (
            None if switch_learning_rate is None else float(switch_learning_rate)
        )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._sgd_velocities = self.add_optimizer_variables(var_list, "sgd_velocity")

        def scalar(name, value=0.0):
            initializer = keras.initializers.Constant(value)
            return self.add_variable((), initializer, dtype="float32", name=name)

        self._sgd_phase = scalar("sgd_phase")  # 0.0: Adam, 1.0: SGD
        self._sgd_rate = scalar("sgd_learning_rate", self.switch_learning_rate or 0.0)
        self._swats_lambda = scalar("swats_lambda")  # lambda, not bias-corrected
        self._adam_steps = scalar("adam_steps")  # k: the steps taken before the switch
        # this step's p.p and p.g, summed over the variables by update_step
        self._step_pp = scalar("swats_step_pp")
        self._step_pg = scalar("swats_step_pg")

    @property
    def learning_rate(self):
        adam = self._get_current_learning_rate()
        if getattr(self, "_sgd_phase", None) is None:
            return adam
        adam = ops.cast(adam, "float32")
        return ops.where(self._sgd_phase > 0.5, ops.convert_to_tensor(self._sgd_rate), adam)

    @learning_rate.setter
    def learning_rate(self, value):
        keras.optimizers.Adam.learning_rate.fset(self, value)

    @property
    def switched(self) -> bool:
        """Whether the updates are SGD's."""
        return self.built and float(ops.convert_to_numpy(self._sgd_phase)) > 0.5

    @property
    def swats_estimate(self) -> float:
        """SWATS's bias-corrected ``Lambda`` now (NaN before the first step)."""
        if not self.built:
            return math.nan
        steps = float(ops.convert_to_numpy(self._adam_steps))
        if steps == 0:
            return math.nan
        lam = float(ops.convert_to_numpy(self._swats_lambda))
        return lam / (1.0 - float(self.beta_2) ** steps)

    def switch_to_sgd(self) -> float:
        """Make the next steps SGD's (once; eagerly, between steps); returns SGD's rate."""
        if self.switched:
            return float(ops.convert_to_numpy(self._sgd_rate))
        if not self.built:
            raise ValueError("SwitchingAdam.switch_to_sgd: build the optimizer first")
        rate = self.switch_learning_rate
        if rate is None:
            rate = (1.0 - float(self.beta_1)) * self.swats_estimate
            if not (math.isfinite(rate) and rate > 0):
                rate = float(ops.convert_to_numpy(self._get_current_learning_rate()))
        self._sgd_rate.assign(rate)
        self._sgd_phase.assign(1.0)
        return rate

    def update_step(self, gradient, variable, learning_rate):
        # learning_rate (the property) is ignored: both phases' rates are read here.
        dtype = variable.dtype
        lr = ops.cast(self._get_current_learning_rate(), dtype)
        gradient = ops.cast(gradient, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_1_power = ops.power(beta_1, local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        sgd_velocity = self._sgd_velocities[index]
        # ops.where takes tensors, not variables (JAX)
        m_now, v_now, sgd_velocity_now, w_now = (
            ops.convert_to_tensor(x) for x in (m, v, sgd_velocity, variable)
        )
        sgd = self._sgd_phase > 0.5

        # Adam, as keras.optimizers.Adam computes it (amsgrad is not supported)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        new_m = ops.add(m_now, ops.multiply(ops.subtract(gradient, m_now), 1 - self.beta_1))
        new_v = ops.add(
            v_now, ops.multiply(ops.subtract(ops.square(gradient), v_now), 1 - self.beta_2)
        )
        adam_step = ops.divide(ops.multiply(new_m, alpha), ops.add(ops.sqrt(new_v), self.epsilon))
        # SGD with momentum beta_1, as keras.optimizers.SGD computes it
        sgd_rate = ops.cast(self._sgd_rate, dtype)
        new_sgd_velocity = ops.subtract(
            ops.multiply(sgd_velocity_now, beta_1), ops.multiply(gradient, sgd_rate)
        )

        self.assign(m, ops.where(sgd, m_now, new_m))
        self.assign(v, ops.where(sgd, v_now, new_v))
        self.assign(sgd_velocity, ops.where(sgd, new_sgd_velocity, sgd_velocity_now))
        self.assign(
            variable,
            ops.where(sgd, ops.add(w_now, new_sgd_velocity), ops.subtract(w_now, adam_step)),
        )
        # SWATS: p = -adam_step, so p.p = sum(adam_step**2) and p.g = -sum(adam_step * g)
        self.assign_add(self._step_pp, ops.cast(ops.sum(ops.square(adam_step)), "float32"))
        self.assign_sub(
            self._step_pg, ops.cast(ops.sum(ops.multiply(adam_step, gradient)), "float32")
        )

    def apply(self, grads, trainable_variables=None):
        super().apply(grads, trainable_variables)
        if self.built:
            self._update_swats_estimate()

    def _update_swats_estimate(self):
        """Fold this step's global ``gamma`` into ``lambda`` (Adam steps only)."""
        pp, pg = self._step_pp, self._step_pg
        adam = self._sgd_phase < 0.5
        valid = ops.logical_and(adam, ops.not_equal(pg, 0.0))
        gamma = ops.divide(pp, ops.where(valid, ops.negative(pg), 1.0))
        updated = self.beta_2 * self._swats_lambda + (1.0 - self.beta_2) * gamma
        kept = ops.convert_to_tensor(self._swats_lambda)
        self.assign(self._swats_lambda, ops.where(valid, updated, kept))
        self.assign_add(self._adam_steps, ops.cast(adam, "float32"))
        self.assign(pp, ops.zeros((), "float32"))
        self.assign(pg, ops.zeros((), "float32"))

    def get_config(self):
        config = super().get_config()
        config["switch_learning_rate"] = self.switch_learning_rate
        return config


def _switching_optimizer(optimizer: keras.optimizers.Optimizer) -> SwitchingAdam:
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    if not isinstance(inner, SwitchingAdam):
        raise TypeError(f"SwitchToSgd needs a SwitchingAdam optimizer, got {type(inner).__name__}")
    return inner


class SwitchToSgd(keras.callbacks.Callback):
    """Switches the model's :class:`SwitchingAdam` to SGD as ``config.optimizer_switch`` says.

    ``"epoch"``: before epoch ``switch_epoch`` (1-based) starts. ``"plateau"``: once
    ``val_loss`` has not improved for ``switch_patience`` epochs, before the next epoch. Each
    epoch's logs get ``sgd``: 1.0 for an epoch trained with SGD, 0.0 with Adam.
    :attr:`switched_epoch` is the first SGD epoch (1-based), None while there is none.
    """

    def __init__(self, config: TrialConfig) -> None:
        super().__init__()
        if config.optimizer_switch == "none":
            raise ValueError("SwitchToSgd: the config's optimizer_switch is none")
        self.mode = config.optimizer_switch
        self.switch_epoch = config.switch_epoch
        self.patience = config.switch_patience
        self.switched_epoch: int | None = None
        self.sgd_learning_rate: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._best = math.inf
        self._stalled = 0
        self._due = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._reset()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.switched_epoch is not None:
            return
        if (self.mode == "epoch" and epoch + 1 >= self.switch_epoch) or self._due:
            self.switch(epoch)

    def switch(self, epoch: int) -> None:
        """Switch now, before 0-based ``epoch`` trains."""
        optimizer = _switching_optimizer(self.model.optimizer)
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.sgd_learning_rate = optimizer.switch_to_sgd()
        self.switched_epoch = epoch + 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["sgd"] = 1.0 if self.switched_epoch is not None else 0.0
        if self.mode != "plateau" or self.switched_epoch is not None:
            return
        loss = logs.get("val_loss")
        if loss is None:
            return
        if loss < self._best:
            self._best, self._stalled = float(loss), 0
        else:
            self._stalled += 1
        self._due = self._stalled >= self.patience

"""A study file's space as KerasTuner sees it: hyperparameters, the hypermodel, the oracle.

``hp.Choice``, ``hp.Float``, ``hp.Int`` and ``hp.conditional_scope`` (for ``when``) declare the
study's factors; :class:`StudyHyperModel` builds hpsearch's model from the values KerasTuner
picks; :func:`distribution` gives the same factor as an Optuna distribution, for the mirror
study that the chooser reads.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import keras
import keras_tuner
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hpsearch.config import make_config
from hpsearch.errors import ConfigError
from hpsearch.model.builder import build_model
from hpsearch.search.study_file import Factor, StudyFile


def choice_codec(choices: list[Any]) -> dict[Any, Any]:
    """KerasTuner value -> study value for a ``choices`` factor.

    A KerasTuner ``Choice`` holds values of one type (str, int, float or bool); a mixed list
    such as ``[none, 0.2]`` or ``[null, 1.0e-3]`` is offered to KerasTuner as strings.
    """
    kinds = {type(value) for value in choices}
    if len(kinds) == 1 and kinds <= {str, int, float, bool}:
        return {value: value for value in choices}
    encoded = [value if isinstance(value, str) else json.dumps(value) for value in choices]
    if len(set(encoded)) < len(encoded):  # e.g. both "0.2" and 0.2
        encoded = [json.dumps(value) for value in choices]
    return dict(zip(encoded, choices, strict=True))


def _encode(factor: Factor, value: Any) -> Any:
    for kt_value, study_value in choice_codec(factor.choices or []).items():
        if study_value == value and type(study_value) is type(value):
            return kt_value
    return None


def _declare(hp: keras_tuner.HyperParameters, key: str, factor: Factor) -> Any:
    if factor.choices is not None:
        return hp.Choice(key, list(choice_codec(factor.choices)))
    if factor.is_integer:
        step = None if factor.log else int(factor.step or 1)
        sampling = "log" if factor.log else "linear"
        low, high = factor.bounds
        return hp.Int(key, int(low), int(high), step=step, sampling=sampling)
    sampling = "log" if factor.log else "linear"
    low, high = factor.bounds
    return hp.Float(key, low, high, step=factor.step, sampling=sampling)


def _decode(factor: Factor, value: Any) -> Any:
    if factor.choices is not None:
        return choice_codec(factor.choices)[value]
    if factor.is_integer:
        return int(value)
    value = float(value)
    if factor.step:  # snap onto the step grid (exact for Optuna's distribution)
        value = factor.low + round((value - factor.low) / factor.step) * factor.step
        value = min(max(round(value, 12), factor.low), factor.high)
    return value


def space_values(hp: keras_tuner.HyperParameters, study: StudyFile) -> dict[str, Any]:
    """Declare the study's space on ``hp``; the fixed keys plus each active factor's value.

    Mirrors :func:`hpsearch.search.space.suggest`: factors in file order; a ``when`` on a factor
    declared before becomes ``hp.conditional_scope``; a ``when`` on any other key (fixed, or
    declared later) is decided here, on the values known so far.
    """
    values: dict[str, Any] = dict(study.fixed)
    declared: set[str] = set()
    for key, factor in study.space.items():
        scopes, possible = [], True
        for parent, allowed in (factor.when or {}).items():
            if parent not in declared:
                possible = possible and values.get(parent) in allowed
                continue
            parent_factor = study.space[parent]
            if parent_factor.choices is not None:
                allowed = [_encode(parent_factor, v) for v in allowed]
                allowed = [v for v in allowed if v is not None]
            if not allowed:
                possible = False
            scopes.append((parent, allowed))
        if not possible:
            continue
        with contextlib.ExitStack() as stack:
            for parent, allowed in scopes:
                stack.enter_context(hp.conditional_scope(parent, allowed))
            _declare(hp, key, factor)
        declared.add(key)
        if hp.is_active(key) and key in hp.values:
            values[key] = _decode(factor, hp.values[key])
    return values


def distribution(factor: Factor) -> BaseDistribution:
    """The Optuna distribution the Optuna engine would suggest this factor from."""
    if factor.choices is not None:
        return CategoricalDistribution(factor.choices)
    if factor.is_integer:
        step = 1 if factor.log else int(factor.step or 1)
        low, high = factor.bounds
        return IntDistribution(int(low), int(high), log=factor.log, step=step)
    low, high = factor.bounds
    return FloatDistribution(low, high, log=factor.log, step=factor.step)


class StudyHyperModel(keras_tuner.HyperModel):
    """hpsearch's model builder as a KerasTuner HyperModel over a study's space.

    While KerasTuner explores the space (``declare_only``, as a tuner starts), ``build`` only
    declares the hyperparameters: a combination the trial config refuses then fails its own
    trial (``invalid_config``), as with Optuna, instead of the whole search.
    """

    def __init__(self, study: StudyFile, input_shape, num_classes: int, train_size: int) -> None:
        super().__init__(name=study.name)
        self.study = study
        self.input_shape, self.num_classes, self.train_size = input_shape, num_classes, train_size
        self.declare_only = False

    def values(self, hp: keras_tuner.HyperParameters, seed: int = 0) -> dict[str, Any]:
        """The trial-config values ``hp`` stands for (fixed keys, active factors, seed)."""
        return {**space_values(hp, self.study), "seed": seed}

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model | None:
        values = self.values(hp)
        if self.declare_only:
            return None
        config = make_config(values, f"{self.study.name}: keras_tuner trial")
        steps = math.ceil(self.train_size / config.batch_size)
        return build_model(config, self.input_shape, self.num_classes, steps)


def make_oracle(study: StudyFile) -> keras_tuner.Oracle:
    """KerasTuner's oracle for the study's sampler; KerasTuner takes seed 0 as 'random'."""
    spec = study.sampler
    direction = "max" if study.objective.direction == "maximize" else "min"
    common = {
        "objective": keras_tuner.Objective(study.objective.metric, direction),
        "seed": spec.seed + 1,
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": 10**9,  # hpsearch stops after 5 in a row itself
    }
    if spec.type == "random":
        return keras_tuner.oracles.RandomSearchOracle(**common)
    if spec.type == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            num_initial_points=spec.n_startup_trials, **common
        )
    if spec.type == "hyperband":
        return keras_tuner.oracles.HyperbandOracle(
            max_epochs=max_epochs(study),
            factor=spec.factor,
            hyperband_iterations=spec.hyperband_iterations,
            **common,
        )
    raise ConfigError(f"{study.name}: sampler.type {spec.type!r} is not a keras_tuner sampler")


def max_epochs(study: StudyFile) -> int:
    from hpsearch.config import TrialConfig

    return study.sampler.max_epochs or int(
        study.fixed.get("epochs", TrialConfig.model_fields["epochs"].default)
    )

"""Study files (``studies/*.yaml``): schema, loading and validation.

A study file names the study, its engine, objective, sampler, pruner, budget,
data, the ``fixed`` trial-config keys and the searched ``space``. Everything
is checked before anything runs; errors name the file, the key, what was
expected and what was received.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hpsearch.config import DataSpec, TrialConfig, format_validation_error, make_config
from hpsearch.errors import ConfigError, short_repr
from hpsearch.search.engines import EngineName
from hpsearch.util.safe_yaml import load_yaml_file

SamplerName = Literal["grid", "random", "tpe", "cmaes", "qmc", "bayesian", "hyperband"]
PrunerName = Literal["none", "median", "percentile", "successive_halving", "hyperband"]
ObjectiveMetric = Literal["best_val_accuracy", "kept_val_accuracy", "best_val_loss"]

#: the samplers each engine has (keras_tuner: its tuners)
ENGINE_SAMPLERS: dict[str, tuple[str, ...]] = {
    "optuna": ("grid", "random", "tpe", "cmaes", "qmc"),
    "keras_tuner": ("random", "bayesian", "hyperband"),
}
#: sampler settings that only the keras_tuner engine reads, and the tuners that read them
KERAS_TUNER_SETTINGS: dict[str, tuple[str, ...]] = {
    "max_epochs": ("hyperband",),
    "factor": ("hyperband",),
    "hyperband_iterations": ("hyperband",),
    "executions_per_trial": ("random", "bayesian", "hyperband"),
}

#: per-epoch Keras metric that the pruner watches for each objective
EPOCH_METRIC = {
    "best_val_accuracy": "val_accuracy",
    "kept_val_accuracy": "val_accuracy",
    "best_val_loss": "val_loss",
}

_Strict = ConfigDict(extra="forbid", frozen=True)


class Objective(BaseModel):
    model_config = _Strict
    metric: ObjectiveMetric = "best_val_accuracy"
    direction: Literal["maximize", "minimize"] = "maximize"

    @model_validator(mode="after")
    def _direction_fits_metric(self) -> Objective:
        expected = "minimize" if self.metric == "best_val_loss" else "maximize"
        if self.direction != expected:
            raise ValueError(
                f"objective.direction: {self.metric} is to {expected}, got {self.direction}"
            )
        return self


class SamplerSpec(BaseModel):
    model_config = _Strict
    type: SamplerName = "tpe"
    seed: int = Field(default=0, ge=0)
    n_startup_trials: int | None = Field(default=None, ge=0)  # tpe, cmaes, bayesian
    # keras_tuner engine only
    max_epochs: int | None = Field(default=None, ge=1)  # hyperband (default: the epochs key)
    factor: int = Field(default=3, ge=2)  # hyperband reduction factor
    hyperband_iterations: int = Field(default=1, ge=1)  # hyperband
    executions_per_trial: int = Field(default=1, ge=1)  # trainings per trial, averaged


class PrunerSpec(BaseModel):
    model_config = _Strict
    type: PrunerName = "none"
    n_startup_trials: int = Field(default=5, ge=0)  # median, percentile
    n_warmup_steps: int = Field(default=1, ge=0)  # epochs before pruning may start
    percentile: float = Field(default=25.0, gt=0, lt=100)  # percentile pruner
    min_resource: int | Literal["auto"] = "auto"  # successive_halving, hyperband (epochs)
    reduction_factor: int = Field(default=3, ge=2)
    # successive_halving, hyperband: trials a rung needs before it promotes any; the first
    # ones to reach it are pruned (0: the first trial at a rung is promoted).
    bootstrap_count: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _bootstrap_needs_min_resource(self) -> PrunerSpec:
        auto = self.min_resource == "auto"
        if self.bootstrap_count and self.type == "successive_halving" and auto:
            raise ValueError(
                "bootstrap_count needs a min_resource in epochs (not auto) for successive_halving"
            )
        return self


Scalar = str | int | float | bool | None


class Factor(BaseModel):
    """One searched key: ``choices``, or ``low``/``high`` with ``log``/``step``.

    ``when`` makes it conditional: ``{optimizer: [sgd_momentum, rmsprop_momentum]}``
    searches it only for trials where ``optimizer`` took one of those values.
    """

    model_config = _Strict
    choices: list[Scalar] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    when: dict[str, list[Scalar]] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Factor:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty: list at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give choices, or both low and high")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a factor without choices (the validator made sure both are set)."""
        if self.low is None or self.high is None:
            raise ValueError("a factor with choices has no low/high")
        return self.low, self.high

    @property
    def is_integer(self) -> bool:
        return self.choices is None and all(
            float(v).is_integer() for v in (*self.bounds, self.step or 1)
        )


class StudyFile(BaseModel):
    """A whole study file, as validated."""

    model_config = _Strict
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    engine: EngineName = "optuna"  # who proposes: Optuna's samplers or KerasTuner's tuners
    objective: Objective = Objective()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    n_trials: int | None = Field(default=None, ge=1)  # the study's total
    timeout: float | None = Field(default=None, gt=0)  # seconds per invocation
    evaluate_test: bool = (
        False  # also evaluate each completed trial on the test set (never selects)
    )
    # Trainings of every configuration, each with its own seed (a grid runs each point this
    # often); report, best and combine aggregate them per configuration (mean, sd, n).
    repeats: int = Field(default=1, ge=1, le=100)
    data: DataSpec = DataSpec()
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Factor] = Field(default_factory=dict)
    # Explicit settings, for experiments that are not a product of factors (the study's
    # dropout runs: 0.5 for 20 epochs, then for up to 50): each point is a set of trial-config
    # values; the grid visits every point (times every combination of ``space``).
    points: list[dict[str, Any]] = Field(default_factory=list)


def _check_space(study: StudyFile, where: str) -> None:
    fields = TrialConfig.model_fields
    for key in study.space:
        if key not in fields:
            raise ConfigError(
                f"{where}: space.{_name(key)}: unknown factor; known: {', '.join(fields)}"
            )
        if key in study.fixed:
            raise ConfigError(f"{where}: {key} is both fixed and searched; keep one")
    base = make_config(study.fixed, f"{where}: fixed")
    for key, factor in study.space.items():
        for condition in factor.when or {}:
            if condition not in study.space and condition not in fields:
                raise ConfigError(
                    f"{where}: space.{key}.when: unknown factor {short_repr(condition)}; "
                    f"expected a key of space or of the trial config"
                )
        samples = factor.choices if factor.choices is not None else [factor.low, factor.high]
        for value in samples:
            _check_value(base, key, value, where)
    _check_points(study, base, where)
    if study.sampler.type == "grid":
        for key, factor in study.space.items():
            if factor.when:
                raise ConfigError(
                    f"{where}: space.{key}.when: grid sampler needs an unconditional space"
                )
            if factor.choices is None and factor.step is None:
                raise ConfigError(
                    f"{where}: space.{key}: grid sampler needs choices, or low/high with a step"
                )
    elif study.n_trials is None and study.timeout is None and study.sampler.type != "hyperband":
        raise ConfigError(
            f"{where}: n_trials or timeout is required for a {study.sampler.type} sampler"
        )


def _name(key: object) -> str:
    """A key as written, or cut (with its length) when it is too long to echo."""
    return key if isinstance(key, str) and len(key) <= 80 else short_repr(key)


def _check_points(study: StudyFile, base: TrialConfig, where: str) -> None:
    fields = TrialConfig.model_fields
    if study.points and study.sampler.type != "grid":
        raise ConfigError(f"{where}: points: explicit settings need the grid sampler")
    for index, point in enumerate(study.points):
        here = f"{where}: points[{index}]"
        if not point:
            raise ConfigError(f"{here}: empty: give at least one key: value")
        for key in point:
            if key not in fields:
                raise ConfigError(
                    f"{here}: unknown key {short_repr(key)}; known: {', '.join(fields)}"
                )
            if key in study.fixed or key in study.space:
                place = "fixed" if key in study.fixed else "space"
                raise ConfigError(f"{here}: {key} is also in {place}; keep one")
        make_config({**base.model_dump(), **point}, here)
    seen = [tuple(sorted((k, repr(v)) for k, v in point.items())) for point in study.points]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"{where}: points: the same setting is listed twice")


def _check_value(base: TrialConfig, key: str, value: Any, where: str) -> None:
    values = base.model_dump()
    values[key] = value
    if key == "dropout":  # the rate count is checked against the architecture at run time
        values["architecture"] = (
            "baseline2" if isinstance(value, str) and "/" in value else base.architecture
        )
    try:
        TrialConfig.model_validate(values)
    except ValidationError as error:
        ours = [e for e in error.errors() if e["loc"] and e["loc"][0] == key]
        if ours:
            raise ConfigError(format_validation_error(error, f"{where}: space")) from None


def parse_study(data: Any, where: str) -> StudyFile:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping of study settings, got {type(data).__name__}"
        )
    try:
        study = StudyFile.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_study_error(error, where)) from None
    _check_engine(study, where)
    _check_space(study, where)
    return study


def _check_engine(study: StudyFile, where: str) -> None:
    """The sampler, pruner and sampler settings must be ones the study's engine has."""
    engine, sampler = study.engine, study.sampler
    choices = ENGINE_SAMPLERS[engine]
    if sampler.type not in choices:
        raise ConfigError(
            f"{where}: sampler.type: {sampler.type!r} is not a sampler of the {engine} engine; "
            f"choose one of: {', '.join(choices)}"
        )
    for key, tuners in KERAS_TUNER_SETTINGS.items():
        if key not in sampler.model_fields_set:
            continue
        if engine != "keras_tuner":
            raise ConfigError(
                f"{where}: sampler.{key}: a setting of the keras_tuner engine; "
                f"this study's engine is {engine}"
            )
        if sampler.type not in tuners:
            raise ConfigError(
                f"{where}: sampler.{key}: a setting of the {', '.join(tuners)} sampler, "
                f"not of {sampler.type}"
            )
    if engine != "keras_tuner":
        return
    if study.repeats > 1 or study.points:
        key = "repeats" if study.repeats > 1 else "points"
        raise ConfigError(
            f"{where}: {key}: a setting of the optuna engine; the keras_tuner engine repeats "
            "with sampler.executions_per_trial"
        )
    if study.pruner.type != "none":
        raise ConfigError(
            f"{where}: pruner.type: the keras_tuner engine does not prune "
            f"(got {study.pruner.type!r}); set pruner: {{type: none}}, or use sampler "
            "hyperband (KerasTuner's Hyperband tuner stops weak trials itself)"
        )
    if sampler.type == "hyperband" and "epochs" in study.space:
        raise ConfigError(
            f"{where}: space.epochs: the hyperband sampler decides each trial's epochs "
            "(up to sampler.max_epochs); fix epochs instead of searching it"
        )


def _format_study_error(error: ValidationError, where: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(study)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        if len(key) > 80:
            key = short_repr(key)
        lines.append(f"{where}: {key}: {message} (got {short_repr(item.get('input'))})")
    return "\n".join(lines)


def load_study(
    path: str | Path,
    fixed: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    engine: str | None = None,
) -> StudyFile:
    """Read and validate a study file.

    ``fixed`` overrides trial-config keys (a searched key set here stops being
    searched); ``data`` overrides data options (``data_dir``, ``limit``...);
    ``engine`` overrides the file's engine.
    """
    path = Path(path)
    raw = load_yaml_file(path, "study file")
    if isinstance(raw, dict) and (fixed or data):
        raw = dict(raw)
        raw["fixed"] = {**(raw.get("fixed") or {}), **(fixed or {})}
        raw["space"] = {k: v for k, v in (raw.get("space") or {}).items() if k not in (fixed or {})}
        raw["data"] = {**(raw.get("data") or {}), **(data or {})}
    if isinstance(raw, dict) and engine:
        raw = {**raw, "engine": engine}
    return parse_study(raw, str(path))

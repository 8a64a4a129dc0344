"""Optuna samplers and pruners from a study file's ``sampler`` and ``pruner``."""

from __future__ import annotations

import optuna

from hpsearch.config import TrialConfig
from hpsearch.errors import ConfigError
from hpsearch.space import grid_space
from hpsearch.study import StudyFile


def make_sampler(study: StudyFile) -> optuna.samplers.BaseSampler:
    spec = study.sampler
    if spec.type == "grid":
        return optuna.samplers.GridSampler(grid_space(study), seed=spec.seed)
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if spec.type == "qmc":
        return optuna.samplers.QMCSampler(seed=spec.seed)
    startup = {} if spec.n_startup_trials is None else {"n_startup_trials": spec.n_startup_trials}
    if spec.type == "cmaes":
        try:
            import cmaes  # noqa: F401  (optuna's CMA-ES needs it)
        except ImportError:
            raise ConfigError(
                f"{study.name}: sampler cmaes needs the 'cmaes' package: pip install cmaes"
            ) from None
        return optuna.samplers.CmaEsSampler(seed=spec.seed, **startup)
    return optuna.samplers.TPESampler(seed=spec.seed, **startup)


def make_pruner(study: StudyFile) -> optuna.pruners.BasePruner:
    spec = study.pruner
    if spec.type == "median":
        return optuna.pruners.MedianPruner(spec.n_startup_trials, spec.n_warmup_steps)
    if spec.type == "percentile":
        return optuna.pruners.PercentilePruner(
            spec.percentile, spec.n_startup_trials, spec.n_warmup_steps
        )
    if spec.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.min_resource,
            reduction_factor=spec.reduction_factor,
            bootstrap_count=spec.bootstrap_count,
        )
    if spec.type == "hyperband":
        epochs = study.fixed.get("epochs", TrialConfig.model_fields["epochs"].default)
        return optuna.pruners.HyperbandPruner(
            min_resource=1 if spec.min_resource == "auto" else spec.min_resource,
            max_resource=int(epochs) if "epochs" not in study.space else "auto",
            reduction_factor=spec.reduction_factor,
            bootstrap_count=spec.bootstrap_count,
        )
    return optuna.pruners.NopPruner()

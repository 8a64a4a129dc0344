"""Optuna samplers and pruners from a study file's ``sampler`` and ``pruner`` sections.

They need those sections (and, for a grid, the search space), not the whole study file.
"""

from __future__ import annotations

import hashlib
from typing import Any

import optuna

from hpsearch.config import TrialConfig
from hpsearch.errors import ConfigError
from hpsearch.search.space import SearchSpace
from hpsearch.search.study_file import PrunerSpec, SamplerSpec


def worker_seed(seed: int, worker: int | str | None) -> int:
    """The sampler seed of one process among a study's workers.

    ``worker`` None (a lone ``hpsearch search``): ``seed`` itself, so a seeded study
    run in one process draws the same trials every time. Otherwise a seed mixed from
    ``seed`` and the worker's identity (its index, or ``host:pid`` for a worker
    started without one): samplers seeded alike in several processes would propose
    the same points. The same seed and index give the same worker seed.
    """
    if worker is None:
        return seed
    if isinstance(worker, int):
        key = [0, worker]
    else:
        key = [1, int.from_bytes(hashlib.sha256(worker.encode()).digest()[:8], "big")]
    import numpy as np

    return int(np.random.SeedSequence([seed, *key]).generate_state(1)[0])


def make_sampler(
    spec: SamplerSpec, space: SearchSpace, worker: int | str | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler ``spec`` says; ``worker`` (see :func:`worker_seed`) when several processes
    share it; ``space`` is what a grid walks.

    A grid keeps the study's seed in every worker: Optuna's ``GridSampler``
    shuffles its points with it and records each trial's point as an index into
    that order, and it gives the first trials the point of their trial number,
    so workers sharing one order visit each point once.
    """
    seed = worker_seed(spec.seed, worker)
    if spec.type == "grid":
        return optuna.samplers.GridSampler(space.grid_axes(), seed=spec.seed)
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.type == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    startup: dict[str, Any] = {}
    if spec.n_startup_trials is not None:
        startup["n_startup_trials"] = spec.n_startup_trials
    if spec.type == "cmaes":
        try:
            import cmaes  # noqa: F401  (optuna's CMA-ES needs it)
        except ImportError:
            raise ConfigError(
                "sampler.type cmaes needs the 'cmaes' package: pip install cmaes"
            ) from None
        return optuna.samplers.CmaEsSampler(seed=seed, **startup)
    return optuna.samplers.TPESampler(seed=seed, **startup)


def make_pruner(spec: PrunerSpec, space: SearchSpace) -> optuna.pruners.BasePruner:
    """The pruner ``spec`` says; Hyperband's largest budget is the epochs ``space`` fixes."""
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
        epochs = space.fixed.get("epochs", TrialConfig.model_fields["epochs"].default)
        return optuna.pruners.HyperbandPruner(
            min_resource=1 if spec.min_resource == "auto" else spec.min_resource,
            max_resource=int(epochs) if "epochs" not in space.factors else "auto",
            reduction_factor=spec.reduction_factor,
            bootstrap_count=spec.bootstrap_count,
        )
    return optuna.pruners.NopPruner()

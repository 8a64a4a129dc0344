"""One tracked trial: data in, a fitted model and a complete MLflow run out.

Glue between the runner (who runs) and tracking (who records); the study
driver calls the same function for every trial it proposes.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from hpsearch.config import DataSpec, TrialConfig
from hpsearch.datasets import Splits, load_dataset, split_dataset
from hpsearch.tracking import TrialRun
from hpsearch.training.runner import TrialResult, run_trial


def load_splits(spec: DataSpec) -> tuple[Splits, str]:
    """The train/validation/test splits ``spec`` asks for, and the data fingerprint."""
    dataset = load_dataset(spec.dataset, spec.data_dir)
    splits = split_dataset(
        dataset, spec.validation_fraction, seed=spec.split_seed, limit=spec.limit
    )
    return splits, dataset.fingerprint()


def tracked_trial(
    config: TrialConfig,
    spec: DataSpec,
    splits: Splits,
    run: TrialRun | None,
    fingerprint: str = "",
    callbacks: Sequence[keras.callbacks.Callback] = (),
    evaluate_test: bool = False,
    verbose: int = 2,
) -> TrialResult:
    """Run ``config`` on ``splits``, recording everything on ``run`` when one is given."""
    callbacks = list(callbacks)
    if run is not None:
        params = {**config.to_params(), **spec.to_params()}
        run.log_params(params, tags={"hpsearch.data_fingerprint": fingerprint})
        run.log_dataset(spec, fingerprint)
        callbacks.insert(0, run.epoch_logger())  # before a pruner ends the epoch
    result = run_trial(config, splits, callbacks, evaluate_test=evaluate_test, verbose=verbose)
    if run is not None:
        run.log_result(result, config, splits, fingerprint)
    return result

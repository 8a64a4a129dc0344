"""The trial runner: early stopping keeps the weights of the epoch its monitor picks."""

from __future__ import annotations

import numpy as np
import pytest

from hpsearch.config import DataSpec, make_config
from hpsearch.runner import evaluate, run_trial
from hpsearch.trial import load_splits


@pytest.fixture(scope="module")
def splits():
    return load_splits(DataSpec(dataset="digits", limit=300))[0]


@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy"])
def test_the_kept_weights_are_those_of_the_monitors_best_epoch(splits, monitor):
    config = make_config({"architecture": "baseline1", "epochs": 12, "patience": 12,
                          "learning_rate": 0.01, "monitor": monitor})  # fmt: skip
    result = run_trial(config, splits, verbose=0)
    losses, accuracies = result.history["val_loss"], result.history["val_accuracy"]
    # Both watched quantities peak at different epochs here, so picking the wrong one shows.
    assert np.argmin(losses) != np.argmax(accuracies)
    best = int(np.argmin(losses) if monitor == "val_loss" else np.argmax(accuracies))
    assert result.best_epoch == best + 1
    loss, accuracy, _ = evaluate(result.model, splits.x_val, splits.y_val, splits.num_classes)
    assert accuracy == pytest.approx(accuracies[best], abs=1e-6)
    assert loss == pytest.approx(losses[best], rel=1e-3)

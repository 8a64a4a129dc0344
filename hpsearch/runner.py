"""The trial runner: fit one config on one data split, with early stopping.

Knows nothing of MLflow or Optuna: trackers and pruners come in as Keras
callbacks. Raises :class:`TrialFailed` for a trial that cannot finish.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from hpsearch.augmentation import MixedBatches, needs_mixed_batches
from hpsearch.builder import build_model
from hpsearch.config import TrialConfig
from hpsearch.datasets import Splits
from hpsearch.errors import TrialFailed


@dataclass
class TrialResult:
    """What one fit produced. ``history`` maps Keras metric names to per-epoch values."""

    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int  # 1-based epoch of the lowest validation loss (the weights kept)
    best_val_accuracy: float
    best_val_loss: float
    fit_time_s: float
    wall_time_s: float
    val_predictions: np.ndarray  # predicted class per validation sample, with the kept weights
    test_metrics: dict[str, float] = field(default_factory=dict)

    def final_metrics(self) -> dict[str, float]:
        return {
            "best_val_accuracy": self.best_val_accuracy,
            "best_val_loss": self.best_val_loss,
            "best_epoch": float(self.best_epoch),
            "epochs_run": float(self.epochs_run),
            "fit_time_s": self.fit_time_s,
            "wall_time_s": self.wall_time_s,
            **self.test_metrics,
        }


class _LearningRateLog(keras.callbacks.Callback):
    """Puts the learning rate in effect into each epoch's logs."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


def _standard_callbacks(config: TrialConfig) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        ),
    ]
    if config.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=2)
        )
    return callbacks


def _training_data(config: TrialConfig, splits: Splits, onehot: np.ndarray):
    if needs_mixed_batches(config.augmentation):
        batches = MixedBatches(
            splits.x_train, onehot, config.batch_size, config.augmentation, config.seed
        )
        return {"x": batches}
    return {"x": splits.x_train, "y": onehot, "batch_size": config.batch_size, "shuffle": True}


def run_trial(
    config: TrialConfig,
    splits: Splits,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    evaluate_test: bool = False,
    verbose: int = 2,
) -> TrialResult:
    """Build, fit and evaluate ``config`` on ``splits``; ``verbose`` as in ``Model.fit``."""
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    keras.config.set_dtype_policy(config.precision)
    try:
        classes = splits.num_classes
        y_train = keras.utils.to_categorical(splits.y_train, classes)
        y_val = keras.utils.to_categorical(splits.y_val, classes)
        steps = math.ceil(len(splits.x_train) / config.batch_size)
        model = build_model(config, splits.input_shape, classes, steps)
        all_callbacks = [_LearningRateLog(), *_standard_callbacks(config), *callbacks]
        fit_started = time.perf_counter()
        fitted = model.fit(
            **_training_data(config, splits, y_train),
            validation_data=(splits.x_val, y_val),
            epochs=config.epochs,
            callbacks=all_callbacks,
            verbose=verbose,
        )
        fit_time = time.perf_counter() - fit_started
        history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
        _check_finite(history)
        val_loss = history["val_loss"]
        best = int(np.argmin(val_loss))
        val_probabilities = model.predict(splits.x_val, batch_size=512, verbose=0)
        test_metrics = {}
        if evaluate_test:
            y_test = keras.utils.to_categorical(splits.y_test, classes)
            loss, accuracy = model.evaluate(splits.x_test, y_test, batch_size=512, verbose=0)
            test_metrics = {"test_loss": float(loss), "test_accuracy": float(accuracy)}
    finally:
        keras.config.set_dtype_policy("float32")
    return TrialResult(
        model=model,
        history=history,
        epochs_run=len(val_loss),
        best_epoch=best + 1,
        best_val_accuracy=max(history["val_accuracy"]),
        best_val_loss=val_loss[best],
        fit_time_s=fit_time,
        wall_time_s=time.perf_counter() - started,
        val_predictions=np.argmax(val_probabilities, axis=1),
        test_metrics=test_metrics,
    )


def _check_finite(history: dict[str, list[float]]) -> None:
    for name in ("loss", "val_loss"):
        values = history.get(name, [])
        if not values or not all(math.isfinite(v) for v in values):
            raise TrialFailed(
                "nan_loss", f"training diverged: {name} became NaN or infinite ({values[-3:]})"
            )

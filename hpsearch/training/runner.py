"""The trial runner: fit one config on one data split, with early stopping.

Knows nothing of MLflow or Optuna: trackers and pruners come in as Keras
callbacks. Raises :class:`TrialFailed` for a trial that cannot finish.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from hpsearch.config import TrialConfig
from hpsearch.datasets import Splits
from hpsearch.errors import TrialFailed
from hpsearch.model.augmentation import MixedBatches, needs_mixed_batches
from hpsearch.model.builder import build_model, tested_model
from hpsearch.training.interrupts import interrupts_between_steps
from hpsearch.training.session import seed_trial


@dataclass
class TrialResult:
    """What one fit produced. ``history`` maps Keras metric names to per-epoch values."""

    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int  # 1-based best epoch by config.monitor (the weights kept)
    best_val_accuracy: float  # the highest of any epoch (what the pruners saw per epoch)
    best_val_loss: float  # the kept epoch's (the lowest when monitor is val_loss)
    kept_val_accuracy: float  # the kept weights' validation accuracy (their epoch's)
    fit_time_s: float
    wall_time_s: float
    test_metrics: dict[str, float] = field(default_factory=dict)

    def final_metrics(self) -> dict[str, float]:
        return {
            "best_val_accuracy": self.best_val_accuracy,
            "best_val_loss": self.best_val_loss,
            "kept_val_accuracy": self.kept_val_accuracy,
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
            monitor=config.monitor, patience=config.patience, restore_best_weights=True
        ),
    ]
    if config.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=2)
        )
    if config.optimizer_switch != "none":
        from hpsearch.model.optimizers import SwitchToSgd

        callbacks.append(SwitchToSgd(config))
    return callbacks


def _training_data(config: TrialConfig, images: np.ndarray, onehot: np.ndarray) -> dict:
    if needs_mixed_batches(config.augmentation):
        batches = MixedBatches(images, onehot, config.batch_size, config.augmentation, config.seed)
        return {"x": batches}
    return {"x": images, "y": onehot, "batch_size": config.batch_size, "shuffle": True}


def _fit(
    config: TrialConfig,
    images: np.ndarray,
    labels: np.ndarray,
    splits: Splits,
    callbacks: list[keras.callbacks.Callback],
    epochs: int,
    verbose: int,
    validation: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[keras.Model, dict[str, list[float]], float]:
    """Seed, build and fit; returns the model, the history and the seconds in ``fit``."""
    seed_trial(config.seed)
    classes = splits.num_classes
    onehot = keras.utils.to_categorical(labels, classes)
    steps = math.ceil(len(images) / config.batch_size)
    with interrupts_between_steps() as between_steps:  # Ctrl-C: at a step boundary
        model = build_model(config, splits.input_shape, classes, steps)
        if validation is not None:
            validation = (validation[0], keras.utils.to_categorical(validation[1], classes))
        started = time.perf_counter()
        fitted = model.fit(
            **_training_data(config, images, onehot),
            validation_data=validation,
            epochs=epochs,
            callbacks=[between_steps, _LearningRateLog(), *callbacks],
            verbose=verbose,
        )
        seconds = time.perf_counter() - started
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    _check_finite(history, ("loss", "val_loss") if validation is not None else ("loss",))
    return model, history, seconds


EAGER_PREDICT_LIMIT = 4096  # images; above it a traced predict function pays for its tracing


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities for ``images``, inference mode.

    A small set (a validation split of a few thousand images) is run through the
    model eagerly: tracing ``Model.predict``'s function for a new model costs more
    than predicting a few thousand small images takes.
    """
    if len(images) > EAGER_PREDICT_LIMIT:
        return model.predict(images, batch_size=batch_size, verbose=0)
    batches = [
        keras.ops.convert_to_numpy(model(images[start : start + batch_size], training=False))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, model.output_shape[-1]))


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray, classes: int):
    """(loss, accuracy, probabilities) of ``model`` on labelled images."""
    probabilities = predict(model, images)
    onehot = keras.utils.to_categorical(labels, classes)
    loss = float(keras.ops.mean(keras.losses.categorical_crossentropy(onehot, probabilities)))
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == labels))
    return loss, accuracy, probabilities


def run_trial(
    config: TrialConfig,
    splits: Splits,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    evaluate_test: bool = False,
    verbose: int = 2,
) -> TrialResult:
    """Build, fit and evaluate ``config`` on ``splits``; ``verbose`` as in ``Model.fit``."""
    started = time.perf_counter()
    warn_if_batch_norm_lags(config, len(splits.x_train))
    keras.config.set_dtype_policy(config.precision)
    try:
        model, history, fit_time = _fit(
            config, splits.x_train, splits.y_train, splits,
            [*_standard_callbacks(config), *callbacks],
            config.epochs, verbose, validation=(splits.x_val, splits.y_val),
        )  # fmt: skip
        best = best_epoch_index(history, config.monitor)
        test_metrics = {}
        if evaluate_test:
            tested = tested_model(model, config)
            loss, accuracy, _ = evaluate(tested, splits.x_test, splits.y_test, splits.num_classes)
            test_metrics = {"test_loss": loss, "test_accuracy": accuracy}
    finally:
        keras.config.set_dtype_policy("float32")
    release_traced_functions(model)
    return TrialResult(
        model=model,
        history=history,
        epochs_run=len(history["val_loss"]),
        best_epoch=best + 1,
        best_val_accuracy=max(history["val_accuracy"]),
        best_val_loss=history["val_loss"][best],
        kept_val_accuracy=history["val_accuracy"][best],
        fit_time_s=fit_time,
        wall_time_s=time.perf_counter() - started,
        test_metrics=test_metrics,
    )


def batch_norm_lag(config: TrialConfig, train_size: int) -> str | None:
    """Why validation under batch norm would lag training, or None.

    Batch norm's moving statistics (what inference uses) average over about
    ``1 / (1 - momentum)`` steps: 100 at Keras's 0.99. With fewer steps than that
    in an epoch, each epoch's validation sees statistics of the weights of epochs
    ago, and its accuracy can collapse while training accuracy climbs.
    """
    if config.batch_norm == "none":
        return None
    steps = math.ceil(train_size / config.batch_size)
    horizon = 1 / (1 - config.batch_norm_momentum)
    if steps >= horizon:
        return None
    return (f"batch_norm_momentum {config.batch_norm_momentum:g} averages batch norm's "
            f"statistics over ~{horizon:.0f} steps, but an epoch has {steps}: validation "
            f"will lag training; use batch_norm_momentum <= {1 - 1 / steps:.2g} or more "
            "data")  # fmt: skip


_WARNED: set[str] = set()  # each batch-norm warning once a process, not once a trial


def warn_if_batch_norm_lags(config: TrialConfig, train_size: int) -> None:
    """:func:`batch_norm_lag` as a warning on stderr, once per process."""
    reason = batch_norm_lag(config, train_size)
    if reason and reason not in _WARNED:
        _WARNED.add(reason)
        logging.getLogger("hpsearch").warning("warning: %s", reason)


@dataclass
class FinalResult:
    """A model retrained on training + validation data and evaluated once on the test set."""

    model: keras.Model
    history: dict[str, list[float]]
    epochs: int
    test_loss: float
    test_accuracy: float
    test_probabilities: np.ndarray
    fit_time_s: float


def train_final(
    config: TrialConfig,
    splits: Splits,
    epochs: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 2,
) -> FinalResult:
    """Fit on training + validation data for ``epochs`` epochs, then evaluate on the test set.

    A cosine schedule spans the ``epochs`` of this fit, not the trial's maximum:
    the final model is trained to the end of its schedule, whatever epoch early
    stopping picked in the trial.
    """
    images = np.concatenate([splits.x_train, splits.x_val])
    labels = np.concatenate([splits.y_train, splits.y_val])
    config = schedule_over(config, epochs)
    keras.config.set_dtype_policy(config.precision)
    try:
        extra = [keras.callbacks.TerminateOnNaN(), *callbacks]
        if config.optimizer_switch == "epoch":  # no validation here: a plateau never shows
            from hpsearch.model.optimizers import SwitchToSgd

            extra.append(SwitchToSgd(config))
        model, history, fit_time = _fit(
            config, images, labels, splits, extra, epochs, verbose, validation=None
        )
        loss, accuracy, probabilities = evaluate(
            tested_model(model, config), splits.x_test, splits.y_test, splits.num_classes
        )
    finally:
        keras.config.set_dtype_policy("float32")
    return FinalResult(model, history, epochs, loss, accuracy, probabilities, fit_time)


def schedule_over(config: TrialConfig, epochs: int) -> TrialConfig:
    """``config`` with its epochs (the cosine decay's length) set to ``epochs``.

    A warm-up that would not be shorter than the new length is cut to one epoch less.
    """
    if epochs == config.epochs:
        return config
    warmup = min(config.warmup_epochs, epochs - 1)
    return TrialConfig.model_validate(
        {**config.model_dump(), "epochs": epochs, "warmup_epochs": warmup}
    )


def release_traced_functions(model: keras.Model) -> None:
    """Drop the model's traced train/test/predict functions (Keras traces again if needed).

    They hold the traced graphs, a large object graph that the garbage collector
    would otherwise walk through as long as the model lives: the trial's
    artifacts keep the model until they are uploaded, during the next trial.
    """
    model.train_function = model.test_function = model.predict_function = None


def best_epoch_index(history: dict[str, list[float]], monitor: str) -> int:
    """0-based epoch whose weights early stopping keeps: lowest loss or highest accuracy."""
    values = history[monitor]
    return int(np.argmax(values) if monitor.endswith("accuracy") else np.argmin(values))


def _check_finite(history: dict[str, list[float]], names: tuple[str, ...]) -> None:
    for name in names:
        values = history.get(name, [])
        if not values or not all(math.isfinite(v) for v in values):
            raise TrialFailed(
                "nan_loss", f"training diverged: {name} became NaN or infinite ({values[-3:]})"
            )

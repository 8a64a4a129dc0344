"""GPU run: the combined configuration on full CIFAR-10, timed.

Reports images per second, seconds per epoch, time to 85% and to 90% validation
accuracy, and test accuracy. Sized for about 8 minutes on one H100. Runs on
TensorFlow or JAX (`KERAS_BACKEND=jax`, for a GPU machine without TensorFlow).

    KERAS_BACKEND=jax python benchmarks/gpu_run.py --data-dir data/cifar10-jpeg.tar.gz
    KERAS_BACKEND=jax python benchmarks/gpu_run.py --set width=4 --set dropout=0.2/0.3/0.4
    python benchmarks/gpu_run.py --limit 500 --epochs 1      # a quick check on a CPU

`--budget S` stops training after the epoch that would otherwise run past S seconds of
training (the best weights so far are then tested), so a run always reports.

`--final` then does what `hpsearch combine` does with the result: retrains the configuration
on training + validation data for the epochs the run trained (its schedule spanning them) and
tests that model once; the best model's test accuracy is the final model's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, record, table  # noqa: E402

# The reference study's combined model, plus what a GPU affords: augmentation, a cosine
# schedule, bfloat16 and XLA.
COMBINED = {
    "architecture": "baseline2",
    "batch_norm": "before",
    "kernel_initializer": "he_normal",
    "batch_size": 256,
    "dropout": "0.2/0.5/0.7",
    "weight_decay": "l2",
    "weight_decay_magnitude": 1e-4,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "activation": "relu",
}


class Clock:
    """Keras callback: epoch times and the first time validation accuracy crosses marks."""

    def __init__(self, marks=(0.85, 0.90), budget: float = 0.0):
        import keras

        class _Callback(keras.callbacks.Callback):
            def on_train_begin(inner, logs=None):
                self.started = time.perf_counter()

            def on_epoch_begin(inner, epoch, logs=None):
                self.epoch_started = time.perf_counter()

            def on_epoch_end(inner, epoch, logs=None):
                now = time.perf_counter()
                self.epochs.append(now - self.epoch_started)
                accuracy = (logs or {}).get("val_accuracy", 0.0)
                for mark in self.marks:
                    if accuracy >= mark and mark not in self.reached:
                        self.reached[mark] = (now - self.started, epoch + 1)
                if self.budget and now - self.started + self.epochs[-1] > self.budget:
                    print(f"time budget of {self.budget:.0f} s reached after epoch {epoch + 1}")
                    self.stopped = epoch + 1
                    inner.model.stop_training = True

        self.marks, self.epochs, self.reached, self.budget = marks, [], {}, budget
        self.stopped = 0
        self.callback = _Callback()

    def seconds_per_epoch(self) -> float:
        """Mean epoch time after the first (which includes compilation), if there was more."""
        steady = self.epochs[1:] or self.epochs
        return sum(steady) / len(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=0, help="samples per split; 0: all")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--augmentation", default="standard")
    parser.add_argument("--lr-schedule", default="cosine")
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--jit-compile", action="store_true", default=True)
    parser.add_argument("--no-jit-compile", dest="jit_compile", action="store_false")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a factor of the combined configuration (repeatable)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=0.0,
        help="seconds of training after which to stop (0: no limit)",
    )
    parser.add_argument(
        "--final",
        action="store_true",
        help="then retrain on training + validation data for the epochs run, and test",
    )
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)

    import keras

    from hpsearch.config import make_config, make_data_spec
    from hpsearch.tracking.trial import load_splits
    from hpsearch.training.runner import evaluate, run_trial, train_final

    spec = make_data_spec({"dataset": "folder", "data_dir": args.data_dir,
                           "limit": args.limit or None})  # fmt: skip
    splits, _ = load_splits(spec)
    config = make_config(
        {**COMBINED, "epochs": args.epochs, "patience": args.epochs,
         "augmentation": args.augmentation, "lr_schedule": args.lr_schedule,
         "precision": args.precision, "jit_compile": args.jit_compile, **overrides}
    )  # fmt: skip
    clock = Clock(budget=args.budget)
    result = run_trial(config, splits, [clock.callback], evaluate_test=True, verbose=2)
    seconds_per_epoch = clock.seconds_per_epoch()
    images_per_second = len(splits.x_train) / seconds_per_epoch

    def reached(mark: float) -> str:
        if mark not in clock.reached:
            return "not reached"
        seconds, epoch = clock.reached[mark]
        return f"{seconds:.0f} s (epoch {epoch})"

    rows = [
        ["device", keras.backend.backend() + ": " + _device()],
        ["training images", len(splits.x_train)],
        [
            "configuration",
            ", ".join(
                f"{k}={v}" for k, v in config.to_params().items() if k in {*COMBINED, *overrides}
            ),
        ],
        ["epochs run", f"{result.epochs_run}" + (" (time budget)" if clock.stopped else "")],
        ["seconds per epoch (after the first)", f"{seconds_per_epoch:.2f}"],
        ["first epoch (compilation included)", f"{clock.epochs[0]:.2f}"],
        ["training images per second", f"{images_per_second:,.0f}"],
        ["time to 85% validation accuracy", reached(0.85)],
        ["time to 90% validation accuracy", reached(0.90)],
        [
            "best validation accuracy in the first 20 epochs",
            f"{max(result.history['val_accuracy'][:20]):.4f}",
        ],
        ["best validation accuracy", f"{result.best_val_accuracy:.4f}"],
        ["test accuracy", f"{result.test_metrics['test_accuracy']:.4f}"],
    ]
    test = (splits.x_test, splits.y_test, splits.num_classes)
    if config.test_time_flip:  # what the mirror average adds
        rows.append(["test accuracy without the mirror average",
                     f"{evaluate(result.model, *test)[1]:.4f}"])  # fmt: skip
    if args.final:
        final_clock = Clock(marks=())
        final = train_final(config, splits, result.epochs_run, [final_clock.callback], verbose=2)
        rows += [
            ["final model: training + validation images",
             len(splits.x_train) + len(splits.x_val)],
            ["final model: epochs, seconds per epoch",
             f"{final.epochs}, {final_clock.seconds_per_epoch():.2f}"],
            ["final model: training accuracy at the end", f"{final.history['accuracy'][-1]:.4f}"],
            ["final model: test accuracy", f"**{final.test_accuracy:.4f}**"],
        ]  # fmt: skip
        if config.test_time_flip:
            rows.append(["final model: test accuracy without the mirror average",
                         f"{evaluate(final.model, *test)[1]:.4f}"])  # fmt: skip
    changed = "".join(f", {k}={v}" for k, v in overrides.items())
    record(f"GPU run: combined configuration{changed}, {args.epochs} epochs, {args.augmentation} "
           f"augmentation, {args.precision}, jit {args.jit_compile}",
           table(["measure", "value"], rows),
           "validation accuracy by epoch: "
           + ", ".join(f"{v:.3f}" for v in result.history["val_accuracy"]))  # fmt: skip


def _device() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return ", ".join(str(d) for d in jax.devices())
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ", ".join(g.name for g in gpus) or "CPU"


if __name__ == "__main__":
    main()

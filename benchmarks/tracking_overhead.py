"""Tracking overhead: one trial through hpsearch (Optuna + MLflow) vs a bare `model.fit`.

Same model, data, seed and epochs; runs interleaved A/B/A/B, each in a fresh process
whose timer starts after imports (both timers include loading the cached data), and
reports the ratio of wall times and the difference per run. Target (issue 6): at most 1.02.

The ratio depends on the trial's length: hpsearch's cost per trial is mostly fixed
(study storage, parent run, summary plots, the last upload), so it is also shown in
seconds. The default size, 10,000 CIFAR-10 images per split for 3 epochs (about a
minute on 2 CPU cores), is a short real trial.

This machine has slow spells (whole epochs twice as long, in bare runs as in hpsearch's), which
two pairs of runs do not average out. So each run also times its epochs, and the fastest epoch
after the first (no tracing in it) is compared: per-epoch costs of hpsearch inside ``fit``
(its callbacks, the MLflow epoch logging, uploads in the background) show there, and a slow
spell does not unless it covers every epoch of every run of one side.

    python benchmarks/tracking_overhead.py --limit 10000 --epochs 3 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, record, table  # noqa: E402

CONFIG = {"architecture": "baseline2", "batch_norm": "before", "batch_size": 128, "patience": 50}


def child(mode: str, data_dir: str, limit: int, epochs: int) -> dict:
    """Run one measurement in this process and return its timings."""
    import keras

    from hpsearch.config import make_config, make_data_spec
    from hpsearch.tracking.trial import load_splits

    epochs_s: list[float] = []

    class EpochTimes(keras.callbacks.Callback):
        """Seconds per epoch, validation included; no batch hooks (Keras's dispatch unchanged)."""

        def on_epoch_begin(self, epoch: int, logs=None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            epochs_s.append(time.perf_counter() - self.started)

    spec = make_data_spec({"dataset": "folder", "data_dir": data_dir, "limit": limit})
    load_splits(spec)  # decoded and cached on the first run; both timers include a cached load
    config = make_config({**CONFIG, "epochs": epochs, "seed": 1})
    with tempfile.TemporaryDirectory() as folder:
        if mode == "hpsearch":
            import mlflow

            from hpsearch.search.lifecycle import run_search
            from hpsearch.search.study_file import parse_study

            mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
            study = parse_study(
                {"name": "overhead", "sampler": {"type": "grid"}, "data": spec.model_dump(),
                 "fixed": config.model_dump(mode="json"), "space": {}},
                "overhead.yaml",
            )  # fmt: skip
            mlflow.MlflowClient().search_experiments()  # create the store's tables up front
            started = time.perf_counter()
            run_search(study, f"sqlite:///{folder}/optuna.db", echo=lambda _: None, verbose=0,
                       extra_callbacks=lambda trial: [EpochTimes()])  # fmt: skip
            wall = time.perf_counter() - started
            import optuna

            trial = optuna.load_study(
                study_name="overhead", storage=f"sqlite:///{folder}/optuna.db"
            )
            fit = trial.trials[0].user_attrs["fit_time_s"]
            return {"wall": wall, "fit": fit, "epochs": epochs_s}
        from hpsearch.model.builder import build_model

        started = time.perf_counter()
        splits, _ = load_splits(spec)
        keras.utils.set_random_seed(config.seed)
        model = build_model(config, splits.input_shape, splits.num_classes,
                            -(-len(splits.x_train) // config.batch_size))  # fmt: skip
        fit_started = time.perf_counter()
        model.fit(
            splits.x_train, keras.utils.to_categorical(splits.y_train, splits.num_classes),
            validation_data=(splits.x_val,
                             keras.utils.to_categorical(splits.y_val, splits.num_classes)),
            batch_size=config.batch_size, epochs=epochs, verbose=0,
            callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=50,
                                                     restore_best_weights=True), EpochTimes()],
        )  # fmt: skip
        fit = time.perf_counter() - fit_started
        model.predict(splits.x_val, batch_size=512, verbose=0)
        return {"wall": time.perf_counter() - started, "fit": fit, "epochs": epochs_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["hpsearch", "bare"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data_dir, args.limit, args.epochs)))
        return
    times: dict[str, list[float]] = {"hpsearch": [], "bare": []}
    fits: dict[str, list[float]] = {"hpsearch": [], "bare": []}
    epochs: dict[str, list[list[float]]] = {"hpsearch": [], "bare": []}
    for _ in range(args.repeats):
        for mode in ("hpsearch", "bare"):
            done = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--data-dir", args.data_dir,
                 "--limit", str(args.limit), "--epochs", str(args.epochs)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            times[mode].append(measured["wall"])
            fits[mode].append(measured["fit"])
            epochs[mode].append(measured["epochs"])
            per_epoch = ", ".join(f"{t:.1f}" for t in measured["epochs"])
            wall, fit = measured["wall"], measured["fit"]
            print(mode, f"{wall:.2f} s, fit {fit:.2f} s, epochs {per_epoch}", flush=True)
    mean = statistics.mean
    outside = {m: [w - f for w, f in zip(times[m], fits[m], strict=True)] for m in times}
    ratio = mean(times["hpsearch"]) / mean(times["bare"])
    steady = {m: min(t for run in epochs[m] for t in run[1:]) for m in epochs}
    rows = [[mode, ", ".join(f"{t:.2f}" for t in times[mode]), f"{mean(times[mode]):.2f}",
             ", ".join(f"{t:.2f}" for t in outside[mode]), f"{mean(outside[mode]):.2f}",
             "; ".join(", ".join(f"{t:.1f}" for t in run) for run in epochs[mode]),
             f"{steady[mode]:.2f}"]
            for mode in times]  # fmt: skip
    body = table(["run", "wall times (s), A/B interleaved", "mean (s)",
                  "outside fit (s)", "mean outside fit (s)", "epochs (s), per run",
                  "fastest epoch after the first (s)"], rows)  # fmt: skip
    extra = mean(outside["hpsearch"]) - mean(outside["bare"])
    in_fit = steady["hpsearch"] / steady["bare"]
    estimate = (mean(fits["bare"]) * in_fit + mean(outside["hpsearch"])) / mean(times["bare"])
    body += f"\n\nratio of mean wall times, hpsearch / bare: **{ratio:.3f}** (target at most 1.02)"
    body += (
        f"\n\nfastest epoch after the first, hpsearch / bare: **{in_fit:.3f}** (hpsearch's cost "
        f"per epoch inside `fit`); hpsearch's extra time outside `fit`: {extra:.2f} s per run. "
        f"With hpsearch's `fit` taken as the bare runs' `fit` times that per-epoch ratio (the "
        f"machine's slow spells out), the ratio of wall times is **{estimate:.3f}**"
    )
    record(
        f"Tracking overhead: baseline2+BN, {args.limit} images/split, {args.epochs} epochs",
        body,
    )


if __name__ == "__main__":
    main()

"""Trial time with the optimizer's and metrics' variables built before fit, or by Keras inside it.

Under TensorFlow, a model compiled the plain Keras way gets its optimizer and
metric variables inside the first trace of its train step; TensorFlow then
traces the train and test steps twice. hpsearch's ``build_model`` creates them
first (``build_training_state``). Both ways, interleaved A/B/B/A on the same
configs and seeds, one process: build seconds, fit seconds, their sum,
garbage-collection seconds after the trial, and the final validation accuracy
(identical both ways).

    python benchmarks/training_state.py --trials 12
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trials per way")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--dataset", default="digits")
    args = parser.parse_args()

    import keras

    from hpsearch.config import DataSpec, make_config
    from hpsearch.model.builder import build_model
    from hpsearch.tracking.trial import load_splits
    from hpsearch.training.runner import release_traced_functions
    from hpsearch.training.session import release_trial_state

    splits, _ = load_splits(DataSpec(dataset=args.dataset, limit=args.limit))
    classes = splits.num_classes
    train = (splits.x_train, keras.utils.to_categorical(splits.y_train, classes))
    val = (splits.x_val, keras.utils.to_categorical(splits.y_val, classes))
    ways = {"Keras builds them in fit": False, "built before fit (hpsearch)": True}
    rows: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in ways}
    gc.freeze()
    for index in range(2 * args.trials + 2):  # the first pair warms up
        pair, second = divmod(index, 2)
        names = list(ways)
        name = names[second ^ (pair % 2)]  # A B, B A, A B, ...
        config = make_config({"architecture": "baseline2", "epochs": args.epochs,
                              "batch_size": 32, "seed": pair, "dropout": "0.2/0.3/0.4",
                              "batch_norm": ("after", "none", "before")[pair % 3]})  # fmt: skip
        keras.utils.set_random_seed(config.seed)
        started = time.perf_counter()
        steps = math.ceil(len(train[0]) / config.batch_size)
        model = build_model(config, splits.input_shape, classes, steps, training_state=ways[name])
        built = time.perf_counter()
        fitted = model.fit(*train, batch_size=config.batch_size, epochs=args.epochs,
                           validation_data=val, shuffle=True, verbose=0)  # fmt: skip
        fit = time.perf_counter() - built
        accuracy = fitted.history["val_accuracy"][-1]
        release_traced_functions(model)
        del model, fitted
        collected = time.perf_counter()
        release_trial_state()
        if pair:
            rows[name].append((built - started, fit, time.perf_counter() - collected, accuracy))
    gc.unfreeze()

    def median(name: str, column: int) -> float:
        return statistics.median(row[column] for row in rows[name])

    accuracies = {name: [round(row[3], 4) for row in rows[name]] for name in ways}
    body = table(
        ["optimizer and metric variables", "build (s)", "fit (s)", "build + fit (s)",
         "release after the trial (s)"],
        [[name, f"{median(name, 0):.3f}", f"{median(name, 1):.2f}",
          f"**{statistics.median(r[0] + r[1] for r in rows[name]):.2f}**", f"{median(name, 2):.3f}"]
         for name in ways],
    )  # fmt: skip
    first, second = ways
    same = accuracies[first] == accuracies[second]
    body += (f"\n\nmedians over {args.trials} trials each; final validation accuracies "
             f"{'identical' if same else 'DIFFERENT'} both ways: {accuracies[second]}")  # fmt: skip
    record(f"Training state built before fit: baseline2, {args.epochs} epochs on {args.dataset} "
           f"(limit {args.limit})", body)  # fmt: skip


if __name__ == "__main__":
    main()

"""Between-trial overhead and memory across trials, on one 20-trial study of tiny models.

* the share of the study's wall time spent outside `Model.fit` (study bookkeeping, model
  building, evaluation, MLflow logging and artifacts, summary plots); target at most 5%;
* the peak RSS of the worker after trial 2 and after trial 20; target growth at most 10%.

    python benchmarks/study_overhead.py --trials 20
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, table  # noqa: E402

WHERE = {"process": "in the drawing process", "in-process": "in-process"}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument(
        "--figures",
        choices=["process", "in-process"],
        default="process",
        help="where the trials' figures are drawn: the drawing process (as "
        "hpsearch does) or the upload thread (as before it had one)",
    )
    args = parser.parse_args()

    import keras
    import mlflow

    import hpsearch.search.optuna_engine
    from hpsearch.search.lifecycle import run_search
    from hpsearch.search.study_file import parse_study

    peaks: dict[int, float] = {}

    class Memory(keras.callbacks.Callback):
        """Peak RSS as each trial ends (trial numbers from 1)."""

        def __init__(self, number: int) -> None:
            super().__init__()
            self.number = number

        def on_train_end(self, logs=None) -> None:
            peaks[self.number + 1] = peak_rss_mib()

    spec = parse_study(
        {
            "name": "overhead",
            "sampler": {"type": "random", "seed": 0},
            "n_trials": args.trials,
            "data": {"dataset": args.dataset, "limit": args.limit},
            "fixed": {"architecture": "baseline2", "epochs": args.epochs, "batch_size": 32,
                      "patience": 50},
            "space": {"batch_norm": {"choices": ["none", "before", "after"]},
                      "dropout": {"choices": ["none", 0.2, "0.2/0.3/0.4"]},
                      "learning_rate": {"low": 3e-4, "high": 3e-3, "log": True}},
        },
        "overhead.yaml",
    )  # fmt: skip
    if args.figures == "in-process":

        class InProcess(hpsearch.search.optuna_engine.DrawingProcess):
            def __init__(self) -> None:
                super().__init__()
                self.in_process = True

        hpsearch.search.optuna_engine.DrawingProcess = InProcess
    with tempfile.TemporaryDirectory() as folder:
        mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
        mlflow.MlflowClient().search_experiments()  # the store's tables, before the clock
        started = time.perf_counter()
        run_search(spec, f"sqlite:///{folder}/optuna.db", echo=lambda _: None, verbose=0,
                   extra_callbacks=lambda trial: [Memory(trial.number)])  # fmt: skip
        wall = time.perf_counter() - started
        import optuna

        trials = optuna.load_study(study_name="overhead", storage=f"sqlite:///{folder}/optuna.db")
        fit = sum(t.user_attrs.get("fit_time_s", 0.0) for t in trials.trials)
    outside = 1 - fit / wall
    per_trial = (wall - fit) / args.trials
    body = table(
        ["trials", "study wall (s)", "inside fit (s)", "outside fit (s)",
         "outside fit per trial (s)", "share outside fit"],
        [[args.trials, f"{wall:.1f}", f"{fit:.1f}", f"{wall - fit:.1f}", f"{per_trial:.2f}",
          f"**{outside:.1%}**"]],
    )  # fmt: skip
    body += "\n\ntarget: at most 5% outside fit\n\n"
    last = max(peaks)
    growth = peaks[last] / peaks[2] - 1
    body += table(
        ["peak RSS after trial 2 (MiB)", f"after trial {last} (MiB)", "growth"],
        [[f"{peaks[2]:.0f}", f"{peaks[last]:.0f}", f"**{growth:+.1%}**"]],
    )
    body += "\n\ntarget: growth at most 10%"
    record(f"Study overhead: {args.trials} trials of baseline2 on {args.dataset} "
           f"(limit {args.limit}), {args.epochs} epochs, figures drawn {WHERE[args.figures]}",
           body)  # fmt: skip


if __name__ == "__main__":
    main()

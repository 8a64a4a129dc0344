"""Optuna against KerasTuner: one study, both engines, an equal budget of training epochs.

Every engine runs the same study (the same space, fixed settings, seeds and fixed CIFAR-10
subset) for ``--epochs-budget`` training epochs: ``budget // epochs`` trials of ``epochs``
epochs each (early stopping is off, so each trial trains all its epochs). The table gives, per
engine and sampler, the trials run, the epochs actually trained, the best validation accuracy
and the wall time; it is printed and appended to results-history.jsonl.

    python benchmarks/engines.py --limit 1000 --epochs 4 --epochs-budget 16
    python benchmarks/engines.py --runs optuna:tpe,keras_tuner:bayesian,keras_tuner:hyperband

``keras_tuner:hyperband`` runs KerasTuner's Hyperband schedule for ``max_epochs = epochs``
(one iteration, factor 3) instead of a trial count; its epochs are reported as trained.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, record, table  # noqa: E402

DEFAULT_RUNS = "optuna:random,keras_tuner:random,optuna:tpe,keras_tuner:bayesian"


def study_dict(name: str, engine: str, sampler: str, args, seed: int) -> dict:
    trials = max(1, args.epochs_budget // args.epochs)
    settings: dict = {"type": sampler, "seed": seed}
    if sampler in ("tpe", "bayesian"):
        settings["n_startup_trials"] = max(1, min(3, trials // 2))
    if sampler == "hyperband":
        settings["max_epochs"] = args.epochs
    return {
        "name": name,
        "description": "engine benchmark",
        "engine": engine,
        "objective": {"metric": "best_val_accuracy", "direction": "maximize"},
        "sampler": settings,
        **({} if sampler == "hyperband" else {"n_trials": trials}),
        "data": {"dataset": "folder", "data_dir": args.data_dir, "limit": args.limit},
        "fixed": {"architecture": args.architecture, "epochs": args.epochs,
                  "batch_size": 64, "patience": args.epochs},
        "space": {
            "optimizer": {"choices": ["adam", "sgd_momentum"]},
            "learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
            "momentum": {"low": 0.5, "high": 0.95, "when": {"optimizer": ["sgd_momentum"]}},
            "batch_norm": {"choices": ["none", "before"]},
            "dropout": {"choices": ["none", 0.2]},
        },
    }  # fmt: skip


def run_one(engine: str, sampler: str, args, seed: int, folder: Path) -> dict:
    import optuna

    from hpsearch.search.lifecycle import run_search
    from hpsearch.search.study_file import parse_study

    name = f"{engine}_{sampler}_{seed}"
    spec = parse_study(study_dict(name, engine, sampler, args, seed), f"{name}.yaml")
    storage = f"sqlite:///{folder / 'optuna.db'}"
    started = time.perf_counter()
    outcome = run_search(spec, storage,  # the study file names the engine
                          echo=print if args.verbose else lambda _: None, verbose=0)
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name=name, storage=storage).trials
    return {
        "trials": len(trials),
        "epochs": sum(t.user_attrs.get("epochs_run", 0) for t in trials),
        "best": outcome.best_value or 0.0,
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA, help="CIFAR-10 folder/archive")
    parser.add_argument("--limit", type=int, default=2000, help="samples per split")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial")
    parser.add_argument("--epochs-budget", type=int, default=40, help="epochs per engine")
    parser.add_argument("--trials", type=int, default=0,
                        help="trials per engine (0: epochs budget // epochs)")  # fmt: skip
    parser.add_argument("--architecture", default="baseline1")
    parser.add_argument("--seeds", type=int, default=1, help="repeat with sampler seeds 0..N-1")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="engine:sampler, comma-separated")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if args.trials:
        args.epochs_budget = args.trials * args.epochs

    import mlflow

    rows = []
    with tempfile.TemporaryDirectory(prefix="hpsearch-engines-") as tmp:
        folder = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
        mlflow.MlflowClient().search_experiments()  # the store's tables, before any clock
        from hpsearch.config import make_data_spec
        from hpsearch.tracking.trial import (
            load_splits,  # decode and cache the subset before any clock
        )

        load_splits(make_data_spec({"dataset": "folder", "data_dir": args.data_dir,
                                    "limit": args.limit}))  # fmt: skip
        for pair in args.runs.split(","):
            engine, sampler = pair.strip().split(":")
            results = [run_one(engine, sampler, args, seed, folder) for seed in range(args.seeds)]
            best = [r["best"] for r in results]
            spread = f" ± {statistics.stdev(best):.1%}" if len(best) > 1 else ""
            rows.append([
                engine, sampler,
                f"{statistics.mean(r['trials'] for r in results):g}",
                f"{statistics.mean(r['epochs'] for r in results):g}",
                f"**{statistics.mean(best):.1%}**{spread}",
                f"{statistics.mean(r['wall'] for r in results):.0f}",
            ])  # fmt: skip
            print(rows[-1], flush=True)
    body = table(
        ["engine", "sampler", "trials", "epochs trained", "best val accuracy", "wall time (s)"],
        rows,
    )
    notes = (
        f"keras-tuner {metadata.version('keras-tuner')}; CIFAR-10 subset: {args.limit} images "
        f"per split (split seed 0); {args.architecture}, batch 64, {args.epochs} epochs per "
        f"trial, no early stopping; budget {args.epochs_budget} epochs per engine; "
        f"{args.seeds} sampler seed(s), mean{' ± sd' if args.seeds > 1 else ''}. Space: "
        "optimizer (adam, sgd_momentum), learning rate 1e-4..1e-2 log, momentum (sgd only), "
        "batch norm, dropout. Wall time includes tracking (nested MLflow runs, artifacts)."
    )
    record(f"Engines: Optuna and KerasTuner at an equal budget of {args.epochs_budget} epochs",
           body, notes)  # fmt: skip


if __name__ == "__main__":
    main()

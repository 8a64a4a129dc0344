"""Search efficiency: TPE with Hyperband pruning vs random search without pruning.

Same fixed CIFAR-10 subset, same space, same number of trials; reports the epochs trained,
the wall time and the best validation accuracy of each. Target (issue 6): at most a third
of the unpruned search's epochs for a best validation accuracy within 1 point of it.

Hyperband's saving grows with the ratio of the longest to the shortest run: with
reduction factor 3 and 1 to 27 epochs Optuna makes four brackets (first rungs at 1, 3, 9
and 27 epochs) and gives them 27:12:6:4 of the trials, so a trial trains about 7.4 of 27
epochs on average (0.27) when the rungs fill; with 1 to 9 epochs it is about 4.3 of 9
(0.48), more than a third whatever the sampler does. TPE keeps Optuna's 10 random start-up
trials, which with the same seed are the random search's first 10.

    python benchmarks/search_efficiency.py --limit 1000 --trials 20 --epochs 27
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, record, table  # noqa: E402

SPACE = {
    "batch_norm": {"choices": ["none", "before"]},
    "dropout": {"choices": ["none", 0.2, 0.4]},
    "optimizer": {"choices": ["adam", "rmsprop", "sgd_momentum"]},
    "learning_rate": {"low": 1e-4, "high": 3e-2, "log": True},
    "batch_size": {"choices": [64, 128]},
}


def run(name: str, sampler: dict, pruner: dict, args, folder: str) -> list[object]:
    import optuna

    from hpsearch.search.lifecycle import run_search
    from hpsearch.search.study_file import parse_study

    spec = parse_study(
        {"name": name, "sampler": sampler, "pruner": pruner, "n_trials": args.trials,
         "data": {"dataset": "folder", "data_dir": args.data_dir, "limit": args.limit},
         "fixed": {"architecture": args.architecture, "epochs": args.epochs,
                   "patience": args.epochs},
         "space": SPACE},
        f"{name}.yaml",
    )  # fmt: skip
    storage = f"sqlite:///{folder}/optuna.db"
    started = time.perf_counter()
    run_search(spec, storage, echo=print, verbose=0)
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name=name, storage=storage).trials
    epochs = sum(t.user_attrs.get("epochs_run") or t.last_step or 0 for t in trials)
    pruned = sum(t.state.name == "PRUNED" for t in trials)
    best = max(t.value for t in trials if t.value is not None)
    return [name, len(trials), pruned, epochs, f"{wall:.0f}", f"{best:.4f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--architecture", default="baseline1")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--pruner", choices=["hyperband", "successive_halving"],
                        default="hyperband",
                        help="successive_halving: Hyperband's most aggressive bracket alone (ASHA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap-count", type=int, default=0,
                        help="trials a rung needs before it promotes any (the pruner's)")
    parser.add_argument("--pruned-only", action="store_true",
                        help="skip the unpruned search: its epochs are trials x epochs (patience "
                             "= epochs), its best accuracy is then not measured")
    args = parser.parse_args()
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
        pruned = run(f"tpe_{args.pruner}", {"type": "tpe", "seed": args.seed},
                     {"type": args.pruner, "min_resource": 1,
                      "reduction_factor": args.reduction_factor,
                      "bootstrap_count": args.bootstrap_count},
                     args, folder)  # fmt: skip
        if args.pruned_only:
            plain = ["random_unpruned (not run)", args.trials, 0, args.trials * args.epochs,
                     "-", "nan"]  # fmt: skip
        else:
            plain = run("random_unpruned", {"type": "random", "seed": args.seed},
                        {"type": "none"}, args, folder)  # fmt: skip
    body = table(["search", "trials", "pruned", "epochs trained", "wall (s)", "best val accuracy"],
                 [pruned, plain])  # fmt: skip
    share = pruned[3] / plain[3]
    gap = float(plain[5]) - float(pruned[5])
    accuracy = "not measured (--pruned-only)" if args.pruned_only else f"{gap * 100:+.2f} points"
    body += (
        f"\n\nepochs: {share:.2f} of the unpruned search (target at most 0.33); best "
        f"validation accuracy behind it: {accuracy} (target within 1 point)"
    )
    body += (
        f"\n\n{args.architecture}; {args.pruner}, reduction factor {args.reduction_factor}, "
        f"1 to {args.epochs} epochs, bootstrap count {args.bootstrap_count}; sampler seed "
        f"{args.seed}"
    )
    record(f"Search efficiency: {args.trials} trials, up to {args.epochs} epochs, "
           f"{args.limit} CIFAR-10 images per split", body)  # fmt: skip


if __name__ == "__main__":
    main()

"""How many epochs Optuna's pruners save, on synthetic learning curves, over many seeds.

No training: each trial's curve is made up from its parameters (a learning rate with an
optimum, a categorical quality, a random speed, Gaussian noise per epoch), reported to a
real Optuna study with the real pruner and sampler, epoch by epoch, as hpsearch's pruning
callback does (step = epochs trained, nothing pruned after the last epoch). It shows what
one `search_efficiency.py` run cannot: the spread from one seed to the next, and how the
saving depends on the number of trials. Optuna cannot pause a trial, so a rung holding fewer
than `reduction_factor` trials promotes any trial that beats everything in it; Hyperband's
several brackets fill their rungs slowly, and a small study trains more than the textbook
share (about 0.27 of the epochs for 1 to 27 epochs, reduction factor 3).

    python benchmarks/pruner_simulation.py --seeds 12
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, table  # noqa: E402

# (pruner, reduction factor, trials, sampler)
CASES = [
    ("hyperband", 3, 20, "tpe"),
    ("hyperband", 4, 20, "tpe"),
    ("hyperband", 3, 40, "tpe"),
    ("hyperband", 3, 60, "tpe"),
    ("hyperband", 4, 60, "tpe"),
    ("hyperband", 3, 60, "random"),
    ("successive_halving", 3, 20, "tpe"),
    ("successive_halving", 4, 20, "tpe"),
]


def simulate(pruner: str, factor: int, trials: int, sampler: str, seed: int, epochs: int):
    """(epochs trained / trials x epochs, best final value) of one simulated study."""
    import numpy as np
    import optuna

    from hpsearch.search.samplers import make_pruner, make_sampler
    from hpsearch.search.space import SearchSpace
    from hpsearch.search.study_file import parse_study

    # The pruner and sampler a study file with these settings gets in a real search.
    spec = parse_study(
        {"name": f"simulated-{seed}", "n_trials": trials, "fixed": {"epochs": epochs},
         "sampler": {"type": sampler, "seed": seed},
         "pruner": {"type": pruner, "min_resource": 1, "reduction_factor": factor}},
        "simulated.yaml",
    )  # fmt: skip
    noise = np.random.default_rng(seed)
    space = SearchSpace.of(spec)
    study = optuna.create_study(
        direction="maximize", pruner=make_pruner(spec.pruner, space),
        sampler=make_sampler(spec.sampler, space),
        study_name=spec.name,
    )  # fmt: skip
    trained, best = 0, float("-inf")
    for _ in range(trials):
        trial = study.ask()
        rate = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
        quality = trial.suggest_float("quality", 0.0, 1.0)
        final = 0.30 + 0.15 * quality - 0.1 * abs(math.log10(rate) + 2.5)
        speed = 2 + 6 * noise.random()  # epochs to reach 63% of the way
        for epoch in range(1, epochs + 1):
            value = 0.1 + final * (1 - math.exp(-epoch / speed)) + noise.normal(0, 0.02)
            trial.report(value, epoch)
            if epoch < epochs and trial.should_prune():
                break
        trained += epoch
        if epoch < epochs:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
            best = max(best, value)
    return trained / (trials * epochs), best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=27)
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = []
    for pruner, factor, trials, sampler in CASES:
        runs = [
            simulate(pruner, factor, trials, sampler, seed, args.epochs)
            for seed in range(args.seeds)
        ]
        shares = [share for share, _ in runs]
        met = sum(share <= 1 / 3 for share in shares)
        rows.append([
            pruner, factor, trials, sampler, f"**{statistics.mean(shares):.2f}**",
            f"{statistics.pstdev(shares):.2f}", f"{min(shares):.2f}-{max(shares):.2f}",
            f"{met}/{args.seeds}",
        ])  # fmt: skip
        print(" | ".join(str(cell) for cell in rows[-1]), flush=True)
    body = table(
        ["pruner", "reduction factor", "trials", "sampler", "mean share of epochs", "sd",
         "range", "seeds at most 1/3"],
        rows,
    )  # fmt: skip
    body += (
        f"\n\nsynthetic curves, 1 to {args.epochs} epochs, {args.seeds} seeds per row; the "
        "share is of the epochs an unpruned search of the same trials trains"
    )
    record(f"Pruner simulation: {args.seeds} seeds, up to {args.epochs} epochs", body)


if __name__ == "__main__":
    main()

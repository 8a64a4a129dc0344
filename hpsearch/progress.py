"""A progress line per finished trial: counts by outcome and the best so far."""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import TrialState


class StudyProgress:
    """Optuna callback that prints one line per trial to ``echo``.

    "N/T done" counts what counts toward the study's total ``T``: completed and
    pruned trials (never more than ``T``); failed ones are shown apart.
    """

    def __init__(self, target: int | None, echo: Callable[[str], None]) -> None:
        self.target, self.echo = target, echo
        self.started = time.monotonic()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)  # one read of the storage, counts and best
        states = [t.state for t in trials]
        counts = {
            "complete": states.count(TrialState.COMPLETE),
            "pruned": states.count(TrialState.PRUNED),
            "failed": states.count(TrialState.FAIL),
        }
        outcome = trial.state.name.lower()
        if trial.state == TrialState.COMPLETE:
            outcome += f" value {trial.value:.4f}"
        elif trial.state == TrialState.FAIL:
            outcome += f" ({trial.user_attrs.get('fail_reason', 'unknown')})"
        elif trial.state == TrialState.PRUNED:
            outcome += f" after epoch {trial.last_step}"  # steps are epochs trained
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        done = counts["complete"] + counts["pruned"]
        if self.target:
            done = min(done, self.target)  # e.g. a grid point two workers ran at once
        of = f"/{self.target}" if self.target else ""
        summary = ", ".join(f"{n} {k}" for k, n in counts.items())
        best = _best(trials, study.direction)
        best_text = f" | best {best.value:.4f} (trial {best.number})" if best else ""
        self.echo(
            f"[{study.study_name}] trial {trial.number} {outcome} in {seconds:.1f}s"
            f" | {done}{of} done: {summary}{best_text}"
        )


def _best(
    trials: list[optuna.trial.FrozenTrial], direction: optuna.study.StudyDirection
) -> optuna.trial.FrozenTrial | None:
    """The completed trial with the best value (the earliest of equals), as ``study.best_trial``."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    sign = 1 if direction == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(complete, key=lambda t: (sign * t.value, -t.number))

"""A study's progress: one line per finished trial, and a live bar on a terminal.

The bar and the plain-lines rule are :mod:`hpsearch.util.progress`'s; this is what a study
shows in them: trials done of the total, complete / pruned / failed, the best so far.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import cast

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from hpsearch.records import TrialRecord
from hpsearch.util.progress import REFRESH_S, AboveTheBar, log_handlers_above, on_terminal


class StudyProgress:
    """Optuna callback: one line per finished trial to ``echo``, and a live bar in :meth:`bar`.

    "N/T done" counts what counts toward the study's total ``T``: completed and
    pruned trials (never more than ``T``); failed ones are shown apart.
    """

    def __init__(self, target: int | None, echo: Callable[[str], None]) -> None:
        self.target, self.echo = target, echo
        self.started = time.monotonic()
        self._bar: tqdm | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)  # one read of the storage, counts and best
        counts, best = _counts(trials), _best(trials, study.direction)
        outcome = trial.state.name.lower()
        if trial.state == TrialState.COMPLETE:
            outcome += f" value {trial.value:.4f}"
        elif trial.state == TrialState.FAIL:
            outcome += f" ({TrialRecord.of(trial).fail_reason or 'unknown'})"
        elif trial.state == TrialState.PRUNED:
            step = trial.last_step  # steps are epochs trained; none: pruned before the first
            outcome += f" after epoch {step}" if step is not None else " before its first epoch"
        start, end = trial.datetime_start, trial.datetime_complete  # both set once it ended
        seconds = (end - start).total_seconds() if start and end else 0.0
        done = self._done(counts)
        of = f"/{self.target}" if self.target else ""
        summary = ", ".join(f"{n} {k}" for k, n in counts.items())
        best_text = f" | best {best.value:.4f} (trial {best.number})" if best else ""
        self.echo(
            f"[{study.study_name}] trial {trial.number} {outcome} in {seconds:.1f}s"
            f" | {done}{of} done: {summary}{best_text}"
        )
        if self._bar is not None:
            self._show(self._bar, done, counts, best)

    @contextmanager
    def bar(self, study: optuna.Study) -> Iterator[None]:
        """A live bar on stderr while inside, when it is a terminal (else nothing changes).

        What Python writes to stdout and stderr meanwhile goes above the bar, whole lines.
        """
        if not on_terminal():
            yield
            return
        trials = study.get_trials(deepcopy=False)
        counts = _counts(trials)
        stdout, stderr = sys.stdout, sys.stderr
        self._bar = bar = tqdm(
            total=self.target, initial=self._done(counts), desc=f"[{study.study_name}]",
            unit="trial", file=stderr, dynamic_ncols=True, smoothing=0,  # ETA: the mean pace
            bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} trials "
                       "[{elapsed}<{remaining}{postfix}]" if self.target else None,
            postfix=_postfix(counts, _best(trials, study.direction)),
        )  # fmt: skip
        above = {id(stdout): AboveTheBar(stdout, bar),
                 id(stderr): AboveTheBar(stderr, bar)}  # fmt: skip
        stop = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(bar, stop), daemon=True,
                                  name="hpsearch-progress")  # fmt: skip
        try:
            with redirect_stdout(above[id(stdout)]), redirect_stderr(above[id(stderr)]), \
                    log_handlers_above(above):  # fmt: skip
                ticker.start()
                yield
        finally:
            stop.set()
            if ticker.is_alive():
                ticker.join()
            for stream in above.values():
                stream.close()
            bar.close()
            self._bar = None

    def _done(self, counts: dict[str, int]) -> int:
        done = counts["complete"] + counts["pruned"]
        return min(done, self.target) if self.target else done  # e.g. a grid point run twice

    def _show(self, bar: tqdm, done: int, counts: dict[str, int], best) -> None:
        with bar.get_lock():
            bar.set_postfix_str(_postfix(counts, best), refresh=False)
            bar.update(done - bar.n)
            bar.refresh()

    def _tick(self, bar: tqdm, stop: threading.Event) -> None:
        while not stop.wait(REFRESH_S):
            bar.refresh()


def _counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    states = [t.state for t in trials]
    return {
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
    }


def _postfix(counts: dict[str, int], best: optuna.trial.FrozenTrial | None) -> str:
    best_text = f", best {best.value:.4f} (trial {best.number})" if best else ""
    return ", ".join(f"{n} {k}" for k, n in counts.items()) + best_text


def _best(
    trials: list[optuna.trial.FrozenTrial], direction: optuna.study.StudyDirection
) -> optuna.trial.FrozenTrial | None:
    """The completed trial with the best value (the earliest of equals), as ``study.best_trial``."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    sign = 1 if direction == optuna.study.StudyDirection.MAXIMIZE else -1
    return max(complete, key=lambda t: (sign * cast(float, t.value), -t.number))

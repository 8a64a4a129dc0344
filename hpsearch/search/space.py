"""The search space: what varies between a study's trials, and how Optuna draws it.

:class:`SearchSpace` is the part of a study file that a trial is drawn from (its ``space``,
``fixed`` and ``points``, its ``repeats``, and whether a grid walks it). It is made once
per search (:meth:`SearchSpace.of`) and handed to the sampler and the engine, which need
nothing else of the study file to propose a trial. Pure: no training, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch.search.study_file import Factor, StudyFile

if TYPE_CHECKING:
    import optuna

POINT = "point"  # the grid's axis over a study's explicit points
REPEAT = "repeat"  # the grid's axis over repeats of each configuration


def _active(factor: Factor, values: dict[str, Any]) -> bool:
    """A factor with ``when`` is searched only when every condition holds."""
    return all(values.get(key) in allowed for key, allowed in (factor.when or {}).items())


def grid_values(factor: Factor) -> list[Any]:
    """Every value a grid visits for one factor."""
    if factor.choices is not None:
        return list(factor.choices)
    (low, high), step = factor.bounds, factor.step
    if step is None:
        raise ValueError("a grid needs choices, or low/high with a step")  # study_file checks
    count = int(round((high - low) / step)) + 1
    points = [low + i * step for i in range(count)]
    return [int(p) for p in points] if factor.is_integer else points


@dataclass(frozen=True)
class SearchSpace:
    """The factors a trial draws, on top of the fixed keys and one of the explicit points."""

    factors: Mapping[str, Factor]
    fixed: Mapping[str, Any]
    points: Sequence[Mapping[str, Any]] = ()
    repeats: int = 1  # trainings of each configuration, each with its own seed
    grid: bool = False  # walked by Optuna's GridSampler: points and repeats are grid axes

    @classmethod
    def of(cls, study: StudyFile) -> SearchSpace:
        return cls(study.space, study.fixed, study.points, study.repeats,
                   grid=study.sampler.type == "grid")  # fmt: skip

    def searched_keys(self) -> list[str]:
        """The keys that vary between trials: the factors, then the points' keys."""
        keys = list(self.factors)
        for point in self.points:
            keys += [key for key in point if key not in keys]
        return keys

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The fixed keys, the trial's point, then one suggested value per active factor.

        A grid with ``repeats`` also draws the trial's repeat (an axis of the grid); other
        samplers repeat a configuration by enqueueing it again (the Optuna engine does).
        """
        values: dict[str, Any] = dict(self.fixed)
        if self.points:
            point = trial.suggest_categorical(POINT, list(range(len(self.points))))
            values.update(self.points[point])
        if self.grid and self.repeats > 1:
            trial.suggest_categorical(REPEAT, list(range(self.repeats)))
        for key, factor in self.factors.items():
            if not _active(factor, values):
                continue
            if factor.choices is not None:
                values[key] = trial.suggest_categorical(key, factor.choices)
            elif factor.is_integer:
                step = int(factor.step or 1)
                low, high = factor.bounds
                values[key] = trial.suggest_int(key, int(low), int(high), step=step,
                                                log=factor.log)  # fmt: skip
            else:
                low, high = factor.bounds
                values[key] = trial.suggest_float(key, low, high, log=factor.log, step=factor.step)
        return values

    def grid_axes(self) -> dict[str, list[Any]]:
        """The grid for Optuna's GridSampler: factor -> values (points and repeats as axes)."""
        axes = {key: grid_values(factor) for key, factor in self.factors.items()}
        if self.points:
            axes[POINT] = list(range(len(self.points)))
        if self.repeats > 1:
            axes[REPEAT] = list(range(self.repeats))
        return axes

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid_axes().values())

    def total(self, n_trials: int | None) -> int | None:
        """The study's total number of trials for ``n_trials`` configurations (None: no
        limit); a grid's is at most its size, repeats being one of its axes."""
        if self.grid:
            return min(n_trials or self.grid_size(), self.grid_size())
        return n_trials * self.repeats if n_trials else None

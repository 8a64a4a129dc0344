"""The search space: turns a study's ``space`` into Optuna suggestions.

Pure functions over a study file and an Optuna trial; no training, no MLflow.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from hpsearch.search.study_file import Factor, StudyFile

if TYPE_CHECKING:
    import optuna


def _active(factor: Factor, values: dict[str, Any]) -> bool:
    """A factor with ``when`` is searched only when every condition holds."""
    return all(values.get(key) in allowed for key, allowed in (factor.when or {}).items())


POINT = "point"  # the grid's axis over a study's explicit points
REPEAT = "repeat"  # the grid's axis over repeats of each configuration


def suggest(trial: optuna.Trial, study: StudyFile) -> dict[str, Any]:
    """The fixed keys, the trial's point, then one suggested value per active factor.

    A grid study with ``repeats`` also draws the trial's repeat (an axis of the grid);
    other samplers repeat a configuration by enqueueing it again (the driver does).
    """
    values: dict[str, Any] = dict(study.fixed)
    if study.points:
        point = trial.suggest_categorical(POINT, list(range(len(study.points))))
        values.update(study.points[point])
    if study.sampler.type == "grid" and study.repeats > 1:
        trial.suggest_categorical(REPEAT, list(range(study.repeats)))
    for key, factor in study.space.items():
        if not _active(factor, values):
            continue
        if factor.choices is not None:
            values[key] = trial.suggest_categorical(key, factor.choices)
        elif factor.is_integer:
            step = int(factor.step or 1)
            low, high = factor.bounds
            values[key] = trial.suggest_int(key, int(low), int(high), step=step, log=factor.log)
        else:
            low, high = factor.bounds
            values[key] = trial.suggest_float(key, low, high, log=factor.log, step=factor.step)
    return values


def grid_values(factor: Factor) -> list[Any]:
    """Every value a grid visits for one factor."""
    if factor.choices is not None:
        return list(factor.choices)
    (low, high), step = factor.bounds, factor.step
    if step is None:
        raise ValueError("a grid needs choices, or low/high with a step")  # study.py checks
    count = int(round((high - low) / step)) + 1
    points = [low + i * step for i in range(count)]
    return [int(p) for p in points] if factor.is_integer else points


def grid_space(study: StudyFile) -> dict[str, list[Any]]:
    """The grid for Optuna's GridSampler: factor -> values (points and repeats as axes)."""
    grid = {key: grid_values(factor) for key, factor in study.space.items()}
    if study.points:
        grid[POINT] = list(range(len(study.points)))
    if study.repeats > 1:
        grid[REPEAT] = list(range(study.repeats))
    return grid


def grid_size(study: StudyFile) -> int:
    return math.prod(len(values) for values in grid_space(study).values())

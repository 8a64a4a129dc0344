"""Repeats: trials of one configuration grouped, their values as mean, sd and n.

A study with ``repeats: N`` trains every configuration N times with different
seeds. Two trials are the same configuration when their trial configs agree on
everything but the seed. Pure functions over Optuna's frozen trials.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from optuna.trial import FrozenTrial, TrialState

from hpsearch.records import TrialRecord


def config_key(config: dict[str, Any]) -> str:
    """The configuration's identity: its values without the seed, as canonical JSON."""
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; nan for none)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass
class ConfigGroup:
    """The trials of one configuration (complete ones carry values)."""

    key: str
    config: dict[str, Any]
    trials: list[FrozenTrial] = field(default_factory=list)

    def values(self, of: Callable[[FrozenTrial], float | None] | None = None) -> list[float]:
        """Each complete trial's objective value, or what ``of`` reads from it (if known)."""
        read = of or (lambda t: t.value)
        found = [read(t) for t in self.trials if t.state == TrialState.COMPLETE]
        return [float(v) for v in found if v is not None]

    def summary(self, of: Callable[[FrozenTrial], float | None] | None = None):
        values = self.values(of)
        mean, sd = mean_sd(values)
        return mean, sd, len(values)

    def best_trial(self, maximize: bool) -> FrozenTrial:
        complete = [t for t in self.trials if t.state == TrialState.COMPLETE]
        return (max if maximize else min)(complete, key=lambda t: cast(float, t.value))


def group_trials(trials: Iterable[FrozenTrial]) -> list[ConfigGroup]:
    """Trials grouped by configuration, groups in order of their first trial."""
    groups: dict[str, ConfigGroup] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        config = TrialRecord.of(trial).config
        if config is None:  # never got as far as a config: a group of its own
            config = {"trial": trial.number}
        key = config_key(config)
        groups.setdefault(key, ConfigGroup(key, config)).trials.append(trial)
    return list(groups.values())


def best_group(groups: Sequence[ConfigGroup], maximize: bool) -> ConfigGroup | None:
    """The configuration with the best mean objective (ties: the earlier one)."""
    scored = [(g.summary()[0], i, g) for i, g in enumerate(groups) if g.values()]
    if not scored:
        return None
    sign = 1 if maximize else -1
    return max(scored, key=lambda item: (sign * item[0], -item[1]))[2]

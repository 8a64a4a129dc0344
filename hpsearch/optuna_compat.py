"""Optuna's private names that hpsearch relies on, in one place.

Checked with optuna 5.0.0 (and 4.x for ``_storage``, ``_trial_id``, ``_stop_flag``).
``tests/test_optuna_compat.py`` fails loudly when an upgrade removes or changes one.
Each is used only where Optuna has no public equivalent:

* a Study's storage: no public accessor (the driver reads and writes trials through it);
* an RDB storage's stale-trial query: Optuna's public ``fail_stale_trials`` fails the
  trials itself, leaving no moment to record ``fail_reason`` on them first;
* a live Trial's storage id: ``Study.tell`` takes numbers, but user attributes of a trial
  that another process runs are written by id;
* GridSampler's stop flag: set on the study once every grid point has been proposed.
"""

from __future__ import annotations

import optuna

CHECKED_WITH = "5.0.0"


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage  # noqa: SLF001


def stale_trial_ids(storage: optuna.storages.BaseStorage, study_id: int) -> list[int]:
    """Ids of RUNNING trials whose heartbeat is older than the grace period."""
    return list(storage._get_stale_trial_ids(study_id))  # type: ignore[attr-defined]  # noqa: SLF001


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    return trial._trial_id  # noqa: SLF001


def grid_exhausted(study: optuna.Study) -> bool:
    return bool(getattr(study, "_stop_flag", False))

"""Optuna's private names used by hpsearch still exist and mean what we assume.

Fails loudly on an Optuna upgrade that removes or changes one (see hpsearch/optuna_compat.py).
"""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.optuna_compat import grid_exhausted, stale_trial_ids, study_storage, trial_id


@pytest.mark.slow
def test_private_names_behave_as_hpsearch_assumes(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1, grace_period=1
    )
    study = optuna.create_study(study_name="s", storage=storage)
    storage = study_storage(study)  # the study's own (Optuna wraps an RDB storage in a cache)
    assert isinstance(storage, optuna.storages.BaseStorage)
    trial = study.ask()
    study_id = storage.get_study_id_from_name("s")
    assert trial_id(trial) == storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    storage.record_heartbeat(trial_id(trial))
    time.sleep(2.5)
    assert stale_trial_ids(storage, study_id) == [trial_id(trial)]
    study.tell(trial, 1.0)
    assert stale_trial_ids(storage, study_id) == []
    assert study.trials[0].state == TrialState.COMPLETE


def test_grid_exhausted_once_every_point_is_proposed():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [1, 2]}))
    assert not grid_exhausted(study)
    study.optimize(lambda t: t.suggest_categorical("x", [1, 2]), n_trials=2)
    assert grid_exhausted(study)

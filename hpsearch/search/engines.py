"""Which engine ran a study: the check every ``search`` and ``worker`` makes before running.

Kept apart from :mod:`hpsearch.search.keras_tuner_engine`, which imports keras_tuner (and
with it TensorFlow): the Optuna engine's path, on KERAS_BACKEND=jax too, needs neither.
"""

from __future__ import annotations

from pathlib import Path

from hpsearch.errors import HpsearchError
from hpsearch.search.study_file import StudyFile
from hpsearch.util.redact import hide_password

ENGINE_ATTR = "engine"  # the study's user attribute naming the engine that ran it


def check_engine(spec: StudyFile, storage: str) -> None:
    """Refuse to run a study with the optuna engine where KerasTuner ran it (and vice versa)."""
    import optuna

    from hpsearch.util.connections import check_storage

    check_storage(storage)
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).exists():
        return  # a new storage: nothing ran there yet (and nothing is written here)
    store = None
    try:
        store = optuna.storages.RDBStorage(storage)
        if spec.name not in optuna.get_all_study_names(store):
            return
        engine = optuna.load_study(study_name=spec.name, storage=store).user_attrs.get(
            ENGINE_ATTR, "optuna"
        )
    except Exception:  # noqa: BLE001 - a bad storage is reported by whoever opens it next
        return
    finally:
        if store is not None:
            store.engine.dispose()
    if engine != spec.engine:
        raise HpsearchError(
            f"study {spec.name!r} in {hide_password(storage)} was run by the {engine} engine, "
            f"not {spec.engine}: pass --engine {engine}, or give the study another name"
        )

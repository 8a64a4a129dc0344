"""The engines, chosen here and only here: names, classes, and the check that a study keeps its own.

Light to import (the CLI reads the names for ``--engine``): each engine's module is imported
only when a study runs on it, so an Optuna search never imports keras_tuner (and with it, on
KERAS_BACKEND=jax, TensorFlow).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from hpsearch.errors import HpsearchError
from hpsearch.util.redact import hide_password

if TYPE_CHECKING:
    from hpsearch.search.lifecycle import Engine

EngineName = Literal["optuna", "keras_tuner"]
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)
_CLASSES = {  # name -> (module, class), imported when a study runs on it
    "optuna": ("hpsearch.search.optuna_engine", "OptunaEngine"),
    "keras_tuner": ("hpsearch.search.keras_tuner_engine", "KerasTunerEngine"),
}
ONE_PROCESS = ("keras_tuner",)  # engines whose study runs in one process (no workers)


def engine_class(name: str) -> type[Engine]:
    """The engine of that name (``StudyFile.engine``)."""
    if name not in _CLASSES:
        raise HpsearchError(f"unknown engine {name!r}; engines: {', '.join(ENGINE_NAMES)}")
    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def check_engine(name: str, engine: str, storage: str) -> None:
    """Refuse to run study ``name`` with ``engine`` where the other engine ran it."""
    import optuna

    from hpsearch.records import StudyRecord
    from hpsearch.util.connections import check_storage

    check_storage(storage)
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).exists():
        return  # a new storage: nothing ran there yet (and nothing is written here)
    store = None
    try:
        store = optuna.storages.RDBStorage(storage)
        if name not in optuna.get_all_study_names(store):
            return
        study = optuna.load_study(study_name=name, storage=store)
        ran = StudyRecord.of(study).engine or "optuna"
    except Exception:  # noqa: BLE001 - a bad storage is reported by whoever opens it next
        return
    finally:
        if store is not None:
            store.engine.dispose()
    if ran != engine:
        raise HpsearchError(
            f"study {name!r} in {hide_password(storage)} was run by the {ran} engine, "
            f"not {engine}: pass --engine {ran}, or give the study another name"
        )

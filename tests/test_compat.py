"""The library private internals hpsearch relies on still exist and behave as it assumes.

Fails loudly on an upgrade of Optuna, Keras or TensorFlow that removes or changes one
(see hpsearch/compat.py, which names the versions each was checked with).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpsearch import compat
from hpsearch.compat import (
    CHECKED_WITH,
    grid_exhausted,
    stale_trial_ids,
    study_storage,
    tensorflow_handle,
    trial_id,
)

UPDATE = "update hpsearch/compat.py"
on_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="TensorFlow's internals"
)


def _checked(package: str) -> str:
    return f"(checked with {package} {CHECKED_WITH[package]}): {UPDATE}"


# --- Optuna ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_optunas_private_names_behave_as_hpsearch_assumes(tmp_path):
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
    assert grid_exhausted(study), f"optuna {optuna.__version__}: no _stop_flag {_checked('optuna')}"


# --- Keras ----------------------------------------------------------------------------------


def test_kerass_lazy_tensorflow_handle_is_where_hpsearch_expects_it():
    lazy = tensorflow_handle()
    assert lazy is not None, f"keras {keras.__version__} moved module_utils.tensorflow " \
        f"{_checked('keras')}"
    assert hasattr(lazy, "_available"), f"keras {keras.__version__}: the lazy handle has no " \
        f"_available {_checked('keras')}"


@pytest.mark.slow
def test_seeding_a_trial_on_jax_leaves_tensorflow_unloaded():
    """With TensorFlow installed, a JAX worker's seeding and saving load none of it."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("jax")
    script = textwrap.dedent(
        """
        import sys, tempfile
        import keras
        from hpsearch.training.session import seed_trial
        seed_trial(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.save(tempfile.mkdtemp() + "/m.keras")
        print("loaded" if "tensorflow" in sys.modules else "not loaded")
        """
    )
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert done.stdout.strip().endswith("not loaded"), (
        f"keras {keras.__version__} loads TensorFlow on JAX despite _available "
        f"{_checked('keras')}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    )


# --- TensorFlow -----------------------------------------------------------------------------


def _context():
    tf = pytest.importorskip("tensorflow")
    context = compat.tensorflow_context()
    assert context is not None, f"tensorflow {tf.__version__}: the eager context has no " \
        f"_seed, _set_global_seed or clear_kernel_cache {_checked('tensorflow')}"
    return tf, context


@on_tensorflow
def test_tensorflow_seeds_and_keras_clears_through_the_context_methods_hpsearch_replaces():
    """``tf.random.set_seed`` and ``clear_session`` still call what the patch replaces (if not,
    the patch is no longer needed, or no longer works)."""
    tf, context = _context()
    calls: list[object] = []
    context._set_global_seed = lambda seed: calls.append(("seed", seed))
    context.clear_kernel_cache = lambda: calls.append("clear")
    try:
        tf.random.set_seed(7)
        keras.backend.clear_session(free_memory=False)
    finally:
        del context._set_global_seed, context.clear_kernel_cache
    assert calls == [("seed", 7), "clear"], f"tensorflow {tf.__version__}, keras " \
        f"{keras.__version__}: {calls} {_checked('tensorflow')}"


@on_tensorflow
def test_kernels_kept_sets_the_seed_as_tensorflow_does_but_keeps_the_kernel_cache():
    tf, context = _context()
    from tensorflow.python.framework import random_seed

    def seeds():  # (global, operation) seeds of new random ops
        return [random_seed.get_seed(None) for _ in range(3)]

    tf.random.set_seed(11)
    expected = seeds()
    with compat.tensorflow_kernels_kept():
        tf.random.set_seed(11)
    assert seeds() == expected, f"tensorflow {tf.__version__}: Context._set_global_seed " \
        f"sets more than _seed and _rng {_checked('tensorflow')}"

    # A stateful kernel seeded explicitly keeps its stream while its kernel is kept.
    tf.random.set_seed(0)
    first = tf.random.uniform([4], seed=5).numpy()
    with compat.tensorflow_kernels_kept():
        tf.random.set_seed(0)
        keras.backend.clear_session(free_memory=False)
    assert not np.array_equal(tf.random.uniform([4], seed=5).numpy(), first)
    tf.random.set_seed(0)  # TensorFlow's own call empties the cache: the stream starts again
    assert np.array_equal(tf.random.uniform([4], seed=5).numpy(), first)
    # nothing of the override is left on the context
    assert "_set_global_seed" not in vars(context)
    assert "clear_kernel_cache" not in vars(context)


@on_tensorflow
def test_tensorflows_gradient_registry_is_where_hpsearch_expects_it():
    tf = pytest.importorskip("tensorflow")
    registry = compat.custom_gradient_registry()
    assert registry is not None, f"tensorflow {tf.__version__} moved " \
        f"ops._gradient_registry._registry {_checked('tensorflow')}"
    assert "MatMul" in registry  # the built-in gradients are registered there


@pytest.mark.slow
@on_tensorflow
def test_a_traced_train_step_leaves_custom_gradients_that_are_dropped():
    tf = pytest.importorskip("tensorflow")
    registry = compat.custom_gradient_registry()
    assert registry is not None

    def custom() -> set[str]:
        return {name for name in registry if name.startswith("CustomGradient-")}

    before = custom()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((8, 3)), np.zeros((8, 2)), epochs=1, verbose=0)
    left = custom() - before
    assert left, f"tensorflow {tf.__version__}, keras {keras.__version__}: a train step no " \
        f"longer registers CustomGradient-N (drop_custom_gradients may go) {_checked('tensorflow')}"
    compat.drop_custom_gradients()
    assert custom() == set()
    assert "MatMul" in registry

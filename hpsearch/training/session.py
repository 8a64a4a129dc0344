"""Process state between trials: what one trial leaves behind is released before the next.

A worker runs hundreds of trials in one process; its memory and the time it
spends collecting garbage must not grow with each of them.
"""

from __future__ import annotations

import contextlib
import gc
import random
import sys

import keras

from hpsearch.keras_compat import leave_tensorflow_unloaded

_CUSTOM_GRADIENT = "CustomGradient-"


def freeze_startup_objects() -> None:
    """Move everything alive now (libraries, the data) out of the garbage collector's view.

    Called once before the first trial: the collection after each trial then
    scans only what trials made (0.05-0.1 s instead of 0.3-0.5 s per trial
    with TensorFlow and MLflow loaded). No collection first: it would cost as
    much as the ones it saves, for the little garbage imports leave.
    """
    gc.freeze()


def thaw_startup_objects() -> None:
    """Undo :func:`freeze_startup_objects` once the trials are done (for a caller that goes on)."""
    gc.unfreeze()


def release_trial_state() -> None:
    """Free what the last trial built: Keras's global state, leaked graphs, garbage.

    Under TensorFlow, each traced train step registers a gradient function
    (``CustomGradient-N``, from the default replica context's ``all_reduce`` of
    the gradients) in TensorFlow's global gradient registry and never removes
    it; that function holds the whole traced graph, about 20 MiB per trial for
    a small CNN. The train step is done with those functions once the trial
    ends, so they are dropped here.
    """
    with _tensorflow_kernels_kept():
        keras.backend.clear_session(free_memory=False)
    if keras.backend.backend() == "tensorflow":
        _drop_custom_gradients()
    gc.collect()


def seed_trial(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)`` (Python, NumPy, Keras, TensorFlow), kernels kept.

    TensorFlow's ``set_seed`` also empties its cache of eager kernels, so that
    its stateful random ops (``tf.random.uniform`` run eagerly, with seeds
    drawn from the global seed) start their streams again. A trial runs none:
    Keras's random ops are stateless (seeded from its ``SeedGenerator``), and
    the shuffle of ``fit``'s input pipeline is a tf.data function whose
    kernels are made anew with each dataset, seeded from TensorFlow's global
    seed and operation-seed counter, which are set here as ``set_seed`` sets
    them. Emptied, every kernel would be made again for the next model: in a
    study of small CNNs (``benchmarks/study_overhead.py``) a build took 133 ms
    a trial instead of 70. The cache holds a kernel per operation and shape
    seen; over 80 trials of varied networks, memory grew as much with it
    emptied at every trial as without.
    """
    leave_tensorflow_unloaded()
    with _tensorflow_kernels_kept():
        keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def _tensorflow_kernels_kept():
    """TensorFlow's global seed set and Keras's session cleared without emptying the kernel cache.

    Neither call has a public option for it: the process's TensorFlow context
    gets, for the duration, its own seed setter (TensorFlow's, less the cache
    clearing) and a no-op cache clearing. Without TensorFlow loaded, or with a
    context lacking these attributes, the calls run as they are.
    """
    context = _tensorflow_context()
    if context is None:
        yield
        return

    def set_global_seed(seed: int) -> None:  # as Context._set_global_seed, less the clearing
        context._seed = seed
        context._rng = random.Random(int(seed))

    context._set_global_seed = set_global_seed
    context.clear_kernel_cache = lambda: None
    try:
        yield
    finally:
        del context._set_global_seed, context.clear_kernel_cache


def _tensorflow_context():
    if "tensorflow" not in sys.modules:  # JAX without TensorFlow: Keras seeds no TensorFlow
        return None
    try:
        from tensorflow.python.eager import context as eager_context
    except ImportError:
        return None
    context = eager_context.context()
    wanted = ("_seed", "_set_global_seed", "clear_kernel_cache")
    return context if all(hasattr(context, name) for name in wanted) else None


def _drop_custom_gradients() -> None:
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry  # noqa: SLF001 - no public way to unregister
    except (ImportError, AttributeError):  # another TensorFlow layout: nothing to drop
        return
    for name in [name for name in registry if name.startswith(_CUSTOM_GRADIENT)]:
        del registry[name]

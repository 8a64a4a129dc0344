"""Process state between trials: what one trial leaves behind is released before the next.

A worker runs hundreds of trials in one process; its memory and the time it
spends collecting garbage must not grow with each of them. The library
private parts this relies on are in :mod:`hpsearch.compat`.
"""

from __future__ import annotations

import gc

import keras

from hpsearch import compat


def freeze_startup_objects() -> None:
    """Move everything alive now (libraries, the data) out of the garbage collector's view.

    Called once before the first trial: the collection after each trial then
    scans only what trials made, not the objects of TensorFlow and MLflow. No
    collection first: it would cost as much as the ones it saves, for the
    little garbage imports leave.
    """
    gc.freeze()


def thaw_startup_objects() -> None:
    """Undo :func:`freeze_startup_objects` once the trials are done (for a caller that goes on)."""
    gc.unfreeze()


def release_trial_state() -> None:
    """Free what the last trial built: Keras's global state, leaked graphs, garbage.

    Keras's session is cleared with TensorFlow's kernel cache kept
    (:func:`hpsearch.compat.tensorflow_kernels_kept`). Under TensorFlow, each
    traced train step leaves a gradient function holding its whole traced graph
    in TensorFlow's global gradient registry; the train step is done with it
    once the trial ends, so it is dropped here
    (:func:`hpsearch.compat.drop_custom_gradients`).
    """
    with compat.tensorflow_kernels_kept():
        keras.backend.clear_session(free_memory=False)
    if keras.backend.backend() == "tensorflow":
        compat.drop_custom_gradients()
    gc.collect()


def seed_trial(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)`` (Python, NumPy, Keras, TensorFlow), kernels kept.

    TensorFlow's ``set_seed`` also empties its cache of eager kernels, so that
    every kernel would be made again for the next model; it is set here without
    that (:func:`hpsearch.compat.tensorflow_kernels_kept`), to the same global
    seed and operation-seed counter. The cache holds a kernel per operation and
    shape seen, and does not make memory grow faster than emptying it at every
    trial. On a backend other than TensorFlow, Keras is kept from loading
    TensorFlow (:func:`hpsearch.compat.leave_tensorflow_unloaded`).
    """
    compat.leave_tensorflow_unloaded()
    with compat.tensorflow_kernels_kept():
        keras.utils.set_random_seed(seed)

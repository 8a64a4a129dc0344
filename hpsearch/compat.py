"""The private internals of Optuna, Keras and TensorFlow that hpsearch relies on, in one place.

Each entry below names the library versions it was checked on and why there is no public way.
``tests/test_compat.py`` fails loudly when an upgrade removes or changes what one relies on;
update the entry (and :data:`CHECKED_WITH`) there and here.

Optuna (checked with optuna 5.1.0; ``_storage``, ``_trial_id`` and ``_stop_flag`` also with 4.x).
These are correctness, not speed:

* :func:`study_storage` - ``Study._storage``: a Study has no public accessor for its storage
  (the driver reads and writes trials through it);
* :func:`stale_trial_ids` - ``RDBStorage._get_stale_trial_ids``: Optuna's public
  ``fail_stale_trials`` fails the trials itself, leaving no moment to record ``fail_reason``
  on them first;
* :func:`trial_id` - ``Trial._trial_id``: ``Study.tell`` takes numbers, but user attributes of
  a trial that another process runs are written by storage id, which no public API gives;
* :func:`grid_exhausted` - ``Study._stop_flag``: set by GridSampler once every grid point has
  been proposed; there is no public query for it.

Keras (checked with keras 3.15.1):

* :func:`leave_tensorflow_unloaded` - ``keras.src.utils.module_utils.tensorflow._available``,
  Keras's lazy handle on TensorFlow. Keras imports TensorFlow wherever it is installed, even on
  JAX, to ask whether an object is one of its types (when saving a model) and to seed it
  (``keras.utils.set_random_seed``); there is no public switch to say "TensorFlow is not used
  here".

TensorFlow (checked with tensorflow 2.21.0, under keras 3.15.1):

* :func:`tensorflow_kernels_kept` - the eager context's ``_set_global_seed`` and
  ``clear_kernel_cache``: ``tf.random.set_seed`` (called by ``keras.utils.set_random_seed``)
  and ``keras.backend.clear_session`` both empty TensorFlow's cache of eager kernels, and
  neither has an option not to;
* :func:`drop_custom_gradients` - ``ops._gradient_registry._registry``: TensorFlow registers a
  ``CustomGradient-N`` function for each traced train step and never removes it; a registry
  has no public way to unregister.
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    import optuna

CHECKED_WITH = {"optuna": "5.1.0", "keras": "3.15.1", "tensorflow": "2.21.0"}

# --- Optuna -------------------------------------------------------------------------------


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The study's own storage (Optuna wraps an RDB storage in a cache)."""
    return study._storage  # noqa: SLF001


def stale_trial_ids(storage: optuna.storages.BaseStorage, study_id: int) -> list[int]:
    """Ids of RUNNING trials whose heartbeat is older than the grace period."""
    return list(storage._get_stale_trial_ids(study_id))  # type: ignore[attr-defined]  # noqa: SLF001


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The trial's id in its storage (not its number in the study)."""
    return trial._trial_id  # noqa: SLF001


def grid_exhausted(study: optuna.Study) -> bool:
    """Whether a GridSampler has proposed every point of its grid."""
    return bool(getattr(study, "_stop_flag", False))


# --- Keras --------------------------------------------------------------------------------


def tensorflow_handle() -> Any:
    """Keras's lazy handle on TensorFlow, or None where Keras's layout differs."""
    try:
        from keras.src.utils import module_utils

        return module_utils.tensorflow
    except (ImportError, AttributeError):
        return None


def leave_tensorflow_unloaded() -> None:
    """On a backend other than TensorFlow, keep Keras from loading TensorFlow in this process.

    On JAX nothing hpsearch runs uses TensorFlow (no tf.data), and loading it would cost each
    worker seconds, hundreds of MiB and, on a GPU, a claim on its memory. With TensorFlow not
    loaded yet, the lazy handle is told "not installed" for the rest of the process (no
    object can be a TensorFlow type then); with it loaded, on the TensorFlow backend, or
    with another Keras layout, nothing changes.
    """
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        return
    lazy = tensorflow_handle()
    if lazy is not None and getattr(lazy, "_available", False) is None:  # not asked yet
        lazy._available = False  # noqa: SLF001


# --- TensorFlow ---------------------------------------------------------------------------

_CUSTOM_GRADIENT = "CustomGradient-"
_CONTEXT_NAMES = ("_seed", "_set_global_seed", "clear_kernel_cache")


def tensorflow_context() -> Any:
    """TensorFlow's eager context, or None: TensorFlow not loaded, or a context of another
    layout (lacking the attributes :func:`tensorflow_kernels_kept` replaces or sets)."""
    if "tensorflow" not in sys.modules:  # JAX without TensorFlow: Keras seeds no TensorFlow
        return None
    try:
        from tensorflow.python.eager import context as eager_context
    except ImportError:
        return None
    context = eager_context.context()
    return context if all(hasattr(context, name) for name in _CONTEXT_NAMES) else None


@contextlib.contextmanager
def tensorflow_kernels_kept() -> Iterator[None]:
    """TensorFlow's global seed set and Keras's session cleared without emptying the kernel cache.

    TensorFlow empties its cache of eager kernels when its global seed is set, so that its
    stateful random ops (run eagerly, seeded from the global seed) start their streams again,
    and Keras empties it on ``clear_session``. A trial runs no such op: Keras's random ops are
    stateless (seeded from its ``SeedGenerator``), and the shuffle of ``fit``'s input pipeline
    is a tf.data function whose kernels are made anew with each dataset, seeded from the global
    seed and operation-seed counter, which are set here as ``set_seed`` sets them. Emptied,
    every kernel would be made again for the next model.

    Neither call has a public option for it: the process's TensorFlow context gets, for the
    duration, its own seed setter (TensorFlow's, less the cache clearing) and a no-op cache
    clearing. Without TensorFlow loaded, or with a context lacking these attributes, the calls
    run as they are.
    """
    context = tensorflow_context()
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


def drop_custom_gradients() -> None:
    """Remove the ``CustomGradient-N`` functions from TensorFlow's global gradient registry.

    Under TensorFlow, each traced train step registers such a gradient function (from the
    default replica context's ``all_reduce`` of the gradients) and never removes it; it holds
    the whole traced graph. Called once a trial is done with its train step. Without
    TensorFlow loaded, or with another layout, nothing is dropped.
    """
    if "tensorflow" not in sys.modules:
        return
    registry = custom_gradient_registry()
    if registry is None:
        return
    for name in [name for name in registry if name.startswith(_CUSTOM_GRADIENT)]:
        del registry[name]


def custom_gradient_registry() -> dict[str, Any] | None:
    """TensorFlow's global gradient registry (name -> entry), or None with another layout."""
    try:
        from tensorflow.python.framework import ops

        return ops._gradient_registry._registry  # noqa: SLF001 - no public way to unregister
    except (ImportError, AttributeError):
        return None

"""Keras's private names that hpsearch relies on, in one place (as optuna_compat for Optuna).

Checked with keras 3.15.1. ``tests/test_keras_compat.py`` fails loudly when an upgrade
removes or changes one.

* ``keras.src.utils.module_utils.tensorflow._available``: Keras's lazy handle on TensorFlow.
  Keras imports TensorFlow wherever it is installed, even on JAX, to ask whether an object
  is one of its types (when saving a model) and to seed it (``keras.utils.set_random_seed``);
  there is no public switch to say "TensorFlow is not used here".
"""

from __future__ import annotations

import sys

import keras

CHECKED_WITH = "3.15.1"


def tensorflow_handle():
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

"""Fails loudly when a Keras upgrade changes a private name hpsearch relies on."""

from __future__ import annotations

import keras

from hpsearch.keras_compat import CHECKED_WITH, tensorflow_handle


def test_kerass_lazy_tensorflow_handle_is_where_hpsearch_expects_it():
    lazy = tensorflow_handle()
    assert lazy is not None, f"keras {keras.__version__} moved module_utils.tensorflow " \
        f"(checked with {CHECKED_WITH}): update hpsearch/keras_compat.py"
    assert hasattr(lazy, "_available"), f"keras {keras.__version__}: the lazy handle has no " \
        f"_available (checked with {CHECKED_WITH}): update hpsearch/keras_compat.py"

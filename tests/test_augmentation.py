"""Augmentation changes training batches and leaves inference untouched."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from hpsearch.choices import AUGMENTATIONS
from hpsearch.config import make_config
from hpsearch.model.augmentation import (
    IN_MODEL,
    LABEL_MIXING,
    GridMask,
    MixedBatches,
    in_model_layers,
    needs_mixed_batches,
)
from hpsearch.model.builder import build_network

SHAPE = (32, 32, 3)


def batch(n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def scaled(images: np.ndarray) -> np.ndarray:
    return images.astype("float32") / 255


def test_every_augmentation_is_in_the_model_or_mixes_batches():
    assert set(LABEL_MIXING) <= set(AUGMENTATIONS)
    assert sorted(IN_MODEL + LABEL_MIXING) == sorted(AUGMENTATIONS)
    assert not any(needs_mixed_batches([name]) for name in IN_MODEL)
    images, labels = batch(), np.eye(10, dtype="float32")[np.arange(8) % 10]
    for name in LABEL_MIXING:
        assert len(MixedBatches(images, labels, 4, [name], seed=0).mixers) == 1, name


@pytest.mark.parametrize("name", IN_MODEL)
def test_in_model_augmentation_changes_training_batches_only(name):
    layers = in_model_layers([name], seed=1)
    assert layers
    stack = keras.Sequential(layers)
    x = scaled(batch())
    trained = keras.ops.convert_to_numpy(stack(x, training=True))
    assert trained.shape == x.shape
    assert not np.allclose(trained, x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(stack(x, training=False)), x)


def test_cutout_and_gridmask_erase_pixels_to_zero():
    x = np.ones((8, *SHAPE), dtype="float32")
    for name in ("cutout", "gridmask"):
        out = keras.ops.convert_to_numpy(
            keras.Sequential(in_model_layers([name], 2))(x, training=True)
        )
        zeroed = (out == 0).mean()
        assert 0.01 < zeroed < 0.6, (name, zeroed)


def test_crop_shifts_whole_pixels_where_standard_interpolates():
    """Every pixel of a cropped image is one of the image's own (reflected, shifted, flipped)."""
    size = int(np.prod(SHAPE))
    x = np.stack([np.arange(size, dtype="float32").reshape(SHAPE) / size] * 8)
    indices = {}  # each output value as the index of the input pixel it would copy
    for name in ("crop", "standard"):
        stack = keras.Sequential(in_model_layers([name], seed=3))
        indices[name] = keras.ops.convert_to_numpy(stack(x, training=True)) * size
    crop = indices["crop"]
    np.testing.assert_allclose(crop, np.round(crop), atol=1e-3)  # no blend of two pixels
    assert sum(not np.allclose(image, x[0] * size) for image in crop) >= 6
    standard = indices["standard"]
    assert np.abs(standard - np.round(standard)).max() > 0.1  # interpolated
    # shifted by at most 4 pixels: the centre pixel comes from within 4 rows of the centre
    rows = set((np.round(crop[:, 16, 16, 0]).astype(int) // (SHAPE[1] * SHAPE[2])).tolist())
    assert rows <= set(range(12, 21)) and len(rows) > 1


def test_gridmask_round_trips_through_config():
    layer = GridMask(ratio=0.4, rate=0.9, seed=3)
    clone = GridMask.from_config(layer.get_config())
    assert (clone.ratio, clone.rate, clone.seed) == (0.4, 0.9, 3)


@pytest.mark.slow
@pytest.mark.parametrize("augmentation", ["standard+cutout+gridmask", "crop", "mixup+cutmix"])
def test_inference_is_untouched_by_augmentation(augmentation):
    plain = build_network(make_config({"seed": 4}), SHAPE, 10)
    augmented = build_network(make_config({"seed": 4, "augmentation": augmentation}), SHAPE, 10)
    augmented.set_weights(plain.get_weights())
    x = batch()
    np.testing.assert_allclose(
        augmented.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_label_mixing_changes_images_and_labels_of_training_batches(name):
    x = batch(64)
    labels = np.arange(64) % 10
    onehot = keras.utils.to_categorical(labels, 10)
    batches = MixedBatches(x, onehot, batch_size=32, augmentation=[name], seed=0)
    assert len(batches) == 2
    images, mixed = batches[0]
    assert images.dtype == np.uint8 and images.shape == (32, *SHAPE)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-5)
    assert (mixed.max(axis=1) < 1.0).any(), "some labels must be mixtures"
    picked = batches.order[:32]
    assert not np.array_equal(images, x[picked])


def test_mixed_batches_reshuffle_each_epoch_and_cover_every_sample():
    x, onehot = batch(40), keras.utils.to_categorical(np.arange(40) % 10, 10)
    batches = MixedBatches(x, onehot, batch_size=16, augmentation=["mixup"], seed=0)
    first = batches.order.copy()
    assert sorted(first) == list(range(40)) and len(batches) == 3
    batches.on_epoch_end()
    assert not np.array_equal(first, batches.order)

"""Data augmentation as Keras layers, active in training only.

Two kinds, because two kinds exist:

* image-only augmentations (``standard``, ``crop``, ``cutout``, ``gridmask``) are layers
  inside the model, after pixel scaling. Keras runs them when ``training=True``
  (``fit``) and passes images through untouched in ``predict``/``evaluate``.
* label-mixing augmentations (``mixup``, ``cutmix``) change the labels too, so
  they cannot live in the model; :class:`MixedBatches` applies Keras's
  ``MixUp``/``CutMix`` layers to each training batch. With both chosen, each
  batch gets one of them at random (as timm's mixup/cutmix switch does).

Only ``keras`` and ``keras.ops`` are used, so this runs on the JAX backend too.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from hpsearch.choices import AUGMENTATIONS

LABEL_MIXING = ("mixup", "cutmix")  # applied to batches (MixedBatches), not in the model
IN_MODEL = tuple(name for name in AUGMENTATIONS if name not in LABEL_MIXING)

# Strengths of the reference study's "standard" augmentation (ImageDataGenerator
# width/height_shift_range=0.1, horizontal_flip=True, zoom_range=0.1).
SHIFT_FRACTION = 0.1
ZOOM_FRACTION = 0.1
# "crop": the DAWNBench recipe's random 32x32 crop of the image padded by 4 reflected pixels,
# plus a horizontal flip. Whole-pixel shifts (nearest sampling): no interpolation blurs the
# training images, unlike the fractional shifts and the zoom of "standard".
CROP_FRACTION = 4 / 32
CUTOUT_AREA = (0.05, 0.25)  # erased area as a fraction of the image (16x16 of 32x32 = 0.25)


@keras.saving.register_keras_serializable(package="hpsearch")
class GridMask(keras.layers.Layer):
    """GridMask (Chen et al., 2020): drop a regular grid of squares, per image.

    Each image gets a grid unit ``d`` drawn from ``[min_unit, max_unit]`` (as a
    fraction of the image side), a random grid offset, and a square of side
    ``ratio * d`` dropped in every unit; applied with probability ``rate``.
    """

    def __init__(
        self,
        ratio: float = 0.5,
        min_unit: float = 0.25,
        max_unit: float = 0.5,
        rate: float = 0.7,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.ratio, self.min_unit, self.max_unit, self.rate = ratio, min_unit, max_unit, rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        shape = ops.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        side = ops.cast(ops.minimum(height, width), "float32")
        draw = (batch, 1, 1, 1)
        unit = side * keras.random.uniform(
            draw, self.min_unit, self.max_unit, seed=self.seed_generator
        )
        unit = ops.maximum(ops.floor(unit), 2.0)
        offset_y = ops.floor(keras.random.uniform(draw, seed=self.seed_generator) * unit)
        offset_x = ops.floor(keras.random.uniform(draw, seed=self.seed_generator) * unit)
        rows = ops.reshape(ops.arange(height, dtype="float32"), (1, -1, 1, 1))
        cols = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, -1, 1))
        dropped_side = ops.maximum(ops.floor(unit * self.ratio), 1.0)
        in_row = ops.mod(rows + offset_y, unit) < dropped_side
        in_col = ops.mod(cols + offset_x, unit) < dropped_side
        apply = keras.random.uniform(draw, seed=self.seed_generator) < self.rate
        dropped = ops.logical_and(ops.logical_and(in_row, in_col), apply)
        return images * ops.cast(ops.logical_not(dropped), images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "ratio": self.ratio,
            "min_unit": self.min_unit,
            "max_unit": self.max_unit,
            "rate": self.rate,
            "seed": self.seed,
        }


# the names in_model_layers gives its layers; the exported network leaves them out
IN_MODEL_LAYER_NAMES = frozenset(
    {"shift", "flip", "zoom", "crop", "crop_flip", "cutout", "gridmask"}
)


def in_model_layers(augmentation: Sequence[str], seed: int) -> list[keras.layers.Layer]:
    """The image-only augmentation layers, in order, for images scaled to [0, 1]."""
    layers: list[keras.layers.Layer] = []
    if "standard" in augmentation:
        layers += [
            keras.layers.RandomTranslation(
                SHIFT_FRACTION, SHIFT_FRACTION, fill_mode="nearest", seed=seed, name="shift"
            ),
            keras.layers.RandomFlip("horizontal", seed=seed + 1, name="flip"),
            keras.layers.RandomZoom(ZOOM_FRACTION, fill_mode="nearest", seed=seed + 2, name="zoom"),
        ]
    if "crop" in augmentation:
        layers += [
            keras.layers.RandomTranslation(
                CROP_FRACTION,
                CROP_FRACTION,
                fill_mode="reflect",
                interpolation="nearest",
                seed=seed + 5,
                name="crop",
            ),
            keras.layers.RandomFlip("horizontal", seed=seed + 6, name="crop_flip"),
        ]
    if "cutout" in augmentation:
        layers.append(
            keras.layers.RandomErasing(
                factor=1.0,
                scale=CUTOUT_AREA,
                fill_value=0.0,
                value_range=(0, 1),
                seed=seed + 3,
                name="cutout",
            )
        )
    if "gridmask" in augmentation:
        layers.append(GridMask(seed=seed + 4, name="gridmask"))
    if keras.backend.backend() == "jax":
        # Keras marks shift and zoom as not XLA-compilable because TensorFlow's projective
        # transform op is not; JAX's affine transform is plain jnp and compiles. Unmarked,
        # one such layer makes the JAX trainer run the whole train step eagerly, op by op.
        for layer in layers:
            layer.supports_jit = True
    return layers


class MixedBatches(keras.utils.PyDataset):
    """Shuffled training batches of raw uint8 images with MixUp/CutMix applied.

    Images stay uint8 (mixed pixels are rounded), labels are one-hot floats
    mixed in the same proportion. Reshuffled every epoch.
    """

    def __init__(
        self,
        images: np.ndarray,
        onehot_labels: np.ndarray,
        batch_size: int,
        augmentation: Sequence[str],
        seed: int,
    ) -> None:
        super().__init__()
        self.images, self.labels, self.batch_size = images, onehot_labels, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(images))
        self.mixers = []
        if "mixup" in augmentation:
            self.mixers.append(keras.layers.MixUp(alpha=0.2, seed=seed + 5))
        if "cutmix" in augmentation:
            self.mixers.append(keras.layers.CutMix(factor=1.0, seed=seed + 6))

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images, labels = self.images[picked], self.labels[picked]
        if len(picked) < 2 or not self.mixers:
            return images, labels
        mixer = self.mixers[int(self.rng.integers(len(self.mixers)))]
        mixed = mixer({"images": images.astype("float32"), "labels": labels}, training=True)
        mixed_images = np.clip(np.rint(ops.convert_to_numpy(mixed["images"])), 0, 255)
        return mixed_images.astype(np.uint8), ops.convert_to_numpy(mixed["labels"])

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.images))


def needs_mixed_batches(augmentation: Sequence[str]) -> bool:
    return any(name in LABEL_MIXING for name in augmentation)

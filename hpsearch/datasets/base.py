"""What every loader returns: :class:`Dataset`, and the :class:`Splits` fed to a model.

Also the class names of the built-in datasets, in their official label order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from hpsearch.errors import DataError

DIGIT_NAMES = tuple(str(i) for i in range(10))
CIFAR10_NAMES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())
CIFAR100_NAMES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm".split()
)
FASHION_MNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                       "Sneaker", "Bag", "Ankle boot")  # fmt: skip

#: what a decoder returns: x_train, y_train, x_test, y_test and the class names
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]


class _Shapes:
    """``num_classes`` and ``input_shape``, shared by :class:`Dataset` and :class:`Splits`."""

    x_train: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        height, width, channels = (int(d) for d in self.x_train.shape[1:])
        return height, width, channels


@dataclass(frozen=True, eq=False)
class Dataset(_Shapes):
    """A labelled train/test image dataset; its arrays are checked on construction."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        where = f"{self.name} from {self.source}"
        if not self.class_names:
            raise DataError(f"{where}: expected at least one class; found none")
        for x, y in ((self.x_train, self.y_train), (self.x_test, self.y_test)):
            if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != x.shape[:1]:
                raise DataError(
                    f"{where}: expected uint8 images (N, H, W, C) and N int64 labels; "
                    f"got {x.dtype} {x.shape} and {y.dtype} {y.shape}"
                )
            if len(y) == 0 or y.min() < 0 or y.max() >= len(self.class_names):
                raise DataError(
                    f"{where}: expected images labelled 0..{self.num_classes - 1}; "
                    f"got {len(y)} labelled {set(np.unique(y).tolist())}"
                )
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            shapes = f"{self.x_train.shape[1:]} vs {self.x_test.shape[1:]}"
            raise DataError(f"{where}: train and test images differ in shape: {shapes}")

    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over the four arrays' shapes and bytes and the class names."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(f"{array.dtype.str}{array.shape};".encode())
            digest.update(np.ascontiguousarray(array).data.cast("B"))  # a memoryview: no copy
        digest.update(json.dumps(list(self.class_names)).encode())
        return digest.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Splits(_Shapes):
    """Train, validation and test arrays as fed to a model."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

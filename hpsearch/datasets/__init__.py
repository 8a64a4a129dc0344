"""Image-classification datasets as uint8 arrays, with an on-disk cache and splits.

Every loader returns a :class:`Dataset` of ``uint8`` images shaped ``(N, H, W, C)``
(grayscale keeps a channel axis of 1) and ``int64`` labels. The slow formats (CIFAR
pickles, MNIST IDX files, image folders) are decoded once and cached as an
uncompressed ``.npz`` keyed by the source's path, size and modification time.

CIFAR-10 also reads an image-folder copy (``train/<class>/*``, ``test/<class>/*`` with
its ten class names, as a directory, zip or tar), and, without ``data_dir``, the local
copy named by ``$HPSEARCH_CIFAR10`` before trying Keras's downloader.

Modules: :mod:`.loader` (``load_dataset``: which reader a name and path lead to),
:mod:`.base` (``Dataset``, ``Splits``, class names), :mod:`.cache`, :mod:`.splits`,
and the readers :mod:`.cifar`, :mod:`.cifar10_folder`, :mod:`.mnist`, :mod:`.folder`
over :mod:`.archives`.
"""

from hpsearch.choices import DATASET_NAMES
from hpsearch.datasets.base import (
    CIFAR10_NAMES,
    CIFAR100_NAMES,
    DIGIT_NAMES,
    FASHION_MNIST_NAMES,
    Dataset,
    Splits,
)
from hpsearch.datasets.cache import default_cache_dir
from hpsearch.datasets.loader import CIFAR10_ENV, load_dataset
from hpsearch.datasets.splits import split_dataset

__all__ = [
    "CIFAR10_ENV",
    "CIFAR10_NAMES",
    "CIFAR100_NAMES",
    "DATASET_NAMES",
    "DIGIT_NAMES",
    "FASHION_MNIST_NAMES",
    "Dataset",
    "Splits",
    "default_cache_dir",
    "load_dataset",
    "split_dataset",
]

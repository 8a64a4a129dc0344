"""CIFAR-10 as an image folder (``train/<class>/*``, ``test/<class>/*``): a directory, zip or tar.

Re-encoded copies (PNG or JPEG) are common where the official pickles are not at hand.
Such a copy is told apart from the official files by its layout, decoded by the generic
folder reader, then held to CIFAR-10's shape: its ten class names, 32x32 RGB images,
the same count in every class, labels in the official order.
"""

from __future__ import annotations

import logging
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np

from hpsearch.datasets.archives import TAR_SUFFIXES, is_image, read_errors
from hpsearch.datasets.base import CIFAR10_NAMES, Arrays, Dataset
from hpsearch.datasets.cifar import OFFICIAL
from hpsearch.datasets.folder import read_folder
from hpsearch.errors import DataError

log = logging.getLogger(__name__)

CIFAR10_PER_CLASS = (5000, 1000)  # official train and test images a class


def is_cifar10_folder(path: Path) -> bool:
    """Whether ``path`` holds an image-folder copy rather than the official python files.

    A directory: no official file or archive, but ``[prefix/]train/`` and ``test/``
    directories. A zip: always. A tar: its first telling member is an image under
    ``train/`` or ``test/`` rather than an official batch (so only a few headers are read).
    """
    archive, folder, train, test, meta = OFFICIAL["cifar10"][:5]
    official = {*train, *test, meta}
    lower = path.name.lower()
    if path.is_dir():
        if any((path / f).exists() for f in (archive, folder, *official)):
            return False
        roots = [path, *(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))]
        return any((root / "train").is_dir() and (root / "test").is_dir() for root in roots)
    if lower.endswith(".zip") or (not lower.endswith(TAR_SUFFIXES) and zipfile.is_zipfile(path)):
        return True
    if not lower.endswith(TAR_SUFFIXES):
        return False
    with read_errors("cifar10", path), tarfile.open(path, "r:*") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if not member.isfile() or not parts:
                continue
            if parts[-1] in official:
                return False
            if len(parts) >= 3 and parts[-3] in ("train", "test") and is_image(member.name):
                return True
    return False


def read_cifar10_folder(path: Path) -> Arrays:
    """Decode an image-folder copy of CIFAR-10 and check it: names, 32x32 RGB, balanced counts.

    Labels follow the official order :data:`CIFAR10_NAMES`, whatever order the reader
    gives the class folders.
    """
    x_train, y_train, x_test, y_test, names = read_folder(path, "cifar10")
    missing = [n for n in CIFAR10_NAMES if n not in names]
    unexpected = [n for n in names if n not in CIFAR10_NAMES]
    if missing or unexpected:
        raise DataError(
            f"cifar10: {path} is not a CIFAR-10 image folder: expected exactly the class "
            f"folders {', '.join(CIFAR10_NAMES)}; missing: {', '.join(missing) or 'none'}; "
            f"unexpected: {', '.join(unexpected) or 'none'}"
        )
    if x_train.shape[1:] != (32, 32, 3):
        h, w, c = x_train.shape[1:]
        kind = "RGB" if c == 3 else "grayscale"
        raise DataError(f"cifar10: {path}: expected 32x32 RGB images; found {w}x{h} {kind}")
    official = np.array([CIFAR10_NAMES.index(n) for n in names], np.int64)
    y_train, y_test = official[y_train], official[y_test]
    for split, y, expected in (("train", y_train, CIFAR10_PER_CLASS[0]),
                               ("test", y_test, CIFAR10_PER_CLASS[1])):  # fmt: skip
        counts = np.bincount(y, minlength=len(CIFAR10_NAMES))
        if counts.min() != counts.max():
            found = ", ".join(f"{n} {k}" for n, k in zip(CIFAR10_NAMES, counts, strict=True))
            raise DataError(
                f"cifar10: {path}: expected the same number of {split} images in every class "
                f"({expected} in the official release); found {found}"
            )
    if len(y_test) > len(y_train):
        raise DataError(
            f"cifar10: {path}: found {len(y_test)} test images but only {len(y_train)} train "
            f"images; the official release has {10 * CIFAR10_PER_CLASS[0]} train and "
            f"{10 * CIFAR10_PER_CLASS[1]} test: are train/ and test/ swapped?"
        )
    return x_train, y_train, x_test, y_test, CIFAR10_NAMES


def describe_cifar10_folder(dataset: Dataset, path: Path) -> Dataset:
    """``dataset`` with a source naming the image-folder copy and its counts; warns if partial."""
    n_train, n_test = len(dataset.y_train), len(dataset.y_test)
    full = tuple(10 * k for k in CIFAR10_PER_CLASS)
    if (n_train, n_test) != full:
        log.warning(
            "cifar10: %s holds %d train and %d test images, not the official %d and %d "
            "(%d and %d a class); scores are not comparable with full CIFAR-10",
            path, n_train, n_test, *full, *CIFAR10_PER_CLASS,
        )  # fmt: skip
    source = (
        f"cifar10 image folder {path} ({n_train} train, {n_test} test; "
        "a re-encoded copy, not the official binaries)"
    )
    return replace(dataset, source=source)

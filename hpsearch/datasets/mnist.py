"""MNIST and Fashion-MNIST in their official IDX files, gzipped or not."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hpsearch.datasets.archives import listing, read_errors
from hpsearch.datasets.base import DIGIT_NAMES, FASHION_MNIST_NAMES, Arrays
from hpsearch.errors import DataError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip


def resolve_mnist(name: str, path: Path) -> tuple[Path, list[Path], Callable[[], Arrays]]:
    """Find the four IDX files, gzipped or not, in ``path``."""
    if not path.is_dir():
        raise DataError(
            f"{name}: expected a directory holding {MNIST_FILES[0]}.gz and the "
            f"other IDX files; got the file {path}"
        )
    files = []
    for base in MNIST_FILES:
        found = [f for f in (path / f"{base}.gz", path / base) if f.is_file()]
        if not found:
            raise DataError(
                f"{name}: expected {base}.gz (or {base}) in {path}; found: {listing(path)}"
            )
        files.append(found[0])

    def build() -> Arrays:
        x_train, y_train, x_test, y_test = (
            _read_idx(name, f, 3 if "images" in f.name else 1) for f in files
        )
        for x, y, f in ((x_train, y_train, files[1]), (x_test, y_test, files[3])):
            if len(x) != len(y):
                raise DataError(f"{name}: {f} holds {len(y)} labels for {len(x)} images")
        names = FASHION_MNIST_NAMES if name == "fashion_mnist" else DIGIT_NAMES
        labels = y_train.astype(np.int64), y_test.astype(np.int64)
        return x_train[..., np.newaxis], labels[0], x_test[..., np.newaxis], labels[1], names

    return path, files, build


def _read_idx(name: str, path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes: magic ``0x0000080N``, then N big-endian dims."""
    with read_errors(name, path):
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    magic, header = 0x0800 | ndim, 4 + 4 * ndim
    got = int.from_bytes(raw[:4], "big")
    if len(raw) < header or got != magic:
        raise DataError(
            f"{name}: {path} is corrupt: expected IDX magic number 0x{magic:08x}; "
            f"got 0x{got:08x} in {len(raw)} bytes"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(dims)):
        raise DataError(
            f"{name}: {path} is corrupt: its header promises {dims} bytes; "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()

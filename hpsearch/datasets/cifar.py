"""CIFAR-10 and CIFAR-100 in their official python format: pickled batches, or their tar.gz.

The batches are read straight out of the archive (never extracted) and checked: every
expected file present, each a pickled dict of ``(N, 3072)`` uint8 rows and N labels.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from hpsearch.datasets.archives import TAR_SUFFIXES, listing, read_errors, tar_files
from hpsearch.datasets.base import CIFAR10_NAMES, CIFAR100_NAMES, Arrays
from hpsearch.errors import DataError

# (archive, folder, train files, test files, meta file, names key, labels key, default names)
OFFICIAL = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py",
                tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                "batches.meta", b"label_names", b"labels", CIFAR10_NAMES),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",),
                 "meta", b"fine_label_names", b"fine_labels", CIFAR100_NAMES),
}  # fmt: skip


def resolve_cifar(name: str, path: Path) -> tuple[Path, list[Path], Callable[[], Arrays]]:
    """Find the official python-version files: a batches directory or its tar.gz."""
    archive, folder, train = OFFICIAL[name][:3]
    if path.is_file() and not path.name.lower().endswith(TAR_SUFFIXES):
        also = " or an image-folder .zip/.tar(.gz)" * (name == "cifar10")
        raise DataError(f"{name}: expected a directory or {archive}{also}; got the file {path}")
    if path.is_dir() and not (path / train[0]).is_file():
        if (path / folder).is_dir():
            path = path / folder
        elif (path / archive).is_file():
            path = path / archive
        else:
            also = " (or an image folder train/<class>/, test/<class>/)" * (name == "cifar10")
            raise DataError(
                f"{name}: expected {archive} or {folder}/ in {path}{also}; found: {listing(path)}"
            )
    return path, [path], partial(_read_cifar, name, path)


def _read_cifar(name: str, source: Path) -> Arrays:
    """Decode the official batches in the directory or tar ``source``, channel-last."""
    _, folder, train, test, meta, names_key, labels_key, names = OFFICIAL[name]
    wanted = {*train, *test, meta}
    found: dict[str, dict] = {}
    items: Iterator[tuple[str, bytes]]
    with read_errors(name, source):
        if source.is_dir():
            items = ((f, (source / f).read_bytes()) for f in wanted if (source / f).is_file())
        else:
            items = tar_files(source, lambda member: PurePosixPath(member).name in wanted, name)
        for member, content in items:
            file = PurePosixPath(member).name
            found[file] = _unpickle(name, source, file, content)
    missing = [f for f in (*train, *test) if f not in found]
    if missing:
        raise DataError(
            f"{name}: expected {', '.join(missing)} (the official {folder} files) "
            f"in {source}; not found"
        )
    if names_key in found.get(meta, {}):  # else the official names
        names = tuple(
            n.decode() if isinstance(n, bytes) else str(n) for n in found[meta][names_key]
        )
    splits = []
    for files in (train, test):
        xs, ys = [], []
        for file in files:
            data, labels = np.asarray(found[file].get(b"data")), found[file].get(labels_key, ())
            if data.dtype != np.uint8 or data.shape[1:] != (3072,) or len(labels) != len(data):
                raise DataError(
                    f"{name}: {source}: {file} is corrupt: expected b'data' (N, 3072) "
                    f"uint8 and N {labels_key!r}; got {data.dtype} {data.shape}"
                )
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # channel-first -> last
            ys.append(np.asarray(labels, dtype=np.int64))
        splits += [np.concatenate(xs), np.concatenate(ys)]
    x_train, y_train, x_test, y_test = splits
    return x_train, y_train, x_test, y_test, names


def _unpickle(name: str, source: Path, file: str, data: bytes) -> dict:
    """One pickled CIFAR batch as written by Python 2 (so byte-string keys)."""
    try:
        obj = pickle.loads(data, encoding="bytes")
    except Exception as exc:  # pickle raises many types on bad input
        raise DataError(f"{name}: {source}: {file} is corrupt: not a pickle ({exc!r})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{name}: {source}: {file} is corrupt: expected a pickled dict")
    return obj

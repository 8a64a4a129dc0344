"""``load_dataset``: a dataset by name, from a local copy or Keras's downloader.

Which reader a name and a path lead to is decided here; the readers live beside it
(:mod:`.cifar`, :mod:`.cifar10_folder`, :mod:`.mnist`, :mod:`.folder`) and their
decodes go through the on-disk cache (:mod:`.cache`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from hpsearch.choices import DATASET_NAMES
from hpsearch.datasets.base import (
    CIFAR10_NAMES,
    CIFAR100_NAMES,
    DIGIT_NAMES,
    FASHION_MNIST_NAMES,
    Arrays,
    Dataset,
)
from hpsearch.datasets.cache import cached, default_cache_dir
from hpsearch.datasets.cifar import OFFICIAL, resolve_cifar
from hpsearch.datasets.cifar10_folder import (
    describe_cifar10_folder,
    is_cifar10_folder,
    read_cifar10_folder,
)
from hpsearch.datasets.folder import read_folder
from hpsearch.datasets.mnist import resolve_mnist
from hpsearch.errors import DataError

CIFAR10_ENV = "HPSEARCH_CIFAR10"  # a local CIFAR-10 copy used when no data_dir is given


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load dataset ``name`` from ``data_dir``, or with Keras's downloader when it is ``None``.

    ``digits`` ignores ``data_dir``; ``folder`` requires it. ``cifar10`` without
    ``data_dir`` first tries the path in ``$HPSEARCH_CIFAR10`` (:data:`CIFAR10_ENV`).
    Arrays decoded from a local copy are cached under ``cache_dir`` (default
    :func:`default_cache_dir`).
    """
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if name == "digits":
        return _load_digits()
    if data_dir is None:
        if name == "folder":
            raise DataError(
                "folder: data_dir is required: a directory, .zip or .tar.gz "
                "holding train/<class>/* and test/<class>/*"
            )
        if name == "cifar10" and os.environ.get(CIFAR10_ENV, "").strip():
            return _load_cifar10_env(cache_dir)
        return _load_keras(name)
    path = Path(data_dir).expanduser().resolve()
    if not path.exists():
        raise DataError(f"{name}: data_dir {path} does not exist")
    return _load_local(name, path, cache_dir)


def _load_cifar10_env(cache_dir: str | os.PathLike[str] | None) -> Dataset:
    """The local CIFAR-10 copy named by ``$HPSEARCH_CIFAR10``."""
    value = os.environ[CIFAR10_ENV].strip()
    path = Path(value).expanduser().resolve()
    if not path.exists():
        raise DataError(
            f"cifar10: {CIFAR10_ENV}={value} names {path}, which does not exist; point it at "
            "the official cifar-10-python.tar.gz (or its directory) or an image folder/archive, "
            "or unset it to download with Keras"
        )
    try:
        return _load_local("cifar10", path, cache_dir)
    except DataError as exc:
        raise DataError(f"{exc} (path from {CIFAR10_ENV})") from exc


def _load_local(name: str, path: Path, cache_dir: str | os.PathLike[str] | None) -> Dataset:
    """Decode (or read from the cache) the local copy of ``name`` at the existing ``path``."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    build: Callable[[], Arrays]
    if name == "cifar10" and is_cifar10_folder(path):
        build = partial(read_cifar10_folder, path)
        return describe_cifar10_folder(cached(name, path, [path], build, cache), path)
    if name in OFFICIAL:
        source, stamped, build = resolve_cifar(name, path)
    elif name == "folder":
        source, stamped, build = path, [path], partial(read_folder, path)
    else:
        source, stamped, build = resolve_mnist(name, path)
    return cached(name, source, stamped, build, cache)


def _load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits, scaled to 0..255, 20% held out (stratified) as test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[..., np.newaxis]
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    source = "sklearn.datasets.load_digits (stratified 20% test hold-out, random_state=0)"
    return Dataset("digits", x_train, y_train, x_test, y_test, DIGIT_NAMES, source)


def _load_keras(name: str) -> Dataset:
    """Keras's downloader, which keeps its own cache under ``~/.keras/datasets``."""
    try:
        from keras import datasets

        module = getattr(datasets, name)
        kwargs = {"label_mode": "fine"} if name == "cifar100" else {}
        (x_train, y_train), (x_test, y_test) = module.load_data(**kwargs)
    except Exception as exc:  # import, network and archive errors all mean "could not get it"
        reason = _short_reason(exc)
        if name == "cifar10":
            raise DataError(
                f"cifar10: could not download it with keras.datasets.cifar10.load_data() "
                f"({reason}); offline, point at a local copy with --data-dir PATH or "
                f"{CIFAR10_ENV}=PATH (the official cifar-10-python.tar.gz or an image "
                "folder/archive train/<class>/*, test/<class>/*)"
            ) from exc
        raise DataError(
            f"{name}: keras.datasets.{name}.load_data() failed ({reason}); "
            "it downloads on first use, so offline pass data_dir with the official files"
        ) from exc
    arrays = []
    for x, y in ((x_train, y_train), (x_test, y_test)):
        x = np.asarray(x, dtype=np.uint8)
        arrays += [x[..., np.newaxis] if x.ndim == 3 else x, np.asarray(y, np.int64).reshape(-1)]
    names = {"cifar10": CIFAR10_NAMES, "cifar100": CIFAR100_NAMES}
    names["fashion_mnist"] = FASHION_MNIST_NAMES
    x_train, y_train, x_test, y_test = arrays
    return Dataset(name, x_train, y_train, x_test, y_test, names.get(name, DIGIT_NAMES),
                   f"keras.datasets.{name}")  # fmt: skip


def _short_reason(exc: BaseException, limit: int = 200) -> str:
    """``Type: message``, first line only, at most ``limit`` characters."""
    lines = f"{type(exc).__name__}: {exc}".strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."

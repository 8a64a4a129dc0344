"""The on-disk cache of decoded datasets: one uncompressed ``.npz`` per local source.

Decoding pickles, IDX files or thousands of images is slow; reading the arrays back is
not. An entry is keyed by the dataset, the source's path and the size and modification
time of every file under it, so a changed source is decoded again (and its stale entry
removed). A damaged entry is never fatal: it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.datasets.base import Arrays, Dataset

log = logging.getLogger(__name__)

_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$HPSEARCH_CACHE_DIR`` if set, else ``~/.cache/hpsearch``."""
    env = os.environ.get("HPSEARCH_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hpsearch"


def cached(
    name: str, source: Path, stamped: list[Path], build: Callable[[], Arrays], cache_dir: Path
) -> Dataset:
    """The cached decode of ``source`` while its files are unchanged; else build and cache it."""
    source_key = hashlib.sha256(json.dumps([_CACHE_VERSION, name, str(source)]).encode())
    stamp = hashlib.sha256(json.dumps(_file_stamps(stamped)).encode()).hexdigest()[:12]
    folder = cache_dir.expanduser() / "datasets"
    stem = f"{name}-{source_key.hexdigest()[:12]}"
    cache_file = folder / f"{stem}-{stamp}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as npz:
                x_train, y_train, x_test, y_test = (npz[key] for key in _ARRAYS)
                names = tuple(str(c) for c in npz["class_names"])
            log.debug("%s: read from cache %s", name, cache_file)
            return Dataset(name, x_train, y_train, x_test, y_test, names, str(source))
        except Exception as exc:  # a damaged cache is never fatal: rebuild it
            log.warning("ignoring unreadable dataset cache %s (%s)", cache_file, exc)
    x_train, y_train, x_test, y_test, names = build()
    arrays: dict[str, Any] = dict(zip(_ARRAYS, (x_train, y_train, x_test, y_test), strict=True))
    dataset = Dataset(name, x_train, y_train, x_test, y_test, names, str(source))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{cache_file.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays, class_names=np.array(names))
            os.replace(tmp, cache_file)
        finally:
            Path(tmp).unlink(missing_ok=True)
        for stale in folder.glob(f"{stem}-*.npz"):  # older versions of the same source
            if stale != cache_file:
                stale.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not write dataset cache %s: %s", cache_file, exc)
    return dataset


def _file_stamps(paths: list[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of each file, and of every file below each directory."""
    stamps = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            stat = file.stat()
            stamps.append((str(file), stat.st_size, stat.st_mtime_ns))
    return stamps

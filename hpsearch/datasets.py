"""Image-classification datasets as uint8 arrays, with an on-disk cache and splits.

Every loader returns a :class:`Dataset` of ``uint8`` images shaped ``(N, H, W, C)``
(grayscale keeps a channel axis of 1) and ``int64`` labels. The slow formats (CIFAR
pickles, MNIST IDX files, image folders) are decoded once and cached as an
uncompressed ``.npz`` keyed by the source's path, size and modification time.

CIFAR-10 also reads an image-folder copy (``train/<class>/*``, ``test/<class>/*`` with
its ten class names, as a directory, zip or tar), and, without ``data_dir``, the local
copy named by ``$HPSEARCH_CIFAR10`` before trying Keras's downloader.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import pickle
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

import numpy as np
from PIL import Image

from hpsearch.errors import DataError
from hpsearch.util.progress import WorkProgress

log = logging.getLogger(__name__)

DATASET_NAMES = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "folder")
DIGIT_NAMES = tuple(str(i) for i in range(10))
CIFAR10_NAMES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())
CIFAR10_ENV = "HPSEARCH_CIFAR10"  # a local CIFAR-10 copy used when no data_dir is given
CIFAR10_PER_CLASS = (5000, 1000)  # official train and test images a class
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
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # fmt: skip
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_GRAY_MODES = ("1", "L", "LA")
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_CACHE_VERSION = 1

# (archive, folder, train files, test files, meta file, names key, labels key, default names)
_CIFAR = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py",
                tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                "batches.meta", b"label_names", b"labels", CIFAR10_NAMES),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ("train",), ("test",),
                 "meta", b"fine_label_names", b"fine_labels", CIFAR100_NAMES),
}  # fmt: skip

_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]


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


def default_cache_dir() -> Path:
    """``$HPSEARCH_CACHE_DIR`` if set, else ``~/.cache/hpsearch``."""
    env = os.environ.get("HPSEARCH_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hpsearch"


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
    build: Callable[[], _Arrays]
    if name == "cifar10" and _is_cifar10_folder(path):
        build = partial(_read_cifar10_folder, path)
        return _describe_cifar10_folder(_cached(name, path, [path], build, cache), path)
    if name in _CIFAR:
        source, stamped, build = _resolve_cifar(name, path)
    elif name == "folder":
        source, stamped, build = path, [path], partial(_read_folder, path)
    else:
        source, stamped, build = _resolve_mnist(name, path)
    return _cached(name, source, stamped, build, cache)


def split_dataset(
    dataset: Dataset, validation_fraction: float = 0.2, seed: int = 0, limit: int | None = None
) -> Splits:
    """Split off a stratified validation set from the training set, repeatably for ``seed``.

    ``limit`` caps each of train, validation and test at that many samples, drawn stratified.
    """
    from sklearn.model_selection import train_test_split

    fraction = validation_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise DataError(f"validation_fraction must lie strictly between 0 and 1; got {fraction!r}")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or limit < dataset.num_classes
    ):
        raise DataError(
            f"limit must be at least the number of classes ({dataset.num_classes} in "
            f"{dataset.name}) so that each class keeps a sample; got {limit!r}"
        )
    x, y = dataset.x_train, dataset.y_train
    try:
        x_train, x_val, y_train, y_val = train_test_split(
            x, y, test_size=fraction, stratify=y, random_state=seed, shuffle=True
        )
    except ValueError as exc:
        raise DataError(
            f"{dataset.name}: cannot split {len(y)} training images stratified by "
            f"class with validation_fraction={fraction}: {exc}"
        ) from exc
    parts = [(x_train, y_train), (x_val, y_val), (dataset.x_test, dataset.y_test)]
    arrays = [array for x, y in parts for array in _subsample(x, y, limit, seed)]
    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, dataset.class_names)


def _subsample(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> list[np.ndarray]:
    """At most ``limit`` samples, stratified unless impossible (a class of one, a tiny rest)."""
    from sklearn.model_selection import train_test_split

    if limit is None or len(y) <= limit:
        return [x, y]
    counts = np.bincount(y)[np.bincount(y) > 0]
    stratify = y if counts.min() >= 2 and len(y) - limit >= len(counts) else None
    x, _, y, _ = train_test_split(
        x, y, train_size=limit, stratify=stratify, random_state=seed, shuffle=True
    )
    return [x, y]


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


def _cached(
    name: str, source: Path, stamped: list[Path], build: Callable[[], _Arrays], cache_dir: Path
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


@contextmanager
def _read_errors(name: str, path: Path) -> Iterator[None]:
    """Turn low-level read failures into a DataError naming ``path``."""
    try:
        yield
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{name}: {path} is corrupt or truncated ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{name}: cannot read {path}: {exc}") from exc


def _listing(path: Path, limit: int = 8) -> str:
    """The first entries of a directory, for error messages."""
    entries = sorted(p.name + "/" * p.is_dir() for p in path.iterdir())
    more = f", ... ({len(entries) - limit} more)" if len(entries) > limit else ""
    return ", ".join(entries[:limit]) + more if entries else "nothing"


def _resolve_cifar(name: str, path: Path) -> tuple[Path, list[Path], Callable[[], _Arrays]]:
    """Find the official python-version files: a batches directory or its tar.gz."""
    archive, folder, train = _CIFAR[name][:3]
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
                f"{name}: expected {archive} or {folder}/ in {path}{also}; found: {_listing(path)}"
            )
    return path, [path], partial(_read_cifar, name, path)


def _read_cifar(name: str, source: Path) -> _Arrays:
    _, folder, train, test, meta, names_key, labels_key, names = _CIFAR[name]
    wanted = {*train, *test, meta}
    found: dict[str, dict] = {}
    items: Iterator[tuple[str, bytes]]
    with _read_errors(name, source):
        if source.is_dir():
            items = ((f, (source / f).read_bytes()) for f in wanted if (source / f).is_file())
        else:
            items = _tar_files(source, lambda member: PurePosixPath(member).name in wanted, name)
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


def _is_cifar10_folder(path: Path) -> bool:
    """Whether ``path`` holds an image-folder copy rather than the official python files.

    A directory: no official file or archive, but ``[prefix/]train/`` and ``test/``
    directories. A zip: always. A tar: its first telling member is an image under
    ``train/`` or ``test/`` rather than an official batch (so only a few headers are read).
    """
    archive, folder, train, test, meta = _CIFAR["cifar10"][:5]
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
    with _read_errors("cifar10", path), tarfile.open(path, "r:*") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if not member.isfile() or not parts:
                continue
            if parts[-1] in official:
                return False
            if len(parts) >= 3 and parts[-3] in ("train", "test") and _is_image(member.name):
                return True
    return False


def _read_cifar10_folder(path: Path) -> _Arrays:
    """Decode an image-folder copy of CIFAR-10 and check it: names, 32x32 RGB, balanced counts.

    Labels follow the official order :data:`CIFAR10_NAMES`, whatever order the reader
    gives the class folders.
    """
    x_train, y_train, x_test, y_test, names = _read_folder(path, "cifar10")
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


def _describe_cifar10_folder(dataset: Dataset, path: Path) -> Dataset:
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


def _tar_files(
    path: Path, wanted: Callable[[str], bool], name: str = "folder"
) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of a tar's wanted regular files, in one sequential pass, unextracted.

    Random-access mode (not ``r|*``): a truncated .gz then raises instead of ending early,
    and reading on to the end makes gzip/bz2/xz verify their checksums. Shows its progress
    in bytes of the (compressed) file read.
    """
    with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar, WorkProgress(
        os.fstat(raw.fileno()).st_size, f"{name}: read {path.name}:",
        f"{name}: reading {path.name}", "B",
    ) as progress:  # fmt: skip
        for member in tar:
            if member.isfile() and wanted(member.name):
                yield member.name, cast(IO[bytes], tar.extractfile(member)).read()  # a file
            progress.update_to(raw.tell())
        tar.fileobj.read(-1)  # what is left, all of it (-1, as read() without an argument)
        progress.update_to(raw.tell())


def _unpickle(name: str, source: Path, file: str, data: bytes) -> dict:
    """One pickled CIFAR batch as written by Python 2 (so byte-string keys)."""
    try:
        obj = pickle.loads(data, encoding="bytes")
    except Exception as exc:  # pickle raises many types on bad input
        raise DataError(f"{name}: {source}: {file} is corrupt: not a pickle ({exc!r})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{name}: {source}: {file} is corrupt: expected a pickled dict")
    return obj


def _resolve_mnist(name: str, path: Path) -> tuple[Path, list[Path], Callable[[], _Arrays]]:
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
                f"{name}: expected {base}.gz (or {base}) in {path}; found: {_listing(path)}"
            )
        files.append(found[0])

    def build() -> _Arrays:
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
    with _read_errors(name, path):
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


def _is_image(key: str) -> bool:
    """An image file by suffix, outside hidden files/dirs and macOS ``__MACOSX`` debris."""
    parts = PurePosixPath(key).parts
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
    return bool(parts) and not hidden and key.lower().endswith(IMAGE_SUFFIXES)


@contextmanager
def _folder_members(path: Path, name: str = "folder") -> Iterator[dict[str, Callable[[], bytes]]]:
    """Image files of a directory, zip or tar as ``{posix path: read}``, never extracted."""
    lower = path.name.lower()
    if path.is_dir():
        files = {f.relative_to(path).as_posix(): f for f in path.rglob("*") if f.is_file()}
        yield {key: file.read_bytes for key, file in files.items() if _is_image(key)}
    elif lower.endswith(".zip") or (not lower.endswith(TAR_SUFFIXES) and zipfile.is_zipfile(path)):
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir() and _is_image(i.filename)]
            yield {info.filename: partial(archive.read, info) for info in infos}
    elif lower.endswith(TAR_SUFFIXES) or tarfile.is_tarfile(path):
        yield {key: partial(bytes, data) for key, data in _tar_files(path, _is_image, name)}
    else:
        raise DataError(
            f"{name}: expected a directory, .zip or .tar(.gz) at {path}; got a file of another kind"
        )


def _read_folder(path: Path, name: str = "folder") -> _Arrays:
    """Decode ``[prefix/]train/<class>/*`` and ``[prefix/]test/<class>/*`` with Pillow.

    Classes are the train/ folder names, sorted; ``name`` prefixes error messages.
    """
    with _read_errors(name, path), _folder_members(path, name) as members:
        roots: dict[tuple[str, ...], dict[str, list[tuple[str, str]]]] = {}
        for key in members:
            parts = PurePosixPath(key).parts
            if len(parts) >= 3 and parts[-3] in ("train", "test"):
                split = roots.setdefault(parts[:-3], {}).setdefault(parts[-3], [])
                split.append((parts[-2], key))
        complete = sorted(root for root, splits in roots.items() if len(splits) == 2)
        if len(complete) != 1:
            seen = ", ".join(sorted(members)[:4]) or f"no {'/'.join(IMAGE_SUFFIXES)} files"
            roots_found = ", ".join("/".join(root) or "." for root in complete)
            seen = f"several candidate roots: {roots_found}" if complete else f"found: {seen}"
            raise DataError(
                f"{name}: expected images in train/<class>/ and test/<class>/ in {path}"
                f" (optionally in one top-level directory); {seen}"
            )
        splits = {split: sorted(items) for split, items in roots[complete[0]].items()}
        class_names = tuple(sorted({cls for cls, _ in splits["train"]}))
        extra = sorted({cls for cls, _ in splits["test"]} - set(class_names))
        if extra:
            raise DataError(
                f"{name}: test classes {extra} in {path} have no train/ images; "
                f"train/ holds {list(class_names)}"
            )
        keys = [key for split in ("train", "test") for _, key in splits[split]]
        log.info("%s: decoding %d images from %s", name, len(keys), path)
        images = _decode_all(path, keys, members, name)
    index = {cls: i for i, cls in enumerate(class_names)}
    y_train, y_test = (
        np.array([index[c] for c, _ in splits[s]], np.int64) for s in ("train", "test")
    )
    n_train = len(y_train)
    return images[:n_train], y_train, images[n_train:], y_test, class_names


def _decode_all(
    path: Path, keys: list[str], members: dict[str, Callable[[], bytes]], name: str = "folder"
) -> np.ndarray:
    """Decode same-sized images to ``(N, H, W, 3)``, or ``(N, H, W, 1)`` if all are grayscale."""
    out: np.ndarray = np.empty(0, np.uint8)
    first, all_gray = "", True
    with WorkProgress(len(keys), f"{name}: decoded", f"{name}: decoding", "images") as progress:
        for i, key in enumerate(keys):
            data = members[key]()
            try:
                with Image.open(io.BytesIO(data)) as img:
                    mode = "L" if img.mode in _GRAY_MODES else "RGB"
                    pixels = np.asarray(img if img.mode == mode else img.convert(mode))
            except Exception as exc:  # Pillow's decoders raise many types on bad data
                raise DataError(f"{name}: cannot decode image {key} in {path} ({exc})") from exc
            if i == 0:
                out, first = np.empty((len(keys), *pixels.shape[:2], 3), np.uint8), key
            if pixels.shape[:2] != out.shape[1:3]:
                (h, w), (eh, ew) = pixels.shape[:2], out.shape[1:3]
                raise DataError(
                    f"{name}: image {key} in {path} is {w}x{h} pixels; expected {ew}x{eh}"
                    f" like {first}: all images must share one size"
                )
            out[i] = pixels[..., np.newaxis] if mode == "L" else pixels
            all_gray = all_gray and mode == "L"
            progress.update_to(i + 1)
    return np.ascontiguousarray(out[..., :1]) if all_gray else out

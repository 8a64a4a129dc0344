"""Dataset loaders, cache and splits, on small archives built in the official formats."""

from __future__ import annotations

import fcntl
import gzip
import io
import logging
import os
import pickle
import re
import struct
import sys
import tarfile
import termios
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsearch import datasets
from hpsearch.datasets import (
    CIFAR10_ENV,
    CIFAR10_NAMES,
    DATASET_NAMES,
    FASHION_MNIST_NAMES,
    Dataset,
    cifar10_folder,
    default_cache_dir,
    load_dataset,
    loader,
    split_dataset,
)
from hpsearch.errors import DataError
from hpsearch.util import progress
from hpsearch.util.progress import PROGRESS_ENV

CLASSES = ("cat", "dog", "frog")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the real ~/.cache, even where a test leaves out cache_dir; no local copy."""
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.delenv(CIFAR10_ENV, raising=False)


# --- builders of official formats ---------------------------------------------------------


def cifar_pixels(i: int) -> np.ndarray:
    """Image ``i`` channel-first (3, 32, 32): value = (7i + 50c + 3row + col) % 256."""
    c, row, col = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((7 * i + 50 * c + 3 * row + col) % 256).astype(np.uint8)


def cifar_batch(indices: range, labels_key: bytes, num_classes: int) -> dict:
    data = np.stack([cifar_pixels(i).reshape(3072) for i in indices])
    return {b"batch_label": b"x", labels_key: [i % num_classes for i in indices], b"data": data}


def write_pickle(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def tar_dir(folder: Path, archive: Path, arcname: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname if arcname is not None else folder.name)
    return archive


def make_cifar10(root: Path, per_batch: int = 20, n_test: int = 20) -> Path:
    """``root/cifar-10-batches-py/`` (5 x per_batch train, n_test test) and its tar.gz."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(5):
        indices = range(b * per_batch, (b + 1) * per_batch)
        write_pickle(folder / f"data_batch_{b + 1}", cifar_batch(indices, b"labels", 10))
    test_indices = range(1000, 1000 + n_test)
    write_pickle(folder / "test_batch", cifar_batch(test_indices, b"labels", 10))
    names = [n.encode() for n in CIFAR10_NAMES]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    tar_dir(folder, root / "cifar-10-python.tar.gz")
    return root


def make_cifar100(root: Path, n_train: int = 30, n_test: int = 10) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, indices in (("train", range(n_train)), ("test", range(500, 500 + n_test))):
        batch = cifar_batch(indices, b"fine_labels", 5)
        batch[b"coarse_labels"] = [0] * len(indices)
        write_pickle(folder / split, batch)
    names = [f"fine{i}".encode() for i in range(5)]
    write_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"c"]})
    tar_dir(folder, root / "cifar-100-python.tar.gz")
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_mnist(root: Path, gz: bool = True, n_train: int = 30, n_test: int = 10) -> dict:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        (root / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return arrays


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buffer, "PNG")
    return buffer.getvalue()


def make_folder(root: Path, channels: int = 3, size: tuple[int, int] = (6, 5)) -> dict:
    """``root/{train,test}/<class>/NN.png`` of random pixels; returns {split: (x, y)} as sorted.

    Also plants files the loader must skip: hidden files, AppleDouble debris, a text file.
    """
    rng = np.random.default_rng(7)
    counts = {"train": (4, 3, 5), "test": (2, 1, 2)}
    expected = {}
    for split, per_class in counts.items():
        xs, ys = [], []
        for label, (cls, count) in enumerate(zip(CLASSES, per_class, strict=True)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for j in range(count):
                pixels = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
                (folder / f"{j:02d}.png").write_bytes(png_bytes(pixels))
                xs.append(pixels)
                ys.append(label)
        expected[split] = (np.stack(xs), np.array(ys))
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"not an image")
    (root / "train" / "cat" / "notes.txt").write_text("not an image either")
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / "__MACOSX" / "train" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "train" / "cat" / "00.png").write_bytes(b"resource fork")
    return expected


def zip_dir(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, prefix + file.relative_to(folder).as_posix())
    return archive


def assert_folder(dataset: Dataset, expected: dict) -> None:
    assert dataset.class_names == CLASSES
    for x, y, split in (
        (dataset.x_train, dataset.y_train, "train"),
        (dataset.x_test, dataset.y_test, "test"),
    ):
        assert x.dtype == np.uint8 and y.dtype == np.int64
        np.testing.assert_array_equal(x, expected[split][0])
        np.testing.assert_array_equal(y, expected[split][1])


# --- digits ------------------------------------------------------------------------------


def test_digits_loads_offline_scaled_to_uint8() -> None:
    dataset = load_dataset("digits", data_dir="/ignored")
    assert dataset.x_train.shape[1:] == (8, 8, 1) and dataset.input_shape == (8, 8, 1)
    assert dataset.x_train.dtype == np.uint8 and dataset.y_train.dtype == np.int64
    assert dataset.x_train.max() == 255 and dataset.x_train.min() == 0
    assert len(dataset.x_train) + len(dataset.x_test) == 1797
    assert len(dataset.x_test) == 360
    assert dataset.class_names == tuple("0123456789") and dataset.num_classes == 10
    test_share = np.bincount(dataset.y_test) / np.bincount(
        np.concatenate([dataset.y_train, dataset.y_test])
    )
    assert np.all(np.abs(test_share - 0.2) < 0.02)
    assert load_dataset("digits").fingerprint() == dataset.fingerprint()


# --- CIFAR -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pick",
    [
        lambda root: root,  # holds cifar-10-batches-py/ (and the tar.gz)
        lambda root: root / "cifar-10-batches-py",
        lambda root: root / "cifar-10-python.tar.gz",
        "tar-only",
    ],
    ids=["root-dir", "batches-dir", "tar-path", "root-with-tar-only"],
)
def test_cifar10_from_official_python_files(tmp_path: Path, pick) -> None:
    root = make_cifar10(tmp_path / "data")
    if pick == "tar-only":
        os.rename(root / "cifar-10-python.tar.gz", tmp_path / "c.tar.gz")
        for f in (root / "cifar-10-batches-py").iterdir():
            f.unlink()
        (root / "cifar-10-batches-py").rmdir()
        (tmp_path / "c.tar.gz").rename(root / "cifar-10-python.tar.gz")
        data_dir = root
    else:
        data_dir = pick(root)
    dataset = load_dataset("cifar10", data_dir, cache_dir=tmp_path / "cache")
    assert dataset.x_train.shape == (100, 32, 32, 3) and dataset.x_test.shape == (20, 32, 32, 3)
    assert dataset.x_train.dtype == np.uint8 and dataset.y_train.dtype == np.int64
    np.testing.assert_array_equal(dataset.y_train, np.arange(100) % 10)
    np.testing.assert_array_equal(dataset.y_test, np.arange(1000, 1020) % 10)
    assert dataset.class_names == CIFAR10_NAMES
    # channel-first rows of 3072 land at [row, col, channel]
    for i, row, col, c in [(0, 0, 0, 1), (37, 5, 9, 2), (99, 31, 0, 0)]:
        assert dataset.x_train[i, row, col, c] == (7 * i + 50 * c + 3 * row + col) % 256
    np.testing.assert_array_equal(dataset.x_test[3], cifar_pixels(1003).transpose(1, 2, 0))


def test_cifar100_reads_fine_labels_and_names(tmp_path: Path) -> None:
    root = make_cifar100(tmp_path / "data")
    for data_dir in (root, root / "cifar-100-python.tar.gz"):
        dataset = load_dataset("cifar100", data_dir, cache_dir=tmp_path / "cache")
        assert dataset.x_train.shape == (30, 32, 32, 3) and dataset.x_test.shape == (10, 32, 32, 3)
        assert dataset.class_names == tuple(f"fine{i}" for i in range(5))
        np.testing.assert_array_equal(dataset.y_train, np.arange(30) % 5)
        np.testing.assert_array_equal(dataset.x_test[2], cifar_pixels(502).transpose(1, 2, 0))
    assert len(datasets.CIFAR100_NAMES) == 100 == len(set(datasets.CIFAR100_NAMES))


def test_cifar_missing_files_and_corrupt_archive(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    with pytest.raises(
        DataError, match=r"cifar-10-python\.tar\.gz or cifar-10-batches-py/.*found: a\.txt"
    ):
        load_dataset("cifar10", empty, cache_dir=tmp_path / "cache")
    root = make_cifar10(tmp_path / "data")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3") as info:
        load_dataset("cifar10", root / "cifar-10-batches-py", cache_dir=tmp_path / "cache")
    assert str(root) in str(info.value)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3 is corrupt"):
        load_dataset("cifar10", root / "cifar-10-batches-py", cache_dir=tmp_path / "cache")
    archive = root / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        load_dataset("cifar10", archive, cache_dir=tmp_path / "cache")
    assert str(archive) in str(info.value)


# --- CIFAR-10 as an image folder ----------------------------------------------------------

SHARED_CIFAR10 = Path(__file__).parents[2] / "shared/data/cifar10-jpeg.tar.gz"


def cifar10_image(label: int, j: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """An RGB image whose red channel is 20 * label and green channel j: its class is visible."""
    pixels = np.zeros((*size, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 20 * label, j, np.arange(size[1])
    return pixels


def make_cifar10_folder(
    root: Path,
    names: tuple[str, ...] = CIFAR10_NAMES,
    per_class: tuple[int, int] = (2, 1),
    size: tuple[int, int] = (32, 32),
    fmt: str = "PNG",
) -> Path:
    """``root/{train,test}/<class>/NNNN.png``, the folders written in reverse official order."""
    for split, count in zip(("train", "test"), per_class, strict=True):
        for name in reversed(names):
            label = CIFAR10_NAMES.index(name) if name in CIFAR10_NAMES else 11
            folder = root / split / name
            folder.mkdir(parents=True)
            for j in range(count):
                buffer = io.BytesIO()
                Image.fromarray(cifar10_image(label, j, size)).save(buffer, fmt)
                (folder / f"{j:04d}.{fmt.lower()}").write_bytes(buffer.getvalue())
    return root


def tar_reversed(folder: Path, archive: Path, prefix: str = "") -> Path:
    """A tar.gz of ``folder`` whose members come in reverse path order (truck before airplane)."""
    with tarfile.open(archive, "w:gz") as tar:
        for file in sorted(folder.rglob("*"), reverse=True):
            if file.is_file():
                tar.add(file, arcname=prefix + file.relative_to(folder).as_posix())
    return archive


def assert_official_labels(dataset: Dataset, n_train: int = 20, n_test: int = 10) -> None:
    assert dataset.name == "cifar10" and dataset.class_names == CIFAR10_NAMES
    assert dataset.x_train.shape == (n_train, 32, 32, 3)
    assert dataset.x_test.shape == (n_test, 32, 32, 3)
    for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)):
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x[:, 0, 0, 0], 20 * y)  # the red channel encodes the class
        np.testing.assert_array_equal(np.bincount(y, minlength=10), [len(y) // 10] * 10)


@pytest.mark.parametrize("kind", ["tar.gz", "tar.gz-wrapped", "zip", "dir", "jpeg"])
def test_cifar10_image_folder_gets_official_labels(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    fmt = "JPEG" if kind == "jpeg" else "PNG"
    folder = make_cifar10_folder(tmp_path / "imgs", fmt=fmt)
    source = {
        "tar.gz": lambda: tar_reversed(folder, tmp_path / "c.tar.gz"),
        "tar.gz-wrapped": lambda: tar_reversed(folder, tmp_path / "c.tgz", prefix="cifar10/"),
        "zip": lambda: zip_dir(folder, tmp_path / "c.zip"),
        "dir": lambda: folder,
        "jpeg": lambda: tar_reversed(folder, tmp_path / "c.tar.gz"),
    }[kind]()
    with caplog.at_level(logging.WARNING, logger="hpsearch.datasets"):
        dataset = load_dataset("cifar10", source, cache_dir=tmp_path / "cache")
    if fmt == "PNG":
        assert_official_labels(dataset)
        expected = np.stack([cifar10_image(label, j) for label in range(10) for j in range(2)])
        np.testing.assert_array_equal(dataset.x_train, expected)
    else:  # lossy: the class still shows in the red channel
        assert dataset.x_train.shape == (20, 32, 32, 3) and dataset.class_names == CIFAR10_NAMES
        assert np.all(np.abs(dataset.x_train[:, 16, 16, 0] - 20.0 * dataset.y_train) <= 4)
    assert "image folder" in dataset.source and str(source) in dataset.source
    assert "(20 train, 10 test;" in dataset.source
    assert "not the official 50000 and 10000" in caplog.text
    cached = load_dataset("cifar10", source, cache_dir=tmp_path / "cache")  # from the cache
    assert cached.fingerprint() == dataset.fingerprint() and cached.source == dataset.source


def test_decoding_an_archive_says_how_far_it_is_in_plain_lines_off_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # a line at every step, not every 5 s
    archive = tar_reversed(make_cifar10_folder(tmp_path / "imgs"), tmp_path / "c.tar.gz")
    load_dataset("cifar10", archive, cache_dir=tmp_path / "cache")
    err = capsys.readouterr().err
    assert re.search(r"^cifar10: read c\.tar\.gz: 0\.0 of 0\.0 MB \(\d+%, \d+s", err, re.M)
    assert "cifar10: decoded 1 of 30 images (3%, 0s, about " in err
    assert re.search(r"^cifar10: decoded 30 of 30 images \(100%, \d+s\)$", err, re.M)
    assert err.count("decoded 30 of 30") == 1 and "%|" not in err  # no bar, no repeat
    load_dataset("cifar10", archive, cache_dir=tmp_path / "cache")  # from the cache: silent
    with progress.quiet_progress():  # a command's -q: silent
        load_dataset("cifar10", archive, cache_dir=tmp_path / "other-cache")
    assert capsys.readouterr().err == ""


def test_decoding_an_archive_draws_bars_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    archive = tar_reversed(make_cifar10_folder(tmp_path / "imgs"), tmp_path / "c.tar.gz")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with open(slave, "w", encoding="utf-8") as terminal, monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", terminal)
        load_dataset("cifar10", archive, cache_dir=tmp_path / "cache")
        with progress.quiet_progress():
            load_dataset("cifar10", archive, cache_dir=tmp_path / "other-cache")
        terminal.flush()
        shown = os.read(master, 1 << 16).decode()
    os.close(master)
    assert "cifar10: reading c.tar.gz: 100%|" in shown and "B/s]" in shown, shown
    assert "cifar10: decoding: 100%|" in shown and "30/30 [00:00<00:00" in shown, shown
    assert "image/s]" in shown and shown.count("cifar10: decoding:   0%|") == 1  # once, not -q


def test_cifar10_image_folder_labels_follow_official_order_not_reader_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alphabetical order happens to be CIFAR-10's; a reader giving another order is remapped."""
    assert tuple(sorted(CIFAR10_NAMES)) == CIFAR10_NAMES
    real = cifar10_folder.read_folder

    def shuffled_reader(path: Path, name: str = "folder") -> tuple:
        x_train, y_train, x_test, y_test, names = real(path, name)
        order = [3, 9, 0, 5, 1, 8, 2, 7, 4, 6]  # new label i is old label order[i]
        old_to_new = np.argsort(order)
        return x_train, old_to_new[y_train], x_test, old_to_new[y_test], [names[i] for i in order]

    monkeypatch.setattr(cifar10_folder, "read_folder", shuffled_reader)
    archive = tar_reversed(make_cifar10_folder(tmp_path / "imgs"), tmp_path / "c.tar.gz")
    assert_official_labels(load_dataset("cifar10", archive, cache_dir=tmp_path / "cache"))


def test_cifar10_image_folder_refuses_wrong_classes_size_and_counts(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    names = tuple(n for n in CIFAR10_NAMES if n != "frog") + ("toad",)
    wrong = tar_reversed(make_cifar10_folder(tmp_path / "names", names), tmp_path / "n.tar.gz")
    with pytest.raises(DataError, match=r"missing: frog; unexpected: toad") as info:
        load_dataset("cifar10", wrong, cache_dir=cache)
    assert str(wrong) in str(info.value)
    nine = make_cifar10_folder(tmp_path / "nine", CIFAR10_NAMES[:9])
    nine = tar_reversed(nine, tmp_path / "9.tgz")
    with pytest.raises(DataError, match=r"missing: truck; unexpected: none"):
        load_dataset("cifar10", nine, cache_dir=cache)
    big = make_cifar10_folder(tmp_path / "big", size=(64, 48))
    with pytest.raises(DataError, match=r"expected 32x32 RGB images; found 48x64 RGB"):
        load_dataset("cifar10", tar_reversed(big, tmp_path / "big.tar.gz"), cache_dir=cache)
    gray = make_cifar10_folder(tmp_path / "gray")
    for file in gray.rglob("*.png"):
        Image.open(file).convert("L").save(file)
    with pytest.raises(DataError, match=r"expected 32x32 RGB images; found 32x32 grayscale"):
        load_dataset("cifar10", gray, cache_dir=cache)
    uneven = make_cifar10_folder(tmp_path / "uneven")
    (uneven / "train" / "cat" / "0001.png").unlink()
    with pytest.raises(DataError, match=r"same number of train images .*bird 2, cat 1, deer 2"):
        load_dataset("cifar10", uneven, cache_dir=cache)
    swapped = make_cifar10_folder(tmp_path / "swapped", per_class=(1, 2))
    with pytest.raises(DataError, match=r"20 test images but only 10 train .*swapped"):
        load_dataset("cifar10", swapped, cache_dir=cache)
    assert not list((cache / "datasets").glob("*.npz"))  # nothing refused was cached


def test_cifar10_local_copy_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_download() -> None:
        raise AssertionError("downloaded instead of using the local copy")

    keras = types.SimpleNamespace(cifar10=types.SimpleNamespace(load_data=no_download))
    monkeypatch.setitem(sys.modules, "keras", types.SimpleNamespace(datasets=keras))
    folder = tar_reversed(make_cifar10_folder(tmp_path / "imgs"), tmp_path / "c.tar.gz")
    official = make_cifar10(tmp_path / "official")
    monkeypatch.setenv(CIFAR10_ENV, str(folder))
    from_env = load_dataset("cifar10", None, cache_dir=tmp_path / "cache")
    assert_official_labels(from_env)
    assert str(folder) in from_env.source
    assert load_dataset("cifar10", official).x_train.shape == (100, 32, 32, 3)  # data_dir wins
    monkeypatch.setenv(CIFAR10_ENV, str(official / "cifar-10-python.tar.gz"))  # either format
    assert load_dataset("cifar10").x_train.shape == (100, 32, 32, 3)
    missing = tmp_path / "not-here.tar.gz"
    monkeypatch.setenv(CIFAR10_ENV, str(missing))
    with pytest.raises(DataError, match=f"{CIFAR10_ENV}=.*does not exist") as info:
        load_dataset("cifar10")
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(CIFAR10_ENV, str(empty))
    with pytest.raises(DataError, match=f"found: nothing.*path from {CIFAR10_ENV}"):
        load_dataset("cifar10")


@pytest.mark.parametrize(
    "error",
    [
        OSError("no network"),
        Exception("URL fetch failure on https://example/cifar-10-python.tar.gz: None\n  more"),
    ],
)
def test_cifar10_offline_message_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def offline() -> None:
        raise error

    keras = types.SimpleNamespace(cifar10=types.SimpleNamespace(load_data=offline))
    monkeypatch.setitem(sys.modules, "keras", types.SimpleNamespace(datasets=keras))
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    reason = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    assert message == (
        f"cifar10: could not download it with keras.datasets.cifar10.load_data() ({reason}); "
        "offline, point at a local copy with --data-dir PATH or HPSEARCH_CIFAR10=PATH (the "
        "official cifar-10-python.tar.gz or an image folder/archive train/<class>/*, "
        "test/<class>/*)"
    )
    assert "\n" not in message and "more" not in message


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CIFAR10.is_file(), reason=f"no {SHARED_CIFAR10}")
def test_shared_cifar10_jpeg_copy_loads_in_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The project's local copy (about 25 s to decode once)."""
    with caplog.at_level(logging.WARNING, logger="hpsearch.datasets"):
        dataset = load_dataset("cifar10", SHARED_CIFAR10, cache_dir=tmp_path / "cache")
    assert not caplog.records  # the official counts: no warning
    assert dataset.class_names == CIFAR10_NAMES
    assert dataset.x_train.shape == (50000, 32, 32, 3)
    assert dataset.x_test.shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(dataset.y_train), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(dataset.y_test), [1000] * 10)
    where = SHARED_CIFAR10.resolve()  # the loader names the file it read (links resolved)
    assert dataset.source.startswith(f"cifar10 image folder {where} (50000 train, 10000")
    # per-channel means of the official training set, to within JPEG's error: RGB, not BGR
    means = dataset.x_train.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(means, [125.3, 123.0, 113.9], atol=2.0)


# --- MNIST family ------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = make_mnist(tmp_path / "mnist", gz=gz)
    dataset = load_dataset("mnist", tmp_path / "mnist", cache_dir=tmp_path / "cache")
    assert dataset.x_train.shape == (30, 28, 28, 1) and dataset.x_test.shape == (10, 28, 28, 1)
    assert dataset.x_train.dtype == np.uint8 and dataset.y_test.dtype == np.int64
    np.testing.assert_array_equal(dataset.x_train[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(dataset.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert dataset.class_names == tuple("0123456789")
    fashion = load_dataset("fashion_mnist", tmp_path / "mnist", cache_dir=tmp_path / "cache")
    assert fashion.class_names == FASHION_MNIST_NAMES and fashion.class_names[9] == "Ankle boot"


def test_mnist_corrupt_files_are_data_errors(tmp_path: Path) -> None:
    make_mnist(tmp_path / "m")
    images = tmp_path / "m" / "train-images-idx3-ubyte.gz"
    good = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + good[4:]))
    with pytest.raises(DataError, match="magic number 0x00000803") as info:
        load_dataset("mnist", tmp_path / "m", cache_dir=tmp_path / "cache")
    assert str(images) in str(info.value)
    images.write_bytes(gzip.compress(good[:-5]))
    with pytest.raises(DataError, match="corrupt.*header promises"):
        load_dataset("mnist", tmp_path / "m", cache_dir=tmp_path / "cache")
    images.write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_dataset("mnist", tmp_path / "m", cache_dir=tmp_path / "cache")
    images.unlink()
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz .*found: t10k"):
        load_dataset("mnist", tmp_path / "m", cache_dir=tmp_path / "cache")


# --- image folders -----------------------------------------------------------------------


def test_folder_directory_zip_and_tar_give_identical_arrays(tmp_path: Path) -> None:
    expected = make_folder(tmp_path / "ds")
    sources = {
        "dir": tmp_path / "ds",
        "zip": zip_dir(tmp_path / "ds", tmp_path / "flat.zip"),
        "zip-wrapped": zip_dir(tmp_path / "ds", tmp_path / "wrapped.zip", prefix="mydata/"),
        "tar.gz": tar_dir(tmp_path / "ds", tmp_path / "flat.tar.gz", arcname="."),
        "tgz-wrapped": tar_dir(tmp_path / "ds", tmp_path / "wrapped.tgz", arcname="mydata"),
    }
    fingerprints = set()
    for kind, source in sources.items():
        dataset = load_dataset("folder", source, cache_dir=tmp_path / f"cache-{kind}")
        assert_folder(dataset, expected)
        assert dataset.input_shape == (6, 5, 3) and dataset.source == str(source)
        fingerprints.add(dataset.fingerprint())
    assert len(fingerprints) == 1


def test_folder_grayscale_keeps_one_channel_and_mixed_becomes_rgb(tmp_path: Path) -> None:
    expected = make_folder(tmp_path / "gray", channels=1)
    dataset = load_dataset("folder", tmp_path / "gray", cache_dir=tmp_path / "cache")
    assert dataset.x_train.shape == (12, 6, 5, 1)
    assert_folder(dataset, expected)
    gray = np.full((6, 5), 77, np.uint8)  # one gray image among RGB ones: replicated to RGB
    make_folder(tmp_path / "mixed")
    (tmp_path / "mixed" / "test" / "dog" / "99.png").write_bytes(png_bytes(gray[..., None]))
    mixed = load_dataset("folder", tmp_path / "mixed", cache_dir=tmp_path / "cache")
    assert mixed.x_test.shape == (6, 6, 5, 3)
    assert np.all(mixed.x_test[3] == 77) and mixed.y_test[3] == 1


def test_folder_test_classes_must_be_subset_of_train(tmp_path: Path) -> None:
    make_folder(tmp_path / "ds")
    (tmp_path / "ds" / "test" / "zebra").mkdir()
    (tmp_path / "ds" / "test" / "zebra" / "0.png").write_bytes(
        png_bytes(np.zeros((6, 5, 3), np.uint8))
    )
    with pytest.raises(DataError, match=r"test classes \['zebra'\]"):
        load_dataset("folder", tmp_path / "ds", cache_dir=tmp_path / "cache")


def test_folder_problems_are_data_errors_naming_the_path(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="data_dir is required"):
        load_dataset("folder", None)
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as info:
        load_dataset("folder", missing, cache_dir=cache)
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "test").mkdir()
    with pytest.raises(DataError, match=r"expected images in train/<class>/.*no \.png") as info:
        load_dataset("folder", empty, cache_dir=cache)
    assert str(empty) in str(info.value)
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b" + os.urandom(200))
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"PK\x03\x04 this is no zip")
    make_folder(tmp_path / "ds")
    whole = tar_dir(tmp_path / "ds", tmp_path / "whole.tar.gz").read_bytes()
    truncated = []  # cut in member data, in a header, in the end padding, in the gzip trailer
    for cut in (len(whole) // 2, 700, 300, 40, 4):
        truncated.append(tmp_path / f"truncated-{cut}.tar.gz")
        truncated[-1].write_bytes(whole[:-cut])
    for archive in (garbage, bad_zip, *truncated):
        with pytest.raises(DataError, match="corrupt or truncated") as info:
            load_dataset("folder", archive, cache_dir=cache)
        assert str(archive) in str(info.value)


def test_folder_undecodable_and_mixed_size_images(tmp_path: Path) -> None:
    make_folder(tmp_path / "bad")
    (tmp_path / "bad" / "train" / "dog" / "05.png").write_bytes(b"\x89PNG but broken")
    with pytest.raises(DataError, match="cannot decode image train/dog/05.png") as info:
        load_dataset(
            "folder", zip_dir(tmp_path / "bad", tmp_path / "bad.zip"), cache_dir=tmp_path / "c"
        )
    assert str(tmp_path / "bad.zip") in str(info.value)
    make_folder(tmp_path / "sizes")
    odd = np.zeros((7, 5, 3), np.uint8)
    (tmp_path / "sizes" / "train" / "frog" / "09.png").write_bytes(png_bytes(odd))
    with pytest.raises(DataError, match=r"train/frog/09.png .* is 5x7 pixels; expected 5x6"):
        load_dataset("folder", tmp_path / "sizes", cache_dir=tmp_path / "c")


# --- cache -------------------------------------------------------------------------------


def test_cache_is_reused_then_rebuilt_when_the_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = make_folder(tmp_path / "ds")
    archive = zip_dir(tmp_path / "ds", tmp_path / "ds.zip")
    cache = tmp_path / "cache"
    first = load_dataset("folder", archive, cache_dir=cache)
    files = list((cache / "datasets").glob("folder-*.npz"))
    assert len(files) == 1 and not list((cache / "datasets").glob("*.tmp"))

    def no_decoding(path: Path) -> None:
        raise AssertionError("decoded again instead of reading the cache")

    with monkeypatch.context() as patch:
        patch.setattr(loader, "read_folder", no_decoding)
        second = load_dataset("folder", archive, cache_dir=cache)
    assert second.fingerprint() == first.fingerprint()
    assert_folder(second, expected)

    new = np.full((6, 5, 3), 9, np.uint8)  # change the source: new size and mtime
    (tmp_path / "ds" / "train" / "cat" / "00.png").write_bytes(png_bytes(new))
    zip_dir(tmp_path / "ds", archive)
    third = load_dataset("folder", archive, cache_dir=cache)
    assert np.all(third.x_train[0] == 9)
    assert [f.name for f in (cache / "datasets").glob("folder-*.npz")] != [files[0].name]
    assert len(list((cache / "datasets").glob("folder-*.npz"))) == 1  # the stale one is gone


def test_cache_of_directory_source_sees_new_files(tmp_path: Path) -> None:
    make_folder(tmp_path / "ds")
    first = load_dataset("folder", tmp_path / "ds", cache_dir=tmp_path / "cache")
    (tmp_path / "ds" / "test" / "frog" / "07.png").write_bytes(
        png_bytes(np.zeros((6, 5, 3), np.uint8))
    )
    second = load_dataset("folder", tmp_path / "ds", cache_dir=tmp_path / "cache")
    assert len(second.x_test) == len(first.x_test) + 1


def test_damaged_cache_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    make_mnist(tmp_path / "m")
    first = load_dataset("mnist", tmp_path / "m", cache_dir=tmp_path / "cache")
    (cache_file,) = (tmp_path / "cache" / "datasets").glob("mnist-*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:1000])
    again = load_dataset("mnist", tmp_path / "m", cache_dir=tmp_path / "cache")
    assert again.fingerprint() == first.fingerprint()
    with np.load(cache_file) as npz:  # rewritten whole
        np.testing.assert_array_equal(npz["x_train"], first.x_train)


def test_default_cache_dir_honours_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    make_cifar100(tmp_path / "c100")
    load_dataset("cifar100", tmp_path / "c100")
    assert list((tmp_path / "here" / "datasets").glob("cifar100-*.npz"))
    monkeypatch.delenv("HPSEARCH_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "hpsearch"


# --- Keras downloader fallback and names ---------------------------------------------------


def test_without_data_dir_uses_keras_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28)
    fake = types.SimpleNamespace(
        load_data=lambda: ((images, np.array([0, 1, 2, 3])), (images[:2], np.array([4, 5])))
    )
    monkeypatch.setitem(
        sys.modules,
        "keras",
        types.SimpleNamespace(datasets=types.SimpleNamespace(fashion_mnist=fake)),
    )
    dataset = load_dataset("fashion_mnist")
    assert dataset.x_train.shape == (4, 28, 28, 1) and dataset.y_test.dtype == np.int64
    assert dataset.class_names == FASHION_MNIST_NAMES and dataset.source.startswith("keras")

    def offline() -> None:
        raise OSError("no network")

    fake.load_data = offline
    with pytest.raises(DataError, match="no network.*data_dir"):
        load_dataset("fashion_mnist")


def test_unknown_dataset_name() -> None:
    with pytest.raises(DataError, match="expected one of digits, cifar10"):
        load_dataset("imagenet")
    assert DATASET_NAMES == ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "folder")


def test_fingerprint_is_deterministic_and_sensitive() -> None:
    x = np.zeros((4, 2, 2, 1), np.uint8)
    y = np.array([0, 1, 0, 1], np.int64)
    a = Dataset("t", x, y, x, y, ("a", "b"), "here")
    assert (
        a.fingerprint() == Dataset("t", x.copy(), y.copy(), x, y, ("a", "b"), "there").fingerprint()
    )
    assert len(a.fingerprint()) == 16
    x2 = x.copy()
    x2[3, 1, 1, 0] = 1
    assert Dataset("t", x2, y, x, y, ("a", "b"), "here").fingerprint() != a.fingerprint()
    assert Dataset("t", x, y, x, y, ("a", "c"), "here").fingerprint() != a.fingerprint()
    with pytest.raises(DataError, match="labelled 0..1"):
        Dataset("t", x, y + 1, x, y, ("a", "b"), "here")


# --- splits ------------------------------------------------------------------------------


def balanced(n_per_class: int = 50, classes: int = 4) -> Dataset:
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int64)
    x = np.arange(len(y) * 4, dtype=np.int64).reshape(-1, 2, 2, 1).astype(np.uint8)
    x[:, 0, 0, 0] = np.arange(len(y)) % 256  # recognisable samples
    names = tuple(str(i) for i in range(classes))
    return Dataset("t", x, y, x[::5], y[::5], names, "test")  # 10 a class


def test_split_is_stratified_and_repeatable() -> None:
    dataset = balanced()
    splits = split_dataset(dataset, validation_fraction=0.2, seed=3)
    assert len(splits.x_val) == 40 and len(splits.x_train) == 160
    assert np.all(np.abs(np.bincount(splits.y_val) - 0.2 * 50) <= 1)
    assert splits.x_train.dtype == np.uint8 and splits.y_val.dtype == np.int64
    assert splits.num_classes == 4 and splits.input_shape == (2, 2, 1)
    again = split_dataset(dataset, validation_fraction=0.2, seed=3)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(splits, name), getattr(again, name))
    other = split_dataset(dataset, validation_fraction=0.2, seed=4)
    assert not np.array_equal(other.x_val, splits.x_val)
    np.testing.assert_array_equal(splits.x_test, dataset.x_test)


def test_split_limit_caps_each_split_stratified() -> None:
    splits = split_dataset(balanced(), validation_fraction=0.25, seed=0, limit=20)
    for y in (splits.y_train, splits.y_val, splits.y_test):
        assert len(y) == 20
        np.testing.assert_array_equal(np.bincount(y), [5, 5, 5, 5])
    small = split_dataset(balanced(), validation_fraction=0.25, seed=0, limit=45)
    assert (len(small.y_train), len(small.y_val), len(small.y_test)) == (45, 45, 40)
    with pytest.raises(DataError, match="at least the number of classes"):
        split_dataset(balanced(), limit=3)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True])
def test_split_rejects_bad_validation_fraction(fraction: float) -> None:
    with pytest.raises(DataError, match="validation_fraction"):
        split_dataset(balanced(), validation_fraction=fraction)

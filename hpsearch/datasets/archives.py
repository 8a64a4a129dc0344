"""Reading files out of a directory, zip or tar without extracting them.

Low-level read failures (a truncated archive, a bad gzip stream, a permission error)
become a :class:`~hpsearch.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, cast

from hpsearch.errors import DataError
from hpsearch.util.progress import WorkProgress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@contextmanager
def read_errors(name: str, path: Path) -> Iterator[None]:
    """Turn low-level read failures into a DataError naming ``path``."""
    try:
        yield
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{name}: {path} is corrupt or truncated ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{name}: cannot read {path}: {exc}") from exc


def listing(path: Path, limit: int = 8) -> str:
    """The first entries of a directory, for error messages."""
    entries = sorted(p.name + "/" * p.is_dir() for p in path.iterdir())
    more = f", ... ({len(entries) - limit} more)" if len(entries) > limit else ""
    return ", ".join(entries[:limit]) + more if entries else "nothing"


def tar_files(
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


def is_image(key: str) -> bool:
    """An image file by suffix, outside hidden files/dirs and macOS ``__MACOSX`` debris."""
    parts = PurePosixPath(key).parts
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
    return bool(parts) and not hidden and key.lower().endswith(IMAGE_SUFFIXES)


@contextmanager
def folder_members(path: Path, name: str = "folder") -> Iterator[dict[str, Callable[[], bytes]]]:
    """Image files of a directory, zip or tar as ``{posix path: read}``, never extracted."""
    lower = path.name.lower()
    if path.is_dir():
        files = {f.relative_to(path).as_posix(): f for f in path.rglob("*") if f.is_file()}
        yield {key: file.read_bytes for key, file in files.items() if is_image(key)}
    elif lower.endswith(".zip") or (not lower.endswith(TAR_SUFFIXES) and zipfile.is_zipfile(path)):
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir() and is_image(i.filename)]
            yield {info.filename: partial(archive.read, info) for info in infos}
    elif lower.endswith(TAR_SUFFIXES) or tarfile.is_tarfile(path):
        yield {key: partial(bytes, data) for key, data in tar_files(path, is_image, name)}
    else:
        raise DataError(
            f"{name}: expected a directory, .zip or .tar(.gz) at {path}; got a file of another kind"
        )

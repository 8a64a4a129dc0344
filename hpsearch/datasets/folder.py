"""The image-folder format: ``[prefix/]train/<class>/*`` and ``[prefix/]test/<class>/*``.

Read from a directory, zip or tar and decoded with Pillow into one uint8 array per
split: RGB, or a single channel when every image is grayscale.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from hpsearch.datasets.archives import IMAGE_SUFFIXES, folder_members, read_errors
from hpsearch.datasets.base import Arrays
from hpsearch.errors import DataError
from hpsearch.util.progress import WorkProgress

log = logging.getLogger(__name__)

_GRAY_MODES = ("1", "L", "LA")


def read_folder(path: Path, name: str = "folder") -> Arrays:
    """Decode ``[prefix/]train/<class>/*`` and ``[prefix/]test/<class>/*`` with Pillow.

    Classes are the train/ folder names, sorted; ``name`` prefixes error messages.
    """
    with read_errors(name, path), folder_members(path, name) as members:
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

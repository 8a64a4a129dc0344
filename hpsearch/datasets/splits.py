"""Train, validation and test splits of a :class:`Dataset`, stratified and repeatable."""

from __future__ import annotations

import numpy as np

from hpsearch.datasets.base import Dataset, Splits
from hpsearch.errors import DataError


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

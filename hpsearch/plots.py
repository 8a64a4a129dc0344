"""Figures logged with every trial: training curves and the confusion matrix.

Drawn on :class:`matplotlib.figure.Figure` objects, not through ``pyplot``:
no global figure registry, so they can be drawn on the uploader's thread
while the next trial trains. Margins are fixed rather than computed by a
layout engine, which would draw each figure twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

DPI = 80


def save_training_curves(history: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, training and validation, side by side."""
    fig = Figure(figsize=(10, 4), dpi=DPI)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.95, wspace=0.28)
    fig.savefig(path)
    return path


def save_confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> Path:
    """scikit-learn's confusion-matrix display, rows = true class."""
    size = max(5.0, 0.6 * len(class_names))
    fig = Figure(figsize=(size, size), dpi=DPI)
    ax = fig.subplots()
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(len(class_names))),
        display_labels=list(class_names),
        xticks_rotation="vertical",
        colorbar=False,
        ax=ax,
    )
    ax.set_title(title)
    longest = max((len(str(name)) for name in class_names), default=1)
    margin = min(0.35, 0.06 + 0.012 * longest)  # room for the class names
    fig.subplots_adjust(left=margin, bottom=margin, right=0.97, top=0.94)
    fig.savefig(path)
    return path

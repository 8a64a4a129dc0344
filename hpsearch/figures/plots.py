"""Figures logged with every trial: training curves and the confusion matrix.

Drawn on :class:`matplotlib.figure.Figure` objects, not through ``pyplot``:
no global figure registry, so they can be drawn on the uploader's thread
while the next trial trains. Margins are fixed rather than computed by a
layout engine, which would draw each figure twice.

Also the small helpers every hpsearch figure uses: whole-number epoch ticks,
and long ``key=value, ...`` settings shortened with a key.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay

DPI = 80
KEPT_STYLE = {"color": "0.3", "linestyle": "--", "linewidth": 1.2}  # the kept epoch's line

#: Short names of the config keys studies search (figures only; the key says what they are).
SHORT_KEYS = {
    "activation": "act",
    "architecture": "arch",
    "augmentation": "aug",
    "batch_norm": "bn",
    "batch_norm_momentum": "bn_mom",
    "batch_size": "bs",
    "dropout": "drop",
    "dropout_placement": "drop_at",
    "epochs": "ep",
    "kernel_initializer": "init",
    "learning_rate": "lr",
    "lr_schedule": "lr_sched",
    "momentum": "mom",
    "optimizer": "opt",
    "optimizer_switch": "opt_switch",
    "patience": "pat",
    "weight_decay": "wd",
    "weight_decay_magnitude": "wd_mag",
}


def integer_epochs(ax: Axes) -> None:
    """Epoch ticks at whole numbers only (1, 2, 3, never 1.5)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def shorten_settings(settings: Sequence[str], width: int = 48) -> tuple[list[str], str]:
    """``key=value, ...`` labels as short as they can be read, and the key to them.

    When any label is longer than ``width``, config keys become their short names
    (``learning_rate`` -> ``lr``) and each label is wrapped at ``width``; the key
    (``"lr = learning_rate, ..."``, wrapped too) names the short names used, or is
    empty when none was needed.
    """
    if all(len(setting) <= width for setting in settings):
        return list(settings), ""
    used: dict[str, str] = {}
    labels = []
    for setting in settings:
        pairs = []
        for pair in setting.split(", "):
            key, sep, value = pair.partition("=")
            short = SHORT_KEYS.get(key, key) if sep else key
            if short != key:
                used[short] = key
            pairs.append(f"{short}{sep}{value}")
        labels.append("\n".join(textwrap.wrap(", ".join(pairs), width, break_on_hyphens=False)))
    entries = [f"{short} = {key}" for short, key in sorted(used.items())]
    lines = [""]
    for entry in entries:  # wrapped between entries, never inside one
        if lines[-1] and len(lines[-1]) + len(entry) + 2 > width:
            lines[-1] += ","
            lines.append("")
        lines[-1] += (", " if lines[-1] else "") + entry
    return labels, "\n".join(lines) if entries else ""


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False))


def training_curves_figure(
    history: Mapping[str, Sequence[float]], best_epoch: int | None = None, title: str = ""
) -> Figure:
    """Loss and accuracy per epoch, training and validation, side by side.

    ``best_epoch`` (1-based), the epoch whose weights were kept, is marked on both.
    """
    fig = Figure(figsize=(10, 4.4), dpi=DPI)
    axes = fig.subplots(1, 2)
    epochs = max((len(history.get(k) or ()) for k in ("loss", "val_loss")), default=0)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        if best_epoch:
            ax.axvline(best_epoch, label=f"kept weights (epoch {best_epoch})", **KEPT_STYLE)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric.capitalize(), fontsize="medium")
        integer_epochs(ax)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # one legend for both, under them
        fig.legend(handles, labels, loc="lower center", ncols=len(handles), frameon=False)
    if not title:
        title = "Loss and accuracy per epoch"
        if best_epoch:
            title += f"; the weights kept are epoch {best_epoch}'s (of {epochs})"
    fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.22, top=0.84, wspace=0.28)
    return fig


def save_training_curves(
    history: Mapping[str, Sequence[float]],
    path: Path,
    best_epoch: int | None = None,
    title: str = "",
) -> Path:
    """:func:`training_curves_figure`, saved to ``path``."""
    training_curves_figure(history, best_epoch, title).savefig(path)
    return path


def confusion_matrix_figure(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], title: str
) -> Figure:
    """scikit-learn's confusion-matrix display, rows = true class, with a colour bar of counts."""
    size = max(5.0, 0.6 * len(class_names))
    fig = Figure(figsize=(size + 1.0, size + 0.3), dpi=DPI)
    ax = fig.subplots()
    display = ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(len(class_names))),
        display_labels=list(class_names),
        xticks_rotation="vertical",
        colorbar=True,
        ax=ax,
    )
    display.im_.colorbar.set_label("images")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(wrap(f"Confusion matrix: {title}", int(9 * size)))
    longest = max((len(str(name)) for name in class_names), default=1)
    margin = min(0.35, 0.08 + 0.012 * longest)  # room for the class names
    fig.subplots_adjust(left=margin, bottom=margin, right=0.97, top=0.9)
    return fig


def save_confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> Path:
    """:func:`confusion_matrix_figure`, saved to ``path``."""
    confusion_matrix_figure(y_true, y_pred, class_names, title).savefig(path)
    return path


def state_handles(states: Sequence[str], kept: bool = True) -> list[Line2D]:
    """Legend entries for how trials of each outcome (and the kept epoch) are drawn."""
    handles = [Line2D([], [], color="0.3", label=state, **STATE_STYLE[state]) for state in states]
    if kept:
        handles.append(Line2D([], [], label="kept weights (best epoch)", **KEPT_MARKER))
    return handles


# how a trial of each outcome is drawn in the study's figures
STATE_STYLE: dict[str, dict[str, Any]] = {
    "complete": {"linestyle": "-", "marker": "o", "markersize": 4, "linewidth": 1.8},
    "pruned": {"linestyle": "--", "marker": "x", "markersize": 6, "linewidth": 1.0},
    "failed": {"linestyle": ":", "marker": "s", "markersize": 5, "linewidth": 1.0,
               "markerfacecolor": "none"},
}  # fmt: skip
KEPT_MARKER: dict[str, Any] = {  # the kept epoch's point
    "marker": "*", "markersize": 13, "markeredgecolor": "black", "markeredgewidth": 0.6,
    "linestyle": "none", "color": "gold",
}  # fmt: skip

"""A trial's artifacts: what they are made of, and making them.

The training curves, the validation confusion matrix (which runs the model on
the validation split), the model summary, the config, the inference model and
its class names. :class:`_TrialArtifacts` takes what they need from a trial
as it ends; :func:`_remake_from_model` makes again, from a kept model, the
ones a dead worker had not written (:mod:`hpsearch.tracking.spool`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

if TYPE_CHECKING:
    from hpsearch.config import TrialConfig
    from hpsearch.datasets import Splits
    from hpsearch.figures.drawing import DrawingProcess
    from hpsearch.training.runner import TrialResult

TRIAL_ARTIFACTS = (
    "training_curves.png",
    "confusion_matrix.png",
    "model_summary.txt",
    "config.yaml",
    "model.keras",
    "class_names.json",  # what each of the model's outputs is (index -> class, e.g. a folder)
)


@dataclass(frozen=True)
class ValidationData:
    """The validation split a trial's confusion matrix is drawn from, and what names it."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    fingerprint: str  # the dataset's (hpsearch.data_fingerprint)

    @classmethod
    def of(cls, splits: Splits, fingerprint: str) -> ValidationData:
        return cls(splits.x_val, splits.y_val, tuple(splits.class_names), fingerprint)

    def key(self) -> str:
        """The dataset and this split of it (the same limit, seed and size give the same key)."""
        import hashlib

        labels = hashlib.sha1(np.ascontiguousarray(self.labels).tobytes()).hexdigest()[:16]
        return f"{self.fingerprint}/{self.images.shape}/{labels}"


def _remake_from_model(folder: Path, validation: ValidationData, best_epoch: int) -> None:
    """The confusion matrix and model summary a dead worker had not written, from its model."""
    from hpsearch.figures.plots import save_confusion_matrix
    from hpsearch.training.runner import predict

    matrix, summary = folder / "confusion_matrix.png", folder / "model_summary.txt"
    if matrix.exists() and summary.exists():
        return
    network = keras.saving.load_model(folder / "model.keras", compile=False)
    if not matrix.exists():
        predicted = np.argmax(predict(network, validation.images), axis=1)
        save_confusion_matrix(validation.labels, predicted, validation.class_names, matrix,
                              title=f"validation (best epoch {best_epoch})")  # fmt: skip
    if not summary.exists():  # the inference network's: the augmentation layers are not kept
        lines = io.StringIO()
        network.summary(print_fn=lambda line, **_: lines.write(line + "\n"))
        summary.write_text(lines.getvalue())


@dataclass
class _TrialArtifacts:
    """What a trial's artifacts are made of, taken from the trial as it ends.

    The model and config are kept at once (:meth:`keep`, into the spool); the
    validation predictions behind the confusion matrix are made, the figures
    drawn and the summary written from this (:meth:`write`), possibly on the
    uploader's thread while the next trial already trains.
    """

    history: dict[str, list[float]]
    val_images: np.ndarray
    val_labels: np.ndarray
    class_names: tuple[str, ...]
    best_epoch: int
    config_yaml: str
    model: keras.Model  # the trained model, augmentation layers included (its summary)
    network: keras.Model  # the inference network, augmentation layers removed

    @classmethod
    def of(cls, result: TrialResult, config: TrialConfig, splits: Splits) -> _TrialArtifacts:
        from hpsearch.model.builder import inference_model

        return cls(
            history=result.history,
            val_images=splits.x_val,
            val_labels=splits.y_val,
            class_names=tuple(splits.class_names),
            best_epoch=result.best_epoch,
            config_yaml=config.to_yaml(),
            model=result.model,
            network=inference_model(result.model, config),
        )

    def keep(self, folder: Path) -> None:
        """The config, the inference model and its class names (the files the other
        artifacts cannot remake)."""
        (folder / "config.yaml").write_text(self.config_yaml)
        (folder / "class_names.json").write_text(json.dumps(list(self.class_names)))
        from hpsearch.model.export import model_metadata, save_model

        shape = self.val_images.shape[1:]
        save_model(self.network, folder / "model.keras", model_metadata(self.class_names, shape))

    def write(self, folder: Path, drawer: DrawingProcess | None = None) -> list[Path]:
        """Curves, validation confusion matrix, model summary; config and model when not kept.

        The two figures are drawn by ``drawer`` when there is one, else here;
        the summary is written while the drawing process draws them.
        """
        from hpsearch.figures.plots import save_confusion_matrix, save_training_curves
        from hpsearch.training.runner import predict

        submit = drawer.submit if drawer is not None else _drawn_here
        predicted = np.argmax(predict(self.network, self.val_images), axis=1)  # the kept weights
        matrix = submit(  # the larger request first, while the drawing process is idle
            save_confusion_matrix,
            self.val_labels,
            predicted,
            self.class_names,
            folder / "confusion_matrix.png",
            title=f"validation (best epoch {self.best_epoch})",
        )
        curves = submit(save_training_curves, self.history, folder / "training_curves.png",
                        self.best_epoch)  # fmt: skip
        summary = io.StringIO()
        self.model.summary(print_fn=lambda line, **_: summary.write(line + "\n"))
        (folder / "model_summary.txt").write_text(summary.getvalue())
        if not (folder / "model.keras").exists():
            self.keep(folder)
        return [
            curves(),
            matrix(),
            folder / "model_summary.txt",
            folder / "config.yaml",
            folder / "model.keras",
            folder / "class_names.json",
        ]


def _drawn_here(function: Callable[..., Path], *args, **kwargs) -> Callable[[], Path]:
    """A figure drawn in this process now, in the shape of ``DrawingProcess.submit``'s answer."""
    path = function(*args, **kwargs)
    return lambda: path

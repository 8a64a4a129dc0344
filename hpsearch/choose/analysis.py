"""Error analysis of a final model on the test set.

Per-class accuracy, the most confused class pairs, a gallery of misclassified
images and Grad-CAM class activation maps. Uses only numpy, scikit-learn,
matplotlib and ``keras``/``keras.ops`` (no TensorFlow API, no backend-specific
gradients), so it runs on the JAX backend too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import confusion_matrix, recall_score  # noqa: E402

from hpsearch.figures.plots import wrap  # noqa: E402
from hpsearch.model.builder import rewire  # noqa: E402


def per_class_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, float]:
    """Recall per class: the fraction of each true class predicted right.

    Every class name is a key; a class absent from ``y_true`` maps to ``nan``. This is
    scikit-learn's ``recall_score(average=None)``, run once per final model.
    """
    recall = recall_score(
        np.ravel(y_true), np.ravel(y_pred), labels=list(range(len(class_names))),
        average=None, zero_division=np.nan,
    )  # fmt: skip
    return {name: float(value) for name, value in zip(class_names, recall, strict=True)}


def confused_pairs(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], top: int = 5
) -> list[tuple[str, str, int]]:
    """The ``top`` most frequent confusions as ``(true, predicted, count)``, largest first.

    Off-diagonal cells of the confusion matrix with a count above zero only;
    ties keep the row-major (true, predicted) order.
    """
    n = len(class_names)
    matrix = confusion_matrix(np.ravel(y_true), np.ravel(y_pred), labels=list(range(n)))
    np.fill_diagonal(matrix, 0)
    pairs = [(int(matrix[t, p]), t, p) for t in range(n) for p in range(n) if matrix[t, p] > 0]
    pairs.sort(key=lambda item: -item[0])  # stable: ties stay row-major
    return [(class_names[t], class_names[p], count) for count, t, p in pairs[: max(top, 0)]]


def _show(ax, image: np.ndarray) -> None:
    """Draw one raw image (H, W, C) with C in {1, 3}, or (H, W); grayscale in gray."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        top = 255 if image.dtype == np.uint8 else max(float(image.max()), 1.0)
        ax.imshow(image, cmap="gray", vmin=0, vmax=top)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return Path(path)


def _message(text: str, title: str) -> Figure:
    fig = Figure(figsize=(5, 2), layout="constrained")
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def misclassified_figure(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    limit: int = 25,
) -> Figure:
    """A grid of up to ``limit`` misclassified images, titled ``true -> pred (p=0.87)``.

    ``p`` is the model's probability for the (wrong) predicted class. With no
    misclassified image the figure says so.
    """
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    every = np.flatnonzero(y_true != y_pred)
    wrong = every[: max(limit, 0)]
    if wrong.size == 0:
        return _message("No misclassified images", f"Misclassified images: none of {y_true.size}")
    cols = math.ceil(math.sqrt(wrong.size))
    rows = math.ceil(wrong.size / cols)
    fig = Figure(figsize=(max(2.2 * cols, 5.0), 2.4 * rows + 0.7), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, i in zip(axes.ravel(), wrong, strict=False):
        ax.set_axis_on()
        _show(ax, images[i])
        p = float(probabilities[i, y_pred[i]])
        ax.set_title(
            f"{class_names[y_true[i]]} -> {class_names[y_pred[i]]} (p={p:.2f})", fontsize=8
        )
    shown = "" if wrong.size == every.size else f", the first {wrong.size} shown"
    fig.suptitle(wrap(f"Misclassified images: {every.size} of {y_true.size}{shown}; true class "
                      "-> predicted class (p: the model's probability for its prediction)",
                      int(12 * max(2.2 * cols, 5.0))))  # fmt: skip
    return fig


def save_misclassified_gallery(
    images: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    limit: int = 25,
) -> Path:
    """:func:`misclassified_figure`, saved to ``path``."""
    figure = misclassified_figure(images, y_true, y_pred, probabilities, class_names, limit)
    return _save(figure, path)


GLOBAL_POOLS = (keras.layers.GlobalMaxPooling2D, keras.layers.GlobalAveragePooling2D)


def _linear_head(model: keras.Model) -> tuple[keras.layers.Layer, bool, keras.layers.Dense]:
    """(feature layer, its input?, output Dense) for a head that is linear up to the softmax.

    Two heads qualify: the last MaxPooling2D, then only Dropout, a Flatten and the
    Dense (the reference networks; the features are that pooling's output); or a
    global pooling straight into the Dense (resnet9; the features are the global
    pooling's input).
    """
    dense = model.layers[-1]
    before = model.layers[-2] if len(model.layers) > 1 else None
    if isinstance(dense, keras.layers.Dense) and isinstance(before, GLOBAL_POOLS):
        _channels_last(before)
        return before, True, dense
    pools = [
        i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.MaxPooling2D)
    ]
    if not pools:
        raise ValueError(f"Grad-CAM needs a MaxPooling2D layer; model {model.name!r} has none")
    pool = model.layers[pools[-1]]
    _channels_last(pool)
    between = model.layers[pools[-1] + 1 : -1]
    if (
        not isinstance(dense, keras.layers.Dense)
        or not between
        or not isinstance(between[-1], keras.layers.Flatten)
        or not all(isinstance(layer, keras.layers.Dropout) for layer in between[:-1])
    ):
        kinds = " -> ".join(type(layer).__name__ for layer in model.layers[pools[-1] :])
        raise ValueError(
            "Grad-CAM needs the model's last layer to be a Dense fed through a Flatten "
            "(only Dropout allowed after the last MaxPooling2D) or through a global "
            f"pooling; got {kinds}"
        )
    return pool, False, dense


def _channels_last(pool: keras.layers.Layer) -> None:
    if getattr(pool, "data_format", "channels_last") != "channels_last":
        raise ValueError(f"Grad-CAM needs channels_last pooling; {pool.name!r} is channels_first")


def _features(
    model: keras.Model, layer: keras.layers.Layer, its_input: bool, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(the input or output of ``layer``, probabilities) for ``images``, inference mode.

    The model's graph is wired again (:func:`~hpsearch.model.builder.rewire`), taking
    the tensor at ``layer`` on the way. ``layer.output`` itself
    would name another model's tensor where the layers are shared (an exported
    inference model shares the trained model's layers).
    """
    taken: dict[str, object] = {}

    def call(called, *args, **kwargs):
        output = called(*args, **kwargs)
        if called is layer:
            taken["features"] = args[0] if its_input else output
        return output

    clone = rewire(model, call)
    probe = keras.Model(clone.input, [taken["features"], clone.outputs[0]])
    features, probabilities = probe(images, training=False)
    return keras.ops.convert_to_numpy(features), keras.ops.convert_to_numpy(probabilities)


def grad_cam_maps(
    model: keras.Model, images: np.ndarray, class_indices: np.ndarray | None = None
) -> np.ndarray:
    """Grad-CAM maps (N, h, w) in [0, 1] at the resolution of the last feature map.

    The head is linear up to the softmax, so the gradient of the pre-softmax
    logit ``z_k`` with respect to the feature map ``A`` is known in closed form,
    with no backend autodiff:

    * Flatten head (Dropout is the identity at inference, then Flatten -> Dense):
      ``z_k = sum A[h, w, c] * W[h, w, c, k] + b_k``, so ``dz_k/dA = W[..., k]``
      and ``alpha_c = mean_{h,w} W[h, w, c, k]``, with ``A`` the last pooling's output;
    * global pooling head: ``z_k = sum_c pool(A)[c] * W[c, k] + b_k``, whose gradient
      averaged over positions is ``W[c, k] / (h * w)`` for max and average pooling
      alike, so ``alpha_c`` is proportional to ``W[c, k]`` (the CAM of Zhou et al.).

    Then ``cam = relu(sum_c alpha_c A[..., c])``, each map divided by its maximum
    (an all-zero map stays zero). ``class_indices`` defaults to the model's
    predicted class for each image.
    """
    layer, its_input, dense = _linear_head(model)
    features, probabilities = _features(model, layer, its_input, np.asarray(images))
    features = np.asarray(features, dtype=np.float64)  # (N, h, w, c)
    n, h, w, c = features.shape
    kernel = np.asarray(keras.ops.convert_to_numpy(dense.kernel), dtype=np.float64)
    if its_input:
        alphas_by_class = kernel / (h * w)  # (c, k)
    else:
        # Flatten is row-major over (h, w, c)
        alphas_by_class = kernel.reshape(h, w, c, -1).mean(axis=(0, 1))
    if class_indices is None:
        class_indices = np.argmax(probabilities, axis=-1)
    class_indices = np.broadcast_to(np.asarray(class_indices, dtype=int), (n,))
    if np.any((class_indices < 0) | (class_indices >= kernel.shape[-1])):
        raise ValueError(f"class_indices must lie in [0, {kernel.shape[-1]})")
    alphas = alphas_by_class[:, class_indices].T  # (N, c)
    cams = np.maximum(np.einsum("nhwc,nc->nhw", features, alphas), 0.0)
    peaks = cams.max(axis=(1, 2), keepdims=True)
    cams = np.divide(cams, peaks, out=np.zeros_like(cams), where=peaks > 0)
    return cams.astype(np.float32)


def grad_cam(
    model: keras.Model, images: np.ndarray, class_indices: np.ndarray | None = None
) -> np.ndarray:
    """Grad-CAM class activation maps (N, H, W) in [0, 1] at input resolution.

    Computes :func:`grad_cam_maps` (gradient in closed form, since the head
    is linear up to the softmax) and upsamples them
    bilinearly to the images' height and width with ``keras.ops.image.resize``.
    """
    images = np.asarray(images)
    cams = grad_cam_maps(model, images, class_indices)
    resized = keras.ops.image.resize(
        cams[..., None],
        images.shape[1:3],
        interpolation="bilinear",
        antialias=False,
        data_format="channels_last",
    )
    return np.clip(keras.ops.convert_to_numpy(resized)[..., 0], 0.0, 1.0).astype(np.float32)


CAM_PAIRS_A_ROW = 4  # image and overlay side by side, this many pairs a row


def grad_cam_figure(
    images: np.ndarray,
    heatmaps: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
) -> Figure:
    """Each image beside its heatmap overlaid on it (jet, alpha 0.5), with a colour bar;
    the pairs whose prediction is wrong are titled in red."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    n = len(images)
    if n == 0:
        return _message("No images", "Grad-CAM: no images")
    per_row = min(n, CAM_PAIRS_A_ROW)
    rows = math.ceil(n / per_row)
    fig = Figure(figsize=(2.3 * per_row * 2 + 1.2, 2.5 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, 2 * per_row, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    overlay = None
    for i in range(n):
        row, col = divmod(i, per_row)
        left, right = axes[row, 2 * col], axes[row, 2 * col + 1]
        wrong = y_true[i] != y_pred[i]
        colour = "tab:red" if wrong else "black"
        for ax in (left, right):
            ax.set_axis_on()
            _show(ax, images[i])
        overlay = right.imshow(heatmaps[i], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        left.set_title(f"true {class_names[y_true[i]]}\npred {class_names[y_pred[i]]}"
                       + (" (wrong)" if wrong else ""), fontsize=8, color=colour)  # fmt: skip
        right.set_title("Grad-CAM of\nthe prediction", fontsize=8, color=colour)
    if overlay is not None:  # n > 0: always
        fig.colorbar(overlay, ax=axes, shrink=0.8, label="Grad-CAM (1: the image's strongest)")
    fig.suptitle("Grad-CAM: where in each image the network found the evidence for the class "
                 "it predicted")  # fmt: skip
    return fig


def save_grad_cam(
    images: np.ndarray,
    heatmaps: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    path: Path,
) -> Path:
    """:func:`grad_cam_figure`, saved to ``path``."""
    return _save(grad_cam_figure(images, heatmaps, y_true, y_pred, class_names), path)

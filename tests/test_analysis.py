"""Error analysis: per-class accuracy, confusions, galleries and Grad-CAM."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import run_under_jax

from hpsearch.choose.analysis import (
    confused_pairs,
    grad_cam,
    grad_cam_maps,
    per_class_accuracy,
    save_grad_cam,
    save_misclassified_gallery,
)
from hpsearch.config import make_config
from hpsearch.model.builder import build_network, inference_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["cat", "dog", "bird"]


def assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert len(data) > 100
    assert data[:8] == PNG_SIGNATURE


def baseline1(shape: tuple[int, int, int], classes: int = 3, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_network(make_config({"architecture": "baseline1"}), shape, classes)


def images(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


# --- per-class accuracy and confusions ---------------------------------------------------------

Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 2, 1, 0, 0, 1, 1, 1])


def test_per_class_accuracy_is_recall_per_class():
    result = per_class_accuracy(Y_TRUE, Y_PRED, NAMES)
    assert list(result) == NAMES
    assert result["cat"] == pytest.approx(0.5)
    assert result["dog"] == pytest.approx(1 / 3)
    assert result["bird"] == 0.0


def test_per_class_accuracy_keeps_absent_classes_as_nan():
    result = per_class_accuracy(np.array([0, 0, 1]), np.array([0, 1, 1]), NAMES + ["fish"])
    assert result["cat"] == 0.5 and result["dog"] == 1.0
    assert math.isnan(result["bird"]) and math.isnan(result["fish"])


def _per_class_accuracy_by_hand(y_true, y_pred, names):
    """The numpy loop scikit-learn's recall_score replaced, kept to check the two agree."""
    y_true, y_pred = np.ravel(y_true), np.ravel(y_pred)
    return {
        name: float(np.mean(y_pred[y_true == i] == i)) if (y_true == i).any() else float("nan")
        for i, name in enumerate(names)
    }


@pytest.mark.parametrize("seed", range(5))
def test_per_class_accuracy_matches_the_hand_written_loop_it_replaced(seed):
    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(10)]
    y_true = rng.integers(0, 8, 500)  # classes 8 and 9 absent: nan
    y_pred = np.where(rng.random(500) < 0.6, y_true, rng.integers(0, 11, 500))  # 10: no class
    got = per_class_accuracy(y_true.reshape(-1, 1), y_pred, names)
    want = _per_class_accuracy_by_hand(y_true, y_pred, names)
    assert list(got) == names
    assert all(type(v) is float for v in got.values())
    np.testing.assert_array_equal(list(got.values()), list(want.values()))  # nan == nan here


def test_confused_pairs_largest_first_without_zero_counts():
    pairs = confused_pairs(Y_TRUE, Y_PRED, NAMES)
    # off-diagonal: bird->dog 3, dog->cat 2, cat->dog 1, cat->bird 1; ties row-major
    assert pairs == [("bird", "dog", 3), ("dog", "cat", 2), ("cat", "dog", 1), ("cat", "bird", 1)]
    assert confused_pairs(Y_TRUE, Y_PRED, NAMES, top=2) == pairs[:2]
    assert confused_pairs(Y_TRUE, Y_TRUE, NAMES) == []


# --- figures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_misclassified_gallery_is_a_png(tmp_path, channels):
    x = images(10, (8, 8, channels))
    probabilities = np.full((10, 3), 1 / 3)
    path = save_misclassified_gallery(
        x, Y_TRUE, Y_PRED, probabilities, NAMES, tmp_path / "gallery.png", limit=4
    )
    assert path == tmp_path / "gallery.png"
    assert_png(path)


def test_gallery_without_mistakes_still_writes_a_figure(tmp_path):
    x = images(3, (8, 8, 3))
    y = np.array([0, 1, 2])
    path = save_misclassified_gallery(x, y, y, np.eye(3), NAMES, tmp_path / "none.png")
    assert_png(path)


@pytest.mark.parametrize("channels", [1, 3])
def test_grad_cam_figure_is_a_png(tmp_path, channels):
    model = baseline1((8, 8, channels))
    x = images(3, (8, 8, channels))
    heatmaps = grad_cam(model, x)
    path = save_grad_cam(x, heatmaps, [0, 1, 2], [0, 2, 2], NAMES, tmp_path / "cam.png")
    assert_png(path)


# --- Grad-CAM ----------------------------------------------------------------------------------


def test_grad_cam_shape_and_range():
    model = baseline1((8, 8, 3))
    cams = grad_cam(model, images(5, (8, 8, 3)))
    assert cams.shape == (5, 8, 8)
    assert cams.dtype == np.float32
    assert np.all((cams >= 0) & (cams <= 1))
    assert np.all(np.isfinite(cams))


def test_grad_cam_matches_the_closed_form_computed_by_hand():
    model = baseline1((8, 8, 1), classes=4, seed=3)
    dense = model.get_layer("probabilities")
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(2 * 2 * 64, 4)).astype("float32")
    bias = rng.normal(size=4).astype("float32")
    dense.set_weights([kernel, bias])
    x = images(4, (8, 8, 1), seed=2)

    pooled = keras.Model(model.inputs, model.get_layer("block2_pool").output)
    a = np.asarray(pooled.predict(x, verbose=0), dtype=np.float64)  # (4, 2, 2, 64)
    w = kernel.astype(np.float64).reshape(2, 2, 64, 4)
    # the head is linear: these logits reproduce the model's probabilities
    logits = np.einsum("nhwc,hwck->nk", a, w) + bias
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), softmax, rtol=1e-4, atol=1e-6)

    classes = np.array([0, 1, 2, 3])
    expected = np.zeros((4, 2, 2))
    for i, k in enumerate(classes):
        alpha = w[..., k].mean(axis=(0, 1))  # gradient dz_k/dA = W[..., k], averaged
        cam = np.maximum((a[i] * alpha).sum(axis=-1), 0.0)
        expected[i] = cam / cam.max() if cam.max() > 0 else cam
    low = grad_cam_maps(model, x, classes)
    np.testing.assert_allclose(low, expected, rtol=1e-4, atol=1e-5)

    # default class = the predicted one
    predicted = np.argmax(softmax, axis=1)
    np.testing.assert_allclose(grad_cam_maps(model, x), grad_cam_maps(model, x, predicted))

    # upsampled 4x (bilinear, half-pixel centres): each 2x2 corner of the 8x8 map is exactly
    # the pooled cell under it, and no value leaves the low-resolution range
    high = grad_cam(model, x, classes)
    assert high.shape == (4, 8, 8)
    for row, rows in ((0, slice(0, 2)), (1, slice(6, 8))):
        for col, cols in ((0, slice(0, 2)), (1, slice(6, 8))):
            corner = high[:, rows, cols].reshape(4, -1)
            np.testing.assert_allclose(corner, expected[:, row, col, None].repeat(4, 1), atol=1e-5)
    assert np.all(high.max(axis=(1, 2)) <= expected.max(axis=(1, 2)) + 1e-5)
    assert np.all(high.min(axis=(1, 2)) >= expected.min(axis=(1, 2)) - 1e-5)


@pytest.mark.slow
def test_grad_cam_of_a_global_pooling_head_is_the_class_weighted_last_feature_map():
    # resnet9: residual blocks, then global max pooling straight into the Dense
    config = make_config({"architecture": "resnet9", "batch_norm": "before", "dropout": 0.2})
    model = build_network(config, (8, 8, 3), 3)
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(512, 3)).astype("float32")
    model.get_layer("probabilities").set_weights([kernel, np.zeros(3, "float32")])
    x = images(3, (8, 8, 3), seed=6)
    features = keras.Model(model.inputs, model.get_layer("global_pool").input)
    a = np.asarray(features.predict(x, verbose=0), dtype=np.float64)  # (3, 1, 1, 512)
    logits = a.max(axis=(1, 2)) @ kernel.astype(np.float64)
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
        rtol=1e-4,
        atol=1e-6,
    )
    classes = np.array([0, 1, 2])
    expected = np.maximum(np.einsum("nhwc,cn->nhw", a, kernel[:, classes]), 0.0)
    peaks = expected.max(axis=(1, 2), keepdims=True)
    expected = np.divide(expected, peaks, out=np.zeros_like(expected), where=peaks > 0)
    np.testing.assert_allclose(grad_cam_maps(model, x, classes), expected, atol=1e-5)
    assert grad_cam(model, x).shape == (3, 8, 8)


def test_grad_cam_reads_an_exported_model_that_shares_the_trained_layers():
    config = make_config({"architecture": "resnet9", "augmentation": "standard"})
    model = build_network(config, (16, 16, 3), 3)
    exported = inference_model(model, config)
    x = images(2, (16, 16, 3), seed=1)
    np.testing.assert_allclose(grad_cam_maps(exported, x), grad_cam_maps(model, x), atol=1e-6)


def test_grad_cam_depends_on_the_class():
    model = baseline1((8, 8, 3), classes=3, seed=5)
    x = images(4, (8, 8, 3), seed=4)
    maps = [grad_cam_maps(model, x, np.full(4, k)) for k in range(3)]
    assert not np.allclose(maps[0], maps[1]) or not np.allclose(maps[0], maps[2])
    assert not np.allclose(
        grad_cam(model, x, np.zeros(4, int)), grad_cam(model, x, np.ones(4, int))
    )


def test_grad_cam_rejects_a_model_without_pooling():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, padding="same")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(ValueError, match="MaxPooling2D"):
        grad_cam(model, images(1, (8, 8, 1)))


def test_grad_cam_rejects_a_non_linear_head():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(2, 3, padding="same")(inputs))
    x = keras.layers.Dense(4, activation="relu")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    with pytest.raises(ValueError, match="Dense fed through a Flatten .* or through a global"):
        grad_cam(model, images(1, (8, 8, 1)))


@pytest.mark.slow
def test_grad_cam_runs_on_the_jax_backend():
    run_under_jax(
        """
        import keras, numpy as np
        assert keras.backend.backend() == "jax", keras.backend.backend()
        from hpsearch.choose.analysis import grad_cam
        from hpsearch.model.builder import build_network
        from hpsearch.config import make_config
        model = build_network(make_config({"architecture": "baseline1"}), (8, 8, 1), 3)
        x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
        cams = grad_cam(model, x)
        assert cams.shape == (2, 8, 8) and cams.min() >= 0 and cams.max() <= 1, cams
        print("ok")
        """,
        timeout=60,
    )

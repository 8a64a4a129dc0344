"""The model builder: every factor changes the built model as intended."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from conftest import run_under_jax

from hpsearch.config import make_config
from hpsearch.errors import ConfigError
from hpsearch.model.builder import build_model, build_network, inference_model, with_mirror_average

SHAPE = (16, 16, 3)


def layer_kinds(model: keras.Model, prefix: str) -> list[str]:
    return [type(layer).__name__ for layer in model.layers if layer.name.startswith(prefix)]


def network(**values) -> keras.Model:
    return build_network(make_config(values), SHAPE, 10)


def images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


@pytest.mark.parametrize(
    ("architecture", "filters"),
    [("baseline1", [32, 64]), ("baseline2", [32, 32, 64, 64, 128, 128])],
)
def test_architectures_have_the_reference_convolutions(architecture, filters):
    model = network(architecture=architecture)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == filters
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(pools) == len(set(filters))
    assert model.output_shape == (None, 10)
    assert model.layers[-1].activation.__name__ == "softmax"


@pytest.mark.slow
def test_resnet9_is_a_stem_three_pooled_blocks_two_residual_pairs_and_a_global_pool():
    model = network(architecture="resnet9", batch_norm="before", dropout="0.1/0.2/0.3")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [64, 128, 128, 128, 256, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert [a.name for a in adds] == ["block1_add", "block3_add"]
    # each residual pair adds to the pooled tensor it started from
    assert model.get_layer("block1_add").input[0] is model.get_layer("block1_pool").output
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [round(d.rate, 6) for d in drops] == [0.1, 0.2, 0.3]
    assert isinstance(model.layers[-2], keras.layers.GlobalMaxPooling2D)
    assert model.output_shape == (None, 10)
    wide = network(architecture="resnet9", width=2)
    wide_convs = [layer for layer in wide.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in wide_convs[:2]] == [128, 256]
    with pytest.raises(ConfigError, match="resnet9 has 3 blocks"):
        make_config({"architecture": "resnet9", "dropout": "0.1/0.2"})


def test_a_network_without_augmentation_exports_its_own_graph_uncompiled(tmp_path):
    config = make_config({"architecture": "baseline1", "dropout": 0.3})
    model = build_model(config, SHAPE, 10)  # compiled, with Adam's slots
    exported = inference_model(model, config)
    assert [layer.name for layer in exported.layers] == [layer.name for layer in model.layers]
    assert {id(v) for v in exported.weights} == {id(v) for v in model.weights}
    assert not exported.compiled
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its input is one tensor, as the network's is
        exported(images(2))
    exported.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert not loaded.compiled  # no optimizer state saved with it
    x = images(3)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["baseline2", "resnet9"])
def test_inference_model_drops_augmentation_and_keeps_the_trained_weights(tmp_path, architecture):
    config = make_config({"architecture": architecture, "augmentation": "standard+crop+cutout",
                          "batch_norm": "before", "dropout": 0.3})  # fmt: skip
    model = build_network(config, SHAPE, 10)
    exported = inference_model(model, config)
    names = {layer.name for layer in exported.layers}
    augmentation = {"shift", "flip", "zoom", "crop", "crop_flip", "cutout"}
    assert not names & augmentation
    assert augmentation <= {layer.name for layer in model.layers}
    # the same variables, none new
    assert {id(v) for v in exported.weights} == {id(v) for v in model.weights}
    x = images(6)
    expected = model.predict(x, verbose=0)  # augmentation and dropout inactive here
    np.testing.assert_allclose(exported.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    exported.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_test_time_flip_exports_the_mean_over_each_image_and_its_mirror(tmp_path):
    config = make_config({"architecture": "baseline2", "augmentation": "standard",
                          "batch_norm": "before", "test_time_flip": True})  # fmt: skip
    model = build_network(config, SHAPE, 10)
    keras.utils.set_random_seed(3)
    exported = inference_model(model, config)
    drawn_after = keras.random.uniform((4,))
    keras.utils.set_random_seed(3)
    np.testing.assert_array_equal(drawn_after, keras.random.uniform((4,)))  # nothing drawn
    # the trained layers themselves, plus one fixed (non-trainable) mirror kernel
    assert {id(v) for v in exported.trainable_weights} == {id(v) for v in model.trainable_weights}
    assert [w.path for w in exported.non_trainable_weights if "mirror" in w.path] == [
        "mirror/kernel"
    ]
    x = images(6)
    plain = model.predict(x, verbose=0)
    mirrored = model.predict(x[:, :, ::-1], verbose=0)
    expected = (plain + mirrored) / 2
    assert not np.allclose(plain, mirrored, atol=1e-4)  # the mirror changes what the net sees
    np.testing.assert_allclose(exported.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    exported.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    plain_config = config.model_copy(update={"test_time_flip": False})
    assert "mirror_average" not in {
        layer.name for layer in inference_model(model, plain_config).layers
    }


def test_mirror_average_needs_the_scaling_layer():
    inputs = keras.Input(shape=SHAPE, dtype="uint8")
    other = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="no 'scale' layer"):
        with_mirror_average(other)


def test_width_multiplies_every_blocks_filters():
    model = network(architecture="baseline2", width=2)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [64, 64, 128, 128, 256, 256]


@pytest.mark.parametrize(
    ("placement", "order"),
    [
        ("none", ["Conv2D", "Activation"]),
        ("before", ["Conv2D", "BatchNormalization", "Activation"]),
        ("after", ["Conv2D", "Activation", "BatchNormalization"]),
    ],
)
def test_batch_norm_placement_sets_layer_order(placement, order):
    assert layer_kinds(network(batch_norm=placement), "block1_1_") == order


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh", "elu", "swish"])
def test_activation_is_applied(activation):
    model = network(activation=activation)
    applied = model.get_layer("block2_1_act").activation
    assert applied is keras.activations.get(activation)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("he_normal", keras.initializers.HeNormal),
        ("glorot_uniform", keras.initializers.GlorotUniform),
        ("lecun_uniform", keras.initializers.LecunUniform),
        ("random_uniform", keras.initializers.RandomUniform),
        ("zeros", keras.initializers.Zeros),
    ],
)
def test_initializer_is_applied(name, cls):
    model = network(kernel_initializer=name)
    assert isinstance(model.get_layer("block1_1_conv").kernel_initializer, cls)
    assert isinstance(model.get_layer("probabilities").kernel_initializer, cls)


def test_torch_uniform_draws_kernels_as_pytorchs_default_does():
    """U(+-1/sqrt(fan_in)) in every layer: a third of LeCun's variance, new values per layer."""
    keras.utils.set_random_seed(0)
    model = network(kernel_initializer="torch_uniform", width=2)
    kernels = {}
    for name in ("block2_1_conv", "block2_2_conv", "probabilities"):
        kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
        fan_in = int(np.prod(kernel.shape[:-1]))
        assert np.abs(kernel).max() <= 1 / np.sqrt(fan_in)
        assert kernel.var() == pytest.approx(1 / (3 * fan_in), rel=0.1)
        kernels[name] = kernel
    assert not np.allclose(kernels["block2_1_conv"][:, :, :64], kernels["block2_2_conv"][:, :, :64])
    keras.utils.set_random_seed(0)
    again = network(kernel_initializer="torch_uniform", width=2)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again.get_layer("probabilities").kernel),
        kernels["probabilities"],
    )


def test_zero_initialization_gives_outputs_independent_of_the_input():
    model = network(kernel_initializer="zeros")
    first, second = (
        model.predict(images(seed=1), verbose=0),
        model.predict(images(seed=2), verbose=0),
    )
    np.testing.assert_allclose(first, second)
    np.testing.assert_allclose(first, 0.1, rtol=1e-6)
    varied = network(kernel_initializer="he_normal")
    assert not np.allclose(
        varied.predict(images(seed=1), verbose=0), varied.predict(images(seed=2), verbose=0)
    )


@pytest.mark.parametrize(
    ("dropout", "rates"),
    [("none", []), (0.3, [0.3, 0.3, 0.3]), ("0.2/0.5/0.7", [0.2, 0.5, 0.7])],
)
def test_dropout_follows_each_pooling_with_its_rate(dropout, rates):
    model = network(dropout=dropout)
    names = [layer.name for layer in model.layers]
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [round(d.rate, 6) for d in drops] == rates
    for drop in drops:
        block = drop.name.split("_")[0]
        assert names[names.index(drop.name) - 1] == f"{block}_pool"


@pytest.mark.parametrize(
    ("dropout", "rates"),
    [(0.2, [0.2] * 6), ("0.2/0.5/0.7", [0.2, 0.2, 0.5, 0.5, 0.7, 0.7])],
)
def test_dropout_on_each_convolution_when_placed_per_conv(dropout, rates):
    model = network(dropout=dropout, dropout_placement="conv")
    names = [layer.name for layer in model.layers]
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [round(d.rate, 6) for d in drops] == rates
    for drop in drops:  # right after its convolution's activation, never after a pooling
        assert names[names.index(drop.name) - 1] == drop.name.replace("_dropout", "_act")


def test_dropout_per_conv_is_refused_for_resnet9():
    with pytest.raises(ConfigError, match="dropout_placement"):
        make_config({"architecture": "resnet9", "dropout": 0.2, "dropout_placement": "conv"})


@pytest.mark.parametrize("kind", ["l1", "l2", "l1l2"])
def test_weight_decay_adds_a_regularization_loss_per_kernel(kind):
    model = network(weight_decay=kind, weight_decay_magnitude=1e-3)
    model(images(), training=False)
    assert len(model.losses) == 7  # six convolutions and the dense layer
    assert all(float(loss) > 0 for loss in model.losses)
    conv = model.get_layer("block1_1_conv")
    expected = {
        "l1": keras.regularizers.L1,
        "l2": keras.regularizers.L2,
        "l1l2": keras.regularizers.L1L2,
    }[kind]
    assert type(conv.kernel_regularizer) is expected


def test_no_weight_decay_means_no_regularization_loss():
    model = network()
    model(images(), training=False)
    assert model.losses == []


def test_l1_and_l2_penalties_differ_for_the_same_weights():
    l1, l2 = network(weight_decay="l1", seed=3), network(weight_decay="l2", seed=3)
    l2.set_weights(l1.get_weights())
    l1(images()), l2(images())
    assert float(sum(l1.losses)) != pytest.approx(float(sum(l2.losses)))


@pytest.mark.parametrize(
    ("name", "cls", "momentum", "nesterov"),
    [
        ("sgd", keras.optimizers.SGD, 0.0, False),
        ("sgd_momentum", keras.optimizers.SGD, 0.8, False),
        ("sgd_nesterov", keras.optimizers.SGD, 0.8, True),
        ("rmsprop", keras.optimizers.RMSprop, 0.0, None),
        ("rmsprop_momentum", keras.optimizers.RMSprop, 0.8, None),
        ("adam", keras.optimizers.Adam, None, None),
        ("adamax", keras.optimizers.Adamax, None, None),
        ("adagrad", keras.optimizers.Adagrad, None, None),
        ("adadelta", keras.optimizers.Adadelta, None, None),
        ("nadam", keras.optimizers.Nadam, None, None),
        ("ftrl", keras.optimizers.Ftrl, None, None),
    ],
)
def test_optimizer_class_and_momentum(name, cls, momentum, nesterov):
    model = build_model(make_config({"optimizer": name, "momentum": 0.8}), SHAPE, 10)
    optimizer = model.optimizer
    assert type(optimizer) is cls
    if momentum is not None:
        assert optimizer.momentum == pytest.approx(momentum)
    if nesterov is not None:
        assert optimizer.nesterov is nesterov


def test_learning_rate_defaults_to_the_optimizers_own_and_can_be_set():
    sgd_default = build_model(make_config({"optimizer": "sgd"}), SHAPE, 10).optimizer
    assert float(sgd_default.learning_rate) == pytest.approx(0.01)
    adam_set = build_model(make_config({"learning_rate": 0.0123}), SHAPE, 10).optimizer
    assert float(adam_set.learning_rate) == pytest.approx(0.0123)


def test_model_takes_raw_uint8_images_and_scales_them():
    model = network()
    assert model.inputs[0].dtype == "uint8"
    assert model.get_layer("scale").scale == pytest.approx(1 / 255)
    probabilities = model.predict(images(), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(("warmup", "rates"), [
    (2, {0: 0.0, 5: 0.05, 10: 0.1, 30: 0.05, 50: 0.0}),  # 10 steps up, 40 down
    (0, {0: 0.1, 25: 0.05, 50: 0.0}),  # no warm-up: the cosine over all 50 steps
])  # fmt: skip
def test_cosine_schedule_warms_up_linearly_from_zero_then_decays(warmup, rates):
    from hpsearch.model.optimizers import build_optimizer

    config = make_config({"optimizer": "sgd_nesterov", "learning_rate": 0.1, "epochs": 10,
                          "lr_schedule": "cosine", "warmup_epochs": warmup})  # fmt: skip
    optimizer = build_optimizer(config, steps_per_epoch=5)
    for step, rate in rates.items():
        optimizer.iterations.assign(step)
        assert float(optimizer.learning_rate) == pytest.approx(rate, abs=1e-6), step


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_fit_creates_no_variables_the_built_model_lacks(precision):
    """Optimizer and metric state exist before fit (else TensorFlow traces each step twice)."""
    keras.config.set_dtype_policy(precision)
    try:
        config = make_config({"architecture": "baseline1", "optimizer": "adam",
                              "precision": precision})  # fmt: skip
        model = build_model(config, SHAPE, 10)
        before = {id(v) for v in [*model.variables, *model.optimizer.variables,
                                  *model.metrics_variables]}  # fmt: skip
        assert len(model.optimizer.variables) > 2 * len(model.trainable_variables)  # Adam's slots
        labels = keras.utils.to_categorical(np.arange(8) % 10, 10)
        history = model.fit(images(8), labels, batch_size=4, epochs=1, verbose=0)
        after = {id(v) for v in [*model.variables, *model.optimizer.variables,
                                 *model.metrics_variables]}  # fmt: skip
    finally:
        keras.config.set_dtype_policy("float32")
    assert after == before
    assert np.isfinite(history.history["loss"][0]) and 0 <= history.history["accuracy"][0] <= 1


def test_label_smoothing_moves_the_training_targets_off_one_hot():
    labels = keras.utils.to_categorical([0, 1, 2, 3], 10)
    confident = np.clip(labels, 1e-7, 1.0)  # the one-hot targets, predicted exactly
    plain = build_model(make_config({"architecture": "baseline1"}), SHAPE, 10)
    smoothed = build_model(
        make_config({"architecture": "baseline1", "label_smoothing": 0.2}), SHAPE, 10
    )
    assert float(plain.loss(labels, confident)) == pytest.approx(0.0, abs=1e-5)
    # targets 0.82 on the true class, 0.02 elsewhere: confidence now costs ~2.9 nats
    expected = -(0.82 * np.log(1.0) + 9 * 0.02 * np.log(1e-7))
    assert float(smoothed.loss(labels, confident)) == pytest.approx(expected, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["baseline1", "resnet9"])
def test_logit_scale_multiplies_the_logits_and_adds_no_weights(architecture):
    def probabilities(scale: float) -> tuple[np.ndarray, int]:
        keras.utils.set_random_seed(3)
        model = network(architecture=architecture, batch_norm="before", logit_scale=scale)
        return model.predict(images(6), verbose=0), len(model.weights)

    plain, plain_weights = probabilities(1.0)
    scaled, scaled_weights = probabilities(0.125)
    assert scaled_weights == plain_weights
    # the Dense's bias starts at zero: softmax(0.125 * logits) = softmax(0.125 * log p)
    expected = np.exp(0.125 * np.log(plain))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scaled, expected, rtol=1e-4, atol=1e-6)
    assert scaled.max(axis=1).mean() < plain.max(axis=1).mean()  # less confident at the start


@pytest.mark.slow
def test_grad_cam_reads_a_network_with_a_logit_scale():
    from hpsearch.choose.analysis import grad_cam

    for architecture in ("baseline1", "resnet9"):
        model = network(architecture=architecture, logit_scale=0.125)
        heatmaps = grad_cam(model, images(2))
        assert heatmaps.shape[0] == 2 and np.isfinite(heatmaps).all()


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["before", "after"])
def test_batch_norm_momentum_is_applied(placement):
    default = network(batch_norm=placement).get_layer("block1_1_bn")
    assert default.momentum == pytest.approx(0.99)
    model = network(batch_norm=placement, batch_norm_momentum=0.9)
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(layers) == 6 and all(layer.momentum == pytest.approx(0.9) for layer in layers)
    # one training step moves the moving mean 10% of the way to the batch mean (not 1%)
    layer = model.get_layer("block1_1_bn")
    batch = keras.ops.ones((2, 4, 4, 32)) * 5.0
    layer(batch, training=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), 0.5, rtol=1e-5)


@pytest.mark.slow
def test_mirror_average_runs_on_the_jax_backend():
    run_under_jax(
        """
        import keras, numpy as np
        assert keras.backend.backend() == "jax", keras.backend.backend()
        from hpsearch.model.builder import inference_model, build_network
        from hpsearch.config import make_config
        config = make_config({"architecture": "baseline1", "test_time_flip": True})
        model = build_network(config, (8, 8, 1), 3)
        x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
        expected = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
        got = inference_model(model, config).predict(x, verbose=0)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        print("ok")
        """
    )

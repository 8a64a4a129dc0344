"""The model builder: the reference CNN family, every factor applied.

Networks (SPEC.md): 3x3 "same" convolutions, 2x2 max-pooling, filters
doubling after each pooling, a softmax dense output. ``width`` multiplies
every block's filters (1 gives the reference networks).

* baseline1: conv32 -> pool -> conv64 -> pool -> dense
* baseline2: [conv32 x2] -> pool -> [conv64 x2] -> pool -> [conv128 x2] -> pool -> dense
* resnet9 (beyond the study; Page's DAWNBench network): conv64 -> conv128 -> pool ->
  residual[conv128 x2] -> conv256 -> pool -> conv512 -> pool -> residual[conv512 x2] ->
  global max pool -> dense

``logit_scale`` multiplies the last features ahead of their pooling, hence
the logits (Page's resnet9: 0.125, which keeps the softmax unsaturated at the
start and under high SGD rates).

Dropout, where used, follows each block (its pooling, or its residual
addition), or with ``dropout_placement: conv`` each convolution of the
reference networks (the study's constant rates "on each convolutional layer").
The model takes raw uint8 images and scales them to [0, 1] in its first layer.
Imports neither Optuna nor MLflow; uses ``keras`` only, so it runs on the JAX
backend too.
"""

from __future__ import annotations

import keras
import numpy as np

from hpsearch.config import RESNET9_BLOCKS, VGG_BLOCKS, TrialConfig
from hpsearch.model.augmentation import IN_MODEL_LAYER_NAMES, in_model_layers
from hpsearch.model.optimizers import build_optimizer

# resnet9's stem, ahead of its blocks (config.RESNET9_BLOCKS); the reference networks'
# blocks are config.VGG_BLOCKS
RESNET9_STEM = 64


def kernel_regularizer(config: TrialConfig) -> keras.regularizers.Regularizer | None:
    magnitude = config.weight_decay_magnitude
    return {
        "none": None,
        "l1": keras.regularizers.L1(magnitude),
        "l2": keras.regularizers.L2(magnitude),
        "l1l2": keras.regularizers.L1L2(l1=magnitude, l2=magnitude),
    }[config.weight_decay]


def kernel_initializer(config: TrialConfig) -> str | keras.initializers.Initializer:
    """The config's kernel initializer, a new one for each layer.

    ``torch_uniform`` is PyTorch's default for convolutions and dense layers
    (Kaiming-uniform with a = sqrt(5)): uniform in +-1/sqrt(fan_in), a third of
    LeCun's variance and a sixth of He's. Page's resnet9 started from it; the
    smaller weights of a batch-normalised convolution train at a higher
    effective rate under the same learning rate. The others are Keras's names.
    """
    if config.kernel_initializer == "torch_uniform":
        return keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform")
    return config.kernel_initializer


def _conv_unit(x, filters: int, config: TrialConfig, name: str):
    """conv -> [BN] -> activation -> [BN], BN placed as the config says."""
    x = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        kernel_initializer=kernel_initializer(config),
        kernel_regularizer=kernel_regularizer(config),
        name=f"{name}_conv",
    )(x)
    if config.batch_norm == "before":
        x = _batch_norm(x, config, name)
    x = keras.layers.Activation(config.activation, name=f"{name}_act")(x)
    if config.batch_norm == "after":
        x = _batch_norm(x, config, name)
    return x


def _batch_norm(x, config: TrialConfig, name: str):
    layer = keras.layers.BatchNormalization(momentum=config.batch_norm_momentum, name=f"{name}_bn")
    return layer(x)


def build_network(
    config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """The uncompiled network for ``config`` (raw uint8 images in, probabilities out)."""
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
    for layer in in_model_layers(config.augmentation, config.seed):
        x = layer(x)
    if config.architecture == "resnet9":
        x = _resnet9_body(x, config)
    else:
        x = _vgg_body(x, config)
    outputs = keras.layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=kernel_initializer(config),
        kernel_regularizer=kernel_regularizer(config),
        dtype="float32",  # probabilities in float32 under mixed precision too
        name="probabilities",
    )(x)
    return keras.Model(inputs, outputs, name=config.architecture)


def _vgg_body(x, config: TrialConfig):
    """The reference networks' blocks of convolutions, each ending in a pooling."""
    rates = config.dropout_rates()
    per_conv = config.dropout_placement == "conv"
    for block, (filters, convs) in enumerate(VGG_BLOCKS[config.architecture], start=1):
        for index in range(1, convs + 1):
            name = f"block{block}_{index}"
            x = _conv_unit(x, filters * config.width, config, name=name)
            if per_conv:  # the study's "dropout on each convolutional layer"
                x = _dropout(x, rates[block - 1], name)
        if block == len(VGG_BLOCKS[config.architecture]):
            x = _logit_scale(x, config)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        if not per_conv:
            x = _dropout(x, rates[block - 1], f"block{block}")
    return keras.layers.Flatten(name="flatten")(x)


def _resnet9_body(x, config: TrialConfig):
    """ResNet-9: a stem, three pooled blocks (the first and last with a residual pair)."""
    rates = config.dropout_rates()
    x = _conv_unit(x, RESNET9_STEM * config.width, config, name="stem")
    for block, (filters, residual) in enumerate(RESNET9_BLOCKS, start=1):
        filters *= config.width
        x = _conv_unit(x, filters, config, name=f"block{block}_1")
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        if residual:
            branch = _conv_unit(x, filters, config, name=f"block{block}_2")
            branch = _conv_unit(branch, filters, config, name=f"block{block}_3")
            x = keras.layers.Add(name=f"block{block}_add")([x, branch])
        x = _dropout(x, rates[block - 1], f"block{block}")
    x = _logit_scale(x, config)
    return keras.layers.GlobalMaxPooling2D(name="global_pool")(x)


def _logit_scale(x, config: TrialConfig):
    """The features times ``logit_scale``, ahead of the last (max) pooling.

    Max pooling and the Dense are linear in a positive factor, so the logits
    come out scaled (Page's resnet9 multiplies them by 0.125); the Dense's
    bias, zero at the start, is left unscaled. Placed here, the head keeps
    its shape (pooling, Dense), which Grad-CAM reads.
    """
    if config.logit_scale == 1.0:
        return x
    return keras.layers.Rescaling(config.logit_scale, name="logit_scale")(x)


def _dropout(x, rate: float, name: str):
    return keras.layers.Dropout(rate, name=f"{name}_dropout")(x) if rate > 0 else x


def build_model(
    config: TrialConfig,
    input_shape: tuple[int, int, int],
    num_classes: int,
    steps_per_epoch: int = 1,
    training_state: bool = True,
) -> keras.Model:
    """The compiled model: categorical cross-entropy (with the config's label
    smoothing), accuracy, the config's optimizer.

    ``training_state=False`` leaves the optimizer and metric variables to Keras,
    which makes them inside ``fit`` (``benchmarks/training_state.py`` compares).
    """
    model = build_network(config, input_shape, num_classes)
    model.compile(
        optimizer=build_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        # JAX has no graph mode: without XLA it runs every op eagerly, one by one.
        jit_compile=(config.jit_compile or keras.backend.backend() == "jax")
        and not config.run_eagerly,
        run_eagerly=config.run_eagerly,
    )
    if training_state:
        build_training_state(model)
    return model


def build_training_state(model: keras.Model) -> None:
    """Create the compiled model's optimizer and metric variables now, before ``fit``.

    Under TensorFlow, Keras otherwise creates them inside the first trace of
    the train step: TensorFlow then traces that step (and the test step) twice,
    once creating variables and once without, and wraps each variable's
    initialiser in a conditional. Built here, each step is traced once
    (benchmarks/training_state.py measures the gain; benchmarks/RESULTS.md).
    Values are unchanged (the variables start at the same zeros).
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    labels = keras.ops.zeros((1, *model.output_shape[1:]), dtype="float32")
    model.compute_metrics(None, labels, labels)  # the metrics build their state on first use
    model.reset_metrics()


def inference_model(model: keras.Model, config: TrialConfig) -> keras.Model:
    """The trained network as exported: no augmentation layers, and mirror-averaged
    (:func:`with_mirror_average`) when the config asks for ``test_time_flip``."""
    return tested_model(inference_network(model), config)


def tested_model(model: keras.Model, config: TrialConfig) -> keras.Model:
    """What the test set runs through: ``model``, mirror-averaged if ``test_time_flip``."""
    return with_mirror_average(model) if config.test_time_flip else model


def inference_network(model: keras.Model) -> keras.Model:
    """The trained network without its augmentation layers.

    The trained layers themselves are wired again from a new input, leaving
    the augmentation layers out: no new weights are made (no initializer
    draws from the random state of the trial that runs next). The result uses
    only Keras core layers: ``keras.saving.load_model`` alone loads it, in any
    process, and it takes raw uint8 images. A network without augmentation
    layers needs no wiring again: its own graph is taken as it is, into an
    uncompiled model (no optimizer state in the saved file).
    """
    if not any(layer.name in IN_MODEL_LAYER_NAMES for layer in model.layers):
        return keras.Model(model.input, model.output, name=model.name)

    def leave_out_augmentation(layer, *args, **kwargs):
        return args[0] if layer.name in IN_MODEL_LAYER_NAMES else layer(*args, **kwargs)

    inputs = keras.Input(shape=tuple(model.input_shape[1:]), dtype="uint8", name="image")
    wired = rewire(model, leave_out_augmentation, inputs)
    return keras.Model(inputs, wired.outputs[0], name=model.name)


def with_mirror_average(network: keras.Model) -> keras.Model:
    """``network``'s probabilities averaged over each image and its left-right mirror.

    Test-time augmentation with the trained layers themselves (no copy of a
    weight): the network's graph is wired twice from one uint8 input, the
    second time with the mirror image taken after its ``scale`` layer. The
    mirror is a fixed permutation of the width axis in Keras core layers (a
    ``Dense`` with a 0/1 kernel between two ``Permute``; exact in float32),
    so ``keras.saving.load_model`` alone still loads the exported file.
    """
    if "scale" not in {layer.name for layer in network.layers}:
        raise ValueError(f"{network.name}: no 'scale' layer to take the mirror image after")
    inputs = keras.Input(shape=tuple(network.input_shape[1:]), dtype="uint8", name="image")
    mirror = _mirror(width=network.input_shape[2])

    def as_is(layer, *args, **kwargs):
        return layer(*args, **kwargs)

    def mirrored_after_scaling(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        return mirror(outputs) if layer.name == "scale" else outputs

    plain = rewire(network, as_is, inputs).outputs[0]
    mirrored = rewire(network, mirrored_after_scaling, inputs).outputs[0]
    average = keras.layers.Average(dtype="float32", name="mirror_average")([plain, mirrored])
    return keras.Model(inputs, average, name=network.name)


def _mirror(width: int):
    """Images (n, h, w, c) -> the same images flipped left to right, in core layers."""
    to_rows = keras.layers.Permute((1, 3, 2), dtype="float32", name="mirror_in")  # (h, c, w)
    reverse = keras.layers.Dense(width, use_bias=False, kernel_initializer="zeros",
                                 trainable=False, dtype="float32", name="mirror")  # fmt: skip
    back = keras.layers.Permute((1, 3, 2), dtype="float32", name="mirror_out")

    def apply(images):
        rows = to_rows(images)
        flipped = reverse(rows)  # builds the layer: zeros, no random draw
        reverse.kernel.assign(np.eye(width, dtype="float32")[::-1])  # column i takes w - 1 - i
        return back(flipped)

    return apply


def rewire(model: keras.Model, call_function, inputs=None) -> keras.Model:
    """``model``'s graph wired again from new inputs with its own layers (no new weights).

    ``call_function(layer, *args, **kwargs)`` calls each layer (Keras's
    ``clone_model``): it may skip one, or take the tensors it sees on the way.
    """
    return keras.models.clone_model(
        model, input_tensors=inputs, clone_function=lambda layer: layer,
        call_function=call_function,
    )  # fmt: skip

"""Input pipeline: augmented images per second, hpsearch's layers vs ImageDataGenerator.

hpsearch keeps images uint8 until they reach the model and augments them with Keras layers
(shift, flip, zoom) in a compiled graph; the reference study augmented with NumPy through
Keras's ImageDataGenerator. Same images, batch size and augmentation strengths.
`--end-to-end` also trains baseline2 + BN per pipeline: plain, with in-model augmentation,
and fed by ImageDataGenerator (the GPU comparison of issue 6); `--end-to-end-only` skips the
pipeline-alone part, which needs TensorFlow (a GPU machine may have only JAX).

    python benchmarks/input_pipeline.py --images 10000 --batches 60
    KERAS_BACKEND=jax python benchmarks/input_pipeline.py --end-to-end-only --images 20000 \
        --precision mixed_bfloat16 --jit-compile
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_DATA, record, table  # noqa: E402

OURS = "hpsearch (uint8, Keras layers, tf.data prefetch)"


def reference_generator():
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    from hpsearch.model.augmentation import SHIFT_FRACTION, ZOOM_FRACTION

    return ImageDataGenerator(
        rescale=1 / 255,
        width_shift_range=SHIFT_FRACTION,
        height_shift_range=SHIFT_FRACTION,
        horizontal_flip=True,
        zoom_range=ZOOM_FRACTION,
        fill_mode="nearest",
    )


def hpsearch_batches(images: np.ndarray, batch_size: int):
    """uint8 batches, shuffled and prefetched, augmented by hpsearch's layers in a graph."""
    import keras
    import tensorflow as tf

    from hpsearch.model.augmentation import in_model_layers

    front = keras.Sequential([keras.layers.Rescaling(1 / 255), *in_model_layers(["standard"], 0)])
    return (
        tf.data.Dataset.from_tensor_slices(images)
        .shuffle(len(images))
        .batch(batch_size)
        .map(lambda x: front(x, training=True), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
        .repeat()
    )


def rate(batches, count: int, batch_size: int) -> float:
    iterator = iter(batches)
    next(iterator)  # warm-up: graph tracing, first shuffle buffer
    started = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count * batch_size / (time.perf_counter() - started)


def end_to_end(images, labels, classes, batch_size, epochs=1, precision="float32",
               jit_compile=False, generator_epochs=None) -> list[list[object]]:  # fmt: skip
    """Training images per second of each pipeline, after a warm-up that compiles.

    Only whole batches: a last, smaller batch would be compiled again inside the timed
    epochs (seconds under XLA, more than an epoch takes on a GPU).
    """
    import keras

    from hpsearch.config import make_config
    from hpsearch.model.builder import build_model

    whole = len(images) - len(images) % batch_size
    images, labels = images[:whole], labels[:whole]
    onehot = keras.utils.to_categorical(labels, classes)
    rows = []
    for name, augmentation, feed in (
        ("hpsearch, no augmentation", "none", "arrays"),
        ("hpsearch, standard augmentation (in-model layers)", "standard", "arrays"),
        ("ImageDataGenerator feeding fit", "none", "generator"),
    ):
        config = make_config({"architecture": "baseline2", "batch_norm": "before",
                              "batch_size": batch_size, "augmentation": augmentation,
                              "precision": precision, "jit_compile": jit_compile})  # fmt: skip
        keras.config.set_dtype_policy(precision)
        model = build_model(config, images.shape[1:], classes)
        if feed == "generator":
            model = _float_input(model, config)
            data = {"x": reference_generator().flow(images, onehot, batch_size=batch_size)}
        else:
            data = {"x": images, "y": onehot, "batch_size": batch_size}
        model.fit(**data, epochs=1, steps_per_epoch=2, verbose=0)  # compile and warm up
        timed = epochs if feed != "generator" else (generator_epochs or epochs)
        started = time.perf_counter()
        model.fit(**data, epochs=timed, verbose=0)
        speed = timed * len(images) / (time.perf_counter() - started)
        print(f"{name}: {speed:,.0f} training images/s", flush=True)
        rows.append([name, f"{speed:,.0f}"])
    keras.config.set_dtype_policy("float32")
    return rows


def _float_input(model, config):
    """The generator already scales to [0, 1]: the same network without the uint8 scaling."""
    import keras

    inputs = keras.Input(model.input_shape[1:], dtype="float32")
    x = inputs
    for layer in model.layers[2:]:  # skip Input and Rescaling
        x = layer(x)
    network = keras.Model(inputs, x)
    network.compile(optimizer=model.optimizer.__class__(), loss="categorical_crossentropy",
                    metrics=["accuracy"], jit_compile=model.jit_compile)  # fmt: skip
    return network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--end-to-end-only", action="store_true")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per end-to-end run")
    parser.add_argument(
        "--generator-epochs",
        type=int,
        default=0,
        help="timed epochs of the ImageDataGenerator run (default: --epochs)",
    )
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--jit-compile", action="store_true")
    args = parser.parse_args()

    from hpsearch.datasets import load_dataset

    dataset = load_dataset("folder", args.data_dir)
    images, labels = dataset.x_train[: args.images], dataset.y_train[: args.images]
    shuffled = np.random.default_rng(0).permutation(len(images))
    images, labels = images[shuffled], labels[shuffled]
    title = f"Input pipeline: {len(images)} CIFAR-10 images, batch {args.batch_size}"
    if args.end_to_end_only:
        body = _end_to_end_table(images, labels, dataset.num_classes, args)
        record(title + f", end to end, {args.precision}, jit {args.jit_compile}", body)
        return
    reference = reference_generator().flow(images, batch_size=args.batch_size, seed=0)
    results = {}
    for name, batches in (
        ("ImageDataGenerator (NumPy, reference study)", reference),
        (OURS, hpsearch_batches(images, args.batch_size)),
        ("ImageDataGenerator (again)", reference),
        ("hpsearch (again)", hpsearch_batches(images, args.batch_size)),
    ):  # fmt: skip
        results[name] = rate(batches, args.batches, args.batch_size)
        print(f"{name}: {results[name]:,.0f} images/s", flush=True)
    ours = (results[OURS] + results["hpsearch (again)"]) / 2
    theirs = (results["ImageDataGenerator (NumPy, reference study)"]
              + results["ImageDataGenerator (again)"]) / 2  # fmt: skip
    rows = [[name, f"{value:,.0f}"] for name, value in results.items()]
    body = table(["pipeline (standard augmentation, no model)", "images/s"], rows)
    body += f"\n\nratio hpsearch / ImageDataGenerator: **{ours / theirs:.2f}** (target at least 2)"
    if args.end_to_end:
        body += "\n\n" + _end_to_end_table(images, labels, dataset.num_classes, args)
    record(title, body)


def _end_to_end_table(images, labels, classes, args) -> str:
    rows = end_to_end(images, labels, classes, args.batch_size, args.epochs, args.precision,
                      args.jit_compile, args.generator_epochs)  # fmt: skip
    speeds = [float(row[1].replace(",", "")) for row in rows]
    body = table(["end to end, baseline2 + BN", "training images/s"],
                 rows)  # fmt: skip
    return body + (
        f"\n\naugmentation costs **{1 - speeds[1] / speeds[0]:.1%}** of throughput (target at "
        f"most 10% on a GPU); hpsearch with augmentation / ImageDataGenerator feeding fit: "
        f"**{speeds[1] / speeds[2]:.1f}x** (target at least 10x on a GPU)"
    )


if __name__ == "__main__":
    main()

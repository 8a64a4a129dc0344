"""The names a trial config or a data spec may choose from, each list declared once.

Each ``Literal`` here is the schema's type in :mod:`hpsearch.config`; the tuples below
are read from it with :func:`typing.get_args`, for the code that lists the names (the
CLI's ``--dataset`` choices, the dataset loader, the model's optimizer registry, the
findings). Standard library only: the CLI reads these on its ``--help`` path, which
must not load pydantic (as importing :mod:`hpsearch.config` does).
"""

from __future__ import annotations

from typing import Literal, get_args

DatasetName = Literal["digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "folder"]
Architecture = Literal["baseline1", "baseline2", "resnet9"]
Optimizer = Literal[
    "sgd",
    "sgd_momentum",
    "sgd_nesterov",
    "rmsprop",
    "rmsprop_momentum",
    "adam",
    "adamax",
    "adagrad",
    "adadelta",
    "nadam",
    "ftrl",
    "adamw",
    "lion",
]
Augmentation = Literal["standard", "crop", "cutout", "mixup", "cutmix", "gridmask"]

DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
AUGMENTATIONS: tuple[str, ...] = get_args(Augmentation)

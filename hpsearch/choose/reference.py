"""The reference study's numbers: what it reported, and the setting that reproduces each.

The study's own text (``../shared/reference/study.txt``) decides what it ran; SPEC.md
tabulates the numbers. Each :class:`ReferenceNumber` names the study file that runs
its setting and the trial-config values a trial must have to count towards it, so
that a study file that drifts from the study no longer matches (``tests/test_reference``).
All twelve numbers are CIFAR-10 *test* accuracies of the weights early stopping kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The reference studies, in the order the study ran them (each carries settings forward).
STUDY_ORDER: tuple[str, ...] = (
    "baselines",
    "batch_norm",
    "batch_size",
    "initializer",
    "dropout",
    "weight_decay",
    "activation_bn",
    "optimizers",
    "learning_rate",
    "combined",
    "augmentation",
)

BASELINE = {  # Section 3: ReLU, no BN, Adam at its default rate, TensorFlow's batch 32
    "batch_norm": "none",
    "activation": "relu",
    "kernel_initializer": "glorot_uniform",
    "optimizer": "adam",
    "learning_rate": None,
    "batch_size": 32,
    "dropout": (),
    "weight_decay": "none",
    "augmentation": (),
    "epochs": 20,
    "patience": 3,
    "monitor": "val_loss",
}
# "Going forward, He initialization and batch size 256 are applied to all experiments."
CARRIED = {**BASELINE, "architecture": "baseline2", "kernel_initializer": "he_normal",
           "batch_size": 256}  # fmt: skip
# Section 3's combined model: increasing dropout, L2 1e-4, He, Adam 1e-3, batch 256, ReLU.
COMBINED = {
    **CARRIED,
    "dropout": (0.2, 0.5, 0.7),
    "dropout_placement": "block",
    "weight_decay": "l2",
    "weight_decay_magnitude": 1e-4,
    "learning_rate": 1e-3,
    "epochs": 50,
}


@dataclass(frozen=True)
class ReferenceNumber:
    """One test accuracy the study reports, and the setting that reproduces it."""

    key: str  # short, unique
    label: str  # what was run, in a few words
    study: str  # the study file (``studies/<study>.yaml``) and study name
    setting: Mapping[str, Any] = field(hash=False)  # values a trial's config must have
    test_accuracy: float  # percent
    tolerance: float = 2.0  # points either way that count as reproduced
    quote: str = ""  # the study's words

    def matches(
        self, config: Mapping[str, Any], scale_epochs: Callable[[int], int] | None = None
    ) -> bool:
        """Whether a trial config (``TrialConfig.model_dump()``) has this setting.

        ``scale_epochs`` maps the study's epochs to a scaled-down run's (``reproduce
        --epochs-scale``), so its trials still match the setting they stand for.
        """
        setting = dict(self.setting)
        if scale_epochs is not None and "epochs" in setting:
            setting["epochs"] = scale_epochs(setting["epochs"])
        return all(_same(config.get(key), value) for key, value in setting.items())


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, tuple | list):
        return tuple(actual or ()) == tuple(expected)
    if isinstance(expected, float) and isinstance(actual, int | float):
        return abs(actual - expected) <= 1e-12 * max(1.0, abs(expected))
    return actual == expected


REFERENCE_NUMBERS: tuple[ReferenceNumber, ...] = (
    ReferenceNumber(
        "baseline1", "baseline1: no BN, ReLU, Adam, batch 32", "baselines",
        {**BASELINE, "architecture": "baseline1"}, 64.89, 3.0,
        "Baselines-1 and 2 ... scored 64.89% and 73.67% respectively",
    ),
    ReferenceNumber(
        "baseline2", "baseline2: no BN, ReLU, Adam, batch 32", "baselines",
        {**BASELINE, "architecture": "baseline2"}, 73.67, 3.0,
        "Baselines-1 and 2 ... scored 64.89% and 73.67% respectively",
    ),
    ReferenceNumber(
        "dropout_0.2", "dropout 0.2 on each conv layer, 20 epochs", "dropout",
        {**CARRIED, "dropout": (0.2,), "dropout_placement": "conv", "epochs": 20}, 79.26,
        quote="a constant dropout factor of 0.2 on each convolutional layer. After twenty "
        "epochs ... 79.26%",
    ),
    ReferenceNumber(
        "dropout_0.5", "dropout 0.5 on each conv layer, 20 epochs", "dropout",
        {**CARRIED, "dropout": (0.5,), "dropout_placement": "conv", "epochs": 20}, 75.54,
        quote="a constant 0.5 ... dropped the test accuracy score to 75.54% after twenty epochs",
    ),
    ReferenceNumber(
        "dropout_0.5_50", "dropout 0.5 on each conv layer, up to 50 epochs", "dropout",
        {**CARRIED, "dropout": (0.5,), "dropout_placement": "conv", "epochs": 50}, 80.33,
        quote="epochs were increased to 50 ... halted training after 43 epochs ... 80.33%",
    ),
    ReferenceNumber(
        "dropout_increasing", "dropout 0.2/0.5/0.7 per block, up to 50 epochs", "dropout",
        {**CARRIED, "dropout": (0.2, 0.5, 0.7), "dropout_placement": "block", "epochs": 50},
        81.03, quote="increasing values for each block ...: 0.2, 0.5, 0.7. This model scored "
        "81.03% even though callbacks halted training after 32 epochs",
    ),
    ReferenceNumber(
        "combined", "combined model", "combined", COMBINED, 83.7,
        quote="This model scores 83.7% on the CIFAR-10 test set",
    ),
    ReferenceNumber(
        "augmentation_none", "combined model, no augmentation", "augmentation",
        COMBINED, 83.7, quote="This model scores 83.7% on the CIFAR-10 test set",
    ),
    ReferenceNumber(
        "augmentation_standard", "combined + shifts, flips, zooms", "augmentation",
        {**COMBINED, "augmentation": ("standard",)}, 82.2,
        quote="width and height shifts, horizontal flips, and zooms yielded ... 82.2%",
    ),
    ReferenceNumber(
        "augmentation_mixup", "combined + mixup", "augmentation",
        {**COMBINED, "augmentation": ("mixup",)}, 83.7,
        quote="mixup [34] and cutout [6] performed similarly: 83.7% and 81.3% respectively",
    ),
    ReferenceNumber(
        "augmentation_cutout", "combined + cutout", "augmentation",
        {**COMBINED, "augmentation": ("cutout",)}, 81.3,
        quote="mixup [34] and cutout [6] performed similarly: 83.7% and 81.3% respectively",
    ),
    ReferenceNumber(
        "augmentation_all", "combined + all three augmentations", "augmentation",
        {**COMBINED, "augmentation": ("standard", "mixup", "cutout")}, 78.6,
        quote="When combined together test set accuracy dropped to 78.6%",
    ),
)  # fmt: skip


def base_study_name(name: str) -> str:
    """``dropout`` for ``dropout`` and for a scaled reproduction's ``dropout.quick``."""
    return name.split(".", 1)[0]


def reference_numbers(
    study: str, config: Mapping[str, Any], scale_epochs: Callable[[int], int] | None = None
) -> list[ReferenceNumber]:
    """The reference numbers a trial of ``study`` with ``config`` counts towards."""
    base = base_study_name(study)
    return [n for n in REFERENCE_NUMBERS if n.study == base and n.matches(config, scale_epochs)]


def reference_accuracy(
    study: str, config: Mapping[str, Any], scale_epochs: Callable[[int], int] | None = None
) -> float | None:
    """The study's test accuracy (percent) for this trial's setting, if it reported one."""
    numbers = reference_numbers(study, config, scale_epochs)
    return numbers[0].test_accuracy if numbers else None

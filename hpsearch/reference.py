"""The reference study's reported CIFAR-10 test accuracies (SPEC.md), by study and setting."""

from __future__ import annotations

#: (study name, setting as "factor=value, ...") -> test accuracy in percent
REFERENCE_TEST_ACCURACY: dict[tuple[str, str], float] = {
    ("baselines", "architecture=baseline1"): 64.89,
    ("baselines", "architecture=baseline2"): 73.67,
    ("dropout", "dropout=0.2"): 79.26,
    ("dropout", "dropout=0.5"): 75.54,
    ("dropout", "dropout=0.2/0.5/0.7"): 81.03,
    ("combined", ""): 83.7,
    ("augmentation", "augmentation=none"): 83.7,
    ("augmentation", "augmentation=standard"): 82.2,
    ("augmentation", "augmentation=mixup"): 83.7,
    ("augmentation", "augmentation=cutout"): 81.3,
    ("augmentation", "augmentation=standard+mixup+cutout"): 78.6,
}


def reference_accuracy(study: str, setting: str) -> float | None:
    return REFERENCE_TEST_ACCURACY.get((study, setting))

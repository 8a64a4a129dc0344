"""The reference study's qualitative findings, each with a verdict computed from our runs.

A :class:`Results` holds the completed trials of every reference study (by the
study's base name); each :class:`Finding` reads the trials it needs and says
whether the finding holds, with the figures it compared. Accuracy is the
kept weights' validation accuracy where the study judged on validation curves,
test accuracy where it reported test scores (Figure 7, the dropout and
augmentation runs). Thresholds are ours and stated in each finding's text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

from hpsearch.choices import OPTIMIZERS
from hpsearch.choose.repeats import mean_sd
from hpsearch.records import TrialRecord

POINT = 0.01  # one percentage point, as a fraction


@dataclass
class Results:
    """Completed trials per reference study, and how their epochs were scaled."""

    trials: dict[str, list[FrozenTrial]] = field(default_factory=dict)
    scale_epochs: Callable[[int], int] = lambda epochs: epochs

    def matching(self, study: str, **setting: Any) -> list[FrozenTrial]:
        """Completed trials of ``study`` whose config has every value of ``setting``."""
        if "epochs" in setting:
            setting["epochs"] = self.scale_epochs(setting["epochs"])
        found = []
        for trial in self.trials.get(study, []):
            config = TrialRecord.of(trial).config or {}
            if all(_same(config.get(k), v) for k, v in setting.items()):
                found.append(trial)
        return found

    def mean(self, metric: str, study: str, **setting: Any) -> float | None:
        """Mean of ``metric`` (``test_accuracy``, ``kept_val_accuracy``, ...) or None."""
        found = [_metric(t, metric) for t in self.matching(study, **setting)]
        values = [v for v in found if v is not None]
        return mean_sd(values)[0] if values else None


def _metric(trial: FrozenTrial, metric: str) -> float | None:
    record = TrialRecord.of(trial)
    if metric == "seconds_per_epoch":
        fit, epochs = record.fit_time_s, record.epochs_run
        return fit / epochs if fit is not None and epochs else None
    return record.metric(metric)


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, tuple | list):
        return tuple(actual or ()) == tuple(expected)
    if isinstance(expected, float) and isinstance(actual, int | float):
        return math.isclose(actual, expected, rel_tol=1e-9)
    return actual == expected


class Missing(Exception):
    """A trial the finding needs has not completed."""


def need(value: float | None, what: str) -> float:
    if value is None:
        raise Missing(what)
    return value


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


@dataclass(frozen=True)
class Finding:
    key: str
    studies: tuple[str, ...]
    claim: str  # the study's finding, and the test we apply to it
    check: Callable[[Results], tuple[bool, str]] = field(repr=False)

    def verdict(self, results: Results) -> tuple[str, str]:
        """("holds" | "does not hold" | "not measured", the figures compared)."""
        try:
            holds, evidence = self.check(results)
        except Missing as missing:
            return "not measured", f"no completed trial for {missing}"
        return ("holds" if holds else "does not hold"), evidence


VAL, TEST = "kept_val_accuracy", "test_accuracy"


def _baselines(r: Results) -> tuple[bool, str]:
    one = need(r.mean(TEST, "baselines", architecture="baseline1"), "baseline1")
    two = need(r.mean(TEST, "baselines", architecture="baseline2"), "baseline2")
    early = []
    for arch in ("baseline1", "baseline2"):
        for trial in r.matching("baselines", architecture=arch):
            record = TrialRecord.of(trial)
            cap = (record.config or {}).get("epochs", 0)
            best = cap if record.best_epoch is None else record.best_epoch
            ran = cap if record.epochs_run is None else record.epochs_run
            early.append(best <= min(10, cap) and ran < cap)
    overfit = bool(early) and all(early)
    return two > one and overfit, (
        f"test: baseline2 {pct(two)} vs baseline1 {pct(one)}; early stopping ended "
        f"{sum(early)} of {len(early)} runs with the kept epoch at or before 10"
    )


def _bn_placement(r: Results) -> tuple[bool, str]:
    parts, holds = [], True
    for arch in ("baseline1", "baseline2"):
        before = need(r.mean(VAL, "batch_norm", architecture=arch, batch_norm="before"),
                      f"{arch} BN before")  # fmt: skip
        after = need(r.mean(VAL, "batch_norm", architecture=arch, batch_norm="after"),
                     f"{arch} BN after")  # fmt: skip
        holds &= before > after
        parts.append(f"{arch}: before {pct(before)}, after {pct(after)}")
    return holds, "validation: " + "; ".join(parts)


def _batch_size(r: Results) -> tuple[bool, str]:
    accuracy = {b: r.mean(VAL, "batch_size", batch_size=b) for b in (32, 64, 128, 256, 512)}
    best = max(v for v in accuracy.values() if v is not None) if any(accuracy.values()) else None
    at256 = need(accuracy[256], "batch 256")
    best = need(best, "any batch size")
    slow = need(r.mean("seconds_per_epoch", "batch_size", batch_size=32), "batch 32 timing")
    fast = need(r.mean("seconds_per_epoch", "batch_size", batch_size=256), "batch 256 timing")
    return at256 >= best - POINT and fast < 0.5 * slow, (
        f"validation: 256 {pct(at256)}, best of all sizes {pct(best)}; seconds an epoch: "
        f"256 {fast:.1f} s, 32 {slow:.1f} s"
    )


INITIALIZERS = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "random_normal",
                "random_uniform", "zeros")  # fmt: skip


def _initializers(r: Results) -> tuple[bool, str]:
    means = {k: r.mean(VAL, "initializer", kernel_initializer=k) for k in INITIALIZERS}
    found = {k: v for k, v in means.items() if v is not None}
    zeros = need(found.get("zeros"), "zeros")
    if len(found) < 2:
        raise Missing("the other initialisers")
    best = max(found, key=lambda k: found[k])
    return best.startswith("he_") and zeros <= 0.15, (
        f"validation: best {best} {pct(found[best])}; zeros {pct(zeros)} (chance: 10%)"
    )


def _dropout_epochs(r: Results) -> tuple[bool, str]:
    conv = {"dropout_placement": "conv"}
    low = need(r.mean(TEST, "dropout", dropout=(0.2,), epochs=20, **conv), "0.2, 20 epochs")
    high = need(r.mean(TEST, "dropout", dropout=(0.5,), epochs=20, **conv), "0.5, 20 epochs")
    longer = need(r.mean(TEST, "dropout", dropout=(0.5,), epochs=50, **conv), "0.5, 50 epochs")
    stops = [TrialRecord.of(t).epochs_run or 0
             for t in r.matching("dropout", dropout=(0.5,), epochs=50, **conv)]  # fmt: skip
    cap = r.scale_epochs(20)
    ran_on = sum(1 for s in stops if s > cap)
    return high < low and longer > high and ran_on == len(stops), (
        f"test: 0.2 {pct(low)} and 0.5 {pct(high)} at {cap} epochs; 0.5 given "
        f"{r.scale_epochs(50)}: {pct(longer)}, {ran_on} of {len(stops)} runs went past "
        f"epoch {cap} (stopped at {', '.join(map(str, stops))})"
    )


def _dropout_increasing(r: Results) -> tuple[bool, str]:
    increasing = need(r.mean(TEST, "dropout", dropout=(0.2, 0.5, 0.7)), "0.2/0.5/0.7")
    means = [r.mean(TEST, "dropout", dropout=(rate,), epochs=e)
             for rate, e in ((0.2, 20), (0.5, 20), (0.5, 50))]  # fmt: skip
    constant = [c for c in means if c is not None]
    if not constant:
        raise Missing("the constant rates")
    return increasing > max(constant), (
        f"test: increasing {pct(increasing)}, best constant rate {pct(max(constant))}"
    )


def _weight_decay(r: Results) -> tuple[bool, str]:
    drops = {}
    for kind in ("l1", "l2", "l1l2"):
        smalls = [r.mean(VAL, "weight_decay", weight_decay=kind, weight_decay_magnitude=m)
                  for m in (1e-5, 1e-4, 1e-3)]  # fmt: skip
        larges = [r.mean(VAL, "weight_decay", weight_decay=kind, weight_decay_magnitude=m)
                  for m in (1e-2, 1e-1)]  # fmt: skip
        small, large = [v for v in smalls if v is not None], [v for v in larges if v is not None]
        if not small or not large:
            raise Missing(f"{kind} at small and large magnitudes")
        drops[kind] = sum(small) / len(small) - sum(large) / len(large)
    holds = drops["l1"] > 5 * POINT and drops["l1l2"] > 5 * POINT
    holds &= drops["l2"] < min(drops["l1"], drops["l1l2"])
    return holds, "validation, mean of 1e-5..1e-3 minus mean of 1e-2..1e-1: " + ", ".join(
        f"{k} {100 * v:+.1f} points" for k, v in drops.items()
    )


ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")


def _activation_table(r: Results) -> dict[tuple[str, str], float]:
    table = {}
    for act in ACTIVATIONS:
        for bn in ("none", "before", "after"):
            value = r.mean(TEST, "activation_bn", activation=act, batch_norm=bn)
            if value is not None:
                table[act, bn] = value
    return table


def _relu_best(r: Results) -> tuple[bool, str]:
    table = _activation_table(r)
    best = {a: max(v for (act, _), v in table.items() if act == a)
            for a in ACTIVATIONS if any(act == a for act, _ in table)}  # fmt: skip
    need(best.get("relu"), "relu")
    if len(best) < 2:
        raise Missing("the other activations")
    top = max(best, key=lambda a: best[a])
    return best["relu"] >= best[top] - POINT, (
        "test, best BN placement of each: "
        + ", ".join(f"{a} {pct(v)}" for a, v in sorted(best.items(), key=lambda i: -i[1]))
        + " (ReLU within one point of the top counts)"
    )


def _bn_after_except_tanh(r: Results) -> tuple[bool, str]:
    table = _activation_table(r)
    parts, holds = [], True
    for act in ACTIVATIONS:
        before = need(table.get((act, "before")), f"{act} BN before")
        after = need(table.get((act, "after")), f"{act} BN after")
        gap = after - before
        holds &= gap < -POINT if act == "tanh" else gap >= -POINT
        parts.append(f"{act} {100 * gap:+.1f}")
    return holds, "test, BN after minus before (points): " + ", ".join(parts)


def _sigmoid_after(r: Results) -> tuple[bool, str]:
    table = _activation_table(r)
    before = need(table.get(("sigmoid", "before")), "sigmoid BN before")
    after = need(table.get(("sigmoid", "after")), "sigmoid BN after")
    return after > before, f"test: sigmoid BN after {pct(after)}, before {pct(before)}"


def _rmsprop_adam(r: Results) -> tuple[bool, str]:
    adam = need(r.mean(VAL, "optimizers", optimizer="adam"), "adam")
    rms = need(r.mean(VAL, "optimizers", optimizer="rmsprop_momentum"), "rmsprop_momentum")
    means = {o: r.mean(VAL, "optimizers", optimizer=o) for o in OPTIMIZERS}  # unrun: None
    scores = {o: v for o, v in means.items() if v is not None}
    ranked = sorted(scores, key=lambda o: -scores[o])
    return abs(adam - rms) <= 2 * POINT, (
        f"validation at defaults: adam {pct(adam)}, rmsprop_momentum {pct(rms)} "
        f"(alike: within two points); order: {', '.join(ranked)}"
    )


RATES = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _best_rate(r: Results, optimizer: str) -> float:
    means = {lr: r.mean(VAL, "learning_rate", optimizer=optimizer, learning_rate=lr)
             for lr in RATES}  # fmt: skip
    found = {lr: v for lr, v in means.items() if v is not None}
    if not found:
        raise Missing(f"{optimizer} at any rate")
    return max(found, key=lambda lr: found[lr])


def _larger_rates(r: Results) -> tuple[bool, str]:
    best = {o: _best_rate(r, o) for o in ("sgd_momentum", "adamax", "adam", "rmsprop_momentum")}
    holds = min(best["sgd_momentum"], best["adamax"]) > max(best["adam"], best["rmsprop_momentum"])
    return holds, "validation, best initial rate: " + ", ".join(
        f"{o} {lr:g}" for o, lr in best.items()
    )


def _adam_default(r: Results) -> tuple[bool, str]:
    default = need(r.mean(VAL, "learning_rate", optimizer="adam", learning_rate=1e-3), "adam 1e-3")
    best_rate = _best_rate(r, "adam")
    best = need(r.mean(VAL, "learning_rate", optimizer="adam", learning_rate=best_rate), "adam")
    return default >= best - POINT, (
        f"validation: adam at 1e-3 {pct(default)}, at its best rate {best_rate:g} {pct(best)}"
    )


def _augmentation(r: Results) -> tuple[bool, str]:
    scores = {}
    for name, value in (("none", ()), ("standard", ("standard",)), ("mixup", ("mixup",)),
                        ("cutout", ("cutout",)), ("all three", ("standard", "mixup", "cutout"))):
        scores[name] = need(r.mean(TEST, "augmentation", augmentation=value), name)  # fmt: skip
    singles = max(scores[k] for k in ("standard", "mixup", "cutout"))
    holds = singles <= scores["none"] + POINT and scores["all three"] == min(scores.values())
    return holds, "test: " + ", ".join(f"{k} {pct(v)}" for k, v in scores.items())


FINDINGS: tuple[Finding, ...] = (
    Finding("baselines", ("baselines",),
            "baseline2 beats baseline1, and both overfit within a few epochs (early stopping "
            "ends each run before its cap, with the kept epoch at 10 or sooner)", _baselines),
    Finding("bn_before", ("batch_norm",),
            "batch norm before the activation beats after, on both baselines", _bn_placement),
    Finding("batch_256", ("batch_size",),
            "batch 256 is as accurate as the best size (within one point) and much faster: "
            "under half the seconds an epoch of batch 32", _batch_size),
    Finding("he_zeros", ("initializer",),
            "He initialisation is best with ReLU; zero initialisation does not train (at most "
            "15% validation accuracy, chance being 10%)", _initializers),
    Finding("dropout_epochs", ("dropout",),
            "0.5 dropout needs more epochs than 0.2: below 0.2 at 20 epochs, above its own "
            "20-epoch score when allowed 50, running past epoch 20", _dropout_epochs),
    Finding("dropout_increasing", ("dropout",),
            "increasing rates 0.2/0.5/0.7 per block beat every constant rate",
            _dropout_increasing),
    Finding("weight_decay", ("weight_decay",),
            "L1 and L1L2 fall off beyond 1e-3 (more than five points) while L2 holds (falls "
            "off less than either)", _weight_decay),
    Finding("relu_best", ("activation_bn",), "ReLU is the best activation", _relu_best),
    Finding("bn_after_tanh", ("activation_bn",),
            "BN after the activation is nearly as good as before (within one point) for every "
            "activation except tanh, where it is worse", _bn_after_except_tanh),
    Finding("sigmoid_after", ("activation_bn",),
            "sigmoid does better with BN after the activation than before", _sigmoid_after),
    Finding("rmsprop_adam", ("optimizers",),
            "RMSprop and Adam are alike at their defaults", _rmsprop_adam),
    Finding("larger_rates", ("learning_rate",),
            "SGD and Adamax prefer larger initial learning rates than Adam and RMSprop",
            _larger_rates),
    Finding("adam_default", ("learning_rate",),
            "Adam's default rate 1e-3 is well suited (within one point of its best rate)",
            _adam_default),
    Finding("augmentation", ("augmentation",),
            "augmentation does not help this model (no single one beats none by more than a "
            "point) and all three together is worst", _augmentation),
)  # fmt: skip


def verdicts(results: Results, findings: Iterable[Finding] = FINDINGS):
    """(finding, verdict, evidence) for every finding."""
    return [(f, *f.verdict(results)) for f in findings]

"""`hpsearch report`: the reproduction table and figures of a study, from Optuna and MLflow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from hpsearch.config import TrialConfig  # noqa: E402
from hpsearch.reference import reference_accuracy  # noqa: E402
from hpsearch.repeats import config_key, mean_sd  # noqa: E402
from hpsearch.tracking import metric_history, run_metrics  # noqa: E402


@dataclass
class Row:
    number: int
    setting: str
    state: str
    val_accuracy: float | None
    test_accuracy: float | None
    epochs: int | None
    wall_time_s: float | None
    reference: float | None
    run_id: str | None
    repeat: int = 0
    config_key: str = ""


def param_text(key: str, value: object) -> str:
    """A value as it is logged to MLflow (``0.2/0.5/0.7``, ``standard+mixup``), floats short."""
    if isinstance(value, float):
        return f"{value:.4g}"
    try:
        return TrialConfig.model_validate({key: value}).to_params(mark_unused=False)[key]
    except Exception:  # noqa: BLE001 - e.g. a dropout list that needs another architecture
        return str(value)


def setting_of(trial: FrozenTrial, searched: list[str] | None) -> str:
    """``key=value, ...`` of the keys the study varied, read from the trial's config."""
    config = trial.user_attrs.get("config")
    if config is None or searched is None:
        return ", ".join(f"{k}={param_text(k, v)}" for k, v in trial.params.items())
    try:
        params = TrialConfig.model_validate(config).to_params()
    except Exception:  # noqa: BLE001 - a config from an older schema
        params = {k: str(v) for k, v in config.items()}
    return ", ".join(f"{k}={_short(params[k])}" for k in searched if k in params)


def _short(text: str) -> str:
    try:
        return f"{float(text):.4g}" if "." in text or "e" in text else text
    except ValueError:
        return text


def epochs_scaler(study: optuna.Study) -> Callable[[int], int] | None:
    """How a scaled reproduction (``reproduce --epochs-scale``) changed the study's epochs."""
    scale = study.user_attrs.get("epochs_scale")
    if not scale or scale == 1:
        return None
    return lambda epochs: scaled_epochs(epochs, scale)


def scaled_epochs(epochs: int, scale: float) -> int:
    return max(1, round(epochs * scale))


def rows_of(study: optuna.Study) -> list[Row]:
    searched = study.user_attrs.get("searched")
    scaler = epochs_scaler(study)
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        run_id = trial.user_attrs.get("mlflow_run_id")
        attrs = trial.user_attrs
        known = "test_accuracy" in attrs or not attrs.get("config")
        metrics = {} if known or not run_id else run_metrics(run_id)
        value = (
            trial.value if trial.state == TrialState.COMPLETE else metrics.get("best_val_accuracy")
        )
        if value is None and trial.intermediate_values:
            value = max(trial.intermediate_values.values())
        epochs = attrs.get("epochs_run")
        if epochs is None and trial.last_step is not None:
            epochs = trial.last_step  # steps are epochs trained
        wall = attrs.get("wall_time_s")
        if wall is None and trial.datetime_complete and trial.datetime_start:
            wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        config = attrs.get("config") or {}
        reference = reference_accuracy(study.study_name, config, scaler) if config else None
        test = attrs.get("test_accuracy", metrics.get("test_accuracy"))
        rows.append(Row(trial.number, setting_of(trial, searched), trial.state.name.lower(),
                        value, test, epochs, wall, reference, run_id, attrs.get("repeat", 0),
                        config_key(config) if config else f"trial {trial.number}"))  # fmt: skip
    return rows


def _mean_sd(values: list[float]) -> str:
    if not values:
        return ""
    mean, sd = mean_sd(values)
    return f"{100 * mean:.2f}%" + (f" ± {100 * sd:.2f}" if len(values) > 1 else "")


def by_configuration(rows: list[Row]) -> list[list[Row]]:
    """Rows grouped by configuration (repeats together), in order of first trial."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.config_key, []).append(row)
    return list(groups.values())


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def markdown(study: optuna.Study, rows: list[Row]) -> str:
    lines = [
        f"# Study `{study.study_name}`",
        "",
        "| trial | experiment | setting | outcome | validation accuracy | test accuracy "
        "| epochs | wall time (s) | reference test accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reference = "" if row.reference is None else f"{row.reference:.2f}%"
        wall = "" if row.wall_time_s is None else f"{row.wall_time_s:.1f}"
        lines.append(
            f"| {row.number} | {study.study_name} | {row.setting or '(fixed)'} | {row.state} "
            f"| {_percent(row.val_accuracy)} | {_percent(row.test_accuracy)} "
            f"| {row.epochs if row.epochs is not None else ''} | {wall} | {reference} |"
        )
    groups = by_configuration(rows)
    if any(len(group) > 1 for group in groups):
        lines += [
            "",
            "## By configuration (repeats: mean ± sd over completed trials)",
            "",
            "| setting | trials | completed | validation accuracy | test accuracy "
            "| reference test accuracy |",
            "|---|---|---|---|---|---|",
        ]
        for group in groups:
            done = [r for r in group if r.state == "complete"]
            reference = group[0].reference
            val = _mean_sd([r.val_accuracy for r in done if r.val_accuracy is not None])
            test = _mean_sd([r.test_accuracy for r in done if r.test_accuracy is not None])
            lines.append(
                f"| {group[0].setting or '(fixed)'} | {', '.join(str(r.number) for r in group)} "
                f"| {len(done)} | {val} | {test} "
                f"| {'' if reference is None else f'{reference:.2f}%'} |"
            )
    lines += ["", "Figures: `validation_curves.png`, `accuracy_by_setting.png`."]
    return "\n".join(lines) + "\n"


def _setting_order(setting: str) -> list[tuple[str, float, str]]:
    """Sort key of ``a=1, b=x``: key by key, numbers by value, words by name."""
    order = []
    for pair in setting.split(", "):
        key, _, value = pair.partition("=")
        try:
            order.append((key, float(value), ""))
        except ValueError:
            order.append((key, -1.0 if value == "none" else 0.0, value))
    return order


def save_validation_curves(rows: list[Row], path: Path, title: str = "") -> Path:
    """Validation accuracy per epoch of every trial (the study's curves, from our runs)."""
    from matplotlib.ticker import MaxNLocator

    drawn = [(row, metric_history(row.run_id, "val_accuracy") if row.run_id else [])
             for row in rows]  # fmt: skip
    drawn = [(row, values) for row, values in drawn if values]
    fig, ax = plt.subplots(figsize=(11, max(4.5, 0.22 * len(drawn) + 1.5)))
    for row, values in drawn:
        style = "-" if row.state == "complete" else ":"
        ax.plot(range(1, len(values) + 1), values, style, marker=".",
                label=f"#{row.number} {row.setting or '(fixed)'}"
                + ("" if row.state == "complete" else f" ({row.state})"))  # fmt: skip
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "Validation accuracy per epoch")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_accuracy_by_setting(rows: list[Row], path: Path, title: str = "") -> Path:
    """One bar per configuration: validation (mean of repeats), test dots, the reference."""
    groups = [g for g in by_configuration(rows) if any(r.val_accuracy is not None for r in g)]
    groups.sort(key=lambda g: _setting_order(g[0].setting))
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.32 * len(groups) + 1.6)))
    labels, val, test, reference = [], [], [], []
    for i, group in enumerate(groups):
        done = [r for r in group if r.val_accuracy is not None]
        labels.append(f"{group[0].setting or '(fixed)'}"
                      + (f"  (n={len(done)})" if len(done) > 1 else ""))  # fmt: skip
        val.append(mean_sd([r.val_accuracy for r in done])[0])
        test += [(r.test_accuracy, i) for r in done if r.test_accuracy is not None]
        if group[0].reference is not None:
            reference.append((group[0].reference / 100, i))
    ax.barh(range(len(groups)), val, color="tab:blue", alpha=0.7, label="validation (mean)")
    if test:
        ax.scatter(*zip(*test, strict=True), color="black", zorder=3, s=14, label="test")
    if reference:
        ax.scatter(*zip(*reference, strict=True), marker="|", s=300, color="tab:red", zorder=3,
                   label="the study's test accuracy")  # fmt: skip
    ax.set_yticks(range(len(groups)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_title(title or "Accuracy by setting")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(study: optuna.Study, folder: Path) -> tuple[Path, list[Row]]:
    """report.md and the two figures in ``folder``; returns the Markdown path and the rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows_of(study)
    path = folder / "report.md"
    path.write_text(markdown(study, rows))
    name = study.study_name
    save_validation_curves(rows, folder / "validation_curves.png",
                           f"Study {name}: validation accuracy per epoch, one line a trial")
    save_accuracy_by_setting(rows, folder / "accuracy_by_setting.png",
                             f"Study {name}: accuracy of the kept weights by setting")
    return path, rows

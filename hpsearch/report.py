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
        return TrialConfig.model_validate({key: value}).to_params()[key]
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


def save_validation_curves(rows: list[Row], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 5))
    for row in rows:
        values = metric_history(row.run_id, "val_accuracy") if row.run_id else []
        if values:
            label = f"#{row.number} {row.setting or '(fixed)'}"
            ax.plot(range(1, len(values) + 1), values, marker=".", label=label[:40])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_accuracy_by_setting(rows: list[Row], path: Path) -> Path:
    shown = [row for row in rows if row.val_accuracy is not None]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(shown) + 2), 5))
    labels = [f"#{r.number} {r.setting or '(fixed)'}"[:30] for r in shown]
    ax.bar(range(len(shown)), [r.val_accuracy for r in shown], label="validation")
    tested = [(i, r.test_accuracy) for i, r in enumerate(shown) if r.test_accuracy is not None]
    if tested:
        ax.scatter(*zip(*tested, strict=True), color="black", zorder=3, label="test")
    referenced = [(i, r.reference / 100) for i, r in enumerate(shown) if r.reference is not None]
    if referenced:
        ax.scatter(*zip(*referenced, strict=True), marker="_", s=400, color="red", zorder=3,
                   label="reference test")  # fmt: skip
    ax.set_xticks(range(len(shown)), labels, rotation=45, ha="right", fontsize="small")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend()
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
    save_validation_curves(rows, folder / "validation_curves.png")
    save_accuracy_by_setting(rows, folder / "accuracy_by_setting.png")
    return path, rows

"""`hpsearch report`: the reproduction table and figures of a study, from Optuna and MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from hpsearch.config import TrialConfig  # noqa: E402
from hpsearch.reference import reference_accuracy  # noqa: E402
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


def param_text(key: str, value: object) -> str:
    """A value as it is logged to MLflow (``0.2/0.5/0.7``, ``standard+mixup``), floats short."""
    if isinstance(value, float):
        return f"{value:.4g}"
    try:
        return TrialConfig.model_validate({key: value}).to_params()[key]
    except Exception:  # noqa: BLE001 - e.g. a dropout list that needs another architecture
        return str(value)


def rows_of(study: optuna.Study) -> list[Row]:
    searched = study.user_attrs.get("searched")
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        keys = searched if searched is not None else list(trial.params)
        setting = ", ".join(
            f"{k}={param_text(k, trial.params[k])}" for k in keys if k in trial.params
        )
        run_id = trial.user_attrs.get("mlflow_run_id")
        metrics = run_metrics(run_id) if run_id else {}
        value = (
            trial.value if trial.state == TrialState.COMPLETE else metrics.get("best_val_accuracy")
        )
        if value is None and trial.intermediate_values:
            value = max(trial.intermediate_values.values())
        epochs = trial.user_attrs.get("epochs_run")
        if epochs is None and trial.last_step is not None:
            epochs = trial.last_step  # steps are epochs trained
        wall = trial.user_attrs.get("wall_time_s")
        if wall is None and trial.datetime_complete and trial.datetime_start:
            wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        rows.append(Row(trial.number, setting, trial.state.name.lower(), value,
                        metrics.get("test_accuracy"), epochs, wall,
                        reference_accuracy(study.study_name, setting), run_id))  # fmt: skip
    return rows


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

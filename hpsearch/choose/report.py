"""`hpsearch report`: the reproduction table and figures of a study, from Optuna and MLflow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import optuna  # noqa: E402
from matplotlib import colormaps as plt_colormaps  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from hpsearch.choose.reference import reference_accuracy  # noqa: E402
from hpsearch.choose.repeats import config_key, mean_sd  # noqa: E402
from hpsearch.config import TrialConfig  # noqa: E402
from hpsearch.figures.plots import (  # noqa: E402
    KEPT_MARKER,
    STATE_STYLE,
    integer_epochs,
    shorten_settings,
    state_handles,
    wrap,
)
from hpsearch.records import StudyRecord, TrialRecord  # noqa: E402
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
    best_epoch: int | None = None  # the epoch whose weights were kept (completed trials)


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
    config = TrialRecord.of(trial).config
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
    scale = StudyRecord.of(study).epochs_scale
    if not scale or scale == 1:
        return None
    return lambda epochs: scaled_epochs(epochs, scale)


def scaled_epochs(epochs: int, scale: float) -> int:
    return max(1, round(epochs * scale))


def rows_of(study: optuna.Study) -> list[Row]:
    searched = StudyRecord.of(study).searched
    scaler = epochs_scaler(study)
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        record = TrialRecord.of(trial)
        run_id = record.mlflow_run_id
        known = record.test_accuracy is not None or not record.config
        metrics = {} if known or not run_id else run_metrics(run_id)
        value = (
            trial.value if trial.state == TrialState.COMPLETE else metrics.get("best_val_accuracy")
        )
        if value is None and trial.intermediate_values:
            value = max(trial.intermediate_values.values())
        epochs = record.epochs_run
        if epochs is None and trial.last_step is not None:
            epochs = trial.last_step  # steps are epochs trained
        wall = record.wall_time_s
        if wall is None and trial.datetime_complete and trial.datetime_start:
            wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        config = record.config or {}
        reference = reference_accuracy(study.study_name, config, scaler) if config else None
        test = record.test_accuracy
        if test is None:
            test = metrics.get("test_accuracy")
        rows.append(Row(trial.number, setting_of(trial, searched), trial.state.name.lower(),
                        value, test, epochs, wall, reference, run_id, record.repeat or 0,
                        config_key(config) if config else f"trial {trial.number}",
                        record.best_epoch))  # fmt: skip
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
            group_reference = group[0].reference
            val = _mean_sd([r.val_accuracy for r in done if r.val_accuracy is not None])
            test = _mean_sd([r.test_accuracy for r in done if r.test_accuracy is not None])
            lines.append(
                f"| {group[0].setting or '(fixed)'} | {', '.join(str(r.number) for r in group)} "
                f"| {len(done)} | {val} | {test} "
                f"| {'' if group_reference is None else f'{group_reference:.2f}%'} |"
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


MANY_TRIALS = 12  # more lines than this: coloured by trial number, with a colour bar


def validation_curves_figure(rows: list[Row], title: str = "") -> Figure:
    """Validation accuracy per epoch of every trial (the study's curves, from our runs).

    Completed, pruned and failed trials are drawn in different line styles and
    markers; a star marks the epoch whose weights a completed trial kept. Up to
    :data:`MANY_TRIALS` trials each have a legend entry with their setting, more
    are coloured by trial number, with a colour bar.
    """
    drawn = [(row, metric_history(row.run_id, "val_accuracy") if row.run_id else [])
             for row in rows]  # fmt: skip
    drawn = [(row, values) for row, values in drawn if values]
    many = len(drawn) > MANY_TRIALS
    labels, key = shorten_settings([row.setting or "(fixed)" for row, _ in drawn])
    lines = sum(label.count("\n") + 1 for label in labels) + key.count("\n") + 1
    height = 4.5 if many else max(4.5, 0.2 * lines + 2.0)
    fig = Figure(figsize=(11, height), dpi=100, layout="constrained")
    ax = fig.subplots()
    colours = plt_colormaps["viridis"]
    numbers = [row.number for row, _ in drawn] or [0]
    norm = Normalize(min(numbers), max(max(numbers), min(numbers) + 1))
    trial_lines = []
    for (row, values), label in zip(drawn, labels, strict=True):
        style = STATE_STYLE.get(row.state, STATE_STYLE["failed"])
        line = ax.plot(range(1, len(values) + 1), values, **style,
                       color=colours(norm(row.number)) if many else None,
                       alpha=1.0 if row.state == "complete" else 0.75,
                       label=f"#{row.number} {row.state}: {label}")[0]  # fmt: skip
        kept = row.best_epoch if row.state == "complete" else None
        if kept and 1 <= kept <= len(values):
            ax.plot([kept], [values[kept - 1]], zorder=4, **KEPT_MARKER)
        line.set_zorder(3 if row.state == "complete" else 2)
        trial_lines.append(line)
    ax.set_xlabel("epoch")
    integer_epochs(ax)
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    fig.suptitle(wrap(title or "Validation accuracy per epoch, one line a trial", 100))
    states = [s for s in STATE_STYLE if any(row.state == s for row, _ in drawn)]
    fig.legend(handles=state_handles(states, kept=any(r.best_epoch for r, _ in drawn)),
               loc="outside lower center", ncols=len(states) + 1, frameon=False,
               fontsize="small")  # fmt: skip
    if many:
        fig.colorbar(ScalarMappable(norm, colours), ax=ax, label="trial number")
    elif drawn:
        ax.legend(handles=trial_lines, fontsize="x-small", loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), alignment="left", title_fontsize="x-small",
                  title="trial, outcome: setting" + (f"\nkey: {key}" if key else ""))  # fmt: skip
    return fig


def save_validation_curves(rows: list[Row], path: Path, title: str = "") -> Path:
    """:func:`validation_curves_figure`, saved to ``path``."""
    validation_curves_figure(rows, title).savefig(path)
    return path


def accuracy_by_setting_figure(rows: list[Row], title: str = "") -> Figure:
    """One bar per configuration: validation (mean of its completed repeats), test dots,
    the reference; pruned trials as crosses at the best validation accuracy they reached,
    failed ones marked as such."""
    groups = [g for g in by_configuration(rows)
              if any(r.val_accuracy is not None or r.state == "failed" for r in g)]  # fmt: skip
    groups.sort(key=lambda g: _setting_order(g[0].setting))
    settings, key = shorten_settings([g[0].setting or "(fixed)" for g in groups], width=56)
    lines = sum(label.count("\n") + 1 for label in settings)
    fig = Figure(figsize=(11, max(3.5, 0.26 * lines + 2.2)), dpi=100, layout="constrained")
    ax = fig.subplots()
    labels, val, test, reference, pruned, failed = [], [], [], [], [], []
    for i, (group, setting) in enumerate(zip(groups, settings, strict=True)):
        done = [r for r in group if r.state == "complete" and r.val_accuracy is not None]
        labels.append(setting + (f"  (n={len(done)})" if len(done) > 1 else ""))
        val.append(mean_sd([r.val_accuracy for r in done if r.val_accuracy is not None])[0]
                   if done else 0.0)  # fmt: skip
        test += [(r.test_accuracy, i) for r in done if r.test_accuracy is not None]
        pruned += [(r.val_accuracy, i) for r in group
                   if r.state == "pruned" and r.val_accuracy is not None]  # fmt: skip
        failed += [(r.val_accuracy or 0.0, i) for r in group if r.state == "failed"]
        if group[0].reference is not None:
            reference.append((group[0].reference / 100, i))
    ax.barh(range(len(groups)), val, color="tab:blue", alpha=0.7,
            label="validation, completed trials (mean)")  # fmt: skip
    if test:
        xs, ys = zip(*test, strict=True)
        ax.scatter(xs, ys, color="black", zorder=3, s=14, label="test")
    if pruned:
        xs, ys = zip(*pruned, strict=True)
        ax.scatter(xs, ys, marker="x", color="tab:orange", zorder=3, s=40,
                   label="pruned trial (best validation before it stopped)")  # fmt: skip
    if failed:  # those that failed before an epoch's validation at the axis, with a word
        ax.scatter([max(x, 0.012) for x, _ in failed], [i for _, i in failed], marker="s", s=40,
                   facecolors="none", edgecolors="tab:red", zorder=3, label="failed trial")
        for x, i in failed:
            if x == 0.0:
                ax.text(0.03, i, "failed", color="tab:red", va="center", fontsize="small")
    if reference:
        xs, ys = zip(*reference, strict=True)
        ax.scatter(xs, ys, marker="|", s=300, color="tab:red", zorder=3,
                   label="the study's test accuracy")  # fmt: skip
    ax.set_yticks(range(len(groups)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("accuracy")
    ax.set_xlim(0, 1)
    fig.suptitle(wrap(title or "Accuracy by setting", 100))
    ax.grid(axis="x", alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda j: not names[j].startswith("validation"))
    handles, names = [handles[j] for j in order], [names[j] for j in order]
    fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(handles)),
               fontsize="small", frameon=False, title_fontsize="small",
               title=wrap(f"settings' key: {key.replace(chr(10), ' ')}", 150) if key else None)
    return fig


def save_accuracy_by_setting(rows: list[Row], path: Path, title: str = "") -> Path:
    """:func:`accuracy_by_setting_figure`, saved to ``path``."""
    accuracy_by_setting_figure(rows, title).savefig(path)
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

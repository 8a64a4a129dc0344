"""The study summary written beside the parent run: best config, plots, all trials."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from hpsearch.records import StudyRecord, TrialRecord

log = logging.getLogger(__name__)


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def write_summary(study: optuna.Study, folder: Path) -> list[Path]:
    """trials.csv always; best_config.yaml and the Optuna plots when they are defined."""
    written = [folder / "trials.csv"]
    study.trials_dataframe().to_csv(written[0], index=False)
    if not completed(study):
        return written
    best = study.best_trial
    config = TrialRecord.of(best).config
    if config:
        path = folder / "best_config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        written.append(path)
    written += _plots(study, folder)
    return written


def _plots(study: optuna.Study, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    # Fixed margins rather than tight_layout, which draws each figure once more to measure
    # it: room on the right for the history's legend (Optuna puts it outside the axes), on
    # the left for the longest parameter name (about 7 pixels a letter).
    done = completed(study)
    names = max((len(name) for trial in done for name in trial.params), default=0)
    plots: list[tuple[str, Callable[..., Any], Callable[..., Any], tuple[float, float]]] = [
        ("optimization_history.png", optuna_plots.plot_optimization_history, _finish_history,
         (0.11, 0.7)),
    ]  # fmt: skip
    if len(done) >= 2 and names:  # else Optuna draws an empty chart (after importing forests)
        plots.append(("param_importances.png", optuna_plots.plot_param_importances,
                      _finish_importances, (min(0.5, 0.06 + 0.0095 * names), 0.96)))  # fmt: skip
    # Optuna switches matplotlib to its ggplot style for the whole process; drawn and saved in
    # this context, the settings are put back after, and figures drawn later keep the default.
    with matplotlib.rc_context():
        for name, plot, finish, (left, right) in plots:
            if _draw(study, folder / name, plot, finish, left, right):
                written.append(folder / name)
    return written


def objective_name(study: optuna.Study) -> str:
    return StudyRecord.of(study).objective or "objective value"


def _finish_history(study: optuna.Study, ax) -> None:
    """Titled, whole trial numbers, and the pruned and failed trials Optuna leaves out."""
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import blended_transform_factory

    from hpsearch.figures.plots import wrap

    trials = study.get_trials(deepcopy=False)
    pruned = [(t.number, t.intermediate_values[t.last_step]) for t in trials
              if t.state == TrialState.PRUNED and t.last_step is not None]  # fmt: skip
    failed = [t.number for t in trials if t.state == TrialState.FAIL]
    if pruned:
        ax.scatter(*zip(*pruned, strict=True), marker="x", color="tab:orange", zorder=3,
                   label="pruned (value when stopped)")  # fmt: skip
    if failed:  # no value: on the bottom edge
        ax.scatter(failed, [0.0] * len(failed), marker="v", color="tab:red", zorder=3,
                   clip_on=False, label="failed (no value)",
                   transform=blended_transform_factory(ax.transData, ax.transAxes))  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel(objective_name(study))
    counts = {s: sum(t.state == s for t in trials)
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}  # fmt: skip
    ax.set_title(wrap(f"Study {study.study_name}: {objective_name(study)} of each trial", 60)
                 + f"\n({counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} "
                 f"pruned, {counts[TrialState.FAIL]} failed)")  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    renamed = {objective_name(study): "complete trial", "Best Value": "best so far"}
    labels = [renamed.get(label, label) for label in labels]
    ax.legend(handles, labels, bbox_to_anchor=(1.03, 1.0), loc="upper left", fontsize="small")


def _finish_importances(study: optuna.Study, ax) -> None:
    """Titled; no legend (one objective)."""
    from hpsearch.figures.plots import wrap

    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.set_xlabel(f"importance for {objective_name(study)} (Optuna's evaluator)")
    ax.set_ylabel("searched setting")
    ax.set_title("", loc="left")  # Optuna's "Hyperparameter Importances"
    ax.set_title(wrap(f"Study {study.study_name}: how much each searched setting mattered "
                      f"to {objective_name(study)} ({len(completed(study))} complete trials)",
                      70))  # fmt: skip


def _draw(study: optuna.Study, path: Path, plot, finish, left: float, right: float) -> bool:
    import matplotlib.pyplot as plt

    figure = _figure(study, path.name, plot, finish, left, right)
    if figure is None:
        return False
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _figure(study: optuna.Study, name: str, plot, finish, left: float, right: float):
    """Optuna's ``plot`` of ``study`` finished by ``finish``, 8 x 5 inches; None if undefined."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks these plots experimental
            axes = plot(study, target_name=objective_name(study))
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        log.info("%s not drawn: %s", name, error)  # e.g. importances need 2+ varied trials
        return None
    ax = axes if hasattr(axes, "figure") else axes.flat[0]
    figure = ax.figure
    finish(study, ax)
    figure.set_layout_engine("none")  # Optuna's history plot asks for a tight layout
    figure.set_size_inches(8, 5)
    figure.subplots_adjust(left=left, right=right, top=0.88, bottom=0.12)
    return figure

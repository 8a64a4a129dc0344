"""The study summary written beside the parent run: best config, plots, all trials."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

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
    config = best.user_attrs.get("config")
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
    # it (about 90 ms a plot): room on the right for the history's legend (Optuna puts it
    # outside the axes), on the left for the longest parameter name (about 7 pixels a letter).
    done = completed(study)
    names = max((len(name) for trial in done for name in trial.params), default=0)
    plots = [("optimization_history.png", optuna_plots.plot_optimization_history, (0.1, 0.74))]
    if len(done) >= 2 and names:  # else Optuna draws an empty chart (after importing forests)
        plots.append(("param_importances.png", optuna_plots.plot_param_importances,
                      (min(0.5, 0.06 + 0.0095 * names), 0.96)))  # fmt: skip
    # Optuna switches matplotlib to its ggplot style for the whole process; drawn and saved in
    # this context, the settings are put back after, and figures drawn later keep the default.
    with matplotlib.rc_context():
        for name, plot, (left, right) in plots:
            if _draw(study, folder / name, plot, left, right):
                written.append(folder / name)
    return written


def _draw(study: optuna.Study, path: Path, plot, left: float, right: float) -> bool:
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks these plots experimental
            axes = plot(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as error:
        log.info("%s not drawn: %s", path.name, error)  # e.g. importances need 2+ varied trials
        return False
    figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
    figure.set_layout_engine("none")  # Optuna's history plot asks for a tight layout
    figure.set_size_inches(8, 5)
    figure.subplots_adjust(left=left, right=right, top=0.9, bottom=0.12)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True

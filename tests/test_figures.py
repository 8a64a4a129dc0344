"""Figures a person reads: titled, whole-number epochs, the kept epoch marked, nothing cut
off, pruned and failed trials apart from completed ones, a colour bar where colour is a value.

Each figure is built as a :class:`~matplotlib.figure.Figure` and inspected; the files are
checked for their size. No training: histories, predictions and heatmaps are made up.
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread

from hpsearch.choose import report
from hpsearch.choose.analysis import grad_cam_figure, misclassified_figure, save_grad_cam
from hpsearch.choose.reference import REFERENCE_NUMBERS
from hpsearch.choose.reproduce import NumberRow, numbers_figure
from hpsearch.figures.plots import (
    confusion_matrix_figure,
    save_confusion_matrix,
    save_training_curves,
    shorten_settings,
    training_curves_figure,
)
from hpsearch.search import summary

HISTORY = {
    "loss": [1.2, 0.8, 0.6, 0.5, 0.45],
    "val_loss": [1.3, 0.9, 0.8, 0.85, 0.9],
    "accuracy": [0.5, 0.7, 0.8, 0.85, 0.9],
    "val_accuracy": [0.45, 0.65, 0.7, 0.69, 0.68],
}
LONG = ("batch_norm=before, optimizer=rmsprop_momentum, learning_rate=0.009541, "
        "momentum=0.7077, dropout=none")  # fmt: skip
SHORTER = "batch_norm=none, optimizer=adam, learning_rate=0.009541, momentum=n/a, dropout=0.2"


def drawn(fig: Figure):
    """The figure laid out and drawn (as when saved); its renderer."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def assert_readable(fig: Figure) -> None:
    """A title; nothing outside the figure; titles and legends not drawn over each other."""
    renderer = drawn(fig)
    titles = [t for t in [fig._suptitle, *(ax.title for ax in fig.axes)] if t and t.get_text()]
    assert titles, "no title"
    tight, box = fig.get_tightbbox(renderer), fig.bbox_inches
    slack = 2 / fig.dpi
    assert tight.x0 >= -slack and tight.y0 >= -slack, f"cut off at the left/bottom: {tight}"
    assert tight.x1 <= box.x1 + slack and tight.y1 <= box.y1 + slack, f"cut off: {tight}"
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    boxes = [t.get_window_extent(renderer) for t in titles]
    boxes += [legend.get_window_extent(renderer) for legend in legends]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), f"{a} overlaps {b}"


def title_of(fig: Figure) -> str:
    return fig._suptitle.get_text() if fig._suptitle else fig.axes[0].get_title()


def integer_ticks(ax) -> bool:
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    return bool(ticks) and all(float(t).is_integer() for t in ticks)


def legend_texts(fig: Figure) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def colour_bars(fig: Figure) -> list[str]:
    """Labels of the figure's colour bars."""
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


# --- a trial's figures -------------------------------------------------------------------------


def test_training_curves_titled_with_whole_epochs_and_the_kept_epoch_marked():
    fig = training_curves_figure(HISTORY, best_epoch=3)
    assert_readable(fig)
    assert "epoch 3" in title_of(fig)
    for ax in fig.axes:
        assert integer_ticks(ax)
        kept = [line for line in ax.lines if list(line.get_xdata()) == [3, 3]]
        assert len(kept) == 1  # a vertical line at the kept epoch
    assert "kept weights (epoch 3)" in legend_texts(fig)
    unmarked = training_curves_figure(HISTORY)
    assert all(len(ax.lines) == 2 for ax in unmarked.axes)


def test_training_curves_file_at_its_size(tmp_path):
    path = save_training_curves(HISTORY, tmp_path / "c.png", 3)
    assert imread(path).shape[:2] == (352, 800)  # 10 x 4.4 inches at 80 dpi


def test_confusion_matrix_has_a_colour_bar_of_counts_and_long_class_names_fit(tmp_path):
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]  # fmt: skip
    labels = np.arange(500) % 10
    predicted = np.where(np.arange(500) % 7 == 0, (labels + 3) % 10, labels)
    fig = confusion_matrix_figure(labels, predicted, names, "validation (best epoch 4)")
    assert_readable(fig)
    assert title_of(fig).startswith("Confusion matrix")
    assert colour_bars(fig) == ["images"]
    path = save_confusion_matrix(labels, predicted, names, tmp_path / "m.png", "test")
    assert imread(path).shape[:2] == (504, 560)  # 7 x 6.3 inches at 80 dpi


# --- settings shortened with a key ------------------------------------------------------------


def test_long_settings_shortened_with_a_key_short_ones_left_alone():
    assert shorten_settings(["dropout=0.2", "dropout=0.5"]) == (["dropout=0.2", "dropout=0.5"], "")
    labels, key = shorten_settings([LONG, "batch_norm=none, optimizer=adam"])
    assert labels[1] == "bn=none, opt=adam"
    assert all(len(line) <= 48 for label in labels for line in label.split("\n"))
    assert "lr=0.009541" in labels[0].replace("\n", " ")
    for short, name in (("bn", "batch_norm"), ("lr", "learning_rate"), ("opt", "optimizer")):
        assert f"{short} = {name}" in key


# --- a study's report figures ------------------------------------------------------------------


def rows_and_curves(count: int) -> tuple[list[report.Row], dict[str, list[float]]]:
    rows, curves = [], {}
    for n in range(count):
        state = ("complete", "pruned", "failed")[n % 3]
        values = [0.3 + 0.1 * e + 0.01 * n for e in range({"complete": 6, "pruned": 2,
                                                           "failed": 3}[state])]  # fmt: skip
        setting = (LONG if n % 2 else SHORTER).replace("0.009541", f"{0.001 * (n + 1):.4g}")
        curves[f"run{n}"] = values
        rows.append(report.Row(
            n, setting, state, None if state == "failed" else max(values),
            0.8 if state == "complete" else None, len(values), 1.0, None, f"run{n}",
            config_key=setting, best_epoch=4 if state == "complete" else None,
        ))  # fmt: skip
    return rows, curves


@pytest.fixture
def study_rows(monkeypatch):
    def make(count: int) -> list[report.Row]:
        rows, curves = rows_and_curves(count)
        monkeypatch.setattr(report, "metric_history", lambda run_id, key: curves[run_id])
        return rows

    return make


def test_validation_curves_tell_outcomes_apart_and_mark_the_kept_epochs(study_rows):
    rows = study_rows(6)
    fig = report.validation_curves_figure(rows, "Study smoke: validation accuracy per epoch, "
                                          "one line a trial")  # as write_report titles it
    assert_readable(fig)
    ax = fig.axes[0]
    assert integer_ticks(ax)
    styles = {}
    for row in rows:
        line = next(line for line in ax.lines if line.get_label().startswith(f"#{row.number} "))
        assert row.state in line.get_label()
        styles.setdefault(row.state, set()).add((line.get_linestyle(), line.get_marker()))
    assert all(len(found) == 1 for found in styles.values())  # one style an outcome
    assert len({next(iter(found)) for found in styles.values()}) == 3  # three different ones
    stars = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines
             if line.get_marker() == "*"]  # fmt: skip
    complete = [r for r in rows if r.state == "complete"]
    assert sorted(stars) == sorted((4, report.metric_history(r.run_id, "")[3]) for r in complete)
    texts = legend_texts(fig)
    assert {"complete", "pruned", "failed", "kept weights (best epoch)"} <= set(texts)
    assert "learning_rate" not in " ".join(texts).replace("lr = learning_rate", "")  # shortened
    assert not colour_bars(fig)


def test_validation_curves_of_many_trials_coloured_by_number_with_a_colour_bar(study_rows):
    fig = report.validation_curves_figure(study_rows(report.MANY_TRIALS + 3))
    assert_readable(fig)
    assert colour_bars(fig) == ["trial number"]
    assert not any(text.startswith("#") for text in legend_texts(fig))  # no legend a trial


def test_accuracy_by_setting_draws_pruned_and_failed_trials_apart(study_rows):
    rows = study_rows(6)
    fig = report.accuracy_by_setting_figure(rows, "Study smoke: accuracy of the kept weights "
                                            "by setting")  # as write_report titles it
    assert_readable(fig)
    ax = fig.axes[0]
    bars = {round(bar.get_y() + bar.get_height() / 2): bar.get_width() for bar in ax.patches}
    labels = [t.get_text() for t in ax.get_yticklabels()]
    order = sorted(rows, key=lambda r: report._setting_order(r.setting))
    for i, row in enumerate(order):
        assert (bars[i] > 0) == (row.state == "complete"), row  # a bar: completed trials only
        assert all(len(line) <= 60 for line in labels[i].split("\n"))
    texts = legend_texts(fig)
    assert any(t.startswith("pruned trial") for t in texts) and "failed trial" in texts
    key = fig.legends[0].get_title().get_text()
    assert "lr = learning_rate" in key


# --- the study summary (Optuna's plots) --------------------------------------------------------


@pytest.fixture
def mixed_study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="mixed", direction="maximize")
    study.set_user_attr("objective", "best_val_accuracy")
    for n in range(7):
        trial = study.ask()
        trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        trial.suggest_categorical("optimizer", ["adam", "sgd"])
        trial.report(0.2 + 0.05 * n, 1)
        state = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                 optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)[n % 4]  # fmt: skip
        study.tell(trial, 0.5 + 0.05 * n if state == optuna.trial.TrialState.COMPLETE else None,
                   state=state)  # fmt: skip
    return study


def test_history_draws_pruned_and_failed_trials_apart(mixed_study, tmp_path):
    from optuna.visualization import matplotlib as optuna_plots

    written = summary._plots(mixed_study, tmp_path)
    assert [p.name for p in written] == ["optimization_history.png", "param_importances.png"]
    assert all(imread(p).shape[:2] == (500, 800) for p in written)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = summary._figure(mixed_study, "h", optuna_plots.plot_optimization_history,
                              summary._finish_history, 0.11, 0.7)  # fmt: skip
    try:
        assert_readable(fig)
        ax = fig.axes[0]
        assert "mixed" in ax.get_title() and "2 pruned" in ax.get_title()
        assert ax.get_ylabel() == "best_val_accuracy"
        texts = legend_texts(fig)
        assert {"complete trial", "pruned (value when stopped)", "failed (no value)"} <= set(texts)
        pruned = next(c for c in ax.collections if c.get_label().startswith("pruned"))
        assert sorted(pruned.get_offsets()[:, 0]) == [1, 5]
        assert integer_ticks(ax)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_importances_titled_without_optunas_legend(mixed_study):
    from optuna.visualization import matplotlib as optuna_plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig = summary._figure(mixed_study, "i", optuna_plots.plot_param_importances,
                              summary._finish_importances, 0.25, 0.96)  # fmt: skip
    try:
        assert_readable(fig)
        ax = fig.axes[0]
        assert ax.get_legend() is None and ax.get_title(loc="left") == ""
        assert "mixed" in ax.get_title() and "best_val_accuracy" in ax.get_title()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


# --- the final model's figures -----------------------------------------------------------------


@pytest.mark.slow  # a real Grad-CAM pass and a figure (a few seconds)
def test_grad_cam_has_a_colour_bar_and_marks_wrong_predictions(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 1), dtype=np.uint8)
    heatmaps = np.random.default_rng(1).random((6, 8, 8)).astype(np.float32)
    y_true, y_pred = [0, 1, 2, 0, 1, 2], [0, 2, 2, 0, 1, 1]
    fig = grad_cam_figure(images, heatmaps, y_true, y_pred, ["cat", "dog", "bird"])
    assert_readable(fig)
    assert "Grad-CAM" in title_of(fig)
    assert len(colour_bars(fig)) == 1 and "Grad-CAM" in colour_bars(fig)[0]
    red = [ax.get_title() for ax in fig.axes if ax.title.get_color() == "tab:red"]
    assert sum("(wrong)" in title for title in red) == 2
    path = save_grad_cam(images, heatmaps, y_true, y_pred, ["cat", "dog", "bird"],
                         tmp_path / "cam.png")  # fmt: skip
    height, width = imread(path).shape[:2]
    assert width > height  # pairs side by side, not one tall column


def test_misclassified_gallery_says_how_many_it_shows():
    images = np.zeros((40, 8, 8, 3), dtype=np.uint8)
    y_true = np.arange(40) % 3
    y_pred = np.where(np.arange(40) < 30, (y_true + 1) % 3, y_true)
    probabilities = np.full((40, 3), 1 / 3)
    fig = misclassified_figure(images, y_true, y_pred, probabilities, ["a", "b", "c"], limit=9)
    assert_readable(fig)
    assert "30 of 40" in title_of(fig) and "first 9" in title_of(fig)
    none = misclassified_figure(images, y_true, y_true, probabilities, ["a", "b", "c"])
    assert_readable(none)
    assert "none of 40" in title_of(none)


def test_reproduction_numbers_figure_marks_the_unmeasured_and_the_tolerance():
    rows = [NumberRow(n, [] if i == 1 else [n.test_accuracy / 100], [i], [20])
            for i, n in enumerate(REFERENCE_NUMBERS)]  # fmt: skip
    fig = numbers_figure(rows, "The reference study's test accuracies and ours")
    assert_readable(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["not measured"]
    assert "tolerance (reproduced)" in legend_texts(fig)

"""The drawing process: a study's trial figures drawn in a child process, with a fallback."""

from __future__ import annotations

import logging
import os
import signal
import time

import matplotlib
import numpy as np
import pytest
from conftest import drawing_children
from matplotlib.image import imread

from hpsearch.figures.drawing import DrawingProcess
from hpsearch.figures.plots import save_confusion_matrix, save_training_curves

HISTORY = {
    "loss": [1.2, 0.8, 0.6],
    "val_loss": [1.3, 0.9, 0.8],
    "accuracy": [0.5, 0.7, 0.8],
    "val_accuracy": [0.45, 0.65, 0.7],
}


@pytest.fixture
def drawer():
    process = DrawingProcess()
    yield process
    process.close()


@pytest.mark.slow
def test_figures_drawn_in_the_child_match_those_drawn_in_process(drawer, tmp_path):
    labels = np.arange(200) % 10
    predicted = np.where(np.arange(200) % 7 == 0, (labels + 1) % 10, labels)
    names = [str(n) for n in range(10)]

    def here(function, *args):  # with matplotlib's settings as a fresh process has them
        with matplotlib.rc_context():  # (Optuna's plots switch this one to ggplot)
            matplotlib.rc_file_defaults()
            return function(*args)

    for where, draw in (("child", drawer.draw), ("here", here)):
        (tmp_path / where).mkdir()
        assert draw(save_training_curves, HISTORY, tmp_path / where / "c.png") == (
            tmp_path / where / "c.png"
        )
        draw(save_confusion_matrix, labels, predicted, names, tmp_path / where / "m.png", "val")
    assert drawer.draw(os.getpid) != os.getpid()  # the child did draw them
    for name in ("c.png", "m.png"):
        child, here = imread(tmp_path / "child" / name), imread(tmp_path / "here" / name)
        assert child.shape == here.shape and child.shape[0] > 100
        np.testing.assert_array_equal(child, here)


def test_the_child_is_reused_started_in_its_own_session_and_ended_by_close(drawer):
    first = drawer.draw(os.getpid)
    assert drawer.draw(os.getpid) == first  # one process for every drawing
    assert drawing_children() == [first]
    assert os.getsid(first) != os.getsid(0)  # Ctrl-C in the terminal does not reach it
    drawer.close()
    assert drawing_children() == []
    assert drawer.draw(os.getpid) == os.getpid()  # after close: drawn here


@pytest.mark.slow
def test_an_error_in_the_drawing_is_raised_in_the_caller(drawer, tmp_path):
    with pytest.raises(FileNotFoundError):
        drawer.draw(save_training_curves, HISTORY, tmp_path / "missing" / "c.png")
    assert drawer.draw(os.getpid) != os.getpid()  # the child is still serving


def test_a_dead_child_falls_back_to_drawing_in_process_with_a_warning(drawer, tmp_path, caplog):
    child = drawer.draw(os.getpid)
    os.kill(child, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="hpsearch.figures.drawing"):
        path = drawer.draw(save_training_curves, HISTORY, tmp_path / "c.png")
    assert path.stat().st_size > 0
    assert "drawing in-process" in caplog.text
    assert drawer.draw(os.getpid) == os.getpid()


@pytest.mark.slow
def test_submitted_drawings_run_in_the_child_while_the_caller_goes_on(drawer, tmp_path):
    drawer.draw(os.getpid)  # the child started
    started = time.perf_counter()
    slow = drawer.submit(time.sleep, 1.0)
    failing = drawer.submit(save_training_curves, HISTORY, tmp_path / "missing" / "c.png")
    pid = drawer.submit(os.getpid)
    assert time.perf_counter() - started < 0.5  # sent, not waited for
    assert pid() not in (os.getpid(), None)  # answers read in order, whichever is asked first
    assert time.perf_counter() - started >= 1.0
    assert slow() is None
    with pytest.raises(FileNotFoundError):
        failing()
    assert drawer.draw(os.getpid) == pid()


def test_close_waits_for_the_drawings_sent(drawer):
    pid = drawer.submit(os.getpid)
    drawer.close()
    assert pid() != os.getpid()  # drawn by the child before it was ended
    assert drawing_children() == []


def test_a_drawing_sent_to_a_child_that_dies_is_drawn_in_process(drawer, tmp_path, caplog):
    child = drawer.draw(os.getpid)
    drawer.submit(time.sleep, 30)  # the child is busy with this when it dies
    curves = drawer.submit(save_training_curves, HISTORY, tmp_path / "c.png")
    pid = drawer.submit(os.getpid)
    os.kill(child, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="hpsearch.figures.drawing"):
        assert pid() == os.getpid()
        assert curves().stat().st_size > 0
    assert "drawing in-process" in caplog.text
    assert drawer.draw(os.getpid) == os.getpid()

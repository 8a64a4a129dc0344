"""A study's progress: a live tqdm bar on a terminal (a real pseudo-terminal here), with what
is printed meanwhile kept whole above it; plain per-trial lines anywhere else."""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import command, environment

from hpsearch.search.study_progress import StudyProgress
from hpsearch.util.progress import PROGRESS_ENV

# elapsed<left, as tqdm writes them: [00:03<00:01
ETA = re.compile(r"\[\d\d:\d\d<\d\d:\d\d")


def open_terminal(rows: int = 40, columns: int = 120) -> tuple[int, int]:
    """A pseudo-terminal of that size: (master, slave) file descriptors."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


def read_all(master: int, until: callable, timeout: float) -> str:
    """What the terminal shows, read until ``until()`` is true and nothing more comes."""
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif until():
            break
    return b"".join(chunks).decode(errors="replace")


def starts_a_line(screen: str, text: str) -> None:
    """Every ``text`` on ``screen`` starts a line (after a newline, or after the bar was cleared
    with a carriage return) and ends one: nothing drawn into or after it."""
    places = [m.start() for m in re.finditer(re.escape(text), screen)]
    assert places, f"{text!r} not shown"
    for at in places:
        assert screen[at - 1] in "\r\n", repr(screen[max(0, at - 80) : at + len(text)])
        end = screen.index("\n", at)
        assert "%|" not in screen[at:end], repr(screen[at:end])


def demo_study(values: list[float | None | str]) -> tuple[optuna.Study, callable]:
    """An in-memory study whose trial i returns values[i] (None: pruned, "fail": raises),
    printing a per-epoch line and logging a warning on the way, as training does."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="demo", direction="maximize")

    def objective(trial):
        print(f"Epoch 1/1 of trial {trial.number}")
        logging.getLogger("hpsearch.test_progress").warning("a warning in trial %d", trial.number)
        value = values[trial.number]
        if value is None:
            raise optuna.TrialPruned()
        if value == "fail":
            raise RuntimeError("boom")
        return value

    return study, objective


@contextlib.contextmanager
def logger_to(stream):
    logger = logging.getLogger("hpsearch.test_progress")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


VALUES = [0.5, None, "fail", 0.8625, 0.7]  # trial 2 fails: 4 of 4 done after five trials


def test_on_a_terminal_a_bar_with_counts_best_and_time_left_under_whole_lines(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    master, slave = open_terminal()
    terminal = open(slave, "w", buffering=1, encoding="utf-8", closefd=True)  # noqa: SIM115
    study, objective = demo_study(VALUES)
    screen: list[str] = []
    reader = threading.Thread(target=lambda: screen.append(
        read_all(master, until=lambda: terminal.closed, timeout=60)))  # fmt: skip
    reader.start()
    progress = StudyProgress(4, lambda line: print(line))
    try:
        with monkeypatch.context() as patch, logger_to(terminal) as handler:
            patch.setattr(sys, "stdout", terminal)
            patch.setattr(sys, "stderr", terminal)
            with progress.bar(study):
                assert sys.stdout is not terminal and handler.stream is not terminal
                study.optimize(objective, n_trials=len(VALUES), catch=(RuntimeError,),
                               callbacks=[progress])
            assert sys.stdout is terminal and handler.stream is terminal  # all given back
            print("after the study")
    finally:
        terminal.close()
        reader.join()
        os.close(master)
    shown = screen[0]
    assert "[demo]" in shown and "4/4 trials" in shown and "100%|" in shown
    assert "3 complete, 1 pruned, 1 failed, best 0.8625 (trial 3)" in shown
    assert ETA.search(shown), shown[-500:]
    for text in ("Epoch 1/1 of trial 3", "a warning in trial 3", "after the study",
                 "[demo] trial 4 complete value 0.7000 in"):  # fmt: skip
        starts_a_line(shown, text)
    line = shown.rstrip("\r\n").split("\n")[-2]
    last = [part for part in line.split("\r") if part.strip()][-1]  # the bar left on screen
    assert "4/4 trials" in last and "best 0.8625" in last, repr(last)


def test_off_a_terminal_the_same_plain_lines_and_no_bar(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    out, err = io.StringIO(), io.StringIO()
    study, objective = demo_study(VALUES)
    lines: list[str] = []
    progress = StudyProgress(4, lines.append)
    with monkeypatch.context() as patch, logger_to(err):
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        with progress.bar(study):
            assert sys.stdout is out
            study.optimize(objective, n_trials=len(VALUES), catch=(RuntimeError,),
                               callbacks=[progress])
    assert "%|" not in out.getvalue() + err.getvalue()
    assert lines[-1].startswith("[demo] trial 4 complete value 0.7000 in ")
    assert lines[-1].endswith("| 4/4 done: 3 complete, 1 pruned, 1 failed | best 0.8625 (trial 3)")
    assert "trial 2 fail (unknown)" in lines[2]


@pytest.mark.parametrize("env", [{PROGRESS_ENV: "lines"}], ids=["HPSEARCH_PROGRESS=lines"])
def test_plain_lines_can_be_asked_for_on_a_terminal(monkeypatch, env):
    monkeypatch.setenv(PROGRESS_ENV, env[PROGRESS_ENV])
    master, slave = open_terminal()
    terminal = open(slave, "w", buffering=1, encoding="utf-8")  # noqa: SIM115
    study, objective = demo_study(VALUES[:2])
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stderr", terminal)
            progress = StudyProgress(2, lambda line: None)
            with progress.bar(study):
                assert progress._bar is None
                study.optimize(objective, n_trials=2, callbacks=[progress])
    finally:
        terminal.close()
        os.close(master)


STUDY = """\
name: tty
sampler: {type: random, seed: 0}
n_trials: 2
data: {dataset: digits, limit: 100}
fixed: {architecture: baseline1, epochs: 2, batch_size: 32}
"""


@pytest.mark.slow
def test_a_search_on_a_terminal_draws_the_bar_and_keras_lines_stay_whole(tmp_path: Path):
    """The real command under a pseudo-terminal, per-epoch lines on (no -q)."""
    (tmp_path / "tty.yaml").write_text(STUDY)
    master, slave = open_terminal(40, 150)
    env = {k: v for k, v in environment().items() if k != PROGRESS_ENV}
    process = subprocess.Popen(
        command("search", "tty.yaml", "--storage", "sqlite:///optuna.db",
                "--tracking-uri", "sqlite:///mlflow.db"),
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=tmp_path, env=env,
    )  # fmt: skip
    os.close(slave)
    try:
        shown = read_all(master, until=lambda: process.poll() is not None, timeout=500)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    assert code == 0, shown[-3000:]
    assert "[tty]" in shown and "2/2 trials" in shown and "100%|" in shown, shown[-3000:]
    assert ETA.search(shown)
    assert re.search(r"2 complete, 0 pruned, 0 failed, best \d\.\d{4} \(trial \d\)", shown)
    starts_a_line(shown, "Epoch 2/2")
    starts_a_line(shown, "[tty] trial 1 complete value ")
    assert "| 2/2 done: 2 complete, 0 pruned, 0 failed | best" in shown  # the plain line too

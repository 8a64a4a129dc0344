"""What a search prints: no tracebacks for failed or interrupted trials, true progress
counts, warnings apart from the progress. Real Optuna, MLflow and Keras on tiny models."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import keras
import pytest
from conftest import environment

from hpsearch.search.lifecycle import run_search
from hpsearch.search.options import WorkerOptions
from hpsearch.search.study_file import parse_study

pytestmark = pytest.mark.slow  # searches that train

SCRIPT = """\
    import os, signal
    import keras, mlflow
    from hpsearch.search.lifecycle import run_search
    from hpsearch.search.study_file import parse_study

    mlflow.set_tracking_uri("sqlite:///mlflow.db")

    class Explode(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            raise RuntimeError("simulated crash inside training")

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            os.kill(os.getpid(), signal.SIGINT)

    def spec(name):
        return parse_study({"name": name, "sampler": {"type": "random", "seed": 0},
                            "n_trials": 3, "data": {"dataset": "digits", "limit": 100},
                            "fixed": {"architecture": "baseline1", "epochs": 2,
                                      "batch_size": 32}}, name + ".yaml")

    outcome = run_search(spec("failing"), "sqlite:///optuna.db", verbose=0,
                         extra_callbacks=lambda t: [Explode()] if t.number == 1 else [])
    print("counts", outcome.counts)
    outcome = run_search(spec("ctrl-c"), "sqlite:///optuna.db", verbose=0,
                         extra_callbacks=lambda t: [CtrlC()])
    print("interrupted", outcome.interrupted)
"""


def test_failed_and_interrupted_trials_print_no_traceback_and_progress_stays_within_total(
    tmp_path,
):
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)], capture_output=True, text=True,
        timeout=600, cwd=tmp_path, env=environment(),
    )  # fmt: skip
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "counts {'complete': 3, 'pruned': 0, 'failed': 1}" in done.stdout
    assert "interrupted True" in done.stdout
    assert "Traceback" not in done.stderr
    assert "failed with value None" not in done.stderr
    # Optuna's own line stays, with the error's text (one line, no traceback)
    assert "Trial 1 failed with parameters: {} because of the following error: " \
           "RuntimeError('simulated crash inside training')" in done.stderr  # fmt: skip
    assert "[failing] trial 1 fail (exception:RuntimeError)" in done.stdout
    shown = re.findall(r"\[failing\] trial \d.*\| (\d+)/(\d+) done", done.stdout)
    assert [int(n) for n, _ in shown] == [1, 1, 2, 3] and {t for _, t in shown} == {"3"}
    assert "| 3/3 done: 3 complete, 0 pruned, 1 failed" in done.stdout


class Explode(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        raise RuntimeError("simulated crash inside training")


def test_warnings_go_to_warn_and_the_progress_to_echo(stores):
    storage, _ = stores
    spec = parse_study(
        {"name": "warned", "sampler": {"type": "random"}, "n_trials": 3,
         "data": {"dataset": "digits", "limit": 100},
         "fixed": {"architecture": "baseline1", "epochs": 1, "batch_size": 32}},
        "warned.yaml",
    )  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    run_search(spec, storage, echo=out.append, warn=err.append, verbose=0,
               options=WorkerOptions(max_failures_in_a_row=1),
               extra_callbacks=lambda trial: [Explode()])  # fmt: skip
    assert len(err) == 1 and "stopping: 1 trials in a row failed" in err[0]
    assert not any("stopping" in line for line in out)
    assert any("trial 0 fail (exception:RuntimeError)" in line for line in out)

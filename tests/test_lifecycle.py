"""The search lifecycle's parts: the engine choice, the typed trial record, the failure rule."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import get_args

import optuna
import pytest
from conftest import environment

from hpsearch.errors import HpsearchError
from hpsearch.records import StudyRecord, TrialRecord
from hpsearch.search.engines import ENGINE_NAMES, ONE_PROCESS, EngineName, engine_class
from hpsearch.search.lifecycle import FailureStreak
from hpsearch.search.options import WorkerOptions


def test_every_engine_name_has_its_class_and_the_study_file_accepts_exactly_those():
    from hpsearch.search.study_file import ENGINE_SAMPLERS, StudyFile

    assert ENGINE_NAMES == get_args(EngineName) == ("optuna", "keras_tuner")
    assert set(ENGINE_SAMPLERS) == set(ENGINE_NAMES)
    assert set(ONE_PROCESS) <= set(ENGINE_NAMES)
    assert get_args(StudyFile.model_fields["engine"].annotation) == ENGINE_NAMES
    for name in ENGINE_NAMES:
        assert engine_class(name).name == name
    with pytest.raises(HpsearchError, match="unknown engine 'ray'.*optuna, keras_tuner"):
        engine_class("ray")


def test_a_trial_record_round_trips_through_a_real_optuna_trial():
    study = optuna.create_study()
    trial = study.ask()
    TrialRecord(mlflow_run_id="abc", seed=7, repeat=0).write(trial)  # partial writes add up
    TrialRecord(fail_reason="nan_loss", test_accuracy=0.5).write(trial)
    assert trial.user_attrs == {"mlflow_run_id": "abc", "seed": 7, "repeat": 0,
                                "fail_reason": "nan_loss", "test_accuracy": 0.5}  # fmt: skip
    study.tell(trial, 0.9)
    record = TrialRecord.of(study.trials[0])
    assert (record.mlflow_run_id, record.seed, record.repeat) == ("abc", 7, 0)
    assert record.metric("test_accuracy") == 0.5 and record.metric("no_such") is None
    assert record.without_failure() == {"mlflow_run_id": "abc", "seed": 7, "repeat": 0,
                                        "test_accuracy": 0.5}  # fmt: skip


def test_records_read_old_studies_and_ignore_keys_they_do_not_know():
    old = {"mlflow_run_id": "r", "config": {"epochs": 3}, "some_future_key": 1}
    record = TrialRecord.from_attrs(old)
    assert record.config == {"epochs": 3} and record.to_attrs() == {
        "mlflow_run_id": "r", "config": {"epochs": 3}}  # fmt: skip
    study = optuna.create_study()
    StudyRecord(mlflow_parent_run_id="p", searched=["dropout"], repeats=2).write(study)
    about = StudyRecord.of(study)
    assert (about.mlflow_parent_run_id, about.searched, about.engine) == ("p", ["dropout"], None)


def test_the_failure_rule_stops_after_n_in_a_row_and_a_success_resets_it():
    said: list[str] = []
    streak = FailureStreak("s", WorkerOptions(max_failures_in_a_row=3), said.append)
    assert [streak.after(reason) for reason in ("nan_loss", "oom", None)] == [False] * 3
    assert [streak.after("nan_loss") for _ in range(3)] == [False, False, True]
    assert said == ["[s] stopping: 3 trials in a row failed (last: nan_loss); "
                    "fix the cause and rerun to resume"]  # fmt: skip


def test_a_trial_that_lost_the_tracking_server_is_not_counted(stores):
    # the tracking store (a local one, from the fixture) is reachable again: no wait
    streak = FailureStreak("s", WorkerOptions(max_failures_in_a_row=1), lambda _: None)
    assert streak.after("tracking_unreachable") is False and streak.count == 0


SEARCH = """\
    import sys
    from hpsearch.cli import main
    main(["search", "study.yaml", "--storage", "sqlite:///optuna.db", "--tracking-uri",
          "sqlite:///mlflow.db", "-q"], standalone_mode=False)
    assert "keras_tuner" not in sys.modules, "an Optuna search imported keras_tuner"
    print("ok")
"""


@pytest.mark.slow  # trains one tiny trial
def test_an_optuna_search_never_imports_keras_tuner(tmp_path: Path):
    (tmp_path / "study.yaml").write_text(textwrap.dedent("""\
        name: no-kt
        n_trials: 1
        data: {dataset: digits, limit: 60}
        fixed: {architecture: baseline1, epochs: 1, batch_size: 32}
        space: {dropout: {choices: [none, 0.2]}}
    """))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SEARCH)], cwd=tmp_path,
                          env=environment(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
    trials = optuna.load_study(study_name="no-kt", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in trials.trials] == ["COMPLETE"]

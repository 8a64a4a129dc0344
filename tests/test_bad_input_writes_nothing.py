"""Bad input writes nothing: data errors stop a search before its study exists, and
`best`/`report` on a missing study create no storage. The real CLI, real SQLite stores."""

from __future__ import annotations

import subprocess

import optuna
import pytest
from conftest import command, environment

STUDY = """\
name: empty-data
sampler: {type: random, seed: 0}
n_trials: 2
data: {dataset: folder}
fixed: {architecture: baseline1, epochs: 1, batch_size: 32}
space: {batch_norm: {choices: [none, before]}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_search_with_an_empty_data_dir_exits_2_and_creates_no_study(workers, tmp_path):
    study = tmp_path / "empty-data.yaml"
    study.write_text(STUDY)
    (tmp_path / "data").mkdir()
    storage = tmp_path / "optuna.db"
    done = subprocess.run(
        command("search", str(study), "--data-dir", str(tmp_path / "data"), "--workers", workers,
                "--storage", f"sqlite:///{storage}",
                "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"),
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environment(),
    )  # fmt: skip
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Error: folder: expected images" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    if storage.exists():  # (nothing should make it; if something did, it holds no study)
        assert optuna.get_all_study_names(f"sqlite:///{storage}") == []
    assert not storage.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "empty-data.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("args", [["best", "--study", "nope"], ["report", "nope"]])
def test_best_and_report_on_a_missing_study_exit_2_and_leave_no_storage_file(args, tmp_path):
    done = subprocess.run(command(*args), capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=environment())  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "no study named 'nope': the storage file" in done.stderr
    assert "does not exist" in done.stderr
    assert not (tmp_path / "optuna.db").exists()
    assert list(tmp_path.iterdir()) == []

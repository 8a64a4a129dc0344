"""``mlflow run . -e search``: the run MLflow Projects makes is the study's parent run (when it
is in the study's experiment), or is linked both ways with the study's parent run.

Real ``mlflow run`` processes on this checkout's MLproject, a real tracking server, a tiny study.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import environment, parents_and_children
from mlflow import MlflowClient

pytestmark = pytest.mark.slow  # real mlflow run processes train a study

ROOT = Path(__file__).resolve().parents[1]  # the checkout: its MLproject


def mlflow_run(tmp_path: Path, tracking: str, name: str, *extra: str) -> None:
    study = tmp_path / f"{name}.yaml"
    study.write_text(textwrap.dedent(f"""\
        name: {name}
        sampler: {{type: random, seed: 0}}
        n_trials: 2
        data: {{dataset: digits, limit: 100}}
        fixed: {{architecture: baseline1, epochs: 1, batch_size: 32}}
        space: {{learning_rate: {{low: 1.0e-3, high: 1.0e-2, log: true}}}}
        """))  # fmt: skip
    env = {**environment(), "MLFLOW_TRACKING_URI": tracking,
           "HPSEARCH_SPOOL_DIR": str(tmp_path / "spool")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "search", "--env-manager",
         "local", "-P", f"study={study}", "-P", f"storage=sqlite:///{tmp_path / 'optuna.db'}",
         "-P", f"tracking_uri={tracking}", *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_mlflow_run_into_the_study_experiment_is_the_study_parent(mlflow_server, tmp_path):
    mlflow_run(tmp_path, mlflow_server, "adopted", "--experiment-name", "adopted")
    client = MlflowClient(tracking_uri=mlflow_server)
    parents, children = parents_and_children(client, "adopted")
    assert len(parents) == 1, [p.data.tags.get("mlflow.runName") for p in parents]
    parent = parents[0]
    assert parent.data.tags["mlflow.project.entryPoint"] == "search"  # the project's own run
    assert parent.data.tags["hpsearch.role"] == "study"
    assert parent.data.tags["mlflow.runName"] == "adopted"
    assert parent.info.status == "FINISHED"
    assert len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}


def test_mlflow_run_elsewhere_links_both_ways(mlflow_server, tmp_path):
    mlflow_run(tmp_path, mlflow_server, "linked", "--experiment-name", "launches")
    client = MlflowClient(tracking_uri=mlflow_server)
    launches = client.get_experiment_by_name("launches").experiment_id
    [project] = client.search_runs([launches])
    [parent], children = parents_and_children(client, "linked")
    assert len(children) == 2
    assert project.data.tags["hpsearch.study_parent_run_id"] == parent.info.run_id
    assert parent.data.tags["hpsearch.project_run_id"] == project.info.run_id
    note = project.data.tags["mlflow.note.content"]
    assert "study **linked**" in note and parent.info.run_id in note
    assert "--experiment-name linked" in note

"""A worker that dies (kill -9): its trial is failed as lost and run again, at once when it
ran on this machine, after the heartbeat's grace period elsewhere; a rerun never ends short.

Real Optuna (SQLite), real MLflow, real Keras on tiny digits models."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap

import optuna
import pytest
from conftest import command, environment, parents_and_children
from mlflow import MlflowClient
from optuna.trial import TrialState

from hpsearch.records import TrialRecord
from hpsearch.search.lifecycle import run_search
from hpsearch.search.lost_trials import _worker_gone, process_start
from hpsearch.search.options import WorkerOptions
from hpsearch.search.storage import make_storage
from hpsearch.search.study_file import parse_study

HOST = socket.gethostname()


def gone(attrs: dict) -> bool:
    return _worker_gone(TrialRecord.from_attrs(attrs))


def test_a_local_worker_is_lost_when_its_process_is_gone_or_its_pid_was_reused():
    alive = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        start = process_start(alive.pid)
        assert start is not None
        assert not gone({"worker": f"{HOST}:{alive.pid}", "worker_start": start})
        assert gone({"worker": f"{HOST}:{dead.pid}", "worker_start": start})
        reused = start.rsplit("/", 1)[0] + "/1"  # the pid now names another process
        assert gone({"worker": f"{HOST}:{alive.pid}", "worker_start": reused})
        assert not gone({"worker": f"{HOST}:{alive.pid}"})  # no start: os.kill decides
        assert gone({"worker": f"{HOST}:{dead.pid}"})
        # another machine, or another PID namespace (a container of the same host name):
        # left to the heartbeat
        assert not gone({"worker": f"elsewhere:{dead.pid}", "worker_start": start})
        other = "boot/pid:[1]/" + start.rsplit("/", 1)[1]
        assert not gone({"worker": f"{HOST}:{dead.pid}", "worker_start": other})
        assert not gone({})
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.slow
def test_a_rerun_right_after_kill_9_runs_the_lost_trial_again_and_reaches_the_total(tmp_path):
    study_file = tmp_path / "lost.yaml"
    study_file.write_text(textwrap.dedent("""\
        name: lost
        sampler: {type: random, seed: 4}
        n_trials: 3
        data: {dataset: digits, limit: 100}
        fixed: {architecture: baseline1, epochs: 3, batch_size: 32}
        space: {learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}}
        """))  # fmt: skip
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = command("search", str(study_file), "--storage", storage, "--tracking-uri", tracking)
    victim = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=tmp_path, env=environment())  # fmt: skip
    seen = False
    for line in victim.stdout:  # trial 0 done; trial 1 inside `fit`, in its second epoch
        seen = seen or "[lost] trial 0" in line
        if seen and line.startswith("Epoch 2/"):
            break
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    victim.stdout.close()
    before = optuna.load_study(study_name="lost", storage=storage).trials
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]

    rerun = subprocess.run(args + ["--quiet"], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path, env=environment())  # fmt: skip
    print(rerun.stdout)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming: 2 of 3 trials left;" in rerun.stdout  # the lost trial failed first

    trials = optuna.load_study(study_name="lost", storage=storage).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    lost = trials[1]
    assert lost.state == TrialState.FAIL and lost.user_attrs["fail_reason"] == "worker_lost"
    assert lost.user_attrs["worker"] == f"{HOST}:{victim.pid}"
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert retried.state == TrialState.COMPLETE and retried.params == lost.params
    assert "fail_reason" not in retried.user_attrs

    client = MlflowClient(tracking_uri=tracking)
    parents, children = parents_and_children(client, "lost")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(run.info.status != "RUNNING" for run in children)
    lost_run = client.get_run(lost.user_attrs["mlflow_run_id"])
    assert lost_run.info.status == "FAILED"
    assert lost_run.data.tags["hpsearch.failure_reason"] == "worker_lost"
    assert len(children) == 4  # 3 completed, 1 lost


@pytest.mark.slow
def test_the_last_trial_running_elsewhere_is_waited_for_then_failed_as_lost_and_retried(stores):
    storage, _ = stores
    spec = parse_study(
        {"name": "elsewhere", "sampler": {"type": "random", "seed": 1}, "n_trials": 3,
         "data": {"dataset": "digits", "limit": 100},
         "fixed": {"architecture": "baseline1", "epochs": 1, "batch_size": 32},
         "space": {"batch_norm": {"choices": ["none", "before"]}}},
        "elsewhere.yaml",
    )  # fmt: skip
    options = WorkerOptions(heartbeat=2, grace=8)
    run_search(spec, storage, n_trials=1, echo=lambda _: None, verbose=0, options=options)
    # a worker on another machine starts a trial, beats once, and is lost
    other = optuna.load_study(study_name="elsewhere", storage=make_storage(storage, options))
    trial = other.ask()
    trial.set_user_attr("worker", "another-machine:4242")
    other._storage.record_heartbeat(trial._trial_id)

    lines: list[str] = []
    outcome = run_search(spec, storage, n_trials=3, echo=lines.append, verbose=0,
                         options=options)  # fmt: skip
    assert outcome.counts == {"complete": 3, "pruned": 0, "failed": 1}, lines
    assert "2 of 3 trials left (1 running in other workers)" in lines[0]
    assert any("waiting for 1 trial(s) running in other workers" in line for line in lines)
    trials = optuna.load_study(study_name="elsewhere", storage=storage).trials
    assert trials[1].state == TrialState.FAIL
    assert trials[1].user_attrs["fail_reason"] == "worker_lost"  # on the Optuna trial too
    (retried,) = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert retried.state == TrialState.COMPLETE and "fail_reason" not in retried.user_attrs
    for line in lines:  # never more done than the total
        if " done: " in line:
            finished, total = line.split("| ")[1].split(" done")[0].split("/")
            assert int(finished) <= int(total)

"""Fault injection: a worker killed (kill -9) or stopped (SIGTERM) at each phase of a trial,
the tracking server killed mid-trial, a worker of a seeded pair killed; then a rerun.

After each: the study reaches exactly its total, no configuration ran to completion twice,
no Optuna trial or MLflow run is left RUNNING, every COMPLETE trial's run holds its model
and figures. The worker stops itself at the named moment (``HPSEARCH_FAILPOINT``, see
:mod:`hpsearch.util.failpoints`), so the signal lands there and not after a guessed sleep.

Real processes, real SQLite and PostgreSQL storages, a real MLflow server, tiny digits models.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from conftest import TRIAL_ARTIFACTS, command, environment, parents_and_children
from mlflow import MlflowClient
from optuna.trial import TrialState

from hpsearch.util.failpoints import ENV, POINTS

pytestmark = pytest.mark.slow  # real workers killed mid-trial, a real MLflow server

GRID = [12, 16, 24, 32]  # batch sizes: the study's configurations, each to be run once
STUDY = """\
    name: {name}
    sampler: {{type: grid}}
    data: {{dataset: digits, limit: 160}}
    fixed: {{architecture: baseline1, epochs: 3, patience: 20}}
    space: {{batch_size: {{choices: {grid}}}}}
    """


def study_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(STUDY.format(name=name, grid=GRID)))
    return path


def worker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**environment(), "HPSEARCH_SPOOL_DIR": str(tmp_path / "spool"), **extra}


def state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def wait_until_stopped(process: subprocess.Popen, point: str, timeout: float = 180) -> None:
    """Until the worker has stopped itself at ``point`` (state T in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the worker ended (exit {process.returncode}) before {point}: "
                        f"{output[-3000:]}")  # fmt: skip
        if state_of(process.pid) == "T":
            return
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"the worker never reached {point}")


def hit(process: subprocess.Popen, how: str) -> None:
    """kill -9, or SIGTERM delivered as the stopped process resumes."""
    if how == "kill -9":
        process.send_signal(signal.SIGKILL)
    else:
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGCONT)
    try:
        process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"the worker did not end within 120 s of {how}")


def check_study(name: str, storage, tracking: str, grid: list | None = GRID) -> list:
    """What must hold after every fault and its rerun; returns the COMPLETE trials."""
    trials = optuna.load_study(study_name=name, storage=storage).trials
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and "WAITING" not in states, states
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == (len(grid) if grid else len(done)), states  # exactly the total
    assert len({t.number for t in trials}) == len(trials)
    if grid is not None:  # each configuration completed once: nothing lost, nothing repeated
        assert sorted(t.params["batch_size"] for t in done) == sorted(grid), states
    client = MlflowClient(tracking_uri=tracking)
    parents, children = parents_and_children(client, name)
    assert [r.info.status for r in [*parents, *children] if r.info.status == "RUNNING"] == []
    for trial in done:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED", (trial.number, run.info.status)
        assert "hpsearch.artifacts_incomplete" not in run.data.tags, run.data.tags
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert TRIAL_ARTIFACTS <= files, (trial.number, sorted(files))
    return done


def chain_of_faults(tmp_path, name: str, storage: str, tracking: str, faults) -> None:
    """One worker after another on one study, each hit at its point, then a clean rerun.

    Each worker after the first is also the rerun of the fault before it: it must find the
    trial, run or spool entry its predecessor left, and recover it.
    """
    study = study_file(tmp_path, name)
    args = command("worker", str(study), "--storage", storage, "--tracking-uri", tracking,
                   "--heartbeat", "1", "--grace", "10", "--max-retry", "9", "--quiet")  # fmt: skip
    for point, how in faults:
        started = time.monotonic()
        stopping = worker_env(tmp_path, **{ENV: point})
        victim = subprocess.Popen(args, cwd=tmp_path, env=stopping, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)  # fmt: skip
        wait_until_stopped(victim, point)
        hit(victim, how)
        if how == "SIGTERM":  # interrupted, and says so by its exit status
            assert victim.returncode != 0, f"exit 0 after SIGTERM at {point}"
        states = [t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials]
        print(f"{how} at {point}: {time.monotonic() - started:.1f} s; trials {states}")
    started = time.monotonic()
    rerun = subprocess.run(args, cwd=tmp_path, env=worker_env(tmp_path), capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr, rerun.stderr[-3000:]
    print(f"rerun: {time.monotonic() - started:.1f} s")
    check_study(name, storage, tracking)
    assert not any((tmp_path / "spool").glob("*/run.json")), "a spool entry left behind"


def test_kill_9_at_each_phase_on_sqlite_loses_and_repeats_nothing(mlflow_server, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    faults = [(point, "kill -9") for point in POINTS]
    chain_of_faults(tmp_path, "kill-9", storage, mlflow_server, faults)


def test_sigterm_at_each_phase_and_kill_9_on_postgresql_lose_and_repeat_nothing(
    postgres_url, mlflow_server, tmp_path
):
    faults = [(point, "SIGTERM") for point in POINTS] + [("first_epoch", "kill -9")]
    chain_of_faults(tmp_path, "sigterm", postgres_url, mlflow_server, faults)


def test_tracking_server_killed_mid_trial_and_restarted(own_mlflow_server, tmp_path):
    """The server dies (kill -9) during a trial's first epoch and comes back 3 s later."""
    url, start, stop = own_mlflow_server
    study = study_file(tmp_path, "server-lost")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = command("worker", str(study), "--storage", storage, "--tracking-uri", url, "--quiet")
    stopping = worker_env(tmp_path, **{ENV: "first_epoch"})
    worker = subprocess.Popen(args, cwd=tmp_path, env=stopping, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_until_stopped(worker, "first_epoch")
    stop(signal.SIGKILL)
    worker.send_signal(signal.SIGCONT)
    time.sleep(3)
    start()
    out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, out[-2000:] + err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    check_study("server-lost", storage, url)


def test_a_worker_of_a_seeded_pair_killed_then_a_rerun(mlflow_server, tmp_path):
    """Two workers on one seeded study; one is killed in its first epoch; a rerun completes it.
    No two trials share parameters (each worker's sampler has its own seed)."""
    study = tmp_path / "pair.yaml"
    study.write_text(textwrap.dedent("""\
        name: pair
        sampler: {type: random, seed: 7}
        n_trials: 4
        data: {dataset: digits, limit: 160}
        fixed: {architecture: baseline1, epochs: 2, batch_size: 32, patience: 20}
        space: {learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}}
        """))  # fmt: skip
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    base = ["--storage", storage, "--tracking-uri", mlflow_server, "--heartbeat", "1",
            "--grace", "10", "--quiet"]  # fmt: skip
    workers = [
        subprocess.Popen(command("worker", str(study), *base, "--worker-index", str(index)),
                         cwd=tmp_path, env=worker_env(tmp_path, **({ENV: "first_epoch"} if index
                                                                  else {})),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for index in range(2)
    ]  # fmt: skip
    wait_until_stopped(workers[1], "first_epoch")
    hit(workers[1], "kill -9")
    out = workers[0].communicate(timeout=300)[0]
    assert workers[0].returncode == 0, out[-3000:]
    rerun = subprocess.run(command("worker", str(study), *base), cwd=tmp_path,
                           env=worker_env(tmp_path), capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    done = check_study("pair", storage, mlflow_server, grid=None)
    assert len(done) == 4
    rates = [t.params["learning_rate"] for t in optuna.load_study(
        study_name="pair", storage=storage).trials if "failed_trial" not in t.system_attrs]
    assert len(set(rates)) == len(rates), rates  # no shared params but a retry of a lost trial


def test_a_grid_point_that_never_completed_is_named_when_the_grid_ends(tmp_path):
    """Optuna's grid counts a failed point as visited: the search says which and why."""
    from hpsearch.search.optuna_engine import _warn_grid_points_lost
    from hpsearch.search.study_file import load_study

    spec = load_study(study_file(tmp_path, "given-up"))
    study = optuna.create_study(study_name="given-up", storage=f"sqlite:///{tmp_path / 'o.db'}")
    for number, size in enumerate(GRID):  # as the grid ran them (its sampler stops the study)
        study.enqueue_trial({"batch_size": size})
        trial = study.ask()
        trial.suggest_categorical("batch_size", GRID)
        if number == 1:
            trial.set_user_attr("fail_reason", "worker_lost")
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, 0.5)
    said: list[str] = []
    _warn_grid_points_lost(study, spec.name, said.append)
    failed = study.trials[1]
    assert said == [f"[given-up] grid point {failed.params} did not complete: trial 1 failed "
                    "(worker_lost); the grid does not run a failed point again (raise "
                    "--max-retry for lost workers)"]  # fmt: skip

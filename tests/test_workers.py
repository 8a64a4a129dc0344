"""Scale-out and faults: workers on PostgreSQL, kill -9, a tracking server that goes away,
passwords, bad input. Real PostgreSQL, real MLflow server processes, real training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from conftest import parents_and_children
from mlflow import MlflowClient
from optuna.trial import TrialState

pytestmark = pytest.mark.slow  # real workers, PostgreSQL and MLflow servers, training

ROOT = Path(__file__).parents[1]


def study_file(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(body))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpsearch.cli", *args]


def env(**extra: str) -> dict[str, str]:
    base = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    base.pop("MLFLOW_TRACKING_URI", None)
    return base


def with_password(url: str, user: str = "alice", password: str = "tr4ck-s3cret") -> str:
    return url.replace("http://", f"http://{user}:{password}@")


def test_four_workers_share_one_study_on_postgresql(postgres_url, mlflow_server, tmp_path):
    study = study_file(tmp_path, "fleet", """\
        sampler: {type: random, seed: 1}
        n_trials: 12
        data: {dataset: digits, limit: 100}
        fixed: {architecture: baseline1, epochs: 1, batch_size: 32}
        space: {batch_norm: {choices: [none, before, after]}, dropout: {choices: [none, 0.2]}}
        """)  # fmt: skip
    tracking = with_password(mlflow_server)
    started = time.monotonic()
    done = subprocess.run(
        cli("search", str(study), "--workers", "4", "--storage", postgres_url,
            "--tracking-uri", tracking, "--quiet"),
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env(),
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"4 workers, 12 trials: {seconds:.1f} s")

    storage = optuna.storages.RDBStorage(postgres_url)
    trials = optuna.load_study(study_name="fleet", storage=storage).trials
    storage.engine.dispose()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 12 and len(trials) == 12
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(12))
    assert len({t.user_attrs["worker"] for t in trials}) == 4  # four processes took part
    client = MlflowClient(tracking_uri=mlflow_server)
    parents, children = parents_and_children(client, "fleet")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 12
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == numbers

    # passwords of the storage and the tracking URI appear nowhere
    secrets = ("tr4ck-s3cret", postgres_url.split(":")[2].split("@")[0])
    logged = [done.stdout, done.stderr]
    for run in [*parents, *children]:
        logged += [*run.data.params.values(), *run.data.tags.values()]
    parent_id = parents[0].info.run_id
    for name in ("trials.csv", "best_config.yaml"):
        path = client.download_artifacts(parent_id, name, str(tmp_path))
        logged.append(Path(path).read_text())
    for secret in secrets:
        assert all(secret not in text for text in logged), secret
    assert ":***@" in done.stdout


def test_kill_9_of_a_worker_fails_its_trial_which_is_retried(postgres_url, mlflow_server, tmp_path):
    study = study_file(tmp_path, "crash", """\
        sampler: {type: random, seed: 2}
        n_trials: 3
        data: {dataset: digits, limit: 300}
        fixed: {architecture: baseline2, epochs: 8, batch_size: 16, patience: 20}
        space: {batch_norm: {choices: [none, before]}}
        """)  # fmt: skip
    args = cli("worker", str(study), "--storage", postgres_url, "--tracking-uri", mlflow_server,
               "--heartbeat", "1", "--grace", "4", "--quiet")  # fmt: skip
    # one engine for all the polling below: a storage per poll would hold a connection each
    storage = optuna.storages.RDBStorage(postgres_url)
    victim = subprocess.Popen(args, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.5)
        try:
            study_now = optuna.load_study(study_name="crash", storage=storage)
        except KeyError:
            continue
        running = [t for t in study_now.get_trials(states=(TrialState.RUNNING,))
                   if "mlflow_run_id" in t.user_attrs]  # fmt: skip
    assert running, "the first worker never started a trial"
    time.sleep(2)  # a couple of epochs into the trial
    # a training worker holds two connections: its trials' and its heartbeat's
    storage.engine.dispose()
    with storage.engine.connect() as connection:
        queries = connection.exec_driver_sql(
            "SELECT query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalars().all()
    assert len(queries) <= 2, f"a worker keeps idle connections (PostgreSQL has ~100): {queries}"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    lost = running[0]

    survivor = subprocess.Popen(args, cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
    failed_after = None
    while failed_after is None and time.monotonic() < killed_at + 120:
        time.sleep(0.5)
        state = optuna.load_study(study_name="crash", storage=storage).trials[lost.number]
        if state.state == TrialState.FAIL:
            failed_after = time.monotonic() - killed_at
    output = survivor.communicate(timeout=600)[0]
    assert survivor.returncode == 0, output[-3000:]
    print(f"kill -9 to FAIL: {failed_after:.1f} s (grace 4 s, survivor start-up included)")
    assert failed_after is not None

    trials = optuna.load_study(study_name="crash", storage=storage).trials
    storage.engine.dispose()
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == lost.params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    client = MlflowClient(tracking_uri=mlflow_server)
    lost_run = client.get_run(lost.user_attrs["mlflow_run_id"])
    assert lost_run.info.status == "FAILED"
    assert lost_run.data.tags["hpsearch.failure_reason"] == "worker_lost"
    parents, children = parents_and_children(client, "crash")
    assert all(run.info.status != "RUNNING" for run in [*parents, *children])


def test_tracking_server_lost_mid_search_fails_the_trial_and_the_study_goes_on(
    own_mlflow_server, tmp_path
):
    url, start, stop = own_mlflow_server
    study = study_file(tmp_path, "outage", """\
        sampler: {type: random, seed: 3}
        n_trials: 3
        data: {dataset: digits, limit: 300}
        fixed: {architecture: baseline2, epochs: 6, batch_size: 16, patience: 20}
        space: {batch_norm: {choices: [none, before]}}
        """)  # fmt: skip
    search = subprocess.Popen(
        cli("search", str(study), "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
            "--tracking-uri", url, "--quiet"),
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    for line in search.stdout:
        lines.append(line)
        if "[outage] trial 0" in line:
            break
    time.sleep(3)  # trial 1 is training and logging epochs
    stop()
    stopped_at = time.monotonic()
    for line in search.stdout:
        lines.append(line)
        if "tracking_unreachable" in line:
            break
    failed_after = time.monotonic() - stopped_at
    print(f"server stopped -> trial failed: {failed_after:.1f} s")
    assert failed_after < 90, "".join(lines)
    time.sleep(3)
    start()
    rest = search.communicate(timeout=600)[0]
    output = "".join(lines) + rest
    assert search.returncode == 0, output[-3000:]

    trials = optuna.load_study(
        study_name="outage", storage=f"sqlite:///{tmp_path / 'optuna.db'}"
    ).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in failed] == ["tracking_unreachable"]
    client = MlflowClient(tracking_uri=url)
    parents, children = parents_and_children(client, "outage")
    assert all(run.info.status != "RUNNING" for run in [*parents, *children])
    recorded = client.get_metric_history(trials[0].user_attrs["mlflow_run_id"], "val_accuracy")
    assert len(recorded) == trials[0].user_attrs["epochs_run"]  # nothing recorded was lost


BAD_INPUT = [
    (["search", "SMOKE", "--storage", "postgresql://bob:pw-secret-1@127.0.0.1:1/optuna"],
     "cannot connect to storage postgresql://bob:***@127.0.0.1:1/optuna"),
    (["search", "SMOKE", "--storage", "no scheme here"], "malformed storage URL"),
    (["search", "SMOKE", "--tracking-uri", "ftp://files.example/x"], "malformed tracking URI"),
    (["search", "SMOKE", "--tracking-uri", "http://bob:pw-secret-1@127.0.0.1:1"],
     "http://bob:***@127.0.0.1:1 unreachable"),
    (["search", "SMOKE", "--workers", "0"], "Invalid value for '--workers'"),
    (["best", "--study", "smoke", "--storage", "postgresql://bob:pw-secret-1@127.0.0.1:1/x"],
     "bob:***@"),
    (["server", "--backend-store-uri", "mlflow.db"], "expected a database URL"),
    (["server", "--port", "99999"], "Invalid value for '--port'"),
    (["train", "--tracking-uri", "sqlite:///no/such/folder/mlflow.db"], "does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "fragment"), BAD_INPUT, ids=[" ".join(a[:3]) for a, _ in BAD_INPUT]
)
def test_bad_input_gives_a_clear_message_a_non_zero_exit_and_writes_nothing(
    args, fragment, tmp_path
):
    args = [str(ROOT / "studies" / "smoke.yaml") if a == "SMOKE" else a for a in args]
    done = subprocess.run(cli(*args), capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env())  # fmt: skip
    assert done.returncode != 0
    assert fragment in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "pw-secret-1" not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


def test_server_command_starts_a_tracking_server_on_loopback(tmp_path):
    import urllib.request

    from conftest import free_port

    port = free_port()
    server = subprocess.Popen(
        cli("server", "--port", str(port), "--backend-store-uri", f"sqlite:///{tmp_path}/m.db",
            "--artifacts-destination", str(tmp_path / "artifacts")),
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.5)
        else:
            pytest.fail("hpsearch server did not answer /health")
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        assert client.create_experiment("probe")
        # the store URI reaches mlflow server through MLFLOW_BACKEND_STORE_URI, not its argv
        command_line = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--backend-store-uri" not in command_line
        assert (tmp_path / "m.db").exists()
    finally:
        server.terminate()
        output = server.communicate(timeout=120)[0]
    assert f"MLflow tracking server on http://127.0.0.1:{port}" in output


def test_server_keeps_the_backend_store_password_off_every_command_line(postgres_url, tmp_path):
    """`ps` shows argv to every user: the server and its workers carry no password there."""
    import urllib.request

    import psycopg
    from conftest import free_port
    from sqlalchemy.engine import make_url

    password = make_url(postgres_url).password
    assert password and password in postgres_url
    port = free_port()
    server = subprocess.Popen(
        cli("server", "--port", str(port), "--backend-store-uri", postgres_url,
            "--artifacts-destination", str(tmp_path / "artifacts")),
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def command_lines() -> dict[int, bytes]:
        """argv of the server and every process under it, as ``ps`` shows them."""
        parents = {}
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (ValueError, OSError):
                continue
        family, grown = {server.pid}, True
        while grown:
            more = {pid for pid, parent in parents.items() if parent in family} - family
            family, grown = family | more, bool(more)
        return {pid: line for pid in family if (line := command_lines_of(pid)) is not None}

    def command_lines_of(pid: int) -> bytes | None:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return None

    lines: dict[int, bytes] = {}
    try:
        deadline = time.monotonic() + 180  # migrations of a new database
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.5)
        else:
            pytest.fail("hpsearch server did not answer /health")
        experiment = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}").create_experiment("pg")
        lines = command_lines()
        assert len(lines) >= 2, lines  # mlflow server and its web server, job runner...
        for pid, line in lines.items():
            assert password.encode() not in line, (pid, line)
            assert b"--backend-store-uri" not in line, (pid, line)
    finally:
        server.terminate()  # mlflow server stops its children: 20 s or more on a busy machine
        try:
            output = server.communicate(timeout=120)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
            for pid, line in lines.items():  # what the killed server left running
                if pid != server.pid and command_lines_of(pid) == line:
                    os.kill(pid, signal.SIGKILL)
    assert password not in output
    assert ":***@" in output  # the startup line names the backend, password masked
    with psycopg.connect(postgres_url) as connection:  # the server wrote to that database
        names = connection.execute("SELECT name FROM experiments WHERE experiment_id = %s",
                                   (int(experiment),)).fetchall()  # fmt: skip
    assert names == [("pg",)]

"""Shared fixtures: a real MLflow tracking server process on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parents_and_children(client, experiment_name: str):
    """A study's MLflow runs: (parent runs, nested child runs)."""
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


# what every trial's MLflow run holds
TRIAL_ARTIFACTS = {
    "training_curves.png",
    "confusion_matrix.png",
    "model_summary.txt",
    "config.yaml",
    "model.keras",
    "class_names.json",
}


def drawing_children() -> list[int]:
    """Live child processes of this one that run ``hpsearch.figures.drawing`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, parent = fields[0], int(fields[1])
        if parent == os.getpid() and state != "Z" and b"hpsearch.figures.drawing" in command:
            found.append(int(entry.name))
    return found


def command(*args: str) -> list[str]:
    """The ``hpsearch`` command line, run with this interpreter."""
    return [sys.executable, "-m", "hpsearch.cli", *args]


def environment() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_under_jax(script: str, timeout: float = 120) -> None:
    """Run ``script`` in a fresh interpreter with Keras on JAX (CPU); it must print ``ok`` last."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=root, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def interrupt_during_trial(args: list[str], cwd: Path, marker: str) -> tuple[int, str]:
    """Start ``args``; Ctrl-C it as the next trial starts its second epoch after the line with
    ``marker`` (so that trial is inside ``fit``, whatever the machine's speed); returns the
    exit code and the output after that point."""
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=cwd, env=environment(),
    )  # fmt: skip
    seen = False
    for line in process.stdout:
        seen = seen or marker in line
        if seen and line.startswith("Epoch 2/"):  # Keras prints it as the epoch begins
            break
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=120)[0]
    return process.returncode, rest


def pruned_study(tmp_path: Path, epochs: int, **pruner):
    """An Optuna study on SQLite with the pruner a study file with ``pruner`` would get."""
    import optuna

    from hpsearch.search.samplers import make_pruner
    from hpsearch.search.space import SearchSpace
    from hpsearch.search.study_file import parse_study

    spec = parse_study(
        {"name": "rungs", "n_trials": 3, "fixed": {"epochs": epochs}, "pruner": pruner},
        "rungs.yaml",
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'optuna.db'}", direction="maximize",
        pruner=make_pruner(spec.pruner, SearchSpace.of(spec)),
    )  # fmt: skip


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """A fresh SQLite Optuna storage and local MLflow store, made current (artifacts in tmp)."""
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # a SQLite MLflow store keeps its artifacts in ./mlruns
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield f"sqlite:///{tmp_path / 'optuna.db'}", MlflowClient()
    mlflow.set_tracking_uri(previous)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(root: Path, port: int) -> subprocess.Popen:
    """Start ``mlflow server`` on 127.0.0.1:port with a SQLite store under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    log = open(root / "server.log", "ab")  # noqa: SIM115 - closed with the process
    # its own process group: a kill -9 (of the group) takes the server's web workers too
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("mlflow server did not answer /health within 90 s")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real MLflow tracking server process, for the whole session."""
    port = free_port()
    process = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the server .ci/run starts (HPSEARCH_TEST_POSTGRES_URL)."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    admin = os.environ.get("HPSEARCH_TEST_POSTGRES_URL")
    if not admin:
        pytest.skip("HPSEARCH_TEST_POSTGRES_URL is not set: .ci/run starts PostgreSQL and sets it")
    name = f"hps_{uuid.uuid4().hex[:10]}"
    url = make_url(admin)
    connect = dict(host=url.host, port=url.port or 5432, user=url.username,
                   password=url.password, dbname=url.database)  # fmt: skip
    with psycopg.connect(**connect, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(**connect, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def own_mlflow_server(tmp_path: Path):
    """An MLflow server this test may stop and restart: (url, start, stop)."""
    port = free_port()
    root = tmp_path / "own-mlflow"
    state: dict[str, subprocess.Popen | None] = {"process": None}

    def start() -> None:
        state["process"] = start_mlflow_server(root, port)

    def stop(how: signal.Signals = signal.SIGTERM) -> None:
        process = state["process"]
        if process is not None and process.poll() is None:
            if how == signal.SIGKILL:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.send_signal(how)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        state["process"] = None

    start()
    yield f"http://127.0.0.1:{port}", start, stop
    stop()

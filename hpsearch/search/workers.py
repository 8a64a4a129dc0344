"""Scaling out: N local worker processes, GPU pinning, and the tracking server command.

Workers share one Optuna RDB storage and one MLflow tracking server; nothing
here schedules trials: Optuna's storage hands them out, its heartbeats find
lost workers, and the retry callback re-runs their trials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

from hpsearch.errors import HpsearchError
from hpsearch.search.gpu_share import worker_env
from hpsearch.search.study_file import StudyFile
from hpsearch.util.redact import hide_password

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def configure_gpu(gpu: int | None) -> None:
    """Pin to one GPU and claim its memory as needed; call before TensorFlow/JAX load."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def shares(total: int | None, workers: int) -> list[int | None]:
    """Split the trials left as evenly as possible (None: no limit per worker)."""
    if total is None:
        return [None] * workers
    base, extra = divmod(total, workers)
    return [base + (1 if index < extra else 0) for index in range(workers)]


def launch_workers(
    spec: StudyFile,
    storage: str,
    workers: int,
    n_trials: int | None,
    worker_args: Sequence[str],
    echo: Callable[[str], None],
    max_retry: int = 2,
) -> int:
    """Start ``workers`` ``hpsearch worker`` processes on one study and wait for them.

    The data are checked first (bad data: nothing written). Worker ``i`` gets
    ``--worker-index i`` (its sampler's seed) and prints no summary of its own:
    this process prints the one summary once they are done.
    """
    import mlflow

    from hpsearch.search.lifecycle import describe, find_parent, finish_parent, outcome
    from hpsearch.search.lost_trials import StaleTrialHandler, fail_lost_trials
    from hpsearch.search.options import WorkerOptions
    from hpsearch.search.optuna_engine import open_study, trials_left
    from hpsearch.search.space import SearchSpace
    from hpsearch.search.storage import make_storage
    from hpsearch.tracking.trial import load_splits

    load_splits(spec.data)  # a data error stops here, before the study exists
    space = SearchSpace.of(spec)
    study, created = open_study(spec, space, make_storage(storage, WorkerOptions(heartbeat=0)))
    # the parent run, before the workers look for it
    parent = find_parent(study, spec, storage, created, space.searched_keys())
    handler = StaleTrialHandler(max_retry)
    fail_lost_trials(study, handler)  # trials of workers killed here: retried by these ones
    left = trials_left(study, space.total(n_trials or spec.n_trials))
    plan = [share for share in shares(left, workers) if share != 0]
    echo(f"[{spec.name}] {len(plan)} workers for {left if left is not None else 'unlimited'} "
         f"trials; storage {hide_password(storage)}")  # fmt: skip
    env = {**os.environ, "HPSEARCH_STORAGE": storage,
           "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "HPSEARCH_PROGRESS": "lines"}  # fmt: skip  # N bars on one terminal would fight
    env.update(worker_env(len(plan)))  # one GPU shared: each worker takes its share
    processes = []
    for index, share in enumerate(plan):
        limit = ["--max-trials", str(share)] if share else []
        me = ["--worker-index", str(index), "--no-summary"]
        command = [sys.executable, "-m", "hpsearch.cli", "worker", *worker_args, *limit, *me]
        processes.append(subprocess.Popen(command, env=env))
    interrupted = False
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        interrupted = True
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = [_wait(process) for process in processes]
    status = "KILLED" if interrupted else "FINISHED"
    finish_parent(study, parent, status, handler=handler)
    echo(describe(outcome(study, parent, interrupted)))
    if interrupted:
        return 130
    return 0 if all(code == 0 for code in codes) else 1


def _wait(process: subprocess.Popen, seconds: float = 120) -> int:
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def server_command(
    host: str,
    port: int,
    backend_store_uri: str,
    artifacts_destination: str,
    auth: bool,
    workers: int,
    echo: Callable[[str], None],
) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and the environment it needs, after checking the
    backend store is usable.

    The backend store URI, password and all, travels in ``MLFLOW_BACKEND_STORE_URI`` (the
    environment variable of ``mlflow server --backend-store-uri``), not on the command line
    that ``ps`` shows to every user of the machine.
    """
    from hpsearch.util.connections import check_storage

    if "://" not in backend_store_uri:
        raise HpsearchError(
            f"--backend-store-uri {hide_password(backend_store_uri)!r}: expected a database URL "
            "such as sqlite:///mlflow.db or postgresql://user:password@host:5432/mlflow"
        )
    check_storage(backend_store_uri)
    if host not in LOOPBACK and not auth:
        echo(f"warning: binding {host} without --auth: anyone who reaches it can read and "
             "write every run")  # fmt: skip
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", host, "--port", str(port),
        "--artifacts-destination", artifacts_destination,
        "--workers", str(workers),
    ]  # fmt: skip
    if auth:
        command += ["--app-name", "basic-auth"]
    echo(f"MLflow tracking server on http://{host}:{port} (backend "
         f"{hide_password(backend_store_uri)}, artifacts {artifacts_destination}"
         f"{', basic auth' if auth else ''})")  # fmt: skip
    return command, {"MLFLOW_BACKEND_STORE_URI": backend_store_uri}

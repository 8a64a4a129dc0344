"""``hpsearch validate``, ``search``, ``worker`` and ``server``: running studies."""

from __future__ import annotations

import sys

import click

from hpsearch.cli.common import (
    WORKERS_HELP,
    WorkerCount,
    load_keras_quietly,
    say_error,
    stop_on_sigterm,
    storage_for,
    storage_option,
    tracking_option,
)
from hpsearch.errors import HpsearchError
from hpsearch.search.engines import ENGINE_NAMES, ONE_PROCESS


def study_options(function):
    """Options shared by ``search`` and ``worker``."""
    options = [
        click.argument("study_file", type=click.Path(dir_okay=False)),
        click.option("--n-trials", type=click.IntRange(min=0), default=0,
                      help="The study's total number of trials (0: the study file's). "
                           "Completed and pruned trials count; a rerun resumes."),
        click.option("--timeout", type=click.FloatRange(min=0), default=0,
                     help="Stop starting trials after S seconds (0: the study file's, if any)."),
        storage_option,
        tracking_option,
        click.option("--data-dir", default=None, help="Override the study's data directory."),
        click.option("--limit", type=click.IntRange(min=0), default=0,
                     help="Override the study's samples per split (0: the file's)."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Fix a trial-config key for every trial (repeatable)."),
        click.option("--heartbeat", type=click.IntRange(min=0), default=30, show_default=True,
                     help="Seconds between heartbeats of a running trial (0: off)."),
        click.option("--grace", type=click.IntRange(min=1), default=None,
                     help="A trial silent this long is failed and retried [4 x heartbeat]."),
        click.option("--max-retry", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Retries of a trial whose worker was lost."),
        click.option("-q", "--quiet", is_flag=True,
                     help="One line per trial, no per-epoch progress."),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def _load(study_file, overrides, data_dir, limit, engine=None):
    from hpsearch.config import parse_overrides
    from hpsearch.search.study_file import load_study

    data = {"data_dir": data_dir} if data_dir else {}
    if limit:
        data["limit"] = limit
    return load_study(study_file, parse_overrides(overrides), data, engine)


def _run(study_file, n_trials, timeout, storage, tracking_uri, data_dir, limit, overrides,
         heartbeat, grace, max_retry, quiet, max_trials=None, engine=None,
         worker=False, worker_index=None, summary=True) -> None:  # fmt: skip
    """Run the study in this process; ``worker``: as one of several (its own sampler seed)."""
    stop_on_sigterm()
    spec = _load(study_file, overrides, data_dir, limit, engine)
    if spec.engine in ONE_PROCESS and worker:
        raise HpsearchError(
            f"{study_file}: a {spec.engine} study runs in one process: "
            "use `hpsearch search`, not `worker`"
        )
    url = storage_for(storage, tracking_uri)
    load_keras_quietly()
    from hpsearch.search.lifecycle import describe, run_search
    from hpsearch.search.options import WorkerOptions

    options = None  # the engine's defaults (keras_tuner: one process, no heartbeats)
    if spec.engine not in ONE_PROCESS:
        options = WorkerOptions(heartbeat, grace, max_retry, max_trials)
    if worker and options is not None:  # seeds the sampler: workers seeded alike would
        import os  # propose the same points
        import socket

        identity = f"{socket.gethostname()}:{os.getpid()}"
        options.worker = worker_index if worker_index is not None else identity
    outcome = run_search(spec, url, n_trials or None, timeout or None, echo=click.echo,
                         verbose=0 if quiet else 2, options=options,
                         warn=lambda line: click.echo(line, err=True))  # fmt: skip
    if summary:
        click.echo(describe(outcome))
    if outcome.interrupted:
        sys.exit(130)


@click.command()
@study_options
@click.option("--workers", type=WorkerCount(), default=1, show_default=True,
              help=WORKERS_HELP)  # fmt: skip
@click.option("--engine", type=click.Choice(ENGINE_NAMES), default=None,
              help="Who proposes trials: Optuna's samplers or KerasTuner's tuners "
                   "(overrides the study file's engine).")  # fmt: skip
def search(study_file, n_trials, timeout, storage, tracking_uri, data_dir, limit, overrides,
           heartbeat, grace, max_retry, quiet, workers, engine) -> None:  # fmt: skip
    """Run or resume the study a study file describes (Optuna or KerasTuner), tracked in MLflow."""
    if workers == "auto":
        spec = _load(study_file, overrides, data_dir, limit, engine)
        from hpsearch.search.gpu_share import auto_workers

        workers = 1 if spec.engine in ONE_PROCESS else auto_workers(spec, click.echo)
    if workers == 1:
        _run(study_file, n_trials, timeout, storage, tracking_uri, data_dir, limit, overrides,
             heartbeat, grace, max_retry, quiet, engine=engine)  # fmt: skip
        return
    stop_on_sigterm()
    spec = _load(study_file, overrides, data_dir, limit, engine)
    if spec.engine in ONE_PROCESS:
        raise HpsearchError(
            f"{study_file}: a {spec.engine} study runs in one process: leave out --workers"
        )
    url = storage_for(storage, tracking_uri)
    from hpsearch.search.workers import launch_workers

    passed = [study_file, "--heartbeat", str(heartbeat), "--max-retry", str(max_retry)]
    passed += ["--n-trials", str(n_trials)] if n_trials else []
    passed += ["--timeout", str(timeout)] if timeout else []
    passed += ["--grace", str(grace)] if grace else []
    passed += ["--data-dir", data_dir] if data_dir else []
    passed += ["--limit", str(limit)] if limit else []
    passed += [arg for item in overrides for arg in ("--set", item)]
    passed += ["--quiet"] if quiet else []
    code = launch_workers(spec, url, workers, n_trials or None, passed, click.echo,
                          max_retry=max_retry)  # fmt: skip
    sys.exit(code)


@click.command()
@study_options
@click.option("--max-trials", type=click.IntRange(min=1), default=None,
              help="Run at most N trials in this process.")  # fmt: skip
@click.option("--gpu", type=click.IntRange(min=0), default=None,
              help="Pin this worker to one GPU (CUDA device index); memory is claimed as "
                   "needed, so several workers can share a GPU.")  # fmt: skip
@click.option("--worker-index", type=click.IntRange(min=0), default=None,
              envvar="HPSEARCH_WORKER_INDEX",
              help="This worker's number among the study's workers, or $HPSEARCH_WORKER_INDEX: "
                   "its sampler is seeded from the study's seed and this number, so that "
                   "workers propose different points (give each worker its own). Default: a "
                   "seed from host:pid, different in every process. `search --workers N` "
                   "numbers its workers 0..N-1; a lone `search` uses the study's seed "
                   "itself.")  # fmt: skip
@click.option("--no-summary", "no_summary", is_flag=True, hidden=True,
              help="Print no closing summary (`search --workers` prints one for all).")  # fmt: skip
def worker(study_file, n_trials, timeout, storage, tracking_uri, data_dir, limit, overrides,
           heartbeat, grace, max_retry, quiet, max_trials, gpu, worker_index,
           no_summary) -> None:  # fmt: skip
    """Join a shared study as one worker (any machine, same storage and tracking server)."""
    from hpsearch.search.workers import configure_gpu

    configure_gpu(gpu)
    _run(study_file, n_trials, timeout, storage, tracking_uri, data_dir, limit, overrides,
         heartbeat, grace, max_retry, quiet, max_trials, worker=True, worker_index=worker_index,
         summary=not no_summary)  # fmt: skip


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback exposes the server.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option(
    "--backend-store-uri",
    default="sqlite:///mlflow.db",
    show_default=True,
    envvar="MLFLOW_BACKEND_STORE_URI",
    help="Where runs are stored: SQLite, or postgresql://user:password@host/db "
    "($MLFLOW_BACKEND_STORE_URI keeps a password off the command line).",
)
@click.option(
    "--artifacts-destination",
    default="./mlartifacts",
    show_default=True,
    help="Artifact root the server stores and serves artifacts from.",
)
@click.option("--auth", is_flag=True, help="Turn on MLflow's basic-auth app (users, passwords).")
@click.option("--allowed-hosts", default=None,
              help="Host names clients may use to reach it (MLflow's --allowed-hosts), "
                   "e.g. 'mlflow,mlflow:5000' when bound beyond loopback.")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server worker processes.")  # fmt: skip
def server(host, port, backend_store_uri, artifacts_destination, auth, allowed_hosts,
           workers) -> None:  # fmt: skip
    """Start an MLflow tracking server with safe local defaults."""
    from hpsearch.search.workers import server_command

    command, environment = server_command(host, port, backend_store_uri,
                                          artifacts_destination, auth, workers,
                                          click.echo)  # fmt: skip
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    import os

    # the backend store URI (and its password) goes in the environment, not in argv (ps)
    os.execvpe(command[0], command, {**os.environ, **environment})


@click.command()
@click.argument("study_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="Print only the errors.")
def validate(study_files: tuple[str, ...], quiet: bool) -> None:
    """Check study files without running them."""
    from hpsearch.search.space import SearchSpace
    from hpsearch.search.study_file import load_study

    failed = False
    for path in study_files:
        try:
            study = load_study(path)
        except HpsearchError as error:
            say_error(error)
            failed = True
            continue
        if quiet:
            continue
        space = SearchSpace.of(study)
        size = f", grid of {space.grid_size()}" if space.grid else ""
        engine = f"{study.engine} engine, " if study.engine != "optuna" else ""
        searched = len(space.searched_keys())
        points = f", {len(study.points)} points" if study.points else ""
        repeats = f", {study.repeats} repeats" if study.repeats > 1 else ""
        click.echo(
            f"{path}: ok (study {study.name}, {engine}{study.sampler.type} sampler{size}"
            f"{points}{repeats}, pruner {study.pruner.type}, {searched} searched "
            f"factor{'s' if searched != 1 else ''})"
        )
    if failed:
        sys.exit(2)

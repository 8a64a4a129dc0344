"""The deployment files in docker/ parse, fit together, and use only real CLI options.

No Docker engine is needed: the compose file and the Kubernetes manifest are read with
``yaml.safe_load``, the Dockerfiles line by line, and every ``hpsearch`` / ``mlflow server``
command line they run is parsed by the real click commands.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml
from click.testing import CliRunner

from hpsearch.cli import main as hpsearch_cli

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
K8S_JOB = DOCKER / "k8s" / "worker-job.yaml"
WORKER_DOCKERFILE = DOCKER / "worker.Dockerfile"
MLFLOW_DOCKERFILE = DOCKER / "mlflow.Dockerfile"
README = DOCKER / "README.md"

WORKER_BASE = "tensorflow/tensorflow:2.21.0-gpu"
MLFLOW_BASE = "ghcr.io/mlflow/mlflow:v3.17.2"
# What a Secret-sourced variable stands for when a command line is parsed.
SECRET_PLACEHOLDER = "postgresql+psycopg://user:secret@db:5432/optuna"

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")


# --- reading the files -------------------------------------------------------------------------


def interpolate(value):
    """Compose's variable interpolation with nothing set: ``${VAR:-default}`` -> default."""
    if isinstance(value, str):

        def substitute(match: re.Match) -> str:
            op = match["op"] or ""
            assert op.endswith("-"), f"${{{match['name']}}} needs a default: {value!r}"
            return match["arg"]

        return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    return value


def as_argv(value) -> list[str]:
    """A compose/K8s command as a list (the string form is split like a shell would)."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(item) for item in value]


def as_env(value) -> dict[str, str]:
    """Compose ``environment`` as a mapping (it may also be a ``KEY=VALUE`` list)."""
    if isinstance(value, list):
        return dict(item.split("=", 1) for item in value)
    return {key: str(item) for key, item in (value or {}).items()}


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    return instructions


def exec_form(path: Path, keyword: str) -> list[str] | None:
    """The last ENTRYPOINT/CMD of a Dockerfile, which must be a JSON array (exec form)."""
    found = [arguments for name, arguments in dockerfile(path) if name == keyword]
    if not found:
        return None
    try:
        argv = json.loads(found[-1])
    except json.JSONDecodeError:
        pytest.fail(f"{path.name}: {keyword} {found[-1]} is not a JSON array (exec form)")
    assert isinstance(argv, list) and all(isinstance(item, str) for item in argv)
    return argv


def last(path: Path, keyword: str) -> str:
    return [arguments for name, arguments in dockerfile(path) if name == keyword][-1]


def run_commands(path: Path) -> list[str]:
    """The shell commands of the RUN instructions, split at ``&&``."""
    return [
        part.strip()
        for name, arguments in dockerfile(path)
        if name == "RUN"
        for part in arguments.split("&&")
    ]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return interpolate(compose["services"])


@pytest.fixture(scope="module")
def job() -> dict:
    return yaml.safe_load(K8S_JOB.read_text())


@pytest.fixture(scope="module")
def job_container(job) -> dict:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def option_value(argv: list[str], option: str) -> str:
    """The value given to ``option`` in a command line (``--opt value`` or ``--opt=value``)."""
    for index, token in enumerate(argv):
        if token == option:
            return argv[index + 1]
        if token.startswith(option + "="):
            return token.split("=", 1)[1]
    raise AssertionError(f"{option} not in {argv}")


def service_dockerfile(service: dict) -> Path:
    build = service["build"]
    return (COMPOSE.parent / build["context"] / build.get("dockerfile", "Dockerfile")).resolve()


def effective_argv(service: dict) -> list[str]:
    """What a compose service runs: its entrypoint/command, else its image's."""
    path = service_dockerfile(service) if "build" in service else None
    if "entrypoint" in service:
        entrypoint = as_argv(service["entrypoint"])
        command = as_argv(service.get("command"))  # an entrypoint override drops the image's CMD
    else:
        entrypoint = (exec_form(path, "ENTRYPOINT") if path else None) or []
        command = as_argv(service["command"]) if "command" in service else None
        if command is None:
            command = (exec_form(path, "CMD") if path else None) or []
    return entrypoint + command


def k8s_argv(container: dict) -> list[str]:
    """The container's command + args, ``$(VAR)`` references expanded as Kubernetes does."""
    env = {}
    for item in container.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else SECRET_PLACEHOLDER
    argv = as_argv(container.get("command")) + as_argv(container.get("args"))
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), token) for token in argv]


def k8s_env(container: dict) -> dict[str, str]:
    return {
        item["name"]: item["value"] if "value" in item else SECRET_PLACEHOLDER
        for item in container.get("env", [])
    }


def readme_commands(program: str) -> list[list[str]]:
    """Command lines in docker/README.md's code blocks that start with ``program``."""
    code, fenced = [], False
    for line in README.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            code.append(line)
    found = []
    for line in "\n".join(code).replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        for part in re.split(r"&&|;|\|", line):
            tokens = shlex.split(part.strip(), comments=True) if part.strip() else []
            while tokens and re.fullmatch(r"\w+=\S*", tokens[0]):  # VAR=value prefixes
                tokens = tokens[1:]
            if tokens and tokens[0] == program:
                found.append(tokens)
    return found


def all_command_lines(services: dict, job_container: dict) -> list[tuple[str, list, dict]]:
    """(where, argv, environment) of every command the files run."""
    lines = []
    for name, service in services.items():
        argv = effective_argv(service)
        if argv:
            lines.append((f"compose service {name}", argv, as_env(service.get("environment"))))
    lines.append(("k8s worker-job", k8s_argv(job_container), k8s_env(job_container)))
    for path in (WORKER_DOCKERFILE, MLFLOW_DOCKERFILE):
        argv = (exec_form(path, "ENTRYPOINT") or []) + (exec_form(path, "CMD") or [])
        lines.append((path.name, argv, {}))
    return lines


@pytest.fixture(scope="module")
def command_lines(services, job_container):
    return all_command_lines(services, job_container)


# --- compose ----------------------------------------------------------------------------------


def test_compose_has_the_three_services(compose, services):
    assert {"postgres", "mlflow", "worker"} <= set(services)
    assert services["postgres"]["image"] == "postgres:16"
    assert service_dockerfile(services["mlflow"]) == MLFLOW_DOCKERFILE
    assert service_dockerfile(services["worker"]) == WORKER_DOCKERFILE
    declared = set(compose.get("volumes") or {})
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"named volume {source} is not declared"


def test_every_compose_variable_has_a_default():
    # interpolate() asserts that each ${VAR} carries a default, so `up` works without a .env
    interpolate(yaml.safe_load(COMPOSE.read_text()))


def test_postgres_is_healthchecked_and_holds_both_databases(services):
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(as_argv(postgres["healthcheck"]["test"]))
    env = as_env(postgres["environment"])
    volumes = postgres["volumes"]
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in volumes), volumes
    (init,) = [v for v in volumes if v.split(":")[1] == "/docker-entrypoint-initdb.d"]
    init_dir = COMPOSE.parent / init.split(":")[0]
    sql = " ".join(path.read_text() for path in sorted(init_dir.glob("*.sql")))
    created = set(re.findall(r"CREATE\s+DATABASE\s+\"?(\w+)", sql, re.IGNORECASE))
    databases = created | {env["POSTGRES_DB"]}

    worker_url = urlsplit(as_env(services["worker"]["environment"])["HPSEARCH_STORAGE"])
    mlflow_url = urlsplit(option_value(effective_argv(services["mlflow"]), "--backend-store-uri"))
    for url in (worker_url, mlflow_url):
        assert url.scheme.startswith("postgresql"), url.scheme
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert (url.username, url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
        assert url.path.lstrip("/") in databases, (url.path, databases)
    assert worker_url.path != mlflow_url.path, "Optuna and MLflow need separate databases"
    assert worker_url.path.lstrip("/") == env["POSTGRES_DB"]


def test_mlflow_server_uses_postgresql_and_an_artifact_volume(services):
    mlflow_service = services["mlflow"]
    argv = effective_argv(mlflow_service)
    assert argv[:2] == ["mlflow", "server"]
    assert option_value(argv, "--backend-store-uri").startswith("postgresql")
    destination = option_value(argv, "--artifacts-destination")
    assert destination in [v.split(":")[1] for v in mlflow_service["volumes"]]
    assert option_value(argv, "--host") == "0.0.0.0"
    assert mlflow_service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/health" in " ".join(as_argv(mlflow_service["healthcheck"]["test"]))


def test_worker_reserves_a_gpu_waits_for_mlflow_and_scales(services):
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d.get("count") == 1
        for d in devices
    ), devices
    assert worker["depends_on"]["mlflow"]["condition"] == "service_healthy"
    # `--scale worker=N` needs no fixed container name and no published host port
    assert "container_name" not in worker and "ports" not in worker


def test_worker_reaches_the_mlflow_server(services):
    worker_env = as_env(services["worker"]["environment"])
    tracking = urlsplit(worker_env["MLFLOW_TRACKING_URI"])
    mlflow_argv = effective_argv(services["mlflow"])
    assert tracking.hostname == "mlflow" and tracking.port == int(
        option_value(mlflow_argv, "--port")
    )
    # MLflow's DNS-rebinding protection rejects Host headers it is not told about
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = option_value(mlflow_argv, "--allowed-hosts").split(",")
    assert is_allowed_host_header(allowed, tracking.netloc), (tracking.netloc, allowed)
    assert is_allowed_host_header(allowed, "localhost:5000")  # the UI from the host


def _study_data_path(study: str, workdir: str, env: dict[str, str]) -> str:
    """Where the worker's study reads its data: its data_dir, else HPSEARCH_CIFAR10."""
    data = yaml.safe_load((ROOT / study).read_text())["data"]
    data_dir = data.get("data_dir")
    if data_dir is None:
        assert data["dataset"] == "cifar10", data
        data_dir = env["HPSEARCH_CIFAR10"]  # the local copy instead of Keras's downloader
    return posixpath.normpath(posixpath.join(workdir, data_dir))


def test_worker_mounts_the_data_read_only_where_the_study_looks(services):
    worker = services["worker"]
    study = effective_argv(worker)[2]
    env = as_env(worker["environment"])
    wanted = _study_data_path(study, last(WORKER_DOCKERFILE, "WORKDIR"), env)
    mounts = [v.split(":") for v in worker["volumes"]]
    assert any(wanted.startswith(m[1] + "/") and m[2:] == ["ro"] for m in mounts), (wanted, mounts)


def test_no_password_is_written_into_the_files(compose, job):
    variable = r"\$\{[^}]*\}"
    credentials = rf"://(?:{variable}|[^:/@\s]+):({variable}|[^@\s]+)@"
    passwords = re.findall(credentials, COMPOSE.read_text())
    passwords.append(compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"])
    assert len(passwords) >= 3, "the database URLs of mlflow and worker carry the password"
    for password in passwords:  # from .env / the environment; a marked local-only fallback
        assert password == "${POSTGRES_PASSWORD:-change-me}", password
    job_values = json.dumps(job)  # comments dropped: only what kubectl applies
    assert not re.search(r"://[^:/@\s\"]+:[^@\s\"]+@", job_values)


# --- Kubernetes -------------------------------------------------------------------------------


def test_k8s_job_runs_parallel_gpu_workers(job, job_container):
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["parallelism"] > 1
    assert spec["completions"] >= spec["parallelism"]
    assert isinstance(spec["backoffLimit"], int)
    assert int(job_container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    image = job_container["image"].split("/")[-1].split(":")[0]
    assert image == "hpsearch-worker"
    assert k8s_argv(job_container)[:2] == ["hpsearch", "worker"]


def test_k8s_job_takes_the_storage_from_a_secret(job_container):
    env = {item["name"]: item for item in job_container["env"]}
    assert env["HPSEARCH_STORAGE"]["valueFrom"]["secretKeyRef"]["name"] == "hpsearch-db"
    assert urlsplit(env["MLFLOW_TRACKING_URI"]["value"]).scheme in ("http", "https")


def test_k8s_job_mounts_the_data_read_only_where_the_study_looks(job, job_container):
    study = k8s_argv(job_container)[2]
    wanted = _study_data_path(study, last(WORKER_DOCKERFILE, "WORKDIR"), k8s_env(job_container))
    mounts = [m for m in job_container["volumeMounts"] if wanted.startswith(m["mountPath"] + "/")]
    assert mounts and mounts[0].get("readOnly") is True, wanted
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert mounts[0]["name"] in volumes


# --- Dockerfiles ------------------------------------------------------------------------------


def test_worker_dockerfile_installs_the_project_on_the_tensorflow_gpu_base():
    assert last(WORKER_DOCKERFILE, "FROM") == WORKER_BASE
    installs = [shlex.split(c) for c in run_commands(WORKER_DOCKERFILE) if "pip install" in c]
    assert any("." in argv for argv in installs), "pip install . (the project)"
    assert any(a.startswith("psycopg[binary]") for argv in installs for a in argv)
    user = last(WORKER_DOCKERFILE, "USER").split(":")[0]
    assert user not in ("root", "0"), "the worker runs as a non-root user"
    assert exec_form(WORKER_DOCKERFILE, "ENTRYPOINT") == ["hpsearch", "worker"]


def test_worker_image_copies_files_that_exist_and_are_not_ignored():
    ignore = (DOCKER / "worker.Dockerfile.dockerignore").read_text().split()
    for name, arguments in dockerfile(WORKER_DOCKERFILE):
        if name != "COPY":
            continue
        sources = [a for a in shlex.split(arguments) if not a.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert "!" + source in ignore, f"{source} is excluded from the build context"


def test_mlflow_dockerfile_adds_the_postgresql_driver_to_the_official_image():
    assert last(MLFLOW_DOCKERFILE, "FROM") == MLFLOW_BASE
    installs = [c for c in run_commands(MLFLOW_DOCKERFILE) if "pip install" in c]
    assert any("psycopg" in c for c in installs), installs
    assert last(MLFLOW_DOCKERFILE, "USER").split(":")[0] not in ("root", "0")


# --- command lines against the real CLIs ------------------------------------------------------


def _options(command: click.Command) -> set[str]:
    return {
        opt
        for param in command.params
        if isinstance(param, click.Option)
        for opt in param.opts + param.secondary_opts
    }


def _check_option_names(command: click.Command, argv: list[str], where: str) -> None:
    known = _options(command) | {"--help", "-h"}
    for token in argv:
        if token == "--":
            break
        if token.startswith("-") and token != "-" and not re.fullmatch(r"-\d.*", token):
            name = token.split("=", 1)[0]
            assert name in known, f"{where}: {name} is not an option of {command.name}"


def _hpsearch_subcommand(argv: list[str], where: str) -> click.Command:
    assert len(argv) > 1, f"{where}: {argv}"
    name = argv[1]
    assert name in hpsearch_cli.commands, (
        f"{where}: hpsearch has no {name!r} command (it has {sorted(hpsearch_cli.commands)})"
    )
    return hpsearch_cli.commands[name]


def test_every_hpsearch_command_line_parses(command_lines, monkeypatch):
    hpsearch_lines = [line for line in command_lines if line[1][:1] == ["hpsearch"]]
    assert {where for where, _, _ in hpsearch_lines} >= {
        "compose service worker",
        "k8s worker-job",
        "worker.Dockerfile",
    }
    monkeypatch.chdir(ROOT)  # the image's working directory holds studies/ as the checkout does
    for where, argv, env in hpsearch_lines:
        command = _hpsearch_subcommand(argv, where)
        _check_option_names(command, argv[2:], where)
        for name in ("HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        ctx = command.make_context(argv[1], list(argv[2:]))  # parses; runs nothing
        if "HPSEARCH_STORAGE" in env:  # the worker image reads the storage from the env
            assert ctx.params["storage"] == env["HPSEARCH_STORAGE"], where
        study = ctx.params.get("study_file")
        if study is not None:
            result = CliRunner().invoke(hpsearch_cli, ["validate", study])
            assert result.exit_code == 0, f"{where}: {result.output}"


def test_the_worker_storage_option_reads_hpsearch_storage():
    # compose, the image and the K8s Job pass the storage URL only through this variable
    (storage,) = [p for p in hpsearch_cli.commands["worker"].params if "--storage" in p.opts]
    envvar = storage.envvar
    assert "HPSEARCH_STORAGE" in ([envvar] if isinstance(envvar, str) else list(envvar or []))


def test_every_mlflow_server_command_line_parses(command_lines):
    from mlflow.cli import cli as mlflow_cli

    server = mlflow_cli.commands["server"]
    lines = [line for line in command_lines if line[1][:2] == ["mlflow", "server"]]
    assert {where for where, _, _ in lines} >= {"compose service mlflow", "mlflow.Dockerfile"}
    for where, argv, _ in lines:
        _check_option_names(server, argv[2:], where)
        server.make_context("server", list(argv[2:]))


def test_readme_command_lines_use_real_options():
    from mlflow.cli import cli as mlflow_cli

    lines = readme_commands("hpsearch")
    assert any(argv[1:2] == ["worker"] for argv in lines)
    for argv in lines:
        if len(argv) > 1 and not argv[1].startswith("-"):
            _check_option_names(_hpsearch_subcommand(argv, "README.md"), argv[2:], "README.md")
    for argv in readme_commands("mlflow"):
        if argv[1:2] == ["server"]:
            _check_option_names(mlflow_cli.commands["server"], argv[2:], "README.md")

"""The deployment files in docker/ parse, fit together, and use only real CLI options.

No Docker engine is needed: the compose file and the Kubernetes manifests are read with
``yaml.safe_load``, the Dockerfiles line by line, and every ``hpsearch`` / ``mlflow server``
command line they run is parsed by the real click commands. Passwords: none is written in
these files, each service has its own database user and password file, and the Kubernetes
Job pins its image, has a deadline and keeps its cache on a PersistentVolumeClaim.
tests/test_docker_tools.py runs the validators and the helper scripts.
"""

from __future__ import annotations

import json
import os
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
K8S = DOCKER / "k8s"
K8S_JOB = K8S / "worker-job.yaml"
K8S_CACHE_PVC = K8S / "dataset-cache-pvc.yaml"
INITDB_SCRIPT = DOCKER / "initdb" / "10-users-and-databases.sh"
WORKER_DOCKERFILE = DOCKER / "worker.Dockerfile"
MLFLOW_DOCKERFILE = DOCKER / "mlflow.Dockerfile"
README = DOCKER / "README.md"
# Puts the password from $NAME_PASSWORD_FILE into the URL in $NAME, then execs its arguments.
WRAPPER = "with-db-password"

WORKER_BASE = "tensorflow/tensorflow:2.21.0-gpu"
MLFLOW_BASE = "ghcr.io/mlflow/mlflow:v3.17.2"
# What a Secret-sourced variable stands for when a command line is parsed.
SECRET_PLACEHOLDER = "postgresql+psycopg://user:secret@db:5432/optuna"
# A URL that carries a password: scheme://user:password@
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@\"']+:[^@\s/\"']+@")

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
def manifests() -> list[tuple[Path, dict]]:
    """(file, object) for every object in docker/k8s/*.yaml."""
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


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


def unwrapped(argv: list[str]) -> list[str]:
    """The command that with-db-password runs (it execs its arguments)."""
    return argv[1:] if argv[:1] == [WRAPPER] else argv


def effective_argv(service: dict) -> list[str]:
    """What a compose service runs (behind with-db-password): its entrypoint/command, else
    its image's."""
    return unwrapped(raw_argv(service))


def raw_argv(service: dict) -> list[str]:
    """A compose service's entrypoint + command, with-db-password included."""
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
    argv = unwrapped(as_argv(container.get("command")) + as_argv(container.get("args")))
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
        lines.append((path.name, unwrapped(argv), {}))
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


def test_postgres_is_healthchecked_and_initialised_by_the_script(services):
    postgres = services["postgres"]
    assert "pg_isready" in as_argv(postgres["healthcheck"]["test"])
    volumes = postgres["volumes"]
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in volumes), volumes
    (init,) = [v for v in volumes if v.split(":")[1] == "/docker-entrypoint-initdb.d"]
    init_dir = (COMPOSE.parent / init.split(":")[0]).resolve()
    assert sorted(init_dir.iterdir()) == [INITDB_SCRIPT]
    # executable: the image runs it (bash, its own process) rather than sourcing it
    assert os.access(INITDB_SCRIPT, os.X_OK)


def database_clients(services: dict) -> dict[str, tuple[str, object, str]]:
    """{service: (variable, URL parts, password file)} for every service whose environment
    has a URL in NAME and its password file in NAME_PASSWORD_FILE."""
    found = {}
    for name, service in services.items():
        env = as_env(service.get("environment"))
        for key, path in env.items():
            if key.endswith("_PASSWORD_FILE") and key.removesuffix("_PASSWORD_FILE") in env:
                variable = key.removesuffix("_PASSWORD_FILE")
                found[name] = (variable, urlsplit(env[variable]), path)
    return found


def initdb_users() -> dict[str, str]:
    """{user: the variable naming its password file} from the initdb script's USERS list."""
    (listed,) = re.findall(r"^USERS=\((.*)\)$", INITDB_SCRIPT.read_text(), re.MULTILINE)
    return dict(item.split(":") for item in listed.split())


def secret_path(service: dict, path: str) -> str:
    """The secret behind /run/secrets/NAME, which the service must list."""
    assert path.startswith("/run/secrets/"), path
    name = path.removeprefix("/run/secrets/")
    listed = [s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])]
    assert name in listed, f"{path}: the service does not list secret {name} ({listed})"
    return name


def test_each_service_has_its_own_database_user_and_password(compose, services):
    clients = database_clients(services)
    assert set(clients) == {"worker", "mlflow"}, clients
    postgres = services["postgres"]
    pg_env = as_env(postgres["environment"])
    superuser = pg_env.get("POSTGRES_USER", "postgres")  # the image's default
    users = initdb_users()
    seen_users = {superuser}
    seen_secrets = {secret_path(postgres, pg_env["POSTGRES_PASSWORD_FILE"])}
    for name, (variable, url, path) in clients.items():
        where = f"{name}: {variable}"
        assert url.scheme.startswith("postgresql"), where
        assert (url.hostname, url.port) == ("postgres", 5432), where
        assert url.password is None, f"{where} carries a password"
        assert url.username not in seen_users, f"{where}: user {url.username} is shared"
        seen_users.add(url.username)
        secret = secret_path(services[name], path)
        assert secret not in seen_secrets, f"{where}: password file {secret} is shared"
        seen_secrets.add(secret)
        # initdb creates that user, owning the database of the same name, with the password
        # from the same secret
        assert url.username in users, f"{where}: initdb/ does not create {url.username}"
        assert url.path == f"/{url.username}", f"{where}: user {url.username} owns no {url.path}"
        assert secret_path(postgres, pg_env[users[url.username]]) == secret, where
    assert set(users) == seen_users - {superuser}, "initdb/ creates users no service uses"
    assert set(compose["secrets"]) == seen_secrets, "a declared secret is unused"


def test_the_initdb_script_gives_each_user_its_database_alone():
    sql = INITDB_SCRIPT.read_text()
    for statement in (
        """CREATE ROLE :"name" LOGIN PASSWORD :'password';""",  # a quoted literal, no splice
        r'CREATE DATABASE :"name" OWNER :"name";',
        r'REVOKE ALL ON DATABASE :"name" FROM PUBLIC;',  # no other user may connect
    ):
        assert statement in sql, statement
    assert "\\getenv password" in sql, "the password reaches psql through its environment"


def test_mlflow_server_uses_postgresql_and_an_artifact_volume(services):
    mlflow_service = services["mlflow"]
    argv = effective_argv(mlflow_service)
    assert argv[:2] == ["mlflow", "server"]
    # the backend store comes from the environment (password added by with-db-password)
    assert "--backend-store-uri" not in argv
    env = as_env(mlflow_service["environment"])
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
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


@pytest.mark.slow
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


def test_no_password_is_written_into_the_files(compose, services, manifests):
    for path in [COMPOSE, *sorted(K8S.glob("*.yaml")), WORKER_DOCKERFILE, MLFLOW_DOCKERFILE]:
        text = path.read_text()
        assert not URL_WITH_PASSWORD.search(text), f"{path.name}: {URL_WITH_PASSWORD.search(text)}"
        assert "change-me" not in text, path.name
    # no password through Compose variables either (no `${POSTGRES_PASSWORD:-default}`)
    assert not re.search(r"\$\{[^}]*(PASSWORD|SECRET|TOKEN)", COMPOSE.read_text(), re.IGNORECASE)
    for name, service in services.items():
        for key, value in as_env(service.get("environment")).items():
            if re.search("PASSWORD|SECRET|TOKEN", key):  # only the file that holds it
                assert key.endswith("_FILE") and value.startswith("/run/secrets/"), (name, key)
    for name, secret in compose["secrets"].items():  # files that git ignores, nothing inline
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/"), name
    assert "secrets/" in (DOCKER / ".gitignore").read_text().split()
    for path, doc in manifests:  # the password lives in a Secret made by kubectl, not here
        assert doc["kind"] != "Secret", path.name
    for _, argv, env in all_command_lines(services, {"command": [], "args": []}):
        for item in [*argv, *env.values()]:
            assert not URL_WITH_PASSWORD.search(item), item


def test_services_with_a_password_file_run_behind_with_db_password(services, job_container):
    for name, (variable, _, _) in database_clients(services).items():
        argv = raw_argv(services[name])
        assert argv[0] == WRAPPER, f"{name}: nothing puts the password into {variable}"
        copied = [a for n, a in dockerfile(service_dockerfile(services[name])) if n == "COPY"]
        assert any(a.split()[-1] == f"/usr/local/bin/{WRAPPER}" for a in copied), name
    assert as_argv(job_container["command"])[0] == WRAPPER


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


def test_k8s_job_takes_the_database_password_from_a_secret(job, job_container):
    env = {item["name"]: item for item in job_container["env"]}
    storage = urlsplit(env["HPSEARCH_STORAGE"]["value"])
    assert storage.scheme.startswith("postgresql") and storage.password is None
    assert storage.username == "optuna" and storage.path == "/optuna"  # as initdb/ makes it
    path = env["HPSEARCH_STORAGE_PASSWORD_FILE"]["value"]
    (mount,) = [m for m in job_container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount.get("readOnly") is True
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "hpsearch-db"
    key = posixpath.relpath(path, mount["mountPath"])
    assert {"key": "optuna-db-password", "path": key} in secret["items"]
    # readable by the worker's group (fsGroup), by no one else
    assert secret["defaultMode"] == 0o440
    assert job["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001
    assert urlsplit(env["MLFLOW_TRACKING_URI"]["value"]).scheme in ("http", "https")


def test_k8s_job_pins_its_image_as_compose_builds_it(job_container, services):
    image = job_container["image"]
    name, digest = image.partition("@")[::2]
    tag = name.rpartition(":")[2] if ":" in name.rpartition("/")[2] else ""
    assert digest.startswith("sha256:") or tag, f"{image}: no tag or digest"
    assert tag != "latest", image
    assert not digest, "the repository's manifest names the tag that compose builds"
    assert services["worker"]["image"] == image, "compose builds the tag the Job runs"
    readme = README.read_text()
    assert f"hpsearch-worker:{tag}" in readme and "kubectl set image" in readme


def test_k8s_job_has_a_deadline(job):
    deadline = job["spec"]["activeDeadlineSeconds"]
    assert isinstance(deadline, int) and deadline >= 3600, deadline
    grace = job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert deadline > grace


def test_k8s_dataset_cache_is_on_a_volume_that_outlives_the_pods(
    job, job_container, manifests, monkeypatch
):
    from hpsearch.datasets import default_cache_dir

    env = k8s_env(job_container)
    cache = env["HPSEARCH_CACHE_DIR"]
    monkeypatch.setenv("HPSEARCH_CACHE_DIR", cache)
    assert str(default_cache_dir()) == cache  # the variable hpsearch reads
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    claims = {
        doc["metadata"]["name"]: path
        for path, doc in manifests
        if doc["kind"] == "PersistentVolumeClaim"
    }
    for path in (cache, env["HPSEARCH_SPOOL_DIR"]):  # decoded datasets, models to upload
        mounts = [
            m for m in job_container["volumeMounts"] if f"{path}/".startswith(m["mountPath"] + "/")
        ]
        assert mounts, f"{path} is on the container's own disk"
        volume = volumes[max(mounts, key=lambda m: len(m["mountPath"]))["name"]]
        assert "emptyDir" not in volume, f"{path} goes with its pod"
        claim = volume["persistentVolumeClaim"]["claimName"]
        assert claim in claims, f"no manifest in docker/k8s/ makes the claim {claim}"
        assert claims[claim] == K8S_CACHE_PVC, "deleting the Job would delete the cache"
        assert volume["persistentVolumeClaim"].get("readOnly") is not True


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
    assert exec_form(WORKER_DOCKERFILE, "ENTRYPOINT") == [WRAPPER, "hpsearch", "worker"]


def test_worker_image_copies_files_that_exist_and_are_not_ignored():
    ignore = (DOCKER / "worker.Dockerfile.dockerignore").read_text().split()
    for name, arguments in dockerfile(WORKER_DOCKERFILE):
        if name != "COPY":
            continue
        sources = [a for a in shlex.split(arguments) if not a.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert "!" + source in ignore, f"{source} is excluded from the build context"


def test_mlflow_image_copies_only_the_password_helper():
    ignore = (DOCKER / "mlflow.Dockerfile.dockerignore").read_text().split()
    copied = [a for n, a in dockerfile(MLFLOW_DOCKERFILE) if n == "COPY"]
    assert [shlex.split(a)[-2] for a in copied] == [WRAPPER]
    assert "!" + WRAPPER in ignore
    assert exec_form(MLFLOW_DOCKERFILE, "ENTRYPOINT") == [WRAPPER]


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


@pytest.mark.slow  # runs MLflow's own parser on every command line (a few seconds)
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

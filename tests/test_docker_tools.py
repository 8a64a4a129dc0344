"""docker/ checked by real tools, and its helper scripts run for real; no Docker engine, no cluster.

- check-jsonschema validates compose.yaml against the Compose specification's JSON schema;
- podman-compose (a Compose implementation, `--dry-run config`: it needs no podman) resolves it;
- kubernetes-validate checks the manifests against the Kubernetes API's OpenAPI schemas, offline;
- with-db-password, make-secrets and the initdb script are run (the last one against a
  throwaway PostgreSQL server when PostgreSQL's programs are on this machine).

Each validator must also reject a broken copy, so a test that passes shows it looked.
The tools are in the `test` extra: ``pip install -e ".[test]"``.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
K8S = DOCKER / "k8s"
WRAPPER = DOCKER / "with-db-password"
MAKE_SECRETS = DOCKER / "make-secrets"
INITDB_SCRIPT = DOCKER / "initdb" / "10-users-and-databases.sh"

# A password that needs quoting everywhere: URL delimiters, SQL and shell quotes, a percent.
HARD_PASSWORD = "p@ss:w/o rd?#%'\"$x"


def tool(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m module args``, with a clean environment (no compose variables set)."""
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: pip install -e '.[test]'")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def broken_copy(source: Path, folder: Path, old: str, new: str) -> Path:
    text = source.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {source.name} once"
    copy = folder / source.name
    copy.write_text(text.replace(old, new))
    return copy


# --- Compose ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_check_jsonschema_accepts_the_compose_file_and_rejects_a_typo(tmp_path):
    result = tool("check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr
    # `secret:` for `secrets:` would leave the worker without its password file
    broken = broken_copy(
        COMPOSE,
        tmp_path,
        "    secrets: [optuna_db_password]\n",
        "    secret: [optuna_db_password]\n",
    )
    result = tool("check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(broken))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "'secret' was unexpected" in result.stdout


def podman_compose_config(compose_file: Path) -> subprocess.CompletedProcess:
    return tool("podman_compose", "--dry-run", "-f", str(compose_file), "config")


def test_podman_compose_resolves_the_compose_file(tmp_path):
    # a copy, so that a developer's docker/.env does not change what is checked
    copy = tmp_path / "compose.yaml"
    shutil.copy(COMPOSE, copy)
    result = podman_compose_config(copy)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert set(config["services"]) == {"postgres", "mlflow", "worker"}
    assert set(config["secrets"]) == {
        "postgres_password",
        "optuna_db_password",
        "mlflow_db_password",
    }
    postgres = config["services"]["postgres"]
    assert postgres["ports"] == ["127.0.0.1:5432:5432"]  # the defaults, loopback only
    for service in config["services"].values():
        for key in service.get("environment", {}):
            assert "PASSWORD" not in key or key.endswith("_PASSWORD_FILE"), key


def test_podman_compose_rejects_a_broken_variable(tmp_path):
    broken = broken_copy(
        COMPOSE, tmp_path, "${POSTGRES_BIND:-127.0.0.1}", "${POSTGRES_BIND:-127.0.0.1"
    )
    result = podman_compose_config(broken)
    assert result.returncode != 0
    assert "No closing brace" in result.stderr


# --- Kubernetes -------------------------------------------------------------------------------


def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess:
    # --strict: unknown fields are errors (a misspelt field would be dropped by the API server)
    return tool("kubernetes_validate", "--strict", *map(str, paths))


def test_kubernetes_validate_accepts_the_manifests():
    manifests = sorted(K8S.glob("*.yaml"))
    assert {p.name for p in manifests} == {"worker-job.yaml", "dataset-cache-pvc.yaml"}
    result = kubernetes_validate(*manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    for resource in ("job/hpsearch-worker", "persistentvolumeclaim/hpsearch-cache"):
        assert re.search(rf"passed for resource {resource}\b", result.stdout), result.stdout


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("activeDeadlineSeconds: 86400", "activeDeadlineSecond: 86400", "was unexpected"),
        ("activeDeadlineSeconds: 86400", "activeDeadlineSeconds: 1d", "is not of type"),
        ("claimName: hpsearch-cache", "claimname: hpsearch-cache", "is a required property"),
    ],
)
def test_kubernetes_validate_rejects_a_broken_job(tmp_path, old, new, message):
    broken = broken_copy(K8S / "worker-job.yaml", tmp_path, old, new)
    result = kubernetes_validate(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stdout + result.stderr


# --- with-db-password -------------------------------------------------------------------------

SHOW = "import os, sys; print(os.environ.get('URL')); print(sys.argv[1:])"


def with_db_password(env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WRAPPER), *command],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_with_db_password_puts_the_password_into_the_url(tmp_path):
    from sqlalchemy.engine import make_url

    secret = tmp_path / "password"
    secret.write_text(HARD_PASSWORD + "\n")
    env = {
        "URL": "postgresql+psycopg://optuna@postgres:5432/optuna",
        "URL_PASSWORD_FILE": str(secret),
    }
    result = with_db_password(env, sys.executable, "-c", SHOW, "arg")
    assert result.returncode == 0, result.stderr
    url, argv = result.stdout.splitlines()
    assert argv == "['arg']"  # the command's own arguments, nothing added
    parsed = make_url(url)  # as SQLAlchemy (Optuna, MLflow) reads it
    assert (parsed.username, parsed.password) == ("optuna", HARD_PASSWORD)
    assert (parsed.host, parsed.port, parsed.database) == ("postgres", 5432, "optuna")
    assert urlsplit(url).password != HARD_PASSWORD  # percent-encoded in the URL


def test_with_db_password_changes_nothing_without_a_password_file():
    url = "postgresql+psycopg://user:given@db/optuna"
    result = with_db_password({"URL": url}, sys.executable, "-c", SHOW)
    assert result.returncode == 0 and result.stdout.splitlines()[0] == url


@pytest.mark.parametrize(
    ("url", "content", "message"),
    [
        ("postgresql://optuna@db/optuna", None, "cannot read"),
        ("postgresql://optuna@db/optuna", "\n", "is empty"),
        ("postgresql://optuna:old@db/optuna", "new", "already holds a password"),
        ("postgresql://db/optuna", "new", "needs a URL with a user name"),
        (None, "new", "is not"),
    ],
)
def test_with_db_password_refuses_and_runs_nothing(tmp_path, url, content, message):
    secret = tmp_path / "password"
    if content is not None:
        secret.write_text(content)
    env = {"URL_PASSWORD_FILE": str(secret)} | ({"URL": url} if url else {})
    marker = tmp_path / "ran"
    result = with_db_password(env, "touch", str(marker))
    assert result.returncode == 2
    assert message in result.stderr and not marker.exists()
    assert "new" not in result.stderr  # the password is not echoed


# --- make-secrets -----------------------------------------------------------------------------


def test_make_secrets_writes_one_password_per_user_and_keeps_them(tmp_path):
    script = tmp_path / "make-secrets"
    shutil.copy(MAKE_SECRETS, script)
    first = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "secrets"
    compose = yaml.safe_load(COMPOSE.read_text())
    wanted = {Path(s["file"]).name for s in compose["secrets"].values()}
    assert {p.name for p in folder.iterdir()} == wanted
    passwords = {p.name: p.read_text() for p in folder.iterdir()}
    assert len(set(passwords.values())) == len(passwords), "each user its own password"
    for name, text in passwords.items():
        assert re.fullmatch(r"[0-9a-f]{48}\n", text), name  # URL-safe, 192 random bits
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    second = subprocess.run([str(script)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "created" not in second.stdout
    assert {p.name: p.read_text() for p in folder.iterdir()} == passwords


# --- the initdb script ------------------------------------------------------------------------


def test_initdb_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(INITDB_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _postgres_bin() -> Path | None:
    """A PostgreSQL 15+ bin folder (psql's \\getenv is new in 15), or None."""
    folders = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if shutil.which("initdb"):
        folders.append(Path(shutil.which("initdb")).resolve().parent)
    for folder in reversed(folders):
        if all((folder / name).exists() for name in ("initdb", "pg_ctl", "psql")):
            out = subprocess.run([folder / "psql", "--version"], capture_output=True, text=True)
            version = re.search(r"\(PostgreSQL\) (\d+)", out.stdout)
            if version and int(version[1]) >= 15:
                return folder
    return None


class Server:
    """A PostgreSQL server of its own in a temporary folder, on a Unix socket only."""

    def __init__(self, bin_dir: Path, superuser_password: str):
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="hps-pg-", dir="/tmp"))  # short socket path
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        pwfile = self.path("superuser", superuser_password)
        self.run("initdb", "-D", str(self.dir / "data"), "-U", "postgres",
                 "-A", "scram-sha-256", f"--pwfile={pwfile}")  # fmt: skip
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w",
                 "-o", f"-c listen_addresses='' -c unix_socket_directories={self.dir}",
                 "start")  # fmt: skip

    def path(self, name: str, content: str) -> Path:
        """A file the server's user may read (a password file, as Compose mounts it)."""
        path = self.dir / name
        path.write_text(content)
        path.chmod(0o644)
        return path

    def run(self, program: str, *args: str, env: dict | None = None, check=True):
        environment = {"PATH": f"{self.bin}:{os.environ['PATH']}", "LC_ALL": "C.UTF-8",
                       **(env or {})}  # fmt: skip
        result = subprocess.run(
            [*self.as_user, program if "/" in program else str(self.bin / program), *args],
            env=environment, cwd=self.dir, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def stop(self):
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture()
def postgres_server():
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL 15+ programs (initdb, pg_ctl, psql) on this machine")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user("postgres")):
        pytest.skip("running as root without a `postgres` user to run the server as")
    server = Server(bin_dir, "superuser-password")
    try:
        yield server
    finally:
        server.stop()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


CONNECT = """
import os, sys
from sqlalchemy import create_engine, text
try:
    with create_engine(os.environ["URL"]).connect() as connection:
        print(*connection.execute(text("SELECT current_user, current_database()")).one())
except Exception as error:
    print("refused:", str(getattr(error, "orig", error)).splitlines()[0])
"""


@pytest.mark.slow
def test_initdb_script_makes_one_user_per_database_on_a_real_server(postgres_server):
    server = postgres_server
    files = {
        "OPTUNA_DB_PASSWORD_FILE": server.path("optuna_db_password", HARD_PASSWORD + "\n"),
        "MLFLOW_DB_PASSWORD_FILE": server.path("mlflow_db_password", "mlflow-password\n"),
    }
    env = {"PGHOST": str(server.dir), "PGPASSWORD": "superuser-password",
           "POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres"}  # fmt: skip
    # as the postgres image runs it: the password files named in the environment
    missing = server.run(str(INITDB_SCRIPT), env={**env, "OPTUNA_DB_PASSWORD_FILE":
                         str(files["OPTUNA_DB_PASSWORD_FILE"])}, check=False)  # fmt: skip
    assert missing.returncode == 1 and "MLFLOW_DB_PASSWORD_FILE" in missing.stderr
    server.run(str(INITDB_SCRIPT), env={**env, **{k: str(v) for k, v in files.items()}})

    def connect(user: str, database: str, password_file: Path) -> str:
        url = f"postgresql+psycopg://{user}@/{database}?host={server.dir}"
        result = with_db_password({"URL": url, "URL_PASSWORD_FILE": str(password_file)},
                                  sys.executable, "-c", CONNECT)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    optuna_file, mlflow_file = files.values()
    assert connect("optuna", "optuna", optuna_file) == "optuna optuna"
    assert connect("mlflow", "mlflow", mlflow_file) == "mlflow mlflow"
    # each user reaches its own database only, and only with its own password
    assert "permission denied" in connect("mlflow", "optuna", mlflow_file)
    assert "permission denied" in connect("optuna", "mlflow", optuna_file)
    assert "password authentication failed" in connect("optuna", "optuna", mlflow_file)
    log = (server.dir / "log").read_text()
    assert HARD_PASSWORD not in log and "mlflow-password" not in log

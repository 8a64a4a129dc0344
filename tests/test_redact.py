"""hide_password: every credential a URL can carry is masked, in a URL or inside any text,
and the rest of the URL stays readable."""

from __future__ import annotations

import io
import logging
import time

import pytest

from hpsearch.util.redact import hide_password, redact_logs

# (text, expected output, the secrets that must not survive)
CASES = [
    ("postgresql://alice:s3cret@db:5432/optuna",
     "postgresql://alice:***@db:5432/optuna", ["s3cret"]),
    ("postgresql+psycopg2://alice:s3cret@db/optuna?sslmode=require",
     "postgresql+psycopg2://alice:***@db/optuna?sslmode=require", ["s3cret"]),
    ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db", ["p@ss", "ss@"]),
    ("mysql+pymysql://u:a@b@c@host:3306/db", "mysql+pymysql://u:***@host:3306/db", ["a@b@c"]),
    ("postgresql://alice:p%40ss%2Fw0rd@db/optuna", "postgresql://alice:***@db/optuna",
     ["p%40ss", "%2Fw0rd"]),
    ("redis://:t0ken-value@cache:6379/0", "redis://:***@cache:6379/0", ["t0ken-value"]),
    ("https://bob:hunter2@mlflow.example.com/api", "https://bob:***@mlflow.example.com/api",
     ["hunter2"]),
    ("postgresql://u:pa/ss@host/db", "postgresql://u:***@host/db", ["pa/ss"]),
    ("postgresql://u:s3cret@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db", ["s3cret"]),
    ("postgresql://alice@db/optuna?password=s3cret&connect_timeout=10",
     "postgresql://alice@db/optuna?password=***&connect_timeout=10", ["s3cret"]),
    ("postgresql://db/x?a=1&PassWord=s3cret&b=2", "postgresql://db/x?a=1&PassWord=***&b=2",
     ["s3cret"]),
    ("mysql://db/x?passwd=pw1&user=u&pwd=pw2&pass=pw3",
     "mysql://db/x?passwd=***&user=u&pwd=***&pass=***", ["pw1", "pw2", "pw3"]),
    ("https://api.example.com/v1?api_key=k1&apikey=k2&key=k3&token=k4&access_token=k5",
     "https://api.example.com/v1?api_key=***&apikey=***&key=***&token=***&access_token=***",
     ["k1", "k2", "k3", "k4", "k5"]),
    ("https://h/x?secret=s1&auth=s2&credentials=s3&sslpassword=s4&client_secret=s5&page=2",
     "https://h/x?secret=***&auth=***&credentials=***&sslpassword=***&client_secret=***&page=2",
     ["s1", "s2", "s3", "s4", "s5"]),
    ("https://h/callback#access_token=s3cret&state=xyz",
     "https://h/callback#access_token=***&state=xyz", ["s3cret"]),
    ("jdbc:sqlserver://db:1433;user=sa;password=s3cret;encrypt=true",
     "jdbc:sqlserver://db:1433;user=sa;password=***;encrypt=true", ["s3cret"]),
    ("mongodb://u:s3cret@h1:27017,h2:27017/db?authSource=admin&tls=true",
     "mongodb://u:***@h1:27017,h2:27017/db?authSource=admin&tls=true", ["s3cret"]),
    # inside longer text: error messages and log lines
    ("storage postgresql://u:p@h/db: connection refused",
     "storage postgresql://u:***@h/db: connection refused", ["u:p@"]),
    ("storage 'postgresql://u:p@ss@h:5432/db' unreachable; retrying",
     "storage 'postgresql://u:***@h:5432/db' unreachable; retrying", ["p@ss"]),
    ("two stores: sqlite:///optuna.db and redis://:s3cret@cache/0, both down",
     "two stores: sqlite:///optuna.db and redis://:***@cache/0, both down", ["s3cret"]),
    ("(psycopg.OperationalError) postgresql://a:s3cret@db/x?sslpassword=k3y failed",
     "(psycopg.OperationalError) postgresql://a:***@db/x?sslpassword=*** failed",
     ["s3cret", "k3y"]),
    ("a://x,b://u:s3cret@h/x", "a://x,b://u:***@h/x", ["s3cret"]),
    # nothing to hide: left as it was
    ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db", []),
    ("postgresql://alice@db:5432/optuna", "postgresql://alice@db:5432/optuna", []),
    ("http://127.0.0.1:5000/#/experiments/1/runs", "http://127.0.0.1:5000/#/experiments/1/runs",
     []),
    ("http://[::1]:8080/users/@me?page=2&sort_by=name",
     "http://[::1]:8080/users/@me?page=2&sort_by=name", []),
    ("https://h/x?authSource=admin&keyword=cat&monkey=1",
     "https://h/x?authSource=admin&keyword=cat&monkey=1", []),
    ("postgresql://alice:***@db/optuna", "postgresql://alice:***@db/optuna", []),
    ("no URL here: user:pass@host is not one", "no URL here: user:pass@host is not one", []),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected", "secrets"), CASES, ids=[c[0][:40] for c in CASES])
def test_hide_password_masks_every_credential_and_keeps_the_rest(text, expected, secrets):
    masked = hide_password(text)
    assert masked == expected
    for secret in secrets:
        assert secret not in masked
    assert hide_password(masked) == masked  # masking twice changes nothing


def test_log_records_are_masked_in_what_handlers_write():
    stream = io.StringIO()
    logger = logging.getLogger("hpsearch.test_redact")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        redact_logs("hpsearch.test_redact")
        logger.warning("cannot reach %s", "postgresql://u:p@ss@h/db?token=t0k")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "cannot reach postgresql://u:***@h/db?token=***\n"


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000,
        "?" + "a_" * 100_000,
        "a://b:c/" * 50_000,
        ("x://u:p/" + "y" * 10) * 20_000 + "@",
        ("x" * 10_000 + " postgresql://u:p@h/db?" + "&a=1" * 5_000) * 10,
    ],
    ids=["long word", "long parameter name", "many URLs", "many colons", "long lines"],
)
def test_hide_password_takes_linear_time_on_long_text(text):
    started = time.monotonic()
    hide_password(text)
    assert time.monotonic() - started < 2


def test_a_logged_exceptions_traceback_is_masked_too():
    stream = io.StringIO()
    logger = logging.getLogger("hpsearch.test_redact.traceback")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        redact_logs("hpsearch.test_redact.traceback")
        try:
            raise ConnectionError("cannot reach postgresql://u:s3cret@h/db?sslpassword=k3y")
        except ConnectionError:
            logger.exception("storage %s away", "redis://:t0ken@cache/0")
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "Traceback (most recent call last)" in written  # the traceback is still written
    assert "postgresql://u:***@h/db?sslpassword=***" in written
    assert "redis://:***@cache/0" in written
    for secret in ("s3cret", "k3y", "t0ken"):
        assert secret not in written

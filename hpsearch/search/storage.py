"""The Optuna storage a study lives in: opened with heartbeats, retries and SQLite's WAL mode."""

from __future__ import annotations

import time

import optuna

from hpsearch.errors import HpsearchError
from hpsearch.search.lost_trials import StaleTrialHandler
from hpsearch.search.options import WorkerOptions
from hpsearch.util.redact import hide_password


def make_storage(url: str, options: WorkerOptions) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage, with heartbeats and retries of trials whose worker died."""
    from hpsearch.util.connections import check_storage

    check_storage(url)
    kwargs: dict = {}
    if options.heartbeat > 0:
        kwargs = {
            "heartbeat_interval": options.heartbeat,
            "grace_period": options.grace or 4 * options.heartbeat,
            "heartbeat_stale_trial_callback": StaleTrialHandler(options.max_retry),
        }
    for attempt in range(3):
        try:
            storage = optuna.storages.RDBStorage(url, **kwargs)
            break
        except Exception as error:  # bad URL, unreachable database, missing driver
            message = str(error).splitlines()[0]
            if attempt < 2 and _lost_schema_race(message):
                time.sleep(1.0 + attempt)  # the other worker's tables are there now
                continue
            raise HpsearchError(f"storage {hide_password(url)}: {hide_password(message)}") from None
    if storage.engine.dialect.name == "sqlite":
        _write_ahead_log(storage.engine)
    # Optuna's schema checks left idle connections in the pool; a worker needs two (its
    # trials and its heartbeat), and a PostgreSQL server has about 100 for every worker
    storage.engine.dispose()
    return storage


def _lost_schema_race(message: str) -> bool:
    """Two workers started at once on a new storage both created Optuna's tables."""
    return any(sign in message for sign in (
        "UNIQUE constraint failed: alembic_version",  # SQLite
        "alembic_version_pkc",  # PostgreSQL: duplicate key
        "already exists",
    ))  # fmt: skip


def _write_ahead_log(engine) -> None:
    """SQLite in write-ahead-log mode, synced at checkpoints rather than at every commit.

    A trial makes a dozen small commits (ask, suggestions, user attributes, one
    report per epoch, tell); in SQLite's default rollback-journal mode each waits
    for the disk (the gain is in benchmarks/RESULTS.md, study_overhead). The database stays
    consistent if the process dies; a power cut can lose the last commits. Readers
    no longer block the writer, which helps several workers on one file. The mode
    is kept in the file: it leaves ``optuna.db-wal`` and ``optuna.db-shm`` beside
    it while the study is open, so the file needs a local disk, not a network share.
    """
    import sqlite3

    from sqlalchemy import event

    def pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")  # a no-op once the file is in WAL mode
            cursor.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError:  # locked by another worker mid-switch: default mode
            pass
        finally:
            cursor.close()

    event.listen(engine, "connect", pragmas)  # the caller disposes of the connections open now

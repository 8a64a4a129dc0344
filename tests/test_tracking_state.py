"""Unit tests of tracking's shared state under concurrent use: the retry state
(:class:`~hpsearch.tracking.retries.PendingCalls`) and this process's spool entries
(:class:`~hpsearch.tracking.spool.SpooledRuns`) are written by the uploader's thread while
the main loop reads and empties them. Threads hammer one object and it ends consistent.
No MLflow: nothing here makes a call.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hpsearch.tracking import spool
from hpsearch.tracking.retries import PendingCalls
from hpsearch.tracking.spool import SpooledRuns, _SpoolEntry

RUNS, ROUNDS = 4, 8000


@pytest.fixture(autouse=True)
def often_switching() -> Iterator[None]:
    """Threads switch every few bytecodes, not every 5 ms: races show up."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def together(*jobs: Callable[[], None]) -> None:
    """Run ``jobs`` in threads started at once; re-raise the first error any of them hit."""
    start, errors = threading.Barrier(len(jobs)), []

    def run(job: Callable[[], None]) -> None:
        start.wait()
        try:
            job()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def test_the_retry_state_ends_consistent_when_two_threads_record_and_forget_at_once():
    state = PendingCalls()
    kept: dict[str, list[dict]] = {}  # what each thread leaves recorded, in order

    def worker(name: str) -> Callable[[], None]:
        def job() -> None:
            for i in range(ROUNDS):
                run_id = f"run-{i % RUNS}"  # both threads use the same run ids
                batch = {"thread": name, "i": i}
                state.record_batch(run_id, batch)
                state.record_upload(run_id, Path(run_id))
                state.record_close(run_id, "FINISHED", {"thread": name}, i)
                for batches in state.unlogged().values():  # a copy: safe while others write
                    assert all(isinstance(b, dict) for b in batches)
                if i % 50:
                    state.forget_batch(run_id, batch)
                else:
                    kept.setdefault(name, []).append(batch)
                state.forget_upload(run_id)
                state.forget_close(run_id)

        return job

    together(worker("a"), worker("b"))

    assert state.unsent() == {} and state.unclosed() == {}
    left = state.unlogged()
    assert sum(map(len, left.values())) == len(kept["a"]) + len(kept["b"])  # none lost, none extra
    for name in ("a", "b"):
        for run_id, batches in left.items():
            mine = [b for b in batches if b["thread"] == name]
            assert mine == [b for b in kept[name] if f"run-{b['i'] % RUNS}" == run_id]  # in order
    for run_id, batches in left.items():
        for batch in batches:
            state.forget_batch("another-run", batch)  # not this run's: nothing forgotten
            state.forget_batch(run_id, dict(batch))  # equal, not the same batch: kept
    assert state.unlogged() == left
    for run_id, batches in left.items():
        for batch in batches:
            state.forget_batch(run_id, batch)
    assert state.empty()


def test_a_batch_recorded_while_the_retry_resends_is_kept_for_the_next_retry():
    state = PendingCalls()
    first, second = {"n": 1}, {"n": 2}
    state.record_batch("run", first)
    snapshot = state.unlogged()  # what a retry is sending
    state.record_batch("run", second)  # the uploader's thread fails another meanwhile
    for batch in snapshot["run"]:
        state.forget_batch("run", batch)  # sent
    assert state.unlogged() == {"run": [second]}


def test_the_spool_entries_end_consistent_when_two_threads_finish_steps_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(spool.SPOOL_ENV, str(tmp_path))  # the spool folder itself stays
    entries = SpooledRuns()
    monkeypatch.setattr(spool, "SPOOLED", entries)
    count = 60
    for i in range(count):
        folder = tmp_path / f"run-{i}"
        (folder / "artifacts").mkdir(parents=True)
        manifest = {"run_id": f"run-{i}", "todo": ["upload", "close"]}
        (folder / "run.json").write_text(json.dumps(manifest))
        entries.add(f"run-{i}", _SpoolEntry(folder, None, manifest))

    def finish(step: str) -> Callable[[], None]:
        def job() -> None:
            for i in range(count):
                spool._spool_step_done(f"run-{i}", step)
                entries.due_for_refresh(force=True)
                entries.owns(f"run-{(i + 1) % count}")

        return job

    together(finish("upload"), finish("close"))

    assert entries.run_ids() == [] and entries.due_for_refresh(force=True) == []
    assert list(tmp_path.iterdir()) == []  # every entry removed once both its steps were done

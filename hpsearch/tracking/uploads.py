"""Background uploads: a trial's figures are drawn and its artifacts sent while the next trains.

Not MLflow's async logging (``synchronous=False``, 3.17): it sends metrics, params and tags only
(``log_artifact(s)`` take no such flag), never draws figures, and cannot be held for a first epoch.

One thread, one queue, jobs in the order they were given: a run's artifacts
are always uploaded before the job that closes the run. The driver holds the
queue while a trial builds its model and traces its train step (Python work
that would compete with the jobs for the interpreter) and lets it go once the
trial's first epoch is done. ``drain`` waits for
everything given so far; the study driver drains before it writes the study
summary and before it returns, so no run is left open by a worker that ends
normally. A job that fails is logged and reported by ``drain``; tracking's
own retry lists (unclosed runs, unsent artifact folders) take it from there.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Uploader:
    """A single background worker thread running jobs first in, first out."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[str, Callable[[], None]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self.failures: list[tuple[str, BaseException]] = []

    def hold(self) -> None:
        """Start no new job until :meth:`go` (while the next trial builds and traces)."""
        self._open.clear()

    def go(self) -> None:
        self._open.set()

    def submit(self, what: str, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._work, name="hpsearch-uploads", daemon=True
                )
                self._thread.start()
        self._jobs.put((what, job))

    def pending(self) -> int:
        return self._jobs.unfinished_tasks

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every job given so far has run; False if ``timeout`` ran out first."""
        self.go()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._jobs.all_tasks_done:
            while self._jobs.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._jobs.all_tasks_done.wait(left)
        return True

    def _work(self) -> None:
        while True:
            what, job = self._jobs.get()
            self._open.wait()
            try:
                job()
            except Exception as error:  # noqa: BLE001 - keep serving the next jobs
                log.warning("background upload failed (%s): %s", what, error)
                self.failures.append((what, error))
            finally:
                self._jobs.task_done()


"""A drawing process: a study's per-trial figures drawn outside the training process.

Drawn in the training process (on the upload thread, while the next trial
trains), a trial's two figures cost that process about 0.2 s of Python work
holding the interpreter lock that the training loop also needs, and leave
some 15,000 objects of matplotlib garbage for the collection between trials
to free. One child process (``python -m hpsearch.drawing``), started on first
use and reused for every trial, draws them instead. In a 20-trial study of
small CNNs on a 2-core machine (``benchmarks/study_overhead.py``) the time
outside ``fit`` fell by 0.26 s on average (collections of 11-21k objects
instead of 26-35k, and a shorter summary at the end); the child's drawing
still takes CPU time from training on two cores.

The child imports only matplotlib, scikit-learn and :mod:`hpsearch.plots`,
never the training script (which ``multiprocessing``'s spawn would run
again). Requests and answers are pickled over its standard input and a copy
of its standard output. It runs in its own session, so Ctrl-C reaches the
driver only, and it exits when its input closes. If it cannot be started or
dies, figures are drawn in-process from then on, with a warning.

Only the study driver uses one: a single run (``hpsearch train``, the
chooser) draws its two figures in-process rather than wait for a process.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Draw = Callable[..., Path]
CLOSE_WAIT_S = 10.0


class DrawingProcess:
    """Runs picklable drawing functions (``hpsearch.plots``) in one child process."""

    def __init__(self) -> None:
        self._child: subprocess.Popen | None = None
        self._lock = threading.Lock()  # one request at a time
        self.in_process = False  # once closed, or after the child failed

    def draw(self, function: Draw, *args: Any, **kwargs: Any) -> Path:
        """``function(*args, **kwargs)`` in the child (in this process if the child is unavailable).

        An error raised by ``function`` itself is raised here, as it would be in-process.
        """
        with self._lock:
            if not self.in_process:
                try:
                    status, value = self._ask(function, args, kwargs)
                except (OSError, EOFError, pickle.PickleError) as error:
                    log.warning("drawing process unavailable (%s); drawing in-process", error)
                    self._stop()
                else:
                    if status == "error":
                        raise value
                    return value
        return function(*args, **kwargs)

    def _ask(self, function: Draw, args: tuple, kwargs: dict) -> tuple[str, Any]:
        if self._child is None:
            package_root = str(Path(__file__).resolve().parents[1])  # hpsearch as imported here
            paths = [package_root, os.environ.get("PYTHONPATH", "")]
            self._child = subprocess.Popen(
                [sys.executable, "-m", "hpsearch.drawing"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))},
                start_new_session=True,  # Ctrl-C in the terminal is the driver's to handle
            )
        pickle.dump((function, args, kwargs), self._child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self._child.stdin.flush()
        return pickle.load(self._child.stdout)

    def close(self) -> None:
        """End the child (after the drawing under way, if any); later figures are drawn here."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        self.in_process = True
        child, self._child = self._child, None
        if child is None:
            return
        for stream in (child.stdin, child.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            child.wait(CLOSE_WAIT_S)  # it exits at the end of its input
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _serve() -> None:
    """The child's loop: read a request, run it, write the answer, until the input ends."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt answers
    requests = sys.stdin.buffer
    while True:
        try:
            function, args, kwargs = pickle.load(requests)
        except EOFError:  # the driver closed its end: exit at once, nothing left to write
            sys.stderr.flush()
            os._exit(0)  # skips tearing down matplotlib and scikit-learn (0.4 s)
        try:
            answer = ("ok", function(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - raised again in the driver
            answer = ("error", error)
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an error that does not pickle
            data = pickle.dumps(("error", RuntimeError(repr(answer[1]))))
        answers.write(data)
        answers.flush()


if __name__ == "__main__":
    _serve()

"""A drawing process: a study's per-trial figures drawn outside the training process.

Not concurrent.futures: its workers import the training script, TensorFlow too.

Drawn in the training process (on the upload thread, while the next trial
trains), a trial's two figures would hold the interpreter lock that the
training loop also needs, and leave thousands of objects of matplotlib garbage
for the collection between trials to free. One child process
(``python -m hpsearch.figures.drawing``), started on first use and reused for
every trial, draws them instead; what it saves is measured by
``benchmarks/study_overhead.py --figures`` (benchmarks/RESULTS.md). The child's
drawing still takes CPU time from training on a machine with few cores.

The child imports only matplotlib, scikit-learn and :mod:`hpsearch.figures.plots`,
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
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hpsearch

log = logging.getLogger(__name__)

Draw = Callable[..., Path]
CLOSE_WAIT_S = 10.0


class _Request:
    """One drawing asked of the child: what to run, and its answer once read."""

    def __init__(self, function: Draw, args: tuple, kwargs: dict) -> None:
        self.function, self.args, self.kwargs = function, args, kwargs
        self.answer: tuple[str, Any] | None = None  # ("ok", path) or ("error", exception)


class DrawingProcess:
    """Runs picklable drawing functions (``hpsearch.figures.plots``) in one child process."""

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # one reader or writer of the pipes at a time
        self._sent: deque[_Request] = deque()  # sent, answer not read yet (answers come in order)
        self.in_process = False  # once closed, or after the child failed

    def draw(self, function: Draw, *args: Any, **kwargs: Any) -> Path:
        """``function(*args, **kwargs)`` in the child (in this process if the child is unavailable).

        An error raised by ``function`` itself is raised here, as it would be in-process.
        """
        return self.submit(function, *args, **kwargs)()

    def submit(self, function: Draw, *args: Any, **kwargs: Any) -> Callable[[], Path]:
        """Send ``function(*args, **kwargs)`` to the child and return at once.

        The returned callable waits for the drawing and returns (or raises) what
        :meth:`draw` would. Meanwhile the caller can go on (a trial's model is
        saved while the child draws its figures). The child reads one request
        at a time, so a request larger than the pipe's buffer (64 KiB) makes
        this wait until the drawing ahead of it is done: send it first.
        """
        request = _Request(function, args, kwargs)
        with self._lock:
            if not self.in_process:
                try:
                    self._send(request)
                except (OSError, pickle.PickleError) as error:
                    self._fail(error)
                else:
                    self._sent.append(request)
        return lambda: self._result(request)

    def _result(self, request: _Request) -> Path:
        with self._lock:
            self._read_until(request)
        if request.answer is None:  # never sent, or the child failed first: draw it here
            return request.function(*request.args, **request.kwargs)
        status, value = request.answer
        if status == "error":
            raise value
        return value

    def _read_until(self, request: _Request | None) -> None:
        """Read answers in order until ``request``'s (None: all of them) or the child fails."""
        while self._sent and (request is None or request.answer is None):
            assert self._child is not None and self._child.stdout is not None  # requests sent
            try:
                answer = pickle.load(self._child.stdout)
            except (OSError, EOFError, pickle.PickleError) as error:
                self._fail(error)
                return
            self._sent.popleft().answer = answer

    def _fail(self, error: BaseException) -> None:
        log.warning("drawing process unavailable (%s); drawing in-process", error)
        self._stop()

    def _send(self, request: _Request) -> None:
        if self._child is None:
            package_root = str(Path(hpsearch.__file__).resolve().parents[1])  # as imported here
            paths = [package_root, os.environ.get("PYTHONPATH", "")]
            self._child = subprocess.Popen(
                [sys.executable, "-m", "hpsearch.figures.drawing"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))},
                start_new_session=True,  # Ctrl-C in the terminal is the driver's to handle
            )
        message = (request.function, request.args, request.kwargs)
        stdin = self._child.stdin
        assert stdin is not None  # stdin=PIPE
        pickle.dump(message, stdin, protocol=pickle.HIGHEST_PROTOCOL)
        stdin.flush()

    def close(self) -> None:
        """End the child once the drawings sent are done; later figures are drawn here."""
        with self._lock:
            self._read_until(None)
            self._stop()

    def _stop(self) -> None:
        self.in_process = True
        self._sent.clear()  # any answers not read: those drawings are made here when asked for
        child, self._child = self._child, None
        if child is None:
            return
        for stream in (child.stdin, child.stdout):
            try:
                if stream is not None:
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
            os._exit(0)  # skips tearing down matplotlib and scikit-learn: nothing to save
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

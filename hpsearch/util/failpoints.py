"""Named points in a trial's life where the fault tests stop a worker.

``HPSEARCH_FAILPOINT=<name>`` makes the process stop itself (``SIGSTOP``) the
first time it reaches that point, so that a test can then kill it (``kill -9``,
``SIGTERM``) at exactly that moment rather than after a guessed sleep. Unset,
every point is a dictionary lookup and nothing else. The points, in a trial's
order:

``building``        the trial is RUNNING with its MLflow run; no model yet
``first_epoch``     the first epoch has ended and been reported to the pruner
``last_epoch``      the last epoch (``epochs``) begins
``uploading``       a completed trial's artifacts are written to the spool, not yet sent
                    (armed, the driver lets that upload run before the next trial, so
                    the stop lands on the trial just completed, not some trials later)
``between_trials``  a trial has ended; the next is not asked for yet

(Failpoints after FreeBSD's and TiKV's: a test hook that costs nothing when off.)
"""

from __future__ import annotations

import os
import signal

import keras

ENV = "HPSEARCH_FAILPOINT"
POINTS = ("building", "first_epoch", "last_epoch", "uploading", "between_trials")
_passed: set[str] = set()


def enabled() -> bool:
    return ENV in os.environ


def armed(point: str) -> bool:
    """Whether ``$HPSEARCH_FAILPOINT`` names ``point`` and it has not been reached yet."""
    return os.environ.get(ENV) == point and point not in _passed


def reached(point: str) -> None:
    """Stop this process here if ``$HPSEARCH_FAILPOINT`` names ``point`` (the first time)."""
    if os.environ.get(ENV) != point or point in _passed or not hasattr(signal, "SIGSTOP"):
        return
    _passed.add(point)
    os.kill(os.getpid(), signal.SIGSTOP)


class EpochFailpoints(keras.callbacks.Callback):
    """``first_epoch`` and ``last_epoch`` during ``fit`` (added only when a failpoint is set)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.epochs - 1:
            reached("last_epoch")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == 0:
            reached("first_epoch")

"""Ctrl-C during training lands between two training steps, never inside one.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when
the signal comes. Inside Keras's ``fit`` under TensorFlow that can be the middle
of making the epoch's dataset iterator, whose half-made native state then
crashes the process as it is freed (glibc's "free(): invalid next size", exit
status -6): the trial and its MLflow run are never closed, nothing is printed.

While a trial builds and fits its model, the first SIGINT (and SIGTERM, where
the command line turned it into Ctrl-C) is noted, and a Keras callback raises
``KeyboardInterrupt`` at the next batch or epoch boundary: the same exception
the rest of hpsearch already handles, at a point where unwinding is safe. A
second signal raises at once, for a step that hangs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

import keras

NOTICE = b"\ninterrupt: stopping at the end of this training step (again to stop at once)\n"


class BetweenSteps(keras.callbacks.Callback):
    """Raises ``KeyboardInterrupt`` at a batch or epoch boundary once a signal was noted."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: int | None = None  # the signal noted and not yet raised

    def raise_pending(self, *args, **kwargs) -> None:
        if self.pending is not None:
            self.pending = None
            raise KeyboardInterrupt

    on_epoch_begin = on_epoch_end = raise_pending
    on_train_batch_end = on_test_batch_end = raise_pending


def _deferred_signals() -> list[signal.Signals]:
    """SIGINT where Python's default handler has it; SIGTERM where a Python handler has it."""
    signals = []
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signals.append(signal.SIGINT)
    if callable(signal.getsignal(signal.SIGTERM)):  # the CLI's stop_on_sigterm
        signals.append(signal.SIGTERM)
    return signals


@contextlib.contextmanager
def interrupts_between_steps() -> Iterator[BetweenSteps]:
    """Note SIGINT/SIGTERM inside the block; the yielded callback raises them in ``fit``.

    A signal noted but not raised by the end of the block is raised as the block
    ends. Off the main thread (where no handler can be set) nothing changes.
    """
    callback = BetweenSteps()
    if threading.current_thread() is not threading.main_thread():
        yield callback
        return
    previous = {number: signal.getsignal(number) for number in _deferred_signals()}

    def note(number, frame):
        if callback.pending is not None:  # the second one: now
            raise KeyboardInterrupt
        callback.pending = number
        os.write(2, NOTICE)  # not print: the signal may have cut a print short

    for number in previous:
        signal.signal(number, note)
    try:
        yield callback
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    callback.raise_pending()

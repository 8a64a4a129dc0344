"""Progress of long work: the bar and plain lines (a study's trials: search/study_progress.py).

A wrapper, not tqdm alone: tqdm draws the bars, but off a terminal it redraws one line with
``\\r``, where a log wants plain lines, and a study's bar must let per-epoch output pass above it.

On a terminal (stderr a TTY) a search shows a tqdm bar: trials done of the total, complete /
pruned / failed, the best so far, elapsed and time left. Everything printed meanwhile (the
per-trial lines, Keras's per-epoch lines, warnings and log records) is written above the bar,
so it stays whole at the bottom, with ``-q`` or without: ``-q`` drops the per-epoch lines, not
the bar. Elsewhere (a pipe, a log file, the workers of ``search --workers``, the tests) there
is no bar, only the same per-trial lines, and decoding prints "decoded N of M" every few
seconds. ``HPSEARCH_PROGRESS=lines`` asks for plain lines on a terminal too.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm import tqdm

PROGRESS_ENV = "HPSEARCH_PROGRESS"
PLAIN_EVERY_S = 5.0  # off a terminal, a line about long work this often
REFRESH_S = 1.0  # a study's bar redraws this often, so its clock moves during a trial

_quiet = False


@contextmanager
def quiet_progress(on: bool = True) -> Iterator[None]:
    """No progress of long work (decoding) while inside: a command's ``-q``."""
    global _quiet
    before, _quiet = _quiet, _quiet or on
    try:
        yield
    finally:
        _quiet = before


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether bars are drawn: ``stream`` (default stderr) is a TTY, and no plain lines asked."""
    stream = sys.stderr if stream is None else stream
    if os.environ.get(PROGRESS_ENV, "").strip().lower() == "lines":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class AboveTheBar:
    """A text stream that writes its whole lines above ``bar`` (cleared, written, redrawn).

    tqdm's own ``tqdm.write`` and ``DummyTqdmFile`` miss two cases here: a line to stdout
    while the bar is on stderr (``tqdm.write`` only clears bars on the same file once
    ``sys.stdout`` is redirected), and click's check for a binary stream (``write(b"")``).
    """

    def __init__(self, stream: TextIO, bar: tqdm) -> None:
        self._stream, self._bar, self._partial = stream, bar, ""

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._bar.get_lock():
            head, newline, self._partial = (self._partial + text).rpartition("\n")
            if newline:
                self._bar.clear(nolock=True)
                self._stream.write(head + newline)
                self._stream.flush()
                self._bar.refresh(nolock=True)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        """Write what is left of an unfinished line (the stream itself stays open)."""
        if self._partial:
            self.write("\n")

    def __getattr__(self, name: str):  # isatty, fileno, encoding, buffer...
        return getattr(self._stream, name)


@contextmanager
def log_handlers_above(above: dict[int, AboveTheBar]) -> Iterator[None]:
    """Log handlers writing to the terminal's stdout or stderr write above the bar meanwhile.

    (Their streams are swapped, so their filters, as redact.py's, stay in place.)
    """
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    swapped = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and id(stream) in above:
                handler.setStream(above[id(stream)])
                swapped.append((handler, stream))
    try:
        yield
    finally:
        for handler, stream in swapped:
            handler.setStream(stream)


# --- long work ---------------------------------------------------------------------------------


class WorkProgress:
    """Progress of one long piece of work: a tqdm bar titled ``title`` on a terminal, else a
    plain line to stderr every :data:`PLAIN_EVERY_S` seconds, ``label`` first ("cifar10:
    decoded 12000 of 60000 images (20%, 5s, about 20s left)"); nothing under
    :func:`quiet_progress`. ``unit="B"`` counts bytes, shown in MB.
    """

    def __init__(self, total: int, label: str, title: str, unit: str) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.n, self.started = 0, time.monotonic()
        self._next_line = self.started + PLAIN_EVERY_S
        self._lines, self._said = 0, -1
        self._bar: tqdm | None = None
        if not _quiet and on_terminal():
            scaled = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
            self._bar = tqdm(total=total, desc=title, unit=unit.rstrip("s"), file=sys.stderr,
                             dynamic_ncols=True, mininterval=0.2, **scaled)  # fmt: skip

    def update_to(self, n: int) -> None:
        """``n`` of the total done."""
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
        elif not _quiet and time.monotonic() >= self._next_line:
            self.n = n
            self._plain()
            self._next_line = time.monotonic() + PLAIN_EVERY_S
        self.n = n

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._lines and self._said != self.n == self.total:  # it took a while: say it ended
            self._plain()

    def __enter__(self) -> WorkProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _plain(self) -> None:
        seconds = time.monotonic() - self.started
        if self.unit == "B":
            n, total, unit = f"{self.n / 2**20:.1f}", f"{self.total / 2**20:.1f}", "MB"
        else:
            n, total, unit = str(self.n), str(self.total), self.unit
        fraction = self.n / self.total if self.total else 1.0
        left = seconds / fraction - seconds if 0 < fraction < 1 else 0.0
        eta = f", about {math.ceil(left)}s left" if left else ""
        print(f"{self.label} {n} of {total} {unit} ({fraction:.0%}, {seconds:.0f}s{eta})",
              file=sys.stderr, flush=True)  # fmt: skip
        self._lines, self._said = self._lines + 1, self.n

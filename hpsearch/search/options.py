"""How one process takes part in a study: heartbeats, retries, limits, its identity."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorkerOptions:
    """How a process takes part in a (possibly shared) study."""

    heartbeat: int = 30  # seconds between a running trial's heartbeats; 0: off
    grace: int | None = None  # a trial without heartbeat this long is failed (default 4x)
    max_retry: int = 2  # a trial failed by a lost worker is retried this often
    max_trials: int | None = None  # at most this many trials in this process
    tracking_wait: float = 300.0  # seconds to wait for an unreachable tracking server
    max_failures_in_a_row: int = 5  # then stop: something is wrong with every trial
    # who this process is among the study's workers: an index, or "host:pid"; it seeds the
    # sampler so that workers propose different points (None: the study's only process)
    worker: int | str | None = None

"""Several workers on one GPU: the number `--workers auto` picks and each worker's share."""

from __future__ import annotations

import click
import pytest

from hpsearch.cli.common import WorkerCount
from hpsearch.search.gpu_share import GIB, Footprint, _largest, choose_workers, worker_env
from hpsearch.search.study_file import load_study

BASELINE2 = Footprint(params=307_498, activations_per_image=266_250, batch_size=256)


def test_no_gpu_means_one_worker():
    assert choose_workers(None, BASELINE2, cpus=16)[0] == 1
    workers, reason = choose_workers(0, BASELINE2)
    assert workers == 1 and "no GPU" in reason


def test_workers_follow_gpu_memory_and_model_size():
    # baseline2 at batch 256 needs about 2.3 GiB a worker by the estimate
    assert 2 * GIB < BASELINE2.bytes() < 3 * GIB
    assert choose_workers(8 * GIB, BASELINE2, cpus=64, cap=100)[0] == 3
    assert choose_workers(139 * GIB, BASELINE2, cap=100)[0] == 55
    bigger = Footprint(params=6_570_890, activations_per_image=858_634, batch_size=512)
    assert choose_workers(24 * GIB, bigger, cpus=64)[0] < choose_workers(24 * GIB, BASELINE2,
                                                                          cpus=64)[0]


def test_workers_capped_by_cap_and_cpus_at_least_one():
    assert choose_workers(139 * GIB, BASELINE2, cpus=64)[0] == 8  # the cap
    workers, reason = choose_workers(139 * GIB, BASELINE2, cpus=6)
    assert workers == 3 and "6 CPU cores" in reason
    huge = Footprint(params=10**10, activations_per_image=10**7, batch_size=512)
    assert choose_workers(16 * GIB, huge, cpus=16)[0] == 1  # never 0


def test_worker_env_shares_the_gpu():
    env = worker_env(4, {})
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.225"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in worker_env(1, {})
    mine = worker_env(4, {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.1"})
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in mine  # the user's own setting wins


def test_largest_configs_of_a_study():
    configs = _largest(load_study("studies/batch_size.yaml"))
    assert {config["batch_size"] for config in configs} == {512}


def test_workers_option_takes_a_number_or_auto():
    kind = WorkerCount()
    assert kind.convert("auto", None, None) == "auto"
    assert kind.convert("3", None, None) == 3
    for bad in ("0", "many", "-2"):
        with pytest.raises(click.BadParameter):
            kind.convert(bad, None, None)

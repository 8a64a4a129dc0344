"""Several worker processes on one GPU: each one's share of its memory, and how many fit.

``search`` / ``reproduce --workers N`` start N worker processes; on one GPU each must take
only its share of the memory: JAX preallocates 75% of the GPU in every process by default,
so a second worker would find none left. :func:`worker_env` gives each worker
``XLA_PYTHON_CLIENT_MEM_FRACTION`` = 0.9 / N (preallocated: no allocations while training)
and TensorFlow memory growth. ``--workers auto`` asks :func:`auto_workers`: the GPU's memory
(``nvidia-smi``, so that this process never claims any), the study's largest network (its
parameters and activations, measured in a CPU-only subprocess) and batch size give N
(:func:`choose_workers`, a pure function); on a machine without a GPU, ``auto`` is 1.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

GIB = 1024**3
USABLE = 0.9  # of the GPU's memory, shared among the workers (the rest: the driver, slack)
OVERHEAD = 1.0 * GIB  # per process: CUDA context, cuDNN/XLA workspaces, compiled programs
SAFETY = 1.5  # the estimate below is rough: allocator fragmentation, XLA's temporaries
MAX_WORKERS = 8  # past this, processes mostly wait for each other on one GPU
INPUT_SHAPES = {  # (height, width, channels) of each dataset's images
    "digits": (8, 8, 1),
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "cifar100": (32, 32, 3),
    "folder": (32, 32, 3),  # CIFAR-10's image folder (../shared/data)
}
CLASSES = {"cifar100": 100}


def worker_env(workers: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a worker's environment needs so that ``workers`` of them share one GPU.

    Set only where the caller's environment leaves them unset (a user's own choice wins).
    """
    environ = os.environ if environ is None else environ
    wanted = {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    if workers > 1:
        wanted["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{USABLE / workers:.3f}"
        wanted["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true"
    return {key: value for key, value in wanted.items() if key not in environ}


@dataclass(frozen=True)
class Footprint:
    """What one worker's network needs: parameters and activation values per image."""

    params: int
    activations_per_image: int
    batch_size: int

    def bytes(self) -> float:
        """A worker's GPU memory, roughly: framework overhead, float32 weights with their
        gradients and two optimizer moments, activations kept for the backward pass and
        their gradients, times a safety factor."""
        state = 4 * 4 * self.params
        activations = 2 * 4 * self.activations_per_image * self.batch_size
        return SAFETY * (OVERHEAD + state + activations)


def choose_workers(
    gpu_memory: int | None,
    footprint: Footprint,
    cpus: int | None = None,
    cap: int = MAX_WORKERS,
) -> tuple[int, str]:
    """How many workers to run on one GPU of ``gpu_memory`` bytes, and why.

    As many as fit in 90% of its memory (:meth:`Footprint.bytes` each), at most ``cap`` and
    at most one per two CPU cores (each worker's Python, data and augmentation run there);
    at least 1. No GPU (``None`` or 0): 1, the sensible number on a CPU, whose cores one
    process's kernels already use.
    """
    if not gpu_memory:
        return 1, "no GPU found: 1 worker (on a CPU, one process already uses every core)"
    need = footprint.bytes()
    fit = math.floor(USABLE * gpu_memory / need)
    limits = [(fit, f"{fit} fit in {USABLE:.0%} of {gpu_memory / GIB:.0f} GiB "
                    f"at ~{need / GIB:.1f} GiB each")]  # fmt: skip
    limits.append((cap, f"at most {cap} on one GPU"))
    if cpus:
        limits.append((max(1, cpus // 2), f"{cpus} CPU cores, two a worker"))
    workers, reason = min(limits, key=lambda item: item[0])
    workers = max(1, workers)
    return workers, (
        f"{workers} worker{'s' if workers != 1 else ''} ({reason}; network of "
        f"{footprint.params:,} parameters, {footprint.activations_per_image:,} activations "
        f"an image, batch {footprint.batch_size})"
    )


def gpu_memory() -> int | None:
    """Total memory of the GPU workers will use (bytes), from ``nvidia-smi``; None: no GPU.

    ``nvidia-smi`` rather than TensorFlow or JAX, which would claim GPU memory in this
    process for as long as the workers run. The first of ``CUDA_VISIBLE_DEVICES``, if set.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return None
    if shutil.which("nvidia-smi") is None:
        return None
    command = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    first = (visible or "").split(",")[0].strip()
    if first.isdigit():
        command += ["-i", first]
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        return int(float(answer.stdout.split()[0]) * 1024 * 1024)  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _largest(spec: Any) -> list[dict[str, Any]]:
    """Trial configs that bound a study's networks: its fixed settings with each searched
    architecture and width, at its largest searched batch size."""
    configs = [dict(spec.fixed)]
    for key in ("architecture", "width", "batch_size"):
        factor = spec.space.get(key)
        if factor is None:
            continue
        values = factor.choices or [factor.high]
        if key == "batch_size":
            values = [max(int(v) for v in values)]
        configs = [{**config, key: value} for config in configs for value in values]
    for point in getattr(spec, "points", []) or []:
        configs.append({**spec.fixed, **point})
    return configs


def measure(configs: list[dict[str, Any]], input_shape: tuple[int, int, int],
            num_classes: int) -> Footprint:  # fmt: skip
    """The largest footprint among ``configs``, their networks built in a CPU-only subprocess
    (this process loads no framework and claims no GPU memory)."""
    payload = json.dumps({"configs": configs, "shape": input_shape, "classes": num_classes})
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "TF_CPP_MIN_LOG_LEVEL": "3"}  # fmt: skip
    answer = subprocess.run([sys.executable, "-m", "hpsearch.search.gpu_share"], input=payload,
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    if answer.returncode != 0:
        raise RuntimeError(f"measuring the network failed: {answer.stderr.strip()[-500:]}")
    return Footprint(**json.loads(answer.stdout.strip().splitlines()[-1]))


def _measure_here(configs: list[dict[str, Any]], input_shape, num_classes) -> Footprint:
    import math as _math

    from hpsearch.config import make_config
    from hpsearch.model.builder import build_network

    largest = None
    for values in configs:
        config = make_config(values, "--workers auto")
        model = build_network(config, tuple(input_shape), num_classes)
        activations = 0
        for layer in model.layers:
            shape = getattr(layer.output, "shape", None)
            if shape is not None:
                activations += _math.prod(int(d) for d in shape[1:] if d is not None)
        footprint = Footprint(model.count_params(), activations, config.batch_size)
        if largest is None or footprint.bytes() > largest.bytes():
            largest = footprint
    if largest is None:
        raise ValueError("no configuration to measure")  # _largest gives one at least
    return largest


def auto_workers(spec: Any, echo: Callable[[str], None]) -> int:
    """``--workers auto`` for one study: :func:`choose_workers` on this machine's GPU."""
    memory = gpu_memory()
    if not memory:
        workers, reason = choose_workers(None, Footprint(0, 0, 0))
    else:
        dataset = spec.data.dataset
        shape = INPUT_SHAPES.get(dataset, (32, 32, 3))
        footprint = measure(_largest(spec), shape, CLASSES.get(dataset, 10))
        workers, reason = choose_workers(memory, footprint, os.cpu_count())
    echo(f"[{spec.name}] --workers auto: {reason}")
    return workers


if __name__ == "__main__":  # measure(): run with JAX_PLATFORMS=cpu, the request on stdin
    request = json.loads(sys.stdin.read())
    found = _measure_here(request["configs"], request["shape"], request["classes"])
    print(json.dumps(found.__dict__))

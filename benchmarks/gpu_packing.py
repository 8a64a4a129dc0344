"""GPU packing: aggregate training images per second of 1, 2, 4, 8 worker processes on one GPU.

For the reference's combined configuration (baseline2, studies/combined.yaml) and resnet9, side
by side in one run: each process builds the network as hpsearch does, trains on random
CIFAR-sized images, compiles first, then waits at a barrier so that the timed steps of all N
overlap; aggregate = all images trained / (last end - first start). Each worker gets the
environment `hpsearch search --workers N` gives it (its share of the GPU's memory). Writes
packing.json and packing.md to --output ($OUT if set) and appends the table to the results history.

    KERAS_BACKEND=jax python benchmarks/gpu_packing.py                     # on a GPU
    KERAS_BACKEND=jax python benchmarks/gpu_packing.py --workers 1 2 --steps 20 --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, record, table  # noqa: E402

MODELS = ("baseline2", "resnet9")


def model_config(name: str, batch: int, precision: str) -> dict:
    """baseline2: the reference's combined configuration as studies/combined.yaml fixes it;
    resnet9: the same factors on resnet9 (which takes no dropout by default here)."""
    import yaml

    fixed = yaml.safe_load((ROOT / "studies" / "combined.yaml").read_text())["fixed"]
    config = {**fixed, "batch_size": batch, "precision": precision}
    if name != "baseline2":
        config.update(architecture=name, dropout="none")
        config.pop("dropout_placement", None)
    return config


def child(args: argparse.Namespace) -> None:
    """One worker: compile, report ready, wait for the go file, time ``--steps`` steps."""
    import keras
    import numpy as np

    from hpsearch.config import make_config
    from hpsearch.model.builder import build_model

    config = make_config(model_config(args.child, args.batch, args.precision))
    rng = np.random.default_rng(args.index)
    images = args.batch * args.steps
    x = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    y = keras.utils.to_categorical(rng.integers(0, 10, images), 10)
    model = build_model(config, (32, 32, 3), 10, steps_per_epoch=args.steps)
    model.fit(x[: 2 * args.batch], y[: 2 * args.batch], batch_size=args.batch, verbose=0)
    Path(args.barrier, f"ready-{args.index}").touch()
    while not Path(args.barrier, "go").exists():
        time.sleep(0.01)
    start = time.time()
    model.fit(x, y, batch_size=args.batch, epochs=1, shuffle=False, verbose=0)
    end = time.time()
    print(json.dumps({"start": start, "end": end, "images": images,
                      "params": model.count_params()}))  # fmt: skip


def run_packed(name: str, workers: int, args: argparse.Namespace) -> dict:
    from hpsearch.search.gpu_share import worker_env

    barrier = tempfile.mkdtemp(prefix="packing-")
    env = {**os.environ, **worker_env(workers), "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", name, "--index", str(index),
             "--barrier", barrier, "--steps", str(args.steps), "--batch", str(args.batch),
             "--precision", args.precision],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for index in range(workers)
    ]
    deadline = time.time() + args.timeout
    while len(list(Path(barrier).glob("ready-*"))) < workers:
        if any(p.poll() not in (None, 0) for p in processes) or time.time() > deadline:
            break
        time.sleep(0.05)
    Path(barrier, "go").touch()
    results, errors = [], []
    for process in processes:
        try:
            out, err = process.communicate(timeout=max(1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        if process.returncode == 0 and out.strip():
            results.append(json.loads(out.strip().splitlines()[-1]))
        else:
            errors.append(f"exit {process.returncode}: {err.strip()[-400:]}")
    row = {"model": name, "workers": workers, "finished": len(results), "errors": errors}
    if results:
        span = max(r["end"] for r in results) - min(r["start"] for r in results)
        images = sum(r["images"] for r in results)
        row.update(params=results[0]["params"], seconds=round(span, 2),
                   images_per_second=round(images / span, 1),
                   per_worker=round(images / span / len(results), 1))  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per worker")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--precision", default=None,
                        help="default: mixed_bfloat16 on a GPU, float32 on a CPU")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=240, help="seconds per measurement")
    parser.add_argument("--output", default=os.environ.get("OUT") or "packing-out")
    parser.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from hpsearch.search.gpu_share import gpu_memory

    memory = gpu_memory()
    args.precision = args.precision or ("mixed_bfloat16" if memory else "float32")
    rows = []
    for workers in args.workers:
        for name in args.models:  # side by side: both models at each N
            row = run_packed(name, workers, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    single = {r["model"]: r.get("images_per_second") for r in rows if r["workers"] == 1}
    lines = []
    for r in rows:
        rate = r.get("images_per_second")
        base = single.get(r["model"])
        lines.append([r["model"], r["workers"], f"{r['finished']}/{r['workers']}",
                      f"{rate:,.0f}" if rate else "failed",
                      f"{r['per_worker']:,.0f}" if rate else "",
                      f"{rate / base:.2f}x" if rate and base else ""])  # fmt: skip
    body = table(["model", "workers", "finished", "images/s (all)", "images/s a worker",
                  "vs 1 worker"], lines)  # fmt: skip
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    settings = {"steps": args.steps, "batch": args.batch, "precision": args.precision,
                "gpu_memory_bytes": memory, "backend": os.environ.get("KERAS_BACKEND")}  # fmt: skip
    (output / "packing.json").write_text(json.dumps({"settings": settings, "rows": rows},
                                                    indent=2))  # fmt: skip
    (output / "packing.md").write_text(body + "\n")
    record(f"GPU packing: {args.steps} steps of batch {args.batch} a worker, {args.precision}",
           body, "aggregate = images of all workers / (last end - first start), timed steps "
           "started together after each worker compiled")  # fmt: skip


if __name__ == "__main__":
    main()

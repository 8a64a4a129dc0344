"""hpsearch on a machine with JAX and no TensorFlow (the GPU machine): the wheelhouse of
benchmarks/wheelhouse.sh is all it needs, and nothing on the JAX path loads TensorFlow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TENSORFLOW_ONLY = ("tensorflow", "keras_tuner", "tensorboard")

TINY_STUDY = """\
name: tiny
description: two small trials on scikit-learn's digits
objective: {metric: best_val_accuracy, direction: maximize}
sampler: {type: random, seed: 0}
pruner: {type: none}
n_trials: 2
data: {dataset: digits, limit: 200}
fixed: {architecture: baseline1, epochs: 1, batch_size: 64}
space:
  optimizer: {choices: [adam, rmsprop]}
"""

# Runs `hpsearch search` in this process (KERAS_BACKEND=jax), then prints which of
# TensorFlow's packages got loaded.
SEARCH_IN_PROCESS = textwrap.dedent(
    """
    import sys
    from hpsearch.cli import main
    try:
        main(["search", "tiny.yaml", "-q"])
    except SystemExit as stop:
        assert not stop.code, stop.code
    print("loaded:", sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:])))
    """
)


def _requirements(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.match(r"[A-Za-z0-9_.\-]+", line).group(0)
            found[re.sub(r"[-_.]+", "-", name).lower()] = line[len(name) :].split(";")[0].strip()
    return found


def test_jax_requirements_agree_with_pyproject():
    """Every package both lists name carries the same bounds; the JAX list names none of the
    TensorFlow-only ones."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    full = _requirements("\n".join(pyproject["project"]["dependencies"]))
    jax = _requirements((ROOT / "benchmarks" / "jax-requirements.txt").read_text())
    for name, bounds in jax.items():
        if name in full:
            assert bounds == full[name], f"{name}: {bounds} here, {full[name]} in pyproject"
    assert not {"tensorflow", "keras-tuner", "tensorboard", "mlflow"} & set(jax)
    assert {"mlflow-skinny", "sqlalchemy", "alembic"} <= set(jax)


@pytest.mark.slow
def test_jax_search_loads_no_tensorflow(tmp_path):
    """A search on KERAS_BACKEND=jax, where TensorFlow is installed, loads none of it."""
    (tmp_path / "tiny.yaml").write_text(TINY_STUDY.replace("n_trials: 2", "n_trials: 1"))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "HPSEARCH_SPOOL_DIR": str(tmp_path / "spool")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", SEARCH_IN_PROCESS, *TENSORFLOW_ONLY],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded: []" in done.stdout, done.stdout[-2000:]


@pytest.mark.slow
def test_jax_only_environment(tmp_path):
    """A fresh virtual environment with JAX, NumPy and the wheelhouse alone (no TensorFlow):
    search, best --export, combine, and the exported model loads."""
    started = time.perf_counter()
    venv, wheels, work = tmp_path / "venv", tmp_path / "wheels", tmp_path / "work"
    work.mkdir()
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    quiet = {"capture_output": True, "text": True}

    def check(command, **kwargs):
        done = subprocess.run(command, **quiet, **kwargs)
        assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        return done

    check([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    check([*pip, "install", "-q", "--no-compile", "jax", "numpy"], timeout=300)
    check(["bash", str(ROOT / "benchmarks" / "wheelhouse.sh"), str(wheels)],
          env={**os.environ, "TARGET_PYTHON": str(python)}, timeout=300)  # fmt: skip
    check([*pip, "install", "-q", "--no-index", "--no-deps", "--no-compile",
           *map(str, sorted(wheels.glob("*.whl")))], timeout=300)  # fmt: skip
    listed = check([*pip, "list", "--format=freeze"]).stdout.lower()
    assert "hpsearch==" in listed and "tensorflow" not in listed and "keras-tuner" not in listed
    prepared = time.perf_counter() - started

    (work / "tiny.yaml").write_text(TINY_STUDY)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               HPSEARCH_SPOOL_DIR=str(tmp_path / "spool"))  # fmt: skip
    run = {"cwd": work, "env": env, "timeout": 300}
    searched = check([str(python), "-c", SEARCH_IN_PROCESS, *TENSORFLOW_ONLY], **run)
    assert "loaded: []" in searched.stdout, searched.stdout[-2000:]
    hpsearch = str(venv / "bin" / "hpsearch")
    check([hpsearch, "best", "--study", "tiny", "--export", "best.keras"], **run)
    combined = check([hpsearch, "combine", "tiny.yaml", "--export", "final.keras"], **run)
    assert "test accuracy" in combined.stdout
    loads = textwrap.dedent(
        """
        import sys
        import keras, numpy as np
        for path in ("best.keras", "final.keras"):
            probabilities = keras.saving.load_model(path).predict(np.zeros((2, 8, 8, 1), "uint8"))
            assert probabilities.shape == (2, 10), probabilities.shape
        assert "tensorflow" not in sys.modules
        print("loaded fine")
        """
    )
    assert "loaded fine" in check([str(python), "-c", loads], **run).stdout
    print(f"environment ready in {prepared:.0f} s, all in {time.perf_counter() - started:.0f} s")

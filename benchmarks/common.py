"""Shared by the benchmark scripts: the machine, versions, and appending to RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# HPSEARCH_RESULTS names another file (a device machine writes where its results come back).
RESULTS = Path(os.environ.get("HPSEARCH_RESULTS") or Path(__file__).resolve().parent / "RESULTS.md")
DEFAULT_DATA = str((ROOT / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz").resolve())


def machine() -> str:
    versions = []
    for package in ("keras", "tensorflow", "jax", "mlflow", "optuna"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    return (
        f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs), Python "
        f"{platform.python_version()}, backend {backend}; " + ", ".join(versions)
    )


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def record(title: str, body: str, notes: str = "") -> None:
    """Print the result and append it to RESULTS.md with the machine and the date."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"\n## {title}\n\n{stamp}; {machine()}\n`{' '.join(sys.argv)}`\n\n{body}\n"
    if notes:
        text += f"\n{notes}\n"
    print(text)
    with RESULTS.open("a") as handle:
        handle.write(text)

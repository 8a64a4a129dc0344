"""Shared by the benchmark scripts: the machine, versions, and appending to the results history."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The history of every measurement, one JSON record a line (RESULTS.md holds the current tables,
# updated by hand). HPSEARCH_RESULTS names another file (a device machine writes where its
# results come back); a .md file gets the printed section instead of JSON records.
HISTORY = Path(__file__).resolve().parent / "results-history.jsonl"
RESULTS = Path(os.environ.get("HPSEARCH_RESULTS") or HISTORY)
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


def _commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


# Column names that say too little once out of their table (results-history.jsonl uses these).
_RENAMED = {
    ("study_overhead", "after_trial_20"): "peak_rss_after_last_trial",
    ("study_overhead", "growth"): "peak_rss_growth",
    ("tracking_overhead", "mean"): "mean_wall",
    ("tracking_overhead", "wall_times_a_b_interleaved"): "wall_times",
    ("tracking_overhead", "outside_fit"): "outside_fit_times",
    ("tracking_overhead", "epochs_per_run"): "epoch_times",
}


def _metric(benchmark: str, name: str) -> str:
    """'share outside fit' -> 'share_outside_fit': no units, no punctuation."""
    slug = re.sub(r"\(.*?\)", "", name).replace("`", "").replace("%", "pct")
    slug = re.sub(r"[^a-z0-9]+", "_", slug.lower()).strip("_")
    return _RENAMED.get((benchmark, slug), slug)


def _value(cell: str) -> tuple[object, str | None]:
    text = cell.replace("**", "").strip()
    parts = text.split(", ")
    if len(parts) > 1 and all(re.fullmatch(r"[+-]?\d+(?:\.\d+)?", p) for p in parts):
        return [float(p) for p in parts], None
    number = re.fullmatch(r"([+-]?[\d,]*\d(?:\.\d+)?)\s*(%|x|s|MiB)?", text)
    if not number:
        return text, None
    digits = number.group(1).replace(",", "")
    return (float(digits) if "." in digits else int(digits)), number.group(2)


def _unit(name: str) -> str | None:
    units = (("(s)", "s"), ("(MiB)", "MiB"), ("images/s", "images/s"), ("per second", "images/s"))
    return next((unit for key, unit in units if key in name), None)


def _measurements(benchmark: str, body: str) -> list[tuple[str | None, str, object, str | None]]:
    """(variant, metric, value, unit) for each cell of the body's tables: the first column
    names the row, except where it is a measure itself (a key-value table names the metric)."""
    found, header = [], None
    for line in body.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(line) <= set("|-"):
            if header[:2] == ["measure", "value"]:
                value, unit = _value(cells[1])
                found.append((None, _metric(benchmark, cells[0]), value, unit or _unit(cells[0])))
                continue
            labelled = not header[0].startswith(("trials", "peak RSS"))
            variant = cells[0] if labelled else None
            for name, cell in list(zip(header, cells, strict=False))[1 if labelled else 0 :]:
                value, unit = _value(cell)
                found.append((variant, _metric(benchmark, name), value, unit or _unit(name)))
    return found


def record(title: str, body: str, notes: str = "") -> None:
    """Print the result and append it to the history: one JSON record per table cell, with the
    date, the commit, the machine and the command, and one with the text under the tables."""
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(sys.argv)
    text = f"\n## {title}\n\n{stamp}; {machine()}\n`{command}`\n\n{body}\n"
    if notes:
        text += f"\n{notes}\n"
    print(text)
    if RESULTS.suffix == ".md":
        with RESULTS.open("a") as handle:
            handle.write(text)
        return
    base = {
        "benchmark": Path(sys.argv[0]).stem,
        "date": now.strftime("%Y-%m-%dT%H:%MZ"),
        "commit": _commit(),
        "recorded_in": None,
        "machine": machine(),
        "command": command,
        "setup": title,
    }
    prose = "\n".join(line for line in f"{body}\n{notes}".splitlines() if not line.startswith("|"))
    rows = [
        dict(base, variant=variant, metric=metric, value=value, unit=unit, target=None, note=None)
        for variant, metric, value, unit in _measurements(base["benchmark"], body)
    ]
    rows.append(
        dict(
            base,
            variant=None,
            metric="section_notes",
            value=None,
            unit=None,
            target=None,
            note=prose.strip() or None,
        )
    )
    with RESULTS.open("a") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

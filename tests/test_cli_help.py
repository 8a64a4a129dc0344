"""The command line tells what it reads: every environment variable in `hpsearch --help`."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from hpsearch.cli import main

PACKAGE = Path(__file__).resolve().parents[1] / "hpsearch"


def test_every_environment_variable_hpsearch_reads_is_in_the_help():
    source = "\n".join(path.read_text() for path in PACKAGE.rglob("*.py"))
    read = set(re.findall(r"\b(HPSEARCH_[A-Z0-9_]+)\b", source))
    assert {"HPSEARCH_STORAGE", "HPSEARCH_CACHE_DIR", "HPSEARCH_CIFAR10"} <= read
    shown = CliRunner().invoke(main, ["--help"]).output
    assert "Environment:" in shown
    missing = sorted(name for name in read if name not in shown)
    assert missing == [], f"read by hpsearch, not in `hpsearch --help`: {missing}"
    for name in ("MLFLOW_TRACKING_URI", "KERAS_BACKEND"):
        assert name in shown

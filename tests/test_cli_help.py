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


def test_validate_quiet_prints_only_the_errors(tmp_path):
    good = str(PACKAGE.parent / "studies" / "smoke.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nspace: {batch_norm: {choices: [middle]}}\n")
    runner = CliRunner()
    assert runner.invoke(main, ["validate", "-q", good]).output == ""
    done = runner.invoke(main, ["validate", "-q", good, str(bad)])
    assert done.exit_code == 2
    assert "smoke" not in done.output and "batch_norm" in done.output


def test_help_lists_the_dataset_names_without_loading_the_config_schema():
    import subprocess
    import sys

    from hpsearch.choices import DATASET_NAMES

    shown = CliRunner().invoke(main, ["train", "--help"]).output
    assert "|".join(DATASET_NAMES) in re.sub(r"\s+", "", shown)
    probe = (
        "import sys; from click.testing import CliRunner; from hpsearch.cli import main\n"
        "for args in (['--help'], ['train', '--help']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0, args\n"
        "print(sorted(m for m in ('pydantic', 'hpsearch.config') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # pydantic costs the help a large share of its time

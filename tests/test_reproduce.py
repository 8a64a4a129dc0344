"""``hpsearch reproduce``: the whole reference study at toy size, and bad input refused."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import command, environment

from hpsearch.choose.findings import FINDINGS
from hpsearch.choose.reference import REFERENCE_NUMBERS, STUDY_ORDER

ARCHIVE = Path(__file__).parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def hpsearch(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, cwd=cwd,
                          env=environment(), timeout=timeout)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "nope"], "--only: unknown reference study 'nope'"),
        (["--repeats", "0"], "--repeats: must lie in 1..100; got 0"),
        (["--epochs-scale", "2"], "--epochs-scale"),
    ],
)
def test_bad_input_exits_2_naming_the_key_and_writes_nothing(tmp_path, args, message):
    done = hpsearch("reproduce", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 107 small trials: 561 s on one 2-core machine, over 600 s on another
@pytest.mark.skipif(not ARCHIVE.is_file(), reason="../shared/data/cifar10-jpeg.tar.gz is absent")
def test_quick_reproduction_writes_every_number_and_finding(tmp_path):
    started = time.monotonic()
    done = hpsearch("reproduce", "--quick", "-q", "--data-dir", str(ARCHIVE), cwd=tmp_path,
                    timeout=1500)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    elapsed = time.monotonic() - started
    report = (tmp_path / "reports" / "reproduction.md").read_text()
    numbers = re.findall(r"^\| \w+\.quick \| .+ \| (\d+\.\d+)% \| (\d+\.\d+)% \| 1 \|", report,
                         re.MULTILINE)  # fmt: skip
    assert len(numbers) == 12, report  # all twelve, each measured once
    assert sorted(float(study) for study, _ in numbers) == sorted(
        n.test_accuracy for n in REFERENCE_NUMBERS
    )
    assert report.count("not meaningful (quick)") == 12
    assert "proves the report's shape, not the study" in report
    findings = report.split("## The study's findings")[1].split("## Studies run")[0]
    assert findings.count("\n| ") - 1 == len(FINDINGS)  # every finding has a row
    assert "not measured" not in findings  # every finding found its trials
    assert findings.count("(not meaningful)") == len(FINDINGS)
    figures = tmp_path / "reports" / "reproduction"
    assert (figures / "numbers.png").stat().st_size > 10_000
    for name in STUDY_ORDER:
        assert (figures / name / "validation_curves.png").is_file()
        assert (figures / name / "report.md").is_file()
        assert f"| {name}.quick |" in report
    # the report also lives on an MLflow run of its own
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reproduction")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "reproduction.md", "reproduction"
    }
    assert "test_accuracy_dropout_0.5_50" in run.data.metrics
    # a rerun resumes: nothing left to train, the report is written again
    again = hpsearch("reproduce", "--quick", "-q", "--data-dir", str(ARCHIVE), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trial 0 complete" not in again.stdout
    print(f"reproduce --quick took {elapsed:.0f} s")


def test_the_reference_study_files_are_found_from_any_working_directory(tmp_path, monkeypatch):
    from hpsearch.choose.reproduce import studies_folder

    monkeypatch.chdir(tmp_path)  # no ./studies here: the checkout's own
    assert (studies_folder() / "baselines.yaml").is_file()


def test_the_help_gives_the_quick_size_the_code_uses(tmp_path):
    from hpsearch.choose.reproduce import QUICK_LIMIT

    done = hpsearch("reproduce", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"({QUICK_LIMIT} images a split" in " ".join(done.stdout.split())

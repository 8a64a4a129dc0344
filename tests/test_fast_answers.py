"""Bad input is refused before Keras, TensorFlow or MLflow load: in at most a fifth of the time
`import tensorflow` takes on the same machine, measured side by side. TensorFlow's, absl's and
CUDA's start-up lines stay out of a command's output unless `hpsearch --verbose`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from conftest import command, environment, free_port

pytestmark = pytest.mark.slow  # times the real CLI against TensorFlow's import, in processes

STUDY = str(Path(__file__).resolve().parents[1] / "studies" / "smoke.yaml")
NATIVE_LINES = ("absl::InitializeLog", "oneDNN", "cuInit", "cudart_stub")


def timed(args: list[str], cwd: Path) -> tuple[float, object]:
    import subprocess

    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=environment())  # fmt: skip
    return time.perf_counter() - started, done


@pytest.fixture(scope="module")
def tensorflow_import_s(tmp_path_factory) -> float:
    seconds, done = timed([sys.executable, "-c", "import tensorflow"],
                          tmp_path_factory.mktemp("tf"))  # fmt: skip
    assert done.returncode == 0
    return seconds


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["search", STUDY, "--storage", "not a url"], "malformed storage URL"),
        (["search", STUDY, "--tracking-uri", "http://127.0.0.1:{port}"], "unreachable"),
        (["best", "--study", "nope"], "no study"),
        (["train", "--tracking-uri", "ftp://x/y"], "malformed tracking URI"),
    ],
)
def test_bad_input_is_refused_in_a_fifth_of_tensorflows_import(
    args, fragment, tensorflow_import_s, tmp_path
):
    args = [a.replace("{port}", str(free_port())) for a in args]
    seconds, done = min((timed(command(*args), tmp_path) for _ in range(2)), key=lambda t: t[0])
    print(f"{' '.join(args[:2])}: {seconds:.2f} s; import tensorflow {tensorflow_import_s:.2f} s")
    assert done.returncode == 2 and fragment in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert seconds <= tensorflow_import_s / 5, (seconds, tensorflow_import_s)


def test_native_start_up_lines_reach_the_user_only_with_verbose(tmp_path):
    args = ["train", "--no-tracking", "--limit", "100", "--set", "epochs=1", "-q"]
    _, quiet = timed(command(*args), tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    shown = [line for line in quiet.stderr.splitlines() if any(n in line for n in NATIVE_LINES)]
    assert shown == [], shown
    _, verbose = timed(command("--verbose", *args), tmp_path)
    assert verbose.returncode == 0, verbose.stderr[-2000:]

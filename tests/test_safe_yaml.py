"""Study files and trial configs are read within bounds: no alias bombs, no huge files, no
duplicate keys, and no huge value echoed whole in a message."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpsearch.config import load_config
from hpsearch.errors import ConfigError, short_repr
from hpsearch.search.study_file import load_study
from hpsearch.util.safe_yaml import MAX_ALIASES, MAX_BYTES, MAX_NODES, load_yaml_file

ROOT = Path(__file__).parents[1]

# Nine levels of nine aliases: 9**9 (387 million) strings once expanded. An unknown key makes
# the old loader's error message repr the whole expansion.
BILLION_LAUGHS = (
    'lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(
        f"lol{level}: &lol{level} [{', '.join([f'*lol{level - 1}'] * 9)}]\n"
        for level in range(1, 9)
    )
    + "name: laughs\nfixed: {epochs: 1}\nspace: {}\nlaughs: *lol8\n"
)

SMALL_STUDY = """\
name: small
n_trials: 2
fixed:
  epochs: 1
space:
  learning_rate: {low: 0.0001, high: 0.1, log: true}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``hpsearch`` in a child with its memory capped: a loader without bounds fails, not the
    machine."""

    def cap_memory() -> None:
        import resource

        limit = 2 * 1024**3
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "hpsearch.cli", *args], capture_output=True, text=True,
        timeout=120, cwd=cwd, preexec_fn=cap_memory,
    )  # fmt: skip


def test_a_billion_laughs_file_is_refused_quickly(tmp_path):
    path = write(tmp_path, "laughs.yaml", BILLION_LAUGHS)
    started = time.monotonic()
    with pytest.raises(ConfigError) as refused:
        load_yaml_file(path, "study file")
    assert time.monotonic() - started < 3
    message = str(refused.value)
    assert message == (
        f"{path}: more than {MAX_NODES} values once its aliases (*name) are expanded; "
        "write the values out instead of nesting aliases"
    )


def test_validate_refuses_a_billion_laughs_file_with_one_line_and_exit_2(tmp_path):
    path = write(tmp_path, "laughs.yaml", BILLION_LAUGHS)
    started = time.monotonic()
    done = run_cli("validate", str(path))
    assert time.monotonic() - started < 60
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"Error: {path}: more than {MAX_NODES} values"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_an_alias_that_contains_itself_is_refused(tmp_path):
    path = write(tmp_path, "loop.yaml", "name: loop\nfixed: &me {epochs: 1, again: *me}\n")
    with pytest.raises(ConfigError, match=r"loop.yaml: a YAML alias refers to a node that "
                                          r"contains it \(line 2\)"):  # fmt: skip
        load_study(path)


def test_too_many_aliases_are_refused(tmp_path):
    uses = ", ".join(["*one"] * (MAX_ALIASES + 1))
    path = write(tmp_path, "aliases.yaml", f"name: many\nx: &one 1\ny: [{uses}]\n")
    with pytest.raises(ConfigError, match=rf"more than {MAX_ALIASES} YAML aliases \(\*name\), "
                                          r"the last at line 3"):  # fmt: skip
        load_study(path)


def test_a_few_aliases_and_merge_keys_still_load(tmp_path):
    path = write(tmp_path, "anchors.yaml", textwrap.dedent("""\
        name: anchors
        n_trials: 2
        fixed: &base
          epochs: 1
          batch_size: 64
        space:
          learning_rate: {low: 0.0001, high: 0.1, log: true}
        data:
          <<: {limit: 100}
          limit: 200
        """))  # fmt: skip
    study = load_study(path)
    assert study.fixed == {"epochs": 1, "batch_size": 64}
    assert study.data.limit == 200  # a key beside a merge overrides it: not a duplicate
    config = write(tmp_path, "config.yaml", "a: &lr 0.01\nlearning_rate: *lr\n")
    assert load_yaml_file(config) == {"a": 0.01, "learning_rate": 0.01}


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        (SMALL_STUDY + "fixed:\n  epochs: 2\n", "fixed", 7, 3),
        ("name: x\nfixed:\n  epochs: 1\n  batch_size: 32\n  epochs: 2\n", "epochs", 5, 3),
        ("name: x\nfixed: {epochs: 1, epochs: 2}\n", "epochs", 2, 2),
        ("name: x\nspace:\n  dropout:\n    choices: [0.1]\n    choices: [0.2]\n", "choices", 5, 4),
    ],
    ids=["top level", "nested", "flow mapping", "deep"],
)
def test_a_duplicate_key_is_refused_naming_the_key_and_its_line(tmp_path, text, key, line, first):
    path = write(tmp_path, "dup.yaml", text)
    with pytest.raises(ConfigError) as refused:
        load_study(path)
    assert str(refused.value) == (
        f"{path}: duplicate key '{key}' at line {line} (first at line {first})"
    )


def test_a_duplicate_key_in_a_trial_config_is_refused(tmp_path):
    path = write(tmp_path, "config.yaml", "epochs: 1\nbatch_size: 32\nepochs: 5\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'epochs' at line 3 \(first at line 1\)"):
        load_config(path)


def test_validate_names_a_duplicate_key_in_one_line(tmp_path):
    path = write(tmp_path, "dup.yaml", SMALL_STUDY + "fixed:\n  epochs: 2\n")
    done = run_cli("validate", str(path))
    assert done.returncode == 2
    assert done.stderr == f"Error: {path}: duplicate key 'fixed' at line 7 (first at line 3)\n"


HUGE = "a" * 100_000


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (f"name: big\nn_trials: {HUGE}\nfixed: {{epochs: 1}}\nspace: {{}}\n", "n_trials: "),
        (f"name: big\nn_trials: 2\nfixed: {{epochs: {HUGE}}}\nspace: {{}}\n", "epochs: got "),
        (f"name: big\nn_trials: 2\nfixed: {{epochs: 1}}\n"
         f"space: {{optimizer: {{choices: [{HUGE}]}}}}\n", "optimizer: got "),
        (f"name: big\nn_trials: 2\nfixed:\n  epochs: 1\n  ? {HUGE}\n  : 1\nspace: {{}}\n",
         "unknown key "),  # a key over 1024 characters is written ? key : value in YAML
        (f"name: big\nn_trials: 2\n? {HUGE}\n: 1\nfixed: {{epochs: 1}}\nspace: {{}}\n", "'aaaa"),
    ],
    ids=["study setting", "fixed", "space choice", "unknown fixed key", "unknown study key"],
)  # fmt: skip
def test_a_huge_value_is_echoed_cut_short(tmp_path, body, fragment):
    path = write(tmp_path, "big.yaml", body)
    with pytest.raises(ConfigError) as refused:
        load_study(path)
    message = str(refused.value)
    assert fragment in message
    assert "(100000 characters)" in message
    assert HUGE[:200] not in message
    assert len(message) < 1_000, message  # the known keys of the trial config take 500


def test_a_huge_value_in_a_trial_config_is_echoed_cut_short(tmp_path):
    path = write(tmp_path, "config.yaml", f"batch_size: {HUGE}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert f"batch_size: got '{'a' * 79}…' (100000 characters): " in message
    assert len(message) < 600


def test_short_repr_keeps_short_values_and_cuts_long_ones():
    assert short_repr("abc") == "'abc'"
    assert short_repr(0.25) == "0.25"
    assert short_repr([1, 2]) == "[1, 2]"
    assert short_repr(HUGE) == f"'{'a' * 79}…' (100000 characters)"
    assert short_repr(list(range(5000))).endswith("… (5000 items)")
    assert len(short_repr({"k": HUGE})) < 120


@pytest.mark.parametrize("loader", ["study", "config"])
def test_an_oversized_file_is_refused(tmp_path, loader):
    # valid YAML, a comment line past the bound: nothing but its size is wrong
    path = write(tmp_path, "huge.yaml", SMALL_STUDY + "# " + "x" * MAX_BYTES + "\n")
    what = "study file" if loader == "study" else "config file"
    expected = f"{path}: {what} larger than 1 MiB ({MAX_BYTES} bytes); is this the right file?"
    with pytest.raises(ConfigError) as refused:
        load_study(path) if loader == "study" else load_config(path)
    assert str(refused.value) == expected


def test_a_missing_or_unreadable_file_is_still_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\n")
    with pytest.raises(ConfigError, match=r"bin.yaml: not UTF-8 text \(byte 6\)"):
        load_study(binary)
    bad = write(tmp_path, "bad.yaml", "name: [\n")
    with pytest.raises(ConfigError) as refused:
        load_study(bad)
    assert str(refused.value).startswith(f"{bad}: not valid YAML: ")
    assert "\n" not in str(refused.value)


def test_every_study_file_still_validates():
    studies = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "studies").glob("*.yaml"))
    assert studies
    done = run_cli("validate", *studies)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(": ok (") == len(studies)

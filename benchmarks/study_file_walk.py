"""Follow the study-file object through hpsearch during one real `hpsearch search` run.

Nothing in hpsearch is patched. ``sys.setprofile`` (and ``threading.setprofile``) is on from
the start; the object followed ("spec") is the ``StudyFile`` (matched by type name, so both
``hpsearch.search.study_file`` and the older ``hpsearch.study`` work) returned by the first
hpsearch function named ``load_study``. Only frames whose code file lies under the imported
``hpsearch`` package directory are looked at; every other event returns at once.

The walk is a sequence of entries, each an hpsearch frame that holds spec:

* the loader's frame itself, when it returns spec (the object's birth place);
* a frame whose return value is spec (it hands the object back to its caller);
* on a 'call' event, a frame whose arguments or free variables (``frame.f_locals``) include
  spec by identity; and, before it, each hpsearch ancestor frame (``f_back`` chain) that now
  holds spec in a local and is not yet in the walk (``_run``'s ``spec = _load(...)``).

A frame enters the walk once. Three views of one run are printed: A, spec itself by identity
(the headline counts); B, also frames where a local holds spec (spec is an attribute,
``vars(obj)``, or an item of a local tuple/list/dict of at most 64 items: ``self`` of
``_Objective``); C, also frames where a local is one of spec's non-scalar fields by identity
(``spec.data``, ``spec.space``, ``spec.fixed``, ``spec.objective``...).

Counts, over the module sequence of the walk with runs of the same module collapsed:

* modules entered: the distinct ``hpsearch.*`` modules in it, in first-entry order;
* climbs back up: the transitions X -> Y into a module Y that appeared earlier in the
  sequence (and was left), except a plain return to the caller: Y's entry frame was called
  from a frame of module Y that was already on the stack under the previous entry (X's work
  was done, control came back down to Y, and Y goes on with its own functions; for an
  entry seen on return or as an ancestor: its own frame was on that stack). Every other
  re-entry counts: Y entered afresh from another module, or from a Y frame that was not on
  the stack before. "re-entries" (every transition into an earlier module, returns included)
  is printed too.

    python3 benchmarks/study_file_walk.py            # the hpsearch on sys.path / PYTHONPATH
    PYTHONPATH=/tmp/walk-before python3 benchmarks/study_file_walk.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # benchmarks/ itself: import hpsearch from PYTHONPATH / the environment

import hpsearch  # noqa: E402

PKG_DIR = os.path.dirname(os.path.abspath(hpsearch.__file__)) + os.sep

STUDY = """\
name: walk
objective: {{metric: best_val_accuracy, direction: maximize}}
sampler: {{type: tpe, seed: 0, n_startup_trials: 1}}
pruner: {{type: median, n_startup_trials: 1, n_warmup_steps: 0}}
n_trials: {trials}
data: {{dataset: digits, limit: 120}}
fixed: {{architecture: baseline1, epochs: {epochs}, batch_size: 32}}
space:
  batch_norm: {{choices: [none, before]}}
  learning_rate: {{low: 1.0e-4, high: 3.0e-2, log: true}}
"""


SPEC, HOLDER, PART = 4, 2, 1
VIEWS = [
    ("A. the StudyFile itself, by identity (the counts asked for)", SPEC),
    ("B. the StudyFile or a local that holds it", SPEC | HOLDER),
    ("C. the StudyFile or one of its fields (spec.data, spec.space, ...)", SPEC | PART),
]


def _scalar(value) -> bool:
    return value is None or isinstance(value, (str, bytes, int, float, bool))


DEFINITION = (
    "(climb back up: a step, after collapsing runs of one module, into a module seen earlier,\n"
    " unless the new frame was called from a frame of that module already on the stack under\n"
    " the previous step -- a plain return to the caller)"
)


class Entry:
    __slots__ = ("module", "function", "kind", "frame_id", "caller_id", "caller_module", "stack",
                 "how")  # fmt: skip

    def __init__(self, frame, kind: str, how: int) -> None:
        self.module = frame.f_globals.get("__name__", "?")
        self.function = frame.f_code.co_name
        self.kind = kind  # "born", "call", "holds", "return"
        self.how = how  # SPEC | HOLDER | PART
        self.frame_id = id(frame)
        caller = frame.f_back
        self.caller_id = id(caller) if caller is not None else None
        self.caller_module = caller.f_globals.get("__name__") if caller is not None else None
        self.stack = set()  # ids of this frame and the frames under it
        while frame is not None:
            self.stack.add(id(frame))
            frame = frame.f_back


class Walk:
    """The profile function and what it has seen."""

    def __init__(self) -> None:
        self.spec = None
        self.parts: set[int] = set()  # ids of spec's non-scalar fields
        self.entries: list[Entry] = []
        self.active: set[int] = set()  # ids of frames in the walk, still running
        self.lock = threading.Lock()

    # -- what holds spec ------------------------------------------------------------------
    def _holds(self, frame) -> int:
        """SPEC | HOLDER | PART bits for what ``frame``'s locals hold; 0: nothing of spec."""
        spec, parts = self.spec, self.parts
        try:
            values = list(frame.f_locals.values())
        except Exception:  # a frame in a strange state: not ours to judge
            return 0
        how = 0
        for value in values:
            if value is spec:
                return SPEC
            if id(value) in parts:
                how |= PART
            elif isinstance(value, (tuple, list)) and len(value) <= 64:
                if any(item is spec for item in value):
                    how |= HOLDER
            elif isinstance(value, dict) and len(value) <= 64:
                if any(item is spec for item in value.values()):
                    how |= HOLDER
            else:
                attrs = getattr(value, "__dict__", None)
                if isinstance(attrs, dict) and len(attrs) <= 256:
                    if any(item is spec for item in attrs.values()):
                        how |= HOLDER
        return how

    def _add(self, frame, kind: str, how: int) -> None:
        self.entries.append(Entry(frame, kind, how))
        self.active.add(id(frame))

    # -- the profile function -------------------------------------------------------------
    def __call__(self, frame, event, arg):
        if event != "call" and event != "return":
            return
        if not frame.f_code.co_filename.startswith(PKG_DIR):
            return
        with self.lock:
            if event == "return":
                self.active.discard(id(frame))
                if self.spec is None:
                    if frame.f_code.co_name == "load_study" and type(arg).__name__ == "StudyFile":
                        self.spec = arg
                        self.parts = {id(v) for v in vars(arg).values() if not _scalar(v)}
                        self.entries.append(Entry(frame, "born", SPEC))
                elif arg is self.spec:
                    self.entries.append(Entry(frame, "return", SPEC))
                return
            if self.spec is None:
                return
            held = self._holds(frame)
            if not held:
                return
            # ancestors that came to hold spec after their call (outermost first)
            missing = []
            parent = frame.f_back
            while parent is not None:
                if parent.f_code.co_filename.startswith(PKG_DIR):
                    if id(parent) in self.active:
                        break
                    parent_held = self._holds(parent)
                    if parent_held:
                        missing.append((parent, parent_held))
                parent = parent.f_back
            for parent, parent_held in reversed(missing):
                self._add(parent, "holds", parent_held)
            self._add(frame, "call", held)


def analyse(entries: list[Entry]) -> dict:
    """Collapse runs of one module; count modules, climbs back up and re-entries."""
    steps: list[tuple[Entry, str]] = []  # (first entry of the run, mark)
    seen: list[str] = []
    climbs = returns = 0
    previous: Entry | None = None
    for entry in entries:
        if previous is not None and entry.module == previous.module:
            previous = entry
            continue
        if entry.module not in seen:
            seen.append(entry.module)
            mark = "new"
        elif previous is not None and _returned(previous, entry):
            mark = "return"
            returns += 1
        else:
            mark = "climb"
            climbs += 1
        steps.append((entry, mark))
        previous = entry
    return {"modules": seen, "steps": steps, "climbs": climbs, "returns": returns}


def _returned(previous: Entry, entry: Entry) -> bool:
    """Did control come back to ``entry``'s module from ``previous`` (a plain return)?

    Yes when ``entry``'s frame was called from a frame of its own module that was on the
    stack under ``previous``, or (an entry seen on return or as an ancestor) when ``entry``'s
    own frame was on the stack under ``previous``.
    """
    if entry.kind in ("return", "holds"):
        return entry.frame_id in previous.stack
    return entry.caller_module == entry.module and entry.caller_id in previous.stack


def short(module: str) -> str:
    return module.removeprefix("hpsearch.")


def report(title: str, entries: list[Entry]) -> None:
    result = analyse(entries)
    steps = result["steps"]
    print(f"\n== {title}: {len(entries)} frames, {len(steps)} steps after collapsing ==")
    print(f"modules entered: {len(result['modules'])}")
    for i, module in enumerate(result["modules"], 1):
        print(f"  {i:2d}. {module}")
    reentries = result["climbs"] + result["returns"]
    print(
        f"climbs back up: {result['climbs']}   (re-entries into an earlier module: {reentries},"
        f" of which plain returns to the caller: {result['returns']})"
    )
    print(DEFINITION)
    print("sequence (^ climb back up, < return to the caller, + first entry):")
    marks = {"new": "+", "climb": "^", "return": "<"}
    for i, (entry, mark) in enumerate(steps):
        via = {SPEC: "", HOLDER: " via a holder", PART: " of a field"}
        how = entry.kind + via[entry.how & SPEC or entry.how & HOLDER or entry.how]
        print(f"  {i:3d} {marks[mark]} {short(entry.module):32s} {entry.function} ({how})")
    print("compact: " + " > ".join(f"{marks[m]}{short(e.module)}" for e, m in steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory.")
    args = parser.parse_args()

    print(f"hpsearch: {hpsearch.__file__}")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", PKG_DIR, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        print(f"commit: {commit or '?'}")

    workdir = Path(tempfile.mkdtemp(prefix="study-file-walk-"))
    study = workdir / "walk.yaml"
    study.write_text(textwrap.dedent(STUDY.format(trials=args.trials, epochs=args.epochs)))
    argv = ["search", str(study), "--storage", f"sqlite:///{workdir / 'optuna.db'}",
            "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}"]  # fmt: skip
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    print("run: hpsearch " + " ".join(argv))

    from hpsearch.cli import main as cli_main

    walk = Walk()
    cwd = os.getcwd()
    os.chdir(workdir)  # MLflow's artifacts (./mlruns) land there
    threading.setprofile(walk)
    sys.setprofile(walk)
    try:
        cli_main(argv, standalone_mode=False)
    except SystemExit as stop:
        print(f"hpsearch exited with {stop.code}")
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        os.chdir(cwd)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if walk.spec is None:
        sys.exit("no StudyFile came back from a load_study: nothing to follow")

    for title, bits in VIEWS:
        report(title, [entry for entry in walk.entries if entry.how & bits])


if __name__ == "__main__":
    main()

"""``hpsearch reproduce``: every reference study in the study's order, then one report.

Each study file of :data:`~hpsearch.choose.reference.STUDY_ORDER` runs (or resumes) as its
own Optuna study, scaled down on request (fewer images, fewer epochs) under a
name that says so (``dropout.quick``), so that a reduced run never resumes or
mixes with a full one. The report sets every number the study reported beside
ours (mean ± sd over repeats, test accuracy of the kept weights), and each of its
qualitative findings beside a verdict computed from our runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from hpsearch.choose.reference import REFERENCE_NUMBERS, STUDY_ORDER, ReferenceNumber
from hpsearch.choose.repeats import mean_sd
from hpsearch.errors import ConfigError, HpsearchError
from hpsearch.records import StudyRecord, TrialRecord
from hpsearch.search.study_file import StudyFile, load_study, parse_study

QUICK_LIMIT = 100  # images per split in --quick (10 a class in CIFAR-10: the shape, not the study)
QUICK_EPOCHS_SCALE = 0.05  # 20 epochs -> 1, 50 -> 2 (so 0.5 at "20" and at "50" stay apart)


@dataclass(frozen=True)
class Scale:
    """How far a reproduction is scaled down from the study (1.0 and None: not at all)."""

    limit: int | None = None  # images per split
    epochs_scale: float = 1.0  # multiplies every epoch cap (at least 1 epoch)
    repeats: int | None = None  # trainings per configuration (None: each file's)
    quick: bool = False

    @classmethod
    def make(cls, quick: bool, limit: int | None, epochs_scale: float | None,
             repeats: int | None) -> Scale:  # fmt: skip
        if epochs_scale is not None and not 0 < epochs_scale <= 1:
            raise ConfigError(f"--epochs-scale: must lie in (0, 1]; got {epochs_scale:g}")
        if repeats is not None and not 1 <= repeats <= 100:
            raise ConfigError(f"--repeats: must lie in 1..100; got {repeats}")
        if limit is not None and limit < 10:
            raise ConfigError(f"--limit: at least 10 (an image a class), or 0: all; got {limit}")
        if quick:
            return cls(limit or QUICK_LIMIT, epochs_scale or QUICK_EPOCHS_SCALE, repeats or 1, True)
        return cls(limit, epochs_scale or 1.0, repeats, False)

    @property
    def full(self) -> bool:
        return self.limit is None and self.epochs_scale == 1.0

    def tag(self) -> str:
        """The suffix of the study names (empty for the full study, one repeat or the files')."""
        if self.quick:
            parts = ["quick"]
        else:
            parts = [f"n{self.limit}"] if self.limit else []
            parts += [f"e{self.epochs_scale:g}"] if self.epochs_scale != 1.0 else []
        parts += [f"r{self.repeats}"] if self.repeats and self.repeats > 1 else []
        return "-".join(parts)

    def epochs(self, epochs: int) -> int:
        return max(1, round(epochs * self.epochs_scale))

    def describe(self) -> str:
        if self.full:
            return "full size: every image, every epoch cap as in the study files"
        if self.quick:
            return (f"quick: at most {self.limit} images per split, epoch caps x"
                    f"{self.epochs_scale:g} (20 -> {self.epochs(20)}, 50 -> {self.epochs(50)}), "
                    "trained eagerly (no graph tracing)")  # fmt: skip
        limit = f"at most {self.limit} images per split" if self.limit else "every image"
        return f"{limit}, epoch caps x{self.epochs_scale:g} (20 -> {self.epochs(20)}, " \
               f"50 -> {self.epochs(50)})"  # fmt: skip


def studies_folder() -> Path:
    """``./studies`` when it holds the reference files, else the checkout's own."""
    here = Path("studies")
    if (here / "baselines.yaml").is_file():
        return here
    return Path(__file__).resolve().parents[2] / "studies"  # this file: hpsearch/choose/


def scaled_study(path: Path, scale: Scale, data_dir: str | None) -> StudyFile:
    """The study file at ``path`` as this reproduction runs it."""
    spec = load_study(path)
    raw: dict[str, Any] = spec.model_dump(mode="json", exclude_unset=True)
    for key in ("fixed", "data"):
        raw.setdefault(key, {})
    raw.setdefault("points", [])
    tag = scale.tag()
    raw["name"] = f"{spec.name}.{tag}" if tag else spec.name
    if "epochs" in raw["fixed"]:
        raw["fixed"]["epochs"] = scale.epochs(raw["fixed"]["epochs"])
    elif not any("epochs" in p for p in raw["points"]):
        raw["fixed"]["epochs"] = scale.epochs(20)  # the config's default cap
    raw["points"] = [
        {**p, "epochs": scale.epochs(p["epochs"])} if "epochs" in p else p for p in raw["points"]
    ]
    if scale.quick:  # a few steps a trial: tracing the train step would cost more than them
        raw["fixed"]["run_eagerly"] = True
    if scale.repeats:
        raw["repeats"] = scale.repeats
    data = raw["data"]
    if scale.limit:
        data["limit"] = scale.limit
    if data_dir:
        data["data_dir"] = data_dir
    return parse_study(raw, f"{path} (as reproduced)")


def plan(names: tuple[str, ...], scale: Scale, data_dir: str | None,
         folder: Path | None = None) -> list[tuple[Path, StudyFile]]:  # fmt: skip
    """The scaled study of every name, checked before anything runs."""
    folder = folder or studies_folder()
    unknown = [n for n in names if n not in STUDY_ORDER]
    if unknown:
        raise ConfigError(
            f"--only: unknown reference study {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(STUDY_ORDER)}"
        )
    chosen = [n for n in STUDY_ORDER if not names or n in names]
    return [(folder / f"{n}.yaml", scaled_study(folder / f"{n}.yaml", scale, data_dir))
            for n in chosen]  # fmt: skip


# --- the report -----------------------------------------------------------------------------


@dataclass
class NumberRow:
    number: ReferenceNumber
    values: list[float]  # our test accuracies (fractions), one per completed repeat
    trials: list[int]
    epochs: list[int]

    @property
    def mean(self) -> float | None:
        return mean_sd(self.values)[0] if self.values else None

    @property
    def sd(self) -> float:
        return mean_sd(self.values)[1] if self.values else math.nan

    @property
    def difference(self) -> float | None:
        mean = self.mean
        return None if mean is None else 100 * mean - self.number.test_accuracy

    def verdict(self, meaningful: bool) -> str:
        difference = self.difference  # None when not measured
        if difference is None:
            return "not measured"
        if not meaningful:
            return "not meaningful (quick)"
        if abs(difference) <= self.number.tolerance:
            return "reproduced"
        return "higher" if difference > 0 else "lower"


def number_rows(trials: dict[str, list], scale: Scale) -> list[NumberRow]:
    """Our trials behind each reference number (completed ones with a test accuracy)."""
    rows = []
    for number in REFERENCE_NUMBERS:
        row = NumberRow(number, [], [], [])
        for trial in trials.get(number.study, []):
            record = TrialRecord.of(trial)
            config, test = record.config or {}, record.test_accuracy
            if test is None or not number.matches(config, scale.epochs):
                continue
            row.values.append(float(test))
            row.trials.append(trial.number)
            row.epochs.append(int(record.epochs_run or 0))
        rows.append(row)
    return rows


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def markdown(rows: list[NumberRow], findings: list, scale: Scale, names: dict[str, str],
             wall_s: float, counts: dict[str, dict[str, int]]) -> str:  # fmt: skip
    meaningful = not scale.quick
    lines = [
        "# Reproduction of the reference study",
        "",
        f"Scale: {scale.describe()}; repeats: {scale.repeats or 'as in each study file'}."
        + (f" Wall time {wall_s / 60:.1f} min." if wall_s else " (Written from the storage.)"),
    ]
    if scale.quick:
        lines += ["", "**`--quick` proves the report's shape, not the study: a few hundred images "
                  "and one or two epochs cannot reproduce anything, so no verdict below means "
                  "anything at this scale.**"]  # fmt: skip
    elif not scale.full:
        lines += ["", "**A reduced run: fewer images or epochs than the study used, so numbers "
                  "sit below the study's; the verdicts say how far, not whether the study "
                  "holds.**"]  # fmt: skip
    lines += [
        "",
        "## The study's numbers (CIFAR-10 test accuracy of the weights early stopping kept)",
        "",
        "| study | setting | study's test accuracy | ours (mean ± sd) | n | difference "
        "| verdict (tolerance) | epochs run | trials |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        n = row.number
        ours = _percent(row.mean) + (f" ± {100 * row.sd:.2f}" if len(row.values) > 1 else "")
        diff = "" if row.difference is None else f"{row.difference:+.2f}"
        lines.append(
            f"| {names.get(n.study, n.study)} | {n.label} | {n.test_accuracy:.2f}% | {ours} "
            f"| {len(row.values)} | {diff} | {row.verdict(meaningful)} (±{n.tolerance:g}) "
            f"| {', '.join(map(str, row.epochs))} | {', '.join(map(str, row.trials))} |"
        )
    lines += ["", "## The study's findings", "", "| finding | study | verdict | from our runs |",
              "|---|---|---|---|"]  # fmt: skip
    for finding, verdict, evidence in findings:
        shown = verdict
        if not meaningful and verdict != "not measured":
            shown = f"{verdict} (not meaningful)"
        studies = ", ".join(names.get(s, s) for s in finding.studies)
        lines.append(f"| {finding.claim} | {studies} | {shown} | {evidence} |")
    lines += ["", "## Studies run", "", "| study | complete | pruned | failed |",
              "|---|---|---|---|"]  # fmt: skip
    for name, count in counts.items():
        lines.append(f"| {name} | {count.get('complete', 0)} | {count.get('pruned', 0)} "
                     f"| {count.get('failed', 0)} |")  # fmt: skip
    lines += [
        "",
        "Figures: `reproduction/numbers.png` (the study's numbers and ours); per study, "
        "`reproduction/<study>/validation_curves.png` and `accuracy_by_setting.png` (the "
        "study's figures redrawn from our runs) beside that study's own `report.md`.",
    ]
    return "\n".join(lines) + "\n"


def numbers_figure(rows: list[NumberRow], title: str):
    """The study's test accuracies, its tolerance band and ours (mean ± sd) per number."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(10, max(3.5, 0.4 * len(rows) + 1.6)), dpi=100, layout="constrained")
    ax = fig.subplots()
    ys = range(len(rows))
    ax.scatter([r.number.test_accuracy for r in rows], ys, marker="|", s=300, color="tab:red",
               label="the study's number", zorder=3)  # fmt: skip
    measured = [(i, r) for i, r in enumerate(rows) if r.mean is not None]
    if measured:
        ax.errorbar([100 * cast(float, r.mean) for _, r in measured], [i for i, _ in measured],
                    xerr=[100 * r.sd if len(r.values) > 1 else 0 for _, r in measured],
                    fmt="o", color="tab:blue", capsize=3, label="ours (mean ± sd)")  # fmt: skip
    for i, r in enumerate(rows):
        ax.fill_betweenx([i - 0.3, i + 0.3], r.number.test_accuracy - r.number.tolerance,
                         r.number.test_accuracy + r.number.tolerance, color="tab:red",
                         alpha=0.12, linewidth=0)  # fmt: skip
        if r.mean is None:
            ax.annotate("not measured", (r.number.test_accuracy + r.number.tolerance, i),
                        xytext=(6, 0), textcoords="offset points", va="center",
                        fontsize="small", color="0.4")  # fmt: skip
    ax.set_yticks(list(ys), [f"{r.number.study}: {r.number.label}" for r in rows],
                  fontsize="small")  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlabel("CIFAR-10 test accuracy (%)")
    fig.suptitle(title)
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(color="tab:red", alpha=0.12, linewidth=0))
    labels.append("tolerance (reproduced)")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return fig


def save_numbers_figure(rows: list[NumberRow], path: Path, title: str) -> Path:
    """:func:`numbers_figure`, saved to ``path``."""
    numbers_figure(rows, title).savefig(path)
    return path


@dataclass
class Reproduction:
    report: Path
    rows: list[NumberRow]
    findings: list
    run_id: str | None


def run(
    names: tuple[str, ...],
    scale: Scale,
    storage: str,
    data_dir: str | None,
    output: Path,
    workers: int | str = 1,
    echo: Callable[[str], None] = print,
    verbose: int = 2,
    search: Callable[..., Any] | None = None,
) -> Reproduction:
    """Run every chosen reference study in order, then write and log the report."""
    planned = plan(names, scale, data_dir)
    output.mkdir(parents=True, exist_ok=True)
    run_as = output / "reproduction" / "studies"
    run_as.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for index, (path, spec) in enumerate(planned, start=1):
        echo(f"== reproduce {index}/{len(planned)}: {spec.name} ({path}) ==")
        written = run_as / f"{spec.name}.yaml"  # the study file as run, for workers and readers
        dumped = spec.model_dump(mode="json", exclude_unset=True)
        written.write_text(yaml.safe_dump(dumped, sort_keys=False))
        _search(spec, written, storage, workers, echo, verbose)
        _mark_scale(spec.name, storage, scale)
    return write(planned, scale, storage, output, time.perf_counter() - started, echo)


def _search(spec: StudyFile, path: Path, storage: str, workers: int | str, echo,
            verbose) -> None:  # fmt: skip
    if workers == "auto":  # per study: their networks differ
        from hpsearch.search.gpu_share import auto_workers

        workers = auto_workers(spec, echo)
    count = int(workers)  # a number by now
    if count > 1:
        from hpsearch.search.workers import launch_workers

        quiet = ["--quiet"] if verbose == 0 else []
        code = launch_workers(spec, storage, count, None, [str(path), *quiet], echo)
        if code == 130:
            raise KeyboardInterrupt
        if code:
            raise HpsearchError(f"{spec.name}: a worker exited with status {code}")
        return
    from hpsearch.search.lifecycle import describe, run_search

    outcome = run_search(spec, storage, echo=echo, verbose=verbose)
    echo(describe(outcome))
    if outcome.interrupted:
        raise KeyboardInterrupt


def _mark_scale(name: str, storage: str, scale: Scale) -> None:
    """Let ``hpsearch report`` match a scaled study's trials to the study's settings."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    StudyRecord(epochs_scale=scale.epochs_scale).write(study)


def write(planned: list[tuple[Path, StudyFile]], scale: Scale, storage: str, output: Path,
          wall_s: float, echo: Callable[[str], None] = print) -> Reproduction:  # fmt: skip
    """The report from what the storage holds: reproduction.md, figures, an MLflow run."""
    import optuna
    from optuna.trial import TrialState

    from hpsearch.choose.findings import Results, verdicts
    from hpsearch.choose.reference import base_study_name
    from hpsearch.choose.report import write_report

    figures = output / "reproduction"
    figures.mkdir(parents=True, exist_ok=True)
    trials, names, counts = {}, {}, {}
    existing = set(optuna.get_all_study_names(storage))
    for _, spec in planned:
        base = base_study_name(spec.name)
        names[base] = spec.name
        if spec.name not in existing:
            continue
        study = optuna.load_study(study_name=spec.name, storage=storage)
        every = study.get_trials(deepcopy=False)
        trials[base] = [t for t in every if t.state == TrialState.COMPLETE]
        counts[spec.name] = {s: sum(t.state.name.lower() == s for t in every)
                             for s in ("complete", "pruned", "failed")}  # fmt: skip
        write_report(study, figures / base)
    rows = number_rows(trials, scale)
    found = verdicts(Results(trials, scale.epochs))
    report = output / "reproduction.md"
    report.write_text(markdown(rows, found, scale, names, wall_s, counts))
    title = "The reference study's test accuracies and ours"
    save_numbers_figure(rows, figures / "numbers.png",
                        title + ("" if scale.full else f" ({scale.tag() or 'reduced'})"))
    run_id = _log(report, figures, rows, scale)
    echo(f"report: {report} (figures in {figures}); MLflow run {run_id}")
    return Reproduction(report, rows, found, run_id)


def _log(report: Path, figures: Path, rows: list[NumberRow], scale: Scale) -> str:
    """The report and its figures on an MLflow run of its own (experiment ``reproduction``)."""
    from hpsearch.tracking import TrialRun

    name = "reproduction" + (f"-{scale.tag()}" if scale.tag() else "")
    with TrialRun("reproduction", name, {"hpsearch.command": "reproduce"}) as run:
        run.log_params({"scale": scale.describe(), "limit": str(scale.limit),
                        "epochs_scale": str(scale.epochs_scale),
                        "repeats": str(scale.repeats or "files")})  # fmt: skip
        run.log_metrics({f"test_accuracy_{r.number.key}": r.mean for r in rows
                         if r.mean is not None})  # fmt: skip
        run.client.log_artifact(run.run_id, str(report))
        run.client.log_artifacts(run.run_id, str(figures), "reproduction")
        return run.run_id

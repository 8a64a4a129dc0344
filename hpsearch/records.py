"""What a search writes on Optuna's trials and studies: the contract between search and chooser.

Optuna keeps a flat JSON dict of "user attributes" per trial and per study. Both engines write
them and the chooser, the report, the summary, the progress line and the CLI read them; every
key is a field here, so a writer and a reader cannot disagree on a name or a type. The keys are
the field names, as stored by every earlier version, so old studies read the same.

Writes are partial: a trial's run id is written as soon as its run exists, its results when it
ends, a failure's reason when it fails. ``TrialRecord(fail_reason="interrupted").write(trial)``
writes that one key; fields left None are not written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol


class _HasAttrs(Protocol):
    @property
    def user_attrs(self) -> dict[str, Any]: ...


class _Writable(Protocol):
    def set_user_attr(self, key: str, value: Any) -> None: ...


class _Record:
    """to/from Optuna user attributes, for the dataclasses below."""

    KEYS: ClassVar[frozenset[str]]

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]):
        """The record of stored attributes; keys this version does not know are left out."""
        return cls(**{k: v for k, v in attrs.items() if k in cls.KEYS})  # type: ignore[call-arg]

    @classmethod
    def of(cls, holder: _HasAttrs):
        """The record of a trial or a study (anything with ``user_attrs``)."""
        return cls.from_attrs(holder.user_attrs)

    def to_attrs(self) -> dict[str, Any]:
        """The fields that are set (not None), by key."""
        return {f.name: getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
                if getattr(self, f.name) is not None}  # fmt: skip

    def write(self, target: _Writable) -> None:
        """Set each field that is set on an Optuna trial or study."""
        for key, value in self.to_attrs().items():
            target.set_user_attr(key, value)

    def write_to_storage(self, storage: Any, trial_id: int) -> None:
        """The same, on a trial that another process runs (by its storage id)."""
        for key, value in self.to_attrs().items():
            storage.set_trial_user_attr(trial_id, key, value)


@dataclass
class TrialRecord(_Record):
    """One trial's attributes: where it is tracked, what it trained, how it ended."""

    mlflow_run_id: str | None = None  # the trial's MLflow run (the best execution's, KerasTuner)
    mlflow_run_ids: list[str] | None = None  # KerasTuner: every execution's run
    config: dict[str, Any] | None = None  # the TrialConfig, as JSON
    seed: int | None = None
    repeat: int | None = None  # which training of the same configuration (0: the first)
    repeat_of: int | None = None  # the trial whose configuration this one repeats
    worker: str | None = None  # host:pid of the process that ran it
    worker_start: str | None = None  # boot id/PID namespace/start time of that process
    fail_reason: str | None = None  # why it failed (errors.failure_reason)
    epochs_run: int | None = None
    best_epoch: int | None = None  # the epoch whose weights were kept (0-based)
    wall_time_s: float | None = None
    fit_time_s: float | None = None
    kept_val_accuracy: float | None = None  # the kept weights' validation accuracy
    test_loss: float | None = None  # evaluate_test only: the kept weights on the test split
    test_accuracy: float | None = None
    keras_tuner_trial_id: str | None = None
    resumed_from_keras_tuner_trial: str | None = None  # hyperband: the trial it goes on from
    initial_epoch: int | None = None

    def metric(self, name: str) -> float | None:
        """A numeric field by name (``test_accuracy``, ``kept_val_accuracy``, ...), or None."""
        value = getattr(self, name, None) if name in self.KEYS else None
        return float(value) if value is not None else None

    def without_failure(self) -> dict[str, Any]:
        """The attributes a retry of this trial starts with: all but the failure's reason."""
        return dataclasses.replace(self, fail_reason=None).to_attrs()


@dataclass
class StudyRecord(_Record):
    """A study's attributes: its parent run, its data, what it searched, who ran it."""

    mlflow_parent_run_id: str | None = None
    engine: str | None = None  # "keras_tuner"; unset: optuna (studies before the attribute)
    data: dict[str, Any] | None = None  # the study's DataSpec, as JSON
    searched: list[str] | None = None  # the trial-config keys the study varies
    repeats: int | None = None
    objective: str | None = None  # the objective's metric
    keras_tuner_project: str | None = None  # the KerasTuner project directory
    epochs_scale: float | None = None  # reproduce --quick: epochs scaled by this


TrialRecord.KEYS = frozenset(f.name for f in fields(TrialRecord))
StudyRecord.KEYS = frozenset(f.name for f in fields(StudyRecord))

"""The study's findings: verdicts computed from trials, on hand-made trials of known outcome."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.choose.findings import FINDINGS, Results, verdicts
from hpsearch.choose.reference import CARRIED, COMBINED
from hpsearch.config import make_config

BY_KEY = {finding.key: finding for finding in FINDINGS}


def trial(number: int, test: float, val: float | None = None, epochs_run: int = 20,
          best_epoch: int = 5, fit_time_s: float = 100.0, **config) -> optuna.trial.FrozenTrial:
    """A completed trial of ``config`` (over the carried settings) with these scores."""
    values = make_config({**CARRIED, **config}).model_dump(mode="json")
    attrs = {"config": values, "test_accuracy": test, "kept_val_accuracy": val or test,
             "epochs_run": epochs_run, "best_epoch": best_epoch, "fit_time_s": fit_time_s}
    made = optuna.trial.create_trial(value=val or test, user_attrs=attrs)
    made.number = number
    return made


def dropout_trials(longer: float, ran: int) -> list:
    conv = {"dropout_placement": "conv"}
    return [
        trial(0, 0.79, dropout=0.2, epochs=20, **conv),
        trial(1, 0.75, dropout=0.5, epochs=20, **conv),
        trial(2, longer, dropout=0.5, epochs=50, epochs_run=ran, **conv),
        trial(3, 0.81, dropout="0.2/0.5/0.7", epochs=50, epochs_run=32),
    ]


def test_dropout_needs_more_epochs_holds_only_when_the_runs_show_it():
    finding = BY_KEY["dropout_epochs"]
    holds = finding.verdict(Results({"dropout": dropout_trials(0.80, ran=43)}))
    assert holds[0] == "holds" and "stopped at 43" in holds[1]
    stopped_early = finding.verdict(Results({"dropout": dropout_trials(0.80, ran=15)}))
    assert stopped_early[0] == "does not hold"
    worse = finding.verdict(Results({"dropout": dropout_trials(0.74, ran=43)}))
    assert worse[0] == "does not hold"


def test_a_scaled_run_matches_its_scaled_epoch_caps():
    conv = {"dropout_placement": "conv"}
    trials = [trial(0, 0.5, dropout=0.2, epochs=4, **conv),
              trial(1, 0.4, dropout=0.5, epochs=4, **conv),
              trial(2, 0.6, dropout=0.5, epochs=10, epochs_run=9, **conv)]  # fmt: skip
    results = Results({"dropout": trials}, scale_epochs=lambda e: max(1, round(e * 0.2)))
    verdict, evidence = BY_KEY["dropout_epochs"].verdict(results)
    assert verdict == "holds", evidence
    assert "at 4 epochs" in evidence


def test_weight_decay_l2_holds_where_l1_falls_off():
    trials, number = [], 0
    for kind, large in (("l1", 0.10), ("l2", 0.70), ("l1l2", 0.10)):
        for magnitude in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
            score = 0.75 if magnitude <= 1e-3 else large
            trials.append(trial(number, score, weight_decay=kind,
                                weight_decay_magnitude=magnitude))  # fmt: skip
            number += 1
    verdict, evidence = BY_KEY["weight_decay"].verdict(Results({"weight_decay": trials}))
    assert verdict == "holds", evidence
    assert "l1 +65.0 points" in evidence and "l2 +5.0 points" in evidence


@pytest.mark.parametrize(
    ("scores", "verdict"),
    [
        ({"none": 0.837, "standard": 0.822, "mixup": 0.837, "cutout": 0.813, "all": 0.786},
         "holds"),
        ({"none": 0.80, "standard": 0.84, "mixup": 0.80, "cutout": 0.79, "all": 0.70},
         "does not hold"),
    ],
)  # fmt: skip
def test_augmentation_does_not_help_and_all_three_is_worst(scores, verdict):
    names = {"none": "none", "standard": "standard", "mixup": "mixup", "cutout": "cutout",
             "all": "standard+mixup+cutout"}  # fmt: skip
    combined = {k: v for k, v in COMBINED.items() if k != "augmentation"}
    trials = [trial(i, scores[key], **{**combined, "augmentation": names[key]})
              for i, key in enumerate(names)]  # fmt: skip
    assert BY_KEY["augmentation"].verdict(Results({"augmentation": trials}))[0] == verdict


def test_a_finding_without_its_trials_is_not_measured():
    found = verdicts(Results({}))
    assert len(found) == len(FINDINGS)
    assert {verdict for _, verdict, _ in found} == {"not measured"}
    partial = Results({"dropout": dropout_trials(0.8, 43)[:2]})
    verdict, evidence = BY_KEY["dropout_epochs"].verdict(partial)
    assert verdict == "not measured" and "0.5, 50 epochs" in evidence


def test_zero_initialisation_that_trains_breaks_the_finding():
    inits = ("he_normal", "he_uniform", "glorot_uniform", "zeros")
    scores = {"he_normal": 0.70, "he_uniform": 0.69, "glorot_uniform": 0.65}
    trials = [trial(i, scores.get(k, 0.10), kernel_initializer=k) for i, k in enumerate(inits)]
    assert BY_KEY["he_zeros"].verdict(Results({"initializer": trials}))[0] == "holds"
    trials[-1] = trial(3, 0.40, kernel_initializer="zeros")
    assert BY_KEY["he_zeros"].verdict(Results({"initializer": trials}))[0] == "does not hold"

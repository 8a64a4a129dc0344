"""The trial runner: early stopping keeps the weights of the epoch its monitor picks."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import pruned_study

from hpsearch.config import DataSpec, make_config
from hpsearch.tracking.trial import load_splits
from hpsearch.training.runner import evaluate, run_trial


@pytest.fixture(scope="module")
def splits():
    return load_splits(DataSpec(dataset="digits", limit=300))[0]


@pytest.mark.slow
@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy"])
def test_the_kept_weights_are_those_of_the_monitors_best_epoch(splits, monitor):
    config = make_config({"architecture": "baseline1", "epochs": 12, "patience": 12,
                          "learning_rate": 0.01, "monitor": monitor})  # fmt: skip
    result = run_trial(config, splits, evaluate_test=True, verbose=0)
    losses, accuracies = result.history["val_loss"], result.history["val_accuracy"]
    # Both watched quantities peak at different epochs here, so picking the wrong one shows.
    assert np.argmin(losses) != np.argmax(accuracies)
    best = int(np.argmin(losses) if monitor == "val_loss" else np.argmax(accuracies))
    assert result.best_epoch == best + 1
    loss, accuracy, _ = evaluate(result.model, splits.x_val, splits.y_val, splits.num_classes)
    assert accuracy == pytest.approx(accuracies[best], abs=1e-6)
    assert loss == pytest.approx(losses[best], rel=1e-3)
    # the logged figures describe the kept model: its validation accuracy, its test score
    assert result.kept_val_accuracy == pytest.approx(accuracy, abs=1e-6)
    assert result.best_val_accuracy == max(accuracies)
    if monitor == "val_loss":
        assert result.kept_val_accuracy < result.best_val_accuracy  # the two differ here
    _, test_accuracy, _ = evaluate(result.model, splits.x_test, splits.y_test, splits.num_classes)
    assert result.test_metrics["test_accuracy"] == pytest.approx(test_accuracy, abs=1e-9)
    assert result.final_metrics()["kept_val_accuracy"] == result.kept_val_accuracy


@pytest.mark.slow
def test_pruning_steps_are_epochs_trained(splits, tmp_path):
    import optuna

    from hpsearch.search.pruning import EpochPruningCallback

    study = pruned_study(tmp_path, epochs=3, type="successive_halving", min_resource=1)
    outcomes = []
    for rate in (0.01, 1e-7):  # a learner, then a trial that cannot learn
        trial = study.ask()
        config = make_config({"architecture": "baseline1", "epochs": 3, "patience": 3,
                              "learning_rate": rate})  # fmt: skip
        try:
            run_trial(config, splits, [EpochPruningCallback(trial, "val_accuracy")], verbose=0)
            study.tell(trial, 0.0)
            outcomes.append("complete")
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            outcomes.append("pruned")
    first, second = study.trials
    # The first trial is alone at every rung, so promoted; the second is pruned at the first.
    assert outcomes == ["complete", "pruned"]
    assert sorted(first.intermediate_values) == [1, 2, 3]
    assert second.last_step == 1  # pruned at the first rung: after 1 epoch, not 2


class _SignalsSelf(keras.callbacks.Callback):
    """Sends this process SIGINT ``times`` times after batch ``at`` of the first epoch."""

    def __init__(self, at: int, times: int):
        super().__init__()
        self.at, self.times = at, times
        self.begun: list[tuple[int, int]] = []
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.begun.append((self.epoch, batch))

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (0, self.at):
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("times", [1, 2])
def test_ctrl_c_in_fit_is_raised_at_the_next_step_boundary_or_at_once_the_second_time(
    splits, times
):
    config = make_config({"architecture": "baseline1", "epochs": 3, "batch_size": 16})
    signaller = _SignalsSelf(at=2, times=times)
    with pytest.raises(KeyboardInterrupt) as raised:
        run_trial(config, splits, [signaller], verbose=0)
    innermost = raised.traceback[-1]
    if times == 1:
        # noted during batch 2's end, raised at the end of batch 3: one more step, no more
        assert signaller.begun[-1] == (0, 3)
        assert innermost.name == "raise_pending"
    else:
        assert signaller.begun[-1] == (0, 2)
        assert innermost.name == "note"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


@pytest.mark.slow
@pytest.mark.parametrize(("warmup", "final_epochs"), [(0, 3), (2, 2)])
def test_the_final_fit_runs_its_cosine_schedule_to_the_end(splits, warmup, final_epochs):
    """Retrained for fewer epochs than the trial's maximum, the rate still decays to zero."""
    from hpsearch.training.runner import train_final

    config = make_config({"architecture": "baseline1", "epochs": 8, "optimizer": "sgd_momentum",
                          "learning_rate": 0.05, "lr_schedule": "cosine",
                          "warmup_epochs": warmup, "augmentation": "standard",
                          "dropout": 0.2})  # fmt: skip
    result = train_final(config, splits, final_epochs, verbose=0)
    rates = result.history["learning_rate"]
    assert len(rates) == final_epochs
    assert rates[-1] == pytest.approx(0.0, abs=1e-6)  # over 8 epochs it would still be > 0.02
    assert rates[0] > 0.01
    assert 0.0 <= result.test_accuracy <= 1.0


def test_schedule_over_keeps_every_other_factor():
    from hpsearch.training.runner import schedule_over

    config = make_config({"architecture": "baseline2", "epochs": 30, "lr_schedule": "cosine",
                          "warmup_epochs": 5, "dropout": "0.2/0.3/0.4",
                          "augmentation": "standard+cutout", "label_smoothing": 0.1})  # fmt: skip
    assert schedule_over(config, 30) is config
    shorter = schedule_over(config, 4)
    assert (shorter.epochs, shorter.warmup_epochs) == (4, 3)
    assert shorter.model_dump(exclude={"epochs", "warmup_epochs"}) == config.model_dump(
        exclude={"epochs", "warmup_epochs"}
    )


@pytest.mark.slow
def test_test_time_flip_scores_the_test_set_on_each_image_and_its_mirror(splits):
    from hpsearch.training.runner import predict, train_final

    config = make_config({"architecture": "baseline1", "epochs": 2, "learning_rate": 0.01,
                          "test_time_flip": True})  # fmt: skip
    result = run_trial(config, splits, evaluate_test=True, verbose=0)
    x, y = splits.x_test, splits.y_test
    plain = predict(result.model, x)
    averaged = (plain + predict(result.model, x[:, :, ::-1])) / 2
    assert not np.array_equal(plain.argmax(1), averaged.argmax(1))  # the mirror changes votes
    accuracy = float(np.mean(averaged.argmax(1) == y))
    assert result.test_metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    final = train_final(config, splits, 1, verbose=0)
    averaged = (predict(final.model, x) + predict(final.model, x[:, :, ::-1])) / 2
    np.testing.assert_allclose(final.test_probabilities, averaged, rtol=1e-5, atol=1e-6)


def test_batch_norm_momentum_too_slow_for_an_epochs_steps_is_warned_and_smoke_avoids_it():
    from hpsearch.search.study_file import load_study
    from hpsearch.tracking.trial import load_splits
    from hpsearch.training.runner import batch_norm_lag

    slow = make_config({"batch_norm": "before", "batch_size": 64})  # 0.99: ~100 steps
    reason = batch_norm_lag(slow, 480)
    assert reason and "~100 steps" in reason and "an epoch has 8" in reason
    assert batch_norm_lag(slow, 64 * 100) is None  # 100 steps an epoch: fine
    assert batch_norm_lag(make_config({"batch_size": 64}), 480) is None  # no batch norm
    smoke = load_study(Path(__file__).resolve().parents[1] / "studies" / "smoke.yaml")
    splits, _ = load_splits(smoke.data)
    config = make_config({**smoke.fixed, "batch_norm": "before"})
    assert batch_norm_lag(config, len(splits.x_train)) is None

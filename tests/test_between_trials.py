"""Between trials: what a trial leaves behind, background uploads, runs of a dead worker."""

from __future__ import annotations

import gc
import logging
import threading

import keras
import numpy as np
import optuna
import pytest
from conftest import TRIAL_ARTIFACTS, drawing_children, parents_and_children
from matplotlib.image import imread

from hpsearch.config import DataSpec, make_config
from hpsearch.search.lifecycle import run_search
from hpsearch.search.lost_trials import StaleTrialHandler
from hpsearch.search.study_file import parse_study
from hpsearch.tracking.trial import load_splits
from hpsearch.tracking.uploads import Uploader
from hpsearch.training.runner import run_trial
from hpsearch.training.session import release_trial_state, seed_trial


def _live_graphs() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(isinstance(o, FuncGraph) for o in gc.get_objects())


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow leak")
def test_trials_in_one_process_do_not_pile_up_graphs():
    splits, _ = load_splits(DataSpec(dataset="digits", limit=200))
    counts = []
    for seed in range(4):
        config = make_config({"architecture": "baseline1", "epochs": 1, "seed": seed})
        run_trial(config, splits, verbose=0)
        release_trial_state()
        counts.append(_live_graphs())
    # without the release each trial leaves its traced train step behind (~60 graphs)
    assert counts[-1] <= counts[0], counts


@pytest.mark.slow
def test_a_trial_repeated_after_others_in_the_same_process_trains_the_same():
    """What one trial leaves in the process (kept caches, name counters) changes no result."""
    splits, _ = load_splits(DataSpec(dataset="digits", limit=200))
    histories = []
    for seed in (1, 2, 1):
        values = {"architecture": "baseline1", "epochs": 2, "seed": seed, "dropout": 0.2,
                  "augmentation": "standard", "batch_norm": "after"}  # fmt: skip
        result = run_trial(make_config(values), splits, verbose=0)
        release_trial_state()
        histories.append(result.history)
    assert histories[0] != histories[1]  # the seed matters
    assert histories[2] == histories[0]


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's seed")
def test_seeding_a_trial_sets_tensorflows_seed_as_set_seed_does_but_keeps_its_kernels():
    import tensorflow as tf
    from tensorflow.python.eager import context
    from tensorflow.python.framework import random_seed

    tf.random.set_seed(11)
    expected = [random_seed.get_seed(None) for _ in range(3)]  # (global, op) seeds of new ops
    seed_trial(11)
    assert [random_seed.get_seed(None) for _ in range(3)] == expected

    # A stateful kernel seeded explicitly keeps its stream: its kernel was not made again.
    tf.random.set_seed(0)
    first = tf.random.uniform([4], seed=5).numpy()
    seed_trial(0)
    release_trial_state()
    assert not np.array_equal(tf.random.uniform([4], seed=5).numpy(), first)
    tf.random.set_seed(0)  # TensorFlow's own call empties the cache: the stream starts again
    assert np.array_equal(tf.random.uniform([4], seed=5).numpy(), first)
    # nothing of the override is left on the context
    assert "_set_global_seed" not in vars(context.context())
    assert "clear_kernel_cache" not in vars(context.context())


def test_uploader_runs_jobs_in_order_and_survives_a_failing_one():
    uploader = Uploader()
    done: list[int] = []
    gate = threading.Event()

    def job(n: int):
        def run():
            gate.wait(5)
            if n == 2:
                raise OSError("disk full")
            done.append(n)

        return run

    for n in range(5):
        uploader.submit(f"job {n}", job(n))
    assert uploader.pending() == 5
    assert uploader.drain(timeout=0.2) is False  # the first job is still waiting
    gate.set()
    assert uploader.drain(timeout=10) is True
    assert done == [0, 1, 3, 4]
    assert [what for what, _ in uploader.failures] == ["job 2"]
    assert uploader.pending() == 0


def test_held_uploads_wait_for_go_and_drain_lets_them_run():
    uploader = Uploader()
    done: list[str] = []
    uploader.hold()
    uploader.submit("held", lambda: done.append("held"))
    uploader.submit("second", lambda: done.append("second"))
    assert uploader.drain(timeout=5) is True  # drain lets held jobs go
    assert done == ["held", "second"]
    uploader.hold()
    uploader.submit("third", lambda: done.append("third"))
    threading.Event().wait(0.3)
    assert done == ["held", "second"]  # still held
    uploader.go()
    assert uploader.drain(timeout=5) is True
    assert done == ["held", "second", "third"]


@pytest.mark.slow
def test_every_trial_run_is_closed_with_its_artifacts_after_the_search(stores, caplog):
    storage, client = stores
    spec = parse_study(
        {
            "name": "uploads",
            "sampler": {"type": "grid"},
            "data": {"dataset": "digits", "limit": 150},
            "fixed": {"architecture": "baseline1", "epochs": 2, "batch_size": 32},
            "space": {"batch_norm": {"choices": ["none", "before", "after"]}},
        },
        "uploads.yaml",
    )
    with caplog.at_level(logging.WARNING, logger="hpsearch.figures.drawing"):
        outcome = run_search(spec, storage, echo=lambda _: None, verbose=0)
    assert outcome.counts["complete"] == 3
    assert "drawing process unavailable" not in caplog.text  # the figures came from the child
    assert drawing_children() == []  # which ended with the search
    _, children = parents_and_children(client, "uploads")
    assert len(children) == 3
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["hpsearch.outcome"] == "completed"
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == TRIAL_ARTIFACTS
        for figure in ("training_curves.png", "confusion_matrix.png"):
            assert imread(client.download_artifacts(run.info.run_id, figure)).shape[0] > 100
    best = client.download_artifacts(outcome.best_run_id, "model.keras")
    model = keras.saving.load_model(best)
    splits, _ = load_splits(spec.data)
    probabilities = model.predict(splits.x_val, verbose=0)
    accuracy = float((probabilities.argmax(axis=1) == splits.y_val).mean())
    logged = client.get_run(outcome.best_run_id).data.metrics["best_val_accuracy"]
    assert accuracy == pytest.approx(logged, abs=1e-6)


@pytest.mark.slow
def test_a_dead_workers_finished_trial_whose_run_was_left_open_gets_closed(stores):
    storage, client = stores
    experiment = client.create_experiment("orphans")
    study = optuna.create_study(study_name="orphans", storage=storage)
    open_runs = []
    for number in range(3):
        run = client.create_run(experiment)
        open_runs.append(run.info.run_id)
        trial = study.ask()
        trial.set_user_attr("worker", "host:4242")
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        if number < 2:
            study.tell(trial, 0.5)
    lost = study.trials[2]
    StaleTrialHandler(max_retry=0)(study, lost)
    statuses = [client.get_run(run_id).info.status for run_id in open_runs]
    assert statuses == ["FINISHED", "FINISHED", "FAILED"]
    first = client.get_run(open_runs[0]).data.tags
    assert first["hpsearch.outcome"] == "completed"
    assert first["hpsearch.artifacts_incomplete"] == "true"
    assert client.get_run(open_runs[2]).data.tags["hpsearch.failure_reason"] == "worker_lost"

"""Pruning inside ``fit``: optuna-integration's Keras callback, with epochs trained as the step.

Imports optuna-integration, so the driver imports this module only for studies that prune.
"""

from __future__ import annotations

from optuna_integration import KerasPruningCallback


class EpochPruningCallback(KerasPruningCallback):
    """Reports the monitored value after epoch k (counted from 1) at step k.

    optuna-integration reports Keras's 0-based epoch index, so a pruner's
    resources were off by one: Hyperband's first rung at 1 epoch was checked
    after 2 epochs, every rung one epoch late, and ``n_warmup_steps: 1`` meant
    2 epochs. The pruners' resources are epochs trained. After the last epoch
    the value is reported but nothing is pruned: there is nothing left to save.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        if done >= (self.params or {}).get("epochs", float("inf")):
            value = (logs or {}).get(self._monitor)
            if value is not None:
                self._trial.report(float(value), step=done)
            return
        super().on_epoch_end(done, logs)

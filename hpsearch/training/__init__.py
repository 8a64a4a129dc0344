"""Training one configuration: the runner, the process state between trials, interruptions.

Knows nothing of Optuna or MLflow: callbacks are how a caller listens.
"""

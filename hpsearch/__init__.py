"""hpsearch: MLflow-tracked hyperparameter search for Keras image classifiers."""

__version__ = "0.1.0"

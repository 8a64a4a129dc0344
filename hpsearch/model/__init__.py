"""The model: the CNN builder, its augmentation and optimizers, and the exported file's metadata.

Knows nothing of Optuna or MLflow: a :class:`~hpsearch.config.TrialConfig` goes in, a Keras model
comes out.
"""

"""Figures (matplotlib) and the process that draws them off the training loop."""

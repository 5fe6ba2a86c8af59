"""Benchmarks of the optimizers, the training step and the evaluation: run from the checkout
with ``python -m benchmarks.<name>`` (figures in benchmarks/RESULTS.md)."""

"""Utilities shared by the training app (recipes/) and the evaluation (evaluation/), importing neither."""

"""Helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""

import dataclasses


def counting(problem):
    """The problem with `train_loss` wrapped in a counter that increments when it is traced."""
    count = {"traces": 0}
    inner = problem.train_loss

    def train_loss(params, hparams, batch):
        count["traces"] += 1  # Python runs only while JAX traces
        return inner(params, hparams, batch)

    return dataclasses.replace(problem, train_loss=train_loss), count

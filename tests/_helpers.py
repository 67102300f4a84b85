"""Helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""

import dataclasses

import optax


def counting(problem):
    """The problem with `train_loss` wrapped in a counter that increments when it is traced."""
    count = {"traces": 0}
    inner = problem.train_loss

    def train_loss(params, hparams, batch):
        count["traces"] += 1  # Python runs only while JAX traces
        return inner(params, hparams, batch)

    return dataclasses.replace(problem, train_loss=train_loss), count


def sgd_schedule(hparams):
    """Plain SGD driven by a per-step learning-rate schedule hparams["lr"][t]."""
    return optax.sgd(lambda step: hparams["lr"][step])


def sgd_scalar_momentum(hparams):
    """SGD with momentum and one scalar learning rate."""
    return optax.sgd(hparams["lr"], momentum=hparams["momentum"])

"""Random and grid search: many settings evaluated by one compiled, vmapped program.

Both baselines evaluate `objective.loss_and_scores` on a batch of settings with `jax.vmap`, in
chunks of `chunk_size` trials. The last chunk is padded (with copies of its first trial) to the same
shape, so all chunks run the same compiled program: one compilation for any number of trials, and
none at all for a later call with new values or keys. Padding is compute spent and is counted.

Every trial trains with the same `key` (common random numbers: the same initialisation and the
same minibatches), so all strategies given one key tune one deterministic function, and a trial's
value equals `objective(hparams, key)` evaluated alone. Settings are drawn from a key derived from
`key` with `fold_in`, independent of the training randomness.

Memory: one chunk of trials at a time: `chunk_size` copies of the parameters, optimiser state and
activations. Diverged trials (non-finite validation loss) are recorded as failed and never best.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import numpy as np

from hypergrad import _compile
from hypergrad._types import HParams, Key
from hypergrad.compute import cached_flops_per_step
from hypergrad.hypergradient import check_objective
from hypergrad.objective import Objective, check_key
from hypergrad.results import COMPLETE, FAIL, Result, Trial, TrialRecorder
from hypergrad.space import Space, _check_count

__all__ = ["random_search", "grid_search", "evaluate_settings", "run_flops", "run_flops_per_step"]

_SAMPLE_STREAM = 2**31 - 1  # fold_in tag separating the sampling key from the training key


def check_space(space: Any) -> Space:
    if not isinstance(space, Space):
        raise ValueError(f"space must be an hg.Space, got {type(space).__name__}; build one with "
                         "hg.Space({'lr': hg.LogUniform(1e-3, 1.0), ...})")
    return space


def _first(batch: HParams) -> HParams:
    return jax.tree.map(lambda a: a[0], batch)


def run_flops_per_step(objective: Objective, hparams: HParams, key: Key) -> tuple[float, float]:
    """(FLOPs outside the loop, FLOPs per step) of one training run (see `run_flops`)."""
    def build(steps):
        return lambda h, k, d: objective.reference(steps).loss_and_scores(h, k, d)[1]

    return cached_flops_per_step(("run", objective), build, (hparams, key, objective.problem.data))


def run_flops(objective: Objective, hparams: HParams, key: Key) -> float:
    """FLOPs of one training run, the compute unit: training plus scoring the trained parameters
    (validation and test losses and metrics), which is exactly what one search trial costs."""
    fixed, per_step = run_flops_per_step(objective, hparams, key)
    return fixed + objective.num_steps * per_step


def _chunk(batch: HParams, start: int, size: int) -> HParams:
    """Rows start .. start+size of `batch`, padded with copies of row `start` to `size` rows."""
    def take(a):
        rows = a[start:start + size]
        if rows.shape[0] < size:
            pad = np.repeat(np.asarray(rows[:1]), size - rows.shape[0], axis=0)
            rows = np.concatenate([np.asarray(rows), pad], axis=0)
        return rows
    return jax.tree.map(take, batch)


def evaluate_settings(
    objective: Objective,
    settings: HParams,
    key: Key,
    *,
    strategy: str,
    chunk_size: int = 64,
    log: Any = None,
    progress: Any = False,
    info: dict | None = None,
) -> Result:
    """Evaluates a batch of settings (leading axis = trial) with one vmapped program.

    Args:
        objective: the objective to evaluate.
        settings: dict of arrays with a leading trial axis.
        key: training key shared by all trials.
        strategy: label of the result.
        chunk_size: trials per vmapped call; bounds memory at chunk_size training runs at once.
        log: optional JSON-lines path; each trial is appended as soon as its chunk returns.
        progress: True to print a line per chunk to stderr, or a callable(str).
        info: extra facts to store in the result.
    """
    check_objective(objective)
    key = check_key(key)
    chunk_size = _check_count(chunk_size, "chunk_size")
    settings = {name: np.asarray(value) for name, value in settings.items()}
    num = len(next(iter(settings.values())))
    chunk = min(chunk_size, num)
    data = objective.problem.data
    first = _first(settings)
    executable, compile_seconds = _compile.compiled(
        ("search", objective),
        lambda: jax.vmap(lambda h, k, d: objective.loss_and_scores(h, k, d)[1], in_axes=(0, None, None)),
        (_chunk(settings, 0, chunk), key, data),
    )
    unit = run_flops(objective, first, key)
    recorder = TrialRecorder(strategy, log, progress, total=num)
    try:
        for start in range(0, num, chunk):
            real = min(chunk, num - start)
            batch = _chunk(settings, start, chunk)
            began = time.perf_counter()
            scores = jax.device_get(jax.block_until_ready(executable(batch, key, data)))
            seconds = time.perf_counter() - began
            for i in range(real):
                trial_scores = {name: float(v[i]) for name, v in scores.items()}
                value = trial_scores["val_loss"]
                recorder.add(Trial(
                    number=start + i,
                    hparams={name: np.asarray(v[i]) for name, v in batch.items()},
                    value=value,
                    scores=trial_scores,
                    state=COMPLETE if math.isfinite(value) else FAIL,
                    flops=unit * chunk / real,  # padding rows are compute spent too
                    seconds=seconds / real,
                    run_flops=unit,
                ))
            recorder.report()
    finally:
        recorder.close()
    return Result(strategy, tuple(recorder.trials), unit, compile_seconds,
                  {"chunk_size": chunk, "num_trials": num, **(info or {})})


def random_search(
    objective: Objective,
    space: Space,
    key: Key,
    num_trials: int,
    *,
    chunk_size: int = 64,
    log: Any = None,
    progress: Any = False,
) -> Result:
    """Random search: `num_trials` settings drawn by `space.sample`, evaluated vmapped in chunks.

    Shaped hyperparameters are one value broadcast to their shape unless declared
    `independent=True`. Cost: `num_trials` training runs plus evaluations, in
    ceil(num_trials / chunk_size) calls of one compiled program.

    Args:
        objective: the objective.
        space: where to sample.
        key: PRNG key; trials train with it (common random numbers) and sample from a key folded
            from it.
        num_trials: number of settings, >= 1.
        chunk_size: trials per vmapped call (memory bound).
        log: optional JSON-lines path to append each trial to as it is produced.
        progress: True to print progress to stderr, or a callable(str).

    Returns:
        a `Result` whose trials are in sampling order.
    """
    check_objective(objective)
    check_space(space)
    num_trials = _check_count(num_trials, "num_trials")
    key = check_key(key)
    settings = space.sample(jax.random.fold_in(key, _SAMPLE_STREAM), num_trials)
    return evaluate_settings(objective, settings, key, strategy="random", chunk_size=chunk_size, log=log,
                             progress=progress)


def grid_search(
    objective: Objective,
    space: Space,
    key: Key,
    points_per_axis: int,
    *,
    chunk_size: int = 64,
    log: Any = None,
    progress: Any = False,
) -> Result:
    """Grid search over `space.grid(points_per_axis)` (bounds included), vmapped in chunks.

    Cost: points_per_axis ** (number of axes) training runs; a `Choice` contributes all its options.

    Args:
        objective, space, key, chunk_size, log, progress: as in `random_search`.
        points_per_axis: values per continuous axis, >= 1.
    """
    check_objective(objective)
    check_space(space)
    key = check_key(key)
    settings = space.grid(points_per_axis)
    return evaluate_settings(objective, settings, key, strategy="grid", chunk_size=chunk_size, log=log,
                             progress=progress, info={"points_per_axis": points_per_axis})

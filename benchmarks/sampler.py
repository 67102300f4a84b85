"""What drawing a minibatch costs a training run, before and after minibatches by epochs.

    .venv/bin/python benchmarks/sampler.py --out benchmarks/sampler.md     # about a minute on 2 CPU cores
    .venv/bin/python benchmarks/sampler.py --steps 20 --repeats 3          # structure only

One training run (a search trial: training plus scores; `_common.Config("train")`) of the digits
MLP preset (64-50-10 tanh, batch 100, SGD with momentum, per-step learning rates; float32) with
three minibatch rules, timed interleaved in one process:

- "epochs (library)": `hg.Problem.batch_indices`, the keyed epoch stream (a cycle-walking Feistel
  permutation per epoch, O(batch_size) per step; `hypergrad/_sampler.py`);
- "top-k (before)": the rule it replaced, reproduced here: the `batch_size` largest of n float32
  uniforms drawn with `fold_in(key, t)` (O(n) per step);
- "cyclic (control)": step t takes examples t*b, ..., t*b + b - 1 mod n: the same shapes and gather,
  no draw at all.

The draw's share of a step is 1 - cyclic / rule (target: at most 5% for the library's rule). A
second table times the draw alone: `batch_indices` of all T steps as one jitted program, against
the training run. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import hypergrad as hg
from hypergrad.loop import DRAW_BLOCK

import _common as common


class _TopK(hg.Problem):
    """The benchmark problem with the draw used before epochs: top-k of n uniforms per step."""

    def batch_indices(self, key, step):
        n, b = self.num_train, self.batch_size

        def one(t):
            scores = jax.random.uniform(jax.random.fold_in(key, t), (n,), dtype=jnp.float32)
            return jax.lax.top_k(scores, b)[1]

        step = jnp.asarray(step)
        return jax.vmap(one)(step.reshape(-1)).reshape(step.shape + (b,))


class _Cyclic(hg.Problem):
    """The benchmark problem with no draw: a fixed cyclic order (the control)."""

    def batch_indices(self, key, step):
        step = jnp.asarray(step)
        b, n = self.batch_size, self.num_train
        return ((step[..., None] * b + jnp.arange(b)) % n).astype(jnp.int32)


class _Stored(hg.Problem):
    """The benchmark problem reading a stored order: one fixed random permutation of range(n), a
    constant of the program, walked cyclically (the control that gathers in random order, as the
    real rules do, but computes nothing)."""

    def batch_indices(self, key, step):
        step = jnp.asarray(step)
        b, n = self.batch_size, self.num_train
        order = jnp.asarray(np.random.default_rng(0).permutation(n), jnp.int32)
        return order[(step[..., None] * b + jnp.arange(b)) % n]


NOTE = ('The stored-order control gathers in a random order as every shuffled sampler must, and computes noth'
        "ing: the share against it is the draw's own cost (target: at most 5%). Against the cyclic order the "
        'share also holds the cost of gathering scattered rows instead of contiguous ones.')
CONTROLS = ("stored order (control)", "cyclic (control)")
RULES = {"epochs (library)": hg.Problem, "top-k (before)": _TopK, "stored order (control)": _Stored,
         "cyclic (control)": _Cyclic}


def _as(cls, problem):
    return cls(**{f.name: getattr(problem, f.name) for f in dataclasses.fields(problem) if f.init})


def _timed(call) -> float:
    """CPU seconds of one call (process time: a busy shared machine slows it less than wall time)."""
    start = time.process_time()
    jax.block_until_ready(call())
    return time.process_time() - start


def measure(num_steps: int, repeats: int) -> tuple[list[dict], list[dict]]:
    """Training runs under each rule, interleaved (`repeats` rounds, each rule once a round, in a
    rotating order); the draw's share of a step is the median over rounds of (rule - control) /
    rule, paired within a round so a slow spell of the machine hits both alike. Then the draw
    alone, as `Loop.run` computes it: a scan over blocks of `DRAW_BLOCK` steps drawing each block
    (over at least 64 blocks), per step, over a training run's time per step."""
    problem = common.make_problem()
    configs = {}
    for label, cls in RULES.items():
        objective, hparams, key = common.make_objective(_as(cls, problem), num_steps)
        configs[label] = config = common.Config("train", objective, hparams, key)
        jax.block_until_ready(config.call())
    labels = list(configs)
    times = {label: [] for label in labels}
    for r in range(repeats):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            times[label].append(_timed(configs[label].call))
    runs = [{"rule": label, "T": num_steps, "seconds": statistics.median(t),
             "share": {control: statistics.median([1 - c / x for c, x in zip(times[control], t)])
                       for control in CONTROLS if control != label}} for label, t in times.items()]
    draws = []
    key = jax.random.split(jax.random.key(0))[1]
    # at least 64 blocks, so the program's dispatch is a small share of the draw's time
    steps = jnp.arange(max(num_steps, 64 * DRAW_BLOCK) // DRAW_BLOCK * DRAW_BLOCK).reshape(-1, DRAW_BLOCK)
    for label, cls in list(RULES.items())[:2]:
        rule = _as(cls, problem)

        def blocks(k, rule=rule):
            return jax.lax.scan(lambda acc, ts: (acc + rule.batch_indices(k, ts).sum(), None), 0, steps)[0]

        draw = jax.jit(blocks)
        jax.block_until_ready(draw(key))
        per_step = statistics.median([_timed(lambda: draw(key)) for _ in range(repeats)]) / steps.size
        draws.append({"rule": label, "T": num_steps, "per_step": per_step,
                      "of_step": per_step * num_steps / statistics.median(times[label])})
    return runs, draws


def render(runs, draws, n: int) -> str:
    head = (f"Digits MLP preset (n = {n} training examples, batch 100), one training run (a search trial), "
            f"JAX {jax.__version__} on {jax.devices()[0].platform.upper()}; CPU time (process time), medians "
            "over interleaved rounds; share = median over rounds of 1 - control / rule. "
            + NOTE + "\n\n")
    rows = [[str(r["T"]), r["rule"], common.fmt(r["seconds"], ".4f"), common.fmt(1e6 * r["seconds"] / r["T"], ".1f"),
             *[common.fmt(100 * r["share"][c], ".1f") + "%" if c in r["share"] else "" for c in CONTROLS]]
            for r in runs]
    first = _table(["T", "minibatches", "training run (CPU s)", "per step (us)",
                    "draw's share of a step (vs stored order)", "(vs cyclic)"], rows)
    rows = [[str(d["T"]), d["rule"], common.fmt(1e6 * d["per_step"], ".1f"), common.fmt(100 * d["of_step"], ".1f") + "%"]
            for d in draws]
    second = _table(["T", "minibatches", "draw alone per step (us)", "of a training step"], rows)
    return (head + first + "\n\nThe draw alone, as `Loop.run` computes it (a scan over blocks of "
            f"{DRAW_BLOCK} steps, each block's indices drawn at once), one jitted program:\n\n" + second + "\n")


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 2000], help="horizons T")
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per rule")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    runs, draws = [], []
    for T in args.steps:
        r, d = measure(T, args.repeats)
        runs += r
        draws += d
    text = "# Minibatch draw: its share of a training step\n\n" + render(runs, draws, common.make_problem().num_train)
    common.write_report(text, args.out)


if __name__ == "__main__":
    main()

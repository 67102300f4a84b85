"""The PyTorch peer, measured: hypergrad against a PyTorch autograd unroll of exactly the same work.

Install the benchmark-only dependency first (the library and its tests never need it), as a CPU
build: `make bench-peer` installs the pinned CPU wheel, else the one from PyTorch's CPU index (the
`bench` extra, `torch>=2.4` from PyPI, would pull the much larger CUDA build):

    .venv/bin/pip install torch==2.13.0+cpu            # where the package index carries it, else:
    .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu

Run (`make bench-peer`: about 9 minutes on 2 CPU cores shared at load 10, compiling cold; less warm):

    .venv/bin/python benchmarks/peer_torch.py --out benchmarks/peer_torch.md
    .venv/bin/python benchmarks/peer_torch.py --smoke --dtype float64    # seconds; the agreement check

The work, identical on both sides: the digits MLP 64 -> hidden -> 10 (tanh; hidden 50, 100, 200,
400), trained for T steps (200; also 2000 at one width) by SGD with momentum with one learning rate
per step, weight decay `0.5 * wd * sum(kernel**2)` in the training loss, batch 100, in float32 (or
`--dtype float64`), from the same initial parameters (hypergrad's `problem.init`, copied into torch
tensors, kernels (out, in) as in `torch.nn.Linear`), scored on the same validation and test splits
(loss and accuracy). The minibatches are the same too: their indices are precomputed in numpy
(epochs of a seeded permutation of the 1078 training examples, batch t = positions 100t..100t+99
of the stream) and both sides read that one (T, 100) index array, so drawing minibatches is not
part of the comparison. hypergrad reads it through an `hg.Problem` whose training "examples" are
the rows of that array (`batch_size=1`; the rows are placed in the order the library's epoch
sampler visits them, so step t reads row t's indices: one index drawn per step instead of 100)
and whose training loss gathers the 100 examples, as the torch loop does with `x[idx[t]]`.

Rows, per width (the time is per call, or per trial for searches):

- training run: `objective.evaluate(h, key)` (one jitted program: train and score) against a torch
  loop (each step's gradient by `torch.autograd.grad`, the momentum buffer and parameters updated in
  place under `torch.no_grad()`), then the same scores under `torch.no_grad()`;
- hypergradient: the validation loss's gradient w.r.t. the T per-step rates, the momentum and the
  weight decay: `hg.hypergradient(objective, h, key, method=hg.Reverse())` against torch autograd
  through the unrolled loop, written by hand in the "higher"/TorchOpt functional style (each
  step's gradient from `torch.autograd.grad(..., create_graph=True)`, the momentum buffer and the
  parameters new differentiable tensors), then `torch.autograd.grad` of the validation loss;
- search, 64 trials: `hg.random_search(objective, space, key, num_trials=64)` (one vmapped program;
  the call's seconds include sampling and building the trials table) against 64 sequential torch
  training runs of the same 64 settings (read from hypergrad's trials), and against one
  `torch.func.vmap` of a functional training loop (`torch.func.grad` per step) over the 64
  settings; a failure of the latter is reported in the table, not hidden.

Agreement (the same computation on both sides, in the run's dtype): training, |difference| of the
validation losses relative to torch's; hypergradient, relative error ||g_hg - g_torch|| / ||g_torch||
of the whole (T + 2)-vector and its cosine; search, the largest relative difference of the 64
validation losses (non-finite ones must match as non-finite). `--smoke --dtype float64` is the
check that tests/test_benchmarks.py runs.

Timing: after one untimed warm-up call of each side (the first call's seconds, compilation included,
are in the table: hypergrad's persistent compilation cache is on, so a second run of this script
loads its programs; the sequential torch search has no warm-up call, torch compiling nothing and
its training loop being warm by then), the calls are interleaved and their order rotated so that
slow periods of the shared machine hit both sides alike: the training and hypergradient rows
`--repeats` times, then the search rows among themselves `--search-repeats` times (64 sequential
torch runs take tens of seconds). The table shows the median and the fastest call of each side
and the ratio torch / hypergrad of each. torch runs with `torch.set_num_threads(os.cpu_count())`
and OpenMP's passive waiting (see below); XLA:CPU runs hypergrad's programs with its own thread
pool on the same cores. Target: hypergrad at least 5x faster per hypergradient (judged on the
median). Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time

# OpenMP's default spin-waiting made torch 15-50x slower at 2 threads than at 1 on this 2-core machine
# while other processes kept it busy (load 7-11); with passive waiting 2 threads ran as fast as 1
# (within the load's noise, at 100 and 400 hidden units).
# Set before torch loads OpenMP; OMP_WAIT_POLICY=ACTIVE in the environment restores the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import hypergrad as hg  # noqa: E402

from _common import fmt, time_interleaved, write_report  # this directory's shared helpers

BATCH = 100
TARGET = 5.0
"""hypergrad at least this many times faster per hypergradient (issue 17, item 3)."""


# -- the shared work ---------------------------------------------------------------------------------
def optimizer(h):
    return optax.sgd(lambda s: h["lr"][s], momentum=h["momentum"])


def epoch_indices(n: int, batch: int, num_steps: int, seed: int) -> np.ndarray:
    """(num_steps, batch) int indices: epochs of a seeded permutation of range(n), cut into batches
    (a batch may straddle two epochs, as the library's sampler does)."""
    rng = np.random.default_rng(seed)
    epochs = -(-num_steps * batch // n)
    stream = np.concatenate([rng.permutation(n) for _ in range(epochs)])
    return stream[:num_steps * batch].reshape(num_steps, batch).astype(np.int32)


def indexed_problem(base: hg.Problem, idx: np.ndarray, key) -> hg.Problem:
    """`base` trained on the minibatches `idx[t]` at step t: the training "examples" are the rows
    of `idx`, one drawn per step (`batch_size=1`), placed so that the epoch sampler's step t reads
    row t (T rows: the T steps are exactly one epoch of the sampler, a permutation)."""
    x, y = (jnp.asarray(a) for a in base.train_data)

    def train_loss(state, hparams, batch):
        rows = batch[0][0]  # the (1, B) gathered row, its B example indices
        return base.train_loss(state, hparams, (x[rows], y[rows]))

    def make(table):
        return hg.Problem(init=base.init, train_loss=train_loss, val_loss=base.val_loss, train_data=(table,),
                          val_data=base.val_data, test_data=base.test_data, batch_size=1,
                          metrics=base.metrics, name=base.name + "-indexed")

    num_steps = idx.shape[0]
    data_key = jax.random.split(key)[1]  # the loop splits key into (init key, data key)
    order = np.asarray(make(idx).batch_indices(data_key, jnp.arange(num_steps)))[:, 0]
    if sorted(order.tolist()) != list(range(num_steps)):
        raise RuntimeError("the sampler's first epoch over the index rows is not a permutation")
    table = np.empty_like(idx)
    table[order] = idx
    return make(table)


@dataclasses.dataclass
class Case:
    """One width and horizon: hypergrad's objective and hyperparameters, torch's copies."""

    width: int
    num_steps: int
    objective: hg.Objective
    hparams: dict
    key: jax.Array
    space: hg.Space
    init: list  # torch: [kernel, bias] per layer, kernels (out, in)
    data: dict  # torch: x_train, y_train, idx, x_val, y_val, x_test, y_test


def build_case(width: int, num_steps: int, dtype, seed: int = 0) -> Case:
    base = hg.problems.mlp_classifier("digits", hidden=(width,), batch_size=BATCH)
    key = jax.random.key(seed)
    idx = epoch_indices(len(np.asarray(base.train_data[1])), BATCH, num_steps, seed)
    objective = hg.Objective(indexed_problem(base, idx, key), optimizer, num_steps=num_steps)
    hparams = {"lr": jnp.full((num_steps,), 0.1, dtype), "momentum": jnp.asarray(0.9, dtype),
               "weight_decay": jnp.asarray(1e-4, dtype)}
    space = hg.Space({"lr": hg.LogUniform(1e-3, 0.3, shape=(num_steps,)), "momentum": hg.Uniform(0.0, 0.9),
                      "weight_decay": hg.LogUniform(1e-6, 1e-2)})
    tdtype = torch.float64 if dtype == jnp.float64 else torch.float32
    state = base.init(jax.random.split(key)[0])  # the loop's initialisation key
    layers: dict = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        layers.setdefault(path[1].key, {})[path[2].key] = torch.tensor(np.asarray(leaf), dtype=tdtype)
    init = [layers[i][name] for i in sorted(layers) for name in ("kernel", "bias")]
    data = {}
    for split in ("train", "val", "test"):
        x, y = getattr(base, f"{split}_data")
        data[f"x_{split}"] = torch.tensor(np.asarray(x), dtype=tdtype)
        data[f"y_{split}"] = torch.tensor(np.asarray(y), dtype=torch.long)
    data["idx"] = torch.tensor(idx, dtype=torch.long)
    return Case(width, num_steps, objective, hparams, key, space, init, data)


# -- the torch side ----------------------------------------------------------------------------------
def forward(params, x):
    layers = len(params) // 2
    for i in range(layers):
        x = F.linear(x, params[2 * i], params[2 * i + 1])
        if i < layers - 1:
            x = torch.tanh(x)
    return x


def train_loss(params, wd, x, y):
    return F.cross_entropy(forward(params, x), y) + 0.5 * wd * sum(w.square().sum() for w in params[0::2])


def scores(params, data) -> dict:
    out = {}
    with torch.no_grad():
        for split in ("val", "test"):
            logits = forward(params, data[f"x_{split}"])
            out[f"{split}_loss"] = F.cross_entropy(logits, data[f"y_{split}"])
            out[f"{split}_accuracy"] = (logits.argmax(-1) == data[f"y_{split}"]).to(logits.dtype).mean()
    return out


def torch_train(case: Case, lr, momentum: float, weight_decay: float) -> dict:
    """A plain torch training loop (`lr`: one float per step) and its scores: the step's gradient by
    `torch.autograd.grad`, then buffer = momentum * buffer + gradient and params -= lr * buffer in
    place under `no_grad` (optax's SGD with momentum; `torch.optim.SGD` computes the same update but
    was slower in a trial here, its per-step bookkeeping costing more than this loop's)."""
    params = [p.clone().requires_grad_() for p in case.init]
    buffers = [torch.zeros_like(p) for p in params]
    d = case.data
    for t in range(case.num_steps):
        rows = d["idx"][t]
        grads = torch.autograd.grad(train_loss(params, weight_decay, d["x_train"][rows], d["y_train"][rows]), params)
        with torch.no_grad():
            for p, b, g in zip(params, buffers, grads):
                b.mul_(momentum).add_(g)
                p.add_(b, alpha=-lr[t])
    return scores(params, d)


def torch_hypergradient(case: Case, lr, momentum, weight_decay):
    """(validation loss, gradient w.r.t. (lr, momentum, weight_decay), scores) by autograd through
    the unrolled loop: every update a differentiable function of the hyperparameters."""
    tdtype = case.init[0].dtype
    h = [torch.tensor(np.asarray(v), dtype=tdtype, requires_grad=True) for v in (lr, momentum, weight_decay)]
    rates = h[0].unbind()
    params = [p.clone().requires_grad_() for p in case.init]
    buffers = [torch.zeros_like(p) for p in params]
    d = case.data
    for t in range(case.num_steps):
        rows = d["idx"][t]
        loss = train_loss(params, h[2], d["x_train"][rows], d["y_train"][rows])
        grads = torch.autograd.grad(loss, params, create_graph=True)
        buffers = [h[1] * b + g for b, g in zip(buffers, grads)]
        params = [p - rates[t] * b for p, b in zip(params, buffers)]
    value = F.cross_entropy(forward(params, d["x_val"]), d["y_val"])
    grads = torch.autograd.grad(value, h)
    return value.detach(), grads, scores(params, d)


def torch_search_sequential(case: Case, settings: list[dict]) -> list[float]:
    """Validation losses of the settings, one torch training run after another."""
    return [float(torch_train(case, s["lr"].tolist(), float(s["momentum"]), float(s["weight_decay"]))["val_loss"])
            for s in settings]


def vmapped_run(case: Case):
    """`(lr (T,), momentum, weight_decay) -> (val_loss, test_loss)`: a functional training loop for
    `torch.func.vmap` (the initial parameters and minibatches are shared by all trials)."""
    d = case.data
    step_grad = torch.func.grad(train_loss)

    def run(lr, momentum, weight_decay):
        params = list(case.init)
        buffers = [torch.zeros_like(p) for p in params]
        for t in range(case.num_steps):
            rows = d["idx"][t]
            grads = step_grad(params, weight_decay, d["x_train"][rows], d["y_train"][rows])
            buffers = [momentum * b + g for b, g in zip(buffers, grads)]
            params = [p - lr[t] * b for p, b in zip(params, buffers)]
        return (F.cross_entropy(forward(params, d["x_val"]), d["y_val"]),
                F.cross_entropy(forward(params, d["x_test"]), d["y_test"]))

    return torch.func.vmap(run)


def torch_search_vmap(case: Case, settings: list[dict]) -> list[float]:
    tdtype = case.init[0].dtype
    stacked = [torch.tensor(np.stack([np.asarray(s[name]) for s in settings]), dtype=tdtype)
               for name in ("lr", "momentum", "weight_decay")]
    with torch.no_grad():
        val, _ = vmapped_run(case)(*stacked)
    return val.tolist()


# -- measuring -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Timed:
    """One side of one row: `fn`, the seconds of its first call and its latest output
    (`time_interleaved` reads `name` and `call`)."""

    name: str
    fn: object
    per: int = 1  # a call counts this many units (trials): times are divided by it
    first: float = float("nan")
    output: object = None
    error: str | None = None

    def call(self):
        start = time.perf_counter()
        self.output = jax.block_until_ready(self.fn())
        if self.first != self.first:  # nan: this was the first call
            self.first = time.perf_counter() - start
        return self.output

    def warm(self) -> None:
        """The first call, untimed by the repeats; an exception is recorded, not raised."""
        try:
            self.call()
        except Exception as err:  # noqa: BLE001 -- torch.func.vmap may not support this loop: reported
            self.error = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"


def sides(case: Case, trials: int) -> dict[str, Timed]:
    """Every call of one case, by name, warmed up but for the sequential torch search (torch
    compiles nothing, and its training loop is warm by then); the searches only when `trials` > 0."""
    h = {k: np.asarray(v) for k, v in case.hparams.items()}
    rates, mom, wd = h["lr"].tolist(), float(h["momentum"]), float(h["weight_decay"])
    out = {
        "hg train": Timed("hg train", lambda: case.objective.evaluate(case.hparams, case.key)),
        "torch train": Timed("torch train", lambda: torch_train(case, rates, mom, wd)),
        "hg hypergradient": Timed("hg hypergradient", lambda: hg.hypergradient(
            case.objective, case.hparams, case.key, method=hg.Reverse())),
        "torch hypergradient": Timed("torch hypergradient", lambda: torch_hypergradient(
            case, h["lr"], h["momentum"], h["weight_decay"])),
    }
    if trials:
        out["hg search"] = Timed("hg search", lambda: hg.random_search(
            case.objective, case.space, case.key, num_trials=trials), per=trials)
        out["hg search"].warm()  # its trials are the settings the torch searches run
        settings = [trial.hparams for trial in out["hg search"].output.trials]
        out["torch sequential"] = Timed("torch sequential", lambda: torch_search_sequential(case, settings), per=trials)
        out["torch vmap"] = Timed("torch vmap", lambda: torch_search_vmap(case, settings), per=trials)
    for name, timed in out.items():
        if timed.output is None and name != "torch sequential":
            timed.warm()
    return out


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def agreement(calls: dict[str, Timed]) -> dict[str, str]:
    """Agreement of each row's two sides (their latest outputs: every call computes the same), as table cells."""
    out = {}
    hg_val = float(calls["hg train"].output["val_loss"])
    out["training"] = f"val loss rel. diff {relative(hg_val, float(calls['torch train'].output['val_loss'])):.1e}"
    _, grads = calls["hg hypergradient"].output
    mine = np.concatenate([np.ravel(np.asarray(grads[k], np.float64)) for k in ("lr", "momentum", "weight_decay")])
    theirs = np.concatenate([np.ravel(g.detach().double().numpy()) for g in calls["torch hypergradient"].output[1]])
    error = np.linalg.norm(mine - theirs) / np.linalg.norm(theirs)
    cosine = float(mine @ theirs / (np.linalg.norm(mine) * np.linalg.norm(theirs)))
    out["hypergradient"] = f"rel. error {error:.1e}, cosine {cosine:.8f}"
    if "hg search" in calls:
        values = np.array([trial.value for trial in calls["hg search"].output.trials], np.float64)
        for name in ("torch sequential", "torch vmap"):
            if calls[name].error is None:
                out[name] = search_agreement(values, np.asarray(calls[name].output, np.float64))
    return out


def search_agreement(mine: np.ndarray, theirs: np.ndarray) -> str:
    finite = np.isfinite(mine) & np.isfinite(theirs)
    if not np.array_equal(np.isfinite(mine), np.isfinite(theirs)):
        return f"MISMATCH: {int(np.sum(np.isfinite(mine) != np.isfinite(theirs)))} trials finite on one side only"
    diff = np.abs(mine[finite] - theirs[finite]) / np.abs(theirs[finite])
    return f"max val loss rel. diff {diff.max():.1e} ({int(finite.sum())}/{len(mine)} finite)"


def measure_case(case: Case, trials: int, repeats: int, search_repeats: int) -> list[dict]:
    """The rows of one case: warm-up, interleaved timing (training and hypergradient rows
    `repeats` times; the search rows, among themselves, `search_repeats` times), agreement."""
    calls = sides(case, trials)
    times = time_interleaved([calls[n] for n in ("hg train", "torch train", "hg hypergradient",
                                                 "torch hypergradient")], repeats, warmup=False)
    if trials:
        searches = [calls[n] for n in ("hg search", "torch sequential", "torch vmap") if calls[n].error is None]
        times.update(time_interleaved(searches, search_repeats, warmup=False))
    agree = agreement(calls)
    pairs = [("training run", "hg train", "torch train", agree["training"]),
             ("hypergradient", "hg hypergradient", "torch hypergradient", agree["hypergradient"])]
    if trials:
        pairs += [(f"search, per trial ({trials} sequential torch runs)", "hg search", "torch sequential",
                   agree.get("torch sequential", "n/a")),
                  (f"search, per trial (torch.func.vmap of {trials})", "hg search", "torch vmap",
                   agree.get("torch vmap", "n/a"))]
    rows = []
    for work, mine, theirs, agreed in pairs:
        row = {"hidden": case.width, "T": case.num_steps, "work": work, "agreement": agreed,
               "first": (calls[mine].first, calls[theirs].first), "error": calls[theirs].error}
        for side, name in (("hg", mine), ("torch", theirs)):
            seconds = [s / calls[name].per for s in times.get(name, [])]
            row[side] = (statistics.median(seconds), min(seconds)) if seconds else (float("nan"),) * 2
        rows.append(row)
    return rows


# -- the report ----------------------------------------------------------------------------------------
HEADER = ["hidden", "T", "work", "hypergrad median (ms)", "hypergrad min (ms)", "torch median (ms)",
          "torch min (ms)", "torch / hypergrad (median)", "torch / hypergrad (min)",
          f"target >= {TARGET:g}x", "first call hypergrad / torch (s)", "agreement"]


def render_row(row: dict) -> str:
    ratio = row["torch"][0] / row["hg"][0]
    target = ""
    if row["work"] == "hypergradient":
        target = "met" if ratio >= TARGET else "missed"
    torch_cells = [fmt(1e3 * row["torch"][0], ".2f"), fmt(1e3 * row["torch"][1], ".2f")]
    if row["error"]:
        torch_cells = ["failed", "failed"]
    cells = [str(row["hidden"]), str(row["T"]), row["work"], fmt(1e3 * row["hg"][0], ".2f"),
             fmt(1e3 * row["hg"][1], ".2f"), *torch_cells, fmt(ratio, ".1f"),
             fmt(row["torch"][1] / row["hg"][1], ".1f"), target,
             f"{row['first'][0]:.1f} / {row['first'][1]:.1f}", row["agreement"]]
    return "| " + " | ".join(cells) + " |"


def render(rows: list[dict], args, seconds: float) -> str:
    dtype = args.dtype
    lines = [f"## PyTorch peer: the same digits MLP training, hypergradient and search ({dtype})", "",
             "| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += [render_row(row) for row in rows]
    hyper = [row for row in rows if row["work"] == "hypergradient"]
    lines += ["", "Per hypergradient, torch / hypergrad (median): " + "; ".join(
        f"hidden {r['hidden']}, T={r['T']}: {r['torch'][0] / r['hg'][0]:.1f}x "
        f"({'met' if r['torch'][0] / r['hg'][0] >= TARGET else 'missed'})" for r in hyper) + "."]
    train = {(r["hidden"], r["T"]): r for r in rows if r["work"] == "training run"}
    lines += ["Hypergradient / training run on each side (medians): " + "; ".join(
        f"hidden {r['hidden']}, T={r['T']}: hypergrad {r['hg'][0] / train[r['hidden'], r['T']]['hg'][0]:.1f}x, "
        f"torch {r['torch'][0] / train[r['hidden'], r['T']]['torch'][0]:.1f}x" for r in hyper) + "."]
    failures = sorted({f"{r['work']}: {r['error']}" for r in rows if r["error"]})
    lines += [f"torch.func.vmap could not run this loop: {f}." for f in failures]
    lines += ["", f"Digits MLP 64-hidden-10 tanh, batch {BATCH}, SGD with momentum 0.9 and per-step rates 0.1, "
              f"weight decay 1e-4 in the loss, {dtype}; search space lr LogUniform(1e-3, 0.3) (one rate "
              "broadcast to every step), momentum Uniform(0, 0.9), weight decay LogUniform(1e-6, 1e-2). Both "
              "sides read the same precomputed minibatch indices and start from the same parameters. "
              f"hypergrad {hg.__version__} on jax {jax.__version__} ({jax.devices()[0].platform}); "
              f"torch {torch.__version__} with {torch.get_num_threads()} threads; {platform.machine()}, "
              f"{os.cpu_count()} cores; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; median and fastest of "
              f"{args.repeats} interleaved repeats after a warm-up call for training and hypergradient rows"
              f"{f' ({args.long_repeats} at T={args.long_steps})' if args.long_steps else ''}, of "
              f"{args.search_repeats} for search rows; arguments `{' '.join(args.argv) or '(defaults)'}`; "
              f"whole benchmark {seconds:.0f} s; load average {os.getloadavg()[0]:.1f} at the end (other "
              "processes share the machine). Times of search rows are per trial; hypergrad's search time is the "
              "whole `hg.random_search` call over the trials (sampling and the trials table included)."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[50, 100, 200, 400], help="hidden units")
    parser.add_argument("--steps", type=int, default=200, help="horizon T of every width")
    parser.add_argument("--trials", type=int, default=64, help="search trials (0 skips the search rows)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (median, min)")
    parser.add_argument("--search-repeats", type=int, default=2, help="timed calls per search row")
    parser.add_argument("--long-width", type=int, default=100, help="the width also run at --long-steps")
    parser.add_argument("--long-steps", type=int, default=2000, help="the long horizon (0 skips it)")
    parser.add_argument("--long-repeats", type=int, default=3, help="timed calls per row at the long horizon")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--smoke", action="store_true", help="hidden 16, T=20, 4 trials, 1 repeat, no long horizon")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.widths, args.steps, args.trials, args.repeats, args.search_repeats, args.long_steps = [16], 20, 4, 1, 1, 0
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    hg.use_compilation_cache()  # HYPERGRAD_COMPILATION_CACHE=0 turns it off
    torch.set_num_threads(os.cpu_count() or 1)
    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    wall = time.perf_counter()
    rows = []
    for width in args.widths:
        rows += measure_case(build_case(width, args.steps, dtype), args.trials, args.repeats, args.search_repeats)
        print(f"measured hidden {width}, T={args.steps} at {time.perf_counter() - wall:.0f}s", file=sys.stderr,
              flush=True)
    if args.long_steps:
        rows += measure_case(build_case(args.long_width, args.long_steps, dtype), 0, args.long_repeats, 0)
    write_report(render(rows, args, time.perf_counter() - wall), args.out)


if __name__ == "__main__":
    main()

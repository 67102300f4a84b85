"""Helpers shared by the test files (importable because pytest puts tests/ on sys.path)."""

import contextlib
import dataclasses
import json
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_iris

import hypergrad as hg
from hypergrad.loop import Loop


def counting(problem):
    """The problem with `train_loss` wrapped in a counter that increments when it is traced."""
    count = {"traces": 0}
    inner = problem.train_loss

    def train_loss(params, hparams, batch):
        count["traces"] += 1  # Python runs only while JAX traces
        return inner(params, hparams, batch)

    return dataclasses.replace(problem, train_loss=train_loss), count


def scaled_ridge(ridge_problem):
    """Ridge whose validation loss reads hyperparameters (`model_reads_hparams=True`): `init_scale`
    scales the initial weights (a fixed vector: the initialisation ignores the key), `out_scale` the
    validation predictions, `weight_decay` the training penalty."""
    (X, y), (Xv, yv) = ridge_problem.train_data, ridge_problem.val_data
    d = X.shape[1]

    def init(key, h):
        return {"w": h["init_scale"] * jnp.linspace(-1.0, 1.0, d, dtype=X.dtype)}

    def train_loss(p, h, batch):
        Xb, yb = batch
        return jnp.mean((Xb @ p["w"] - yb) ** 2) + h["weight_decay"] * jnp.sum(p["w"] ** 2)

    def val_loss(p, h, batch):
        Xb, yb = batch
        return jnp.mean((h["out_scale"] * (Xb @ p["w"]) - yb) ** 2)

    return hg.Problem(init=init, train_loss=train_loss, val_loss=val_loss, train_data=(X, y),
                      val_data=(Xv, yv), model_reads_hparams=True)


def linear_data(dtype, rows):
    """`rows` x 4 standard normal inputs (numpy seed 0) and exact linear targets X @ [1, 2, 3, 4],
    in `dtype`: a tiny least-squares problem's data."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 4)).astype(dtype)
    return X, (X @ np.arange(1, 5, dtype=dtype)).astype(dtype)


def mse(p, batch):
    """Mean squared error of the linear model `p` on `batch` = (X, y)."""
    return jnp.mean((batch[0] @ p - batch[1]) ** 2)


def iris_head(per_class):
    """The first `per_class` iris examples of each class (raw features), in class order."""
    x, y = load_iris(return_X_y=True)
    rows = np.concatenate([np.arange(c * 50, c * 50 + per_class) for c in range(3)])
    return x[rows], y[rows]


@contextlib.contextmanager
def fingerprint_format(version):
    """Inside, studies are fingerprinted in format `version`, as an older hypergrad stored them."""
    token = hg.store._FORMAT.set(version)
    try:
        yield
    finally:
        hg.store._FORMAT.reset(token)


def sgd_schedule(hparams):
    """Plain SGD driven by a per-step learning-rate schedule hparams["lr"][t]."""
    return optax.sgd(lambda step: hparams["lr"][step])


def sgd_scalar_momentum(hparams):
    """SGD with momentum and one scalar learning rate."""
    return optax.sgd(hparams["lr"], momentum=hparams["momentum"])


def stop_gradient_reference(problem, optimizer, num_steps, window):
    """h, key -> (value, d value / d h) of a full-batch training loop written from scratch, from the
    problem's public init, train_loss, val_loss and data and a plain optax loop (nothing of Objective):
    the first T - window steps use stop_gradient(h), and the state entering step T - window is cut
    with stop_gradient; then jax.grad. The key is split into an initialisation key and a data key, as
    documented in hypergrad/objective.py. Truncated(window) must equal it; Reverse, at window >= T."""
    assert problem.batch_size is None, "the reference trains full batch"
    head = max(num_steps - window, 0)

    def loss(h, key):
        params = problem.init(jax.random.split(key)[0])
        opt_state = optimizer(h).init(params)
        for t in range(num_steps):
            if t == head:
                params, opt_state = jax.lax.stop_gradient((params, opt_state))
            h_t = h if t >= head else jax.lax.stop_gradient(h)
            grads = jax.grad(problem.train_loss)(params, h_t, problem.train_data)
            updates, opt_state = optimizer(h_t).update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return problem.val_loss(params, problem.val_data)

    return jax.jit(jax.value_and_grad(loss))


# The small population problem of tests/test_population.py and tests/test_outer.py: T steps of SGD
# (momentum 0.5) on a logistic minibatch problem, its rate and weight decay tuned.
POPULATION_T = 6
POPULATION_SPACE = hg.Space({"lr": hg.LogUniform(1e-2, 2.0), "weight_decay": hg.LogUniform(1e-4, 1.0)})


def sgd_half_momentum(hparams):
    """SGD with momentum 0.5 and one scalar learning rate hparams["lr"]."""
    return optax.sgd(hparams["lr"], momentum=0.5)


def population_objective(problem):
    """`problem` trained by `sgd_half_momentum` for `POPULATION_T` steps (each test module builds its
    own, so that its compilation counts start from its own programs)."""
    return hg.Objective(problem, sgd_half_momentum, num_steps=POPULATION_T)


def population_starts(n, seed=0):
    """n distinct starting points strictly inside `POPULATION_SPACE`."""
    rng = np.random.default_rng(seed)
    return {"lr": jnp.asarray(rng.uniform(0.05, 1.0, n)), "weight_decay": jnp.asarray(rng.uniform(1e-3, 0.3, n))}


def by_tuner(result):
    """{tuner id: its trials in order} of a tune result."""
    out = {}
    for t in result.trials:
        out.setdefault(t.tuner, []).append(t)
    return out


EXPERIMENTS = pathlib.Path(__file__).parent.parent.joinpath("experiments")


def import_experiment(name):
    """The module experiments/<name>.py (experiments import each other by name, as scripts run there)."""
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(EXPERIMENTS))


class Stop(Exception):
    """What `stop_after`'s callback raises: an interruption right after a commit."""


def stop_after(reports):
    """A progress callback raising `Stop` on its `reports`-th call (after that commit)."""
    calls = []

    def progress(line):
        calls.append(line)
        if len(calls) == reports:
            raise Stop

    progress.calls = calls
    return progress


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _ProjectedLoop(Loop):
    """Each step projects the weights onto the ball of radius 0.5: training ends on the sphere, where
    the training loss's gradient is not 0; a step that Implicit cannot vouch for and Reversible cannot
    reverse (the refusal tests match this class's name)."""

    def update(self, state, hparams, minibatch):
        state = super().update(state, hparams, minibatch)
        w = state.params["w"]
        return state._replace(params={"w": w * jnp.minimum(1.0, 0.5 / jnp.linalg.norm(w))})


@jax.tree_util.register_pytree_node_class
class Node:
    """A pytree node without a __dict__ (so a fingerprint describes it as a node) with one child and
    auxiliary data."""

    __slots__ = ("value", "aux")

    def __init__(self, value, aux):
        self.value, self.aux = value, aux

    def tree_flatten(self):
        return (self.value,), self.aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], aux)


def objective_scaled_by(problem, holder, attribute):
    """A ridge objective whose train loss closes over `holder` and is scaled by its `attribute`: two
    holders the fingerprint should tell apart make two calls."""

    def train_loss(params, hparams, batch):
        x, y = batch
        scale = getattr(holder, attribute)
        return scale * jnp.mean((x @ params["w"] - y) ** 2) + hparams["weight_decay"] * jnp.sum(params["w"] ** 2)

    return hg.Objective(dataclasses.replace(problem, train_loss=train_loss), lambda h: optax.sgd(h["lr"]), num_steps=3)


def free_port() -> int:
    """A free TCP port on loopback (for a `jax.distributed` coordinator)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The start of a worker of `two_workers`: one CPU device, gloo, process `process` of 2 on `port`.
WORKER_START = r'''
import json, os, sys
import jax
jax.config.update("jax_num_cpu_devices", 1)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
process, port, tmp = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process,
                           initialization_timeout=60)
import optax
import hypergrad as hg
'''


def two_workers(tmp_path, source: str, name: str) -> list[dict]:
    """Runs `source` as two processes of one `jax.distributed` run on loopback (argv: process id, port,
    folder), each writing `{name}{process}.json`; killed whatever happens, every wait bounded."""
    worker = tmp_path / "worker.py"
    worker.write_text(source)
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(worker), str(i), port, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    try:
        for proc in procs:
            output, _ = proc.communicate(timeout=90)
            assert proc.returncode == 0, output[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [json.loads((tmp_path / f"{name}{i}.json").read_text()) for i in (0, 1)]


TINY_FINETUNE_SHAPES = (4, 5, 3)  # inputs, hidden units, classes of `tiny_finetune`


def tiny_finetune(first: str, second: str):
    """(pretrained, apply, task) of a 4-5-3 tanh network whose layers are named `first` (input) and
    `second` (output), for `hg.problems.finetune`: seeded weights, and a 3-class task of 30, 15 and
    15 examples (train, val, test)."""
    d, h, c = TINY_FINETUNE_SHAPES
    rng = np.random.default_rng(0)
    pretrained = {first: {"w": rng.normal(size=(d, h)), "b": np.zeros(h)},
                  second: {"w": rng.normal(size=(h, c)), "b": np.zeros(c)}}

    def apply(p, x):
        return jnp.tanh(x @ p[first]["w"] + p[first]["b"]) @ p[second]["w"] + p[second]["b"]

    rng = np.random.default_rng(1)
    splits = []
    for n in (30, 15, 15):
        x = rng.normal(size=(n, d))
        splits.append((x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)))
    return pretrained, apply, tuple(splits)

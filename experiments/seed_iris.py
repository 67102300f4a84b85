"""The classic study, head to head: scikit-learn's RandomizedSearchCV(MLPClassifier) against hypergrad.

The study: iris, a held-out stratified 20% test split, 5-fold stratified cross-validation on the
rest, and the space

    hidden_layer_sizes  {(50,), (100,), (200,)}     structural: masked or grouped by measured cost
    activation          {tanh, relu}                structural: masked or grouped by measured cost
    solver              {sgd, adam}                 structural: masked or grouped by measured cost
    alpha               {1e-4, 1e-3, 1e-2}          numeric: a traced value
    learning_rate       {constant, adaptive}        structural: masked or grouped by measured cost

72 settings x 5 folds = 360 fits (scikit-learn's n_iter=100 exceeds the 72 settings, so both sides
evaluate all of them). Then the hybrid strategy at the same compute: widths, activations and
solvers searched, the L2 penalty and the initial learning rate descended by reverse-mode
hypergradients.

How each scikit-learn option is matched (closest equivalents are marked):
- network: one hidden layer, softmax output, log-loss; weights and biases initialised Glorot-uniform
  (bound sqrt(6 / (fan_in + fan_out))) as scikit-learn does for tanh and relu;
- alpha: scikit-learn adds alpha / (2 n) * sum(W^2) over the weight matrices (not biases) for a
  batch of n; here the same penalty with n = the fold's training size (full batch);
- batch: scikit-learn's batch_size=min(200, n) is the full fold (96 examples): one step per epoch;
  max_iter=200 epochs = 200 full-batch steps;
- sgd: learning_rate_init 1e-3, momentum 0.9, Nesterov; adam: 1e-3, betas 0.9/0.999, eps 1e-8;
- learning_rate="adaptive" (sgd only): the step size is divided by 5 whenever the training loss has
  not improved by tol=1e-4 for n_iter_no_change=10 consecutive epochs (down to 1e-6), as
  scikit-learn does; for adam it has no effect, as in scikit-learn;
- closest equivalent: scikit-learn stops a fit early once the loss stalls for 10 epochs (tol 1e-4);
  here every fit runs its 200 steps (a stalled loss barely moves, so the fitted model is close);
- folds: scikit-learn's StratifiedKFold (no shuffle) against hypergrad's seeded stratified folds
  of equal size (hg.Problem(cv=5)); the best setting is refit on all training data and scored on
  the test split by both.

    python experiments/seed_iris.py            # the full study (about a minute on 2 cores)
    python experiments/seed_iris.py --smoke    # seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hypergrad as hg
from hypergrad.problems._losses import accuracy, cross_entropy
from hypergrad.problems.mlp import affine
from hypergrad.structure import Masked, select_transform

HIDDEN = [(50,), (100,), (200,)]
ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}
SKLEARN_SPACE = {"hidden_layer_sizes": HIDDEN, "activation": ["tanh", "relu"], "solver": ["sgd", "adam"],
                 "alpha": [1e-4, 1e-3, 1e-2], "learning_rate": ["constant", "adaptive"]}


class Data(NamedTuple):
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def use_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` JAX devices, so searches shard their trials over the cores (must
    run before JAX computes anything): `hg.use_cpu_cores`."""
    hg.use_cpu_cores(max(1, count))


def load(seed: int = 0) -> Data:
    """Iris, a stratified 80/20 split (scikit-learn's train_test_split), standardised on the train part."""
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(x_train)
    return Data((scaler.transform(x_train), y_train), (scaler.transform(x_test), y_test))


# -- scikit-learn ---------------------------------------------------------------------------------
def run_sklearn(data: Data, *, max_iter: int, folds: int, n_iter: int, seed: int = 0) -> dict[str, Any]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import RandomizedSearchCV
    from sklearn.neural_network import MLPClassifier

    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # "n_iter is larger than the grid": all settings run
        search = RandomizedSearchCV(MLPClassifier(max_iter=max_iter, random_state=seed), SKLEARN_SPACE,
                                    n_iter=n_iter, cv=folds, n_jobs=2, random_state=seed).fit(*data.train)
    wall = time.perf_counter() - began
    best = search.best_index_
    return {"strategy": "scikit-learn RandomizedSearchCV", "wall_s": wall, "fits": len(search.cv_results_["params"]) * folds,
            "cv_accuracy": float(search.best_score_), "cv_std": float(search.cv_results_["std_test_score"][best]),
            "test_accuracy": float(search.score(*data.test)), "best": search.best_params_}


# -- hypergrad ------------------------------------------------------------------------------------
WIDEST = max(h[0] for h in HIDDEN)


def unit_uniform(key, fan_in: int, fan_out: int, dtype):
    """Uniform(-1, 1) weights and biases of a dense layer; times sqrt(6 / (fan_in + fan_out)) this
    is scikit-learn's Glorot-uniform initialisation."""
    kw, kb = jax.random.split(key)
    return (jax.random.uniform(kw, (fan_in, fan_out), dtype, -1.0, 1.0),
            jax.random.uniform(kb, (fan_out,), dtype, -1.0, 1.0))


class AdaptiveState(NamedTuple):
    best: jax.Array      # the lowest training loss so far
    stalled: jax.Array   # consecutive steps without an improvement of tol on it
    scale: jax.Array     # the current learning-rate factor


def sklearn_adaptive(tol: float = 1e-4, patience: int = 10, factor: float = 0.2, min_lr_ratio: float = 1e-3
                     ) -> optax.GradientTransformationExtraArgs:
    """Scales updates as scikit-learn's learning_rate="adaptive": divided by 5 once the loss has
    not improved on its best by `tol` for more than `patience` consecutive steps (the count then
    restarts), never below 1e-6 / 1e-3 = `min_lr_ratio` of the initial rate. Reads `value=loss`."""

    def init(params):
        del params
        return AdaptiveState(jnp.asarray(jnp.inf), jnp.asarray(0, jnp.int32), jnp.asarray(1.0))

    def update(updates, state, params=None, *, value, **extra):
        del params, extra
        stalled = jnp.where(value > state.best - tol, state.stalled + 1, 0)
        reduce = stalled > patience
        scale = jnp.where(reduce, jnp.maximum(state.scale * factor, min_lr_ratio), state.scale)
        new = AdaptiveState(jnp.minimum(state.best, value), jnp.where(reduce, 0, stalled), scale)
        return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates), new

    return optax.GradientTransformationExtraArgs(init, update)


def solvers(lr) -> dict[str, optax.GradientTransformation]:
    return {"sgd": optax.sgd(lr, momentum=0.9, nesterov=True), "adam": optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)}


def study_family(data: Data, *, num_steps: int, folds: int | None, mask: Any = "auto") -> hg.Structured:
    """The scikit-learn study as an hg.Structured family: width, activation, solver and
    learning-rate kind all maskable (the search decides per choice by measured cost)."""
    x, y = (np.asarray(a) for a in data.train)
    dtype = jnp.zeros(()).dtype
    x = x.astype(dtype)
    y = y.astype(np.int32)
    test = (np.asarray(data.test[0], dtype), np.asarray(data.test[1], np.int32))
    if folds is None:  # refit on all training data (the test split is then also the "validation")
        splits = {"train_data": (x, y), "val_data": test}
        fold_train = len(y)
    else:
        cut = len(y) - len(y) // folds
        splits = {"train_data": (x[:cut], y[:cut]), "val_data": (x[cut:], y[cut:]), "cv": folds, "cv_labels": y}
        fold_train = len(y) - len(y) // folds

    def build(config):
        sizes = config["hidden_layer_sizes"]

        def init(key, hparams):
            # Draw at the widest option and keep the first `width` units, so a grouped width-w
            # network and a masked one start from the same numbers. Glorot-uniform bounds depend
            # on the width; masked units get zero weights and biases, so their pre-activations,
            # activations (tanh(0) = relu(0) = 0) and gradients stay exactly zero all along.
            k1, k2 = jax.random.split(key)
            (u1, c1), (u2, c2) = unit_uniform(k1, x.shape[1], WIDEST, dtype), unit_uniform(k2, WIDEST, 3, dtype)
            if isinstance(sizes, Masked):
                width = jnp.asarray([s[0] for s in sizes.options])[hparams["hidden_layer_sizes"]].astype(dtype)
                keep = (jnp.arange(WIDEST) < width).astype(dtype)
            else:
                width = sizes[0]
                u1, c1, u2 = u1[:, :width], c1[:width], u2[:width]
                keep = 1.0
            bound1, bound2 = jnp.sqrt(6.0 / (x.shape[1] + width)), jnp.sqrt(6.0 / (width + 3))
            # Stored (out, in) and applied to feature-major activations (hypergrad's
            # FeatureMajorDense layout): under vmap over trials every product is then a GEMM or
            # a leading-batch product with no transposes.
            return {"w1": (u1 * bound1 * keep).T, "b1": c1 * bound1 * keep,
                    "w2": (u2 * bound2 * jnp.reshape(keep, (-1, 1))).T, "b2": c2 * bound2}

        def activate(h, hparams):
            choice = config["activation"]
            if isinstance(choice, Masked):
                return jax.lax.switch(hparams["activation"], [ACTIVATIONS[o] for o in choice.options], h)
            return ACTIVATIONS[choice](h)

        def logits(params, hparams, inputs):
            # (classes, batch) logits from (features, batch) activations
            hidden = activate(affine(params["w1"], params["b1"], inputs.T), hparams)
            return affine(params["w2"], params["b2"], hidden)

        def train_loss(params, hparams, batch):
            inputs, labels = batch
            penalty = jnp.sum(params["w1"] ** 2) + jnp.sum(params["w2"] ** 2)
            return cross_entropy(logits(params, hparams, inputs), labels, axis=0) + 0.5 * hparams["alpha"] / fold_train * penalty

        def val_loss(params, hparams, batch):
            return cross_entropy(logits(params, hparams, batch[0]), batch[1], axis=0)

        def val_accuracy(params, hparams, batch):
            return accuracy(logits(params, hparams, batch[0]), batch[1], axis=0)

        def optimizer(hparams):
            lr = hparams.get("learning_rate_init", 1e-3)
            solver = config["solver"]
            by_solver = solvers(lr)
            sgd_kinds = {"constant": by_solver["sgd"], "adaptive": optax.chain(by_solver["sgd"], sklearn_adaptive())}
            kind = config["learning_rate"]
            if isinstance(kind, Masked):
                sgd = select_transform(hparams["learning_rate"], [sgd_kinds[o] for o in kind.options])
            else:
                sgd = sgd_kinds[kind]
            options = {"sgd": sgd, "adam": by_solver["adam"]}  # adam ignores the kind, as in scikit-learn
            if isinstance(solver, Masked):
                return select_transform(hparams["solver"], [options[o] for o in solver.options])
            return options[solver]

        problem = hg.Problem(init=init, train_loss=train_loss, val_loss=val_loss, test_data=test, batch_size=None,
                             metrics={"accuracy": val_accuracy}, model_reads_hparams=True, name="iris-sklearn",
                             **splits)
        return hg.Objective(problem, optimizer, num_steps=num_steps)

    return hg.Structured(build, maskable=("hidden_layer_sizes", "activation", "solver", "learning_rate"), mask=mask)


def sklearn_space() -> hg.Space:
    return hg.Space({
        "hidden_layer_sizes": hg.Choice(HIDDEN), "activation": hg.Choice(["tanh", "relu"]),
        "solver": hg.Choice(["sgd", "adam"]), "alpha": hg.Choice([1e-4, 1e-3, 1e-2]),
        "learning_rate": hg.Choice(["constant", "adaptive"]),
    })


def hybrid_space() -> hg.Space:
    return hg.Space({
        "hidden_layer_sizes": hg.Choice(HIDDEN), "activation": hg.Choice(["tanh", "relu"]),
        "solver": hg.Choice(["sgd", "adam"]), "learning_rate": hg.Choice(["constant"]),
        "alpha": hg.LogUniform(1e-5, 1e-1), "learning_rate_init": hg.LogUniform(1e-4, 1e-1),
    })


def refit_test_accuracy(data: Data, hparams: dict, *, num_steps: int, key) -> float:
    """Trains the chosen setting on all training data and scores the test split (as scikit-learn's refit)."""
    family = study_family(data, num_steps=num_steps, folds=None, mask=False)
    space = hg.Space({n: d for n, d in hybrid_space().items if n in hparams} | {
        n: d for n, d in sklearn_space().items if n in hparams})
    objective, rest = family.split(space, hparams)
    return float(objective.evaluate(rest, key)["test_accuracy"])


def run_hypergrad_search(data: Data, *, num_steps: int, folds: int, key) -> dict[str, Any]:
    began = time.perf_counter()
    family = study_family(data, num_steps=num_steps, folds=folds)
    result = hg.grid_search(family, sklearn_space(), key, points_per_axis=1)
    cv = result.cv_results()
    best = int(np.argmin(cv["rank_test_score"]))
    hparams = result.trials[best].hparams
    refit_began = time.perf_counter()
    test = refit_test_accuracy(data, hparams, num_steps=num_steps, key=key)
    wall = time.perf_counter() - began
    return {"strategy": "hypergrad grid_search (vmapped)", "wall_s": wall, "fits": len(result.trials) * folds,
            "cv_accuracy": float(cv["mean_test_score"][best]), "cv_std": float(cv["std_test_score"][best]),
            "test_accuracy": test, "best": _readable(hparams), "result": result,
            "refit_s": time.perf_counter() - refit_began}


def run_hybrid(data: Data, *, num_steps: int, folds: int, budget: float, configs: Any, key) -> dict[str, Any]:
    began = time.perf_counter()
    family = study_family(data, num_steps=num_steps, folds=folds)
    result = hg.hybrid_search(family, hybrid_space(), key, budget=budget, configs=configs,
                              outer=optax.adam(0.3))
    cv = result.cv_results()
    best = int(np.argmin(cv["rank_test_score"]))
    hparams = result.trials[best].hparams
    test = refit_test_accuracy(data, hparams, num_steps=num_steps, key=key)
    wall = time.perf_counter() - began
    return {"strategy": f"hypergrad hybrid ({result.info['configs']} configs x {result.info['steps']} steps)",
            "wall_s": wall, "fits": round(result.runs * folds), "cv_accuracy": float(cv["mean_test_score"][best]),
            "cv_std": float(cv["std_test_score"][best]), "test_accuracy": test, "best": _readable(hparams),
            "result": result}


def _readable(hparams: dict) -> dict:
    return {k: (v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v) for k, v in hparams.items()}


def table(rows: list[dict]) -> str:
    lines = ["| strategy | wall s (compile incl.) | fits | best mean CV accuracy | CV std | test accuracy (refit) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['strategy']} | {r['wall_s']:.2f} | {r['fits']} | {r['cv_accuracy']:.4f} | "
                     f"{r['cv_std']:.4f} | {r['test_accuracy']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run for CI")
    parser.add_argument("--out", default="results/seed_iris", help="directory for the report and trials")
    parser.add_argument("--cpu-devices", type=int, default=os.cpu_count() or 1,
                        help="CPU devices to shard the search's trials over (scikit-learn runs n_jobs=2)")
    args = parser.parse_args(argv)
    use_cpu_devices(args.cpu_devices)
    steps, folds, n_iter = (20, 2, 4) if args.smoke else (200, 5, 100)
    data = load()
    key = jax.random.key(0)
    rows = [run_sklearn(data, max_iter=steps, folds=folds, n_iter=n_iter)]
    rows.append(run_hypergrad_search(data, num_steps=steps, folds=folds, key=key))
    budget = rows[-1]["result"].runs
    rows.append(run_hybrid(data, num_steps=steps, folds=folds, budget=budget, configs=2 if args.smoke else 4, key=key))
    report = table(rows)
    print(report)
    for r in rows:
        print(f"{r['strategy']}: best {r['best']}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(report + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "result"} | {"trials": r["result"].to_dict()["trials"]}
                   if "result" in r else r for r in rows], f, indent=1, default=str)
    return rows


if __name__ == "__main__":
    main()

"""Online learning-rate adaptation by hypergradient descent (Baydin, Cornish, Martinez Rubio, Schmidt &
Wood 2018, "Online learning rate adaptation with hypergradient descent"), reproduced on digits.

Set-up. The digits MLP (`hg.problems.mlp_classifier("digits", hidden=(50,), batch_size=100)`: 1,078
training examples, 64 -> 50 tanh -> 10), T = 500 minibatch steps (about 46 epochs). Two families, each
run from 9 initial learning rates spread evenly in log over four orders of magnitude:

- SGD: `optax.sgd(lr)` (fixed) against SGD-HD, `hg.online.sgd_hd(lr, hyper_lr=1e-3)`, lr in [1e-4, 1];
- Adam: `optax.adam(lr)` (fixed) against Adam-HD, lr in [1e-5, 1e-1], hyper_lr 1e-7. `hg.online` offers
  SGD-HD only, so Adam-HD is written here as a small optax transform (`adam_hd`, the paper's
  Algorithm: alpha_t = alpha_{t-1} + beta g_t . u_{t-1}, u the previous Adam direction).

The hyper learning rates are the paper's (1e-3 for SGD-HD, 1e-7 for Adam-HD), fixed before looking,
not tuned here. Every (family, variant, initial rate) is trained with 3 training keys (initialisation
and minibatch order: keys 0, 1, 2) through `hg.grid_search` over the initial rate; the score is the
validation loss after T steps, averaged over the keys. A run that diverges (non-finite loss) counts as
ln 10 = 2.303, the loss of a uniform guess.

Verdict rules (fixed in this file before the first full run). "Good" initial rate: mean final
validation loss within 10% of the tuned fixed rate's (the best of the fixed grid of the same family).
- sensitivity: per family, HD has at least twice as many good initial rates as the fixed optimiser and
  at least two more; held if both families, partly if one, not held if neither. This tests whether HD
  reaches the tuned loss from many starts, stronger than the paper's "less sensitive"; since a review
  (claims hunt, session 38; rule and verdict unchanged) the claim says so, names a best fixed rate at
  its grid's edge, and gives spread figures beside the counts as context;
- too small a rate: from the smallest initial rate (1e-4 SGD, 1e-5 Adam), held if HD ends within 10% of
  the tuned fixed rate's loss in both families; partly if, in at least one family, it closes at least
  half of the gap between the fixed optimiser at that rate and the tuned fixed rate; not held otherwise.

Equal compute: HD spends one training run per initial rate; the tuned fixed rate spent the whole grid
(9 runs per key). Random search over the rate with one run is one draw of the fixed column: its
expected loss is the column's mean over the (log-uniform) initial rates, reported beside HD's mean.

    python experiments/online_lr.py            # full (a minute or two on 2 cores)
    python experiments/online_lr.py --smoke    # seconds, for CI

Writes `--out/online_lr.md`, `online_lr.json` (the claims) and `online_lr.png`. Each (family, variant,
training key)'s grid is kept in `--out/online_lr.partial.json` as it is measured (`_progress`), so an
interrupted run keeps them; a rerun into the same `--out` with the same mode and environment reads them
back instead of measuring them again.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hypergrad as hg

import _claims
import _progress

NAME = "online_lr"
PAPER = "Baydin et al. 2018"
CHANCE = math.log(10.0)  # the loss of a uniform guess over 10 classes: what a diverged run counts as
GOOD = 1.10              # within 10% of the tuned fixed rate's loss
RANGES = {"SGD": (1e-4, 1.0), "Adam": (1e-5, 1e-1)}
HYPER_LR = {"SGD": 1e-3, "Adam": 1e-7}  # the paper's beta for SGD-HD and Adam-HD


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple
    steps: int
    points: int
    keys: tuple


FULL = Config(hidden=(50,), steps=500, points=9, keys=(0, 1, 2))
SMOKE = Config(hidden=(8,), steps=10, points=3, keys=(0,))


class AdamHDState(NamedTuple):
    learning_rate: jax.Array
    direction: Any        # u_{t-1}: the previous Adam direction m_hat / (sqrt(v_hat) + eps), zeros at first
    adam: Any


def adam_hd(learning_rate: Any, hyper_lr: float, b1: float = 0.9, b2: float = 0.999,
            eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam-HD (Baydin et al. 2018, Algorithm 'Adam-HD'): Adam whose rate takes a hypergradient step per
    step. d f(theta_{t-1}) / d alpha = -g_t . u_{t-1}, so alpha_t = alpha_{t-1} + beta g_t . u_{t-1},
    then theta_t = theta_{t-1} - alpha_t u_t."""
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def init(params):
        alpha = jnp.asarray(learning_rate, jnp.result_type(float))
        return AdamHDState(alpha, jax.tree.map(jnp.zeros_like, params), adam.init(params))

    def update(grads, state, params=None):
        alpha = state.learning_rate + hyper_lr * optax.tree_utils.tree_vdot(grads, state.direction)
        direction, inner = adam.update(grads, state.adam, params)
        updates = jax.tree.map(lambda u: -alpha * u, direction)
        return updates, AdamHDState(alpha.astype(state.learning_rate.dtype), direction, inner)

    return optax.GradientTransformation(init, update)


OPTIMISERS = {
    ("SGD", "fixed"): lambda h: optax.sgd(h["lr"]),
    ("SGD", "HD"): lambda h: hg.online.sgd_hd(h["lr"], HYPER_LR["SGD"]),
    ("Adam", "fixed"): lambda h: optax.adam(h["lr"]),
    ("Adam", "HD"): lambda h: adam_hd(h["lr"], HYPER_LR["Adam"]),
}


def run(cfg: Config, unit=lambda key, measure: measure()) -> dict:
    """Every (family, variant) over the initial rates, each training key's grid measured through
    `unit(key, measure)` (`_progress.Progress.unit`: kept as it is measured, with its own seconds, so that
    a (family, variant)'s seconds are its grids' also when some were read back from an interrupted run)."""
    problem = hg.problems.mlp_classifier("digits", hidden=cfg.hidden, batch_size=100)
    curves, runs, seconds = {}, {}, {}
    for (family, variant), optimiser in OPTIMISERS.items():
        objective = hg.Objective(problem, optimiser, cfg.steps)
        space = hg.Space({"lr": hg.LogUniform(*RANGES[family])})
        losses, spent, took = [], 0.0, 0.0

        def grid(seed, objective=objective, space=space):
            began = time.perf_counter()  # timed inside the unit: a resumed grid keeps its earlier run's seconds
            result = hg.grid_search(objective, space, jax.random.key(seed), points_per_axis=cfg.points)
            rates = np.array([float(t.hparams["lr"]) for t in result.trials])
            values = np.array([t.value for t in result.trials], float)
            return rates, np.where(np.isfinite(values), values, CHANCE), result.runs, time.perf_counter() - began

        for seed in cfg.keys:
            rates, loss, grid_runs, grid_seconds = unit(f"{family} {variant}, key {seed}", lambda: grid(seed))
            losses.append(loss)
            spent += grid_runs
            took += grid_seconds
        curves[family, variant] = (rates, np.array(losses))  # (rates,), (keys, rates)
        runs[family, variant], seconds[family, variant] = spent, took
    return {"problem": problem, "curves": curves, "runs": runs, "seconds": seconds}


def summarise(out: dict) -> dict:
    facts = {}
    for family in RANGES:
        rates, fixed = out["curves"][family, "fixed"]
        _, hd = out["curves"][family, "HD"]
        fixed_mean, hd_mean = fixed.mean(0), hd.mean(0)
        best = int(np.argmin(fixed_mean))
        tuned = float(fixed_mean[best])
        facts[family] = {
            "rates": rates.tolist(), "fixed": fixed_mean.tolist(), "hd": hd_mean.tolist(),
            "tuned_rate": float(rates[best]), "tuned_loss": tuned,
            "good_fixed": int(np.sum(fixed_mean <= GOOD * tuned)), "good_hd": int(np.sum(hd_mean <= GOOD * tuned)),
            "small_fixed": float(fixed_mean[0]), "small_hd": float(hd_mean[0]),
            "mean_fixed": float(fixed_mean.mean()), "mean_hd": float(hd_mean.mean()),
            "best_hd": float(hd_mean.min()),
        }
    return facts


def sensitivity(facts: dict) -> str:
    """Spread figures beside the rule's counts (context, not the rule): per family, the ratio of the largest to
    the smallest final loss over the initial rates with HD and fixed, and how many end within 50% of the tuned
    fixed rate's loss (added on review, claims hunt session 38)."""
    return "; ".join(
        f"{f} spread (largest / smallest final loss) x{max(x['hd']) / min(x['hd']):.2f} with HD, "
        f"x{max(x['fixed']) / min(x['fixed']):.1f} fixed; within 50%: {sum(h <= 1.5 * x['tuned_loss'] for h in x['hd'])}"
        f" with HD, {sum(v <= 1.5 * x['tuned_loss'] for v in x['fixed'])} fixed" for f, x in facts.items())


def what_the_rule_tests(facts: dict) -> str:
    """What claim 1's rule tests, said on the page (on review, claims hunt session 38; the rule and verdict are
    unchanged): reaching the best fixed rate's loss, which is stronger than being less sensitive, and where the
    best fixed rate is the grid's edge, so not known to be the optimum."""
    edges = [f"{f} (lr {x['tuned_rate']:.3g}, the {'largest' if x['tuned_rate'] == max(x['rates']) else 'smallest'} "
             "rate of its grid)" for f, x in facts.items() if x["tuned_rate"] in (max(x["rates"]), min(x["rates"]))]
    return ("What the rule tests: an initial rate counts only if HD ends within 10% of the best fixed rate's loss, "
            "i.e. whether HD reaches the tuned loss from many starts, a stronger test than the paper's 'less "
            "sensitive'; the spread figures in 'ours' are context, not the rule."
            + (f" The best fixed rate is at the grid's edge for {', '.join(edges)}, so it is not known to be the "
               "optimum and the 10% band hangs on a boundary value." if edges else ""))


def verdicts(facts: dict) -> list[_claims.Claim]:
    """The rules, fixed before the first full run (see the module docstring)."""
    less_sensitive = {f: x["good_hd"] >= 2 * x["good_fixed"] and x["good_hd"] >= x["good_fixed"] + 2
                      for f, x in facts.items()}
    n = sum(less_sensitive.values())
    v1 = "held" if n == len(facts) else "partly" if n else "not held"
    ours1 = "; ".join(f"{f}: {x['good_hd']} of {len(x['rates'])} initial rates within 10% of the tuned fixed rate's "
                      f"loss with HD, {x['good_fixed']} fixed" for f, x in facts.items()) + "; " + sensitivity(facts)
    spread = "; ".join(f"{f} final losses span {min(x['hd']):.3f}-{max(x['hd']):.3f} with HD against "
                       f"{min(x['fixed']):.3f}-{max(x['fixed']):.3f} fixed" for f, x in facts.items())
    why1 = ("rule: HD has at least twice as many good initial rates as the fixed optimiser, and two more; "
            + ", ".join(f"{f} {'meets' if ok else 'misses'} it" for f, ok in less_sensitive.items()) + ". "
            + spread + (": where the rule fails, HD's losses are flatter over the initial rates but settle above "
                        "the 10% band around the tuned fixed rate's loss; likely reason (not measured here): the adapted "
                        "rate has not grown to the best fixed rate within T steps at the paper's hyper learning rate." if not all(less_sensitive.values()) else "."))
    c1 = _claims.Claim(PAPER, "Hypergradient descent makes SGD and Adam much less sensitive to the initial "
                       "learning rate.", ours1, v1, why1 + " " + what_the_rule_tests(facts))

    close = {f: x["small_hd"] <= GOOD * x["tuned_loss"] for f, x in facts.items()}
    closure = {f: (x["small_fixed"] - x["small_hd"]) / (x["small_fixed"] - x["tuned_loss"])
               if x["small_fixed"] > x["tuned_loss"] else float("nan") for f, x in facts.items()}
    if all(close.values()):
        v2, why2 = "held", "from the smallest rate HD ends within 10% of the tuned fixed rate's loss in both families."
    elif any(c >= 0.5 for c in closure.values()):
        v2, why2 = "partly", ("HD closes at least half of the gap from the smallest rate in "
                              + ", ".join(f for f, c in closure.items() if c >= 0.5)
                              + " but does not end within 10% of the tuned fixed rate in both families.")
    else:
        v2, why2 = "not held", "HD closes less than half of the gap from the smallest rate in every family."
    ours2 = "; ".join(f"{f} from lr {x['rates'][0]:.0e}: HD {x['small_hd']:.3f}, fixed {x['small_fixed']:.3f}, "
                      f"tuned fixed (lr {x['tuned_rate']:.2g}) {x['tuned_loss']:.3f} ({closure[f]:.0%} of the gap "
                      "closed)" for f, x in facts.items())
    c2 = _claims.Claim(PAPER, "Started from too small a learning rate, SGD-HD and Adam-HD reach close to the "
                       "tuned fixed rate's loss.", ours2, v2, why2)
    return [c1, c2]


def plot(out_dir: str, out: dict) -> list[str]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: skipping the figure (pip install 'hypergrad[plots]')")
        return []
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(RANGES), sharey=True)
    for ax, family in zip(axes, RANGES):
        tuned = None
        for variant, colour in (("fixed", "tab:red"), ("HD", "tab:blue")):
            rates, losses = out["curves"][family, variant]
            mean = losses.mean(0)
            label = f"{family} fixed rate" if variant == "fixed" else f"{family}-HD (initial rate)"
            ax.plot(rates, mean, "o-", color=colour, label=label)
            ax.fill_between(rates, losses.min(0), losses.max(0), color=colour, alpha=0.15)
            if variant == "fixed":
                tuned = mean.min()
        ax.axhline(tuned, color="0.4", linestyle="--", linewidth=1, label="tuned fixed rate")
        ax.axhline(GOOD * tuned, color="0.6", linestyle=":", linewidth=1, label="+10%")
        ax.axhline(CHANCE, color="0.8", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel("initial learning rate")
        ax.set_title(f"{family}: final validation loss (mean, min-max over keys)", fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("validation loss after T steps (diverged = ln 10)")
    path = os.path.join(out_dir, f"{NAME}.png")
    fig.savefig(path, dpi=110)
    return [path]


def main(argv=None):
    args = _claims.arguments(__doc__, argv)
    hg.use_compilation_cache()
    cfg = SMOKE if args.smoke else FULL
    began = time.perf_counter()
    progress = _progress.Progress(args, NAME, cfg, resume=True)  # each key's grid kept as it is measured
    out = run(cfg, progress.unit)
    facts = summarise(out)
    claims = verdicts(facts)
    sweep_rows = []
    for family, x in facts.items():
        for i, rate in enumerate(x["rates"]):
            sweep_rows.append([family, f"{rate:.1e}", f"{x['fixed'][i]:.4f}", f"{x['hd'][i]:.4f}"])
    sweep = _claims.markdown_table(["family", "initial rate", "fixed: val loss", "HD: val loss"], sweep_rows)
    summary = _claims.markdown_table(
        ["strategy", "good initial rates (of %d)" % cfg.points, "loss from the smallest rate",
         "mean over initial rates (one random run)", "best", "compute (runs, all rates and keys)", "seconds"],
        [[f"{family} fixed rate" if variant == "fixed" else f"{family}-HD",
          facts[family]["good_fixed" if variant == "fixed" else "good_hd"],
          f"{facts[family]['small_fixed' if variant == 'fixed' else 'small_hd']:.4f}",
          f"{facts[family]['mean_fixed' if variant == 'fixed' else 'mean_hd']:.4f}",
          f"{facts[family]['tuned_loss' if variant == 'fixed' else 'best_hd']:.4f}",
          f"{out['runs'][family, variant]:.0f}", f"{out['seconds'][family, variant]:.1f}"]
         for family, variant in OPTIMISERS])
    body = "\n".join([
        "# Hypergradient descent on the learning rate (Baydin et al. 2018), on digits", "",
        f"{out['problem'].name}: MLP 64 -> {cfg.hidden[0]} tanh -> 10, batch 100, T = {cfg.steps} steps; "
        f"{cfg.points} initial rates per family, evenly spaced in log (SGD {RANGES['SGD'][0]:g} .. "
        f"{RANGES['SGD'][1]:g}, Adam {RANGES['Adam'][0]:g} .. {RANGES['Adam'][1]:g}); hyper learning rates "
        f"{HYPER_LR['SGD']:g} (SGD-HD, `hg.online.sgd_hd`) and {HYPER_LR['Adam']:g} (Adam-HD, written in this "
        f"experiment: `hg.online` has no Adam-HD). Scores: validation loss after T steps, mean over "
        f"{len(cfg.keys)} training keys; a diverged run counts as ln 10. Digits stand in for MNIST; the paper "
        "reports training and validation losses of logistic regression, MLPs and CNNs over many epochs.", "",
        "Equal compute: each HD row spends one run per initial rate; the tuned fixed rate needed the whole grid. "
        "Random search over the rate with a budget of one run is a single draw of the fixed column, so its "
        "expected loss is the fixed column's mean over initial rates (below), to set beside HD's mean.", "",
        "## Summary", "", summary, "",
        "## Final validation loss against the initial rate", "", sweep, "",
        f"![final loss vs initial rate](./{NAME}.png)", ""]) + progress.note()
    figures = plot(args.out, out)
    _claims.publish(args, NAME, body, claims, began=began, figures=figures, numbers={"families": facts, "good": GOOD})


if __name__ == "__main__":
    main()

"""Dataset distillation (Wang, Zhu, Torralba & Efros 2018; also Maclaurin, Duvenaud & Adams 2015),
reproduced on digits: ten synthetic images, one per class, learned so that a network trained on them
alone classifies real test digits.

Set-up. scikit-learn's digits stand in for MNIST (8 x 8 pixels instead of 28 x 28; split 60/20/20,
seeded, stratified, standardised: 1,078 training, 359 validation, 360 test images). The model is an
MLP with one hidden layer of 32 tanh units (the paper used LeNet), `hg.problems.mlp_classifier`'s
network. A network is trained by T = 10 full-batch gradient-descent steps on the ten synthetic
images (labels 0..9) and nothing else, with a learned step size; the objective is the cross-entropy
on the real validation split. The hyperparameters: the images, 10 x 64 = 640 pixel values (each in
[-5, 5], a scaled sigmoid of its unconstrained coordinate: standardised pixels), and the step size
(log-uniform in [1e-3, 10]): 641 in all. They start at uniform noise in [-1, 1] (seeded) and 0.1.

Rows:
- distilled, fixed initialisation: `hg.tune` with `hg.Reverse()` (the exact hypergradient through
  the T steps) for 600 outer Adam(0.05) steps, one training key throughout (one initialisation);
  scored from that initialisation, and, to show what it is tied to, from 100 fresh ones;
- distilled, random initialisations: the same, with `resample_key=True` (a fresh initialisation at
  every outer step); scored from 100 fresh initialisations;
- 10 real images, one per class: 100 draws (seeded), each trained the same way at the step size
  that gives the lowest mean validation loss over the draws (a grid of 25 log-spaced rates), from
  the fixed initialisation and from a fresh one per draw: mean, spread and 95th percentile;
- random search at equal compute: random search cannot search 640 pixel values (it would broadcast
  one value to every pixel: a blank image), so it searches what it can, which ten real images (one
  per class, an index per class) and the step size, with as many trials as the fixed-initialisation
  distillation spent training runs, and keeps the best on validation loss.

Verdict rules (fixed in this file before the first full run; the paper's numbers are the issue's,
"about 94% from a fixed initialisation, about 80% from random ones", not checked against the paper
offline):
- fixed initialisation: held if the distilled images reach >= 89% test accuracy (within 5 points of
  the paper's 94%) and beat the 95th percentile of the real draws from the same initialisation;
  partly if only one of the two holds, or if they beat the real draws' mean; not held otherwise.
  Reaching 89% means clearing it by more than two standard errors of the test accuracy (binomial,
  sqrt(p (1 - p) / n) over the n test images), the margin the other comparisons use: a margin added
  after the full runs, on review (claims hunt, session 38), when the stored 0.894 cleared the bar by 2
  of 360 test images against a standard error of 0.016;
- random initialisations: held if the mean over fresh initialisations is >= 75% (within 5 points of
  80%) and above the real draws' mean from fresh initialisations; partly if one of the two; not held
  otherwise;
- equal compute: held if distillation beats random search's pick both from the fixed initialisation
  (test accuracy) and from fresh ones (the random-initialisation distillation against the pick,
  mean over the same 100 keys, paired difference more than twice its standard error); partly if
  ahead in one; not held otherwise.

Which iterate the rules read (changed after the first full run, session 37): each distillation's best
iterate on validation, the outer step with the lowest finite validation loss (early stopping: random
search's row is likewise its trial with the lowest validation loss, and no test number enters either
pick). The rules were first applied to the final iterate; the first full run's outer loop diverged late
(the learned step size runs away and the final validation loss climbs far above its best), and a loop
that ends in NaN leaves an untrained network there, so a verdict on the last step judged the divergence,
not the images. Each claim's why still gives where the loop ended (diverged: a final validation loss that
is not finite; or how far above its best), the final iterate's scores, and the verdict the final iterate
would get; the sidecar keeps both (`best_iterate`, `final_iterate`, `final_iterate_verdicts`).

    python experiments/distillation.py            # full (about a minute on 2 cores)
    python experiments/distillation.py --smoke    # seconds, for CI

Writes `--out/distillation.md`, `distillation.json` (the claims), `distillation_images.png` (the
images) and `distillation_curves.png` (validation loss and step size over the outer steps). The real
images' row, each distillation and the random search are kept in `--out/distillation.partial.json` as they
are measured (`_progress`), so an interrupted run keeps them; a rerun into the same `--out` with the same mode
and environment reads them back instead of measuring them again.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hypergrad as hg

import _claims
import _progress

NAME = "distillation"
PAPER = "Wang et al. 2018"
CLASSES = 10
BOUND = 5.0                   # synthetic pixels live in [-BOUND, BOUND] (standardised units)
TUNE_KEY, INIT_SEED, DRAW_SEED, EVAL_KEY = 0, 1, 2, 1000


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple
    steps: int            # T, inner gradient-descent steps on the synthetic set
    outer_steps: int
    outer_lr: float
    draws: int            # draws of 10 real images
    rates: int            # grid of step sizes for the real draws
    eval_keys: int        # fresh initialisations for the random-init scores


FULL = Config(hidden=(32,), steps=10, outer_steps=600, outer_lr=0.05, draws=100, rates=25, eval_keys=100)
SMOKE = Config(hidden=(8,), steps=3, outer_steps=3, outer_lr=0.05, draws=5, rates=3, eval_keys=4)


def problems(cfg: Config):
    """(distillation objective, its space, real-images objective, its space, the real training data)."""
    base = hg.problems.mlp_classifier("digits", hidden=cfg.hidden, batch_size=None)
    x, y = (np.asarray(a) for a in base.train_data)
    labels = jnp.arange(CLASSES, dtype=jnp.int32)  # the "training set": one label per synthetic image

    def make(images_of):
        problem = hg.Problem(
            init=base.init, train_loss=lambda p, h, batch: base.train_loss(p, {}, (images_of(h), batch)),
            val_loss=base.val_loss, train_data=labels, val_data=base.val_data, test_data=base.test_data,
            batch_size=None, metrics=base.metrics, name="digits-distillation")
        return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), cfg.steps)

    distill = make(lambda h: h["images"])
    space = hg.Space({"images": hg.Uniform(-BOUND, BOUND, shape=(CLASSES, x.shape[1])),
                      "lr": hg.LogUniform(1e-3, 10.0)})
    # Real images: pick[c] in [0, 1) chooses member floor(pick[c] * n_c) of class c (search only).
    order = np.argsort(y, kind="stable")
    counts = np.bincount(y, minlength=CLASSES)
    starts, sorted_x = jnp.asarray(np.cumsum(counts) - counts), jnp.asarray(x[order])

    def real_images(h):
        within = jnp.clip(jnp.floor(h["pick"] * counts).astype(jnp.int32), 0, jnp.asarray(counts) - 1)
        return sorted_x[starts + within]

    real = make(real_images)
    real_space = hg.Space({"pick": hg.Uniform(0.0, 1.0, shape=(CLASSES,), independent=True),
                           "lr": hg.LogUniform(1e-3, 10.0)})
    return distill, space, real, real_space, (x, y)


_EVALUATORS: dict = {}


def scores_over(objective: hg.Objective, hparams: dict, keys, batched: bool) -> dict[str, np.ndarray]:
    """Every score of `hparams` trained from each of `keys` (a batch of keys): one vmapped program,
    jitted once per (objective, batched). `batched`: whether `hparams` has a leading axis matching
    `keys` (else one setting for all)."""
    fn = _EVALUATORS.setdefault((objective, batched), jax.jit(jax.vmap(objective.evaluate,
                                                                        in_axes=(0 if batched else None, 0))))
    return {k: np.asarray(v) for k, v in fn(hparams, keys).items()}


def fixed_and_fresh(objective: hg.Objective, hparams: dict, keys) -> tuple[float, np.ndarray]:
    """Test accuracy of one setting from the fixed init (TUNE_KEY) and from each of `keys`, in one call."""
    both = jnp.concatenate([jax.random.key(TUNE_KEY)[None], keys])
    accuracy = scores_over(objective, hparams, both, batched=False)["test_accuracy"]
    return float(accuracy[0]), accuracy[1:]


def keys_from(seed: int, n: int):
    """n typed keys, jax.random.key(seed + i)."""
    return jax.vmap(jax.random.key)(jnp.arange(seed, seed + n))


def distil(objective, space, cfg: Config, resample_key: bool):
    """The tuned images and step size (final iterate), the result, and wall seconds."""
    noise = jax.random.uniform(jax.random.key(INIT_SEED), (CLASSES, space["images"].shape[1]), minval=-1.0,
                               maxval=1.0)
    init = {"images": noise, "lr": jnp.asarray(0.1)}
    began = time.perf_counter()
    result = hg.tune(objective, space, jax.random.key(TUNE_KEY), method=hg.Reverse(),
                     outer=optax.adam(cfg.outer_lr), steps=cfg.outer_steps, init=init, resample_key=resample_key)
    final = {k: jnp.asarray(v) for k, v in result.trials[-1].hparams.items()}
    return final, result, time.perf_counter() - began


def best_iterate(trials) -> tuple[int, dict]:
    """The outer step whose trial has the lowest finite validation loss, and that same trial's hparams (as
    device arrays), so the judged row's step, settings and scores all come from one trial. Not
    `result.best_hparams`: with `resample_key=True` that ranges only over trials scored on the call's key
    (the final iterate), while each step's value here was scored on that step's own key."""
    values = np.asarray([t.value for t in trials], float)
    step = int(np.argmin(np.where(np.isfinite(values), values, np.inf)))
    return step, {k: jnp.asarray(v) for k, v in trials[step].hparams.items()}


def real_draws(real, cfg: Config) -> dict:
    """10 real images (one per class), `cfg.draws` seeded draws, at the step size of the grid with the
    lowest mean validation loss over the draws: test accuracy from the fixed and from fresh inits."""
    picks = jnp.asarray(np.random.default_rng(DRAW_SEED).uniform(size=(cfg.draws, CLASSES)))
    rates = np.geomspace(1e-3, 10.0, cfg.rates)
    n = cfg.rates * cfg.draws
    # One program: every (rate, draw) from the fixed init, then again from draw i's fresh init.
    grid = {"pick": jnp.tile(picks, (2 * cfg.rates, 1)), "lr": jnp.tile(jnp.repeat(jnp.asarray(rates, picks.dtype),
                                                                                  cfg.draws), 2)}
    keys = jnp.concatenate([jnp.stack([jax.random.key(TUNE_KEY)] * n),
                            jnp.tile(keys_from(EVAL_KEY, cfg.draws), cfg.rates)])
    s = scores_over(real, grid, keys, batched=True)
    val = s["val_loss"][:n]
    val = np.where(np.isfinite(val), val, np.inf).reshape(cfg.rates, cfg.draws)
    best = int(np.argmin(val.mean(axis=1)))  # the step size chosen on the fixed init's validation loss
    accuracy = s["test_accuracy"].reshape(2, cfg.rates, cfg.draws)
    return {"lr": float(rates[best]), "fixed": accuracy[0, best], "fresh": accuracy[1, best], "runs": 2 * n,
            "curve": {"rates": rates.tolist(), "mean_val": val.mean(axis=1).tolist()}}


def run(cfg: Config, unit=lambda key, measure: measure()) -> dict:
    """The real images, both distillations and the random search, each measured through
    `unit(key, measure)` (`_progress.Progress.unit`: kept as it is measured)."""
    distill, space, real, real_space, (x, y) = problems(cfg)
    keys = keys_from(EVAL_KEY, cfg.eval_keys)
    out = {"real": unit("real images", lambda: real_draws(real, cfg)),
           "test_examples": len(np.asarray(distill.problem.test_data[1])),
           "class_means": np.stack([x[y == c].mean(axis=0) for c in range(CLASSES)])}

    def distilled(resample):
        final, result, seconds = distil(distill, space, cfg, resample)
        step, best = best_iterate(result.trials)
        (fixed, fresh), (best_fixed, best_fresh) = (fixed_and_fresh(distill, h, keys) for h in (final, best))
        return {"hparams": final, "runs": result.runs, "seconds": seconds, "fixed": fixed, "fresh": fresh,
                "val_curve": [t.value for t in result.trials],
                "lr_curve": [float(t.hparams["lr"]) for t in result.trials],
                # What the verdicts read (since session 37; the final iterate before): the iterate
                # with the lowest finite validation loss seen in tuning.
                "best": {"hparams": best, "step": step, "fixed": best_fixed, "fresh": best_fresh}}

    for label, resample in (("fixed", False), ("random", True)):
        out[label] = unit(f"distilled, {label} init", lambda: distilled(resample))

    # Random search over what it can search: which real images (an index per class) and the step size,
    # from the fixed initialisation (its trials all train with TUNE_KEY), at the distillation's compute.
    def searched():
        began = time.perf_counter()
        rand = hg.random_search(real, real_space, jax.random.key(TUNE_KEY),
                                num_trials=max(2, round(out["fixed"]["runs"])))
        pick = {k: jnp.asarray(v) for k, v in rand.best_hparams.items()}
        seconds = time.perf_counter() - began
        fixed, fresh = fixed_and_fresh(real, pick, keys)
        return {"hparams": pick, "runs": rand.runs, "seconds": seconds, "fixed": fixed, "fresh": fresh}

    out["search"] = unit("random search", searched)
    return out


def spread(a) -> str:
    a = np.asarray(a, float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.3f}"


def course(r: dict, key: str) -> str:
    """The outer loop's course: the step the verdict reads against the final iterate, whether the loop diverged
    (a final validation loss that is not finite) or ended above its best, and what the final iterate scores."""
    x = r[key]
    b, last = x["best"], len(x["val_curve"]) - 1
    best, final = x["val_curve"][b["step"]], x["val_curve"][-1]
    if not math.isfinite(best):
        ended = "no outer step had a finite validation loss: the outer loop diverged from its start"
    elif not math.isfinite(final):
        ended = "the outer loop diverged: its final validation loss is not finite"
    elif b["step"] == last:
        ended = "the final iterate is the best"
    else:
        ended = f"the loop ended {final / best:.3g}x above its best"
    return (f" Outer loop ({key} init{'s' if key == 'random' else ''}): judged at outer step {b['step']} of {last} "
            f"(validation loss {best:.3g}, step size {float(b['hparams']['lr']):.3g}); final validation loss "
            f"{final:.3g} (step size {x['lr_curve'][-1]:.3g}): {ended}. The final iterate scores {x['fixed']:.3f} "
            f"from the fixed init and {np.mean(x['fresh']):.3f} from fresh ones"
            + ("; each step's validation loss was scored on that step's own key, so the pick is noisy."
               if key == "random" else "."))


DIGITS_TEST = 360
"""The digits split's test images: claim 1's standard error reads `run`'s own count (`test_examples`), and
this only where a record has none."""


def test_se(accuracy: float, examples: int) -> float:
    """The binomial standard error of a test accuracy measured on `examples` test images."""
    return math.sqrt(accuracy * (1.0 - accuracy) / examples)


def rule_fixed(fixed: float, real_fixed: np.ndarray, examples: int) -> tuple[str, bool, bool]:
    """Claim 1's rule: (verdict, near 94%: at least 0.89 by more than 2 binomial s.e. over `examples` test
    images (a margin added on review), above the real draws' 95th percentile)."""
    near, above = fixed - 0.89 > 2 * test_se(fixed, examples), fixed > float(np.percentile(real_fixed, 95))
    return ("held" if near and above else "partly" if near or above or fixed > real_fixed.mean() else "not held",
            near, above)


def rule_random(fresh: np.ndarray, real_fresh: np.ndarray) -> tuple[str, bool, bool]:
    """Claim 2's rule: (verdict, mean near 80%, mean above the real draws' mean)."""
    near, above = fresh.mean() >= 0.75, fresh.mean() > real_fresh.mean()
    return "held" if near and above else "partly" if near or above else "not held", near, above


def rule_compute(fixed: float, fresh: np.ndarray, search: dict) -> tuple[str, list, np.ndarray, float]:
    """Claim 3's rule: (verdict, [ahead from the fixed init, ahead from fresh inits by > 2 s.e.], the paired
    differences, their standard error)."""
    diff = fresh - np.asarray(search["fresh"], float)
    se = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else float("inf")
    ahead = [fixed - search["fixed"] > 0, diff.mean() > 2 * se]
    return "held" if all(ahead) else "partly" if any(ahead) else "not held", ahead, diff, se


REVISED = " (rule revised after the first full run: judged on the best iterate on validation, not the final one)."


def verdicts(r: dict) -> tuple[list[_claims.Claim], dict]:
    """The rules (module docstring), applied to each distillation's best iterate on validation (`best_iterate`:
    the outer step with the lowest finite validation loss), not to its last step: a loop that diverges late
    (a NaN, or a validation loss climbing back) would otherwise be judged on an untrained or broken network.
    Each claim's why says where the loop ended and what the final iterate scores and would be judged."""
    real_fixed, real_fresh = np.asarray(r["real"]["fixed"], float), np.asarray(r["real"]["fresh"], float)
    p95 = float(np.percentile(real_fixed, 95))
    fixed = float(r["fixed"]["best"]["fixed"])
    rand_fresh = np.asarray(r["random"]["best"]["fresh"], float)
    s = r["search"]
    examples = int(r.get("test_examples", DIGITS_TEST))
    (v1, near, above), (v2, near2, above2) = rule_fixed(fixed, real_fixed, examples), rule_random(rand_fresh, real_fresh)
    v3, ahead, diff, se = rule_compute(fixed, rand_fresh, s)
    final_fixed, final_fresh = float(r["fixed"]["fixed"]), np.asarray(r["random"]["fresh"], float)
    final = [rule_fixed(final_fixed, real_fixed, examples)[0], rule_random(final_fresh, real_fresh)[0],
             rule_compute(final_fixed, final_fresh, s)[0]]
    judged = {k: r[k]["best"]["step"] for k in ("fixed", "random")}

    def on_final(i: int) -> str:
        return f" Judged on the final iterates instead, the verdict would be {final[i]}."

    c1 = _claims.Claim(
        PAPER, "Ten distilled images (one per class) train a fixed initialisation to about 94% test accuracy "
        "(MNIST), far above ten real images" + REVISED[:-2] + "; rule revised on review after the full runs: 89% "
        "must be cleared by more than 2 s.e.).",
        f"digits, fixed init: distilled {fixed:.3f} (best iterate on validation, outer step {judged['fixed']}), "
        f"s.e. {test_se(fixed, examples):.3f} over {examples} test images; "
        f"10 real images {spread(real_fixed)} (95th percentile {p95:.3f}, {len(real_fixed)} draws)", v1,
        f"rule: >= 0.89 (within 5 points of 94%) by more than 2 s.e. and above the real draws' 95th percentile: "
        f"{near} and {above}. {fixed:.3f} is {(fixed - 0.89) * examples:.1f} of {examples} test images above 0.89, "
        f"against a binomial s.e. of {test_se(fixed, examples):.3f}; the 2 s.e. margin was added after the full "
        "runs, on review (claims hunt, session 38): the stored run passed the bar by 2 test images, within the "
        "test set's noise, and was 'held' without it." + course(r, "fixed") + on_final(0))
    c2 = _claims.Claim(
        PAPER, "Distilled over random initialisations, ten images train unseen initialisations to about 80% "
        "(MNIST)" + REVISED,
        f"digits, {len(rand_fresh)} fresh inits: distilled {spread(rand_fresh)} (best iterate on validation, outer "
        f"step {judged['random']}); 10 real images {spread(real_fresh)}; fixed-init images from fresh inits "
        f"{spread(r['fixed']['best']['fresh'])}", v2,
        f"rule: mean >= 0.75 (within 5 points of 80%) and above the real draws' mean: {near2} and {above2}."
        + course(r, "random") + on_final(1))
    c3 = _claims.Claim(
        "issue 15 (equal compute)", "Where random search cannot play (640 pixel values), distillation beats "
        "random search over what it can search (which ten real images, and the step size) at equal compute" + REVISED,
        f"fixed init: {fixed:.3f} vs {s['fixed']:.3f}; fresh inits: {rand_fresh.mean():.3f} vs "
        f"{np.mean(s['fresh']):.3f} (paired difference {diff.mean():+.3f} ± {se:.3f} s.e.); "
        f"{r['fixed']['runs']:.0f} vs {s['runs']:.0f} runs", v3,
        f"rule: ahead from the fixed init, and from fresh inits by > 2 s.e.: {ahead[0]} and {ahead[1]}. Each side "
        "is its pick on validation loss: distillation's best iterate, random search's best trial." + on_final(2))

    def iterate(x: dict, step: int, fixed: float, fresh, lr) -> dict:
        return {"step": step, "val": x["val_curve"][step], "lr": float(lr), "fixed": float(fixed),
                "fresh_mean": float(np.mean(fresh))}

    numbers = {"judged_on": "best iterate on validation (lowest finite validation loss over the outer steps)",
               "distilled_fixed": fixed, "test_examples": examples, "distilled_fixed_fresh": np.asarray(r["fixed"]["best"]["fresh"]).tolist(),
               "distilled_random_fresh": rand_fresh.tolist(), "real_fixed": real_fixed.tolist(),
               "real_fresh": real_fresh.tolist(), "real_lr": r["real"]["lr"], "search_fixed": s["fixed"],
               "search_fresh": np.asarray(s["fresh"]).tolist(), "runs": {k: r[k]["runs"] for k in
                                                                        ("fixed", "random", "search")},
               "best_iterate": {k: iterate(r[k], r[k]["best"]["step"], r[k]["best"]["fixed"], r[k]["best"]["fresh"],
                                           r[k]["best"]["hparams"]["lr"]) for k in ("fixed", "random")},
               "final_iterate": {k: iterate(r[k], len(r[k]["val_curve"]) - 1, r[k]["fixed"], r[k]["fresh"],
                                            r[k]["hparams"]["lr"]) for k in ("fixed", "random")},
               "final_iterate_verdicts": final,
               "curves": {k: {"val": r[k]["val_curve"], "lr": r[k]["lr_curve"]} for k in ("fixed", "random")}}
    return [c1, c2, c3], numbers


def table(r: dict, cfg: Config) -> list[list]:
    real = r["real"]
    rows = []
    for key, label in (("fixed", "distilled, fixed init (Reverse): best iterate on val"),
                       ("random", "distilled, random inits (Reverse): best iterate on val")):
        x, b = r[key], r[key]["best"]
        rows.append([f"{label}, outer step {b['step']}", "641", f"{b['fixed']:.3f}", spread(b["fresh"]),
                     f"{float(b['hparams']['lr']):.3g}", f"{x['runs']:.0f}", f"{x['seconds']:.1f}"])
    for key, label in (("fixed", "distilled, fixed init: final iterate"),
                       ("random", "distilled, random inits: final iterate")):
        x = r[key]
        rows.append([f"{label}, outer step {len(x['val_curve']) - 1}", "641", f"{x['fixed']:.3f}", spread(x["fresh"]),
                     f"{float(x['hparams']['lr']):.3g}", "", ""])
    rows.append([f"10 real images, {cfg.draws} draws (grid-best step size)", "-", spread(real["fixed"]),
                 spread(real["fresh"]), f"{real['lr']:.3g}", f"{real['runs']}", ""])
    s = r["search"]
    rows.append(["random search: which real images + step size", "11", f"{s['fixed']:.3f}", spread(s["fresh"]),
                 f"{float(s['hparams']['lr']):.3g}", f"{s['runs']:.0f}", f"{s['seconds']:.1f}"])
    return rows


def plot(out: str, r: dict) -> list[str]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: skipping the figure (pip install 'hypergrad[plots]')")
        return []
    rows = [(f"fixed init, step {r['fixed']['best']['step']}\n(best val: judged)",
             np.asarray(r["fixed"]["best"]["hparams"]["images"])),
            (f"random inits, step {r['random']['best']['step']}\n(best val: judged)",
             np.asarray(r["random"]["best"]["hparams"]["images"])),
            ("fixed init,\nfinal iterate", np.asarray(r["fixed"]["hparams"]["images"])),
            ("real: class means", np.asarray(r["class_means"]))]
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), CLASSES)
    for i, (label, images) in enumerate(rows):
        limit = float(np.percentile(np.abs(images), 99)) or 1.0
        for c in range(CLASSES):
            ax = axes[i, c]
            ax.imshow(images[c].reshape(8, 8), cmap="gray", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(str(c))
        axes[i, 0].set_ylabel(label, fontsize="small")
    fig.suptitle("ten synthetic digits, one per class (standardised pixels); bottom: real class means for reference",
                 fontsize="medium")
    path = os.path.join(out, f"{NAME}_images.png")
    fig.savefig(path, dpi=110)
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    for key, label in (("fixed", "fixed init"), ("random", "random inits (a fresh one each step)")):
        ax1.plot(r[key]["val_curve"], label=label, linewidth=1)
        ax2.plot(r[key]["lr_curve"], label=label, linewidth=1)
    ax1.set_yscale("log")
    ax1.set_ylabel("validation loss of the tuning run")
    ax2.set_yscale("log")
    ax2.set_ylabel("learned step size")
    for ax in (ax1, ax2):
        ax.set_xlabel("outer step")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize="small")
    curves = os.path.join(out, f"{NAME}_curves.png")
    fig.savefig(curves, dpi=110)
    return [path, curves]


def main(argv=None):
    args = _claims.arguments(__doc__, argv)
    hg.use_compilation_cache()
    cfg = SMOKE if args.smoke else FULL
    began = time.perf_counter()
    progress = _progress.Progress(args, NAME, cfg, resume=True)  # each part kept as it is measured
    r = run(cfg, progress.unit)
    claims, numbers = verdicts(r)
    headers = ["strategy", "hyperparameters", "test accuracy, fixed init", "test accuracy, fresh inits (mean ± std)",
               "step size", "compute (runs)", "seconds"]
    body = "\n".join([
        "# Dataset distillation (Wang et al. 2018), on digits", "",
        f"Digits stand in for MNIST (8 x 8 pixels). MLP with hidden layer {cfg.hidden} (tanh), trained by T = "
        f"{cfg.steps} full-batch gradient-descent steps on ten synthetic images (one per class) with a learned "
        f"step size; 640 pixel values + 1 step size tuned by `hg.tune` with `hg.Reverse()` for {cfg.outer_steps} "
        f"outer Adam({cfg.outer_lr:g}) steps on the real validation loss. Fresh inits: {cfg.eval_keys} keys never "
        f"used in tuning. Real images: {cfg.draws} seeded draws of one training image per class, step size the best "
        f"of {cfg.rates} log-spaced rates on the draws' mean validation loss.", "",
        "The paper's MNIST numbers, as the issue states them: about 94% from a fixed initialisation, about 80% "
        "from random ones (LeNet, 28 x 28; not checked against the paper offline).", "",
        "Random search cannot search 640 pixel values one by one (a shaped hyperparameter is broadcast: one value "
        "for every pixel, a blank image), so its row searches what it can: which real image represents each class "
        "(an index per class, 10 values) and the step size, at the fixed-init distillation's compute, picked on "
        "validation loss.", "",
        "## Test accuracy", "",
        _claims.markdown_table(headers, table(r, cfg)), "",
        "The verdicts read each distillation's best iterate on validation (the rows marked 'best iterate on "
        "val'): the outer step with the lowest finite validation loss seen during tuning, as random search's row "
        "is its trial with the lowest validation loss (no test number enters either pick). They read the final "
        "iterate until the first full run showed the outer loop diverging (the learned step size runs away and "
        "the final iterate's validation loss climbs far above its best; a loop ending in NaN would leave an "
        "untrained network there): the 'final iterate' rows show that step, and each claim's why says where the "
        "loop ended and the verdict the final iterate would get. For the random inits each step's validation "
        "loss was scored on that step's own key, so that pick is noisy; its scores, on fresh keys, are not.", "",
        f"![distilled images](./{NAME}_images.png)", "",
        f"![outer loop](./{NAME}_curves.png)", ""]) + progress.note()
    figures = plot(args.out, r)
    _claims.publish(args, NAME, body, claims, began=began, figures=figures, numbers=numbers)


if __name__ == "__main__":
    main()

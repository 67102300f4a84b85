"""Chaotic meta-loss surfaces (Metz, Maheswaranathan, Nixon, Freeman & Sohl-Dickstein 2019, "Understanding
and correcting pathologies in the training of learned optimizers"; Metz et al. 2021, "Gradients are not
all you need"; Vicol, Metz & Sohl-Dickstein 2021, PES), reproduced on digits: as the unroll T and the
learning rate grow, the validation loss as a function of the learning rate turns rugged and the exact
hypergradient explodes; evolution strategies (ES) and persistent ES (PES) smooth it.

Set-up. scikit-learn's digits (digits stand in for MNIST): an MLP with one hidden layer of 16 tanh
units (`hg.problems.mlp_classifier("digits", hidden=(16,), batch_size=32)`), trained by T steps of SGD
with momentum 0.9 (fixed) at a constant learning rate lr, the one hyperparameter (log-uniform in
[1e-3, 10]). The objective is the validation cross-entropy after T steps, for T in {10, 30, 100, 300}.

1. Loss surface: `hg.grid_search` over 400 log-spaced learning rates for each T (one vmapped program
   per T), one training key (the deterministic function a gradient method descends). Losses are
   capped at CAP = 10 (a diverged run is NaN or huge) before any statistic. Roughness = total
   variation of the capped curve divided by its range (1 for a monotone curve, at most 2 for one
   valley; many ups and downs make it large). A zoom: 400 more rates within a factor 2 of the rugged
   rate (below) at the largest T.
2. Hypergradient norms: |dL/dlog lr| by `hg.Reverse()` (the exact hypergradient), vmapped over 40
   log-spaced learning rates and 2 training keys for each T; the median over keys, and the spread.
   Points whose loss is not finite or above DIVERGED = 2 ln 10 (twice chance level) are diverged and
   left out of every statistic.
3. Variance across keys at the rugged setting: the largest T, and of the 40 rates the one with the
   largest median Reverse norm that no key diverges at. 16 fresh training keys; for each,
   dL/dlog lr by `hg.Reverse()`, `hg.ES(sigma=0.1, num_samples=8)` and `hg.PES(sigma=0.1,
   num_samples=8, window=T/10)` (relative steps: sigma = 0.1 perturbs lr by about 10%, that is log lr
   by 0.1). Their standard deviation across keys, and the cost of each estimate in training runs.

Random search needs no gradient and is immune to the explosion: the grid of part 1 is what it sees
(its best rate is reported); no tuner is run here, the claims are about the estimators.

Verdict rules (fixed in this file before the first full run):
- roughness grows with T: held if it increases with every step up in T and the largest T's is at
  least twice the smallest T's; partly if the largest T's is above the smallest's; not held otherwise;
- Reverse norm grows by orders of magnitude with T: the largest median |dL/dlog lr| over the
  non-diverged rates, at the largest T against the smallest: held if >= 100x, partly if >= 10x, not
  held otherwise;
- ES and PES have lower variance than Reverse at the rugged setting: a method's spread is the standard
  deviation across the keys whose estimate is finite, reported with the count of the others; a
  method's spread is lower than Reverse's when it has no more non-finite keys and a lower spread
  (a spread over fewer than two finite keys counts as infinite). Held if both ES and PES are lower,
  partly if one is, not held otherwise. Revised on review after the first full run: the first rule
  took any non-finite key as an infinite spread, so one exploded Reverse key (15 of 16 finite there)
  made "lower" hold whatever ES and PES did, and the page showed "inf" instead of Reverse's spread.
  Leaving a method's non-finite keys out lowers its spread, so this rule errs against ES and PES
  when Reverse has them.

    python experiments/chaos.py            # full (about two minutes on 2 loaded cores)
    python experiments/chaos.py --smoke    # seconds, for CI

Writes `--out/chaos.md`, `chaos.json` (the claims) and `chaos.png`. Each horizon's surface and norms, and
the rugged setting's estimators, are kept in `--out/chaos.partial.json` as they are measured (`_progress`),
so an interrupted run keeps them; a rerun into the same `--out` with the same mode and environment reads
them back instead of measuring them again.
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

NAME = "chaos"
PAPERS = "Metz et al. 2019/2021; Vicol et al. 2021"
CAP = 10.0                      # losses are capped here before any statistic
DIVERGED = 2 * math.log(10.0)   # a loss above twice chance level (or not finite) is a diverged run
MOMENTUM, SIGMA = 0.9, 0.1
LO, HI = 1e-3, 10.0
GRID_KEY, NORM_SEED, VARIANCE_SEED = 0, 100, 200


@dataclasses.dataclass(frozen=True)
class Config:
    hidden: tuple
    batch_size: int
    horizons: tuple      # T
    grid: int            # learning rates on the fine grid (and the zoom)
    norm_rates: int      # learning rates for the hypergradient norms
    norm_keys: int
    variance_keys: int
    samples: int         # ES / PES samples (antithetic pairs)


FULL = Config(hidden=(16,), batch_size=32, horizons=(10, 30, 100, 300), grid=400, norm_rates=40, norm_keys=2,
              variance_keys=16, samples=8)
SMOKE = Config(hidden=(4,), batch_size=32, horizons=(3, 6), grid=20, norm_rates=4, norm_keys=2, variance_keys=3,
               samples=2)


def objectives(cfg: Config) -> dict[int, hg.Objective]:
    problem = hg.problems.mlp_classifier("digits", hidden=cfg.hidden, batch_size=cfg.batch_size)
    return {t: hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=MOMENTUM), t) for t in cfg.horizons}


def capped(values) -> np.ndarray:
    v = np.asarray(values, float)
    return np.minimum(np.where(np.isfinite(v), v, CAP), CAP)


def roughness(values) -> float:
    """Total variation of the capped curve over its range (1: monotone; <= 2: one valley)."""
    v = capped(values)
    span = v.max() - v.min()
    return float(np.abs(np.diff(v)).sum() / span) if span > 0 else float("nan")


def surface(objective: hg.Objective, lo: float, hi: float, points: int) -> tuple[np.ndarray, np.ndarray]:
    """(rates, validation losses) of a grid search over `points` log-spaced rates in [lo, hi]."""
    result = hg.grid_search(objective, hg.Space({"lr": hg.LogUniform(lo, hi)}), jax.random.key(GRID_KEY), points)
    rates = np.asarray([float(t.hparams["lr"]) for t in result.trials])
    values = np.asarray([t.value if t.value is not None else np.nan for t in result.trials], float)
    order = np.argsort(rates)
    return rates[order], values[order]


def keys_from(seed: int, n: int):
    return jax.vmap(jax.random.key)(jnp.arange(seed, seed + n))


def log_lr_grads(objective: hg.Objective, method: hg.Method, rates, keys) -> tuple[np.ndarray, np.ndarray]:
    """(losses, dL/dlog lr) of `method` for every (rate, key) pair: one vmapped program."""
    def one(lr, key):
        value, grads = hg.hypergradient(objective, {"lr": lr}, key, method=method)
        return value, grads["lr"] * lr  # d/dlog lr = lr d/dlr

    fn = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None)))
    values, grads = fn(jnp.asarray(rates, jnp.float32), keys)
    return np.asarray(values, float), np.asarray(grads, float)


def alive(values: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Not diverged: a finite loss below DIVERGED and a finite hypergradient."""
    return np.isfinite(values) & (values < DIVERGED) & np.isfinite(grads)


def norms(objective: hg.Objective, cfg: Config) -> dict:
    """Reverse's |dL/dlog lr| over the norm grid and keys; per rate the median over keys, or NaN
    where any key diverged."""
    rates = np.geomspace(LO, HI, cfg.norm_rates)
    values, grads = log_lr_grads(objective, hg.Reverse(), rates, keys_from(NORM_SEED, cfg.norm_keys))
    ok = alive(values, grads).all(axis=1)
    median = np.where(ok, np.median(np.abs(np.where(np.isfinite(grads), grads, 0.0)), axis=1), np.nan)
    top = int(np.nanargmax(median)) if ok.any() else -1
    return {"rates": rates, "grads": grads, "median": median, "alive": ok,
            "max": float(median[top]) if top >= 0 else float("nan"), "argmax": float(rates[top]) if top >= 0 else None}


def estimators(objective: hg.Objective, lr: float, cfg: Config) -> dict:
    """dL/dlog lr of Reverse, ES and PES over fresh keys at one rate; spread and cost in runs."""
    keys = keys_from(VARIANCE_SEED, cfg.variance_keys)
    window = max(1, objective.num_steps // 10)
    methods = {"Reverse (exact)": hg.Reverse(), f"ES(sigma={SIGMA:g}, {cfg.samples} pairs)": hg.ES(SIGMA, cfg.samples),
               f"PES(sigma={SIGMA:g}, {cfg.samples} pairs, window {window})": hg.PES(SIGMA, cfg.samples, window)}
    h, key = {"lr": jnp.asarray(lr, jnp.float32)}, jax.random.key(VARIANCE_SEED)
    unit = hg.run_flops(objective, h, key)
    out = {}
    for label, method in methods.items():
        grads = log_lr_grads(objective, method, [lr], keys)[1][0]
        finite = np.isfinite(grads)
        out[label] = {"grads": grads, "mean": float(np.mean(grads[finite])) if finite.any() else float("nan"),
                      "std": finite_spread(grads), "finite": int(finite.sum()),
                      "runs": hg.hypergradient_flops(objective, method, h, key) / unit}
    return out


def finite_spread(grads: np.ndarray) -> float:
    """The standard deviation (ddof=1) of the finite entries of `grads`; NaN with fewer than two."""
    finite = np.asarray(grads, float)[np.isfinite(grads)]
    return float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")


def lower_spread(method: dict, reverse: dict) -> bool:
    """`method`'s spread across keys is lower than `reverse`'s: no more non-finite keys (`finite` counts the
    finite ones, over the same keys) and a lower standard deviation over its finite keys, where a spread
    over fewer than two finite keys (NaN, or None read back from JSON) counts as infinite."""
    def spread(x):
        return float("inf") if x["std"] is None or not math.isfinite(x["std"]) else x["std"]

    return method["finite"] >= reverse["finite"] and spread(method) < spread(reverse)


def smoothed(rates: np.ndarray, values: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """The capped curve convolved with a Gaussian of std `sigma` in log lr (what ES differentiates)."""
    x, v = np.log(rates), capped(values)
    w = np.exp(-0.5 * ((x[:, None] - x[None, :]) / sigma) ** 2)
    return (w @ v) / w.sum(axis=1)


def run(cfg: Config, unit=lambda key, measure: measure()) -> dict:
    """Each horizon's surface and norms, then the rugged setting's zoom and estimators, each measured
    through `unit(key, measure)` (`_progress.Progress.unit`: kept as it is measured)."""
    objs = objectives(cfg)
    out = {"surfaces": {}, "norms": {}, "seconds": {}}

    def horizon(objective):
        began = time.perf_counter()
        rates, values = surface(objective, LO, HI, cfg.grid)
        landscape = {"rates": rates, "values": values, "roughness": roughness(values),
                     "best_lr": float(rates[np.argmin(capped(values))]), "best": float(np.min(capped(values))),
                     "diverged": float(np.mean(~(np.isfinite(values) & (values < DIVERGED))))}
        return landscape, norms(objective, cfg), time.perf_counter() - began

    for t, objective in objs.items():
        out["surfaces"][t], out["norms"][t], out["seconds"][t] = unit(f"T={t}", lambda: horizon(objective))
    top = max(cfg.horizons)
    lr = out["norms"][top]["argmax"]
    if lr is None:  # every rate diverged for some key at the largest T: take its grid-best rate
        lr = out["surfaces"][top]["best_lr"]
    out["rugged_lr"] = lr

    def rugged():
        began = time.perf_counter()
        rates, values = surface(objs[top], lr / 2, lr * 2, cfg.grid)
        zoom = {"rates": rates, "values": values, "roughness": roughness(values), "smoothed": smoothed(rates, values)}
        return zoom, estimators(objs[top], lr, cfg), time.perf_counter() - began

    out["zoom"], out["estimators"], out["seconds"]["variance"] = unit("rugged setting", rugged)
    return out


def verdicts(r: dict, cfg: Config) -> tuple[list[_claims.Claim], dict]:
    """The rules, fixed before the first full run (module docstring)."""
    ts = list(cfg.horizons)
    rough = [r["surfaces"][t]["roughness"] for t in ts]
    rising = all(b > a for a, b in zip(rough, rough[1:]))
    v1 = ("held" if rising and rough[-1] >= 2 * rough[0] else "partly" if rough[-1] > rough[0] else "not held")
    c1 = _claims.Claim(
        PAPERS, "As the unroll T grows, the loss as a function of the learning rate turns rugged.",
        "roughness (total variation / range) " + ", ".join(f"T={t}: {x:.2f}" for t, x in zip(ts, rough))
        + f"; zoom at T={ts[-1]} within 2x of lr {r['rugged_lr']:.3g}: {r['zoom']['roughness']:.2f}", v1,
        f"rule: rising at every step up in T and the largest T's >= 2x the smallest's (held), above it (partly): "
        f"rising {rising}, ratio {rough[-1] / rough[0]:.2f}." + ("" if v1 == "held" else (
            " Likely reason: the measure spans the whole grid, whose band above the best rate is rugged already at "
            f"T={ts[0]} ({rough[0]:.2f}), while the capped, flat band of diverged rates moves with T ("
            + ", ".join(f"{r['surfaces'][t]['diverged']:.0%}" for t in ts) + " of the rates); within 2x of the rugged "
            f"rate at T={ts[-1]} it is {r['zoom']['roughness']:.1f}.")))
    peak = [r["norms"][t]["max"] for t in ts]
    ratio = peak[-1] / peak[0] if peak[0] > 0 else float("nan")
    v2 = "held" if ratio >= 100 else "partly" if ratio >= 10 else "not held"
    c2 = _claims.Claim(
        PAPERS, "The exact (Reverse) hypergradient grows by orders of magnitude with T at large learning rates.",
        "largest median abs(dL/dlog lr) over non-diverged rates: " + ", ".join(
            f"T={t}: {p:.3g} (lr {r['norms'][t]['argmax'] or float('nan'):.3g})" for t, p in zip(ts, peak)), v2,
        f"rule: ratio largest T / smallest T >= 100 (held), >= 10 (partly): {ratio:.3g}.")
    e = r["estimators"]
    (rev_label, rev), *others = e.items()
    lower = [lower_spread(x, rev) for _, x in others]
    v3 = "held" if all(lower) else "partly" if any(lower) else "not held"
    c3 = _claims.Claim(
        PAPERS, "ES and PES estimates of the hypergradient have lower variance across keys than the exact one "
        "where the surface is rugged (rule revised on review: spreads over the finite keys, a non-finite key "
        "counting against its method).",
        f"T={ts[-1]}, lr {r['rugged_lr']:.3g}, {cfg.variance_keys} keys: std of dL/dlog lr over the finite keys "
        + ", ".join(f"{label.split('(')[0].strip()} {x['std']:.3g} ({x['finite']} of {cfg.variance_keys} finite, "
                    f"{x['runs']:.1f} runs)" for label, x in e.items()), v3,
        "rule: lower than Reverse's means no more non-finite keys and a lower std over the finite ones (fewer than "
        "two finite: no spread, counted as infinite); both ES and PES lower (held), one (partly): " + ", ".join(
            f"{label.split('(')[0].strip()} {ok}" for (label, _), ok in zip(others, lower)) + ". Revised on review "
        "after the first full run: the first rule took any non-finite key as an infinite spread, so one exploded "
        "Reverse key made 'lower' hold whatever ES and PES did; leaving Reverse's non-finite keys out lowers its "
        "spread, so this rule errs against ES and PES.")
    numbers = {"horizons": ts, "roughness": rough, "peak_norm": peak, "norm_ratio": ratio,
               "rugged_lr": r["rugged_lr"], "zoom_roughness": r["zoom"]["roughness"],
               "surfaces": {str(t): {k: r["surfaces"][t][k] for k in ("best_lr", "best", "diverged")} for t in ts},
               "estimators": {label: {"std": x["std"], "mean": x["mean"], "finite": x["finite"], "runs": x["runs"],
                                      "grads": x["grads"].tolist()} for label, x in e.items()},
               "median_norms": {str(t): r["norms"][t]["median"].tolist() for t in ts},
               "curves": {str(t): r["surfaces"][t]["values"].tolist() for t in ts}, "cap": CAP,
               "norm_rates": r["norms"][ts[0]]["rates"].tolist()}
    return [c1, c2, c3], numbers


def tables(r: dict, cfg: Config) -> tuple[str, str]:
    rows = []
    for t in cfg.horizons:
        s, n = r["surfaces"][t], r["norms"][t]
        rows.append([t, f"{s['roughness']:.2f}", f"{s['diverged']:.0%}", f"{s['best_lr']:.3g}", f"{s['best']:.4f}",
                     f"{n['max']:.3g}", "n/a" if n["argmax"] is None else f"{n['argmax']:.3g}",
                     f"{r['seconds'][t]:.1f}"])
    surface_table = _claims.markdown_table(
        ["T", "roughness", "diverged rates", "grid-best lr (random search's view)", "its val loss",
         "largest median abs(dL/dlog lr), Reverse", "at lr", "seconds"], rows)
    zoom = r["zoom"]
    i = int(np.argmin(np.abs(np.log(zoom["rates"] / r["rugged_lr"]))))
    slope = np.gradient(zoom["smoothed"], np.log(zoom["rates"]))[i]
    rows = [[label, f"{x['mean']:+.3g}", f"{x['std']:.3g}", f"{x['finite']} of {cfg.variance_keys}", f"{x['runs']:.1f}",
             f"{x['std'] * math.sqrt(x['runs']):.3g}"] for label, x in r["estimators"].items()]
    rows.append([f"reference: slope of the loss smoothed by sigma = {SIGMA:g} in log lr (zoom grid, one key)",
                 f"{slope:+.3g}", "", "", f"{cfg.grid}", ""])
    estimator_table = _claims.markdown_table(
        ["strategy", "mean dL/dlog lr", "std across finite keys", "finite", "cost (runs)", "std x sqrt(cost)"], rows)
    return surface_table, estimator_table


def plot(out: str, r: dict, cfg: Config) -> list[str]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: skipping the figure (pip install 'hypergrad[plots]')")
        return []
    fig = Figure(figsize=(15, 8), layout="constrained")
    FigureCanvasAgg(fig)
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    for t in cfg.horizons:
        s, n = r["surfaces"][t], r["norms"][t]
        ax1.plot(s["rates"], capped(s["values"]), linewidth=0.8, label=f"T = {t} (roughness {s['roughness']:.1f})")
        line, = ax2.loglog(n["rates"], n["median"], "o-", markersize=3, label=f"T = {t}")
        spread = np.abs(n["grads"])
        ax2.fill_between(n["rates"], np.nanmin(np.where(spread > 0, spread, np.nan), axis=1), np.nanmax(spread, axis=1),
                         color=line.get_color(), alpha=0.15)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("learning rate")
    ax1.set_ylabel(f"validation loss after T steps (capped at {CAP:g})")
    ax1.set_title(f"loss surface over the learning rate, {cfg.grid} rates, one key", fontsize="medium")
    ax2.set_xlabel("learning rate")
    ax2.set_ylabel("abs(dL/dlog lr), Reverse")
    ax2.set_title(f"exact hypergradient: median of {cfg.norm_keys} keys (band: min-max); diverged rates left out",
                  fontsize="medium")
    z = r["zoom"]
    ax3.plot(z["rates"], capped(z["values"]), linewidth=0.8, label="loss (one key)")
    ax3.plot(z["rates"], z["smoothed"], linewidth=2, label=f"Gaussian-smoothed, sigma {SIGMA:g} in log lr (ES's target)")
    ax3.axvline(r["rugged_lr"], color="0.5", linestyle=":")
    ax3.set_xscale("log")
    ax3.set_xlabel("learning rate")
    ax3.set_ylabel("validation loss")
    ax3.set_title(f"zoom at T = {max(cfg.horizons)}: within 2x of the rugged rate {r['rugged_lr']:.3g}",
                  fontsize="medium")
    labels = list(r["estimators"])
    for i, label in enumerate(labels):
        g = r["estimators"][label]["grads"]
        ax4.plot(np.full(g.shape, i) + np.linspace(-0.2, 0.2, g.size), g, "o", alpha=0.7)
    ax4.set_yscale("symlog", linthresh=1e-2)
    ax4.set_xticks(range(len(labels)), [label.split(",")[0] + (")" if "," in label else "") for label in labels])
    ax4.set_ylabel("dL/dlog lr, one point per key")
    ax4.set_title(f"estimates across {cfg.variance_keys} keys at the rugged setting", fontsize="medium")
    for ax in (ax1, ax2, ax3, ax4):
        ax.grid(True, alpha=0.3, which="both")
    for ax in (ax1, ax2, ax3):
        ax.legend(fontsize="small")
    path = os.path.join(out, f"{NAME}.png")
    fig.savefig(path, dpi=100)
    return [path]


def main(argv=None):
    args = _claims.arguments(__doc__, argv)
    hg.use_compilation_cache()
    cfg = SMOKE if args.smoke else FULL
    began = time.perf_counter()
    progress = _progress.Progress(args, NAME, cfg, resume=True)  # each horizon kept as it is measured
    r = run(cfg, progress.unit)
    claims, numbers = verdicts(r, cfg)
    surface_table, estimator_table = tables(r, cfg)
    body = "\n".join([
        "# Chaotic loss surfaces and exploding hypergradients (Metz et al. 2019/2021, Vicol et al. 2021), on digits", "",
        f"Digits stand in for MNIST. MLP with hidden layer {cfg.hidden} (tanh), minibatches of {cfg.batch_size}, SGD "
        f"with momentum {MOMENTUM:g} at a constant learning rate (the one hyperparameter, log-uniform in [{LO:g}, "
        f"{HI:g}]), T in {list(cfg.horizons)}; the objective is the validation loss after T steps. Losses capped at "
        f"{CAP:g}; a run whose loss is not finite or above {DIVERGED:.2f} (twice chance level) counts as diverged.",
        "",
        "The papers' claims (no numbers to match: they are shapes): the meta-loss surface of an unrolled "
        "optimisation becomes rugged and the exact meta-gradient explodes as the unroll and the learning rate grow "
        "(Metz et al.), and ES and PES smooth the surface, with far lower variance than back-propagation through "
        "the unroll there (Vicol et al.).", "",
        "## Loss surface and hypergradient norms", "",
        surface_table, "",
        f"Random search needs no gradient, so none of this hurts it: the grid above is what it sees, and its best "
        f"rate at T = {max(cfg.horizons)} is {r['surfaces'][max(cfg.horizons)]['best_lr']:.3g}. No tuner is run: the "
        "claims are about the estimators.", "",
        f"## Estimators at the rugged setting (T = {max(cfg.horizons)}, lr {r['rugged_lr']:.3g})", "",
        "The rugged rate: of the norm grid's rates at the largest T where no key diverged, the one with the largest "
        "median Reverse norm. std x sqrt(cost) compares at equal compute (averaging k estimates divides the std by "
        "sqrt(k)).", "",
        estimator_table, "",
        f"![loss surfaces, norms and estimates](./{NAME}.png)", ""]) + progress.note()
    figures = plot(args.out, r, cfg)
    _claims.publish(args, NAME, body, claims, began=began, figures=figures, numbers=numbers)


if __name__ == "__main__":
    main()

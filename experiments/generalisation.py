"""Does a tuned schedule fit one seed's validation noise, and do the usual remedies help?

Tuning a 200-step learning-rate schedule (plus momentum and weight decay) on one training key
descends a deterministic function of that key: the pick's validation loss can fall below what the
setting is worth on fresh data. Three ways of running the same population tuner (8 tuners from the
best of 32 random warm-up trials, halving every 5 of 20 outer steps, Adam 0.1 in unconstrained
coordinates, Reverse) on the digits MLP preset (`hg.problems.preset("digits-mlp")`):

- `fixed key`: every outer step trains with the same key (what the baselines search);
- `resample_key`: a fresh training key per outer step (`hg.tune(..., resample_key=True)`): the
  hypergradient is stochastic over initialisations and minibatch orders;
- `cv=3`: the same, on 3-fold cross-validation of the pooled train and validation examples
  (`mlp_classifier(..., cv=3)`): the value is the fold mean (each step costs 3 fits).

For each seed (the key of every run; seeds 0, 1, 2 fixed before looking), the pick is the run's
`best_trial`: the lowest validation loss of the run, taken on the run's key. For `resample_key` that
is the lowest among the trials scored on the run's key (the warm-up's and each live tuner's final
iterate), not among the steps' trials, each scored on its own `fold_in(key, step)`: those values are
not reproduced on the run's key, so the pick and its optimism would not be comparable with the
other variants'. (Runs recorded before `Result` chose so took the lowest over all trials.) Its
setting is then retrained with 4 keys it was not tuned on:

- optimism: the mean of those retrained validation values (the variant's own objective: the fold
  mean for cv=3) minus the value the tuner reported. Positive when the tuner fitted its keys' noise;
- fresh-key test loss: the test loss of the setting trained on the train split (the preset's
  objective, the same for every variant) with those keys: what the setting is worth.

    python experiments/generalisation.py            # full: experiments/results/generalisation.md
    python experiments/generalisation.py --smoke    # seconds, for CI

Not a paper's claim: our own (issue 14's "generalisation, visible"), with a verdict rule fixed here:
"held" if a remedy's optimism is below the fixed key's and its fresh-key test loss is no higher;
"partly" if only one of the two; "not held" otherwise. Both are judged on the difference remedy -
fixed key paired over seeds (the same seed tunes both and retrains both with the same keys), with the
margin the other experiments use: the optimism is lower when the mean difference is below minus two
standard errors, and the test loss is higher only when the mean difference is above plus two standard
errors (a difference inside the seeds' noise is no difference). The first full runs judged medians
over seeds with no margin; a review found those verdicts resting on gaps inside the noise, and the
margin was added then, before recomputing the verdict from the same recorded runs.

Each (seed, strategy) row is kept in `<out>/generalisation.partial.json` as it is measured (`_progress`), so
an interrupted run keeps its finished rows; a rerun into the same `--out` with the same mode and
environment reads them back instead of measuring them again.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import optax

import hypergrad as hg
import _claims
import _progress

NAME = "generalisation"
VARIANTS = ("fixed key", "resample_key", "cv=3")


def objective_and_space(variant: str, steps: int):
    objective, space = hg.problems.preset("digits-mlp", steps)
    if variant == "cv=3":
        problem = hg.problems.mlp_classifier("digits", hidden=(50,), batch_size=100, cv=3)
        objective = hg.Objective(problem, hg.problems.sgd_momentum_schedule, steps)
    return objective, space


def retrained(pick, variant: str, steps: int, seed: int, repeats: int) -> tuple[float, float]:
    """(mean validation value on the variant's own objective, mean test loss on the preset's) of the
    pick's setting retrained with `repeats` keys it was not tuned on."""
    own, _ = objective_and_space(variant, steps)
    preset, _ = hg.problems.preset("digits-mlp", steps)
    hparams = {name: np.asarray(value) for name, value in pick.hparams.items()}
    keys = [jax.random.key(1000 + 10 * seed + r) for r in range(repeats)]
    value = np.mean([float(own(hparams, k)) for k in keys])
    test = np.mean([float(preset.evaluate(hparams, k)["test_loss"]) for k in keys])
    return float(value), float(test)


def origin(pick, result) -> str:
    """Where the pick came from: a warm-up trial (random, untuned: `tuner` None) or a tuner's trial, its
    final iterate (`info["final_trials"]`) or another outer step; read from the result, never assumed."""
    if pick.tuner is None:
        return f"warm-up trial #{pick.number} (random, untuned)"
    final = pick.number in set(result.info.get("final_trials") or ())
    return f"tuner {pick.tuner}, {'final iterate' if final else 'outer step'} (trial #{pick.number})"


def run(variant: str, seed: int, sizes: dict) -> dict:
    objective, space = objective_and_space(variant, sizes["T"])
    result = hg.tune(objective, space, jax.random.key(seed), population=sizes["population"],
                     warmup=sizes["warmup"], halving=sizes["halving"], steps=sizes["steps"],
                     outer=optax.adam(0.1), resample_key=variant == "resample_key")
    pick = result.best_trial  # for resample_key, among the trials scored on the run's key
    value, test = retrained(pick, variant, sizes["T"], seed, sizes["repeats"])
    return {"variant": variant, "seed": seed, "pick": origin(pick, result), "warmup_pick": pick.tuner is None,
            "val": pick.value, "test": pick.scores["test_loss"],
            "optimism": value - pick.value, "fresh_test": test, "runs": result.runs,
            "seconds": result.seconds + result.compile_seconds}


def paired_gap(rows: list[dict], remedy: str, field: str) -> tuple[float, float]:
    """(mean, standard error) over seeds of `field`'s difference remedy - fixed key, paired by seed
    (s.e. inf with one seed)."""
    fixed = {r["seed"]: r[field] for r in rows if r["variant"] == "fixed key"}
    d = np.asarray([r[field] - fixed[r["seed"]] for r in rows if r["variant"] == remedy], np.float64)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("inf")


def warmup_note(rows: list[dict], variant: str | None = None) -> str:
    """' ... is a warm-up trial ...' naming each (variant, seed) whose pick is a warm-up trial (random, untuned),
    of `variant` and the fixed key it is paired with (all variants when None); '' when every pick is a tuner's."""
    named = [r for r in rows
             if r.get("warmup_pick") and (variant is None or r["variant"] in (variant, "fixed key"))]
    if not named:
        return ""
    which = ", ".join(f"{r['variant']} seed {r['seed']}" for r in named)
    return (f" The pick of {which} is a warm-up trial (the best of the random warm-up, untuned), not a tuner's: "
            "no tuned candidate scored lower on the run's key, so that seed compares random search's pick.")


def verdict(rows: list[dict]) -> list[_claims.Claim]:
    """The rule in the module docstring: paired over seeds, a 2 s.e. margin."""
    def median(variant, field):
        return float(np.median([r[field] for r in rows if r["variant"] == variant]))

    claims = []
    for remedy in VARIANTS[1:]:
        (d_opt, se_opt), (d_test, se_test) = (paired_gap(rows, remedy, f) for f in ("optimism", "fresh_test"))
        better = [d_opt < -2.0 * se_opt, d_test <= 2.0 * se_test]
        word = "held" if all(better) else ("partly" if any(better) else "not held")
        claims.append(_claims.Claim(
            paper="hypergrad (issue 14)", claim=f"{remedy} keeps a tuned schedule from fitting its training "
            "keys' noise (rule revised on review after the first full run: paired over seeds with a 2 s.e. margin; "
            "it first judged medians)", ours=f"{remedy} minus fixed key, paired over seeds: optimism {d_opt:+.4f} ± {se_opt:.4f} "
            f"s.e., fresh-key test loss {d_test:+.4f} ± {se_test:.4f} s.e. (medians: optimism "
            f"{median(remedy, 'optimism'):.4f} vs {median('fixed key', 'optimism'):.4f}, fresh-key test loss "
            f"{median(remedy, 'fresh_test'):.4f} vs {median('fixed key', 'fresh_test'):.4f})", verdict=word,
            why=f"rule: optimism lower by more than 2 s.e. ({better[0]}) and fresh-key test loss not higher by more "
                f"than 2 s.e. ({better[1]}); held if both, partly if one (paired, with this margin, since a review "
                "of the first full run; it judged medians). Optimism is the pick's retrained validation value minus "
                "its tuned value; the fresh-key test loss is its test loss retrained on keys it was not tuned on."
                + warmup_note(rows, remedy)))
    return claims


def body(rows: list[dict], sizes: dict) -> str:
    table = _claims.markdown_table(
        ["strategy", "seed", "pick", "val of pick", "test loss of pick", "optimism", "test loss, fresh keys", "runs",
         "s"],
        [[r["variant"], r["seed"], r.get("pick", "not recorded"), f"{r['val']:.4f}", f"{r['test']:.4f}",
          f"{r['optimism']:.4f}",
          f"{r['fresh_test']:.4f}", f"{r['runs']:.0f}", f"{r['seconds']:.1f}"] for r in rows])
    medians = _claims.markdown_table(
        ["strategy", "median val", "median test", "median optimism", "median fresh-key test"],
        [[v, *(f"{np.median([r[f] for r in rows if r['variant'] == v]):.4f}"
               for f in ("val", "test", "optimism", "fresh_test"))] for v in VARIANTS])
    return (f"# Generalisation of a tuned schedule: fixed key, resampled keys, cross-validation\n\n"
            f"{__doc__.split(chr(10) + chr(10), 1)[1].split('    python')[0].strip()}\n\n"
            f"Sizes: {sizes}.\n\n## Runs\n\n{table}\n\n"
            + ("The pick column says where each pick came from (a warm-up trial or a tuner's trial)."
               + (warmup_note(rows) or " Every pick is a tuner's trial.")) + "\n\n"
            f"## Medians over seeds\n\n{medians}\n")


def main(argv=None):
    args = _claims.arguments(__doc__, argv)
    hg.use_compilation_cache()
    sizes = ({"T": 8, "population": 1, "warmup": None, "halving": None, "steps": 1, "repeats": 1, "seeds": (0,)}
             if args.smoke else
             {"T": 200, "population": 8, "warmup": 32, "halving": 5, "steps": 20, "repeats": 4, "seeds": (0, 1, 2)})
    started = time.perf_counter()
    progress = _progress.Progress(args, NAME, sizes, resume=True)  # each row kept as it is measured
    rows = []
    for seed in sizes["seeds"]:
        for variant in VARIANTS:
            rows.append(progress.unit(f"seed {seed}, {variant}", lambda: run(variant, seed, sizes)))
            print(rows[-1], flush=True)
    claims = verdict(rows)
    page = body(rows, sizes) + progress.note()
    md, _ = _claims.write(args.out, NAME, page, claims, seconds=time.perf_counter() - started,
                          smoke=args.smoke, numbers={"rows": rows})
    print(page)
    print(f"wrote {md}")
    for claim in claims:
        print(f"{claim.claim}: {claim.verdict} ({claim.ours})")


if __name__ == "__main__":
    main()

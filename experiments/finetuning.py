"""Does gradient-based tuning help fine-tuning? Digits 0-4 -> 5-9 with few labels, at equal compute.

An MLP 64-64-64-5 (flax.nnx) is pretrained once on digits 0-4 (cached on disk,
`hg.problems.pretrained_digits_mlp`) and fine-tuned, with a fresh head, on digits 5-9 with `shots`
labelled training examples per class (`hg.problems.digits_transfer`; `min(shots, 30)` validation
examples per class, 40 per class held out for test). For each number of shots and each of 5 seeds
(the seeds, 0-4, fixed before looking: each is the few-shot split and the training key) the
strategies below each get the same budget of training-run equivalents:

- default:    one run of the usual recipe: one rate 0.01 for every layer, momentum 0.9, no L2-SP,
              no warm-up (the budget is not used: this is what a user does without tuning);
- grid:       grid search over the preset's three scalars (one shared rate, L2-SP, warm-up);
- random:     random search over the same three;
- gradient:   hg.tune, a population of 4 tuners from the best of a random warm-up (a quarter of the
              budget), halved once; it descends one rate per layer, the L2-SP strength and the warm-up;
- scratch:    the same network drawn at random and trained with random search over the same space
              (L2-SP then has no reference and reads nothing).

Each strategy's pick is its lowest validation loss within the budget; the table reports its test
accuracy (mean ± std over the seeds), the compute it spent (runs, seconds) and, for the gradient
strategy, the learned rate of each layer (figure `finetuning_rates.png`).

    python experiments/finetuning.py                    # writes experiments/results/finetuning.md
    python experiments/finetuning.py --smoke --out DIR  # seconds; a temporary model cache under DIR
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import hypergrad as hg

STRATEGIES = ("default", "grid", "random", "gradient", "scratch")


def _pick(result: hg.Result, budget: float):
    trial = result.best_within(budget, "runs")
    return trial, float(result.spent("runs")[-1]), float(result.spent("seconds")[-1])


def _gradient(objective, space, key, budget, step_runs=3.0):
    """A population of 4 from a quarter of the budget in warm-up; as many outer steps as fit
    (one hypergradient costs about `step_runs` runs), halved once halfway."""
    warmup = max(4, budget // 4)
    steps = max(2, int((budget - warmup) / (step_runs * 3)))  # 4 tuners, then 2: about 3 per step
    return hg.tune(objective, space, key, population=4, warmup=warmup, halving=max(1, steps // 2), steps=steps)


def run_seed(shots: int, seed: int, budget: int, steps: int, cache: str | None) -> dict:
    """Every strategy on one few-shot split; {strategy: (test accuracy, runs, seconds, hparams)}."""
    key = jax.random.key(seed)
    problem = hg.problems.digits_transfer(shots, seed=seed, cache=cache)
    objective, space = hg.problems.finetune_space(problem, steps)
    scratch, _ = hg.problems.finetune_space(hg.problems.digits_transfer(shots, seed=seed, cache=cache,
                                                                        pretrained=False), steps)
    out = {}
    started = time.perf_counter()
    default = {"lr": jnp.full(space["lr"].shape, 0.01)}
    scores = objective.evaluate(default, key)
    out["default"] = (float(scores["test_accuracy"]), 1.0, time.perf_counter() - started, default)
    points = max(1, int(budget ** (1 / 3) + 1e-9))  # the largest grid within the budget
    results = {"grid": hg.grid_search(objective, space, key, points_per_axis=points),
               "random": hg.random_search(objective, space, key, num_trials=budget),
               "gradient": _gradient(objective, space, key, budget),
               "scratch": hg.random_search(scratch, space, key, num_trials=budget)}
    for name, result in results.items():
        trial, runs, seconds = _pick(result, budget)
        out[name] = (float(trial.scores["test_accuracy"]), runs, seconds, trial.hparams)
    return out


def _table(rows: dict, shots_list, seeds) -> str:
    lines = ["| shots/class | strategy | test accuracy (mean ± std) | runs | seconds | learned rate per layer (mean) |",
             "|---|---|---|---|---|---|"]
    for shots in shots_list:
        for name in STRATEGIES:
            cells = [rows[(shots, s)][name] for s in seeds]
            acc = np.array([c[0] for c in cells])
            rates = np.mean([np.broadcast_to(np.asarray(c[3]["lr"]), (3,)) for c in cells], axis=0)
            lines.append(f"| {shots} | {name} | {acc.mean():.3f} ± {acc.std():.3f} | "
                         f"{np.mean([c[1] for c in cells]):.0f} | {np.mean([c[2] for c in cells]):.1f} | "
                         + ", ".join(f"{r:.3g}" for r in rates) + " |")
    return "\n".join(lines)


def _verdict(rows: dict, shots_list, seeds) -> str:
    lines = []
    for shots in shots_list:
        means = {n: np.mean([rows[(shots, s)][n][0] for s in seeds]) for n in STRATEGIES}
        order = sorted(means, key=means.get, reverse=True)
        lines.append(f"- {shots} shots per class: **{order[0]}** ({means[order[0]]:.3f}), then "
                     + ", ".join(f"{n} ({means[n]:.3f})" for n in order[1:]) + ".")
    return "\n".join(lines)


def _plot(rows, shots_list, seeds, path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, shots in enumerate(shots_list):
        rates = np.array([np.asarray(rows[(shots, s)]["gradient"][3]["lr"]) for s in seeds])
        layers = np.arange(rates.shape[1])
        ax.errorbar(layers + 0.08 * i, rates.mean(0), yerr=rates.std(0), marker="o", capsize=3, label=f"{shots} shots")
    ax.set_yscale("log")
    ax.set_xticks(layers, [f"layer {i}" for i in layers[:-1]] + ["head"])
    ax.set_ylabel("learned learning rate")
    ax.set_title("gradient-tuned rate per layer (mean ± std over seeds)", fontsize="medium")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds: 1 seed, 10 shots, tiny budget")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--shots", default="10,50,100", help="labelled examples per class (at most about 100)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=64, help="training-run equivalents per strategy")
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps T")
    parser.add_argument("--cache", default=None, help="pretrained model cache (default: the user cache)")
    args = parser.parse_args(argv)
    shots_list = [int(s) for s in args.shots.split(",")]
    seeds = list(range(args.seeds))
    if args.smoke:
        shots_list, seeds, args.budget, args.steps = [10], [0], 12, 10
        args.cache = args.cache or os.path.join(args.out, "pretrained-cache")
    rows = {}
    for shots in shots_list:
        for seed in seeds:
            rows[(shots, seed)] = run_seed(shots, seed, args.budget, args.steps, args.cache)
            print(f"[shots {shots}, seed {seed}] " + ", ".join(f"{n} {v[0]:.3f}" for n, v in rows[(shots, seed)].items()),
                  flush=True)
    table, verdict = _table(rows, shots_list, seeds), _verdict(rows, shots_list, seeds)
    print(table + "\n\n" + verdict)
    os.makedirs(args.out, exist_ok=True)
    figure = _plot(rows, shots_list, seeds, os.path.join(args.out, "finetuning_rates.png"))
    name = "finetuning_smoke.md" if args.smoke else "finetuning.md"
    with open(os.path.join(args.out, name), "w") as f:
        f.write(f"# Fine-tuning digits 0-4 -> 5-9 at equal compute\n\n{__doc__.split(chr(10) * 2, 1)[1]}\n"
                f"Budget {args.budget} runs per strategy, T={args.steps}, seeds {seeds}.\n\n{table}\n\n"
                f"## Who wins where\n\n{verdict}\n"
                + (f"\n![learned rates]({os.path.basename(figure)})\n" if figure else ""))


if __name__ == "__main__":
    main()

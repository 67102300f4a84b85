"""What the study store costs: a 256-trial random search with and without `storage=`/`study=`.

    .venv/bin/python benchmarks/store_overhead.py --out benchmarks/store_overhead.md   # a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/store_overhead.py --smoke                                # seconds (the test)

The digits MLP of every benchmark (`_common.make_problem`), its learning rate a schedule of T steps
(searched as a constant, but each trial's hparams hold all T values, which the store writes as
JSON), momentum and weight decay. The program is compiled once first; then plain and stored searches
alternate, `--repeats` of each, every stored one into a new study of a new file (the whole cost:
creating the file, one transaction per chunk of trials, marking the study complete). The table
gives the median wall seconds of each, and the overhead against the target of issue 19 (<= 5%).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import _common as common
import jax

import hypergrad as hg


def space(num_steps: int) -> hg.Space:
    return hg.Space({"lr": hg.LogUniform(1e-3, 1.0, shape=(num_steps,)), "momentum": hg.Uniform(0.0, 0.99),
                     "weight_decay": hg.LogUniform(1e-6, 1e-1)})


def measure(num_trials: int, num_steps: int, repeats: int) -> dict:
    """Median seconds of plain and stored searches, alternated after one compiling call."""
    objective = hg.Objective(common.make_problem(), common.optimizer, num_steps=num_steps)
    key, searched = jax.random.key(0), space(num_steps)
    hg.random_search(objective, searched, key, num_trials)  # compiles
    plain, stored = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            began = time.perf_counter()
            hg.random_search(objective, searched, key, num_trials)
            plain.append(time.perf_counter() - began)
            began = time.perf_counter()
            result = hg.random_search(objective, searched, key, num_trials, storage=os.path.join(tmp, f"{i}.db"),
                                      study="bench")
            stored.append(time.perf_counter() - began)
            assert len(hg.load_study(os.path.join(tmp, f"{i}.db"), "bench").trials) == len(result.trials)
        size = os.path.getsize(os.path.join(tmp, "0.db"))
    return {"trials": num_trials, "steps": num_steps, "repeats": repeats, "plain": statistics.median(plain),
            "stored": statistics.median(stored), "plain_all": plain, "stored_all": stored, "bytes": size}


def render(row: dict) -> str:
    """The table: medians with ranges, the overhead as the median of the paired differences (each
    stored run against the plain run just before it, which shared its moment's load) over the plain
    median, and the same from the fastest runs of each."""
    paired = statistics.median(s - p for s, p in zip(row["stored_all"], row["plain_all"])) / row["plain"]
    fastest = min(row["stored_all"]) / min(row["plain_all"]) - 1
    verdict = "met" if paired <= 0.05 else "missed"
    spread = lambda xs: f"{min(xs):.3f}-{max(xs):.3f}"  # noqa: E731
    return "\n".join([
        "# Study store overhead (issue 19: writing costs <= 5% of a 256-trial search)",
        "",
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; digits MLP, lr schedule of "
        f"{row['steps']} steps, median of {row['repeats']} alternated runs each (range in brackets); overhead: "
        "median paired difference over the plain median (in parentheses: fastest stored run over fastest plain run)",
        "",
        "| trials | T | without storage (s) | with storage (s) | overhead | file size (KiB) | <= 5% |",
        "|---|---|---|---|---|---|---|",
        f"| {row['trials']} | {row['steps']} | {row['plain']:.3f} [{spread(row['plain_all'])}] | "
        f"{row['stored']:.3f} [{spread(row['stored_all'])}] | {100 * paired:+.1f}% ({100 * fastest:+.1f}%) | "
        f"{row['bytes'] / 1024:.0f} | {verdict} |",
    ])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="training steps T (the schedule's length)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--smoke", action="store_true", help="32 trials, T=10, 2 repeats (seconds)")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.trials, args.steps, args.repeats = 32, 10, 2
    common.write_report(render(measure(args.trials, args.steps, args.repeats)), args.out)


if __name__ == "__main__":
    main()

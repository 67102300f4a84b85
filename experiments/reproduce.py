"""Runs every registered reproduction's full mode and writes experiments/RESULTS.md: one line per claim.

Each experiment in `EXPERIMENTS` is started as a user would start it,
`python experiments/<name>.py --out <results>`, one after the other; it writes `<results>/<name>.md`,
its figures and the sidecar `<results>/<name>.json` with its claims and verdicts (`_claims.py`). This
script reads the sidecars back and writes the summary table (experiment, paper, claim, our number,
verdict, wall time). An experiment that fails, or writes no sidecar, gets a line saying so and the
others still run.

    python experiments/reproduce.py                     # everything (make reproduce; target < 30 min on 2 cores)
    python experiments/reproduce.py --only hyper_cleaning
    python experiments/reproduce.py --collect           # rewrite RESULTS.md from the sidecars already there
    python experiments/reproduce.py --smoke             # seconds each, into results/reproduce-smoke/

Not an experiment itself: it has no claim of its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import _claims

# The registry: one name per experiments/<name>.py. Append yours (its full mode must write
# <out>/<name>.json through _claims.write).
EXPERIMENTS = [
    "estimator_quality",   # short-horizon bias (Wu et al. 2018): its sidecar; estimator quality itself has no claim line
    "hyper_cleaning",      # Franceschi et al. 2017
    "learned_schedules",   # Maclaurin, Duvenaud & Adams 2015
    "generalisation",      # ours (issue 14): resample_key and cross-validation against fitting one key's noise
    "finetuning",          # ours (issue 16) with Yosinski et al. 2014, Howard & Ruder 2018: fine-tuning vs scratch, tuners
    "weight_decay_per_parameter",  # Lorraine, Vicol & Duvenaud 2020
    "online_lr",           # Baydin et al. 2018
    "truncation",          # Shaban et al. 2019
    "distillation",        # Wang et al. 2018
    "long_horizon",        # Micaelli & Storkey 2021
    "chaos",               # Metz et al. 2019/2021, Vicol et al. 2021
]

HERE = os.path.dirname(os.path.abspath(__file__))


def run_one(name: str, results: str, smoke: bool) -> tuple[int, float, str]:
    """Runs experiments/<name>.py; returns (exit code, wall seconds, the tail of its output)."""
    command = [sys.executable, os.path.join(HERE, f"{name}.py"), "--out", results] + (["--smoke"] if smoke else [])
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    with open(os.path.join(results, f"{name}.log"), "w") as f:
        f.write(done.stdout + done.stderr)
    return done.returncode, seconds, (done.stdout + done.stderr)[-2000:]


def summary(names: list[str], results: str, out: str, wall: dict[str, float]) -> str:
    """The RESULTS.md page: one line per claim read from the sidecars (or a line saying none came)."""
    link_dir = os.path.relpath(results, os.path.dirname(os.path.abspath(out)))
    rows, modes = [], set()
    for name in names:
        page = f"[{name}]({link_dir}/{name}.md)"
        try:
            sidecar = _claims.read(results, name)
        except (OSError, ValueError, KeyError, TypeError) as error:
            rows.append([page, "", "", f"no results ({type(error).__name__}: see {name}.log)", "**failed**", ""])
            continue
        modes.add(sidecar["mode"])
        seconds = wall.get(name, sidecar.get("seconds"))
        for claim in sidecar["claims"]:
            rows.append([page, claim["paper"], claim["claim"], claim["ours"], f"**{claim['verdict']}**",
                         "" if seconds is None else f"{seconds:.0f}"])
    counts = {v: sum(r[4] == f"**{v}**" for r in rows) for v in _claims.VERDICTS}
    headline = ", ".join(f"{n} {v}" for v, n in counts.items())
    total = sum(wall.values())
    lines = [
        "# The classic results, reproduced", "",
        "One line per published claim: the paper's claim, our number, and the verdict (held / partly / not "
        "held) each experiment decides by a rule fixed in its code before its first full run. Each "
        "experiment's page (linked) has the set-up, the tables, the figures and why. Data: scikit-learn's "
        "bundled sets (digits stands in for MNIST). Regenerate with `make reproduce`.", "",
        f"Claims: {len(rows)} ({headline})." + (f" Wall time of this run: {total / 60:.1f} min." if wall else "")
        + ("" if modes <= {"full"} else " **Smoke mode: tiny sizes, the numbers mean nothing.**"), "",
        _claims.markdown_table(["experiment", "paper", "claim", "ours", "verdict", "wall s"], rows), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="run each experiment's seconds-long mode")
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, help="run only these (the summary lists all)")
    parser.add_argument("--collect", action="store_true", help="run nothing; rewrite the summary from the sidecars")
    parser.add_argument("--results", help="where experiments write (default experiments/results; with --smoke "
                        "results/reproduce-smoke, so that a smoke run never overwrites the full results)")
    parser.add_argument("--out", help="the summary page (default experiments/RESULTS.md; with --smoke "
                        "<results>/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.results is None:
        args.results = os.path.join("results", "reproduce-smoke") if args.smoke else os.path.join(HERE, "results")
    if args.out is None:
        args.out = os.path.join(args.results, "RESULTS.md") if args.smoke else os.path.join(HERE, "RESULTS.md")
    os.makedirs(args.results, exist_ok=True)
    wall, failed = {}, []
    if not args.collect:
        for name in args.only or EXPERIMENTS:
            print(f"running {name} ...", flush=True)
            code, seconds, tail = run_one(name, args.results, args.smoke)
            wall[name] = seconds
            print(f"  {name}: exit {code}, {seconds:.0f} s", flush=True)
            if code != 0:
                failed.append(name)
                print(tail, file=sys.stderr)
    page = summary(EXPERIMENTS, args.results, args.out, wall)
    with open(args.out, "w") as f:
        f.write(page)
    print(page)
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

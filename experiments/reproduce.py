"""Runs every registered reproduction's full mode and writes experiments/RESULTS.md: one line per claim.

Each experiment in `EXPERIMENTS` is started as a user would start it,
`python experiments/<name>.py --out <results>`, one after the other; it writes `<results>/<name>.md`,
its figures and the sidecar `<results>/<name>.json` with its claims and verdicts (`_claims.py`). This
script streams its output, line by line as it comes, to this terminal and to `<results>/<name>.log` (so an
interrupted run keeps what it printed; the run before's log is kept as `<name>.previous.log`), then writes
into the sidecar the wall seconds it measured for the subprocess (`wall_seconds`, `reproduce_run`; or
`reproduce_failed`). The summary table (experiment, paper, claim, our number, verdict, wall time) is read
from the sidecars alone, so `--collect` rewrites exactly the page the run wrote. An experiment that fails,
or writes no sidecar, gets a line saying so and the others still run; a registered experiment that never
ran (no sidecar, no log) gets no line, only a mention. The page and the sidecars are replaced whole
(`_claims.write_atomically`), never left half written.

    python experiments/reproduce.py                     # everything (make reproduce; target < 30 min on 2 cores)
    python experiments/reproduce.py --only hyper_cleaning
    python experiments/reproduce.py --collect           # rewrite RESULTS.md from the sidecars already there
    python experiments/reproduce.py --smoke             # seconds each, into results/smoke/reproduce/

Not an experiment itself: it has no claim of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import _claims

# The registry: one name per experiments/<name>.py. Append yours (its full mode must write
# <out>/<name>.json through _claims.write).
EXPERIMENTS = [
    "estimator_quality",   # truncation bias (Shaban et al. 2019): its sidecar; estimator quality itself has no claim line
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


def run_one(name: str, results: str, smoke: bool, run: str) -> tuple[int, float]:
    """Runs experiments/<name>.py; returns (exit code, wall seconds). Its output goes to this terminal and
    to `<results>/<name>.log` as it is printed (`stream`); the previous run's log, if any, is first moved
    to `<name>.previous.log` (replacing the one before it), so a failure's log survives one rerun. Then
    `record`s the run into the sidecar."""
    command = [sys.executable, os.path.join(HERE, f"{name}.py"), "--out", results] + (["--smoke"] if smoke else [])
    path = os.path.join(results, f"{name}.log")
    if os.path.exists(path):
        os.replace(path, os.path.join(results, f"{name}.previous.log"))
    began, started = time.perf_counter(), time.time()
    with open(path, "w") as log:
        code = stream(command, log)
    seconds = time.perf_counter() - began
    record(results, name, run, code, seconds, started)
    return code, seconds


def stream(command: list[str], log) -> int:
    """Runs `command` (its Python unbuffered) and copies each line of its output, stdout and stderr
    together, to `log` and to this terminal as it is printed, flushing both; returns the exit code. The
    command is killed if this process is interrupted, and what it printed until then stays in `log`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # else a child's prints reach the pipe only when it exits
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", env=env) as child:
        try:
            for line in child.stdout:
                log.write(line)
                log.flush()
                sys.stdout.write(line)
                sys.stdout.flush()
        except BaseException:
            child.kill()
            raise
    return child.returncode


def record(results: str, name: str, run: str, code: int, seconds: float, started: float) -> None:
    """Writes what this run of reproduce.py measured into the sidecar, the page's single source: on
    success `wall_seconds` (the subprocess's wall seconds, interpreter start included) and `reproduce_run`
    (`run`, this invocation's UTC start); on failure `reproduce_failed` = {run, exit, wall_seconds}, added
    to the older sidecar if one is there (its claims are not this run's). A sidecar the experiment did not
    write during this run (older than `started`) after exit 0 counts as a failure too."""
    path = os.path.join(results, f"{name}.json")
    try:
        fresh = os.path.getmtime(path) >= started
        with open(path) as f:
            sidecar = json.load(f)
    except (OSError, ValueError):
        return  # none (or unreadable): the summary's failed line comes from the log
    for field in ("reproduce_failed", "wall_seconds", "reproduce_run"):
        sidecar.pop(field, None)
    if code == 0 and fresh:
        sidecar.update(wall_seconds=seconds, reproduce_run=run)
    else:
        sidecar["reproduce_failed"] = {"run": run, "exit": code, "wall_seconds": seconds}
    _claims.write_atomically(path, json.dumps(sidecar, indent=1))


def rows_of(name: str, results: str, link_dir: str) -> tuple[list[list[str]], dict | None]:
    """One table row per claim of <name>'s sidecar (its wall seconds: the sidecar's `wall_seconds`, else its
    own `seconds`), or one 'failed' row; ([], None) for an experiment that never ran here (no sidecar, no log)."""
    page = f"[{name}]({link_dir}/{name}.md)"
    try:
        sidecar = _claims.read(results, name)
    except FileNotFoundError:
        if not os.path.exists(os.path.join(results, f"{name}.log")):
            return [], None
        kept = (f"; what it measured before it stopped: {name}.partial.json"
                if os.path.exists(_claims.partial_path(results, name)) else "")
        return [[page, "", "", f"no results (no sidecar: see {name}.log{kept})", "**failed**", ""]], None
    except (OSError, ValueError, KeyError, TypeError) as error:
        return [[page, "", "", f"no results ({type(error).__name__}: see {name}.log)", "**failed**", ""]], None
    failure = sidecar.get("reproduce_failed")
    if failure:
        return [[page, "", "", f"the reproduce.py run of {failure['run']} exited {failure['exit']} (see {name}.log);"
                 f" older results in {name}.json", "**failed**", f"{failure['wall_seconds']:.0f}"]], sidecar
    seconds = sidecar.get("wall_seconds", sidecar.get("seconds"))
    return [[page, claim["paper"], claim["claim"], claim["ours"], f"**{claim['verdict']}**",
             "" if seconds is None else f"{seconds:.0f}"] for claim in sidecar["claims"]], sidecar


def last_run(sidecars: list[dict]) -> str:
    """' Wall time of the last reproduce.py run ...' from the sidecars it recorded, or '' if none did; when
    that run ran only some of them (`--only`), also the sum of every experiment's own last wall time, so the
    page still says what all of them take."""
    runs = {s.get("reproduce_run") or (s.get("reproduce_failed") or {}).get("run") for s in sidecars} - {None}
    if not runs:
        return ""
    run = max(runs)
    seconds = [s["wall_seconds"] if s.get("reproduce_run") == run else s["reproduce_failed"]["wall_seconds"]
               for s in sidecars if run in (s.get("reproduce_run"), (s.get("reproduce_failed") or {}).get("run"))]
    line = (f" Wall time of the last reproduce.py run (started {run}, {len(seconds)} experiment"
            f"{'' if len(seconds) == 1 else 's'}): "
            f"{sum(seconds) / 60:.1f} min.")
    walls = [s.get("wall_seconds", s.get("seconds")) for s in sidecars]
    if len(seconds) < len(sidecars) and all(w is not None for w in walls):  # a run of some (--only): the whole too
        line += (f" All {len(sidecars)} experiments, each at its own last run (the table's last column): "
                 f"{sum(walls) / 60:.1f} min.")
    return line


def environments(sidecars: list[dict]) -> str:
    """' Produced by: ...' (`_claims.environment_line`) for the sidecars of the last reproduce.py run (all
    sidecars when none records one): one environment, or each with the experiments it produced, told
    apart by everything but each experiment's start (the header gives the run's); a sidecar written
    before environments were recorded counts as 'not recorded'. After a run of only some experiments the
    line says it is that run's (each page names its own)."""
    runs = {s.get("reproduce_run") for s in sidecars} - {None}
    chosen = [s for s in sidecars if s.get("reproduce_run") == max(runs)] if runs else sidecars
    if not chosen:
        return ""
    by_env: dict[str, list[str]] = {}
    for s in chosen:
        env = {k: v for k, v in (s.get("environment") or {}).items() if k != "started_utc"}
        by_env.setdefault(_claims.environment_line(env) or "not recorded", []).append(s["experiment"])
    lead = " Produced by: " if len(chosen) == len(sidecars) else " That run was produced by: "  # --only: its own
    if len(by_env) == 1:
        return f"{lead}{next(iter(by_env))}."
    return lead + "; ".join(f"{', '.join(names)}: {env}" for env, names in by_env.items()) + "."


def summary(names: list[str], results: str, out: str) -> str:
    """The RESULTS.md page, read from the sidecars alone (so --collect rewrites what the run wrote): one line
    per claim, a 'failed' line for a run that failed, and a note naming registered experiments not run yet."""
    link_dir = os.path.relpath(results, os.path.dirname(os.path.abspath(out)))
    rows, sidecars, pending = [], [], []
    for name in names:
        more, sidecar = rows_of(name, results, link_dir)
        rows += more
        sidecars += [sidecar] if sidecar is not None else []
        pending += [] if more else [name]
    modes = {s["mode"] for s in sidecars}
    counts = {v: sum(r[4] == f"**{v}**" for r in rows) for v in _claims.VERDICTS}
    headline = ", ".join(f"{n} {v}" for v, n in counts.items())
    failed = sum(r[4] == "**failed**" for r in rows)
    lines = [
        "# The classic results, reproduced", "",
        "One line per published claim: the paper's claim, our number, and the verdict (held / partly / not "
        "held) each experiment decides by a rule in its code, fixed before its first full run unless the claim's "
        "own text says it was revised after it (on review, to add a noise margin or a control). Each "
        "experiment's page (linked) has the set-up, the tables, the figures and why. Data: scikit-learn's "
        "bundled sets (digits stands in for MNIST). Regenerate with `make reproduce`.", "",
        f"Claims: {len(rows) - failed} ({headline})." + (f" Failed: {failed}." if failed else "") + last_run(sidecars) + environments(sidecars)
        + ("" if modes <= {"full"} else " **Smoke mode: tiny sizes, the numbers mean nothing.**")
        + (f" Registered, not run yet: {', '.join(pending)}." if pending else ""), "",
        _claims.markdown_table(["experiment", "paper", "claim", "ours", "verdict", "wall s"], rows), ""]
    return "\n".join(lines)


def arguments(argv=None) -> argparse.Namespace:
    """The command line, with `--results` and `--out` resolved (nothing created); a parser error for
    `--smoke` into experiments/results (smoke numbers would replace the full results and their sidecars),
    and, before any run, for a `--results` that is a file or cannot be created and an `--out` that is a
    folder or cannot be written (`_claims.unwritable`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="run each experiment's seconds-long mode")
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, help="run only these (the summary lists all)")
    parser.add_argument("--collect", action="store_true", help="run nothing; rewrite the summary from the sidecars")
    parser.add_argument("--results", help="where experiments write (default experiments/results; with --smoke "
                        "results/smoke/reproduce at the repository root, so that a smoke run never overwrites the "
                        "full results)")
    parser.add_argument("--out", help="the summary page (default experiments/RESULTS.md; with --smoke "
                        "<results>/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.results is None:
        args.results = _claims.default_out("reproduce", args.smoke)
    elif args.smoke and os.path.realpath(args.results) == os.path.realpath(_claims.RESULTS):
        parser.error(f"--smoke --results {args.results}: smoke runs would overwrite the full results there; "
                     "leave --results out (results/smoke/reproduce) or give another folder")
    if (why := _claims.unwritable(args.results)) is not None:
        parser.error(f"--results {args.results}: {why}")
    if args.out is None:
        args.out = os.path.join(args.results, "RESULTS.md") if args.smoke else os.path.join(HERE, "RESULTS.md")
    elif (why := _claims.unwritable(args.out, folder=False)) is not None:
        # Checked before any run: the summary is the last thing written, after every experiment.
        parser.error(f"--out {args.out}: {why}")
    return args


def main(argv=None):
    args = arguments(argv)
    os.makedirs(args.results, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)  # checked writable by `arguments`
    failed, run = [], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if not args.collect:
        for name in args.only or EXPERIMENTS:
            print(f"running {name} ...", flush=True)
            code, seconds = run_one(name, args.results, args.smoke, run)
            print(f"  {name}: exit {code}, {seconds:.0f} s" + (f" (output above and in {name}.log)" if code else ""),
                  flush=True)
            if code != 0:
                failed.append(name)
    page = summary(EXPERIMENTS, args.results, args.out)
    _claims.write_atomically(args.out, page)
    print(page)
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

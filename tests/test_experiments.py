"""Every experiment runs in its --smoke mode (seconds), as a user would start it."""

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

FOLDER = pathlib.Path(__file__).parent.parent.joinpath("experiments")
# Every script but the shared module (_claims.py) and the runner of full modes (reproduce.py, tested below).
EXPERIMENTS = sorted(p for p in FOLDER.glob("*.py") if not p.name.startswith("_") and p.name != "reproduce.py")


def markdown_table(text, heading):
    """The rows of the first markdown table after the line starting with `heading`, as dicts."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif table:
            break
    header, rule, *rows = table
    assert set(rule) <= {"---"}, rule
    assert rows and all(len(row) == len(header) for row in rows), table
    return [dict(zip(header, row)) for row in rows]


def check_estimator_quality(stdout):
    """Reverse is the exact hypergradient the others are scored against: its cosines are 1.000 and its
    error 0. The estimators (truncated, zero-order) are biased or noisy: cosines inside [-1, 1], below
    1, with a positive error; every method costs more than nothing. An estimator that silently ran
    Reverse, or scores paired with the wrong key's exact gradient, shows here."""
    rows = markdown_table(stdout, "## Estimator quality")
    cosines = ["cosine, all z (mean ± std)", "cosine, lr schedule", "cosine, relative"]
    exact = [row for row in rows if row["strategy"] == "Reverse (exact)"]
    assert len(exact) == 1, rows
    assert exact[0][cosines[0]] == "1.000 ± 0.000", exact
    assert exact[0][cosines[1]] == exact[0][cosines[2]] == "1.000", exact
    assert float(exact[0]["relative error"]) == 0.0, exact
    assert float(exact[0]["cost (runs)"]) > 1.0, exact  # a hypergradient costs more than a training run
    estimators = [row for row in rows if row["strategy"].startswith(("Truncated(", "ES(", "PES("))]
    assert estimators, rows
    for row in estimators:
        mean, std = (float(x) for x in row[cosines[0]].split("±"))
        assert -1.0 <= mean < 0.999 and std >= 0, row
        assert all(-1.0 <= float(row[c]) <= 1.0 for c in cosines[1:]), row
        assert float(row["relative error"]) > 1e-3 and float(row["cost (runs)"]) > 0, row


def read_sidecar(out, name, claims):
    """The claims file a reproduction writes for experiments/RESULTS.md: smoke mode, `claims` claims, each
    with the five fields and a known verdict, and the results page beside it."""
    sidecar = json.loads((out / f"{name}.json").read_text())
    assert sidecar["experiment"] == name and sidecar["mode"] == "smoke", sidecar
    assert len(sidecar["claims"]) == claims, sidecar["claims"]
    for claim in sidecar["claims"]:
        assert set(claim) == {"paper", "claim", "ours", "verdict", "why"}, claim
        assert claim["verdict"] in ("held", "partly", "not held") and claim["ours"] and claim["why"], claim
    page = (out / f"{name}.md").read_text()
    assert "## Claims and verdicts" in page and all(c["ours"] in page for c in sidecar["claims"])
    for figure in sidecar["figures"]:
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    return sidecar


def check_estimator_quality_sidecar(out):
    """Its short-horizon-bias line: the truncated tuners named, their lr as a multiple of the grid's best."""
    sidecar = read_sidecar(out, "estimator_quality", claims=1)
    facts = sidecar["numbers"]
    assert facts["best_lr"] > 0 and any(n.startswith("Truncated(") for n in facts["probes"]), facts
    for name in facts["probes"]:
        assert f"{name}: lr {facts['reached'][name] / facts['best_lr']:.2f}x best" in sidecar["claims"][0]["ours"]


def check_hyper_cleaning(stdout, out):
    """The oracle's weights are the clean mask itself, so scored as a detector of the corrupted labels
    they must give AUC = F1 = 1 (a wrong mask, or AUC/F1 computed wrong, fails here); the baseline's
    constant weights detect nothing (n/a). Tuned weights score inside [0, 1]; a hypergradient step
    costs more than a run; random search ran at hyper-cleaning's (Reverse) compute. The sidecar's
    numbers are the table's, and its gap share is recomputed from them."""
    rows = {r["strategy"]: r for r in markdown_table(stdout, "## Test accuracy and separation")}
    oracle, base = rows["oracle (clean half only)"], rows["baseline (all weights 1)"]
    assert oracle["ROC AUC"] == "1.000" and oracle["F1"] == "1.000", oracle
    assert base["ROC AUC"] == "n/a" and base["F1"] == "n/a", base
    tuned = [rows["hyper-cleaning, Reverse"], rows["hyper-cleaning, Implicit (CG)"]]
    for row in tuned + [base, oracle, rows["random search, constants"]]:
        assert 0.0 <= float(row["test accuracy (mean ± s.e.)"].split("±")[0]) <= 1.0, row
    for row in tuned:
        assert 0.0 <= float(row["ROC AUC"]) <= 1.0 and 0.0 <= float(row["F1"]) <= 1.0, row
        assert float(row["compute (runs)"]) > 1.0, row
    assert abs(float(rows["random search, constants"]["compute (runs)"]) - float(tuned[0]["compute (runs)"])) <= 1
    sidecar = read_sidecar(out, "hyper_cleaning", claims=3)
    numbers = sidecar["numbers"]
    assert f"{numbers['reverse_auc']:.3f}" == tuned[0]["ROC AUC"] and f"{numbers['implicit_f1']:.3f}" == tuned[1]["F1"]
    gap = numbers["oracle_acc"] - numbers["baseline_acc"]
    if gap > 0:
        share = (numbers["reverse_acc"] - numbers["baseline_acc"]) / gap
        assert numbers["gap_share"] == pytest.approx(share)
        assert sidecar["claims"][0]["verdict"] == ("held" if share >= 0.5 else "partly" if share > 0.1 else "not held")


def check_learned_schedules(stdout, out):
    """Per layer and step: 2 x 3 layers x T hyperparameters; Reversible's shared schedule T + 1; the
    searches count 2 (a constant rate and momentum) and spent at most the Reverse tuner's compute (the
    equal-compute rule; the grid, P x P points, a little less). The schedule-shape line reads back three
    layers' (start, middle, end) rates inside the space's bounds."""
    rows = {r["strategy"]: r for r in markdown_table(stdout, "## Picks")}
    learned = rows["learned per layer and step, Reverse(checkpoint_every)"]
    shared = rows["learned per step (shared by layers), Reversible"]
    T = (int(shared["hyperparameters"]) - 1)
    assert int(learned["hyperparameters"]) == 2 * 3 * T, (learned, shared)
    budget = float(learned["compute (runs)"])
    searches = [r for name, r in rows.items() if "search" in name]
    assert len(searches) == 2 and all(r["hyperparameters"] == "2" for r in searches), searches
    assert all(0 < float(r["compute (runs)"]) <= budget + 1 for r in searches), (budget, searches)
    for row in rows.values():
        assert 0.0 <= float(row["test accuracy (fresh keys, mean ± s.e.)"].split("±")[0]) <= 1.0, row
    sidecar = read_sidecar(out, "learned_schedules", claims=3)
    for claim in sidecar["claims"][:2]:  # the two schedules against the best constant: the wording follows the numbers
        val, val_c, test, test_c = map(float, re.search(
            r"val loss (\S+) vs (\S+), test loss (\S+) vs (\S+) \(tuning key\)", claim["ours"]).groups())
        if claim["verdict"] == "held":
            assert ("and on the tuning key too" in claim["why"]) == (val < val_c and test < test_c), claim
    shapes = sidecar["numbers"]["lr_shape"]
    assert len(shapes) == 3 and all(1e-3 <= x <= 3.0 for shape in shapes for x in shape), shapes


def check_generalisation(stdout, out):
    """One row per (variant, seed); the sidecar's numbers are the table's, and each verdict follows the
    experiment's rule from the medians of optimism and fresh-key test loss."""
    rows = markdown_table(stdout, "## Runs")
    assert [r["strategy"] for r in rows] == ["fixed key", "resample_key", "cv=3"], rows
    sidecar = read_sidecar(out, "generalisation", claims=2)
    numbers = sidecar["numbers"]["rows"]
    for row, number in zip(rows, numbers):
        assert row["optimism"] == f"{number['optimism']:.4f}" and float(row["runs"]) > 0, (row, number)
    fixed = numbers[0]
    for claim, remedy in zip(sidecar["claims"], numbers[1:]):
        better = [remedy["optimism"] < fixed["optimism"], remedy["fresh_test"] <= fixed["fresh_test"]]
        assert claim["verdict"] == ("held" if all(better) else "partly" if any(better) else "not held"), claim


def check_weight_decay_per_parameter(stdout, out):
    """Reverse is the reference (cosines and norm ratio exactly 1); every Implicit estimate costs at least
    one training run and more Neumann terms cost more (the FLOP accounting); random search ran at the
    Neumann tuner's compute; the sidecar's numbers are the tables', and the overfitting verdict follows
    its rule from the first and last iterates."""
    rows = markdown_table(stdout, "## Hypergradient quality at the start")
    reverse = rows[0]
    assert reverse["strategy"].startswith("Reverse") and reverse["cosine with Reverse"] == "1.000", reverse
    assert reverse["norm / Reverse's"] == "1.000" and float(reverse["cost (runs)"]) > 1.0, reverse
    neumann = [r for r in rows if r["strategy"].startswith("Implicit Neumann")]
    assert len(neumann) >= 2 and any(r["strategy"].startswith("Implicit CG") for r in rows), rows
    for row in rows[1:]:
        assert -1.0 <= float(row["cosine (log coordinates)"]) <= 1.0 and float(row["cost (runs)"]) >= 1.0, row
    costs = [float(r["cost (runs)"]) for r in neumann]
    assert costs == sorted(costs) and costs[0] < costs[-1], neumann
    tuning = {r["strategy"]: r for r in markdown_table(stdout, "## Tuning")}
    tuner = next(r for name, r in tuning.items() if name.startswith("tune, Implicit Neumann"))
    rand = tuning["random search, one shared decay"]
    assert abs(float(rand["compute (runs)"]) - float(tuner["compute (runs)"])) <= 1, (tuner, rand)
    sidecar = read_sidecar(out, "weight_decay_per_parameter", claims=3)
    n = sidecar["numbers"]
    assert f"{n['val_first']:.4f}" == tuner["val first"] and f"{n['test_last']:.4f}" == tuner["test last"], (n, tuner)
    best = next(r for r in neumann if r["strategy"] == n["best_few"])
    assert f"{n['best_few_cosine']:.3f}" == best["cosine (log coordinates)"], (n, best)
    falls, rises = n["val_last"] < n["val_first"], n["test_last"] > n["test_first"]
    gap_grows = n["test_last"] - n["val_last"] > n["test_first"] - n["val_first"]
    expected = "held" if falls and rises else "partly" if falls and gap_grows else "not held"
    assert sidecar["claims"][1]["verdict"] == expected, sidecar["claims"][1]


def check_online_lr(stdout, out):
    """Four rows (SGD, SGD-HD, Adam, Adam-HD), each one run per initial rate and key; the 'good' counts
    and both verdicts are recomputed from the per-rate losses in the sidecar."""
    rows = {r["strategy"]: r for r in markdown_table(stdout, "## Summary")}
    assert set(rows) == {"SGD fixed rate", "SGD-HD", "Adam fixed rate", "Adam-HD"}, rows
    assert len({r["compute (runs, all rates and keys)"] for r in rows.values()}) == 1, rows
    sidecar = read_sidecar(out, "online_lr", claims=2)
    families, good = sidecar["numbers"]["families"], sidecar["numbers"]["good"]
    ok = []
    for family, x in families.items():
        tuned = min(x["fixed"])
        assert x["tuned_loss"] == pytest.approx(tuned) and x["small_hd"] == pytest.approx(x["hd"][0])
        assert x["good_fixed"] == sum(v <= good * tuned for v in x["fixed"]) >= 1, x
        assert x["good_hd"] == sum(v <= good * tuned for v in x["hd"]), x
        label = {"SGD": "SGD-HD", "Adam": "Adam-HD"}[family]
        assert rows[label]["good initial rates (of %d)" % len(x["rates"])] == str(x["good_hd"]), (rows[label], x)
        ok.append(x["good_hd"] >= 2 * x["good_fixed"] and x["good_hd"] >= x["good_fixed"] + 2)
    assert sidecar["claims"][0]["verdict"] == ("held" if all(ok) else "partly" if any(ok) else "not held")


def check_truncation(stdout, out):
    """K = T is Reverse (error 0, cosine 1); Truncated's cost grows with K (accounting is affine in the
    window); the sidecar's geometric fit is recomputed from its errors, and both verdicts from their rules."""
    rows = markdown_table(stdout, "## Hypergradient error against the window")
    assert float(rows[-1][next(c for c in rows[-1] if c.endswith("relative error"))]) == 0.0, rows[-1]
    for column in (c for c in rows[0] if c.endswith("cost (runs)")):
        costs = [float(r[column]) for r in rows]
        assert costs == sorted(costs) and costs[0] > 1.0, (column, costs)
    sidecar = read_sidecar(out, "truncation", claims=2)
    n = sidecar["numbers"]
    errors = next(iter(n["errors"].values()))
    steps = errors[-1]["K"]
    points = [(r["K"], math.log(r["error"])) for r in errors if r["K"] < steps and r["error"] > 1e-4]
    if len(points) >= 2:
        slope = np.polyfit(*np.array(points).T, 1)[0]
        assert n["fit"]["slope"] == pytest.approx(slope, rel=1e-6), (n["fit"], slope)
        expected = "held" if slope < 0 and n["fit"]["r2"] >= 0.95 else "partly" if slope < 0 else "not held"
        assert sidecar["claims"][0]["verdict"] == expected
    shares = [float("nan") if s is None else s for s in n["shares"].values()]  # NaN is stored as null
    close = [s >= 0.9 for s in shares]
    expected = "held" if all(close) else "partly" if any(close) or all(s >= 0.5 for s in shares) else "not held"
    assert sidecar["claims"][1]["verdict"] == expected, (shares, sidecar["claims"][1])


def check_finetuning(stdout, out):
    """One row per (setting, shots, strategy); each table mean is the sidecar's per-seed accuracies'
    mean; the searches and scratch spent at most the budget (equal compute, read by best_within); every
    verdict follows the experiment's fixed rule, recomputed here from the per-seed numbers."""
    rows = markdown_table(stdout, "## Results")
    acc = json.loads((out / "finetuning.json").read_text())["numbers"]["acc"]
    sidecar = read_sidecar(out, "finetuning", claims=len(acc) + 2)
    rates, budget = sidecar["numbers"]["rates"], sidecar["numbers"]["budget"]
    assert len(rows) == 5 * sum(len(by_shots) for by_shots in acc.values()), rows
    for row in rows:
        shots = row["shots/class"]
        if shots.startswith("all"):  # shots="all": the label carries the mean examples per class
            count = re.fullmatch(r"all \((\d+)\)", shots)
            assert count and int(count.group(1)) > 0, row
            shots = "all"
        seeds = acc[row["setting"]][shots][row["strategy"]]
        assert row["test accuracy (mean ± std)"].split(" ±")[0] == f"{sum(seeds) / len(seeds):.3f}", row
        assert all(0.0 <= a <= 1.0 for a in seeds), row
        if row["strategy"] in ("grid", "random", "scratch"):
            assert 0 < float(row["runs"]) <= budget, row

    def standing(a, b):
        d = [x - y for x, y in zip(a, b)]
        mean = sum(d) / len(d)
        se = (sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) ** 0.5 if len(d) > 1 else float("inf")
        return 2 if mean > 0 and mean > 2 * se else 1 if mean > 0 else 0

    for claim, by_shots in zip(sidecar["claims"], acc.values()):
        marks = [standing(c["random"], c["scratch"]) for c in by_shots.values()]
        assert claim["verdict"] == ("held" if min(marks) == 2 else "partly" if max(marks) > 0 else "not held")
    cells = [c for by_shots in acc.values() for c in by_shots.values()]
    marks = [standing(c["gradient"], max((c["grid"], c["random"]), key=sum)) for c in cells]
    assert sidecar["claims"][-2]["verdict"] == ("held" if min(marks) == 2 else "partly"
                                                if sum(m > 0 for m in marks) >= len(marks) / 2 else "not held")
    picks = [r for by_shots in rates.values() for seeds in by_shots.values() for r in seeds]
    lower = sum(r[0] < r[-1] for r in picks) / len(picks)
    ratio = math.exp(sum(math.log(r[-1] / r[0]) for r in picks) / len(picks))
    assert sidecar["claims"][-1]["verdict"] == ("held" if lower >= 0.8 and ratio >= 1.5 else "partly"
                                                if lower > 0.5 else "not held")


def check_distillation(stdout, out):
    """One row per strategy; the real draws' table cells are the sidecar's per-draw accuracies'
    mean; random search ran at the fixed-init distillation's compute; every verdict is recomputed
    from the sidecar's numbers by the experiment's rule."""
    rows = {r["strategy"]: r for r in markdown_table(stdout, "## Test accuracy")}
    sidecar = read_sidecar(out, "distillation", claims=3)
    n = sidecar["numbers"]
    real = next(r for name, r in rows.items() if name.startswith("10 real images"))
    assert real["test accuracy, fixed init"].split(" ±")[0] == f"{np.mean(n['real_fixed']):.3f}", (real, n)
    assert real["test accuracy, fresh inits (mean ± std)"].split(" ±")[0] == f"{np.mean(n['real_fresh']):.3f}"
    search = rows["random search: which real images + step size"]
    assert abs(float(search["compute (runs)"]) - n["runs"]["fixed"]) <= 1 and n["runs"]["fixed"] > 1, (search, n)
    assert search["hyperparameters"] == "11" and f"{n['search_fixed']:.3f}" == search["test accuracy, fixed init"]
    for values in (n["real_fixed"], n["real_fresh"], n["distilled_random_fresh"], n["search_fresh"]):
        assert all(0.0 <= a <= 1.0 for a in values), values
    fixed, real_fixed = n["distilled_fixed"], np.asarray(n["real_fixed"])
    near, above = fixed >= 0.89, fixed > np.percentile(real_fixed, 95)
    assert sidecar["claims"][0]["verdict"] == ("held" if near and above else "partly" if near or above
                                               or fixed > real_fixed.mean() else "not held")
    fresh = np.mean(n["distilled_random_fresh"])
    marks = [fresh >= 0.75, fresh > np.mean(n["real_fresh"])]
    assert sidecar["claims"][1]["verdict"] == ("held" if all(marks) else "partly" if any(marks) else "not held")
    diff = np.asarray(n["distilled_random_fresh"]) - np.asarray(n["search_fresh"])
    ahead = [fixed > n["search_fixed"], diff.mean() > 2 * diff.std(ddof=1) / math.sqrt(diff.size)]
    assert sidecar["claims"][2]["verdict"] == ("held" if all(ahead) else "partly" if any(ahead) else "not held")


def check_long_horizon(stdout, out):
    """Forward's block hypergradients equal the block sums of Reverse's per-step ones (an exact identity,
    to float32 rounding); the per-step row has T coordinates and the shared one B; the searches spent at
    most the whole-horizon tuner's compute and a constant-rate pick is constant; every verdict is
    recomputed from the sidecar's numbers by the experiment's rules."""
    noise_rows = markdown_table(stdout, "## Hypergradient noise at the start")
    sidecar = read_sidecar(out, "long_horizon", claims=3)
    n = sidecar["numbers"]
    steps, blocks = n["steps"], n["blocks"]
    stats = n["noise"]["rows"]
    assert n["noise"]["agreement"] < 1e-3, n["noise"]["agreement"]
    assert {int(r["coordinates"]) for r in noise_rows} >= {steps, blocks}, noise_rows
    for b, row in stats.items():
        assert len(row["cv"]) == row["coordinates"] == int(b) and row["relvar"] > 0, (b, row["coordinates"])
        assert row["median_cv"] == pytest.approx(float(np.median(row["cv"])), rel=1e-6), b
    step, shared = stats[str(steps)], stats[str(blocks)]
    lower = [shared["relvar"] < step["relvar"], shared["median_cv"] < step["median_cv"]]
    assert sidecar["claims"][0]["verdict"] == ("held" if all(lower) else "partly" if any(lower) else "not held")
    t = n["tuning"]
    rows = markdown_table(stdout, "## Whole horizon against greedy")
    assert len(rows) == 4 and rows[0]["val (fresh keys)"] == f"{t['whole']['fresh']['val']:.4f}", rows
    for name in ("whole", "greedy", "constant", "few"):
        assert len(t[name]["lr"]) == blocks and all(1e-3 <= x <= 3.0 for x in t[name]["lr"]), t[name]["lr"]
    assert len(set(t["constant"]["lr"])) == 1 and len(t["greedy"]["stages"]) == blocks, t
    assert 0 < t["constant"]["runs"] <= t["whole"]["runs"] + 1 and 0 < t["few"]["runs"] <= t["whole"]["runs"] + 1
    lower = [t["whole"]["fresh"][s] < t["greedy"]["fresh"][s] for s in ("val", "test")]
    assert sidecar["claims"][1]["verdict"] == ("held" if all(lower) else "partly" if any(lower) else "not held")
    forward = n["memory"]["Forward"]
    small, large = (str(s) for s in (n["memory_steps"][0], n["memory_steps"][-1]))
    assert forward[small] > 0, forward
    ratio = forward[large] / forward[small]
    assert sidecar["claims"][2]["verdict"] == ("held" if ratio <= 1.1 else "partly" if ratio <= 2 else "not held")


def check_chaos(stdout, out):
    """Roughness is recomputed from the sidecar's loss curves (total variation of the capped curve over
    its range, >= 1 for any curve); every estimator costs at least a training run; each verdict follows
    the experiment's rule from the sidecar's numbers."""
    rows = {r["strategy"]: r for r in markdown_table(stdout, "## Estimators at the rugged setting")}
    assert sum(name.startswith(("Reverse", "ES(", "PES(")) for name in rows) == 3, rows
    sidecar = read_sidecar(out, "chaos", claims=3)
    n = sidecar["numbers"]
    rough = []
    for t in n["horizons"]:
        v = np.minimum([n["cap"] if x is None else x for x in n["curves"][str(t)]], n["cap"])
        rough.append(np.abs(np.diff(v)).sum() / (v.max() - v.min()))
    assert rough == pytest.approx(n["roughness"]) and min(rough) >= 1.0 - 1e-9, (rough, n["roughness"])
    rising = all(b > a for a, b in zip(rough, rough[1:]))
    assert sidecar["claims"][0]["verdict"] == ("held" if rising and rough[-1] >= 2 * rough[0] else "partly"
                                               if rough[-1] > rough[0] else "not held")
    ratio = n["peak_norm"][-1] / n["peak_norm"][0]
    assert sidecar["claims"][1]["verdict"] == ("held" if ratio >= 100 else "partly" if ratio >= 10 else "not held")
    (_, exact), *others = n["estimators"].items()
    assert all(x["runs"] >= 1.0 for x in n["estimators"].values()), n["estimators"]
    inf = float("inf")
    lower = [(inf if x["std"] is None else x["std"]) < (inf if exact["std"] is None else exact["std"]) for _, x in others]
    assert sidecar["claims"][2]["verdict"] == ("held" if all(lower) else "partly" if any(lower) else "not held")


def check_seed_iris(stdout, out):
    """The user's study run by both libraries: every candidate x fold fitted by each, best CV accuracies
    are means of accuracies over the 2 smoke folds of 60 (multiples of 1/120), the best parameters
    come from the smoke grid, and hypergrad reports where its seconds went (stages within the total)."""
    rows = {r["library"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(rows) == {"hypergrad", "scikit-learn"}, rows
    for r in rows.values():
        assert r["fits"] == 4 * 2 and r["fit_s"] > 0 and r["refit_s"] > 0, r
        assert 0 <= r["cv_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1, r
        assert abs(r["cv_accuracy"] * 120 - round(r["cv_accuracy"] * 120)) < 1e-4, r
        assert r["best_params"]["activation"] in ("tanh", "relu") and r["best_params"]["alpha"] in (1e-4, 1e-2), r
        assert f"| {r['library']} |" in stdout
    hg_row = rows["hypergrad"]
    assert hg_row["programs"] >= 1 and hg_row["compile_s"] > 0 and hg_row["run_s"] > 0, hg_row
    assert hg_row["plan_s"] + hg_row["compile_s"] + hg_row["run_s"] + hg_row["refit_s"] <= hg_row["fit_s"], hg_row


READ_BACK = {"estimator_quality.py": check_estimator_quality}
READ_BACK_FILES = {"estimator_quality.py": lambda stdout, out: check_estimator_quality_sidecar(out),
                   "hyper_cleaning.py": check_hyper_cleaning, "learned_schedules.py": check_learned_schedules,
                   "generalisation.py": check_generalisation,
                   "weight_decay_per_parameter.py": check_weight_decay_per_parameter, "online_lr.py": check_online_lr,
                   "truncation.py": check_truncation, "finetuning.py": check_finetuning,
                   "distillation.py": check_distillation, "long_horizon.py": check_long_horizon,
                   "chaos.py": check_chaos, "seed_iris.py": check_seed_iris}


@pytest.mark.parametrize("script", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_smoke(script, tmp_path):
    env = dict(os.environ)
    result = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "| strategy |" in result.stdout
    if script.name in READ_BACK:  # the numbers, not only the exit code
        READ_BACK[script.name](result.stdout)
    if script.name in READ_BACK_FILES:  # and what it wrote for experiments/RESULTS.md
        READ_BACK_FILES[script.name](result.stdout, tmp_path)


def test_reproduce_summarises_every_registered_sidecar(tmp_path):
    """reproduce.py --collect writes one line per claim of every registered experiment, read from the
    sidecars, and a 'failed' line for one that wrote none; every registered name is a script here."""
    sys.path.insert(0, str(FOLDER))
    try:
        import reproduce
    finally:
        sys.path.remove(str(FOLDER))
    names = reproduce.EXPERIMENTS
    assert names and all((FOLDER / f"{name}.py").exists() for name in names), names
    for i, name in enumerate(names[:-1]):  # the last one "failed": no sidecar
        claims = [{"paper": f"Paper {i}", "claim": f"claim {i}.{j}", "ours": f"number {i}.{j}",
                   "verdict": ("held", "partly", "not held")[j], "why": "because"} for j in range(i % 3 + 1)]
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"experiment": name, "mode": "full", "seconds": 12.0, "claims": claims, "figures": [], "numbers": {}}))
    (tmp_path / f"{names[-1]}.log").write_text("Traceback ...")  # it ran (reproduce.py wrote its log), no sidecar
    out = tmp_path / "RESULTS.md"
    result = subprocess.run([sys.executable, str(FOLDER / "reproduce.py"), "--collect", "--results", str(tmp_path),
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = markdown_table(out.read_text(), "Claims:")
    expected = [(f"number {i}.{j}", f"**{('held', 'partly', 'not held')[j]}**")
                for i in range(len(names) - 1) for j in range(i % 3 + 1)]
    assert [(r["ours"], r["verdict"]) for r in rows[:len(expected)]] == expected, rows
    assert rows[-1]["verdict"] == "**failed**" and names[-1] in rows[-1]["experiment"], rows[-1]
    assert len(rows) == len(expected) + 1


def import_reproduce():
    sys.path.insert(0, str(FOLDER))
    try:
        import reproduce
    finally:
        sys.path.remove(str(FOLDER))
    return reproduce


def cells(line):
    """A markdown table row's cells, split at unescaped pipes only (as GitHub renders it)."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_results_table_escapes_pipes_in_cells(tmp_path):
    """A claim whose text holds `|x|` stays one cell of its RESULTS.md row (a bare pipe would split it)."""
    reproduce = import_reproduce()
    name = reproduce.EXPERIMENTS[0]
    claim = {"paper": "P | Q", "claim": "the norm |x| falls", "ours": "|x| 0.5 -> 0.1, |y| 2", "verdict": "held",
             "why": "because"}
    (tmp_path / f"{name}.json").write_text(json.dumps(
        {"experiment": name, "mode": "full", "seconds": 3.0, "claims": [claim], "figures": [], "numbers": {}}))
    page = reproduce.summary([name], str(tmp_path), str(tmp_path / "RESULTS.md"))
    header, rule, row = [line for line in page.splitlines() if line.startswith("|")]
    assert cells(header) == ["experiment", "paper", "claim", "ours", "verdict", "wall s"], header
    assert cells(row)[1:] == ["P | Q", "the norm |x| falls", "|x| 0.5 -> 0.1, |y| 2", "**held**", "3"], row


def test_reproduce_records_wall_seconds_and_collect_rewrites_the_same_page(tmp_path, monkeypatch):
    """A run writes the subprocess's wall seconds into the sidecar (not the experiment's own `seconds`);
    --collect then writes the run's page byte for byte; a failure and a never-run experiment are told apart."""
    reproduce = import_reproduce()
    ok, broken, never = reproduce.EXPERIMENTS[:3]

    def fake_run(command, **kwargs):  # the experiment: writes its sidecar (ok) or fails (broken)
        name = pathlib.Path(command[1]).stem
        if name == ok:
            claim = {"paper": "P", "claim": "c", "ours": "o", "verdict": "partly", "why": "w"}
            (tmp_path / f"{name}.json").write_text(json.dumps({"experiment": name, "mode": "full", "seconds": 999.0,
                                                               "claims": [claim], "figures": [], "numbers": {}}))
        return subprocess.CompletedProcess(command, 0 if name == ok else 3, stdout="out\n", stderr="")

    (tmp_path / f"{broken}.json").write_text(json.dumps(  # an older run's sidecar: its claims are not this run's
        {"experiment": broken, "mode": "full", "seconds": 5.0, "claims": [], "figures": [], "numbers": {}}))
    os.utime(tmp_path / f"{broken}.json", (1e9, 1e9))
    monkeypatch.setattr(reproduce.subprocess, "run", fake_run)
    monkeypatch.setattr(reproduce, "EXPERIMENTS", [ok, broken, never])
    out = tmp_path / "RESULTS.md"
    assert reproduce.main(["--only", ok, broken, "--results", str(tmp_path), "--out", str(out)]) == 1
    ran = out.read_text()
    sidecar = json.loads((tmp_path / f"{ok}.json").read_text())
    assert 0 <= sidecar["wall_seconds"] < 60 and sidecar["reproduce_run"], sidecar
    rows = {r["experiment"]: r for r in markdown_table(ran, "Claims:")}
    assert rows[f"[{ok}](./{ok}.md)"]["wall s"] == f"{sidecar['wall_seconds']:.0f}", rows
    assert [r["verdict"] for r in rows.values()] == ["**partly**", "**failed**"], rows
    assert json.loads((tmp_path / f"{broken}.json").read_text())["reproduce_failed"]["exit"] == 3
    assert f"not run yet: {never}" in ran and "Claims: 1 (0 held, 1 partly, 0 not held). Failed: 1." in ran, ran
    assert reproduce.main(["--collect", "--results", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text() == ran

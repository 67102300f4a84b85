"""Smoke test of `benchmarks/bench.py --quick`: the tables appear, with every section and row.

Structure only: timings are never asserted (speed is measured in benchmarks/, not tested).
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_quick_writes_every_table(tmp_path):
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout  # printed and written alike
    for heading in ("## 1. Hypergradient cost", "## 2. Search throughput", "## 3. Compilation",
                    "## 4. Peak memory against T", "## 5. Correctness of the fast paths"):
        assert heading in text, heading
    for row in ("| 20 | train |", "| 20 | Reverse() |", '| 20 | Reverse(store="residuals") |',
                '| 20 | Reverse(store="states") |', "| 20 | Reverse(checkpoint_every=4) |", "| random_search, 4 trials |",
                "| tune, 2 steps |", "| 20 | random (library) |", "| 20 | cyclic (control) |"):
        assert row in text, row
    search_rows = [line for line in text.splitlines() if line.startswith("| 4 | 4 |")]
    assert len(search_rows) == 1 and "%" in search_rows[0]
    correctness = [line for line in text.splitlines() if line.startswith("| Reverse(")
                   and ("exact" in line or "CHECK" in line)]
    assert len(correctness) == 4
    assert all(line.rstrip(" |").endswith("exact") for line in correctness), correctness


def test_populations_smoke_reads_back_every_table(tmp_path):
    """`benchmarks/populations.py --smoke`: both sections, every strategy, and numbers that parse."""
    out = tmp_path / "populations.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "populations.py"), "--smoke", "--out", str(out),
                           "--cpu-devices", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout  # printed and written alike
    assert "load average" in text
    lines = text.splitlines()

    def cells(line):
        return [c.strip() for c in line.strip().strip("|").split("|")]

    throughput = [cells(line) for line in lines if line.startswith("| 2 |") and "GFLOP" not in line]  # N = 2
    steps = [row for row in throughput if row[1] == "population outer step (Reverse)"]
    assert len(steps) == 1 and all(row[-1] in (">= 80%: met", ">= 80%: missed") for row in steps)
    for row in steps:
        assert float(row[2]) > 0 and float(row[5]) > 0 and row[6].endswith("%")  # GFLOP, GFLOP/s, ratio
    for preset in ("digits-noisy",):
        rows = {cells(line)[1]: cells(line) for line in lines if line.startswith(f"| {preset} | ")}
        for strategy in ("population", "single", "random", "grid"):
            accuracy = float(rows[strategy][-1].split()[0])  # median [min-max]
            assert 0.0 <= accuracy <= 1.0, (preset, strategy)
            assert float(rows[strategy][2]) <= 100.0 * 1.001  # runs used within the smoke budget (100 since s34)
        wall = rows["compilation included"]
        assert float(wall[2].split()[0]) > 0 and int(wall[5].split()[0]) >= 1  # pop seconds; random trials
    verdicts = [line for line in lines if line.startswith("- digits-") and "equal wall time" in line]
    assert len(verdicts) == 1 and all(("**met**" in v) != ("**missed**" in v) for v in verdicts)


def test_peer_torch_smoke_computes_what_hypergrad_computes(tmp_path):
    """`benchmarks/peer_torch.py --smoke --dtype float64`: the torch unroll and hypergrad train the same
    model on the same minibatches, so their validation losses, hypergradients and search trials agree
    to rounding in float64 (the same batches in another order already give a 5% error)."""
    pytest.importorskip("torch")  # a benchmark-only dependency: `pip install -e '.[bench]'`
    out = tmp_path / "peer_torch.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "peer_torch.py"), "--smoke", "--dtype",
                           "float64", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout  # printed and written alike
    rows = {}
    for line in text.splitlines():
        if line.startswith("| 16 | 20 | "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[2]] = cells
    assert set(rows) == {"training run", "hypergradient", "search, per trial (4 sequential torch runs)",
                         "search, per trial (torch.func.vmap of 4)"}
    numbers = {work: [float(x) for x in re.findall(r"[-+]?\d+\.?\d*(?:e[-+]?\d+)?", cells[-1])]
               for work, cells in rows.items()}
    assert numbers["training run"][0] < 1e-10  # val loss relative difference
    error, cosine = numbers["hypergradient"]
    assert error < 1e-10 and cosine > 1 - 1e-12
    assert numbers["search, per trial (4 sequential torch runs)"][0] < 1e-10
    assert rows["search, per trial (4 sequential torch runs)"][-1].endswith("(4/4 finite)")
    vmap = "search, per trial (torch.func.vmap of 4)"
    if rows[vmap][5] == "failed":  # reported as such, with the reason, never hidden
        assert "torch.func.vmap could not run this loop" in text
    else:
        assert numbers[vmap][0] < 1e-10
    for cells in rows.values():
        assert float(cells[3]) > 0 and float(cells[4]) > 0  # hypergrad median and fastest (ms)
    assert rows["hypergradient"][9] in ("met", "missed")


def test_accounting_cost_quick_reads_back_both_tables(tmp_path):
    """`benchmarks/accounting_cost.py --quick`: the iris smoke study runs in a fresh process (its
    accounting seconds and counts parse) and every method's run count is a positive number. It ran
    the study through functions `experiments/seed_iris.py` no longer has, unnoticed until rerun."""
    out = tmp_path / "accounting_cost.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "accounting_cost.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    study = re.search(r"^\| 1 \| ([0-9.]+) \| ([0-9.]+) \((\d+)\) \| ([0-9.]+) \| (\d+) \| (\d+) \|$", text, re.M)
    assert study, text[:1000]
    assert float(study.group(1)) > 0 and int(study.group(3)) >= 1 and int(study.group(6)) == 2 * 2 * 2
    for problem in ("iris b16 T20", "iris full T20"):
        rows = re.findall(rf"^\| {problem} \| (.+?) \| ?[0-9.]* ?\| ([0-9.]+) \|$", text, re.M)
        assert len(rows) == 1 + 7, (problem, rows)  # one run's GFLOP, six methods and Implicit
        assert all(float(runs) > 0 for _, runs in rows)


def test_store_overhead_smoke_prints_its_table():
    """`benchmarks/store_overhead.py --smoke`: one row, both timings and the overhead parse."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "store_overhead.py"), "--smoke"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("| 32 | 10 |")]
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    plain, stored = float(cells[2].split()[0]), float(cells[3].split()[0])
    paired, fastest = cells[4].split()  # "+1.2% (+0.8%)"
    assert plain > 0 and stored > 0 and cells[6] in ("met", "missed")
    assert float(paired.rstrip("%")) > -100 and float(fastest.strip("()%")) > -100


def test_iris_study_rows_and_stages(tmp_path):
    """`benchmarks/iris_study.py`: a fresh process's row parsed back (scikit-learn's smoke study, the
    cheap one), and the report built from it and an in-process hypergrad smoke study: one line per
    row, speed-ups against scikit-learn n_jobs=2, and hypergrad's stages never more than its total."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    sys.path.insert(0, os.path.join(ROOT, "experiments"))
    try:
        import iris_study
        import seed_iris
    finally:
        sys.path[:2] = []
    sklearn_row = iris_study.fresh("scikit-learn", quick=True, n_jobs=1)
    assert sklearn_row["fits"] == 8 and sklearn_row["process_s"] > sklearn_row["fit_s"] > 0
    hg_row = {**seed_iris.study("hypergrad", smoke=True), "process_s": 1.0}
    rows = {"scikit-learn n_jobs=1": sklearn_row, "scikit-learn n_jobs=2": sklearn_row, "hypergrad cold": hg_row,
            "hypergrad warm": hg_row}
    text = iris_study.report([rows], [1.0, 2.0])
    lines = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert len(lines) == 4 + 2, text  # four rows, and the two hypergrad rows' stages
    assert f"| 1 | scikit-learn n_jobs=2 | {sklearn_row['fit_s']:.2f} |" in text and "| 1.00x |" in text
    stage = [line for line in lines if line.startswith("| 1 | hypergrad cold |")][-1]  # the stages table's
    total, plan, compile_s, run, refit, rest = (float(c) for c in stage.strip("|").split("|")[2:8])
    assert min(plan, compile_s, run, refit) >= 0 and rest >= -0.01
    assert abs(plan + compile_s + run + refit + rest - total) < 0.05


def test_reverse_widths_smoke_reads_back_every_table(tmp_path):
    """`benchmarks/reverse_widths.py --smoke`: widths, vmapped and profile tables, with numbers that
    add up (FLOP ratios ordered as the methods' recomputation orders them; profile shares sum to 1)."""
    out = tmp_path / "reverse_widths.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "reverse_widths.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| 10 | 16 |"):
            rows[cells[2]] = cells
    # 2: the divisor of 10 nearest sqrt(10); store="dots", the former default, beside at the first horizon,
    # store="states", the hand-written VJP, and checkpointing with store="steps", its former default
    ck_steps = 'Reverse(checkpoint_every=2, store="steps")'
    assert set(rows) == {"train", "Reverse()", "Reverse(checkpoint_every=2)", 'Reverse(store="dots")',
                         'Reverse(store="states")', ck_steps}, rows
    flop = {name: float(cells[7]) for name, cells in rows.items()}
    assert flop["train"] == 1.0 and 1.5 < flop["Reverse()"] < flop[ck_steps]
    # checkpointing reruns the forward pass: with "dots" (its default) the products of the rerun are kept
    assert flop['Reverse(store="dots")'] < flop["Reverse(checkpoint_every=2)"] < flop[ck_steps]
    assert flop['Reverse(store="states")'] == flop["Reverse()"]  # both recompute each step once
    # the loop-carried copies XLA inserts: the backward pass carries a cotangent beside the state
    copies = {name: float(cells[9]) for name, cells in rows.items()}
    assert all(c >= 0 for c in copies.values()) and copies["Reverse()"] > copies["train"], copies
    assert all(float(cells[3]) > 0 and float(cells[5]) > 0 for cells in rows.values())
    vmapped = [line for line in text.splitlines() if line.startswith("| 2 | ")]
    assert [line.split("|")[2].strip() for line in vmapped] == ["train (vmapped)", "Reverse() (vmapped)",
                                                                 'Reverse(store="dots") (vmapped)']
    shares = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0] == "16" and cells[5].endswith("%"):
            shares.setdefault(cells[1], []).append(float(cells[5][:-1]))
    assert set(shares) == set(rows) and all(len(s) == 8 and abs(sum(s) - 100) <= 4 for s in shares.values()), shares
    assert len([line for line in text.splitlines() if line.startswith("- T=10 hidden 16 ")]) == 5


def test_population_profile_smoke_classifies_both_programs(tmp_path):
    """`benchmarks/population_profile.py --smoke`: both programs timed, every class row present, and
    Reverse()'s loops found (its backward loop holds the sums to hyperparameters and the state loads,
    its forward loop the stores; the search has none of them)."""
    out = tmp_path / "profile.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "population_profile.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "load average" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")[1:]]
            for line in text.splitlines() if line.startswith("| ")}
    assert float(rows["search"][0]) > 0 and rows["Reverse()"][-1].endswith("%")
    search_loop, _, forward, backward, _ = (float(c) for c in rows["sums to hyperparameters"])
    assert backward > 0 and search_loop == forward == 0
    assert float(rows["store a state"][2]) > 0 and float(rows["load a state"][3]) > 0
    assert float(rows["store a state"][0]) == float(rows["load a state"][0]) == 0


def test_search_throughput_smoke_writes_both_sections(tmp_path):
    """`benchmarks/search_throughput.py --smoke`: every (width, chunk) row of the all-cores table with
    a share, and the by-class table with the products found and counted."""
    out = tmp_path / "search_throughput.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "search_throughput.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "load average" in text and "## 1. All cores" in text and "## 2. One device" in text
    rows = [line for line in text.splitlines() if line.startswith(("| 50 (preset) |", "| 100 |"))]
    assert len(rows) == 4 and all(re.search(r"\| \d+% \|", line) for line in rows), rows
    products = next(line for line in text.splitlines() if line.startswith("| matrix products |"))
    assert float(products.split("|")[2]) > 0
    alone = next(line for line in text.splitlines() if line.startswith("| matrix products alone"))
    assert float(alone.split("|")[2]) > 0


def test_search_throughput_counts_only_the_products():
    """The product FLOPs of section 2: the dot_generals alone, loops multiplied by their trips."""
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from search_throughput import product_flops
    from hypergrad import accounting

    a, b = jnp.ones((3, 4)), jnp.ones((4, 5))
    closed = jax.make_jaxpr(lambda a, b: jax.lax.scan(lambda c, _: (jnp.tanh(c @ b[:, :4]), None), a, None, 7)[0])(a, b)
    assert product_flops(closed) == 7 * 2 * 3 * 4 * 4
    assert accounting.jaxpr_flops(closed) > product_flops(closed)  # the tanh is counted there, not here


def test_copies_per_step_counts_float_copies_in_loops_by_their_trips():
    """`_common.copies_per_step` on a hand-written HLO module: a loop of 4 trips holding one float
    copy and a nested loop of 3 trips holding two (and an integer copy, left out); copies outside
    loops and inside fusions are not counted."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from _common import copies_per_step
    finally:
        sys.path.pop(0)
    text = """HloModule m

%fused (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %copy.9 = f32[8]{0} copy(%p)
}

%inner (a: (s32[], f32[8])) -> (s32[], f32[8]) {
  %a = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%a), index=0
  %x = f32[8]{0} get-tuple-element(%a), index=1
  %copy.1 = f32[8]{0} copy(%x)
  %copy.2 = f32[8]{0} copy(%copy.1)
  %copy.3 = s32[] copy(%i)
  ROOT %t = (s32[], f32[8]{0}) tuple(%copy.3, %copy.2)
}

%outer (b: (s32[], f32[8])) -> (s32[], f32[8]) {
  %b = (s32[], f32[8]{0}) parameter(0)
  %y = f32[8]{0} get-tuple-element(%b), index=1
  %copy.4 = f32[8]{0} copy(%y)
  %f = f32[8]{0} fusion(%copy.4), kind=kLoop, calls=%fused
  %w = (s32[], f32[8]{0}) while(%b), condition=%cond, body=%inner, backend_config={"known_trip_count":{"n":"3"}}
  ROOT %u = (s32[], f32[8]{0}) tuple(%f, %f)
}

ENTRY %main (c: (s32[], f32[8])) -> (s32[], f32[8]) {
  %c = (s32[], f32[8]{0}) parameter(0)
  %z = f32[8]{0} get-tuple-element(%c), index=1
  %copy.5 = f32[8]{0} copy(%z)
  ROOT %v = (s32[], f32[8]{0}) while(%c), condition=%cond, body=%outer, backend_config={"known_trip_count":{"n":"4"}}
}
"""
    assert copies_per_step(text, 4) == (4 * 1 + 4 * 3 * 2) / 4


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the markdown table under `heading` (header and separator left out)."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[2:]]


def test_longrun_costs_quick_prints_every_table(tmp_path):
    """`benchmarks/longrun_costs.py --quick` (this tree only): the three tables, one row per size,
    budget and checkpoint, with numbers that parse."""
    out = tmp_path / "longrun.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "longrun_costs.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout and "load average" in text
    progress = _table_rows(text, "## 1. Progress lines")
    assert [row[:2] for row in progress] == [["tune", "50 steps"], ["tune", "100 steps"],
                                             ["random_search", "100 trials, chunks of 2"],
                                             ["random_search", "200 trials, chunks of 2"]]
    assert all(len(row) == 5 and float(row[2]) > 0 and float(row[3]) > 0 and row[4].endswith("x") for row in progress)
    planning = _table_rows(text, "## 2. Planning")
    assert [row[0] for row in planning] == ["100", "1000", "1e+06"]
    assert all(len(row) == 4 and float(row[1]) >= 0 and int(row[2]) >= 1 and int(row[3]) >= 1 for row in planning)
    memory = _table_rows(text, "## 3. Memory")
    assert [row[0] for row in memory] == ["start", "1 fit", "2 fits", "2 fits, then hg.clear_caches()"]
    assert all(len(row) == 4 and float(row[1]) > 0 and int(row[3]) >= 0 for row in memory)


def test_longrun_costs_tables_with_a_baseline_add_its_columns_and_the_ratios():
    """The three tables built from a baseline's and this tree's rows (as the children report them):
    the baseline's columns, the ratio columns, 'not run' above the baseline's budget cap and whether
    the plans agree."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import longrun_costs
    finally:
        sys.path.pop(0)
    progress = {tree: {"rows": [{"workload": "tune", "size": 10, "off": 1.0, "on": on, "trials": 11}]}
                for tree, on in (("baseline", 4.0), ("this tree", 1.0))}
    (row,) = [line.split("|")[1:-1] for line in longrun_costs.progress_table(progress)[2:]]
    assert [c.strip() for c in row] == ["tune", "10 steps", "1.00", "4.00", "4.00x", "1.00", "1.00", "1.00x", "4.0x"]
    plan = {"tune_steps": 7, "random_trials": 100}
    planning = {"baseline": {"rows": [{"budget": 100.0, "seconds": 0.5, "plan": plan}]},
                "this tree": {"rows": [{"budget": 100.0, "seconds": 0.005, "plan": plan},
                                       {"budget": 1e6, "seconds": 0.01, "plan": plan}]}}
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in longrun_costs.planning_table(planning)[2:]]
    assert rows == [["100", "0.5", "0.005", "100x", "7", "100", "yes"],
                    ["1e+06", "not run", "0.01", "", "7", "100", ""]]
    memory = {tree: {"rows": [{"label": "start", "rss_mb": 100.0, "live": 3},
                              {"label": "2 fits", "rss_mb": 100.0 + grow, "live": 3 + grow}]}
              for tree, grow in (("baseline", 20), ("this tree", 5))}
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in longrun_costs.memory_table(memory)[2:]]
    assert rows == [["start", "100", "+0", "3", "100", "+0", "3", ""],
                    ["2 fits", "120", "+20", "23", "105", "+5", "8", "4.0x"]]


def test_noisy_ceiling_smoke_reads_back_every_strategy(tmp_path):
    """`benchmarks/noisy_ceiling.py --smoke`: every strategy's accuracy, the populations' ROC AUC, one
    verdict per strategy compared with random search."""
    out = tmp_path / "noisy_ceiling.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "noisy_ceiling.py"), "--smoke", "--out",
                           str(out)], capture_output=True, text=True, cwd=ROOT, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout  # printed and written alike
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith(("| oracle |", "| population", "| random |"))}
    assert set(rows) == {"oracle", "population", "population, resample_key", "random"}
    for name, row in rows.items():
        assert 0.0 <= float(row[1].split()[0]) <= 1.0, name
        assert (row[2] == "n/a") == (not name.startswith("population")), name
    for name in ("population", "population, resample_key"):
        assert 0.0 <= float(rows[name][2].split()[0]) <= 1.0  # an AUC
    per_seed = [line for line in text.splitlines() if line.startswith("| 0 |")]
    assert len(per_seed) == 1 and len(per_seed[0].strip().strip("|").split("|")) == 7
    verdicts = [line for line in text.splitlines() if line.startswith("- ") and "random search's" in line]
    assert len(verdicts) == 3


def test_closed_constants_smoke_compares_both_settings(tmp_path):
    """`benchmarks/closed_constants.py --smoke`: a row per setting, their ratio, and the values equal to float32
    rounding (the suite's quick XLA flags let the embedded program fold its constants otherwise); the hoisted
    program's text far below the weights (the embedded one holds them)."""
    out = tmp_path / "closed_constants.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "closed_constants.py"), "--smoke", "--out",
                           str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.strip() in proc.stdout
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith(("| embedded |", "| hoisted |", "| hoisted / embedded |"))}
    assert set(rows) == {"embedded", "hoisted", "hoisted / embedded"}
    weights = float(rows["hoisted"][1])
    assert float(rows["hoisted"][2]) < 0.1 * weights < float(rows["embedded"][2])
    assert float(rows["embedded"][-1]) == 0.0 and float(rows["hoisted"][-1]) < 1e-5

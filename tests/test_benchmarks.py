"""Smoke test of `benchmarks/bench.py --quick`: the tables appear, with every section and row.

Structure only: timings are never asserted (speed is measured in benchmarks/, not tested).
"""

import os
import subprocess
import sys

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

    throughput = [cells(line) for line in lines if line.startswith(("| 2 |", "| 4 |")) and "GFLOP" not in line]
    steps = [row for row in throughput if row[1] == "population outer step (Reverse)"]
    assert len(steps) == 2 and all(row[-1] in (">= 80%: met", ">= 80%: missed") for row in steps)
    for row in steps:
        assert float(row[2]) > 0 and float(row[5]) > 0 and row[6].endswith("%")  # GFLOP, GFLOP/s, ratio
    for preset in ("digits-noisy",):
        rows = {cells(line)[1]: cells(line) for line in lines if line.startswith(f"| {preset} | ")}
        for strategy in ("population", "single", "random", "grid"):
            accuracy = float(rows[strategy][-1].split()[0])  # median [min-max]
            assert 0.0 <= accuracy <= 1.0, (preset, strategy)
            assert float(rows[strategy][2]) <= 30.0 * 1.001  # runs used within the smoke budget
        wall = rows["compilation included"]
        assert float(wall[2].split()[0]) > 0 and int(wall[5].split()[0]) >= 1  # pop seconds; random trials
    verdicts = [line for line in lines if line.startswith("- digits-") and "equal wall time" in line]
    assert len(verdicts) == 1 and all(("**met**" in v) != ("**missed**" in v) for v in verdicts)

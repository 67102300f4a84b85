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

"""What the experiments write is never lost to the next run, a kill or a failure part-way: finetuning's
interrupted cells are resumed or set aside, pages and sidecars are replaced whole, reproduce.py keeps the
previous log. Every test fakes the measurements (seconds, no training)."""

import json
import os

import pytest

from _helpers import import_experiment


def fake_finetuning(monkeypatch, stop_at=None):
    """finetuning with `run_cell` faked (each cell's accuracies are 0.5 + 0.01 * its call number, one NaN
    rate); raises KeyboardInterrupt at call `stop_at`. Returns (module, the calls made)."""
    finetuning = import_experiment("finetuning")
    calls = []

    def cell(setting, shots, seed, args):
        calls.append((setting, shots, seed))
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return {**{n: (0.5 + 0.01 * len(calls), 2.0, 0.1, [0.01, float("nan")]) for n in finetuning.STRATEGIES},
                "train per class": 10.0}

    monkeypatch.setattr(finetuning, "run_cell", cell)
    monkeypatch.setattr(finetuning, "plot", lambda rates, path: None)
    monkeypatch.setattr(finetuning.hg, "use_compilation_cache", lambda *_, **__: None)
    return finetuning, calls


# The full mode's command line at --smoke's sizes (budget 18, 2 steps, 20 pretraining steps), 2 shots x 2 seeds.
SMALL = ["--shots", "10,all", "--seeds", "2", "--budget", "18", "--steps", "2", "--pretrain-steps", "20"]


def test_finetuning_resumes_the_cells_an_interrupted_run_with_the_same_sizes_kept(tmp_path, monkeypatch, capsys):
    """The next run replaced an interrupted run's finetuning.partial.json after its first cell: the kept
    cells (minutes each) were lost and measured again. Now a run with the same sizes and mode reads them
    back, says so in one line, and measures only the others."""
    finetuning, calls = fake_finetuning(monkeypatch, stop_at=4)
    argv = [*SMALL, "--out", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        finetuning.main(argv)
    kept = json.loads((tmp_path / "finetuning.partial.json").read_text())["numbers"]["cells"]
    assert [(c["setting"], c["shots"], c["seed"]) for c in kept] == calls[:3]
    capsys.readouterr()

    first = list(calls[:3])
    finetuning, calls = fake_finetuning(monkeypatch)
    finetuning.main(argv)
    out = capsys.readouterr().out
    resumed = [line for line in out.splitlines() if "finetuning.partial.json" in line]
    assert len(resumed) == 1 and "resum" in resumed[0] and "3 " in resumed[0], out
    assert not set(first) & set(calls) and len(calls) == 3 * 2 * 2 - 3, calls  # the kept cells are not measured
    acc = json.loads((tmp_path / "finetuning.json").read_text())["numbers"]["acc"]
    for setting, shots, seed in first:  # the kept cells' numbers, read back (calls 1-3 of the first run)
        assert acc[setting][str(shots)]["random"][seed] == pytest.approx(0.5 + 0.01 * (first.index((setting, shots, seed)) + 1))
    assert "measured by an earlier, interrupted run" in (tmp_path / "finetuning.md").read_text()
    assert not (tmp_path / "finetuning.partial.json").exists()
    assert not list(tmp_path.glob("finetuning.partial.previous*"))


def test_finetuning_sets_aside_an_interrupted_run_with_other_sizes(tmp_path, monkeypatch, capsys):
    """A run with other sizes (here --smoke, then another --steps) cannot use the kept cells: the file is
    moved aside, never over an earlier one, with a printed line, and the run measures every cell."""
    finetuning, calls = fake_finetuning(monkeypatch, stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        finetuning.main([*SMALL, "--out", str(tmp_path)])
    partial = tmp_path / "finetuning.partial.json"
    earlier = partial.read_text()
    capsys.readouterr()

    finetuning, calls = fake_finetuning(monkeypatch)  # the same sizes in smoke mode: its 1 cell, then stopped
    tables = finetuning.tables
    monkeypatch.setattr(finetuning, "tables", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        finetuning.main(["--smoke", "--out", str(tmp_path)])
    monkeypatch.setattr(finetuning, "tables", tables)
    out = capsys.readouterr().out
    aside = tmp_path / "finetuning.partial.previous.json"
    assert aside.read_text() == earlier and f"moved to {aside}" in out, out
    assert len(calls) == 1  # nothing resumed
    smoke_partial = partial.read_text()
    assert json.loads(smoke_partial)["mode"] == "smoke"

    finetuning, calls = fake_finetuning(monkeypatch)
    finetuning.main([*SMALL[:-4], "--steps", "5", "--pretrain-steps", "20", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert aside.read_text() == earlier  # the first one set aside is kept
    assert (tmp_path / "finetuning.partial.previous-2.json").read_text() == smoke_partial
    assert "finetuning.partial.previous-2.json" in out and len(calls) == 3 * 2 * 2, out


def test_finetuning_keeps_cells_outside_this_runs_shots_and_seeds(tmp_path, monkeypatch, capsys):
    """A rerun with fewer seeds resumes the cells it uses; the file, holding others too, is set aside
    rather than removed by the final write."""
    finetuning, calls = fake_finetuning(monkeypatch, stop_at=4)
    with pytest.raises(KeyboardInterrupt):
        finetuning.main([*SMALL, "--out", str(tmp_path)])
    earlier = (tmp_path / "finetuning.partial.json").read_text()
    finetuning, calls = fake_finetuning(monkeypatch)
    finetuning.main(["--shots", "10", "--seeds", "1", *SMALL[4:], "--out", str(tmp_path)])
    assert (tmp_path / "finetuning.partial.previous.json").read_text() == earlier
    assert len(calls) == 3 - 1, calls  # (mlp, 10, 0) was kept; the two cnn settings are measured


def test_a_page_and_sidecar_that_fail_part_way_leave_the_earlier_ones_whole(tmp_path):
    """_claims.write opened <name>.md and <name>.json with "w": a failure while dumping the sidecar (or a
    kill) left the new page beside a truncated sidecar. Both are now made in full first, then replaced."""
    claims = import_experiment("_claims")
    claim = claims.Claim("P", "c", "o", "held", "w")
    claims.write(str(tmp_path), "x", "old body", [claim], seconds=1.0, smoke=True, numbers={"a": 1})
    page, sidecar = (tmp_path / "x.md").read_text(), (tmp_path / "x.json").read_text()
    with pytest.raises(TypeError):
        claims.write(str(tmp_path), "x", "new body", [claim], seconds=2.0, smoke=True, numbers={"a": object()})
    assert (tmp_path / "x.md").read_text() == page and (tmp_path / "x.json").read_text() == sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.md"]  # no temporary left


def test_write_atomically_keeps_the_old_file_until_the_new_one_is_whole(tmp_path, monkeypatch):
    claims = import_experiment("_claims")
    path = tmp_path / "f.txt"
    path.write_text("old")
    monkeypatch.setattr(claims.os, "replace", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        claims.write_atomically(str(path), "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    monkeypatch.undo()
    os.chmod(path, 0o644)
    claims.write_atomically(str(path), "new")
    mask = os.umask(0)
    os.umask(mask)
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o666 & ~mask


def test_seed_iris_keeps_its_earlier_report_when_stopped_while_writing(tmp_path, monkeypatch):
    """seed_iris.py wrote report.md and results.json with "w": stopped part-way, a run left them empty or
    cut. A stop before the new files are whole (here at the rename) leaves the earlier run's files."""
    seed_iris = import_experiment("seed_iris")
    row = {"library": "scikit-learn", "n_jobs": 1, "fit_s": 1.0, "refit_s": 0.1, "fits": 8,
           "best_params": {"alpha": 1e-4}, "cv_accuracy": 0.9, "cv_std": 0.01, "test_accuracy": 0.9}
    monkeypatch.setattr(seed_iris, "study", lambda library, smoke, n_jobs: dict(row))
    argv = ["--library", "scikit-learn", "--smoke", "--out", str(tmp_path)]
    seed_iris.main(argv)
    report, results = (tmp_path / "report.md").read_text(), (tmp_path / "results.json").read_text()
    row["cv_accuracy"] = 0.5
    claims = import_experiment("_claims")
    monkeypatch.setattr(claims.os, "replace", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        seed_iris.main(argv)
    assert (tmp_path / "report.md").read_text() == report and (tmp_path / "results.json").read_text() == results
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "results.json"]


def test_reproduce_keeps_the_previous_runs_log(tmp_path, monkeypatch, capsys):
    """reproduce.py opened <name>.log with "w": the next run erased the log of a failed one. The previous
    log is now kept as <name>.previous.log."""
    reproduce = import_experiment("reproduce")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "x.py").write_text("import sys\nprint('first run failed')\nsys.exit(2)\n")
    monkeypatch.setattr(reproduce, "HERE", str(scripts))
    assert reproduce.run_one("x", str(tmp_path), False, "r1")[0] == 2
    (scripts / "x.py").write_text("print('second run')\n")
    assert reproduce.run_one("x", str(tmp_path), False, "r2")[0] == 0
    assert (tmp_path / "x.log").read_text() == "second run\n"
    assert (tmp_path / "x.previous.log").read_text() == "first run failed\n"

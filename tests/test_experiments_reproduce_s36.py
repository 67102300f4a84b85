"""RESULTS.md's header after `reproduce.py --only`: the last run's wall time names only what it ran, so
the header adds every experiment's own last wall time, summed (what a whole run would take)."""

from _helpers import import_experiment


def _sidecar(name, run, wall):
    return {"experiment": name, "reproduce_run": run, "wall_seconds": wall}


def test_a_run_of_some_experiments_also_gives_the_whole_wall_time():
    reproduce = import_experiment("reproduce")
    whole = [_sidecar("a", "2026-01-01T00:00:00Z", 600.0), _sidecar("b", "2026-01-01T00:00:00Z", 300.0)]
    line = reproduce.last_run(whole)
    assert "(started 2026-01-01T00:00:00Z, 2 experiments): 15.0 min." in line and "All " not in line
    some = [_sidecar("a", "2026-01-01T00:00:00Z", 600.0), _sidecar("b", "2026-02-01T00:00:00Z", 60.0)]
    line = reproduce.last_run(some)
    assert "(started 2026-02-01T00:00:00Z, 1 experiment): 1.0 min." in line
    assert "All 2 experiments, each at its own last run (the table's last column): 11.0 min." in line


def test_the_environment_of_a_run_of_some_experiments_says_it_is_that_runs():
    reproduce = import_experiment("reproduce")
    env = {"hypergrad_commit": "abc", "hypergrad": "0.1.0", "python": "3.11", "jax": "0.10.2", "backend": "cpu"}
    whole = [dict(_sidecar(n, "2026-01-01T00:00:00Z", 1.0), environment=env) for n in ("a", "b")]
    assert reproduce.environments(whole).startswith(" Produced by: ")
    some = [whole[0], dict(_sidecar("b", "2026-02-01T00:00:00Z", 1.0), environment={**env, "hypergrad_commit": "def"})]
    line = reproduce.environments(some)
    assert line.startswith(" That run was produced by: ") and "def" in line and "abc" not in line

"""A results page and sidecar did not say what produced them (hypergrad's commit, the library versions,
the JAX backend), so numbers that moved between two runs of the same code (the venv was reinstalled) could
not be traced to their environment. `_claims.write` now records it, and reproduce.py's RESULTS.md header
states it for the run."""

import importlib.metadata
import json
import re
import subprocess

import jax

from _helpers import import_experiment


def test_every_sidecar_and_page_records_what_produced_it(tmp_path):
    claims = import_experiment("_claims")
    claim = claims.Claim("P", "a claim", "ours", "held", "why")
    md, sidecar = claims.write(str(tmp_path), "x", "# X\n", [claim], seconds=5.0, smoke=True)
    env = json.loads(open(sidecar).read())["environment"]
    for package in ("jax", "jaxlib", "numpy", "optax", "flax"):
        assert env[package] == importlib.metadata.version(package), (package, env)
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown", env["hypergrad_commit"]), env
    assert env["python"] and env["backend"] == jax.default_backend() and jax.devices()[0].device_kind in env["devices"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", env["started_utc"]), env
    page = open(md).read()
    assert f"Produced by: hypergrad {env['hypergrad_commit']}" in page and f"jax {env['jax']}," in page, page
    assert f"started {env['started_utc']}" in page, page


def test_results_md_states_the_environment_of_the_run(tmp_path):
    claims, reproduce = import_experiment("_claims"), import_experiment("reproduce")
    name = reproduce.EXPERIMENTS[0]
    claims.write(str(tmp_path), name, "# X\n", [claims.Claim("P", "c", "o", "held", "w")], seconds=1.0, smoke=False)
    env = json.loads((tmp_path / f"{name}.json").read_text())["environment"]
    page = reproduce.summary([name], str(tmp_path), str(tmp_path / "RESULTS.md"))
    header = page.split("| experiment |")[0]
    del env["started_utc"]  # the header's own "started" is the run's; each experiment's start is on its page
    assert f"Produced by: {claims.environment_line(env)}." in header, header


def test_results_md_names_one_environment_for_experiments_that_differ_only_in_their_start(tmp_path):
    """Every experiment of a run starts at another time: the header listed the whole environment once per
    experiment (eleven near-identical sentences) instead of once."""
    claims, reproduce = import_experiment("_claims"), import_experiment("reproduce")
    names = reproduce.EXPERIMENTS[:2]
    for name in names:
        claims.write(str(tmp_path), name, "# X\n", [claims.Claim("P", "c", "o", "held", "w")], seconds=1.0,
                     smoke=False)
    starts = {json.loads((tmp_path / f"{n}.json").read_text())["environment"]["started_utc"] for n in names}
    header = reproduce.summary(names, str(tmp_path), str(tmp_path / "RESULTS.md")).split("| experiment |")[0]
    assert header.count("Produced by:") == 1 and header.count("jaxlib") == 1, header
    assert not any(f"started {s}" in header for s in starts), header


def test_a_run_is_dirty_for_code_changes_not_for_the_results_it_wrote(tmp_path):
    """A reproduce run writes experiments/results/ as it goes: the experiments after the first ones
    were marked +dirty by the pages the earlier ones had just written."""
    claims = import_experiment("_claims")

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for path in ("hypergrad/a.py", "experiments/b.py", "experiments/results/c.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    (tmp_path / "experiments/results/c.md").write_text("a new result\n")
    assert re.fullmatch(r"[0-9a-f]{40}", claims._git_commit(str(tmp_path / "hypergrad")))
    (tmp_path / "experiments/b.py").write_text("edited\n")
    assert claims._git_commit(str(tmp_path / "hypergrad")).endswith("+dirty")

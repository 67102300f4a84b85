"""FLOPs per run must not depend on where a search on several devices placed its arguments."""
import subprocess
import sys
import textwrap

_COUNTS_ON_TWO_DEVICES = textwrap.dedent('''
    import json, jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_x64", True)
    import optax
    import hypergrad as hg
    problem = hg.problems.mlp_classifier("iris", hidden=(4,), batch_size=30)
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=4)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
    key, h0 = jax.random.key(0), {"lr": 0.1, "momentum": 0.5}
    fresh = hg.run_flops(objective, h0, key)
    hg.clear_caches()
    search = hg.random_search(objective, space, num_trials=4, key=key)
    after_search = hg.run_flops(objective, h0, key)
    hg.clear_caches()
    tune = hg.tune(objective, space, key, steps=2, population=2, init="sample")
    print(json.dumps({"fresh": fresh, "search": search.run_flops, "trials": [t.run_flops for t in search.trials],
                      "after_search": after_search, "tune": [t.run_flops for t in tune.trials]}))
''')


def test_a_search_on_two_devices_counts_what_one_device_counts():
    # the search traced its run with the key replicated on the mesh, and that trace (its resharding, its sums over
    # no axes) was counted: 20 FLOPs more per run on iris, filed under the types run_flops looks up, so whichever of
    # a search and run_flops counted an objective first set the other's count
    out = subprocess.run([sys.executable, "-c", _COUNTS_ON_TWO_DEVICES], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    fresh = counts["fresh"]
    assert counts["search"] == fresh and counts["after_search"] == fresh, counts
    assert counts["trials"] == [fresh] * 4 and counts["tune"] == [fresh] * len(counts["tune"]), counts

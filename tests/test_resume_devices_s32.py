"""A search study resumed on another device count, whose chunks are cut elsewhere, recomputes the rows it held in a
chunk it cannot skip: that compute is charged to the chunk's new trials, so the study's runs are what both calls
computed."""
import json
import subprocess
import sys
import textwrap

_CALL = textwrap.dedent('''
    import json, sys, jax
    jax.config.update("jax_num_cpu_devices", int(sys.argv[1]))
    jax.config.update("jax_enable_x64", True)
    import optax
    import hypergrad as hg
    problem = hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0)})

    def search(study, **kw):
        return hg.random_search(objective, space, jax.random.key(0), num_trials=130, storage=sys.argv[2],
                                study=study, **kw)

    def stop(line):
        raise KeyboardInterrupt

    if sys.argv[3] == "interrupt":
        try:
            search("s", progress=stop)
        except KeyboardInterrupt:
            pass
        stored = hg.load_study(sys.argv[2], "s")
        print(json.dumps({"trials": len(stored.trials), "runs": stored.runs}))
    else:
        resumed, fresh = search("s"), search("fresh")
        print(json.dumps({"trials": len(resumed.trials), "runs": resumed.runs, "fresh": fresh.runs,
                          "values": [t.value for t in resumed.trials] == [t.value for t in fresh.trials]}))
''')


def _run(devices, db, what):
    out = subprocess.run([sys.executable, "-c", _CALL, str(devices), db, what], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_search_resumed_on_more_devices_charges_the_rows_it_computed_again(tmp_path):
    # 130 trials: chunks of 44, 43, 43 on one device, stopped after the first; on three devices chunks of 45, so the
    # first holds 44 stored trials and one new one: all 45 rows ran and one run was charged for them
    db = str(tmp_path / "s.db")
    first = _run(1, db, "interrupt")
    assert 0 < first["trials"] < 130
    second = _run(3, db, "resume")
    assert second["trials"] == 130 and second["values"]
    assert round(second["runs"], 9) == round(first["runs"] + second["fresh"], 9)

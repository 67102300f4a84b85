"""Successive halving on a CPU with fewer tuners than devices runs them unpadded, as a population without halving
does, and `hypergrad compare`'s planner charges what the driver computes."""
import json
import subprocess
import sys
import textwrap

_THREE_DEVICES = textwrap.dedent('''
    import json, jax
    jax.config.update("jax_num_cpu_devices", 3)
    jax.config.update("jax_enable_x64", True)
    import optax
    import hypergrad as hg
    from hypergrad import cli
    problem = hg.problems.logistic("synthetic", num_examples=30, num_features=3, num_classes=2, seed=0)
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"], momentum=h["momentum"]), num_steps=3)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "momentum": hg.Uniform(0.0, 0.9)})
    key = jax.random.key(0)
    step = hg.tune_step_cost(objective, space, key)
    halved = hg.tune(objective, space, key, steps=2, population=2, halving=1)
    whole = hg.tune(objective, space, key, steps=2, population=2)
    print(json.dumps({"halved": halved.runs / step, "whole": whole.runs / step,
                      "planned": cli._evaluations(2, 2, 1), "trials": len(halved.trials)}))
''')


def test_halving_two_tuners_on_three_devices_pads_no_more_than_no_halving():
    # halving fixed the chunk at the device count: 2 tuners on 3 devices were padded to 3 rows every step, so
    # halving charged 9 hypergradients where the same population without it charged 6 (and 4 on one device)
    out = subprocess.run([sys.executable, "-c", _THREE_DEVICES], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["trials"] == 4
    assert round(found["halved"], 6) == round(found["whole"], 6) == 6
    assert found["planned"] == 6

"""What a cached program is keyed by (`hypergrad._compile.signature`): besides shapes and dtypes,
the arguments' shardings and JAX's default matmul precision, both of which a compiled program fixes."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import optax

import hypergrad as hg
from hypergrad import _compile


def test_a_call_under_another_matmul_precision_compiles_its_own_program(ridge_problem):
    # the program compiled at the default precision was reused under jax.default_matmul_precision("highest")
    objective = hg.Objective(ridge_problem, lambda h: optax.sgd(h["lr"]), num_steps=3)
    hparams, key = {"lr": jnp.asarray(0.1), "weight_decay": jnp.asarray(0.01)}, jax.random.key(0)
    hg.hypergradient(objective, hparams, key)
    before = _compile.stats.compilations
    hg.hypergradient(objective, hparams, key)
    assert _compile.stats.compilations == before
    with jax.default_matmul_precision("highest"):
        hg.hypergradient(objective, hparams, key)
        assert _compile.stats.compilations == before + 1
        hg.hypergradient(objective, hparams, key)
    assert _compile.stats.compilations == before + 1  # each precision's program, cached


_TWO_DEVICES = textwrap.dedent('''
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, optax
    import hypergrad as hg
    objective = hg.Objective(hg.problems.ridge(num_examples=60, num_features=4), lambda h: optax.sgd(h["lr"]),
                             num_steps=5)
    key = jax.random.key(0)
    hparams = {"lr": jnp.asarray(0.1), "weight_decay": jnp.asarray(0.01)}
    on_1 = jax.device_put(hparams, jax.devices()[1])
    values = [float(hg.hypergradient(objective, h, key)[0]) for h in (hparams, on_1, hparams)]
    assert values == [float(objective(hparams, key))] * 3, values
    print("ok")
''')


def test_hyperparameters_on_another_device_get_a_program_of_their_own():
    # a second call with the hyperparameters on device 1 reused the program compiled for device 0 and failed with
    # "compiled for input shardings that disagree", where objective(...) took the same arguments
    out = subprocess.run([sys.executable, "-c", _TWO_DEVICES], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]

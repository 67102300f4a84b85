"""Large arrays a problem's functions close over (a fine-tuning problem's pretrained weights, a frozen
embedding of a user's own problem) reach the compiled programs as arguments, not as constants
embedded in them (hypergrad/_compile.py, `hoisting`): embedded, each program's text held the weights
(hundreds of megabytes of program text for tens of megabytes of weights, seconds more per
compilation, a copy in every persistent-cache entry). The numbers are those of a plain unrolled loop
differentiated by `jax.grad`, and a program loaded from the program store takes the arrays too."""

import importlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hypergrad as hg
from hypergrad import _compile, _program_store

hypergradient_module = importlib.import_module("hypergrad.hypergradient")  # hg.hypergradient is the function

D, H, C, STEPS = 600, 400, 3, 3  # a body of 600 x 400 float64 weights: 1.9 MB


def _pretrained():
    rng = np.random.default_rng(0)
    return {"body": {"w": rng.normal(size=(D, H)) / 25, "b": rng.normal(size=H) * 0.1},
            "head": {"w": rng.normal(size=(H, C)) * 0.1, "b": np.zeros(C)}}


def _apply(p, x):
    return jnp.tanh(x @ p["body"]["w"] + p["body"]["b"]) @ p["head"]["w"] + p["head"]["b"]


def _task():
    rng = np.random.default_rng(1)
    splits = []
    for n in (12, 8):
        x = rng.normal(size=(n, D))
        splits.append((x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0.5).astype(np.int32)))
    return tuple(splits)


def _weights_bytes(tree) -> int:
    return sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree))


@pytest.fixture
def lowered_texts(monkeypatch):
    """The sizes of the texts of the programs `hypergrad._compile` lowers during the test."""
    sizes, lower = [], _compile.lower

    def spy(fn, args):
        lowered = lower(fn, args)
        sizes.append(len(lowered.as_text()))
        return lowered

    monkeypatch.setattr(_compile, "lower", spy)
    return sizes


def _finetune_reference(hparams):
    """The validation loss after STEPS plain SGD steps (full batch) on cross-entropy plus L2-SP towards the
    pretrained weights: the value `hg.hypergradient` differentiates, written out."""
    pretrained = _pretrained()
    (x, y), (xv, yv) = _task()

    def ce(p, a, b):
        return optax.softmax_cross_entropy_with_integer_labels(_apply(p, a), b).mean()

    def loss(p, h):
        gap = sum(jnp.sum((w - w0) ** 2) for w, w0 in zip(jax.tree.leaves(p), jax.tree.leaves(pretrained)))
        return ce(p, x, y) + 0.5 * h["l2sp"] * gap

    p = jax.tree.map(jnp.asarray, pretrained)
    for _ in range(STEPS):
        grads = jax.grad(loss)(p, hparams)
        p = jax.tree.map(lambda w, g: w - hparams["lr"] * g, p, grads)
    return ce(p, xv, yv)


def test_a_finetune_hypergradient_program_takes_the_pretrained_weights_as_arguments(lowered_texts):
    problem = hg.problems.finetune(_pretrained(), _task(), _apply)
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=STEPS)
    hparams, key = {"lr": jnp.asarray(0.3), "l2sp": jnp.asarray(0.05)}, jax.random.key(0)
    value, grads = hg.hypergradient(objective, hparams, key, method=hg.Reverse())
    weights = _weights_bytes(_pretrained())
    # one program, whose text is far below the weights' size (embedded: over twice it)
    assert len(lowered_texts) == 1 and lowered_texts[0] < weights / 10, (lowered_texts, weights)
    executable, seconds = hypergradient_module.compiled_value_and_grad(
        objective, hg.Reverse(), (hparams, key, problem.data))
    assert seconds == 0.0  # the program hg.hypergradient ran: it takes the weights as arguments
    assert executable.memory_analysis().argument_size_in_bytes >= weights
    want_value, want_grads = jax.jit(jax.value_and_grad(_finetune_reference))(hparams)
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-12)
    for name in hparams:
        np.testing.assert_allclose(float(grads[name]), float(want_grads[name]), rtol=1e-12)


def _frozen_embedding_problem():
    """A user's own problem whose losses close over a frozen (numpy) embedding of 1.3 MB."""
    rng = np.random.default_rng(2)
    embedding = rng.normal(size=(400, 400)) / 20
    x, xv = rng.normal(size=(16, 400)), rng.normal(size=(8, 400))
    y, yv = rng.normal(size=16), rng.normal(size=8)

    def predict(w, inputs):
        return jnp.tanh(inputs @ embedding) @ w

    def train_loss(w, h, batch):
        return jnp.mean((predict(w, batch[0]) - batch[1]) ** 2) + h["weight_decay"] * jnp.sum(w ** 2)

    def val_loss(w, batch):
        return jnp.mean((predict(w, batch[0]) - batch[1]) ** 2)

    problem = hg.Problem(init=lambda key: jnp.full(400, 0.01), train_loss=train_loss, val_loss=val_loss,
                         train_data=(x, y), val_data=(xv, yv))

    def reference(h):
        w = jnp.full(400, 0.01)
        for _ in range(STEPS):
            w = w - h["lr"] * jax.grad(train_loss)(w, h, (x, y))
        return val_loss(w, (xv, yv))

    return problem, embedding, reference


def test_a_user_problem_closing_over_a_frozen_embedding_gets_it_as_an_argument(lowered_texts):
    problem, embedding, reference = _frozen_embedding_problem()
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=STEPS)
    hparams = {"lr": jnp.asarray(0.2), "weight_decay": jnp.asarray(1e-3)}
    value, grads = hg.hypergradient(objective, hparams, jax.random.key(0))
    assert len(lowered_texts) == 1 and lowered_texts[0] < embedding.nbytes / 10, (lowered_texts, embedding.nbytes)
    want_value, want_grads = jax.jit(jax.value_and_grad(reference))(hparams)
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-12)
    for name in hparams:
        np.testing.assert_allclose(float(grads[name]), float(want_grads[name]), rtol=1e-12)


def test_a_search_program_stored_and_loaded_takes_the_arrays_too(lowered_texts, tmp_path, monkeypatch):
    """A search's program goes through the program store when the persistent cache is on: stored after
    its compilation, loaded (not lowered) once the in-memory cache is cleared, computing the same trials."""
    monkeypatch.setattr(_program_store, "directory", lambda: str(tmp_path))
    problem, embedding, reference = _frozen_embedding_problem()
    objective = hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=STEPS)
    space = hg.Space({"lr": hg.LogUniform(0.01, 0.3), "weight_decay": hg.LogUniform(1e-4, 1e-2)})
    first = hg.random_search(objective, space, jax.random.key(0), num_trials=3)
    assert len(lowered_texts) == 1 and lowered_texts[0] < embedding.nbytes / 10, (lowered_texts, embedding.nbytes)
    stored = list(tmp_path.iterdir())
    assert len(stored) == 1 and stored[0].stat().st_size < embedding.nbytes / 2  # the entry holds no copy
    hg.clear_caches()
    loads = _program_store.counts()["store_loads"]
    again = hg.random_search(objective, space, jax.random.key(0), num_trials=3)
    assert _program_store.counts()["store_loads"] == loads + 1 and len(lowered_texts) == 1
    assert [t.value for t in again.trials] == [t.value for t in first.trials]
    for trial in first.trials:
        np.testing.assert_allclose(trial.value, float(jax.jit(reference)(trial.hparams)), rtol=1e-12)


_COMMITTED = textwrap.dedent('''
    import sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np, optax
    import hypergrad as hg
    from hypergrad import _program_store
    rng = np.random.default_rng(2)
    host = rng.normal(size=(400, 200)) / 20  # 640 KB of float64: over HOISTED_BYTES
    x, xv, y, yv = rng.normal(size=(8, 400)), rng.normal(size=(4, 400)), rng.normal(size=8), rng.normal(size=4)
    space = hg.Space({"lr": hg.LogUniform(0.01, 0.3), "weight_decay": hg.LogUniform(1e-4, 1e-2)})

    def objective(embedding):
        def val_loss(w, batch):
            return jnp.mean((jnp.tanh(batch[0] @ embedding) @ w - batch[1]) ** 2)
        def train_loss(w, h, batch):
            return val_loss(w, batch) + h["weight_decay"] * jnp.sum(w ** 2)
        problem = hg.Problem(init=lambda key: jnp.full(200, 0.01), train_loss=train_loss, val_loss=val_loss,
                             train_data=(x, y), val_data=(xv, yv))
        return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=2)

    def searches(embedding):
        found = hg.random_search(objective(embedding), space, jax.random.key(0), num_trials=2)
        tuned = hg.tune(objective(embedding), space, jax.random.key(0), steps=1, population=2)
        return [t.value for t in found.trials], [t.value for t in tuned.trials]

    committed = searches(jax.device_put(host, jax.devices()[0]))  # as a checkpoint restore hands weights out
    want = searches(host)
    assert committed == want, (committed, want)
    _program_store.directory = lambda: sys.argv[1]  # the program store's path: stored, then loaded
    on_1 = jax.device_put(host, jax.devices()[1])
    stored = searches(on_1)
    hg.clear_caches()
    loads = _program_store.counts()["store_loads"]
    loaded = searches(on_1)
    assert _program_store.counts()["store_loads"] == loads + 2, _program_store.counts()
    assert stored == loaded == want, (stored, loaded, want)
    print("ok")
''')


def test_a_closed_over_array_committed_to_one_device_is_searched_over_two(tmp_path):
    """An array committed to one device (`jax.device_put(w, device)`, a checkpoint restore's weights) that a
    problem closes over: random_search and tune over two CPU devices ran before hoisting; hoisted, its
    program was lowered at the array's placement beside arguments sharded over both devices, and JAX refused
    it ("Received incompatible devices ... values[0]"). The trials equal those over the uncommitted array,
    compiled and loaded from the program store."""
    out = subprocess.run([sys.executable, "-c", _COMMITTED, str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]

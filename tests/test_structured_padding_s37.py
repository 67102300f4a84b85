"""A family's grouped trials: a bounded set of programs per configuration, and little padding.

optuna_search over an `hg.Structured` family ran each group of a round at its own size, so every
new (configuration, group size) pair traced and compiled again (16 traces in 8 rounds of 3
configurations, where the module docstring promised one compilation for any number of rounds). A
random search of a family padded every group to whole chunks of the mean group's size: 144 trials
over 3 configurations ran 192 rows (a group of 52 as two calls of 48). Groups now run whole chunks
and then their remainder in calls of a quarter chunk (`hypergrad.search.group_calls`): at most two
programs per configuration, padding under a quarter chunk per group, charged as it is computed.
"""

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import hypergrad as hg  # noqa: E402
from hypergrad.search import evaluate_settings  # noqa: E402

WIDTHS = (2, 3, 5)


def make_family(traces=None):
    """A one-hidden-layer regression network whose width is a grouped structural choice;
    `traces["n"]` (if given) counts the traces of its training loss (one per search program made)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 3))
    y = np.tanh(x @ rng.normal(size=(3,)))[:, None]

    def build(config):
        width = config["width"]

        def init(key):
            k1, k2 = jax.random.split(key)
            return {"w1": jax.random.normal(k1, (3, width)) / 2, "w2": jax.random.normal(k2, (width, 1)) / 2}

        def val_loss(params, batch):
            xb, yb = batch
            return ((jax.numpy.tanh(xb @ params["w1"]) @ params["w2"] - yb) ** 2).mean()

        def train_loss(params, hparams, batch):
            if traces is not None:
                traces["n"] += 1
            return val_loss(params, batch) + hparams["alpha"] * (params["w1"] ** 2).sum()

        problem = hg.Problem(init=init, train_loss=train_loss, val_loss=val_loss, train_data=(x[:16], y[:16]),
                             val_data=(x[16:], y[16:]))
        return hg.Objective(problem, lambda h: optax.sgd(h["lr"]), num_steps=3)

    return hg.Structured(build)


SPACE = hg.Space({"width": hg.Choice(list(WIDTHS), structural=True), "lr": hg.LogUniform(1e-3, 0.5),
                  "alpha": hg.LogUniform(1e-5, 1e-1)})


def rows_run(counts, chunk, part):
    """Rows groups of `counts` trials run: whole chunks, then the remainder in calls of `part` rows
    where those run fewer rows than one more chunk."""
    def rows(n):
        whole, rest = n // chunk * chunk, n % chunk
        calls = -(-rest // part) * part
        return whole + calls if rest and calls < chunk else -(-n // chunk) * chunk
    return sum(rows(n) for n in counts)


def test_group_calls_split_a_remainder_into_quarter_chunks():
    from hypergrad.search import group_calls

    assert group_calls(52, 48, 12) == [(0, 48, 48), (48, 52, 12)]  # 60 rows, not 96
    assert group_calls(44, 48, 12) == [(0, 44, 48)]  # four quarter calls would run as many rows as one chunk
    assert group_calls(30, 48, 12) == [(0, 30, 12)]  # 36 rows
    assert group_calls(96, 48, 12) == [(0, 96, 48)]
    assert group_calls(5, 4, 4) == [(0, 5, 4)]  # no remainder calls: whole chunks, as before
    assert rows_run([44, 48, 52], 48, 12) == 156


def test_optuna_rounds_of_a_grouped_family_reuse_a_bounded_set_of_programs():
    """Five rounds of 16 trials over 3 grouped widths: at most two programs (traces) per width, where
    each group ran at its own size and every new size traced again; every row that ran is charged."""
    pytest.importorskip("optuna")
    traces = {"n": 0}
    family = make_family(traces)
    key = jax.random.key(3)
    hg.clear_caches()
    result = hg.optuna_search(family, SPACE, key, num_trials=80, sampler="random", batch_size=16)
    assert result.info["structure"]["width"]["decision"] == "group"
    assert 0 < traces["n"] <= 2 * len(WIDTHS)
    # the rows run, round by round: chunks of 6 rows (16 rows over 3 widths), remainders in calls of 2
    counts = [[sum(t.hparams["width"] == w for t in result.trials[r:r + 16]) for w in WIDTHS] for r in range(0, 80, 16)]
    assert len({tuple(c) for c in counts}) > 2  # the rounds split differently
    assert result.runs == pytest.approx(sum(rows_run(c, 6, 2) for c in counts), rel=1e-12)
    assert 80 < result.runs < 80 + 5 * len(WIDTHS)  # under 2 rows of padding per group and round, charged
    # a later call with the same names, shapes and row count compiles nothing
    before = traces["n"]
    again = hg.optuna_search(family, SPACE, jax.random.key(4), num_trials=32, sampler="random", batch_size=16)
    assert traces["n"] == before and again.compile_seconds == 0.0
    for trial in result.trials[:6]:
        objective, hparams = family.split(SPACE, trial.hparams)
        np.testing.assert_allclose(float(objective(hparams, key)), trial.value, rtol=1e-12)


def test_a_random_search_of_the_readme_shape_runs_a_remainder_in_quarter_chunks():
    """144 trials over 3 grouped widths (the README's structural example): chunks of 48 rows; a group
    past 48 trials ran a second whole chunk (192 rows or more for any uneven draw), now its
    remainder runs in calls of 12: under 12 rows of padding per group, all of it charged."""
    traces = {"n": 0}
    family = make_family(traces)
    key = jax.random.key(0)
    result = hg.random_search(family, SPACE, key, num_trials=144)
    counts = [sum(t.hparams["width"] == w for t in result.trials) for w in WIDTHS]
    assert max(counts) > 48  # an uneven draw: the old chunking ran 4 chunks of 48
    assert result.runs < 144 + len(WIDTHS) * 12 < 192
    assert result.runs == pytest.approx(rows_run(counts, 48, 12), rel=1e-12)
    assert result.info["chunk_size"] == 48 and result.info["remainder_chunk_size"] == 12
    assert result.info["programs"] == traces["n"] <= 2 * len(WIDTHS)

    # the same trials' values as the old chunking's (each group in padded calls of 48 rows) to 1e-12
    for width in WIDTHS:
        trials = [t for t in result.trials if t.hparams["width"] == width]
        padded = -(-len(trials) // 48) * 48
        group = {name: np.array([t.hparams[name] for t in trials] + [trials[0].hparams[name]] * (padded - len(trials)))
                 for name in ("lr", "alpha")}
        old = evaluate_settings(family.objective({"width": width}), group, key, strategy="old", chunk_size=48)
        np.testing.assert_allclose([t.value for t in old.trials[:len(trials)]], [t.value for t in trials],
                                   rtol=1e-12, atol=0)


def test_a_stored_random_search_of_a_family_resumes_bitwise_across_remainder_calls(tmp_path):
    """Interrupted after its first committed call, the study resumes to the uninterrupted trials."""
    family = make_family()  # a counter would be part of the stored fingerprint
    key = jax.random.key(0)
    whole = hg.random_search(family, SPACE, key, num_trials=144)
    assert "remainder_chunk_size" in whole.info

    def stop(line):
        raise KeyboardInterrupt("killed after the first committed call")

    path = tmp_path / "s.db"
    with pytest.raises(KeyboardInterrupt):
        hg.random_search(family, SPACE, key, num_trials=144, storage=path, study="s", progress=stop)
    assert 0 < len(hg.load_study(path, "s").trials) < 144
    resumed = hg.random_search(family, SPACE, key, num_trials=144, storage=path, study="s")
    assert [t.value for t in resumed.trials] == [t.value for t in whole.trials]
    assert [t.hparams for t in resumed.trials] == [t.hparams for t in whole.trials]
    assert resumed.runs == pytest.approx(whole.runs, rel=1e-12)

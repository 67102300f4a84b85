"""`hypergrad compare`'s plan spends the gradient strategy's budget: outer steps are coarse (the next
step of 8 tuners costs tens of runs), so the most steps that fit left up to a step's cost unspent (on
digits-noisy at --budget 300 on 2 devices, 279.8 of 300 runs, benchmarks/populations_quality.md).
The random warm-up now takes what the steps leave, one trial's padded rows at a time: the plan never
spends past the budget, and what it leaves would not pay for one more warm-up trial. Pure planning,
no training: milliseconds."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypergrad import cli

FEW = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def _tuner_chunk(chunk):
    """`cohort_chunk` as on a CPU of `chunk` devices (None: as here), so the plan does not depend on
    this machine's devices."""
    if chunk is None:
        return cli.cohort_chunk
    return lambda size, halving, population=None: (
        chunk if population is None else min(chunk, population)) if halving else size


def _charged(plan, step_runs, warmup_rows, extra=0):
    """Runs the gradient strategy of `plan` spends with `extra` more warm-up trials."""
    warmup = warmup_rows(plan["warmup"] + extra) if plan["warmup"] else 0
    return warmup + cli._evaluations(plan["population"], plan["tune_steps"], plan["halving"]) * step_runs


def test_digits_noisy_at_300_spends_its_budget_on_the_warmup(monkeypatch):
    """The benchmark's case: Implicit's step of 2.83 runs, 2 devices. The most steps (19, halving
    every 4) left 20.24 runs after a warm-up of 75 trials (76 rows); now the warm-up has 96."""
    monkeypatch.setattr(cli, "cohort_chunk", _tuner_chunk(2))
    two = lambda n: cli._rows_run(n, cli.DEFAULT_CHUNK, 2)  # noqa: E731
    plan = cli._budget_plan(300, 2.83, 1.0, 4, rows=two, warmup_rows=two)
    assert (plan["population"], plan["tune_steps"], plan["halving"]) == (8, 19, 4)  # the steps as before
    assert plan["warmup"] == 96
    spent = _charged(plan, 2.83, two)
    assert spent == pytest.approx(299.76) and spent <= 300
    assert _charged(plan, 2.83, two, extra=1) > 300  # a 97th trial runs 98 rows: over
    assert cli._gradient_words(plan).startswith("96 random warm-up trials, then 8 tuners started from the best")
    # the benchmark itself plans without the devices' padding (`_budget_plan(budget, step_runs, 1.0, axes)`)
    assert cli._budget_plan(300, 2.83, 1.0, 4)["warmup"] == 96


@FEW
@given(budget=st.one_of(st.integers(1, 3000), st.floats(1.0, 3000.0)),
       step_runs=st.one_of(st.sampled_from([1.0, 2.0, 2.2, 2.68, 2.83, 3.0, 7.3, 27.0]), st.floats(0.5, 40.0)),
       devices=st.integers(1, 4), warmup_chunk=st.sampled_from([1, 3, 4, 64, 10**9]),
       tuner_chunk=st.sampled_from([None, 1, 2, 3]))
def test_the_plan_fits_the_budget_and_leaves_less_than_one_warmup_trial(budget, step_runs, devices, warmup_chunk,
                                                                        tuner_chunk):
    rows = lambda n: cli._rows_run(n, warmup_chunk, devices)  # noqa: E731
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "cohort_chunk", _tuner_chunk(tuner_chunk))
        least = cli._gradient_plan(budget, step_runs, rows)  # the steps and the warm-up's least share
        plan = cli._budget_plan(budget, step_runs, 1.0, 3, rows=rows, warmup_rows=rows)
        if least is None:
            assert plan is None
            return
        keys = ("population", "tune_steps", "halving")
        assert {k: plan[k] for k in keys} == {k: least[k] for k in keys}
        spent = _charged(plan, step_runs, rows)
        assert spent <= budget  # never above it
        if plan["population"] == 1:  # one tuner from the space's centre: no warm-up to grow
            assert plan["warmup"] is None
            return
        assert plan["warmup"] >= least["warmup"] >= plan["population"]  # the tuners: the warm-up's best
        assert _charged(plan, step_runs, rows, extra=1) > budget  # nothing more that fits is left unspent
        if rows(plan["warmup"] + 1) == rows(plan["warmup"]) + 1:  # one more trial would cost one more row
            assert budget - spent < 1  # so less than one trial's run is left
        # the most trials that fit, counted one by one
        fits = [n for n in range(least["warmup"], math.floor(budget) + 1)
                if cli._spent(plan["population"], plan["tune_steps"], rows(n), step_runs) <= budget]
        assert plan["warmup"] == max(fits)


def test_a_large_budget_fills_its_warmup_in_few_charges():
    """The extra trials are found by doubling and bisection, not one by one: a leftover of millions of
    runs is filled in a few dozen charges, and the plan still fits."""
    charged = []

    def rows(n):
        charged.append(n)
        return cli._rows_run(n, 64, 3)
    for budget in (1e7, 1e12, 123456789.5):
        charged.clear()
        plan = cli._budget_plan(budget, 2.68, 1.0, 3, rows=lambda n: cli._rows_run(n, 64, 3), warmup_rows=rows)
        assert len(charged) < 400
        assert _charged(plan, 2.68, rows) <= budget < _charged(plan, 2.68, rows, extra=1)

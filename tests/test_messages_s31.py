"""Error and warning messages whose advice, followed literally, must work (hunt of the messages, D3 to D11)."""

import re

import jax
import optax
import pytest

import hypergrad as hg


# D3: hybrid_search's "give at least X runs" rounded X down (10.72 -> 10.7), so the advised budget was refused
# with the same advice.
def test_hybrid_budget_advice_rounds_up(logistic_problem, key):
    objective = hg.Objective(logistic_problem, lambda h: optax.sgd(h["lr"], momentum=h["m"]), num_steps=5)
    space = hg.Space({"lr": hg.LogUniform(1e-3, 1.0), "m": hg.Choice([0.0, 0.5, 0.9])})
    with pytest.raises(ValueError, match=r"budget=5 runs buys 0 hypergradient") as refused:
        hg.hybrid_search(objective, space, key, budget=5, configs=2)
    advised = float(re.search(r"give at least ([0-9.]+) runs", str(refused.value)).group(1))
    result = hg.hybrid_search(objective, space, key, budget=advised, configs=2)  # the advice works
    assert len(result.trials) >= 2

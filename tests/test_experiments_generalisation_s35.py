"""generalisation.py's page never said where a pick came from: for seed 0 the resample_key variant's "tuned
schedule" was the best of the random warm-up (tuner None), because no tuned candidate scored lower on the
run's key, and the claim pooled it with tuned picks (hunt-experiments finding 4). Each row now records its
pick's origin, read from the result, and the page and the claim's why name the warm-up picks."""

import types

from _helpers import import_experiment


def row(variant, seed, warmup):
    return {"variant": variant, "seed": seed, "pick": "warm-up trial #17 (random, untuned)" if warmup else
            "tuner 0, final iterate (trial #107)", "warmup_pick": warmup, "val": 0.1, "test": 0.1,
            "optimism": 0.01 * (seed + 1), "fresh_test": 0.1 + 0.001 * seed, "runs": 10.0, "seconds": 1.0}


def test_the_origin_of_a_pick_is_read_from_the_result():
    generalisation = import_experiment("generalisation")
    result = types.SimpleNamespace(info={"final_trials": [40, 41]})
    trial = lambda number, tuner: types.SimpleNamespace(number=number, tuner=tuner)  # noqa: E731
    assert generalisation.origin(trial(17, None), result).startswith("warm-up trial #17")
    assert generalisation.origin(trial(41, 1), result) == "tuner 1, final iterate (trial #41)"
    assert generalisation.origin(trial(30, 1), result) == "tuner 1, outer step (trial #30)"


def test_the_page_and_the_claim_name_a_warm_up_pick():
    generalisation = import_experiment("generalisation")
    rows = [row(v, s, warmup=(v, s) == ("resample_key", 0)) for s in (0, 1, 2) for v in generalisation.VARIANTS]
    page = generalisation.body(rows, {"T": 8})
    assert "| resample_key | 0 | warm-up trial #17 (random, untuned) |" in page, page
    assert "The pick of resample_key seed 0 is a warm-up trial" in page, page
    resample, cv = generalisation.verdict(rows)
    assert "resample_key seed 0 is a warm-up trial" in resample.why and "warm-up" not in cv.why
    every_tuned = generalisation.body([row(v, 0, False) for v in generalisation.VARIANTS], {"T": 8})
    assert "Every pick is a tuner's trial." in every_tuned

"""Claim rules and page texts revised after the claims hunt of session 38 (a referee-style review of the
reproduced papers' claims, /tmp/s38/claims_hunt/report.md), each fed made-up numbers: a lead inside the
noise no longer earns 'partly' (finetuning), and the texts say what their rules test."""

from _helpers import import_experiment

SEEDS = 5


def cell(random, scratch, gradient=None, grid=None):
    return {"random": random, "scratch": scratch, "gradient": gradient or random, "grid": grid or random,
            "default": random}


def test_finetuning_partly_needs_a_lead_beyond_two_standard_errors_and_no_clear_loss():
    """finding 1: the stored 'cnn shifted' pattern (ahead by 1.6 s.e. at 10 shots, behind by 3.8 s.e. with
    all shots) was 'partly'; it is 'not held' now. A clear lead at one shot count with the others inside
    the noise is still 'partly'; clear leads everywhere are 'held'."""
    finetuning = import_experiment("finetuning")
    base = [0.80, 0.82, 0.78, 0.81, 0.79]
    noise = [0.03, -0.02, 0.05, -0.01, 0.04]  # mean +0.018, s.e. 0.013: within noise
    clearly = [0.05, 0.06, 0.04, 0.05, 0.055]  # mean +0.051, s.e. 0.003
    shifted = {10: cell([b + d for b, d in zip(base, noise)], base),
               "all": cell([b - d for b, d in zip(base, clearly)], base)}
    rates = {"x": {10: [[0.01, 0.02]] * SEEDS, "all": [[0.01, 0.02]] * SEEDS}}
    claims = finetuning.verdicts({"x": shifted}, rates)
    assert claims[0].verdict == "not held", claims[0]
    assert "clearly behind" in claims[0].ours and "within noise" in claims[0].ours, claims[0].ours
    assert "rule revised on review" in claims[0].claim, claims[0].claim
    one_clear = {10: cell([b + d for b, d in zip(base, clearly)], base), "all": cell([b + d for b, d in zip(base, noise)], base)}
    assert finetuning.verdicts({"x": one_clear}, rates)[0].verdict == "partly"
    both = {10: cell([b + d for b, d in zip(base, clearly)], base), "all": cell([b + d for b, d in zip(base, clearly)], base)}
    assert finetuning.verdicts({"x": both}, rates)[0].verdict == "held"
    inside = {10: cell([b + d for b, d in zip(base, noise)], base), "all": cell([b + d for b, d in zip(base, noise)], base)}
    assert finetuning.verdicts({"x": inside}, rates)[0].verdict == "not held"  # was 'partly': a positive mean


def test_finetuning_gradient_claim_partly_needs_clear_leads_in_half_of_the_cells():
    """Claim 4: positive means inside the noise in every cell were 'partly'; now 'not held'."""
    finetuning = import_experiment("finetuning")
    base = [0.80, 0.82, 0.78, 0.81, 0.79]
    noise = [0.03, -0.02, 0.05, -0.01, 0.04]
    ahead = [b + d for b, d in zip(base, noise)]
    cells = {"x": {10: cell(base, base, gradient=ahead), 50: cell(base, base, gradient=ahead)}}
    rates = {"x": {10: [[0.01, 0.02]] * SEEDS, 50: [[0.01, 0.02]] * SEEDS}}
    claim = finetuning.verdicts(cells, rates)[-2]
    assert claim.verdict == "not held" and "clearly ahead (2 s.e.) in 0 of 2" in claim.ours, claim


def test_finetuning_page_no_longer_asks_for_a_rerun_of_numbers_measured_after_the_revision():
    """finding 6: the page and claims 4-5 said numbers 'must be rerun', though they were rerun after 11d8baa."""
    finetuning = import_experiment("finetuning")
    assert "must be rerun" not in finetuning.__doc__ and "must be rerun" not in finetuning.REVISED
    assert "11d8baa" in finetuning.REVISED


def test_distillation_fixed_init_bar_must_be_cleared_beyond_the_test_sets_noise():
    """finding 2: 0.894 on 360 test images (322 right; s.e. 0.016) cleared 0.89 by 2 images and was 'held';
    with the 2 s.e. margin it is not near enough alone ('partly' with the real draws beaten), and the claim
    shows the s.e. beside the number. An accuracy clear of the bar by far is still 'held'."""
    import numpy as np
    distillation = import_experiment("distillation")
    real = np.linspace(0.45, 0.70, 40)
    assert distillation.rule_fixed(322 / 360, real, 360)[:2] == ("partly", False)
    assert distillation.rule_fixed(0.95, real, 360)[:2] == ("held", True)
    assert abs(distillation.test_se(322 / 360, 360) - 0.0162) < 1e-4


def hyper_cleaning_scores(rev_keys, rand_keys):
    import numpy as np

    def row(keys, runs=269.0):
        keys = list(keys)
        mean, se = float(np.mean(keys)), float(np.std(keys, ddof=1) / np.sqrt(len(keys)))
        return {"test_accuracy": (mean, se), "test_accuracy_keys": keys, "test_loss": (0.5, 0.0),
                "val_loss": (0.5, 0.0), "auc": 0.95, "f1": 0.9, "runs": runs, "seconds": 1.0}
    return {"baseline (all weights 1)": row([0.68] * 5), "oracle (clean half only)": row([0.95] * 5),
            "hyper-cleaning, Reverse": row(rev_keys), "hyper-cleaning, Implicit (CG)": row(rev_keys),
            "random search, constants": row(rand_keys, 270.0)}


def test_hyper_cleaning_equal_compute_is_judged_on_the_paired_difference_with_two_standard_errors():
    """finding 8: a lead beyond one combined unpaired s.e. was 'held'. Keys that move both rows together
    (large unpaired s.e., small paired one) give 'held' now; a lead between 1 and 2 paired s.e. is 'partly'."""
    hyper_cleaning = import_experiment("hyper_cleaning")
    rand = [0.80, 0.85, 0.90, 0.82, 0.88]
    together = [r + 0.01 + 0.001 * i for i, r in enumerate(rand)]  # +0.012, paired s.e. 0.0007; unpaired 0.03
    claims, numbers = hyper_cleaning.verdicts(hyper_cleaning_scores(together, rand))
    assert claims[2].verdict == "held" and "paired" in claims[2].ours, claims[2]
    assert "rule revised on review" in claims[2].claim and numbers["reverse_minus_random"][0] > 0
    noisy = [r + d for r, d in zip(rand, [0.02, -0.01, 0.03, -0.005, 0.015])]  # +0.010 ± 0.0074: 1.35 s.e.
    assert hyper_cleaning.verdicts(hyper_cleaning_scores(noisy, rand))[0][2].verdict == "partly"
    # the old rule (one unpaired s.e.) called a lead of 1.17 s.e. 'held'
    flat, lead = [0.86] * 5, [0.90, 0.84, 0.92, 0.85, 0.88]  # +0.018 ± 0.0154
    assert hyper_cleaning.verdicts(hyper_cleaning_scores(lead, flat))[0][2].verdict == "partly"


def long_horizon_row(lr, vals, tests):
    return {"lr": [lr] * 10, "val": 0.1, "test": 0.1, "runs": 10.0, "seconds": 1.0,
            "fresh": {"val": sum(vals) / len(vals), "test": sum(tests) / len(tests), "vals": vals, "tests": tests}}


def test_long_horizon_says_both_tuners_end_worse_than_the_start_and_does_not_call_a_test_win_a_bias():
    """finding 4: greedy (lower rates) ahead of the whole-horizon tuner on test by 2.5 s.e. was read as 'the
    short-horizon bias towards small rates', and the page left out that both tuned schedules were worse on
    fresh keys than the untuned start they began from."""
    long_horizon = import_experiment("long_horizon")
    start_v, start_t = [0.150, 0.128, 0.125, 0.131, 0.132], [0.090, 0.095, 0.106, 0.092, 0.101]
    whole = long_horizon_row(0.02, [v + 0.008 + 0.0005 * i for i, v in enumerate(start_v)],
                             [t + 0.0035 + 0.0002 * i for i, t in enumerate(start_t)])
    greedy = long_horizon_row(0.009, [v + 0.0075 + 0.0004 * i for i, v in enumerate(start_v)],
                              [t + 0.0025 - 0.0001 * i for i, t in enumerate(start_t)])
    t = {"start": long_horizon_row(0.0548, start_v, start_t), "whole": whole, "greedy": greedy,
         "constant": long_horizon_row(1.5, start_v, start_t), "few": long_horizon_row(0.1, start_v, start_t)}
    claim = long_horizon.verdict_greedy(t, long_horizon.FULL)
    assert claim.verdict == "not held"
    assert "bias towards small rates" not in claim.why and "contradicted on test" in claim.why, claim.why
    assert "Both tuned schedules end with a higher fresh-key validation and test loss than the untuned" in claim.why
    assert "untuned start val" in claim.ours, claim.ours


def test_weight_decay_overfitting_summary_leads_with_the_fresh_key_numbers_its_verdict_reads():
    """finding 5: RESULTS.md's line for claim 2 showed only the tuning key's numbers (val falls, test rises),
    which read as if the claim held beside a 'not held' decided on fresh keys (Neumann's test falls by 5.7 s.e.)."""
    weight_decay = import_experiment("weight_decay_per_parameter")
    fresh = {"Reverse": {"val_first": [0.10, 0.11, 0.12], "val_last": [0.07, 0.08, 0.08],
                         "test_first": [0.10, 0.11, 0.12], "test_last": [0.10, 0.10, 0.12]}}
    line = weight_decay.fresh_gaps(fresh)
    assert line.startswith("last minus first iterate over 3 fresh keys: Reverse val -0.0333 ± 0.0033, test -0.0033")


def test_online_lr_says_what_its_sensitivity_rule_tests_and_gives_the_spread():
    """finding 7: the rule counts initial rates ending within 10% of the best fixed rate's loss (for SGD lr 1,
    the grid's top edge), stronger than 'less sensitive'; the page said neither, nor gave the spread."""
    online_lr = import_experiment("online_lr")
    rates = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    facts = {"SGD": {"rates": rates, "fixed": [2.3, 1.0, 0.5, 0.2, 0.14], "hd": [0.2, 0.19, 0.18, 0.16, 0.14],
                     "tuned_rate": 1.0, "tuned_loss": 0.14, "good_fixed": 1, "good_hd": 1, "small_fixed": 2.3,
                     "small_hd": 0.2}}
    claim = online_lr.verdicts(facts)[0]
    assert claim.verdict == "not held"  # unchanged: 1 good initial rate with HD, 1 fixed
    assert "x1.43 with HD, x16.4 fixed; within 50%: 5 with HD, 2 fixed" in claim.ours, claim.ours
    assert "within 10% of the best fixed rate's loss" in claim.why and "grid's edge for SGD (lr 1" in claim.why


def test_truncation_says_its_moderate_window_claim_rests_on_one_run_and_shows_every_window():
    """finding 3: the 'partly' rests on one tuning run per K on the tuning key, and the MLP's share is not
    monotone in K (82% / 49% / 67% / 58%); the page said neither. Rule and verdict unchanged."""
    truncation = import_experiment("truncation")

    def tuning(vals):
        return {"tuning": {"start": {"val": 1.0}, "tuned": {k: {"val": v} for k, v in zip((1, 5, 20, 50, 200), vals)},
                           "random": {"val": 0.5}}, "errors": [{"K": 1, "error": 0.9}, {"K": 100, "error": 0.01}],
                "fit": {"slope": -0.05, "r2": 0.99, "rate": 0.95, "points": 2, "intercept": 0.0}, "rho": 0.95}
    results = {"ridge": tuning([0.91, 0.89, 0.88, 0.875, 0.87]), "mlp": tuning([0.5, 0.8, 0.6, 0.7, 0.4])}
    claims, _ = truncation.verdicts(results, truncation.FULL, 20)
    assert claims[1].verdict == "partly"  # ridge 92%, mlp 67%: the rule as before
    assert "one tuning run per K" in claims[1].ours and "no noise margin" in claims[1].why, claims[1]
    assert "mlp: 83% / 33% / 67% / 50% at K = 1 / 5 / 20 / 50 (not monotone in K)" in claims[1].why, claims[1].why


def test_estimator_quality_partly_text_says_every_tuner_shows_the_same_one_of_the_two():
    """finding 10: the code gives 'partly' only when every truncated tuner shows the same sign of bias (all
    below the control, or all positive by 2 s.e.); the text said 'every one shows one of the two'. A mix
    (one below, the other positive) is 'not held', and the why now says 'the same one'."""
    estimator_quality = import_experiment("estimator_quality")
    facts = {"best_lr": 0.3, "T": 300, "reached": {"Reverse (full horizon)": 0.2, "Truncated(1)": 0.15,
                                                   "Truncated(10)": 0.25},
             "probes": {"Reverse (full horizon)": [-0.2, 0.14, 0.5], "Truncated(1)": [0.001, 0.002, 0.5],
                        "Truncated(10)": [0.05, 0.01, 0.5]}}
    claim = estimator_quality.short_horizon_claim(facts)
    assert claim.verdict == "not held" and "the same one of the two" in claim.why, claim.why
    assert "the same one of the two" in estimator_quality.short_horizon_claim.__doc__

"""`hypergrad compare --method`: the gradient strategy's hypergradients (`cli._gradient_method`).

`auto` (the default) gives `cli.IMPLICIT` on a preset with one weight per training example (digits-noisy),
each tuner holding what only the preset's optimiser reads, and `hg.Reverse()` elsewhere or when
`--checkpoint-every` asks for Reverse's checkpointing; `implicit` with `--checkpoint-every` is a usage error
before anything runs; a run by Implicit holds the rates and momentum of each tuner's start in every trial,
and its report and plan line name the method.
"""

import argparse
import json

import numpy as np
import pytest

import hypergrad as hg
from hypergrad import cli
from hypergrad.problems.presets import optimizer_hparams


def args(method=None, checkpoint_every=None):
    namespace = argparse.Namespace(checkpoint_every=checkpoint_every)
    if method is not None:
        namespace.method = method
    return namespace


@pytest.mark.parametrize("method", [None, "auto"])
def test_auto_is_implicit_where_each_training_example_has_a_weight(method):
    assert cli._gradient_method(args(method), "digits-noisy") == (cli.IMPLICIT, ("lr", "momentum"))
    for problem in ("digits-mlp", "iris-mlp", "breast-cancer-logistic", "digits-finetune"):
        assert cli._gradient_method(args(method), problem) == (hg.Reverse(), ())
    # Reverse's option asks for Reverse
    assert cli._gradient_method(args(method, 10), "digits-noisy") == (hg.Reverse(checkpoint_every=10), ())


def test_reverse_and_implicit_are_given_on_any_preset():
    assert cli._gradient_method(args("reverse"), "digits-noisy") == (hg.Reverse(), ())
    assert cli._gradient_method(args("reverse", 7), "digits-mlp") == (hg.Reverse(checkpoint_every=7), ())
    assert cli._gradient_method(args("implicit"), "digits-mlp") == (cli.IMPLICIT, ("lr", "momentum"))
    assert cli._gradient_method(args("implicit"), "digits-finetune") == (cli.IMPLICIT, ("lr", "warmup"))
    assert optimizer_hparams("digits-finetune") == ("lr", "warmup")
    with pytest.raises(ValueError, match="'nope' is not a preset"):
        optimizer_hparams("nope")


def test_implicit_with_checkpointing_is_a_usage_error_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["compare", "--problem", "digits-noisy", "--method", "implicit", "--checkpoint-every", "4",
                  "--budget", "80", "--steps", "8", "--out", str(out), "--quiet", "--cpu-devices", "1"])
    assert stopped.value.code == 2
    assert "--checkpoint-every: it sets Reverse's checkpointing, and --method implicit" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        cli.main(["compare", "--method", "forward"])


def test_a_run_by_implicit_holds_each_tuners_rates_and_names_its_method(tmp_path, capsys):
    out = tmp_path / "noisy"
    # an Implicit step costs about 27 runs here: 80 pays one tuner's step and the scoring of its last iterate (54),
    # so each tuner still has several trials to compare (it was 120: three steps, and half again the searches' trials)
    assert cli.main(["compare", "--problem", "digits-noisy", "--budget", "80", "--steps", "8",
                     "--out", str(out), "--cpu-devices", "1"]) == 0
    said = capsys.readouterr().err
    plan_line = next(line for line in said.splitlines() if line.startswith("[plan]"))
    words = "Implicit, CG of 20 iterations, damping 0.1, each tuner holding lr, momentum where it starts"
    assert words in plan_line
    report = (out / "report.md").read_text()
    assert f"({words}, Adam 0.1 in unconstrained coordinates)" in report
    tuned = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    tuned = [t for t in tuned if t.get("strategy", "").startswith("tune[") and t.get("tuner") is not None]
    assert tuned, "the gradient strategy stepped"
    for tuner in {t["tuner"] for t in tuned}:
        mine = [t for t in tuned if t["tuner"] == tuner]
        for name in ("lr", "momentum"):  # held: the same in every trial of the tuner
            assert all(np.array_equal(t["hparams"][name], mine[0]["hparams"][name]) for t in mine)
    results = json.loads((out / "results.json").read_text())
    assert results["results"]["hypergradient"]["info"]["hold"] == ["lr", "momentum"]


def test_implicit_asked_for_at_a_budget_it_cannot_pay_names_itself_and_reverse(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["compare", "--problem", "digits-noisy", "--method", "implicit", "--budget", "20", "--steps", "8",
                  "--out", str(tmp_path / "run"), "--quiet", "--cpu-devices", "1"])
    assert stopped.value.code == 2
    said = capsys.readouterr().err
    assert "a hypergradient of Implicit costs" in said and "or --method reverse (a Reverse step costs" in said

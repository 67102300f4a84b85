"""Space declarations judged against float32, the default dtype without x64: in a subprocess,
since tests/conftest.py turns x64 on for this process; and the same checks under float64 here."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import hypergrad as hg

X64_FIX = r"enable float64 with jax\.config\.update\('jax_enable_x64', True\) before declaring the space"

# declaration -> the ValueError it raises without x64 (were accepted: each sampled inf, 0 or a value
# outside [lo, hi], stored an option as inf or 0, or failed only when sampled with an OverflowError)
REFUSED = {
    "hg.LogUniform(1e-50, 0.1)": rf"LogUniform\(lo=1e-50, hi=0.1\): lo=1e-50 is not a number float32 holds "
                                 rf"\(0, or magnitudes from 1.175e-38 to 3.403e\+38\), .*; {X64_FIX}, or choose",
    "hg.Uniform(0.0, 1e39)": rf"Uniform\(lo=0.0, hi=1e\+39\): hi=1e\+39 is not a number float32 holds.*; {X64_FIX}",
    "hg.LogUniform(1.0, 1e39)": rf"hi=1e\+39 is not a number float32 holds.*; {X64_FIX}",
    "hg.Uniform(-1e38, 3e38)": rf"Uniform\(lo=-1e\+38, hi=3e\+38\): hi - lo overflows float32.*; {X64_FIX}, "
                               "or narrow the range",
    "hg.Uniform(0.0, 1e-40)": rf"hi=1e-40 is not a number float32 holds.*; {X64_FIX}",
    "hg.Uniform(1.0, 1.0 + 1e-9)": rf"lo and hi are the same float32 number.*; {X64_FIX}, or widen the range",
    "hg.Choice([0.1, 1e300])": rf"Choice\(options=\[0.1, 1e\+300\]\): option 1e\+300 is not a number float32 holds"
                               rf".*; {X64_FIX}, or give options inside that range",
    "hg.Choice([1e-50, 1e-3])": rf"option 1e-50 is not a number float32 holds.*; {X64_FIX}",
    "hg.Choice([1, 2**40])": rf"option 1099511627776 is not a number int32 holds \(-2147483648 to 2147483647\).*; "
                             rf"{X64_FIX}",
    "hg.Choice([1.0, 1.0 + 1e-9])": rf"options 1.0 and 1.000000001 are the same float32 number.*; {X64_FIX}",
    # adjacent float32 numbers: constrain(z) returned lo for every z (its clip interval was inverted)
    "hg.Uniform(0.3333333432674408, 0.3333333730697632)": r"no float32 number lies strictly between lo and hi.*; "
                                                          rf"{X64_FIX}, or widen the range",
    "hg.LogUniform(2.1191281120991334e-06, 2.1191283476869867e-06)": r"no float32 number lies strictly between",
    # hi - lo a float32 subnormal, flushed to zero: unconstrain(constrain(z)) was 0/0 = NaN
    "hg.Uniform(-2.794351963059331e-32, -2.794351081438568e-32)": r"hi - lo is below the smallest normal float32 "
                                                                  rf"number.*; {X64_FIX}, or widen the range",
}
# accepted without x64: the extremes float32 holds, an inf option as given, structural options
ACCEPTED = ["hg.LogUniform(2e-38, 3e38)", "hg.Uniform(-1.5e38, 1.5e38)", "hg.Uniform(-1e-37, 0.0)",
            "hg.Choice([1, 2**31 - 1])", "hg.Choice([1.0, float('inf')])", "hg.Choice([1, 2**40], structural=True)"]

CHILD = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", False)
import numpy as np
import hypergrad as hg
out = {}
for text in json.loads(sys.argv[1]):
    try:
        dist = eval(text)
    except ValueError as err:
        out[text] = {"error": str(err)}
        continue
    try:
        samples = np.asarray(hg.Space({"x": dist}).sample(jax.random.key(0), 2000)["x"])
    except Exception as err:  # Choice([1, 2**40]) raised a bare OverflowError only here
        out[text] = {"sample_error": repr(err)}
        continue
    out[text] = {"dtype": samples.dtype.name, "min": float(samples.min()), "max": float(samples.max())}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def float32_children():
    """What `CHILD` (argv[1]: the declarations) and then `CHILD_NARROW` (argv[2]: the narrow ranges) print,
    run in turn in one float32 child process: each its own line."""
    proc = subprocess.run([sys.executable, "-c", CHILD + CHILD_NARROW, json.dumps([*REFUSED, *ACCEPTED]),
                           json.dumps(NARROW)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def float32_outcomes(float32_children):
    return json.loads(float32_children.stdout.strip().splitlines()[-2])


@pytest.mark.parametrize("text", list(REFUSED))
def test_declarations_float32_cannot_hold_are_refused_naming_the_fix(float32_outcomes, text):
    assert "error" in float32_outcomes[text], (text, float32_outcomes[text])
    assert re.search(REFUSED[text], float32_outcomes[text]["error"]), float32_outcomes[text]["error"]


@pytest.mark.parametrize("text", ACCEPTED)
def test_declarations_float32_holds_are_accepted_and_sample_inside(float32_outcomes, text):
    outcome = float32_outcomes[text]
    assert "error" not in outcome, outcome
    dist = eval(text)  # float64 here: only its bounds or options are read
    if isinstance(dist, hg.Choice):
        values = set(range(len(dist.options))) if dist.structural else set(dist.options)
        assert {outcome["min"], outcome["max"]} <= {float(v) for v in values}, outcome
    else:
        assert outcome["dtype"] == "float32"
        assert float(np.float32(dist.lo)) <= outcome["min"] <= outcome["max"] <= float(np.float32(dist.hi)), outcome


@pytest.mark.parametrize("text", ["hg.LogUniform(1e-50, 0.1)", "hg.Uniform(0.0, 1e39)", "hg.Uniform(-1e38, 3e38)",
                                  "hg.Choice([0.1, 1e300])", "hg.Choice([1, 2**40])", "hg.Choice([1.0, 1.0 + 1e-9])"])
def test_what_float32_cannot_hold_float64_can(text, key):
    dist = eval(text)
    samples = np.asarray(hg.Space({"x": dist}).sample(key, 100)["x"])
    assert samples.dtype in (np.float64, np.int64) and np.all(np.isfinite(samples))


@pytest.mark.parametrize("make,message", [
    (lambda: hg.LogUniform(1e-320, 1.0), r"lo=1e-320 is not a number float64 holds \(0, or magnitudes from 2.225e-308"),
    (lambda: hg.Uniform(-1e308, 1e308), r"Uniform\(lo=-1e\+308, hi=1e\+308\): hi - lo overflows float64, the dtype of "
                                        r"the values; narrow the range$"),
    (lambda: hg.Choice([1, 2**70]), r"option 1180591620717411303424 is not a number int64 holds"),
    (lambda: hg.Choice([0.5, 1e-320]), r"option 1e-320 is not a number float64 holds"),
    (lambda: hg.Choice([np.int8(1), 200]), r"option 200 is not a number int8 holds \(-128 to 127\), and the values "
                                           r"are int8; give options inside that range"),
])
def test_declarations_float64_cannot_hold_are_refused(make, message):
    with pytest.raises(ValueError, match=message) as info:
        make()
    assert "jax_enable_x64" not in str(info.value)  # already on, or (int8) not the default dtype


NARROW = ["hg.LogUniform(1000.0, 1000.001)", "hg.LogUniform(0.3333333432674408, 0.33333343267440796)",
          "hg.Uniform(0.3333333432674408, 0.33333343267440796)", "hg.LogUniform(2.1191281e-06, 2.1191286e-06)",
          "hg.Uniform(-1.1754944e-38, 1.1754944e-38)"]

CHILD_NARROW = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", False)
import jax.numpy as jnp
import numpy as np
import hypergrad as hg
out = {}
for text in json.loads(sys.argv[2]):
    dist = eval(text)
    space = hg.Space({"x": dist})
    out[text] = {"constrain": [float(dist.constrain(jnp.asarray(z))) for z in (-1e4, -20.0, 0.0, 20.0, 1e4)],
                 "centre": float(dist.centre), "zero": float(dist.constrain(jnp.asarray(0.0))),
                 "grid": np.asarray(space.grid(7)["x"]).tolist(), "grid1": float(space.grid(1)["x"][0]),
                 "lo": float(np.float32(dist.lo)), "hi": float(np.float32(dist.hi))}
print(json.dumps(out))
"""


def test_narrow_float32_ranges_keep_constrain_centre_and_grid_inside_their_bounds(float32_children):
    # accepted, but the centre was a bound (not constrain(0)), and LogUniform(1000, 1000.001)'s grid
    # had a point above hi, out of order (run after CHILD, in the same float32 child process)
    proc = float32_children
    assert proc.returncode == 0, proc.stderr
    for text, got in json.loads(proc.stdout.strip().splitlines()[-1]).items():
        lo, hi = got["lo"], got["hi"]
        assert all(lo < v < hi for v in got["constrain"]), (text, got)
        assert got["centre"] == got["zero"] == got["grid1"], (text, got)
        grid = got["grid"]
        assert grid[0] == lo and grid[-1] == hi and all(a <= b for a, b in zip(grid, grid[1:])), (text, got)

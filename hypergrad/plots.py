"""Matplotlib figures of results and comparisons (the optional `plots` extra).

Three figures tell a comparison's story (`plot_comparison`, also `hg.compare(...).plot`):

- `best_value_vs_compute.png`: the best validation loss each strategy had found against the
  compute it had spent, in training-run equivalents (the unit `compare` lines strategies up in),
  with the comparison's budgets as dotted vertical lines;
- `learned_schedules.png`: each strategy's pick of every shaped hyperparameter against its index,
  so a learned per-step learning-rate schedule shows beside the constant rate the baselines found
  (`picked_hparams.png`, a grouped bar chart of the scalar picks, when no hyperparameter is shaped);
- `trials.png`: every trial's validation loss against cumulative compute, failures marked at the top.

`plot_example_weights` adds one for a problem with per-example weights and known corrupted labels
(`hypergrad compare` on `digits-noisy`): the picked weights of clean and corrupted examples.

Figures are drawn with matplotlib's object API on the Agg canvas: no pyplot, so no global figure
registry, no display needed, and the user's interactive backend is left as it was. matplotlib is
imported only when a function here is called.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hypergrad.results import FAIL, SKIPPED, Comparison, Result, check_known_cost

__all__ = ["plot_comparison", "plot_example_weights", "plot_result"]

_DPI = 120
_PANEL = (5.0, 3.6)  # inches per panel


def _matplotlib():
    """The Figure class and the Agg canvas, or an ImportError that says how to install them."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("hypergrad.plots needs matplotlib: pip install 'hypergrad[plots]'") from err
    return Figure, FigureCanvasAgg


def _new_figure(ncols: int = 1, nrows: int = 1):
    """A figure on an Agg canvas, with an (nrows, ncols) array of axes."""
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(_PANEL[0] * ncols, _PANEL[1] * nrows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: str) -> str:
    """Saves `fig` as PNG and releases its artists (the figure is never registered with pyplot)."""
    try:
        fig.savefig(path, format="png")
    finally:
        fig.clear()
    return path


def _colours(names: Sequence[str]) -> dict[str, Any]:
    """One colour per strategy, the same in every figure."""
    import matplotlib

    cycle = matplotlib.colormaps["tab10"].colors
    return {name: cycle[i % len(cycle)] for i, name in enumerate(names)}


def _slug(name: str) -> str:
    """A file-name prefix for `name`: its ASCII letters, digits, '.', '_' and '-' (other runs as one
    '_', at most 80 characters, never starting with '.' or '-'), followed by '-' and 8 hex digits of
    its SHA-256 whenever that is not the name itself or the name has a capital letter, so distinct
    names never share a file, on a file system that ignores case too ('Tune' and 'tune')."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_").lstrip(".-")[:80]
    if slug == name and slug and slug == slug.lower():
        return slug
    return f"{slug or 'result'}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def _literal(text: str) -> str:
    """User text (a strategy label, a hyperparameter name) as matplotlib draws it literally: `$`
    escaped (no mathtext), a leading '_' behind a zero-width space (matplotlib leaves labels starting
    with '_' out of legends), and '' shown as ''."""
    text = text.replace("$", r"\$")
    if text.startswith("_"):
        return "\u200b" + text
    return text or "''"


def _finite_positive(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, float)
    return values[np.isfinite(values) & (values > 0)]


def _log_if_positive(ax, values: Sequence[np.ndarray], axis: str = "y", min_ratio: float = 1.0) -> None:
    """Log scale on `axis` when every finite value drawn there is positive (and there is one).

    With `min_ratio`, only when the values also span at least that factor: within a narrow range
    a linear axis labels more ticks and reads the same.
    """
    flat = [np.asarray(v, float).ravel() for v in values]
    flat = np.concatenate(flat) if flat else np.zeros(0)
    flat = flat[np.isfinite(flat)]
    if flat.size and np.all(flat > 0) and flat.max() >= min_ratio * flat.min():
        _set_log(ax, axis)


def _set_log(ax, axis: str = "y") -> None:
    """Log scale with plain tick labels (0.98, 1.1, 1e+08), not 9.8 x 10^-1, for narrow ranges."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        # matplotlib's choice of which ticks to label (minor ones only on a narrow range), with
        # the number written plainly.
        def __call__(self, x, pos=None):
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    which = ax.yaxis if axis == "y" else ax.xaxis
    which.set_major_formatter(PlainLogFormatter())
    which.set_minor_formatter(PlainLogFormatter())


def _log_x(ax, xs: Sequence[float]) -> None:
    """Log x axis spanning the positive finite `xs` (whatever the autoscaler saw), or 1..10."""
    xs = _finite_positive(np.asarray(list(xs), float))
    _set_log(ax, "x")  # plain tick labels: matplotlib's 3x10^-1 minor labels overlap on an x axis
    if xs.size:
        # Points drawn in axes coordinates (failed trials) are invisible to the autoscaler, so the
        # span is set from the data; a margin of a fifth of a decade keeps end markers whole.
        ax.set_xlim(xs.min() / 10**0.2, xs.max() * 10**0.2)
    else:
        ax.set_xlim(1.0, 10.0)


def _note(ax, text: str, *, hide_y: bool = True) -> None:
    """A grey message in the middle of an axes with no data (whose y ticks would mean nothing)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")
    if hide_y:
        _hide_y(ax)


def _hide_y(ax) -> None:
    """No y ticks, labels or grid lines: an axis with nothing on it has no scale to read."""
    from matplotlib.ticker import NullLocator

    ax.yaxis.set_major_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())


def _headroom(ax, fraction: float) -> None:
    """Raises the top of the y axis by `fraction` of its height (in its own scale)."""
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log":
        log_lo, log_hi = math.log10(lo), math.log10(hi)
        ax.set_ylim(lo, 10 ** (log_hi + fraction * (log_hi - log_lo)))
    else:
        ax.set_ylim(lo, hi + fraction * (hi - lo))


def _cumulative(result: Result, by: str = "runs") -> np.ndarray:
    """What the result had spent after each trial (`Result.spent`): training-run equivalents, or
    wall seconds (compilation first) with `by="seconds"`, execution seconds with `by="execution"`."""
    return result.spent(by) if result.trials else np.zeros(0)


_SPENT_LABEL = {"runs": "compute (training-run equivalents)", "seconds": "wall time (s, compilation included)",
               "execution": "execution time (s, compilation left out)"}
_EQUAL = {"runs": "equal compute", "seconds": "equal wall time", "execution": "equal execution time"}


def _is_failed(trial) -> bool:
    return trial.state == FAIL or not math.isfinite(trial.value)


# -- panels -------------------------------------------------------------------------------------
def _draw_budgets(ax, budgets: Sequence[float]) -> None:
    budgets = [b for b in budgets if math.isfinite(b) and b > 0]
    for i, budget in enumerate(budgets):
        ax.axvline(budget, color="0.45", linestyle=":", linewidth=1.0, zorder=0,
                   label="budgets" if i == 0 else None)


def _draw_curves(ax, results: Mapping[str, Result], colours, budgets: Sequence[float], by: str = "runs") -> None:
    """Best validation loss so far against cumulative compute (or wall seconds, `by`): one step
    curve per strategy."""
    drawn, xs = [], list(budgets)
    for name, result in results.items():
        runs, best = _cumulative(result, by), result.curve()[1]
        xs += list(runs)  # every trial, so the span matches trials.png even before a finite one
        keep = np.isfinite(runs) & (runs > 0) & np.isfinite(best)
        if not keep.any():
            ax.plot([], [], color=colours[name], label=f"{_literal(name)} (no finite trial)")
            continue
        # "post": the best value found by a trial holds from its end until the next improvement.
        ax.step(runs[keep], best[keep], where="post", color=colours[name], linewidth=1.8,
                marker="o", markersize=3, label=_literal(name))
        drawn.append(best[keep])
    _draw_budgets(ax, budgets)
    _log_x(ax, xs)
    _log_if_positive(ax, drawn, min_ratio=10.0)
    if ax.get_yscale() == "log":
        # A first trial that nearly diverged would squash the rest: let its step enter from above,
        # keeping every strategy's final best on the axes.
        cap = _log_cap(np.concatenate(drawn))
        if cap is not None:
            cap = max(cap, max(float(d.min()) for d in drawn))
            ax.set_ylim(top=cap)
    ax.set_xlabel(_SPENT_LABEL[by])
    ax.set_ylabel("best validation loss so far")
    if not drawn:
        _note(ax, "no finite trial yet")
    ax.legend(fontsize="small")
    ax.grid(True, which="major", alpha=0.3)


def _draw_trials(ax, results: Mapping[str, Result], colours, budgets: Sequence[float], by: str = "runs") -> None:
    """Every trial's validation loss against cumulative compute (or wall seconds, `by`); failures
    as x at the top.

    On a log axis, losses far above the rest (a nearly diverged setting) would squash every other
    trial into one line; they are drawn as triangles in the top band instead (`_log_cap`).
    """
    import matplotlib.transforms as mtransforms

    top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    groups = {name: _trial_points(result, by) for name, result in results.items()}
    xs = list(budgets) + [x for result in results.values() for x in _cumulative(result, by)]
    finite = np.asarray([v for g in groups.values() for v in g[1] + g[3]], float)
    positive = finite.size > 0 and bool(np.all(finite > 0))
    cap = _log_cap(finite) if positive else None
    any_top = False
    for name, group in groups.items():
        any_top = _scatter_trials(ax, name, group, colours[name], cap, top) or any_top
    _draw_budgets(ax, budgets)
    _log_x(ax, xs)
    if positive:
        _set_log(ax)
    on_axes = finite if cap is None else finite[finite <= cap]
    if any_top and on_axes.size:
        _headroom(ax, 0.1)  # a band at the top for the failures, clear of the highest finite loss
    ax.set_xlabel("cumulative " + _SPENT_LABEL[by])
    ax.set_ylabel("validation loss of trial")
    ax.set_title("trials (star: each strategy's pick" + ("; top: failed x, off-scale ^)" if any_top else ")"),
                 fontsize="medium")
    if not on_axes.size:
        if any_top:
            _hide_y(ax)
        else:
            _note(ax, "no trials")
    ax.legend(fontsize="small")
    ax.grid(True, which="major", alpha=0.3)


def _trial_points(result: Result, by: str = "runs") -> tuple:
    """(ok_x, ok_y, skip_x, skip_y, fail_x, best_xy) of one result's trials at their cumulative
    compute or seconds (`by`; trials at a non-positive or non-finite one are left out)."""
    ok_x, ok_y, skip_x, skip_y, fail_x, best_xy = [], [], [], [], [], None
    best = result.best_trial
    for x, trial in zip(_cumulative(result, by), result.trials):
        if not (math.isfinite(x) and x > 0):
            continue
        if _is_failed(trial):
            fail_x.append(x)
        elif trial.state == SKIPPED:
            skip_x.append(x)
            skip_y.append(trial.value)
        else:
            ok_x.append(x)
            ok_y.append(trial.value)
        # By identity: trials compare their hparams arrays under ==, which is ambiguous.
        if trial is best:
            best_xy = (x, trial.value)
    return ok_x, ok_y, skip_x, skip_y, fail_x, best_xy


def _scatter_trials(ax, name: str, group: tuple, colour, cap: float | None, top) -> bool:
    """Draws one strategy's trial points; returns whether any went to the top band (failed, or
    above `cap`)."""
    ok_x, ok_y, skip_x, skip_y, fail_x, best_xy = group
    name = _literal(name)
    ok_x, ok_y, off_ok = _split_cap(ok_x, ok_y, cap)
    skip_x, skip_y, off_skip = _split_cap(skip_x, skip_y, cap)
    if ok_x or not (skip_x or fail_x or off_ok or off_skip):
        ax.scatter(ok_x, ok_y, s=18, color=colour, alpha=0.8, label=name)
    if skip_x:  # finite loss but no update (non-finite hypergradient): hollow
        ax.scatter(skip_x, skip_y, s=18, facecolors="none", edgecolors=colour,
                   label=f"{name}: skipped step")
    if off_ok or off_skip:
        ax.scatter(off_ok + off_skip, [0.96] * len(off_ok + off_skip), transform=top, marker="^",
                   s=26, color=colour, clip_on=False,
                   label=f"{name}: above {cap:.3g} ({len(off_ok + off_skip)})")
    if fail_x:
        ax.scatter(fail_x, [0.96] * len(fail_x), transform=top, marker="x", s=30, color=colour,
                   clip_on=False, label=f"{name}: failed ({len(fail_x)})")
    if best_xy is not None:
        ax.scatter([best_xy[0]], [best_xy[1]], marker="*", s=140, color=colour, edgecolors="black",
                   linewidths=0.6, zorder=3)
    return bool(fail_x or off_ok or off_skip)


def _log_cap(values: np.ndarray) -> float | None:
    """An upper limit for a log axis that leaves out losses far above the rest, or None.

    The axis shows at least two decades above the median, and twice as far above the median as
    the lowest value lies below it; anything higher (a nearly diverged setting, 1e9 beside losses
    of order 1) is off scale.
    """
    values = _finite_positive(values)
    if values.size == 0:
        return None
    log_min, log_median = np.log10(values.min()), np.log10(np.median(values))
    cap = 10 ** (log_median + max(2.0, 2.0 * (log_median - log_min)))
    return float(cap) if values.max() > cap else None


def _split_cap(xs: list, ys: list, cap: float | None) -> tuple[list, list, list]:
    """(xs, ys) on the axes and the xs of points above `cap`."""
    if cap is None:
        return xs, ys, []
    keep = [i for i, y in enumerate(ys) if y <= cap]
    return [xs[i] for i in keep], [ys[i] for i in keep], [x for x, y in zip(xs, ys) if y > cap]


def _brief(value: Any) -> str:
    """A short description of a wrong argument: its type, and its keys' and values' for a dict."""
    if isinstance(value, Mapping):
        items = ", ".join(f"{type(k).__name__}: {type(v).__name__}" for k, v in list(value.items())[:3])
        return f"{{{items}{', ...' if len(value) > 3 else ''}}}"
    return type(value).__name__


def _picks(results: Mapping[str, Result]) -> dict[str, dict[str, np.ndarray] | None]:
    return {name: result.best_hparams for name, result in results.items()}


def _hparam_shapes(results: Mapping[str, Result]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every hyperparameter of any result, in first-seen order.

    Read from each result's first trial (failed or not: all trials of a result share names and
    shapes); where results disagree (one tuned a scalar, another a schedule) the shaped one wins.
    Structural choices (options kept as strings or tuples, not arrays) have no axis to draw on.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for result in results.values():
        if not result.trials:
            continue
        for name, value in result.trials[0].hparams.items():
            if not isinstance(value, (np.ndarray, np.generic, int, float)) or isinstance(value, bool):
                continue
            shape = tuple(np.shape(value))
            if len(shape) >= len(shapes.get(name, ())):
                shapes[name] = shape
    return shapes


def _draw_schedule(ax, hparam: str, shape, results: Mapping[str, Result], colours) -> None:
    """Each strategy's pick of one shaped hyperparameter against its (flattened) index."""
    drawn = []
    for name, pick in _picks(results).items():
        if pick is None or hparam not in pick:
            ax.plot([], [], color=colours[name], label=f"{_literal(name)} (no pick)")
            continue
        values = np.asarray(pick[hparam], float).ravel()
        if values.size == 1:  # a strategy that tuned it as a scalar: a constant over the index
            values = np.full(int(np.prod(shape)), values.item())
        best_value = results[name].best_value
        ax.plot(np.arange(values.size), values, color=colours[name], linewidth=1.8,
                marker="o" if values.size <= 40 else None, markersize=3,
                label=f"{_literal(name)} (val {best_value:.3g})")
        drawn.append(values)
    _log_if_positive(ax, drawn)
    ax.set_xlabel("index (the training step, for a per-step schedule)" if len(shape) == 1
                  else f"flat index of shape {tuple(shape)}")
    ax.set_ylabel(_literal(hparam))
    ax.set_title(f"picked {_literal(hparam)} {tuple(shape)}: each strategy's best trial in its budget",
                 fontsize="medium")
    if not drawn:
        ax.set_xlim(-0.5, int(np.prod(shape)) - 0.5)
        _note(ax, "no strategy has a finite trial")
    ax.legend(fontsize="small")
    ax.grid(True, which="major", alpha=0.3)


def _draw_scalar_bars(ax, names: Sequence[str], results: Mapping[str, Result], colours) -> None:
    """Grouped bars: one group per scalar hyperparameter, one bar per strategy's pick."""
    picks = _picks(results)
    strategies = list(results)
    width = 0.8 / max(len(strategies), 1)
    drawn = []
    for i, strategy in enumerate(strategies):
        pick = picks[strategy]
        heights = [float(np.asarray(pick[n]).ravel()[0]) if pick is not None and n in pick else np.nan
                   for n in names]
        xs = np.arange(len(names)) + (i - (len(strategies) - 1) / 2) * width
        label = _literal(strategy) if pick is not None else f"{_literal(strategy)} (no pick)"
        bars = ax.bar(xs, heights, width=width, color=colours[strategy], label=label)
        # Values on the bars: on a log axis a bar's length alone is hard to read.
        ax.bar_label(bars, labels=["" if not np.isfinite(h) else f"{h:.3g}" for h in heights],
                     fontsize="x-small", padding=2)
        drawn.append(np.asarray(heights, float))
    ax.set_xticks(np.arange(len(names)), [_literal(n) for n in names])
    if names:
        ax.set_xlim(-0.5, len(names) - 0.5)
    _log_if_positive(ax, drawn)
    finite = _finite_positive(np.concatenate(drawn)) if drawn else np.zeros(0)
    if ax.get_yscale() == "log" and finite.size:
        # Bars start at the bottom of the axes: put it well below the smallest value, and leave
        # room above the tallest for its label.
        ax.set_ylim(finite.min() / 10, finite.max() * 3)
    ax.set_ylabel("picked value")
    ax.set_title("hyperparameters of each strategy's pick", fontsize="medium")
    if not any(np.isfinite(h).any() for h in drawn):
        _note(ax, "no strategy has a finite trial" if names else "no hyperparameters")
    ax.legend(fontsize="small")
    ax.grid(True, axis="y", which="major", alpha=0.3)


def _write_hparams(results: Mapping[str, Result], colours, out_dir: str, prefix: str = "") -> str:
    """`learned_schedules.png` (shaped hyperparameters) or `picked_hparams.png` (scalars only).

    With shaped hyperparameters, one panel each, plus one panel of grouped bars for the scalar
    ones (a weight decay picked alongside a schedule) when there are any.
    """
    shapes = _hparam_shapes(results)
    shaped = {n: s for n, s in shapes.items() if len(s) >= 1}
    scalars = [n for n, s in shapes.items() if len(s) == 0]
    if shaped:
        panels = len(shaped) + bool(scalars)
        ncols = min(panels, 3)
        nrows = math.ceil(panels / ncols)
        fig, axes = _new_figure(ncols, nrows)
        flat = list(axes.flat)
        for ax, (hparam, shape) in zip(flat, shaped.items()):
            _draw_schedule(ax, hparam, shape, results, colours)
        if scalars:
            _draw_scalar_bars(flat[len(shaped)], scalars, results, colours)
        for ax in flat[panels:]:
            ax.set_visible(False)
        return _save(fig, os.path.join(out_dir, f"{prefix}learned_schedules.png"))
    fig, axes = _new_figure(1)
    fig.set_size_inches(max(_PANEL[0], 1.2 * len(shapes) + 2.5), _PANEL[1])
    _draw_scalar_bars(axes[0, 0], list(shapes), results, colours)
    return _save(fig, os.path.join(out_dir, f"{prefix}picked_hparams.png"))


# -- entry points -------------------------------------------------------------------------------
def plot_comparison(comparison: Comparison, out_dir: str | os.PathLike) -> list[str]:
    """Writes the figures of a comparison as PNG files.

    Files written into `out_dir` (created if missing):

    - `best_value_vs_compute.png`: best validation loss so far against compute in training-run
      equivalents (wall seconds, compilation included, for a comparison `by="seconds"`), one step
      curve per strategy (log x; log y when the losses span a decade or more), the comparison's
      budgets dotted; no line before a strategy's first finite trial;
    - `learned_schedules.png`: one panel per shaped hyperparameter (e.g. a per-step learning-rate
      schedule) with each strategy's pick against its index, log y when all values are positive,
      plus a panel of grouped bars for the scalar picks; or, when no hyperparameter is shaped,
      `picked_hparams.png`: the scalar picks as grouped bars;
    - `trials.png`: every trial's validation loss against cumulative compute (or seconds; log y
      when all are positive), failed trials as x at the top of the axes (and losses far above the
      rest as ^), each strategy's pick starred.

    Args:
        comparison: the output of `hg.compare`.
        out_dir: directory to write into.

    Returns:
        the paths of the files written, in the order above.

    Raises:
        ImportError: when matplotlib is not installed.
    """
    if not isinstance(comparison, Comparison):
        raise ValueError(f"plot_comparison: expected an hg.Comparison (from hg.compare), got "
                         f"{type(comparison).__name__}")
    _matplotlib()
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    results = comparison.results
    colours = _colours(list(results))
    paths = []

    fig, axes = _new_figure(1)
    fig.set_size_inches(7.0, 4.5)
    _draw_curves(axes[0, 0], results, colours, comparison.budgets, comparison.by)
    equal = _EQUAL[comparison.by]
    axes[0, 0].set_title(f"best validation loss at {equal}", fontsize="medium")
    paths.append(_save(fig, os.path.join(out_dir, "best_value_vs_compute.png")))

    paths.append(_write_hparams(results, colours, out_dir))

    fig, axes = _new_figure(1)
    fig.set_size_inches(7.0, 4.5)
    _draw_trials(axes[0, 0], results, colours, comparison.budgets, comparison.by)
    paths.append(_save(fig, os.path.join(out_dir, "trials.png")))
    return paths


def plot_result(result: Result, out_dir: str | os.PathLike, *, name: str | None = None) -> list[str]:
    """Writes the figures of one strategy's result as PNG files.

    Files written into `out_dir` (created if missing), prefixed by `name`:

    - `<name>_curve.png`: every trial's validation loss and the best so far against cumulative
      compute in training-run equivalents (log x), failed trials as x at the top;
    - `<name>_learned_schedules.png`: the best trial's shaped hyperparameters against their index,
      or `<name>_picked_hparams.png`: its scalar hyperparameters, when none is shaped.

    Args:
        result: a `Result` of `tune`, `random_search` or `grid_search`.
        out_dir: directory to write into.
        name: label and file prefix; default `result.strategy`. The prefix is the name where it is
            made of lower-case ASCII letters, digits, '.', '_' and '-' (not starting with '.', '-'
            or '_', nor ending with '_'), else its safe characters and 8 hex digits of its hash
            ('my run' -> 'my_run-<hash>', 'Tune' -> 'Tune-<hash>'): distinct names write distinct
            files, on a file system that ignores case too.

    Returns:
        the paths of the files written, in the order above.

    Raises:
        ValueError: for a `result` whose trials have no finite cost (run_flops 0 or NaN: they have
            no place on the compute axis), or a `name` that is not a string.
        ImportError: when matplotlib is not installed.
    """
    if not isinstance(result, Result):
        raise ValueError(f"plot_result: expected an hg Result, got {type(result).__name__}")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"plot_result(name={name!r}): give a string (the figures' label and file prefix), "
                         "or None for the result's strategy")
    check_known_cost(result, "runs", "plot_result: the result", "plotted")
    _matplotlib()
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    label = result.strategy if name is None else name
    prefix = _slug(label) + "_"
    results = {label: result}
    colours = _colours([label])

    fig, axes = _new_figure(2)
    _draw_curves(axes[0, 0], results, colours, ())
    axes[0, 0].set_title(f"{_literal(label)}: best validation loss", fontsize="medium")
    _draw_trials(axes[0, 1], results, colours, ())
    paths = [_save(fig, os.path.join(out_dir, f"{prefix}curve.png"))]
    paths.append(_write_hparams(results, colours, out_dir, prefix))
    return paths


def plot_example_weights(results: Mapping[str, Result], corrupted: np.ndarray, out_dir: str | os.PathLike, *,
                         hparam: str = "example_weight") -> str | None:
    """Writes `example_weights.png`: for each strategy whose pick has per-example weights, a
    histogram of the picked weights of the clean examples over that of the corrupted ones (one
    panel per strategy, shared bins over the weights' range), so a pick that down-weights the
    corrupted labels shows two separated humps and one weight shared by every example a single bar.

    Args:
        results: strategy name -> result (e.g. `hg.compare(...).results`), or the comparison
            itself (its results are read).
        corrupted: boolean mask over the examples, in the order of the weights (for the built-in
            noisy problems, `hg.problems.corrupted_examples`).
        out_dir: directory to write into (created if missing).
        hparam: the name of the per-example weights.

    Returns:
        the path written, or None when no pick holds `hparam`.

    Raises:
        ValueError: for `results` that are not a dict of name -> Result, or `corrupted` of another
            shape than a pick's weights.
        ImportError: when matplotlib is not installed.
    """
    if isinstance(results, Comparison):
        results = results.results
    if not (isinstance(results, Mapping) and all(isinstance(name, str) and isinstance(result, Result)
                                                 for name, result in results.items())):
        raise ValueError(f"plot_example_weights(results={_brief(results)}): give a dict of name -> hg Result "
                         "(e.g. hg.compare(...).results), names strings, or the comparison itself")
    corrupted = np.asarray(corrupted, dtype=bool)
    picks = {name: np.asarray(pick[hparam], float)
             for name, pick in _picks(results).items() if pick is not None and hparam in pick}
    for name, weights in picks.items():
        if weights.ndim and weights.shape != corrupted.shape:
            raise ValueError(f"plot_example_weights: corrupted has shape {corrupted.shape} but {name}'s picked "
                             f"{hparam} has {weights.shape}; give one flag per example, in the weights' order")
    picks = {name: np.broadcast_to(weights, corrupted.shape) for name, weights in picks.items()}
    if not picks:
        return None
    _matplotlib()
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    low = min(float(w.min()) for w in picks.values())
    high = max(float(w.max()) for w in picks.values())
    bins = np.linspace(low, high if high > low else low + 1.0, 41)
    fig, axes = _new_figure(len(picks))
    for ax, (name, weights) in zip(axes.flat, picks.items()):
        ax.hist(weights[~corrupted], bins=bins, alpha=0.6, color="tab:blue", label=f"clean ({int((~corrupted).sum())})")
        ax.hist(weights[corrupted], bins=bins, alpha=0.6, color="tab:red",
                label=f"corrupted ({int(corrupted.sum())})")
        ax.set_xlabel(f"picked {_literal(hparam)}")
        ax.set_ylabel("examples")
        ax.set_title(f"{_literal(name)} (val {results[name].best_value:.3g})", fontsize="medium")
        ax.legend(fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
    return _save(fig, os.path.join(out_dir, "example_weights.png"))


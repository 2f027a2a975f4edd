"""Plots written next to results: return against ASL, learning curves, bars, run folders side by side, and the
continual-learning matrix and per-task curves.

Every shaded band is named in the legend (or the legend's title): ±1 std over a FAS sweep's episodes, or for
curves over seeds the 95% Student-t interval of the mean, mean ± t(0.975, n−1)·SEM with n the seeds at each point
(the normal approximation's 1.96 would be 2.2x too narrow for 3 seeds). Bands are clipped to the values the runs
reached: a mean's interval never shows returns no run could have.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from cadence.evaluation.continual import ContinualEvaluation
from cadence.evaluation.fas import FASResult
from cadence.io import atomic_write, read_json

#: z of a two-sided 95% interval under the normal approximation (``mean_band(z=Z95)``; the default is Student's t)
Z95 = 1.96
#: what the confidence band is, for legends
CI_NOTE = "95% t-interval of the mean, mean ± t·SEM"
#: legends go below the axes, where they hide no data
BELOW = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "frameon": False}
#: run-folder fields that :func:`plot_runs` can group by
RUN_GROUPS = ("algo", "env", "seed")


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def format_value(value: float) -> str:
    """A bar label: thousands separators for large values (24,800), a few significant digits otherwise, never
    scientific notation for ordinary magnitudes."""
    if value is None or not math.isfinite(value):
        return ""
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.01 or size == 0:
        return f"{value:.3g}"
    return f"{value:.2e}"


def _tick(value: float, _pos: object = None) -> str:
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    return text.replace("-", "\u2212")  # a typographic minus, as matplotlib's own ticks


def _readable_ticks(ax: plt.Axes) -> None:
    """Tick labels with thousands separators (50,000 rather than 50000 or 5e4)."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(_tick))


def t95(dof: np.ndarray | int) -> np.ndarray:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (NaN where ``dof`` < 1)."""
    from scipy.stats import t

    dof = np.asarray(dof, dtype=np.float64)
    return np.where(dof >= 1, t.ppf(0.975, np.maximum(dof, 1)), np.nan)


def mean_band(values: Sequence[Sequence[float]] | np.ndarray, z: float | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% confidence band over runs: ``values[run, point]`` (NaN where a run has no point) ->
    ``(mean, low, high, n)`` per point, with ``low, high = mean ∓ q·std/sqrt(n)`` (sample std, ddof 1), ``n`` the
    runs with a value there and ``q`` Student's t quantile for ``n - 1`` degrees of freedom (``z`` instead, if
    given: the normal approximation). Where ``n < 2`` the band is the mean itself."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    n = np.sum(~np.isnan(values), axis=0)
    if np.any(n == 0):
        raise ValueError("every point needs a value from at least one run")
    mean = np.nansum(values, axis=0) / n
    dev = np.where(np.isnan(values), 0.0, values - mean)
    std = np.sqrt(np.sum(dev ** 2, axis=0) / np.maximum(n - 1, 1))
    q = np.full(n.shape, z, dtype=np.float64) if z is not None else t95(n - 1)
    half = np.where(n >= 2, np.nan_to_num(q) * std / np.sqrt(n), 0.0)
    return mean, mean - half, mean + half, n


def align_runs(runs: Sequence[Sequence[Sequence[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Runs of ``(x, y)`` points -> shared x and ``y[run, x]``.

    Runs evaluated at nearly the same x (an agent acting J steps at a time evaluates at 4003 rather than 4000, and
    seeds differ by a few steps) share one point per evaluation: with equally many points whose x differ by under
    half the spacing of the evaluations, the i-th points of all runs are one point at their mean x. Otherwise the
    x are the sorted union, each run linearly interpolated at the others' x inside its own span (NaN outside it),
    less the ends where a run overhangs the others by under one evaluation spacing: such a point holds one run
    only, and the mean line would end in a hook there."""
    if not runs or any(len(run) == 0 for run in runs):
        raise ValueError("every run needs at least one (x, y) point")
    points = [np.asarray(run, dtype=np.float64) for run in runs]
    points = [run[np.argsort(run[:, 0], kind="stable")] for run in points]
    gaps = np.concatenate([np.diff(run[:, 0]) for run in points])
    gaps = gaps[gaps > 0]
    if len({len(run) for run in points}) == 1 and len(points) > 1:
        xs_by_index = np.stack([run[:, 0] for run in points])
        spread = xs_by_index.max(axis=0) - xs_by_index.min(axis=0)
        if not gaps.size and not spread.any() or gaps.size and np.all(spread < 0.5 * gaps.min()):
            return xs_by_index.mean(axis=0), np.stack([run[:, 1] for run in points])
    xs = np.unique(np.concatenate([run[:, 0] for run in points]))
    if len(points) > 1 and gaps.size:
        spacing = float(np.median([np.median(np.diff(run[:, 0])) for run in points if len(run) > 1] or [0.0]))
        start, end = max(run[0, 0] for run in points), min(run[-1, 0] for run in points)
        keep = ~(((xs < start) & (start - xs < spacing)) | ((xs > end) & (xs - end < spacing)))
        xs = xs[keep]
    ys = np.full((len(points), len(xs)), np.nan)
    for i, run in enumerate(points):
        inside = (xs >= run[0, 0]) & (xs <= run[-1, 0])
        ys[i, inside] = np.interp(xs[inside], run[:, 0], run[:, 1])
    return xs, ys


def _count(n: np.ndarray) -> str:
    return f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"


def _draw_mean_band(ax: plt.Axes, runs: Sequence[Sequence[Sequence[float]]], label: str, color: str, unit: str,
                    marker: str | None = None) -> None:
    """One label's runs: the mean line and, with 2+ runs, its 95% t-interval band (clipped to the values the runs
    reached), both named in the legend with the number of runs."""
    xs, ys = align_runs(runs)
    mean, low, high, n = mean_band(ys)
    if n.max() < 2:
        ax.plot(xs, mean, color=color, lw=1.5, marker=marker, ms=3, label=f"{label} (1 {unit.removesuffix('s')})")
        return
    observed = np.concatenate([np.asarray(run, dtype=np.float64)[:, 1] for run in runs])
    low, high = np.clip(low, observed.min(), observed.max()), np.clip(high, observed.min(), observed.max())
    ax.plot(xs, mean, color=color, lw=1.5, marker=marker, ms=3,
            label=f"{label}: mean ± 95% t-interval, n = {_count(n)} {unit}")
    ax.fill_between(xs, low, high, where=n >= 2, color=color, alpha=0.2, lw=0)


def _band_legend(ax: plt.Axes, banded: bool, **kwargs) -> None:
    title = f"shaded: {CI_NOTE} (Student's t, n−1 dof), clipped to the runs' values" if banded else None
    ax.legend(title=title, title_fontsize=8, fontsize=8, **{**BELOW, **kwargs})


def plot_fas(results: Mapping[str, FASResult], path: str | Path, title: str | None = None,
             episodes: int | None = None, band: str | Mapping[str, str] | None = None, partial: bool = False) -> Path:
    """Mean return against ASL, one line per result, shaded ±1 std of the returns at each ASL (clipped to the
    observed range). ``partial``: the results cover part of the paper's ASL grid, so the legend calls their score
    a partial-grid score, not a FAS.

    The band is named in the legend: by default "±1 std over N episodes", N = ``episodes`` or the number of
    returns per ASL in the result; ``band`` (one text, or one per label) names it otherwise, e.g. when a result's
    returns are per-seed means. A result with one return per ASL gets no band.
    """
    texts = {}
    for label, res in results.items():
        n = np.asarray(res.returns).shape[1]
        given = band.get(label) if isinstance(band, Mapping) else band
        texts[label] = None if n < 2 else given or f"±1 std over {episodes or n} episodes"
    shown = set(texts.values()) - {None}
    common = shown.pop() if len(shown) == 1 and None not in texts.values() else None  # one band text for all
    fig, ax = plt.subplots(figsize=(7, 4.3))
    handles, labels = [], []
    for i, (label, res) in enumerate(results.items()):
        mean, std, returns = res.mean, res.std, np.asarray(res.returns)
        color = f"C{i}"
        (line,) = ax.plot(res.asl, mean, marker="o", ms=3, color=color)
        handles.append(line)
        labels.append(f"{label} ({'partial-grid score' if partial else 'FAS'} {res.fas:.3f})")
        if texts[label] is None:
            continue
        # +/- std, kept within the returns actually observed (a return cannot exceed its episode's best)
        low = np.maximum(mean - std, returns.min(axis=1))
        high = np.minimum(mean + std, returns.max(axis=1))
        patch = ax.fill_between(res.asl, low, high, color=color, alpha=0.2, lw=0)
        if not common:  # bands differ: each entry names its own
            handles[-1] = (patch, line)
            labels[-1] += f"; shaded {texts[label]}"
    env_id = next(iter(results.values())).env_id if results else ""
    if title is None:
        counts = {np.asarray(r.returns).shape[1] for r in results.values()}
        per = f" ({episodes or counts.pop()} episodes per ASL)" if episodes or len(counts) == 1 else ""
        title = f"{env_id}: return against action-sequence length{per}"
    ax.set_xlabel("action-sequence length (ASL): actions run open loop per decision")
    ax.set_ylabel("return")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, title=f"shaded: {common}, clipped to observed returns" if common else None,
              title_fontsize=8, fontsize=8, **BELOW)
    return save_figure(fig, path)


def plot_curves(curves: Mapping[str, Sequence[Sequence[tuple[float, float]]]], path: str | Path,
                xlabel: str = "env steps", ylabel: str = "return", title: str = "",
                hline: float | None = None, hline_label: str | None = None, unit: str = "seeds") -> Path:
    """Learning curves: for each label, one or more runs of (x, y) points (``unit``: what the runs are, e.g.
    seeds), drawn as their mean with a 95% t-interval band over runs, clipped to the runs' values (a single run is
    its line). Runs evaluated at slightly different x share points, and runs at different x are interpolated at
    each other's inside their own spans (:func:`align_runs`); each point's band uses the runs that reach it."""
    fig, ax = plt.subplots(figsize=(7, 4.3))
    banded = False
    for i, (label, runs) in enumerate(curves.items()):
        _draw_mean_band(ax, runs, label, f"C{i}", unit)
        banded = banded or len(runs) > 1
    if hline is not None:
        ax.axhline(hline, color="k", ls="--", lw=0.8, label=hline_label or f"target {format_value(hline)}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    _readable_ticks(ax)
    _band_legend(ax, banded)
    return save_figure(fig, path)


def plot_bars(groups: Mapping[str, Mapping[str, float]], path: str | Path, ylabel: str, title: str = "") -> Path:
    """Grouped bars: one group per measurement, one bar per peer (e.g. cadence against SB3), labelled with
    their values (thousands separators, no scientific notation)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 + 1.8 * len(groups)), 3.8))
    peers = list(dict.fromkeys(p for g in groups.values() for p in g))
    width = 0.8 / len(peers)
    for i, peer in enumerate(peers):
        xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(groups))]
        values = [g.get(peer, np.nan) for g in groups.values()]
        bars = ax.bar(xs, values, width, label=peer, color=f"C{i}")
        ax.bar_label(bars, labels=[format_value(v) for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_tick))
    ax.margins(y=0.12)  # room for the labels above the tallest bar
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=min(len(peers), 3), **{**BELOW, "bbox_to_anchor": (0.5, -0.1 - 0.05 * max(
        str(k).count("\n") for k in groups))})
    return save_figure(fig, path)


def _read_json(path: Path, run_dir: Path, hint: str) -> dict:
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {path.name}: {hint}")
    return read_json(path)


def read_run(run_dir: str | Path, what: str = "eval") -> dict:
    """What :func:`plot_runs` needs from one run folder: metrics.json's ``algo``, ``env``, ``seed``, ``steps`` and
    ``evals`` and, for ``what="fas"``, fas.json's ``asl``, ``mean_return``, ``fas`` and ``episodes``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a folder (expected a cadence run folder)")
    metrics = _read_json(run_dir / "metrics.json", run_dir,
                         "not a finished cadence run folder (a run writes metrics.json when it ends)")
    missing = [k for k in ("algo", "env", "seed", "evals") if k not in metrics]
    if missing or not metrics.get("evals"):
        raise ValueError(f"{run_dir / 'metrics.json'} lacks {', '.join(missing) or 'evaluations (evals is empty)'}: "
                         "not a finished cadence run")
    run = {"dir": run_dir, "algo": str(metrics["algo"]), "env": str(metrics["env"]), "seed": metrics["seed"],
           "steps": int(metrics.get("steps", metrics["evals"][-1][0])), "evals": [tuple(e) for e in metrics["evals"]]}
    if what == "fas":
        fas = _read_json(run_dir / "fas.json", run_dir, f"no full FAS sweep yet (run `cadence eval fas {run_dir}`)")
        if "asl" not in fas or "mean_return" not in fas:
            raise ValueError(f"{run_dir / 'fas.json'} lacks asl or mean_return")
        run.update(fas_points=list(zip(fas["asl"], fas["mean_return"], strict=True)), fas=fas.get("fas"),
                   fas_episodes=fas.get("episodes"))
    return run


def plot_runs(run_dirs: Sequence[str | Path], group: str = "algo", what: str = "eval",
              out: str | Path | None = None) -> Path:
    """Run folders side by side, grouped by their metrics.json field ``group`` (algo, env or seed): per group the
    mean over its runs and a 95% t-interval band, of the learning curve against env steps
    (``what="eval"``) or of the return against ASL from each run's fas.json (``what="fas"``). The title names
    the env(s), the number of seeds and the training steps. Writes ``out`` (default
    ``plot_<what>_by_<group>.png`` in the current folder) and returns it.

    Raises ValueError for an unknown group or what, no folders, a folder that is no finished run, or a run
    without fas.json when ``what="fas"``.
    """
    if group not in RUN_GROUPS:
        raise ValueError(f"group must be one of {', '.join(RUN_GROUPS)}, got {group!r}")
    if what not in ("eval", "fas"):
        raise ValueError(f"what must be 'eval' or 'fas', got {what!r}")
    if not run_dirs:
        raise ValueError("no run folders given")
    runs = [read_run(d, what) for d in run_dirs]
    groups: dict[str, list[dict]] = {}
    for run in sorted(runs, key=lambda r: (str(type(r[group])), r[group])):
        groups.setdefault(str(run[group]), []).append(run)
    # a band over one group's seeds is a band over seeds; over mixed algos or envs it is over runs
    unit = "seeds" if all(len({r["seed"] for r in g}) == len(g) for g in groups.values()) else "runs"
    fig, ax = plt.subplots(figsize=(7, 4.3))
    for i, (key, members) in enumerate(groups.items()):
        label = f"seed {key}" if group == "seed" else key
        if what == "fas":
            scores = [r["fas"] for r in members if r["fas"] is not None]
            if scores:
                label += f" (FAS {np.mean(scores):.3f})"
            _draw_mean_band(ax, [r["fas_points"] for r in members], label, f"C{i}", unit, marker="o")
        else:
            _draw_mean_band(ax, [r["evals"] for r in members], label, f"C{i}", unit)
    envs = sorted({r["env"] for r in runs})
    steps = sorted({r["steps"] for r in runs})
    seeds = len({r["seed"] for r in runs})
    budget = f"{steps[0]:,} steps" if len(steps) == 1 else f"{steps[0]:,}–{steps[-1]:,} steps"
    details = f"{seeds} seed{'s' if seeds != 1 else ''}, {budget}"
    if what == "fas":
        episodes = sorted({r["fas_episodes"] for r in runs if r["fas_episodes"]})
        if episodes:
            details += f", {'/'.join(map(str, episodes))} episodes per ASL"
        ax.set_xlabel("action-sequence length (ASL): actions run open loop per decision")
        ax.set_ylabel("mean return")
        ax.set_title(f"{', '.join(envs)}: return against ASL by {group} ({details})", fontsize=10)
    else:
        ax.set_xlabel("env steps")
        ax.set_ylabel("evaluation return")
        ax.set_title(f"{', '.join(envs)}: learning curves by {group} ({details})", fontsize=10)
    ax.grid(alpha=0.3)
    _readable_ticks(ax)
    _band_legend(ax, any(len(g) > 1 for g in groups.values()))
    return save_figure(fig, Path(out) if out is not None else Path(f"plot_{what}_by_{group}.png"))


# ---------------------------------------------------------------------------------------------------------------
# continual learning: the performance matrix and each task's performance over training
# ---------------------------------------------------------------------------------------------------------------

def _direction(record: ContinualEvaluation) -> str:
    return f"{record.metric_name} ({'higher' if record.higher_is_better else 'lower'} is better)"


def _matrix_norm(records: Sequence[ContinualEvaluation]) -> matplotlib.colors.Normalize:
    """One colour scale over the measured cells of every record."""
    values = np.concatenate([r.matrix[np.isfinite(r.matrix)] for r in records])
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if low == high:  # a constant matrix still needs a range
        pad = 0.5 if low == 0 else abs(low) * 0.05
        low, high = low - pad, high + pad
    return matplotlib.colors.Normalize(low, high)


def _matrix_cmap(record: ContinualEvaluation) -> matplotlib.colors.Colormap:
    # errors use the reversed map so that good cells have the same colour as for returns; grey marks NaN
    return plt.get_cmap("viridis" if record.higher_is_better else "viridis_r").with_extremes(bad="0.88")


def _draw_matrix(ax: plt.Axes, record: ContinualEvaluation, norm: matplotlib.colors.Normalize
                 ) -> matplotlib.image.AxesImage:
    """The heatmap of ``record.matrix`` with every cell's value written in it ("—" where not measured)."""
    cmap = _matrix_cmap(record)
    image = ax.imshow(np.ma.masked_invalid(record.matrix), cmap=cmap, norm=norm)
    n = record.n_tasks
    size = 8 if n <= 8 else 6
    for (i, j), value in np.ndenumerate(record.matrix):
        if np.isfinite(value):
            r, g, b, _ = cmap(norm(value))
            color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"  # readable on the cell
            ax.text(j, i, format_value(value), ha="center", va="center", fontsize=size, color=color)
        else:
            ax.text(j, i, "\u2014", ha="center", va="center", fontsize=size, color="0.4")
    long = max(len(t) for t in record.tasks) > 6
    ax.set_xticks(range(n), record.tasks, rotation=45 if long else 0, ha="right" if long else "center", fontsize=8)
    ax.set_yticks(range(n), record.tasks, fontsize=8)
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    return image


def _colorbar_label(records: Sequence[ContinualEvaluation]) -> str:
    note = "\ngrey cells (\u2014): not measured" if any(np.isnan(r.matrix).any() for r in records) else ""
    return _direction(records[0]) + note


def plot_continual_heatmap(record: ContinualEvaluation, path: str | Path, title: str = "") -> Path:
    """Heatmap of the continual matrix: row i = after training task i, column j = evaluated on task j, the value
    in every cell and a colour bar naming the metric and its direction. The title (seeds, steps) is the caller's."""
    n = record.n_tasks
    fig, ax = plt.subplots(figsize=(max(4.5, 0.75 * n + 2.5), max(3.5, 0.6 * n + 1.5)))
    image = _draw_matrix(ax, record, _matrix_norm([record]))
    fig.colorbar(image, ax=ax, label=_colorbar_label([record]))
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def panel_norms(records: Sequence[ContinualEvaluation], shared_scale: bool = False
                ) -> list[matplotlib.colors.Normalize]:
    """The colour scale of each record's panel: its own measured range, or one range over all of them."""
    if shared_scale:
        return [_matrix_norm(records)] * len(records)
    return [_matrix_norm([record]) for record in records]


def plot_continual_methods(records: Mapping[str, ContinualEvaluation], path: str | Path, title: str = "",
                           per_row: int = 4, shared_scale: bool = False) -> Path:
    """Continual matrices of several methods side by side, ``per_row`` to a row, each panel on its own colour
    scale with its own colour bar (a method whose errors are 100x another's would otherwise show one colour), or
    with ``shared_scale`` on one scale and one colour bar. The records must share the metric and its direction."""
    if not records:
        raise ValueError("no records to plot")
    items = list(records.values())
    kinds = {(r.metric_name, r.higher_is_better) for r in items}
    if len(kinds) > 1:
        raise ValueError(f"one figure needs one metric and direction, got {sorted(kinds)}")
    n = max(r.n_tasks for r in items)
    side = max(3.0, 0.6 * n + 1.5)
    cols = min(per_row, len(items))
    rows = -(-len(items) // cols)
    width = side * cols + (1.5 if shared_scale else 1.2 * cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width, (side + 0.5) * rows), squeeze=False, layout="constrained")
    for ax, (method, record), norm in zip(axes.flat, records.items(), panel_norms(items, shared_scale)):
        image = _draw_matrix(ax, record, norm)
        ax.set_title(method, fontsize=10)
        if not shared_scale:
            fig.colorbar(image, ax=ax, shrink=0.8, label=_colorbar_label([record]))
    for ax in list(axes.flat)[len(items):]:
        ax.set_visible(False)
    if shared_scale:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85, label=_colorbar_label(items))
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _task_color(j: int, n: int) -> object:
    return f"C{j}" if n <= 10 else plt.get_cmap("tab20")(j % 20)


def _task_spans(record: ContinualEvaluation) -> list[tuple[int, float, float]]:
    """(task, first step, last step) of the steps each task trains over, from its history rows: a task starts
    where the previous one ended."""
    spans, start = [], None
    for task in range(record.n_tasks):
        steps = [r.step for r in record.history if r.task_index == task]
        if not steps:
            continue
        begin = steps[0] if start is None else start
        spans.append((task, float(begin), float(steps[-1])))
        start = steps[-1]
    return spans


def plot_continual_curves(record: ContinualEvaluation, path: str | Path, title: str = "",
                          xlabel: str = "global step") -> Path:
    """Every task's performance against the global step, from the record's history (periodic and task-end rows):
    one line per task, dashed lines at task boundaries (task ends), and each task's training span shaded in its
    line's colour, all named in the legend. The title (seeds, steps) is the caller's."""
    if not record.history:
        raise ValueError("the record has no evaluation rows with a step to plot")
    n = record.n_tasks
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    for task, begin, end in _task_spans(record):
        ax.axvspan(begin, end, color=_task_color(task, n), alpha=0.08, lw=0)
    for j, label in enumerate(record.tasks):
        points = [(r.step, r.values[j]) for r in record.history if np.isfinite(r.values[j])]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, color=_task_color(j, n), marker="o", ms=2.5, lw=1.3, label=label)
    ends = [r.step for r in record.history if r.final and r.task_index < n - 1]
    for k, step in enumerate(ends):
        ax.axvline(step, color="k", ls="--", lw=0.8, label="task boundary (end of a task)" if k == 0 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_direction(record))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    _readable_ticks(ax)
    ax.legend(title="shaded: the task in training (its line's colour)", title_fontsize=8, fontsize=8,
              ncol=min(n + 1, 6), **BELOW)
    return save_figure(fig, path)

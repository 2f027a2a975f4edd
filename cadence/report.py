"""Sweep reports: one Markdown page, its figures and every number as JSON, from a finished (or partial) sweep folder.

A sweep folder (written by ``cadence sweep GRID.toml``, :mod:`cadence.sweeps`) holds ``sweep.json`` (its name,
its planned runs and optionally a ``compare`` pair of methods) and one folder per run, ``<method>/<run>/``, with
``sweep_run.json`` (method, algo, settings, status, error, seconds and an optional ``mpc`` table with its
``label``) beside the run's own files (``metrics.json``, ``fas.json``, ``fas_mpc.json``,
``continual_<metric>.json``).

Only runs with status ``done`` are aggregated. Per metric and env, every method gets its mean and IQM over seeds
with 95% stratified percentile bootstrap intervals (:mod:`cadence.evaluation.aggregate`, after rliable); metrics on a
common scale across envs (FAS, normalised scores) also get an "all envs" row, stratified over envs. A CEM-MPC FAS
sweep through a run's model (``fas_mpc``) counts as its own method, named by the ``mpc`` table's ``label``
(default ``"<method>+MPC"``).
The probability of improvement P(A > B) compares the sweep's ``compare`` pair on every metric.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from cadence.evaluation.aggregate import Interval, aggregate, probability_of_improvement
from cadence.evaluation.continual import ContinualEvaluation
from cadence.evaluation.plots import plot_continual_methods, plot_curves
from cadence.io import atomic_write_json, atomic_write_text, read_json
from cadence.run_folder import METRICS_FILE
from cadence.sweeps import RUN_STATUS as RUN_FILE
from cadence.sweeps import SWEEP_FILE

REPORT_FILE = "report.md"
REPORT_JSON = "report.json"
#: the confidence level of every interval in the report
CONFIDENCE = 0.95
#: the continual summary metrics the tables show (:func:`cadence.evaluation.continual.summary`'s keys)
CONTINUAL_KEYS = ("average_performance", "forgetting", "forgetting_chaudhry")
#: statuses of a run that has stopped; any other (running, queued, no sweep_run.json yet) is "not finished"
DONE, FAILED = "done", "failed"
#: the status of a planned run without a sweep_run.json
NOT_STARTED = "not started"
MAKE_A_SWEEP = "make one with `cadence sweep GRID.toml`"


# ---------------------------------------------------------------------------------------------------------------
# reading the sweep
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """One planned run of a sweep: what ``sweep.json`` and its ``sweep_run.json`` say, and its ``metrics.json``
    (empty until the run ends). ``status`` is ``"not started"`` while the run has no sweep_run.json."""

    name: str
    method: str
    algo: str
    settings: dict[str, Any]
    status: str
    error: str | None
    seconds: float | None
    dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    mpc: dict[str, Any] | None = None
    """The CEM-MPC FAS sweep the sweep plans through the run's model, if any (reported as method ``mpc_label``)."""
    files: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The run's result files already read (:func:`_fas_file`, :func:`continual_records`), so each is read once."""

    @property
    def mpc_label(self) -> str:
        return str((self.mpc or {}).get("label") or f"{self.method}+MPC")

    @property
    def env(self) -> str:
        """The env the run's scores belong to, with its data set or task sequence when it has one (runs on
        different data sets of one env are different problems)."""
        env = str(self.metrics.get("env") or self.settings.get("train.env") or "unknown env")
        detail = self.metrics.get("dataset") or self.metrics.get("sequence")
        return f"{env} ({detail})" if detail else env

    @property
    def seed(self) -> Any:
        return self.metrics.get("seed", self.settings.get("train.seed"))

    @property
    def error_line(self) -> str:
        """The last non-empty line of the run's error (a traceback's last line names the exception)."""
        lines = [line for line in (self.error or "").strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "(no error recorded)"


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep folder; raises ValueError naming the problem (no folder, not a sweep folder)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ValueError(f"{sweep_dir} does not exist or is not a folder: pass a sweep folder ({MAKE_A_SWEEP})")
    path = sweep_dir / SWEEP_FILE
    if not path.is_file():
        raise ValueError(f"{sweep_dir} is not a sweep folder: it has no {SWEEP_FILE} ({MAKE_A_SWEEP})")
    return _read_json(path)


def _planned(sweep_dir: Path, sweep: Mapping[str, Any]) -> list[dict[str, Any]]:
    """sweep.json's runs, then any run folder with a sweep_run.json that sweep.json does not list."""
    runs = [dict(r) for r in sweep.get("runs", [])]
    if any("name" not in r for r in runs):
        raise ValueError(f"{sweep_dir / SWEEP_FILE}: every entry of runs needs a name")
    listed = {r["name"] for r in runs}
    for path in sorted(sweep_dir.glob(f"*/*/{RUN_FILE}")):
        name = path.parent.relative_to(sweep_dir).as_posix()
        if name not in listed:
            runs.append({"name": name})
    return runs


def _run_record(sweep_dir: Path, entry: Mapping[str, Any]) -> RunRecord:
    run_dir = sweep_dir / entry["name"]
    state = {**entry, **(_read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).is_file() else {})}
    method = str(state.get("method") or entry["name"].split("/")[0])
    record = RunRecord(name=str(entry["name"]), method=method, algo=str(state.get("algo", "")),
                       settings=dict(state.get("settings") or {}), status=str(state.get("status", NOT_STARTED)),
                       error=state.get("error"), seconds=state.get("seconds"), dir=run_dir,
                       mpc=state.get("mpc") or None)
    if record.status == DONE:
        try:
            record.metrics = _read_json(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else {}
        except ValueError as err:
            record.status, record.error = FAILED, f"finished, but {err}"
        if record.status == DONE and _final_return(record.metrics) is None:
            record.status = FAILED
            record.error = f"finished, but {run_dir / METRICS_FILE} is missing or has no evaluation"
    return record


def collect_runs(sweep_dir: str | Path, sweep: Mapping[str, Any] | None = None) -> list[RunRecord]:
    """Every run of a sweep folder, in sweep.json's order (then unlisted run folders), with its status and, for
    finished runs, its metrics. A run marked done whose metrics.json is missing or holds no evaluation is counted
    as failed, with that as its error. ``sweep`` is its sweep.json if already read. Raises ValueError if the folder
    is not a sweep folder."""
    sweep_dir = Path(sweep_dir)
    sweep = read_sweep(sweep_dir) if sweep is None else sweep
    return [_run_record(sweep_dir, entry) for entry in _planned(sweep_dir, sweep)]


# ---------------------------------------------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A reported metric: its key in report.json, its title, whether its scale is shared by every env (then an
    "all envs" row is added) and its direction."""

    key: str
    title: str
    normalised: bool = False
    higher_is_better: bool = True


FINAL_RETURN = Metric("final_return", "Final evaluation return")
FAS = Metric("fas", "FAS (frequency-averaged score, return against ASL normalised by R_max)", normalised=True)
NORMALISED = Metric("normalized_score", "Normalised score (0 = random, 100 = expert)", normalised=True)


@dataclass(frozen=True)
class Score:
    """One run's value of one metric, under the method it counts for (a run's MPC sweep is its own method)."""

    metric: Metric
    method: str
    env: str
    seed: Any
    value: float


def _final_return(metrics: Mapping[str, Any]) -> float | None:
    value = metrics.get("final_eval_return")
    if value is None and metrics.get("evals"):
        value = metrics["evals"][-1][1]
    return None if value is None else float(value)


def _fas_file(run: RunRecord, suffix: str) -> dict[str, Any] | None:
    key = f"fas{suffix}.json"
    if key not in run.files:
        path = run.dir / key
        run.files[key] = _read_json(path) if path.is_file() else None
    return run.files[key]


def _fas_score(run: RunRecord, suffix: str) -> float | None:
    """``metrics.json["fas<suffix>"]``, else the FAS in ``fas<suffix>.json`` (full-grid sweeps only)."""
    value = run.metrics.get(f"fas{suffix}")
    if value is None:
        value = (_fas_file(run, suffix) or {}).get("fas")
    return None if value is None else float(value)


def _normalised_score(run: RunRecord, final: float) -> float | None:
    """metrics.json's ``final_normalized_score``, else the final return normalised with the references of the
    run's data set or env when cadence has them (:func:`cadence.evaluation.scores.normalized_score`); None when
    it has none."""
    if run.metrics.get("final_normalized_score") is not None:
        return float(run.metrics["final_normalized_score"])
    from cadence.evaluation.scores import normalized_score

    dataset, env = run.metrics.get("dataset"), str(run.metrics.get("env", ""))
    name = dataset if isinstance(dataset, str) and dataset.startswith("d4rl:") else env
    try:
        return float(normalized_score(name, final))
    except (ValueError, OSError, KeyError):  # no references for this env: no normalised score
        return None


def continual_records(run: RunRecord) -> dict[str, tuple[ContinualEvaluation | None, dict[str, float]]]:
    """``{metric_name: (record, summary metrics)}`` of a continual run: from its ``continual_<metric>.json`` files,
    else the summaries in metrics.json's ``continual`` (no record then). Read once per run."""
    if "continual" in run.files:
        return run.files["continual"]
    out: dict[str, tuple[ContinualEvaluation | None, dict[str, float]]] = {}
    for path in sorted(run.dir.glob("continual_*.json")):
        data = _read_json(path)
        if "record" in data:
            try:
                record = ContinualEvaluation.from_dict(data["record"])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path} does not hold a continual record: {err}") from None
            out[record.metric_name] = (record, dict(data.get("metrics") or {}))
    for name, metrics in (run.metrics.get("continual") or {}).items():
        out.setdefault(name, (None, dict(metrics or {})))
    run.files["continual"] = out
    return out


def _continual_metric(name: str, key: str, record: ContinualEvaluation | None) -> Metric:
    """The Metric of one continual summary value: forgetting is lower-is-better for every record (positive means
    forgotten); averages follow the record's direction."""
    higher = record.higher_is_better if record is not None else not name.endswith("error")
    title = f"Continual {name.replace('_', ' ')}: {key.replace('_', ' ')}"
    return Metric(f"continual/{name}/{key}", title, normalised=name == "normalized_score",
                  higher_is_better=False if key.startswith("forgetting") else higher)


def run_scores(run: RunRecord) -> list[Score]:
    """Every reported value of one finished run."""
    env, seed = run.env, run.seed
    scores = []
    final = _final_return(run.metrics)
    if final is not None:
        scores.append(Score(FINAL_RETURN, run.method, env, seed, final))
        normalised = _normalised_score(run, final)
        if normalised is not None:
            scores.append(Score(NORMALISED, run.method, env, seed, normalised))
    for suffix, method in (("", run.method), ("_mpc", run.mpc_label)):
        value = _fas_score(run, suffix)
        if value is not None:
            scores.append(Score(FAS, method, env, seed, value))
    for name, (record, summary) in continual_records(run).items():
        for key in CONTINUAL_KEYS:
            value = summary.get(key)
            if value is not None and math.isfinite(value):
                scores.append(Score(_continual_metric(name, key, record), run.method, env, seed, float(value)))
    return scores


def _seed_order(score: Score) -> tuple[int, Any]:
    """Numbers in numeric order, then anything else by its text."""
    seed = score.seed
    return (0, seed) if isinstance(seed, int | float) and not isinstance(seed, bool) else (1, str(seed))


def group_scores(scores: Iterable[Score]) -> dict[Metric, dict[str, dict[str, list[float]]]]:
    """``{metric: {env: {method: values}}}``, metrics in first-seen order, each method's values ordered by seed."""
    grouped: dict[Metric, dict[str, dict[str, list[Score]]]] = {}
    for s in scores:
        grouped.setdefault(s.metric, {}).setdefault(s.env, {}).setdefault(s.method, []).append(s)
    return {metric: {env: {method: [s.value for s in sorted(items, key=_seed_order)]
                           for method, items in methods.items()}
                     for env, methods in sorted(envs.items())}
            for metric, envs in grouped.items()}


# ---------------------------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------------------------

#: the env of a row aggregated over every env
ALL_ENVS = "all envs"


@dataclass(frozen=True)
class Row:
    """One table row: a method's mean and IQM, with their intervals, over ``n`` runs in ``envs`` envs."""

    metric: str
    env: str
    method: str
    n: int
    envs: int
    mean: Interval
    iqm: Interval
    values: list[float]


def _row(metric: Metric, env: str, method: str, strata: Sequence[Sequence[float]], seed: int,
         n_resamples: int) -> Row:
    mean = aggregate(strata, "mean", CONFIDENCE, n_resamples, seed)
    middle = aggregate(strata, "iqm", CONFIDENCE, n_resamples, seed)
    return Row(metric.key, env, method, mean.n, len(strata), mean, middle, [v for s in strata for v in s])


def metric_rows(metric: Metric, by_env: Mapping[str, Mapping[str, list[float]]], seed: int,
                n_resamples: int) -> list[Row]:
    """One row per env and method (one stratum: the seeds) and, for a normalised metric over more than one env,
    an ``"all envs"`` row per method, stratified over its envs."""
    rows = [_row(metric, env, method, [values], seed, n_resamples)
            for env, methods in by_env.items() for method, values in methods.items()]
    if metric.normalised and len(by_env) > 1:
        for method in dict.fromkeys(m for methods in by_env.values() for m in methods):
            strata = [methods[method] for methods in by_env.values() if method in methods]
            rows.append(_row(metric, ALL_ENVS, method, strata, seed, n_resamples))
    return rows


def _digits(values: Iterable[float]) -> int:
    """Decimals for a table: 1 for values in the hundreds or more, 2 from 1, 3 below."""
    largest = max((abs(v) for v in values), default=0.0)
    return 1 if largest >= 100 else 2 if largest >= 1 else 3


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]


def _table_lines(rows: Sequence[Row], total_envs: int) -> list[str]:
    digits = _digits(v for r in rows for v in (r.mean.point, r.iqm.point))
    pct = f"{CONFIDENCE:.0%}"
    if rows[0].env == ALL_ENVS:
        header = ["method", "envs", "runs (n)", f"mean [{pct} CI]", f"IQM [{pct} CI]"]
        cells = [[r.method, f"{r.envs}/{total_envs}", r.n, r.mean.format(digits), r.iqm.format(digits)] for r in rows]
    else:
        header = ["method", "seeds (n)", f"mean [{pct} CI]", f"IQM [{pct} CI]"]
        cells = [[r.method, r.n, r.mean.format(digits), r.iqm.format(digits)] for r in rows]
    return markdown_table(header, cells)


def metric_section(metric: Metric, rows: Sequence[Row]) -> list[str]:
    """The Markdown of one metric: a table per env, then the all-envs table if any."""
    lines = [f"## {metric.title}", ""]
    if not metric.higher_is_better:
        lines += ["Lower is better.", ""]
    envs = list(dict.fromkeys(r.env for r in rows))
    total = len([e for e in envs if e != ALL_ENVS])
    for env in envs:
        table = [r for r in rows if r.env == env]
        title = f"all envs (stratified over {total} envs)" if env == ALL_ENVS else env
        lines += [f"### {title}", "", *_table_lines(table, total), ""]
        if env == ALL_ENVS and any(r.envs < total for r in table):
            lines += ["A method with runs in fewer envs is aggregated over its own envs only: compare it in the "
                      "per-env tables.", ""]
    return lines


# ---------------------------------------------------------------------------------------------------------------
# probability of improvement
# ---------------------------------------------------------------------------------------------------------------

def method_names(runs: Sequence[RunRecord]) -> list[str]:
    """Every method a report can name: the sweep's methods and the MPC methods of its runs (planned, or found in a
    finished run's ``fas_mpc``)."""
    names = [r.method for r in runs]
    names += [r.mpc_label for r in runs if r.mpc or (r.status == DONE and _fas_score(r, "_mpc") is not None)]
    return list(dict.fromkeys(names))


def check_compare(compare: Sequence[str] | None, valid: Sequence[str]) -> tuple[str, str] | None:
    """``compare`` as a pair of known methods; raises ValueError naming the valid ones."""
    if compare is None:
        return None
    if isinstance(compare, str) or len(compare) != 2:
        raise ValueError(f"compare must be a pair of methods (A, B), got {compare!r}")
    unknown = [m for m in compare if m not in valid]
    if unknown:
        raise ValueError(f"compare names unknown method {unknown[0]!r}; the sweep's methods are: {', '.join(valid)}")
    return str(compare[0]), str(compare[1])


@dataclass(frozen=True)
class Improvement:
    """P(a better than b) on one metric, stratified over the envs where both have finished runs."""

    metric: str
    a: str
    b: str
    envs: list[str]
    runs: tuple[int, int]
    probability: Interval | None


def improvement(metric: Metric, by_env: Mapping[str, Mapping[str, list[float]]], pair: tuple[str, str], seed: int,
                n_resamples: int) -> Improvement:
    """P(A > B) for a higher-is-better metric, P(A < B) (A better) for a lower-is-better one; ``probability`` is
    None when no env has runs of both."""
    a, b = pair
    envs = [env for env, methods in by_env.items() if a in methods and b in methods]
    sign = 1.0 if metric.higher_is_better else -1.0  # better is larger after the sign
    xs = [[sign * v for v in by_env[env][a]] for env in envs]
    ys = [[sign * v for v in by_env[env][b]] for env in envs]
    runs = (sum(map(len, xs)), sum(map(len, ys)))
    if not envs:
        return Improvement(metric.key, a, b, envs, runs, None)
    return Improvement(metric.key, a, b, envs, runs,
                       probability_of_improvement(xs, ys, CONFIDENCE, n_resamples, seed))


def improvement_section(pair: tuple[str, str], items: Sequence[tuple[Metric, Improvement]]) -> list[str]:
    a, b = pair
    lines = [f"## Probability of improvement: P({a} > {b})", "",
             f"The chance that a run of {a} scores better than a run of {b} on the same env (ties count one half), "
             f"averaged over the envs where both have finished runs (rliable's P(X > Y)); {CONFIDENCE:.0%} CI by "
             "stratified bootstrap over seeds within envs. Above 0.5 favours "
             f"{a}. For lower-is-better metrics, better means lower.", ""]
    rows = []
    for metric, item in items:
        value = item.probability.format(3) if item.probability else "no env with finished runs of both"
        rows.append([metric.title, len(item.envs), f"{item.runs[0]} / {item.runs[1]}", value])
    return lines + markdown_table(["metric", "envs", f"runs ({a} / {b})", f"P({a} better) [{CONFIDENCE:.0%} CI]"],
                                  rows) + [""]


# ---------------------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "env"


def _span(values: Iterable[int]) -> str:
    values = sorted(set(values))
    return f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}–{values[-1]:,}"


def _seeds(runs: Sequence[RunRecord]) -> str:
    n = len({r.seed for r in runs})
    return f"{n} seed{'s' if n != 1 else ''}"


def learning_curves(env: str, runs: Sequence[RunRecord], out_dir: Path) -> Path | None:
    """Evaluation return against training steps per method: mean and 95% band over seeds (plot_curves). Runs that
    learn from a data set (their metrics name it) count gradient steps, not env steps."""
    curves: dict[str, list] = {}
    for run in runs:
        if run.metrics.get("evals"):
            curves.setdefault(run.method, []).append([tuple(e) for e in run.metrics["evals"]])
    if not curves:
        return None
    steps = _span(int(r.metrics.get("steps", r.metrics["evals"][-1][0])) for r in runs if r.metrics.get("evals"))
    title = f"{env}: evaluation return during training ({_seeds(runs)}, {steps} steps)"
    offline = all(r.metrics.get("dataset") for r in runs if r.metrics.get("evals"))
    return plot_curves(curves, out_dir / f"curves_{_slug(env)}.png",
                       xlabel="gradient steps" if offline else "env steps",
                       ylabel="mean evaluation return", title=title)


def fas_curves(env: str, runs: Sequence[RunRecord], out_dir: Path) -> Path | None:
    """Mean return against ASL per method (an MPC sweep is its own method): mean and 95% band over seeds."""
    curves: dict[str, list] = {}
    episodes: set[int] = set()
    for run in runs:
        for suffix, method in (("", run.method), ("_mpc", run.mpc_label)):
            data = _fas_file(run, suffix)
            if data and data.get("asl") and data.get("mean_return"):
                curves.setdefault(method, []).append(list(zip(data["asl"], data["mean_return"], strict=True)))
                if data.get("episodes"):
                    episodes.add(int(data["episodes"]))
    if not curves:
        return None
    per = f", {'/'.join(map(str, sorted(episodes)))} episodes per ASL" if episodes else ""
    title = f"{env}: return against action-sequence length ({_seeds(runs)}{per})"
    return plot_curves(curves, out_dir / f"fas_{_slug(env)}.png", xlabel="action-sequence length (ASL)",
                       ylabel="mean return over the episodes at each ASL", title=title)


def mean_record(records: Sequence[ContinualEvaluation]) -> ContinualEvaluation:
    """The cell-wise mean matrix of several seeds' records of one task sequence (NaN where no seed measured a
    cell); raises ValueError if their tasks differ."""
    tasks = records[0].tasks
    if any(r.tasks != tasks for r in records):
        raise ValueError(f"the seeds' continual records have different tasks: {[r.tasks for r in records]}")
    stack = np.stack([r.matrix for r in records])
    measured = np.isfinite(stack).sum(axis=0)
    total = np.where(np.isfinite(stack), stack, 0.0).sum(axis=0)
    matrix = np.where(measured > 0, total / np.maximum(measured, 1), np.nan)
    return ContinualEvaluation(list(tasks), records[0].metric_name, records[0].higher_is_better, matrix)


def continual_heatmaps(env: str, runs: Sequence[RunRecord], out_dir: Path) -> dict[str, Path]:
    """Per continual metric of the env's runs, one figure with each method's matrix, averaged over its seeds, on
    one colour scale."""
    by_metric: dict[str, dict[str, list[ContinualEvaluation]]] = {}
    for run in runs:
        for name, (record, _) in continual_records(run).items():
            if record is not None:
                by_metric.setdefault(name, {}).setdefault(run.method, []).append(record)
    out = {}
    for name, methods in by_metric.items():
        means = {f"{m} ({len(rs)} seed{'s' if len(rs) != 1 else ''})": mean_record(rs) for m, rs in methods.items()}
        title = (f"{env}: {name.replace('_', ' ')} after training task i (row) on task j (column), "
                 "mean over each method's seeds")
        out[name] = plot_continual_methods(means, out_dir / f"continual_{name}_{_slug(env)}.png", title=title)
    return out


# ---------------------------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------------------------

def _by_env(runs: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for run in runs:
        out.setdefault(run.env, []).append(run)
    return dict(sorted(out.items()))


def _figures(done: Sequence[RunRecord], out_dir: Path) -> dict[str, dict[str, Path]]:
    """``{"learning curves" | "return against ASL" | "continual <metric>": {env: png}}``."""
    figures: dict[str, dict[str, Path]] = {}
    for env, runs in _by_env(done).items():
        for kind, draw in (("Learning curves", learning_curves), ("Return against ASL", fas_curves)):
            path = draw(env, runs, out_dir)
            if path is not None:
                figures.setdefault(kind, {})[env] = path
        for name, path in continual_heatmaps(env, runs, out_dir).items():
            figures.setdefault(f"Continual matrices: {name.replace('_', ' ')}", {})[env] = path
    return figures


BAND_NOTE = {
    "Learning curves": "Lines are the mean over seeds; the shaded band is the 95% Student-t interval of that mean "
                       "(mean ± t(0.975, n−1)·SEM, n = the seeds at each point, in the legend), clipped to the "
                       "returns the seeds reached. Seeds evaluated a few steps apart share one point.",
    "Return against ASL": "Each seed's curve is its mean return over the sweep's episodes at each ASL; lines are "
                          "the mean over seeds and the band the 95% Student-t interval of that mean over the n seeds "
                          "in the legend, clipped to the returns the seeds reached.",
}


def figure_section(kind: str, by_env: Mapping[str, Path], out_dir: Path) -> list[str]:
    lines = [f"## {kind}", ""]
    if kind in BAND_NOTE:
        lines += [BAND_NOTE[kind], ""]
    for env, path in by_env.items():
        lines += [f"### {env}", "", f"![{kind}: {env}]({path.relative_to(out_dir).as_posix()})", ""]
    return lines


def run_lists(runs: Sequence[RunRecord]) -> list[str]:
    """The failed runs with their error's last line, and the runs not finished."""
    lines = []
    failed = [r for r in runs if r.status == FAILED]
    if failed:
        lines += ["## Failed runs", "",
                  *markdown_table(["run", "error (last line)"], [[r.name, r.error_line] for r in failed]), ""]
    waiting = [r for r in runs if r.status not in (DONE, FAILED)]
    if waiting:
        lines += ["## Not finished", "", *[f"- {r.name} ({r.status})" for r in waiting], ""]
    return lines


def header(name: str, runs: Sequence[RunRecord], date: str, seed: int, n_resamples: int) -> list[str]:
    done = sum(r.status == DONE for r in runs)
    failed = sum(r.status == FAILED for r in runs)
    return [f"# Sweep report: {name}", "",
            f"Written {date}. Runs: **{done} done**, {failed} failed, {len(runs) - done - failed} not finished "
            f"(of {len(runs)}).", "",
            f"Only finished runs are aggregated. Tables give, per env and method, the mean and the interquartile "
            f"mean (IQM, the mean of the middle 50% of runs) over seeds with {CONFIDENCE:.0%} percentile bootstrap "
            f"confidence intervals ({n_resamples} resamples, seed {seed}; stratified: seeds are resampled within "
            "each env, as in rliable, Agarwal et al. 2021). Metrics on a scale shared by every env also get an "
            "\"all envs\" row, stratified over envs. A single run has no interval (low = high = its value); with "
            "few seeds a percentile bootstrap interval is too narrow (with 3 seeds it is about the range of the "
            "runs), so read it as a lower bound on the uncertainty.", ""]


def _report_json(name: str, date: str, runs: Sequence[RunRecord], rows: Sequence[Row],
                 improvements: Sequence[Improvement], figures: Mapping[str, Mapping[str, Path]], out_dir: Path,
                 seed: int, n_resamples: int) -> dict[str, Any]:
    statuses = [r.status for r in runs]
    return {
        "sweep": name, "date": date, "confidence": CONFIDENCE, "n_resamples": n_resamples, "seed": seed,
        "runs": {"total": len(runs), "done": statuses.count(DONE), "failed": statuses.count(FAILED),
                 "not_finished": len(runs) - statuses.count(DONE) - statuses.count(FAILED)},
        "tables": [asdict(r) for r in rows],
        "probability_of_improvement": [asdict(i) for i in improvements],
        "failed": [{"name": r.name, "error": r.error} for r in runs if r.status == FAILED],
        "not_finished": [{"name": r.name, "status": r.status} for r in runs if r.status not in (DONE, FAILED)],
        "figures": {kind: {env: p.relative_to(out_dir).as_posix() for env, p in by_env.items()}
                    for kind, by_env in figures.items()},
    }


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None, compare: tuple[str, str] | None = None,
                 seed: int = 0, n_resamples: int = 2000) -> Path:
    """Write ``report.md``, its PNG figures and ``report.json`` (every number) for a sweep folder into ``out_dir``
    (default ``<sweep_dir>/report/``); returns the path of report.md.

    ``compare`` (default: sweep.json's ``compare``) names two methods A and B: the report adds P(A > B) on every
    metric. ``seed`` and ``n_resamples`` drive the bootstrap intervals.

    Raises ValueError if the folder is missing or no sweep folder, no run has finished, or ``compare`` names a
    method the sweep does not have.
    """
    sweep_dir = Path(sweep_dir)
    sweep = read_sweep(sweep_dir)
    runs = collect_runs(sweep_dir, sweep)
    name = str(sweep.get("name") or sweep_dir.name)
    pair = check_compare(compare if compare is not None else sweep.get("compare"), method_names(runs))
    done = [r for r in runs if r.status == DONE]
    if not done:
        failed = sum(r.status == FAILED for r in runs)
        raise ValueError(f"sweep {name!r} in {sweep_dir} has no finished run yet ({len(runs)} planned, {failed} "
                         "failed): nothing to report")
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    date = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")

    grouped = group_scores(s for run in done for s in run_scores(run))
    lines = header(name, runs, date, seed, n_resamples)
    rows: list[Row] = []
    for metric, by_env in grouped.items():
        table = metric_rows(metric, by_env, seed, n_resamples)
        rows += table
        lines += metric_section(metric, table)
    improvements = []
    if pair is not None:
        items = [(metric, improvement(metric, by_env, pair, seed, n_resamples)) for metric, by_env in grouped.items()]
        improvements = [item for _, item in items]
        lines += improvement_section(pair, items)
    figures = _figures(done, out_dir)
    for kind, by_env in figures.items():
        lines += figure_section(kind, by_env, out_dir)
    lines += run_lists(runs)
    atomic_write_json(out_dir / REPORT_JSON,
                      _report_json(name, date, runs, rows, improvements, figures, out_dir, seed, n_resamples))
    return atomic_write_text(out_dir / REPORT_FILE, "\n".join(lines).rstrip() + "\n")

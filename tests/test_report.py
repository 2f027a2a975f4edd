"""Sweep reports from a hand-made sweep folder: tables, figures, failed runs, P(A > B) and errors."""

import json

import numpy as np
import pytest

from cadence.evaluation.aggregate import aggregate
from cadence.evaluation.continual import ContinualEvaluation, summary
from cadence.report import collect_runs, write_report

N = 200  # bootstrap resamples: small, the tests check the numbers, not the intervals' precision
IP, SW = "InvertedPendulum-v5", "Swimmer-v5"  # no cadence reference scores: no normalised-score table
# final evaluation return and FAS per method, env and seed 1, 2, 3
FINAL = {("SRL-8", IP): [900, 950, 1000], ("SRL-8", SW): [100, 110, 150],
         ("SAC", IP): [500, 600, 700], ("SAC", SW): [50, 40, 30]}
FAS = {("SRL-8", IP): [0.30, 0.40, 0.50], ("SRL-8", SW): [0.20, 0.26, 0.90],
       ("SAC", IP): [0.10, 0.20, 0.15], ("SAC", SW): [0.05, 0.11, 0.30]}
MPC_FAS = [0.6, 0.7, 0.8]  # SRL-8's CEM-MPC sweeps on InvertedPendulum
ALGO = {"SRL-8": "srl", "SAC": "sac"}


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _run(sweep, method, env, seed, status="done", error=None, metrics=None, files=None, **extra):
    name = f"{method}/env={env},seed={seed}"
    settings = {"train.env": env, "train.seed": seed}
    _write(sweep / name / "sweep_run.json", {"name": name, "method": method, "algo": ALGO.get(method, method),
                                            "settings": settings, "status": status, "error": error,
                                            "seconds": 1.5, **extra})
    if metrics is not None:
        _write(sweep / name / "metrics.json", {"algo": ALGO.get(method, method), "env": env, "seed": seed,
                                               **metrics})
    for file, data in (files or {}).items():
        _write(sweep / name / file, data)
    return {"name": name, "method": method, "algo": ALGO.get(method, method), "settings": settings}


def _fas_file(value, final):
    return {"asl": [1, 2, 4], "mean_return": [final, 0.7 * final, 0.4 * final], "fas": value, "episodes": 5}


@pytest.fixture
def sweep(tmp_path):
    """2 methods x 2 envs x 3 seeds, FAS sweeps, SRL-8's MPC sweeps on one env, one failed and one running run."""
    root = tmp_path / "sweep"
    runs = []
    for (method, env), finals in FINAL.items():
        for i, (final, fas) in enumerate(zip(finals, FAS[method, env])):
            evals = [[0, 0.1 * final], [1000, 0.5 * final], [2000, final]]
            files = {"fas.json": _fas_file(fas, final)}
            metrics = {"steps": 2000, "evals": evals, "final_eval_return": final, "fas": fas}
            if method == "SRL-8" and env == IP:
                files["fas_mpc.json"] = _fas_file(MPC_FAS[i], final)
                metrics["fas_mpc"] = MPC_FAS[i]
            runs.append(_run(root, method, env, i + 1, metrics=metrics, files=files))
    runs.append(_run(root, "SAC", SW, 4, status="failed",
                     error="Traceback (most recent call last):\n  File x\nRuntimeError: the critic diverged\n"))
    runs.append(_run(root, "SRL-8", SW, 4, status="running"))
    runs.append({"name": "SRL-8/env=Swimmer-v5,seed=5", "method": "SRL-8", "algo": "srl", "settings": {}})  # queued
    _write(root / "sweep.json", {"name": "srl-vs-sac", "runs": runs, "compare": ["SRL-8", "SAC"]})
    return root


def _section(md, title):
    """The lines of one section (``## title`` or ``### title``) up to the next heading of that level or above."""
    lines = md.splitlines()
    start = lines.index(title)
    level = title.split(" ")[0]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")
                and len(lines[i].split(" ")[0]) <= len(level)), len(lines))
    return lines[start + 1:end]


def _row(lines, method):
    rows = [line for line in lines if line.startswith(f"| {method} |")]
    assert len(rows) == 1, (method, lines)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_collect_runs(sweep):
    runs = collect_runs(sweep)
    assert len(runs) == 15
    assert [r.status for r in runs].count("done") == 12
    failed = next(r for r in runs if r.status == "failed")
    assert failed.name == "SAC/env=Swimmer-v5,seed=4" and failed.error_line == "RuntimeError: the critic diverged"
    assert {r.status for r in runs[-2:]} == {"running", "not started"}
    first = runs[0]
    assert (first.method, first.algo, first.env, first.seed, first.mpc_label) == ("SRL-8", "srl", IP, 1, "SRL-8+MPC")


def test_report_tables(sweep):
    md_path = write_report(sweep, n_resamples=N)
    assert md_path == sweep / "report" / "report.md"
    md = md_path.read_text()
    assert md.startswith("# Sweep report: srl-vs-sac")
    assert "Runs: **12 done**, 1 failed, 2 not finished (of 15)." in md

    final = "## Final evaluation return"
    ip = _section(md, f"### {IP}")  # the first env table: final return
    assert _section(md, final)[1] == f"### {IP}"
    # 3 seeds: the IQM cuts int(0.75) = 0 runs at each end, so it is the mean
    srl = _row(ip, "SRL-8")  # method, seeds, mean [CI], IQM [CI]
    assert srl[1] == "3" and srl[2].startswith("950.0 [") and srl[3].startswith("950.0 [")
    assert _row(ip, "SAC")[2].startswith("600.0 [")
    assert "all envs" not in "\n".join(_section(md, final))  # returns have no common scale across envs

    fas = _section(md, "## FAS (frequency-averaged score, return against ASL normalised by R_max)")
    text = "\n".join(fas)
    sw_fas = text.split(f"### {SW}")[1].split("###")[0].splitlines()
    assert _row(sw_fas, "SRL-8")[2].startswith("0.453 [")  # (0.2 + 0.26 + 0.9) / 3
    assert _row(sw_fas, "SAC")[2].startswith("0.153 [")
    ip_fas = text.split(f"### {IP}")[1].split("###")[0].splitlines()
    assert _row(ip_fas, "SRL-8+MPC")[2].startswith("0.700 [")  # the MPC sweeps are their own method
    everywhere = text.split("### all envs (stratified over 2 envs)")[1].splitlines()
    srl = _row(everywhere, "SRL-8")
    # pooled 0.3 0.4 0.5 0.2 0.26 0.9: mean 2.56 / 6; IQM cuts one run at each end: (0.26 + 0.3 + 0.4 + 0.5) / 4
    assert srl[1:3] == ["2/2", "6"] and srl[3].startswith("0.427 [") and srl[4].startswith("0.365 [")
    sac = _row(everywhere, "SAC")
    assert sac[3].startswith("0.152 [") and sac[4].startswith("0.140 [")  # IQM (0.1 + 0.11 + 0.15 + 0.2) / 4
    assert _row(everywhere, "SRL-8+MPC")[1:3] == ["1/2", "3"]
    assert "aggregated over its own envs only" in text  # the MPC method has runs in one env of two

    # the intervals are aggregate()'s, stratified over envs
    numbers = json.loads((sweep / "report" / "report.json").read_text())
    row = next(r for r in numbers["tables"] if r["metric"] == "fas" and r["env"] == "all envs"
               and r["method"] == "SRL-8")
    expected = aggregate([FAS["SRL-8", IP], FAS["SRL-8", SW]], "iqm", n_resamples=N, seed=0)
    assert (row["iqm"]["low"], row["iqm"]["high"]) == pytest.approx((expected.low, expected.high))
    assert row["iqm"]["point"] == pytest.approx(0.365)
    assert numbers["runs"] == {"total": 15, "done": 12, "failed": 1, "not_finished": 2}


def test_report_figures_and_runs(sweep):
    md = write_report(sweep, n_resamples=N).read_text()
    out = sweep / "report"
    for png in (f"curves_{IP}.png", f"curves_{SW}.png", f"fas_{IP}.png", f"fas_{SW}.png"):
        assert (out / png).stat().st_size > 1000
        assert f"]({png})" in md  # referenced relative to report.md
    assert "## Learning curves" in md and "## Return against ASL" in md
    failed = _section(md, "## Failed runs")
    assert _row(failed, "SAC/env=Swimmer-v5,seed=4")[1] == "RuntimeError: the critic diverged"
    waiting = "\n".join(_section(md, "## Not finished"))
    assert "SRL-8/env=Swimmer-v5,seed=4 (running)" in waiting and "seed=5 (not started)" in waiting


def test_probability_of_improvement(sweep):
    md = write_report(sweep, n_resamples=N).read_text()
    section = _section(md, "## Probability of improvement: P(SRL-8 > SAC)")
    # final return: SRL-8 beats SAC on every pair in both envs
    assert _row(section, "Final evaluation return")[1:4] == ["2", "6 / 6", "1.000 [1.000, 1.000]"]
    # FAS: 1 on InvertedPendulum; on Swimmer 0.2 and 0.26 beat 0.05 and 0.11, 0.9 beats all three: 7/9
    fas_row = next(line for line in section if line.startswith("| FAS"))
    assert f"| {(1 + 7 / 9) / 2:.3f} [" in fas_row
    numbers = json.loads((sweep / "report" / "report.json").read_text())
    fas = next(i for i in numbers["probability_of_improvement"] if i["metric"] == "fas")
    assert fas["probability"]["point"] == pytest.approx((1 + 7 / 9) / 2)

    other = write_report(sweep, out_dir=sweep / "other", compare=("SAC", "SRL-8"), n_resamples=N).read_text()
    assert "## Probability of improvement: P(SAC > SRL-8)" in other
    fas_row = next(line for line in other.splitlines() if line.startswith("| FAS"))
    assert f"| {(0 + 2 / 9) / 2:.3f} [" in fas_row


def test_errors(tmp_path, sweep):
    with pytest.raises(ValueError, match="does not exist"):
        write_report(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match=r"not a sweep folder.*cadence sweep GRID.toml"):
        write_report(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"unknown method 'PPO'.*SRL-8, SAC, SRL-8\+MPC"):
        write_report(sweep, compare=("PPO", "SAC"), n_resamples=N)
    with pytest.raises(ValueError, match="pair of methods"):
        write_report(sweep, compare=("SAC",), n_resamples=N)
    empty = tmp_path / "empty"
    _write(empty / "sweep.json", {"name": "empty", "runs": [_run(empty, "SAC", IP, 1, status="failed", error="x")]})
    with pytest.raises(ValueError, match="no finished run"):
        write_report(empty)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "sweep.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        write_report(tmp_path / "broken")


def test_done_run_without_metrics_counts_as_failed(tmp_path):
    root = tmp_path / "sweep"
    runs = [_run(root, "SAC", IP, 1, metrics={"steps": 10, "evals": [[10, 0.0]], "final_eval_return": 0.0}),
            _run(root, "SAC", IP, 2)]  # done, but wrote no metrics.json
    _write(root / "sweep.json", {"name": "s", "runs": runs})
    md = write_report(root, n_resamples=N).read_text()
    assert "Runs: **1 done**, 1 failed" in md
    assert "metrics.json is missing" in "\n".join(_section(md, "## Failed runs"))
    table = _section(md, f"### {IP}")
    assert _row(table, "SAC")[1:3] == ["1", "0.000 [0.000, 0.000]"]  # one run (a return of 0): no interval


def _continual(matrix):
    record = ContinualEvaluation(["slow", "fast"], "return", True)
    for i, row in enumerate(matrix):
        record.add_row(i, row, step=100 * (i + 1), final=True)
    return {"record": record.to_dict(), "metrics": summary(record)}


def test_continual_and_normalised_scores(tmp_path):
    root = tmp_path / "sweep"
    env = "HalfCheetahBody-v0"
    # forgetting of task 0: p[0, 0] - p[1, 0]
    matrices = {("finetune", 1): [[10.0, np.nan], [2.0, 8.0]], ("finetune", 2): [[12.0, np.nan], [4.0, 9.0]],
                ("ewc", 1): [[10.0, np.nan], [9.0, 8.0]], ("ewc", 2): [[11.0, np.nan], [10.0, 7.0]]}
    runs = []
    for (method, seed), matrix in matrices.items():
        record = _continual(matrix)
        metrics = {"steps": 200, "evals": [[100, 10.0], [200, 5.0]], "final_eval_return": 5.0, "sequence": "two",
                   "final_normalized_score": 40.0 + seed, "continual": {"return": record["metrics"]}}
        runs.append(_run(root, method, env, seed, metrics=metrics, files={"continual_return.json": record}))
    _write(root / "sweep.json", {"name": "continual", "runs": runs})
    md = write_report(root, compare=("ewc", "finetune"), n_resamples=N).read_text()
    label = f"{env} (two)"  # the env with its task sequence
    forgetting = _section(md, "## Continual return: forgetting")
    assert "Lower is better." in forgetting
    table = forgetting[forgetting.index(f"### {label}"):]
    assert _row(table, "finetune")[2].startswith("8.00 [")  # (10 - 2 + 12 - 4) / 2
    assert _row(table, "ewc")[2].startswith("1.00 [")  # (1 + 1) / 2
    normalised = _section(md, "## Normalised score (0 = random, 100 = expert)")
    assert _row(normalised, "finetune")[2].startswith("41.50 [")
    # ewc forgets less: better on forgetting in every pair
    section = _section(md, "## Probability of improvement: P(ewc > finetune)")
    assert _row(section, "Continual return: forgetting")[3].startswith("1.000 [")
    heatmap = f"continual_return_{label.replace(' (', '_').rstrip(')')}.png"
    assert (root / "report" / heatmap).is_file() and f"]({heatmap})" in md


def test_compare_with_a_planned_method_without_finished_runs(tmp_path):
    root = tmp_path / "sweep"
    metrics = {"steps": 10, "evals": [[10, 5.0]], "final_eval_return": 5.0}
    runs = [_run(root, "SAC", IP, seed, metrics=metrics, mpc={"label": "SAC+CEM"})
            for seed in (1, 2)]
    _write(root / "sweep.json", {"name": "s", "runs": runs, "compare": ["SAC", "SAC+CEM"]})
    md = write_report(root, n_resamples=N).read_text()  # no MPC sweep finished yet: no value, no error
    section = _section(md, "## Probability of improvement: P(SAC > SAC+CEM)")
    assert _row(section, "Final evaluation return")[1:] == ["0", "0 / 0", "no env with finished runs of both"]

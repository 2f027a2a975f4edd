"""Plots: confidence bands over seeds, bar labels, FAS bands, and plot_runs over run folders."""

import json

import matplotlib.image
import numpy as np
import pytest

from cadence.evaluation.fas import FASResult
from cadence.evaluation.plots import align_runs, format_value, mean_band, plot_bars, plot_curves, plot_fas, plot_runs


def write_run(root, name, algo="sac", env="InvertedPendulum-v5", seed=1, evals=((1000, 10.0), (2000, 20.0)),
              fas=None):
    run = root / name
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"algo": algo, "env": env, "seed": seed, "steps": evals[-1][0],
                                                  "evals": [list(e) for e in evals]}))
    if fas is not None:
        (run / "fas.json").write_text(json.dumps({"asl": [1, 2, 4], "mean_return": fas, "fas": 0.1, "episodes": 10}))
    return run


T95_2, T95_1 = 4.302652729911275, 12.706204736174698  # Student's t 0.975 quantiles, 2 and 1 degrees of freedom


def test_mean_band_against_hand_computed_values():
    mean, low, high, n = mean_band([[1.0, 10.0], [3.0, 20.0], [5.0, 60.0]])
    # column 0: mean 3, sample std 2, sem 2/sqrt(3); column 1: mean 30, std sqrt(700); 3 seeds: t with 2 dof
    np.testing.assert_allclose(mean, [3.0, 30.0])
    np.testing.assert_allclose(high - mean, [T95_2 * 2 / np.sqrt(3), T95_2 * np.sqrt(700) / np.sqrt(3)])
    np.testing.assert_allclose(mean - low, high - mean)
    assert n.tolist() == [3, 3]
    _, _, normal, _ = mean_band([[1.0], [3.0], [5.0]], z=1.96)  # the normal approximation, when asked for
    np.testing.assert_allclose(normal - 3.0, [1.96 * 2 / np.sqrt(3)])


def test_mean_band_with_one_run_and_missing_points():
    mean, low, high, n = mean_band([[2.0, 4.0]])
    assert mean.tolist() == low.tolist() == high.tolist() == [2.0, 4.0] and n.tolist() == [1, 1]
    mean, low, high, n = mean_band([[1.0, 5.0], [3.0, np.nan]])  # second run stops early
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(high, [2.0 + T95_1 * np.sqrt(2) / np.sqrt(2), 5.0])
    assert n.tolist() == [2, 1]
    with pytest.raises(ValueError, match="at least one run"):
        mean_band([[np.nan]])


def test_align_runs_interpolates_each_run_inside_its_span_only():
    xs, ys = align_runs([[(0, 1.0), (10, 2.0)], [(0, 3.0), (5, 4.0), (10, 5.0), (20, 7.0)]])
    assert xs.tolist() == [0, 5, 10, 20]
    # run 0 has no point at 5 (interpolated: 1.5) and ends at 10 (NaN at 20)
    np.testing.assert_array_equal(ys, [[1.0, 1.5, 2.0, np.nan], [3.0, 4.0, 5.0, 7.0]])
    with pytest.raises(ValueError, match="at least one"):
        align_runs([[]])


def test_seeds_evaluated_a_few_steps_apart_share_points_and_end_without_a_hook():
    # SAC-8 seeds: each evaluation a few steps past the schedule, by seed
    a = [(1000, 10.0), (2003, 20.0), (3001, 30.0)]
    b = [(1004, 12.0), (2000, 22.0), (3006, 90.0)]
    xs, ys = align_runs([a, b])
    np.testing.assert_allclose(xs, [1002.0, 2001.5, 3003.5])
    np.testing.assert_array_equal(ys, [[10.0, 20.0, 30.0], [12.0, 22.0, 90.0]])  # every point holds both seeds
    # runs on different schedules: the last point only one run reaches, a step past the others, is left out
    xs, ys = align_runs([[(0, 1.0), (1000, 2.0), (2000, 3.0)], [(0, 1.0), (500, 2.0), (1000, 3.0), (1500, 4.0),
                                                                 (2003, 9.0)]])
    assert xs.tolist() == [0, 500, 1000, 1500, 2000] and not np.isnan(ys).any()


def test_bands_are_clipped_to_the_values_the_runs_reached(tmp_path, monkeypatch):
    import matplotlib.axes

    seen = []
    original = matplotlib.axes.Axes.fill_between
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between",
                        lambda self, x, low, high, **kw: seen.append((low, high)) or original(self, x, low, high, **kw))
    runs = [[(0, 0.0), (10, 1000.0)], [(0, 40.0), (10, 1000.0)], [(0, 5.0), (10, 960.0)]]  # an InvertedPendulum
    plot_curves({"SRL-8": runs}, tmp_path / "c.png")
    low, high = seen[0]
    assert low.min() >= 0.0 and high.max() <= 1000.0  # mean ± t·SEM alone would pass 1000 and fall below 0


def test_bar_labels_are_readable():
    assert format_value(24815.3) == "24,815"
    assert format_value(1234567) == "1,234,567"
    assert format_value(512.4) == "512"
    assert format_value(42.37) == "42.4"
    assert format_value(3.14159) == "3.14"
    assert format_value(0.0712) == "0.0712"
    assert format_value(0.0) == "0"
    assert format_value(float("nan")) == ""
    assert "e+" not in format_value(2.48e4)


def test_plot_bars_labels_use_thousands_separators(tmp_path, monkeypatch):
    import matplotlib.axes

    seen = []
    original = matplotlib.axes.Axes.bar_label
    monkeypatch.setattr(matplotlib.axes.Axes, "bar_label",
                        lambda self, bars, labels=None, **kw: seen.append(labels) or original(self, bars, labels, **kw))
    plot_bars({"fp32": {"cadence": 24815.0, "SB3": 9876.5}}, tmp_path / "bars.png", "steps / s", "t")
    assert seen == [["24,815"], ["9,876"]]
    assert (tmp_path / "bars.png").is_file()


def test_plot_curves_and_fas_write_pngs(tmp_path):
    curves = {"A": [[(0, 1.0), (10, 2.0)], [(0, 2.0), (10, 4.0)]], "B": [[(0, 0.5), (10, 1.5)]]}
    path = plot_curves(curves, tmp_path / "curves.png", title="t", hline=3.0)
    assert matplotlib.image.imread(path).shape[-1] in (3, 4)
    res = FASResult("InvertedPendulum-v5", [1, 2], [[10.0, 20.0], [5.0, 7.0]], 0.01, 1000.0, 0.0)
    one = FASResult("InvertedPendulum-v5", [1, 2], [[12.0], [6.0]], 0.01, 1000.0, 0.0)
    assert plot_fas({"a": res}, tmp_path / "fas.png").is_file()
    assert plot_fas({"a": res, "b": one}, tmp_path / "fas2.png", band={"a": "±1 std over 2 seeds"}).is_file()


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, kept open instead of saved."""
    from cadence.evaluation import plots

    kept = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: kept.append(fig) or path)
    yield kept
    import matplotlib.pyplot as plt

    for fig in kept:
        plt.close(fig)


def legend_text(fig):
    legend = fig.axes[0].get_legend()
    return legend.get_title().get_text(), [t.get_text() for t in legend.get_texts()]


def test_every_band_is_named(figures):
    res = FASResult("InvertedPendulum-v5", [1, 2], [[10.0, 20.0, 30.0], [5.0, 7.0, 9.0]], 0.01, 1000.0, 0.0)
    plot_fas({"SAC": res}, "unused.png")
    title, labels = legend_text(figures[-1])
    assert "±1 std over 3 episodes" in title and labels == ["SAC (FAS 0.010)"]
    assert "3 episodes per ASL" in figures[-1].axes[0].get_title()
    plot_fas({"SAC": res}, "unused.png", partial=True)  # part of the paper's grid: no FAS, and the legend says so
    assert legend_text(figures[-1])[1] == ["SAC (partial-grid score 0.010)"]
    plot_fas({"SAC": res}, "unused.png", episodes=10)
    assert "±1 std over 10 episodes" in legend_text(figures[-1])[0]
    seeds = FASResult("InvertedPendulum-v5", [1, 2], [[10.0, 20.0], [5.0, 7.0]], 0.01, 1000.0, 0.0)
    plot_fas({"SAC": res, "SRL": seeds}, "unused.png", band={"SRL": "±1 std over 2 seeds"})
    title, labels = legend_text(figures[-1])  # different bands: each entry names its own
    assert labels == ["SAC (FAS 0.010); shaded ±1 std over 3 episodes", "SRL (FAS 0.010); shaded ±1 std over 2 seeds"]

    plot_curves({"A": [[(0, 1.0), (1, 2.0)], [(0, 3.0), (1, 4.0)]], "B": [[(0, 1.0), (1, 1.0)]]}, "unused.png",
                hline=1000.0)
    title, labels = legend_text(figures[-1])
    assert "95% t-interval" in title and "clipped" in title
    assert labels == ["A: mean ± 95% t-interval, n = 2 seeds", "B (1 seed)", "target 1,000"]


def test_plot_runs_groups_run_folders(tmp_path, monkeypatch):
    runs = [write_run(tmp_path, "a1", seed=1, evals=[(1000, 10.0), (2000, 30.0)], fas=[100.0, 50.0, 5.0]),
            write_run(tmp_path, "a2", seed=2, evals=[(1000, 20.0), (2000, 50.0)], fas=[200.0, 70.0, 5.0]),
            write_run(tmp_path, "b1", algo="srl", seed=1, evals=[(1000, 5.0), (2000, 6.0)], fas=[90.0, 80.0, 60.0])]
    out = plot_runs(runs, group="algo", what="eval", out=tmp_path / "eval.png")
    assert out == tmp_path / "eval.png" and matplotlib.image.imread(out).ndim == 3
    assert plot_runs(runs, group="seed", what="fas", out=tmp_path / "fas.png").is_file()
    monkeypatch.chdir(tmp_path)
    assert plot_runs(runs, group="env").resolve() == (tmp_path / "plot_eval_by_env.png").resolve()
    assert (tmp_path / "plot_eval_by_env.png").is_file()


def test_plot_runs_title_names_env_seeds_and_steps(tmp_path, monkeypatch):
    import matplotlib.axes

    titles = []
    original = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, text, *a, **kw: titles.append(text) or original(self, text, *a, **kw))
    runs = [write_run(tmp_path, f"r{s}", seed=s, evals=[(1000, 1.0), (20000, 2.0)]) for s in (1, 2, 3)]
    plot_runs(runs, out=tmp_path / "p.png")
    assert titles == ["InvertedPendulum-v5: learning curves by algo (3 seeds, 20,000 steps)"]


def test_plot_runs_errors(tmp_path):
    good = write_run(tmp_path, "good")
    with pytest.raises(ValueError, match="not a folder"):
        plot_runs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no metrics.json"):
        plot_runs([tmp_path / "empty"])
    with pytest.raises(ValueError, match="has no fas.json"):
        plot_runs([good], what="fas")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text(json.dumps({"algo": "sac", "evals": []}))
    with pytest.raises(ValueError, match="lacks env, seed"):
        plot_runs([tmp_path / "broken"])
    with pytest.raises(ValueError, match="group must be one of"):
        plot_runs([good], group="lr")
    with pytest.raises(ValueError, match="what must be"):
        plot_runs([good], what="loss")
    with pytest.raises(ValueError, match="no run folders"):
        plot_runs([])

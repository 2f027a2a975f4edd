"""Plots written next to results: return against ASL, learning curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cadence.evaluation.fas import FASResult
from cadence.io import atomic_write


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_fas(results: Mapping[str, FASResult], path: str | Path, title: str | None = None) -> Path:
    """Mean return (+/- std over episodes, clipped to the observed range) against ASL, one line per result."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, res in results.items():
        mean, std, returns = res.mean, res.std, np.asarray(res.returns)
        ax.plot(res.asl, mean, marker="o", ms=3, label=f"{label} (FAS {res.fas:.3f})")
        # +/- std, kept within the returns actually observed (a return cannot exceed its episode's best)
        low = np.maximum(mean - std, returns.min(axis=1))
        high = np.minimum(mean + std, returns.max(axis=1))
        ax.fill_between(res.asl, low, high, alpha=0.2)
    env_id = next(iter(results.values())).env_id if results else ""
    ax.set_xlabel("action-sequence length (ASL)")
    ax.set_ylabel("return")
    ax.set_title(title or f"{env_id}: return against decision interval")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_curves(curves: Mapping[str, Sequence[Sequence[tuple[float, float]]]], path: str | Path,
                xlabel: str = "env steps", ylabel: str = "return", title: str = "",
                hline: float | None = None) -> Path:
    """Learning curves: for each label, one or more runs of (x, y) points; runs are drawn thin."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, runs) in enumerate(curves.items()):
        color = f"C{i}"
        for j, run in enumerate(runs):
            xs, ys = np.asarray(run).T
            ax.plot(xs, ys, color=color, alpha=0.8, lw=1.2, label=label if j == 0 else None)
    if hline is not None:
        ax.axhline(hline, color="k", ls="--", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_bars(groups: Mapping[str, Mapping[str, float]], path: str | Path, ylabel: str, title: str = "") -> Path:
    """Grouped bars: one group per measurement, one bar per peer (e.g. cadence against SB3), labelled."""
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(groups), 3.6))
    peers = list(dict.fromkeys(p for g in groups.values() for p in g))
    width = 0.8 / len(peers)
    for i, peer in enumerate(peers):
        xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(groups))]
        values = [g.get(peer, np.nan) for g in groups.values()]
        bars = ax.bar(xs, values, width, label=peer, color=f"C{i}")
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)

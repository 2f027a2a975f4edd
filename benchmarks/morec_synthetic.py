"""MOREC's synthetic illustration: does the dynamics reward recover transitions the data never covered?

Two 1-D systems with known nonlinear dynamics, a in [-1, 1] and transition noise of std 0.01:
- "saturating": s' = s + 0.5 tanh(2 s) + 0.3 a; the data already shows the saturation, so the uncovered
  transitions continue a structure seen in the data;
- "bending": s' = s + 0.4 sin(s) + 0.3 a; beyond the data the curve turns back, which nothing in the data shows.
The offline data covers only s in [-1.5, 1.5]. A GaussianEnsemble (7 members, 5 elites) and the dynamics reward
(cadence's adversarial version, DynamicsReward) are fitted on it. In the uncovered region 1.5 <= |s| <= 3.5 the
script compares, against the true noise-free next state:
- the plain model: the elites' mean, and one random elite's Gaussian sample (what MBPO/MOPO rollouts take);
- MOREC: the argmax of the dynamics reward over 10 candidates (each elite's Gaussian sampled twice);
- the best of those 10 candidates (an oracle filter: the most any filter over them could reach).
It also reports MOREC's keep rate (reward >= 0.6) and the error of kept against dropped transitions (with the
plain model's error on the same kept rows), and the same numbers in the covered region.

Writes ``benchmarks/results/morec_synthetic.json`` (per system: per seed and mean) and ``morec_synthetic.png``: one
row per system, on the left the dynamics reward over (s, s' - s) at a = 0 with the data's coverage shaded, on the
right true, plain and filtered next states across s. Takes about two minutes on one CPU thread.

    python benchmarks/morec_synthetic.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch
from common import RESULTS

from cadence.evaluation.plots import save_figure
from cadence.io import atomic_write_json
from cadence.world_models import EnsembleConfig, EnsembleTrainer, GaussianEnsemble
from cadence.world_models.dynamics_reward import DynamicsReward, DynamicsRewardConfig
from cadence.world_models.filters import FilterConfig, TransitionFilter, sample_candidates

COVERED = 1.5  # data: |s| <= 1.5
FAR = 3.5  # uncovered test region: 1.5 <= |s| <= 3.5
NOISE = 0.01
MODEL = EnsembleConfig(hidden_sizes=(64, 64, 64), batch_size=256, lr=2e-3, max_epochs=40)  # 7 members, 5 elites
# 40 discriminators (every 10th of the last 400 checkpoints, one per 5 steps: the last 2000 steps)
REWARD = DynamicsRewardConfig(hidden_sizes=(128, 128), lr=1e-3, steps=2500, checkpoint_interval=5)
FILTER = FilterConfig()  # 2 samples per elite, argmax, threshold 0.6


Dynamics = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: name -> (formula, noise-free next state)
SYSTEMS: dict[str, tuple[str, Dynamics]] = {
    "saturating": ("s' = s + 0.5 tanh(2 s) + 0.3 a", lambda s, a: s + 0.5 * torch.tanh(2 * s) + 0.3 * a),
    "bending": ("s' = s + 0.4 sin(s) + 0.3 a", lambda s, a: s + 0.4 * torch.sin(s) + 0.3 * a),
}


def offline_data(true_next: Dynamics, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    obs = (torch.rand(n, 1, generator=g) * 2 - 1) * COVERED
    act = torch.rand(n, 1, generator=g) * 2 - 1
    next_obs = true_next(obs, act) + NOISE * torch.randn(n, 1, generator=g)
    return {"obs": obs, "action": act, "next_obs": next_obs, "reward": -obs.squeeze(-1) ** 2}


def test_states(n: int, g: torch.Generator, covered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, a) uniformly in the covered region, or in the uncovered one on both sides."""
    if covered:
        obs = (torch.rand(n, 1, generator=g) * 2 - 1) * COVERED
    else:
        side = torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.0, 1.0)
        obs = side * (COVERED + torch.rand(n, 1, generator=g) * (FAR - COVERED))
    return obs, torch.rand(n, 1, generator=g) * 2 - 1


@torch.no_grad()
def compare(true_next: Dynamics, model: GaussianEnsemble, reward: DynamicsReward, obs: torch.Tensor,
            act: torch.Tensor, g: torch.Generator) -> dict[str, float | None]:
    """Mean absolute errors against the true next state, keep rate and the error of kept/dropped rows."""
    true = true_next(obs, act)
    mean, _ = model.elite_mean(obs, act)
    mean_err = (mean - true).abs().squeeze(-1)
    candidates, _ = sample_candidates(model, obs, act, FILTER.samples_per_elite, g)  # [C, B, 1]
    cand_err = (candidates - true).abs().squeeze(-1)  # [C, B]
    sample_err = cand_err[torch.randint(len(cand_err), (len(obs),), generator=g), torch.arange(len(obs))]
    step = TransitionFilter(model, reward, FILTER, g).filter(obs, act)
    filtered_err = (step.next_obs - true).abs().squeeze(-1)
    keep = step.keep
    part = lambda err, rows: err[rows].mean().item() if rows.any() else None  # noqa: E731
    return {
        "mae_elite_mean": mean_err.mean().item(),
        "mae_elite_sample": sample_err.mean().item(),
        "mae_filtered": filtered_err.mean().item(),
        "mae_best_candidate": cand_err.min(0).values.mean().item(),
        "keep_rate": keep.float().mean().item(),
        "mae_filtered_kept": part(filtered_err, keep),
        "mae_elite_mean_on_kept": part(mean_err, keep),
        "mae_filtered_dropped": part(filtered_err, ~keep),
        "reward_true": reward.reward(obs, act, true).mean().item(),
        "reward_chosen": step.dynamics_reward.mean().item(),
    }


def run_seed(true_next: Dynamics, seed: int, n_data: int,
             n_test: int) -> tuple[dict, GaussianEnsemble, DynamicsReward, dict]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    data = offline_data(true_next, n_data, g)
    model = GaussianEnsemble(1, 1, MODEL)
    model_fit = EnsembleTrainer(model, g).fit(data)
    reward = DynamicsReward(1, 1, REWARD)
    reward_fit = reward.fit(data, model, generator=g)
    result = {"model_fit": model_fit, "reward_fit": reward_fit}
    for region, covered in (("covered", True), ("uncovered", False)):
        result[region] = compare(true_next, model, reward, *test_states(n_test, g, covered), g)
    return result, model, reward, data


@torch.no_grad()
def plot_system(axes, name: str, model: GaussianEnsemble, reward: DynamicsReward, data: dict, seed: int) -> None:
    """Left: the dynamics reward over (s, s' - s) at a = 0; right: true, plain and MOREC next states at a = 0."""
    formula, true_next = SYSTEMS[name]
    left, right = axes
    g = torch.Generator().manual_seed(10_000 + seed)
    s = torch.linspace(-FAR, FAR, 141).unsqueeze(-1)
    a = torch.zeros_like(s)
    true = true_next(s, a)

    d = torch.linspace(-1.0, 1.0, 121)
    ss, dd = torch.meshgrid(s.squeeze(-1), d, indexing="xy")
    flat_s = ss.reshape(-1, 1)
    r = reward.reward(flat_s, torch.zeros_like(flat_s), flat_s + dd.reshape(-1, 1)).reshape(ss.shape)
    mesh = left.pcolormesh(ss.numpy(), dd.numpy(), r.numpy(), shading="auto", cmap="viridis",
                           vmax=float(np.quantile(r.numpy(), 0.99)))
    plt.colorbar(mesh, ax=left, label="-log(1 - mean D)")
    left.contour(ss.numpy(), dd.numpy(), r.numpy(), levels=[FILTER.threshold], colors="w", linewidths=0.8,
                 linestyles="--")
    left.plot(s, true - s, color="r", lw=1.5, label="true s' - s")
    left.axvspan(-COVERED, COVERED, color="w", alpha=0.15, label="data coverage")
    left.set_xlabel("s")
    left.set_ylabel("s' - s")
    left.set_title(f"{name}: dynamics reward at a = 0 (dashes: {FILTER.threshold})", fontsize=10)
    left.legend(loc="lower right", fontsize=7)

    mean, _ = model.elite_mean(s, a)
    candidates, _ = sample_candidates(model, s, a, FILTER.samples_per_elite, g)
    step = TransitionFilter(model, reward, FILTER, g).filter(s, a)
    right.axvspan(-COVERED, COVERED, color="0.88", label="data coverage")
    right.scatter(data["obs"][:300], (data["next_obs"] - data["obs"])[:300], s=2, color="0.55", label="data (any a)")
    for c in range(len(candidates)):
        right.scatter(s, candidates[c] - s, s=4, color="C0", alpha=0.25, label="candidates" if c == 0 else None)
    right.plot(s, true - s, color="k", lw=2, label="true")
    right.plot(s, mean - s, color="C1", lw=1.5, label="plain model (elite mean)")
    kept, dropped = step.keep, ~step.keep
    right.scatter(s[kept], (step.next_obs - s)[kept], s=14, color="C2", label="MOREC argmax (kept)", zorder=3)
    right.scatter(s[dropped], (step.next_obs - s)[dropped], s=14, facecolors="none", edgecolors="C3",
                  label="MOREC argmax (rollout ends)", zorder=3)
    right.set_xlabel("s")
    right.set_ylabel("s' - s")
    right.set_ylim(-1.0, 1.0)
    right.set_title(f"{name}: {formula}, next states at a = 0", fontsize=10)
    right.legend(loc="lower right", fontsize=6.5, ncol=2)


def mean_over_seeds(seeds: dict) -> dict:
    """Per region and metric, the mean over the seeds that have a value (None where none has)."""
    first = next(iter(seeds.values()))
    out: dict = {}
    for region in ("covered", "uncovered"):
        out[region] = {}
        for key in first[region]:
            values = [r[region][key] for r in seeds.values() if r[region][key] is not None]
            out[region][key] = float(np.mean(values)) if values else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--data", type=int, default=4000, help="offline transitions")
    parser.add_argument("--test", type=int, default=4000, help="test (s, a) per region")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out: dict = {
        "data_region": f"|s| <= {COVERED}",
        "uncovered_region": f"{COVERED} <= |s| <= {FAR}",
        "transition_noise_std": NOISE,
        "n_data": args.data,
        "n_test_per_region": args.test,
        "model": {"hidden_sizes": list(MODEL.hidden_sizes), "n_members": MODEL.n_members, "n_elites": MODEL.n_elites},
        "dynamics_reward": {"hidden_sizes": list(REWARD.hidden_sizes), "lr": REWARD.lr, "steps": REWARD.steps,
                            "history": REWARD.history, "every": REWARD.every,
                            "checkpoint_interval": REWARD.checkpoint_interval,
                            "negative_noise": list(REWARD.negative_noise)},
        "filter": {"samples_per_elite": FILTER.samples_per_elite, "mode": FILTER.mode,
                   "threshold": FILTER.threshold},
        "systems": {},
    }
    fig, axes = plt.subplots(len(args.systems), 2, figsize=(12, 4.4 * len(args.systems)), squeeze=False)
    for row, name in enumerate(args.systems):
        formula, true_next = SYSTEMS[name]
        seeds, first = {}, None
        for seed in args.seeds:
            result, model, reward, data = run_seed(true_next, seed, args.data, args.test)
            seeds[str(seed)] = result
            first = first or (model, reward, data, seed)
            u = result["uncovered"]
            print(f"{name} seed {seed}: uncovered MAE elite mean {u['mae_elite_mean']:.4f}, elite sample "
                  f"{u['mae_elite_sample']:.4f}, MOREC filtered {u['mae_filtered']:.4f}, best candidate "
                  f"{u['mae_best_candidate']:.4f}; keep {u['keep_rate']:.2f}", flush=True)
        mean = mean_over_seeds(seeds)
        u = mean["uncovered"]
        plain = min(u["mae_elite_mean"], u["mae_elite_sample"])
        out["systems"][name] = {
            "dynamics": formula,
            "seeds": seeds,
            "mean": mean,
            "uncovered_lower_mae": "MOREC filtered" if u["mae_filtered"] < plain else "plain model",
        }
        plot_system(axes[row], name, *first)
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"{name}, mean over seeds, uncovered: elite mean {fmt(u['mae_elite_mean'])}, elite sample "
              f"{fmt(u['mae_elite_sample'])}, filtered {fmt(u['mae_filtered'])}, best candidate "
              f"{fmt(u['mae_best_candidate'])}, keep {u['keep_rate']:.2f} (kept {fmt(u['mae_filtered_kept'])} vs "
              f"plain {fmt(u['mae_elite_mean_on_kept'])} on the same rows; dropped {fmt(u['mae_filtered_dropped'])})")
    fig.suptitle(f"MOREC synthetic task: {args.data:,} offline transitions, only in |s| <= {COVERED}; ensemble of "
                 f"{MODEL.n_members} ({MODEL.n_elites} elites), dynamics reward trained {REWARD.steps:,} steps;\n"
                 f"one seed shown ({args.seeds[0]}) of {len(args.seeds)}; morec_synthetic.json has every seed and "
                 "the mean over seeds")
    fig.tight_layout()
    out["wall_s"] = round(time.perf_counter() - start, 1)
    atomic_write_json(RESULTS / "morec_synthetic.json", out)
    save_figure(fig, RESULTS / "morec_synthetic.png")
    print(f"wrote {RESULTS / 'morec_synthetic.json'} and .png in {out['wall_s']} s")


if __name__ == "__main__":
    main()

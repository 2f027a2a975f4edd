"""stable-baselines3 SAC on the same task and budget as ``sac_learning.py``: the peer for cadence's learning curve.

Same hyperparameters as cadence's SAC defaults (docs/ARCHITECTURE.md, "SAC": hidden [256, 256], lr 3e-4, batch 256,
gamma 0.99, tau 0.005, automatic alpha, buffer 1e6, 10k random steps, one gradient step per env step) and the same
evaluation: the mean return of the deterministic policy over 10 episodes every 10k steps, episode i reset
with seed + 100000 + i. The curve is written to ``benchmarks/results/sb3_sac_learning.json`` (per env and
seed) after every evaluation, so a cut-short run still leaves its partial curve, and plotted beside cadence's
curves from ``sac_learning.json`` in ``sac_vs_sb3_<env>.png``.

    python benchmarks/sb3_sac_learning.py --env Hopper-v5 --seed 1 --steps 300000
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
import torch
from common import RESULTS
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback

from cadence.evaluation.plots import plot_curves
from cadence.io import atomic_write_json


class EvalCurve(BaseCallback):
    """Evaluates every ``every`` steps like cadence's loop and saves the curve after each evaluation."""

    def __init__(self, env_id: str, seed: int, every: int, episodes: int, steps: int):
        super().__init__()
        self.env_id, self.seed, self.every, self.episodes, self.steps = env_id, seed, every, episodes, steps
        self.eval_env = gym.make(env_id)
        self.curve: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            returns = []
            for i in range(self.episodes):
                obs, _ = self.eval_env.reset(seed=self.seed + 100_000 + i)
                done, total = False, 0.0
                while not done:
                    action, _ = self.model.predict(obs, deterministic=True)
                    obs, reward, terminated, truncated, _ = self.eval_env.step(action)
                    total += float(reward)
                    done = terminated or truncated
                returns.append(total)
            self.curve.append((self.num_timesteps, float(np.mean(returns))))
            print(f"step {self.num_timesteps:>8,}  eval return {self.curve[-1][1]:8.1f}", flush=True)
            self.save()
        return True

    def save(self) -> None:
        path = RESULTS / "sb3_sac_learning.json"
        merged = json.loads(path.read_text()) if path.is_file() else {}
        merged.setdefault(self.env_id, {})[str(self.seed)] = {
            "seed": self.seed, "budget": self.steps, "steps_done": self.num_timesteps, "curve": self.curve,
            "best_eval_return": max(r for _, r in self.curve), "library": "stable-baselines3",
            "settings": "hidden [256, 256], lr 3e-4, batch 256, gamma 0.99, tau 0.005, auto alpha, buffer 1e6, "
                        "10k random steps, train_freq 1, gradient_steps 1",
        }
        atomic_write_json(path, merged)
        plot_against_cadence(self.env_id)


def plot_against_cadence(env_id: str) -> None:
    """cadence's stored seeds (``sac_learning.json``) and SB3's, each as mean and 95% band over its seeds, with
    the issue's target."""
    ours = json.loads((RESULTS / "sac_learning.json").read_text()).get(env_id, {}) if (
        RESULTS / "sac_learning.json").is_file() else {}
    theirs = json.loads((RESULTS / "sb3_sac_learning.json").read_text()).get(env_id, {})
    ours_seeds, theirs_seeds = list(ours.get("curves", {})), list(theirs)
    curves = {"cadence SAC": list(ours.get("curves", {}).values()),
              "SB3 SAC": [run["curve"] for run in theirs.values()]}
    budget = max([ours.get("steps", 0), *(run["budget"] for run in theirs.values())])
    target = ours.get("target_return")
    plot_curves({k: v for k, v in curves.items() if v}, RESULTS / f"sac_vs_sb3_{env_id}.png",
                ylabel="evaluation return",
                title=f"{env_id}: cadence SAC (seeds {', '.join(ours_seeds)}) and stable-baselines3 SAC "
                      f"(seed{'s' if len(theirs_seeds) != 1 else ''} {', '.join(theirs_seeds)}), same settings, "
                      f"{budget:,} env steps;\neach point: mean of 10 eval episodes",
                hline=target, hline_label=f"target {target:,.0f}" if target else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the stored results")
    args = parser.parse_args()
    if args.plot_only:
        plot_against_cadence(args.env)
        return
    torch.set_num_threads(args.threads)
    model = SAC("MlpPolicy", gym.make(args.env), learning_rate=3e-4, buffer_size=1_000_000, learning_starts=10_000,
                batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, ent_coef="auto",
                policy_kwargs={"net_arch": [256, 256]}, seed=args.seed, device="cpu", verbose=0)
    model.learn(total_timesteps=args.steps, callback=EvalCurve(args.env, args.seed, 10_000, 10, args.steps))


if __name__ == "__main__":
    main()

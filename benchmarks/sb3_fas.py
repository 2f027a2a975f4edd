"""An independent FAS check: stable-baselines3 SAC, swept for FAS through cadence (``cadence.agents.sb3``).

Trains SB3 SAC (SB3's defaults, except ``learning_starts`` = 1000 as in ``srl_fas.py``'s InvertedPendulum
settings) for ``--steps`` env steps, saves it under ``--runs``, loads it back with
:func:`cadence.agents.sb3.load_sb3_policy` and runs cadence's FAS sweep on it (full ASL grid, ``--episodes`` per
ASL). Like cadence's SAC-1, the SB3 policy decides once per state and repeats its action over the sequence, so
its FAS is comparable with SAC-1's in ``srl_fas.json`` (0.025-0.071 over 3 seeds at 20k steps on
InvertedPendulum-v5). Writes ``benchmarks/results/sb3_fas.json`` (per env) and ``sb3_fas_<env>.png`` with
cadence's stored SAC-1 mean return per ASL beside SB3's.

    python benchmarks/sb3_fas.py --env InvertedPendulum-v5 --steps 20000 --seeds 1 2 3
    python benchmarks/sb3_fas.py --env InvertedPendulum-v5 --plot-only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from common import RESULTS, merge_result
from stable_baselines3.common.callbacks import BaseCallback

from cadence.agents.sb3 import load_sb3_policy
from cadence.evaluation.fas import ASL_GRID, FASResult
from cadence.evaluation.plots import plot_fas
from cadence.runs import evaluate_policy_fas

LEARNING_STARTS = {"InvertedPendulum-v5": 1000, "Reacher-v5": 2000, "Hopper-v5": 5000}  # as srl_fas.py's


class Progress(BaseCallback):
    """Prints the step count and the mean return of the last training episodes every ``every`` steps."""

    def __init__(self, every: int, start: float):
        super().__init__()
        self.every, self.start = every, start

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            recent = [e["r"] for e in self.model.ep_info_buffer]
            print(f"step {self.num_timesteps:>7,}  last episodes' return {np.mean(recent) if recent else 0:7.1f}  "
                  f"{time.perf_counter() - self.start:6.0f} s", flush=True)
        return True


def cadence_sac1(env_id: str) -> tuple[FASResult, dict] | None:
    """cadence SAC-1's stored per-seed mean return per ASL (``srl_fas.json``) as one result, returns = seeds."""
    path = RESULTS / "srl_fas.json"
    entry = json.loads(path.read_text()).get(env_id) if path.is_file() else None
    if not entry or "SAC-1" not in entry["methods"]:
        return None
    sac = entry["methods"]["SAC-1"]
    per_seed = sac["return_per_asl"]
    returns = np.asarray(list(per_seed.values())).T.tolist()  # [asl, seed]
    fas = FASResult(env_id, list(ASL_GRID), returns, sac["fas_mean"], 0.0, 0.0)
    return fas, {"steps": entry["steps"], "seeds": sorted(per_seed, key=int), "fas": sac["fas"],
                 "fas_mean": sac["fas_mean"], "mean_return_per_asl": sac["mean_return_per_asl"],
                 "episodes_per_asl": entry.get("fas_episodes_per_asl")}


def result_key(env_id: str, learning_starts: int | None) -> str:
    """Where a run's results go in ``sb3_fas.json``: the env id, or ``<env> learning_starts=N`` for an override."""
    return env_id if learning_starts is None else f"{env_id} learning_starts={learning_starts}"


def plot(env_id: str, learning_starts: int | None = None) -> Path:
    """SB3 SAC's return against ASL (mean over its seeds) beside cadence SAC-1's stored seeds."""
    key = result_key(env_id, learning_starts)
    entry = json.loads((RESULTS / "sb3_fas.json").read_text())[key]
    runs = entry["per_seed"]
    first = next(iter(runs.values()))
    if len(runs) == 1:
        ours = FASResult(env_id, first["asl"], first["returns"], first["fas"], first["r_max"], first["shift"])
        band = f"±1 std over {first['episodes']} episodes"
    else:
        returns = np.asarray([r["mean_return"] for r in runs.values()]).T.tolist()  # [asl, seed]
        ours = FASResult(env_id, first["asl"], returns, entry["fas_mean"], first["r_max"], first["shift"])
        band = f"±1 std over the {len(runs)} seeds' mean returns"
    label = f"SB3 SAC (learning_starts {first['learning_starts']}), seeds {', '.join(runs)}" \
        if "learning_starts" in first else f"SB3 SAC, seeds {', '.join(runs)}"
    results, bands = {label: ours}, {label: band}
    stored = cadence_sac1(env_id)
    if stored is not None:
        result, info = stored
        cadence_label = f"cadence SAC-1, seeds {', '.join(info['seeds'])} (srl_fas.json)"
        results[cadence_label] = result
        bands[cadence_label] = f"±1 std over the {len(info['seeds'])} seeds' mean returns"
    stem = f"sb3_fas_{env_id}" + ("" if learning_starts is None else f"_ls{learning_starts}")
    return plot_fas(results, RESULTS / f"{stem}.png", band=bands,
                    title=f"{env_id}: SB3 SAC ({len(runs)} seeds) against cadence SAC-1, {first['steps']:,} env "
                          f"steps each,\n{first['episodes']} episodes per ASL; FAS of the mean curves")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="seeds to train and sweep (kept per seed)")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--episodes", type=int, default=10, help="FAS episodes per ASL")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--learning-starts", type=int, default=None,
                        help="SB3's learning_starts (default: srl_fas.py's per-env value; SB3's own default is 100)")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_sb3_fas"))
    parser.add_argument("--retrain", action="store_true", help="train again even if the model file exists")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the stored results")
    args = parser.parse_args()
    if args.plot_only:
        print(f"wrote {plot(args.env, args.learning_starts)}")
        return
    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        run_seed(args, seed)
    print(f"wrote {RESULTS / 'sb3_fas.json'} and {plot(args.env, args.learning_starts)}")


def run_seed(args: argparse.Namespace, seed: int) -> None:
    """Train (or reuse) one SB3 SAC model, sweep it, and record it under its seed."""
    args.seed = seed
    learning_starts = LEARNING_STARTS.get(args.env, 100) if args.learning_starts is None else args.learning_starts
    suffix = "" if args.learning_starts is None else f"_ls{learning_starts}"
    out_dir = args.runs / f"sb3_sac_{args.env}_s{args.seed}_{args.steps}{suffix}"
    model_path = out_dir / "model.zip"
    train_s = None
    if args.retrain or not model_path.is_file():
        start = time.perf_counter()
        model = stable_baselines3.SAC("MlpPolicy", gym.make(args.env), learning_starts=learning_starts,
                                      seed=args.seed, device="cpu", verbose=0)
        model.learn(total_timesteps=args.steps, callback=Progress(2000, start))
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(model_path)
        train_s = round(time.perf_counter() - start, 1)
        print(f"trained SB3 SAC on {args.env} for {args.steps:,} steps in {train_s} s -> {model_path}", flush=True)
    policy = load_sb3_policy(model_path, args.env)
    start = time.perf_counter()
    result = evaluate_policy_fas(policy, args.env, out_dir, "SB3 SAC", ASL_GRID, args.episodes, seed=0)
    sweep_s = round(time.perf_counter() - start, 1)
    stored = cadence_sac1(args.env)
    summary = {
        "env": args.env, "library": f"stable-baselines3 {stable_baselines3.__version__}", "algo": policy.algo,
        "seed": args.seed, "steps": args.steps, "episodes": args.episodes, "fas_seed": 0,
        "settings": f"SB3 SAC defaults (MlpPolicy [256, 256], lr 3e-4, batch 256, buffer 1e6, gamma 0.99, "
                    f"tau 0.005, auto entropy), learning_starts {learning_starts}",
        "learning_starts": learning_starts,
        "open_loop": "one action per decision, repeated over the sequence (as cadence SAC.act_sequence)",
        "model": str(model_path), "fas": result.fas, "asl": result.asl, "mean_return": result.mean.tolist(),
        "returns": result.returns, "r_max": result.r_max, "shift": result.shift,
        "asl1_return": float(result.mean[0]), "sweep_s": sweep_s,
        "cadence_sac1_srl_fas": stored[1] if stored else None,
    }
    path = RESULTS / "sb3_fas.json"
    key = result_key(args.env, args.learning_starts)
    entry = json.loads(path.read_text()).get(key, {}) if path.is_file() else {}
    per_seed = entry.get("per_seed", {})
    previous = per_seed.get(str(seed), {})
    if train_s is not None:
        summary["train_s"] = train_s
    elif previous.get("model") == str(model_path) and "train_s" in previous:  # the run that made the model
        summary["train_s"] = previous["train_s"]
    per_seed[str(seed)] = summary
    fas = [r["fas"] for r in per_seed.values()]
    merge_result("sb3_fas", key, {"per_seed": dict(sorted(per_seed.items())), "fas_mean": float(np.mean(fas)),
                                       "fas_std": float(np.std(fas)), "seeds": sorted(int(k) for k in per_seed)})
    print(f"{args.env} seed {seed}: SB3 SAC FAS {result.fas:.3f} (ASL-1 return {result.mean[0]:.1f}); cadence SAC-1 "
          + (f"FAS {stored[1]['fas_mean']:.3f} mean, per seed {stored[1]['fas']}" if stored else "not stored"),
          flush=True)


if __name__ == "__main__":
    main()

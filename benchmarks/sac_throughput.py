"""cadence SAC against stable-baselines3 SAC: env + gradient steps per second, same run, same machine.

Both use Hopper-v5, hidden [256, 256], batch 256, lr 3e-4, gamma 0.99, tau 0.005, automatic alpha,
one gradient step per env step and the same torch thread count. Each is timed over ``--steps`` steps
after ``--warmup`` random steps (the warm-up, which has no gradient steps, is not timed).
cadence is timed twice: in float32 like SB3, and with ``train.precision=bf16-mixed`` (bfloat16 matrix
products under autocast; different numerics, so it is reported beside the like-for-like ratio, not instead).

    python benchmarks/sac_throughput.py [--steps 3000] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, cpu_name


def time_cadence(env_id: str, warmup: int, steps: int, seed: int, precision: str = "fp32") -> float:
    from cadence.agents import SAC, SACConfig
    from cadence.envs import make
    from cadence.loops import TrainState, learn
    from cadence.replay import ReplayBuffer

    torch.manual_seed(seed)
    env = make(env_id, seed=seed)
    agent = SAC(env.observation_space, env.action_space, SACConfig(learning_starts=warmup))
    buffer = ReplayBuffer(warmup + steps, env.observation_space.shape, env.action_space.shape)
    obs, _ = env.reset(seed=seed)
    state = TrainState()
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        action = env.action_space.sample() if i < warmup else agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated, truncated)
        obs = env.reset()[0] if terminated or truncated else next_obs
        if i >= warmup:  # the training loop's own gradient step (batch 256, autocast per update)
            learn(agent, buffer, 1, state, Path("."), precision)
    return steps / (time.perf_counter() - t0)


def time_sb3(env_id: str, warmup: int, steps: int, seed: int) -> float:
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.callbacks import BaseCallback

    class Timer(BaseCallback):
        t0: float | None = None

        def _on_step(self) -> bool:
            if self.num_timesteps == warmup + 1:
                self.t0 = time.perf_counter()
            return True

    model = SB3SAC("MlpPolicy", gym.make(env_id), learning_rate=3e-4, buffer_size=warmup + steps,
                   learning_starts=warmup, batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1,
                   ent_coef="auto", policy_kwargs={"net_arch": [256, 256]}, seed=seed, device="cpu", verbose=0)
    timer = Timer()
    model.learn(total_timesteps=warmup + steps + 1, callback=timer)
    return steps / (time.perf_counter() - timer.t0)


def plot(result: dict) -> Path:
    """Median training rates of cadence SAC (fp32, bf16-mixed) and SB3 SAC, from a ``sac_throughput.json`` result."""
    from cadence.evaluation.plots import plot_bars

    c, b, s = result["cadence_steps_per_s"], result["cadence_bf16_mixed_steps_per_s"], result["sb3_steps_per_s"]
    return plot_bars({result["env"]: {"cadence SAC": c, "cadence SAC bf16-mixed": b, "SB3 SAC": s}},
                     RESULTS / "sac_throughput.png", "env + gradient steps / s (median)",
                     f"{result['env']} SAC training, {result['torch_threads']} torch threads, median of "
                     f"{result['repeats']} repeats of {result['timed_steps']:,} steps;\ncadence {c / s:.2f}x SB3 "
                     f"in fp32, {b / s:.2f}x in bf16-mixed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from sac_throughput.json")
    args = parser.parse_args()
    if args.plot_only:
        print(f"wrote {plot(json.loads((RESULTS / 'sac_throughput.json').read_text()))}")
        return
    torch.set_num_threads(args.threads)

    cadence_sps, bf16_sps, sb3_sps = [], [], []
    for r in range(args.repeats):  # interleaved so drift in machine load hits all three
        cadence_sps.append(time_cadence(args.env, args.warmup, args.steps, seed=r))
        bf16_sps.append(time_cadence(args.env, args.warmup, args.steps, seed=r, precision="bf16-mixed"))
        sb3_sps.append(time_sb3(args.env, args.warmup, args.steps, seed=r))
        print(f"repeat {r}: cadence {cadence_sps[-1]:.1f} steps/s, cadence bf16-mixed {bf16_sps[-1]:.1f} steps/s, "
              f"SB3 {sb3_sps[-1]:.1f} steps/s", flush=True)
    c, b, s = (float(np.median(x)) for x in (cadence_sps, bf16_sps, sb3_sps))
    result = {
        "env": args.env, "timed_steps": args.steps, "torch_threads": args.threads, "repeats": args.repeats,
        "cadence_steps_per_s": c, "sb3_steps_per_s": s, "ratio_cadence_over_sb3": c / s,
        "cadence_bf16_mixed_steps_per_s": b, "ratio_cadence_bf16_mixed_over_sb3": b / s,
        "cadence_runs": cadence_sps, "cadence_bf16_mixed_runs": bf16_sps, "sb3_runs": sb3_sps, "target_ratio": 1.5,
        "machine": f"{platform.machine()} ({cpu_name()}), {torch.get_num_threads()} torch threads, "
                   f"torch {torch.__version__}",
    }
    print(f"cadence {c:.1f} steps/s ({c / s:.2f}x), cadence bf16-mixed {b:.1f} steps/s ({b / s:.2f}x), "
          f"SB3 {s:.1f} steps/s (target 1.5x)")

    from cadence.io import atomic_write_json

    atomic_write_json(RESULTS / "sac_throughput.json", result)
    plot(result)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()

"""SRL update throughput against SAC's, same run, same data (issue 3).

Both learn from the same replay buffer of Hopper-v5-shaped primitive transitions (random data);
each is timed over ``--updates`` gradient updates after a warm-up. SRL's update also trains its
dynamics model and unrolls the sequence actor J steps through it (temporal recall).

    python benchmarks/srl_throughput.py [--updates 200] [--threads 2] [--sequence-length 8]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from common import RESULTS, merge_result
from gymnasium import spaces

from cadence.agents import SAC, SRL, SACConfig, SRLConfig
from cadence.evaluation.plots import plot_bars
from cadence.replay import ReplayBuffer


def updates_per_second(agent, buffer: ReplayBuffer, updates: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        agent.update(buffer.sample(agent.config.batch_size))
    t0 = time.perf_counter()
    for _ in range(updates):
        agent.update(buffer.sample(agent.config.batch_size))
    return updates / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sequence-length", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    obs_dim, act_dim, J = 11, 3, args.sequence_length
    obs_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    buffer = ReplayBuffer(20_000, (obs_dim,), (act_dim,))
    n = 20_000
    buffer.add(np.random.randn(n, obs_dim), np.random.uniform(-1, 1, (n, act_dim)), np.random.randn(n),
               np.random.randn(n, obs_dim), np.zeros(n, dtype=bool))
    sac = SAC(obs_space, spaces.Box(-1, 1, (act_dim,), np.float32), SACConfig())
    srl = SRL(obs_space, spaces.Box(-1, 1, (J * act_dim,), np.float32), SRLConfig(sequence_length=J))
    sac_ups, srl_ups = [], []
    for r in range(args.repeats):  # interleaved so drift in machine load hits both
        sac_ups.append(updates_per_second(sac, buffer, args.updates))
        srl_ups.append(updates_per_second(srl, buffer, args.updates))
        print(f"repeat {r}: SAC {sac_ups[-1]:.1f} updates/s, SRL-{J} {srl_ups[-1]:.1f} updates/s")
    s, q = float(np.median(sac_ups)), float(np.median(srl_ups))
    result = {
        "sequence_length": J, "updates": args.updates, "torch_threads": args.threads,
        "sac_updates_per_s": s, "srl_updates_per_s": q, "ratio_srl_over_sac": q / s,
        "sac_runs": sac_ups, "srl_runs": srl_ups,
        "srl_settings": {k: getattr(srl.config, k) for k in
                         ("gru_size", "actor_batch_size", "model_members", "model_hidden_sizes")},
        "machine": f"{platform.machine()}, torch {torch.__version__}",
    }
    merge_result("srl_throughput", f"J={J}", result)
    print(f"SAC {s:.1f} updates/s, SRL-{J} {q:.1f} updates/s: SRL runs at {q / s:.2f}x SAC's update rate")
    plot_bars({"updates": {"SAC": s, f"SRL-{J}": q}}, RESULTS / "srl_throughput.png", "gradient updates / s",
              f"{args.threads} torch threads: SRL {q / s:.2f}x SAC")


if __name__ == "__main__":
    main()

"""SRL update throughput against SAC's, same run, same data (issue 3).

Both learn from the same replay buffer of Hopper-v5-shaped primitive transitions (random data);
each is timed over ``--updates`` gradient updates after a warm-up. SRL's update also trains its
dynamics model and unrolls the sequence actor J steps through it (temporal recall). Each is also timed
with ``train.precision=bf16-mixed`` (its updates under bfloat16 autocast).

    python benchmarks/srl_throughput.py [--updates 200] [--threads 2] [--sequence-length 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, cpu_name, merge_result
from gymnasium import spaces

from cadence.agents import SAC, SRL, SACConfig, SRLConfig
from cadence.evaluation.plots import plot_bars
from cadence.loops import TrainState, learn
from cadence.replay import ReplayBuffer


def updates_per_second(agent, buffer: ReplayBuffer, updates: int, warmup: int = 10, precision: str = "fp32") -> float:
    """Gradient updates per second through the training loop's own ``learn`` (one autocast block per update)."""
    state = TrainState()
    learn(agent, buffer, warmup, state, Path("."), precision)
    t0 = time.perf_counter()
    learn(agent, buffer, updates, state, Path("."), precision)
    return updates / (time.perf_counter() - t0)


def plot(result: dict) -> Path:
    """Median update rates of SAC and SRL-J (fp32, bf16-mixed), from one ``srl_throughput.json`` entry."""
    J, bf = result["sequence_length"], result["bf16_mixed"]
    s, q = result["sac_updates_per_s"], result["srl_updates_per_s"]
    return plot_bars({"fp32": {"SAC": s, f"SRL-{J}": q},
                      "bf16-mixed": {"SAC": bf["sac_updates_per_s"], f"SRL-{J}": bf["srl_updates_per_s"]}},
                     RESULTS / "srl_throughput.png", "gradient updates / s (median)",
                     f"SAC and SRL-{J} updates, {result['torch_threads']} torch threads, median of "
                     f"{len(result['sac_runs'])} repeats of {result['updates']} updates;\nSRL at {q / s:.2f}x SAC's "
                     "rate (fp32)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sequence-length", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from srl_throughput.json")
    args = parser.parse_args()
    if args.plot_only:
        stored = json.loads((RESULTS / "srl_throughput.json").read_text())[f"J={args.sequence_length}"]
        print(f"wrote {plot(stored)}")
        return
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
    sac_ups, srl_ups, sac_bf16, srl_bf16 = [], [], [], []
    for r in range(args.repeats):  # interleaved so drift in machine load hits all four
        sac_ups.append(updates_per_second(sac, buffer, args.updates))
        srl_ups.append(updates_per_second(srl, buffer, args.updates))
        sac_bf16.append(updates_per_second(sac, buffer, args.updates, precision="bf16-mixed"))
        srl_bf16.append(updates_per_second(srl, buffer, args.updates, precision="bf16-mixed"))
        print(f"repeat {r}: SAC {sac_ups[-1]:.1f}, SRL-{J} {srl_ups[-1]:.1f} updates/s; bf16-mixed: SAC "
              f"{sac_bf16[-1]:.1f}, SRL-{J} {srl_bf16[-1]:.1f}", flush=True)
    s, q, sb, qb = (float(np.median(x)) for x in (sac_ups, srl_ups, sac_bf16, srl_bf16))
    result = {
        "sequence_length": J, "updates": args.updates, "torch_threads": args.threads,
        "sac_updates_per_s": s, "srl_updates_per_s": q, "ratio_srl_over_sac": q / s,
        "sac_runs": sac_ups, "srl_runs": srl_ups,
        "bf16_mixed": {"sac_updates_per_s": sb, "srl_updates_per_s": qb, "sac_speedup": sb / s, "srl_speedup": qb / q,
                       "sac_runs": sac_bf16, "srl_runs": srl_bf16},
        "srl_settings": {k: getattr(srl.config, k) for k in
                         ("gru_size", "actor_batch_size", "model_members", "model_hidden_sizes")},
        "machine": f"{platform.machine()} ({cpu_name()}), torch {torch.__version__}",
    }
    merge_result("srl_throughput", f"J={J}", result)
    print(f"SAC {s:.1f} updates/s, SRL-{J} {q:.1f} updates/s: SRL runs at {q / s:.2f}x SAC's update rate; "
          f"bf16-mixed: SAC {sb:.1f} ({sb / s:.2f}x), SRL-{J} {qb:.1f} ({qb / q:.2f}x)")
    plot(result)


if __name__ == "__main__":
    main()

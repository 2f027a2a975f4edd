"""cadence ReplayBuffer against stable-baselines3's ReplayBuffer: sampling throughput and memory, same run.

Both hold ``--size`` Hopper-v5-shaped transitions (obs 11, action 3) of random data with episodes of
1000 steps. Measured, interleaved over ``--repeats`` so machine drift hits both:
- uniform batches of 256 (``sample``), as batches per second;
- windows of 8 consecutive transitions, 256 windows per batch. cadence's ``sample_sequences`` cuts windows
  at episode ends and returns masks; SB3 has no window sampler, so its peer gathers the 8 consecutive rows
  of each random start with its own ``_get_samples`` (no episode handling: a lower bound on real cost).
Memory: bytes of storage for 1M transitions against the raw float32 payload (obs, action, reward,
next_obs = 26 floats per transition). Writes ``benchmarks/results/replay.json`` and ``replay.png``.

    python benchmarks/replay.py [--size 1000000] [--seconds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import RESULTS

from cadence.evaluation.plots import plot_bars
from cadence.io import atomic_write_json
from cadence.replay import ReplayBuffer

OBS, ACT, BATCH, WINDOW, EPISODE = 11, 3, 256, 8, 1000


def random_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n + 1, OBS), dtype=np.float32)
    ends = (np.arange(n) % EPISODE) == EPISODE - 1
    return {"obs": obs[:-1], "next_obs": obs[1:], "action": rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
            "reward": rng.standard_normal(n, dtype=np.float32), "terminated": np.zeros(n, bool), "truncated": ends}


def cadence_buffer(data: dict[str, np.ndarray]) -> ReplayBuffer:
    n = len(data["reward"])
    buf = ReplayBuffer(n, OBS, ACT)
    starts = (np.arange(n) % EPISODE) == 0
    buf.add(data["obs"], data["action"], data["reward"], data["next_obs"], data["terminated"], data["truncated"],
            episode_start=starts)
    return buf


def sb3_buffer(data: dict[str, np.ndarray]):
    import gymnasium as gym
    from stable_baselines3.common.buffers import ReplayBuffer as SB3ReplayBuffer

    n = len(data["reward"])
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (ACT,), np.float32)
    buf = SB3ReplayBuffer(n, obs_space, act_space, device="cpu", n_envs=1)
    # fill its arrays directly (add() is one transition per call); same layout as add() writes
    buf.observations[:, 0] = data["obs"]
    buf.next_observations[:, 0] = data["next_obs"]
    buf.actions[:, 0] = data["action"]
    buf.rewards[:, 0] = data["reward"]
    buf.dones[:, 0] = data["terminated"] | data["truncated"]
    buf.timeouts[:, 0] = data["truncated"]
    buf.pos, buf.full = 0, True
    return buf


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(20):
        fn()
    calls, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(50):
            fn()
        calls += 50
    return calls / elapsed


def storage_bytes(buf: ReplayBuffer) -> int:
    seen, total = set(), 0
    for t in buf.storage.values():  # fields may be views of shared blocks: count each block once
        base = t.untyped_storage()
        if base.data_ptr() not in seen:
            seen.add(base.data_ptr())
            total += base.nbytes()
    return total


def plot(result: dict) -> Path:
    """Median sampling rates of cadence's and SB3's buffers, from a ``replay.json`` result."""
    s = result["sampling_batches_per_second"]
    repeats = len(next(iter(s.values()))["runs"]["cadence"])
    return plot_bars({name: {"cadence": v["cadence"], "SB3": v["sb3"]} for name, v in s.items()},
                     RESULTS / "replay.png", "batches / s (median)",
                     f"ReplayBuffer sampling, batch {result['batch']}, {result['transitions']:,} transitions;\n"
                     f"median of {repeats} repeats, {result['torch_threads']} torch thread(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from replay.json")
    args = parser.parse_args()
    if args.plot_only:
        print(f"wrote {plot(json.loads((RESULTS / 'replay.json').read_text()))}")
        return
    torch.set_num_threads(args.threads)

    data = random_data(args.size)
    ours, theirs = cadence_buffer(data), sb3_buffer(data)
    del data
    rng = np.random.default_rng(0)

    def sb3_windows():
        starts = rng.integers(0, args.size - WINDOW, BATCH)
        return theirs._get_samples((starts[:, None] + np.arange(WINDOW)).reshape(-1))

    peers = {
        "uniform": (lambda: ours.sample(BATCH), lambda: theirs.sample(BATCH)),
        f"windows_{WINDOW}": (lambda: ours.sample_sequences(BATCH, WINDOW), sb3_windows),
    }
    runs: dict[str, dict[str, list[float]]] = {k: {"cadence": [], "sb3": []} for k in peers}
    for _ in range(args.repeats):
        for name, (cadence_fn, sb3_fn) in peers.items():
            runs[name]["cadence"].append(rate(cadence_fn, args.seconds))
            runs[name]["sb3"].append(rate(sb3_fn, args.seconds))

    payload = args.size * (OBS + ACT + 1 + OBS) * 4
    sb3_bytes = sum(a.nbytes for a in (theirs.observations, theirs.next_observations, theirs.actions,
                                       theirs.rewards, theirs.dones, theirs.timeouts))
    result = {
        "machine": platform.processor() or platform.machine(), "torch_threads": args.threads,
        "transitions": args.size, "batch": BATCH, "window": WINDOW,
        "sampling_batches_per_second": {
            name: {"cadence": float(np.median(r["cadence"])), "sb3": float(np.median(r["sb3"])),
                   "ratio": float(np.median(r["cadence"]) / np.median(r["sb3"])), "runs": r}
            for name, r in runs.items()
        },
        "memory": {"payload_bytes": payload, "cadence_bytes": storage_bytes(ours), "sb3_bytes": int(sb3_bytes),
                   "cadence_over_payload": storage_bytes(ours) / payload, "sb3_over_payload": sb3_bytes / payload},
        "targets": {"uniform_ratio_at_least": 3.0, "memory_over_payload_at_most": 1.1},
    }
    atomic_write_json(RESULTS / "replay.json", result)
    plot(result)
    s = result["sampling_batches_per_second"]
    for name, v in s.items():
        print(f"{name:12s} cadence {v['cadence']:9.0f}/s  sb3 {v['sb3']:9.0f}/s  ratio {v['ratio']:.2f}x")
    m = result["memory"]
    print(f"memory for {args.size:,} transitions: cadence {m['cadence_bytes'] / 2**20:.1f} MiB "
          f"({m['cadence_over_payload']:.3f}x payload), sb3 {m['sb3_bytes'] / 2**20:.1f} MiB "
          f"({m['sb3_over_payload']:.3f}x)")


if __name__ == "__main__":
    main()

"""Which ``train.torch_threads`` default holds up on a loaded machine (issue 31).

Times SAC (env + gradient steps/s on Hopper-v5, the training loop's own ``learn``) and SRL-8 (gradient updates/s on
Hopper-shaped random data) at 1 and 2 torch threads, each in a fresh process, on an idle machine and beside one
busy-loop process per core (2x oversubscription), with OpenMP's default wait policy and with
``OMP_WAIT_POLICY=PASSIVE``. A setting is acceptable when, in each load case, it is at most 1.3x slower than the best
setting of that case.

    python benchmarks/thread_defaults.py [--sac-steps 600] [--srl-updates 60]

Writes ``benchmarks/results/thread_defaults.json`` and ``thread_defaults.png``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, cpu_name

HERE = Path(__file__).resolve().parent


def busy_loop() -> None:
    while True:
        pass


def measure(kind: str, args: argparse.Namespace) -> float:
    """Runs inside a fresh process: SAC steps/s or SRL-8 updates/s at the process's torch thread count."""
    import torch

    sys.path.insert(0, str(HERE))
    torch.set_num_threads(args.threads)
    if kind == "sac":
        from sac_throughput import time_cadence

        return time_cadence("Hopper-v5", args.warmup, args.sac_steps, seed=1)
    import numpy as np
    from gymnasium import spaces
    from srl_throughput import updates_per_second

    from cadence.agents import SRL, SRLConfig
    from cadence.replay import ReplayBuffer

    torch.manual_seed(0)
    obs_space = spaces.Box(-np.inf, np.inf, (11,), np.float32)
    n = 20_000
    buffer = ReplayBuffer(n, (11,), (3,))
    buffer.add(np.random.randn(n, 11), np.random.uniform(-1, 1, (n, 3)), np.random.randn(n), np.random.randn(n, 11),
               np.zeros(n, dtype=bool))
    agent = SRL(obs_space, spaces.Box(-1, 1, (8 * 3,), np.float32), SRLConfig(sequence_length=8))
    return updates_per_second(agent, buffer, args.srl_updates)


def one(kind: str, threads: int, wait: str, args: argparse.Namespace) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if wait == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, __file__, "--child", kind, "--threads", str(threads), "--sac-steps", str(args.sac_steps),
           "--srl-updates", str(args.srl_updates), "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sac-steps", type=int, default=600, help="timed SAC env + gradient steps")
    parser.add_argument("--srl-updates", type=int, default=60, help="timed SRL-8 updates")
    parser.add_argument("--warmup", type=int, default=300, help="SAC random steps before the timed ones")
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("sac", "srl"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(measure(args.child, args))
        return
    cores = os.cpu_count() or 1
    result: dict = {"machine": f"{platform.machine()} ({cpu_name()}), {cores} cores", "date": time.strftime("%Y-%m-%d"),
                    "sac_steps": args.sac_steps, "srl_updates": args.srl_updates, "rates": {}}
    for load in ("idle", "oversubscribed"):
        busy = [mp.Process(target=busy_loop, daemon=True) for _ in range(cores if load != "idle" else 0)]
        for p in busy:
            p.start()
        try:
            for kind in ("sac", "srl"):
                for wait in ("default", "passive"):
                    for threads in (1, 2):
                        rate = one(kind, threads, wait, args)
                        result["rates"].setdefault(load, {}).setdefault(kind, {})[f"{threads} thread(s), {wait}"] = rate
                        print(f"{load:>14} {kind}: {threads} thread(s), OMP wait {wait:<8} {rate:7.1f}/s", flush=True)
        finally:
            for p in busy:
                p.terminate()
    # slowdown of each setting against the best one of its (load, kind)
    slow: dict = {}
    for load, kinds in result["rates"].items():
        for kind, rates in kinds.items():
            best = max(rates.values())
            for setting, rate in rates.items():
                slow.setdefault(setting, {})[f"{load} {kind}"] = best / rate
    result["slowdown_vs_best"] = slow
    result["worst_slowdown"] = {s: max(v.values()) for s, v in slow.items()}
    result["acceptable_at_1.3x"] = sorted(s for s, w in result["worst_slowdown"].items() if w <= 1.3)
    print(json.dumps({"worst_slowdown": result["worst_slowdown"], "acceptable": result["acceptable_at_1.3x"]},
                     indent=1))
    from cadence.io import atomic_write_json

    atomic_write_json(RESULTS / "thread_defaults.json", result)
    plot(result)


def plot(result: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    settings = list(result["worst_slowdown"])
    cases = list(next(iter(result["slowdown_vs_best"].values())))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(settings)
    for i, s in enumerate(settings):
        ax.bar(np.arange(len(cases)) + i * width, [result["slowdown_vs_best"][s][c] for c in cases], width, label=s)
    ax.axhline(1.3, color="grey", ls="--", lw=1, label="1.3x: the acceptable slowdown")
    ax.set_xticks(np.arange(len(cases)) + 0.4 - width / 2, cases)
    ax.set_ylabel("time per step / the best setting's")
    ax.set_xlabel("load and workload")
    ax.set_title(f"torch threads and OpenMP wait policy, slowdown against the best ({result['machine']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / "thread_defaults.png"
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    main()

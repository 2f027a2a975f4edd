"""How long OER's model-based experience selection (MBES) takes over a 1M-transition data set (issue 17).

Times the two parts of MBES on synthetic HalfCheetah-sized data (17-d states, 6-d actions):

* **selection**: score all 1M transitions by the distance from their state to the nearest of the policy's model
  states (``mbes_max_states`` of them, 5k by default) and keep the top ``--memory``: batched torch distances
  (:class:`cadence.replay.selection.NearestSelector`), against scipy's ``cKDTree`` on the same data as the peer;
* **model**: the Gaussian ensemble fit (on ``mbes_model_rows`` of the rows) and the policy's model rollouts.

The target: the whole of MBES under one minute on 2 CPU cores. Writes ``benchmarks/results/mbes_speed.json`` and
``mbes_speed.png``.

    python benchmarks/mbes_speed.py [--rows 1000000] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from common import RESULTS, cpu_name, merge_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--memory", type=int, default=10_000, help="transitions kept")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from gymnasium import spaces
    from scipy.spatial import cKDTree

    from cadence.agents.oer import ContinualOffline, ContinualOfflineConfig
    from cadence.replay.selection import NearestSelector

    obs_dim, act_dim = 17, 6
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(args.rows, obs_dim, generator=gen)
    action = torch.rand(args.rows, act_dim, generator=gen) * 2 - 1
    data = {"obs": obs, "action": action, "reward": torch.randn(args.rows, generator=gen),
            "next_obs": obs + 0.05 * torch.randn(args.rows, obs_dim, generator=gen),
            "terminated": torch.zeros(args.rows, dtype=torch.bool),
            "episode_start": (torch.arange(args.rows) % 1000) == 0,
            "task_id": torch.zeros(args.rows, dtype=torch.int64)}
    config = ContinualOfflineConfig(memory=args.memory)
    learner = ContinualOffline(spaces.Box(-np.inf, np.inf, (obs_dim,)), spaces.Box(-1, 1, (act_dim,)), 1, "mbes",
                               config)
    learner.begin_task(0, data)
    start = time.perf_counter()
    states = learner.model_states(data)
    model_seconds = time.perf_counter() - start

    selector = NearestSelector({0: states}, scale=obs.std(0))
    start = time.perf_counter()
    kept = selector.select(data, args.memory)
    select_seconds = time.perf_counter() - start

    start = time.perf_counter()
    scale = obs.std(0).numpy()
    distance, _ = cKDTree(states.numpy() / scale).query(obs.numpy() / scale, k=1, workers=args.threads)
    kd_kept = np.sort(np.argsort(distance, kind="stable")[: args.memory])
    kdtree_seconds = time.perf_counter() - start
    agree = len(np.intersect1d(kd_kept, kept.numpy())) / args.memory

    result = {"rows": args.rows, "memory": args.memory, "reference_states": len(states), "threads": args.threads,
              "model_fit_and_rollout_seconds": model_seconds, "selection_seconds": select_seconds,
              "total_seconds": model_seconds + select_seconds, "kdtree_selection_seconds": kdtree_seconds,
              "kdtree_over_torch": kdtree_seconds / select_seconds, "same_rows_as_kdtree": agree,
              "machine": f"{platform.machine()} ({cpu_name()}), torch {torch.__version__}"}
    merge_result("mbes_speed", f"{args.rows}_rows", result)
    print(f"MBES over {args.rows:,} transitions, {len(states):,} model states, {args.threads} threads: model fit + "
          f"rollouts {model_seconds:.1f} s, selection {select_seconds:.1f} s (cKDTree {kdtree_seconds:.1f} s, "
          f"{100 * agree:.1f}% same rows); total {model_seconds + select_seconds:.1f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    labels = ["model fit + rollouts", "selection (torch, cadence)", "selection (scipy cKDTree)"]
    values = [model_seconds, select_seconds, kdtree_seconds]
    ax.barh(labels, values, color=["tab:gray", "tab:blue", "tab:orange"])
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.1f} s", va="center")
    ax.axvline(60, color="red", linestyle="--", label="target: all of MBES < 60 s")
    ax.set(xlabel="seconds", title=f"MBES over {args.rows:,} transitions ({args.threads} CPU threads)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "mbes_speed.png", dpi=110)
    print("wrote", RESULTS / "mbes_speed.png")


if __name__ == "__main__":
    main()

"""The task gap of every continual MuJoCo sequence cadence ships: can it show forgetting of the dynamics at all?

For each sequence (one name per family's sequence list, aliases skipped), ``cadence.envs.task_gap.task_gap`` replays
each task's random (s, a) in every other task's physics, and a single-task model (a (200, 200) Gaussian MLP,
``--fit-steps`` updates on the first task's random transitions) gives the error the gap must exceed tenfold. Writes
``benchmarks/results/task_gaps.json``; ``python benchmarks/tables.py`` turns it into the README table.

    python benchmarks/task_gaps.py [--n 5000] [--fit-steps 10000] [--sequences halfcheetah-motor-3 ...]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from common import RESULTS, cpu_name

from cadence.envs.task_gap import MIN_GAP_RATIO, task_gap
from cadence.envs.tasks import FAMILIES
from cadence.io import atomic_write_json
from cadence.world_models.single_task import single_task_error


def sequences() -> list[str]:
    """Every named sequence of every family (not the family-name aliases)."""
    return [name for family in FAMILIES.values() for name in family.sequences]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", nargs="+", default=sequences())
    parser.add_argument("--n", type=int, default=5000, help="random transitions per task")
    parser.add_argument("--fit-steps", type=int, default=10000, help="single-task model updates")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {"n": args.n, "fit_steps": args.fit_steps, "seed": args.seed, "min_ratio": MIN_GAP_RATIO,
           "machine": f"{platform.machine()} ({cpu_name()}), torch {torch.__version__}", "sequences": {}}
    for name in args.sequences:
        start = time.perf_counter()
        gap = task_gap(name, n=args.n, seed=args.seed)
        error = single_task_error(gap.data[0], gap.state_scale, args.fit_steps, seed=args.seed)
        entry = {k: v for k, v in gap.to_dict().items() if k != "sequence"}
        entry.update(single_task_error=error, ratio=gap.min_state_gap / max(error, 1e-12),
                     seconds=time.perf_counter() - start)
        out["sequences"][name] = entry
        print(f"{name:>22}: smallest state gap {gap.min_state_gap:.4g}, reward gap {gap.min_reward_gap:.4g}, "
              f"single-task error {error:.4g}: {entry['ratio']:.1f}x")
    atomic_write_json(RESULTS / "task_gaps.json", out)
    print(f"wrote {RESULTS / 'task_gaps.json'}")


if __name__ == "__main__":
    main()

"""Make scripted LIBERO demonstrations (cadence.libero_demos) and print their success rates per task.

    python scripts/libero_demos.py --suite object [--inits 20] [--tasks 0 1 2] [--out FILE.hdf5]

Writes ``<data dir>/libero-<suite>-scripted.hdf5`` by default (atomically); ``--report FILE.json`` also writes the
rates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cadence.envs.libero import SUITES
from cadence.io import atomic_write_json
from cadence.libero_demos import collect_demos, demo_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", required=True, choices=list(SUITES))
    parser.add_argument("--tasks", type=int, nargs="+", help="task indices (default: the whole suite)")
    parser.add_argument("--inits", type=int, default=20, help="init states 0..N-1 per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="the HDF5 file (default: the suite's file in the data dir)")
    parser.add_argument("--report", type=Path, help="also write the success rates as JSON here")
    args = parser.parse_args()

    def tick(task: int, init: int, ok: bool) -> None:
        print(f"task {task} init {init}: {'ok' if ok else 'failed after every grasp'}", flush=True)

    data, report = collect_demos(args.suite, args.tasks, range(args.inits), args.seed, on_episode=tick)
    path = data.save_hdf5(args.out or demo_file(args.suite))
    rates = report.rates()
    for task, row in rates["per_task"].items():
        note = f"  (excluded: {row['excluded']})" if row["excluded"] else ""
        print(f"task {task}: {row['with_retries']:.0%} with retries, {row['first_grasp']:.0%} first grasp{note}")
    print(f"{args.suite}: {rates['with_retries']:.1%} with retries, {rates['first_grasp']:.1%} first grasp over "
          f"{len(rates['counted_tasks'])} counted tasks; {len(data)} transitions in {path} ({report.seconds:.0f} s)")
    if args.report:
        atomic_write_json(args.report, json.loads(json.dumps(rates)))


if __name__ == "__main__":
    main()

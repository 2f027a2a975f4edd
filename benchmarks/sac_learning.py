"""SAC learning quality: evaluation return against env steps.

Targets (issue 2): return >= 1000 on InvertedPendulum-v5 within 20k env steps (3 seeds), and
>= 2500 on Hopper-v5 within 300k env steps. Each (env, seed) is a normal cadence run folder under
``--runs``; an interrupted benchmark resumes its runs. Results merge into
``benchmarks/results/sac_learning.json`` and one curve plot per env.

    python benchmarks/sac_learning.py --env InvertedPendulum-v5 --seeds 1 2 3 --steps 20000
    python benchmarks/sac_learning.py --env Hopper-v5 --seeds 1 --steps 300000 --threads 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cadence.checkpoint import checkpoint_path
from cadence.evaluation.plots import plot_curves
from cadence.io import atomic_write_json
from cadence.runs import METRICS_FILE, read_run_config, resolve_config, train

RESULTS = Path(__file__).parent / "results"
TARGETS = {"InvertedPendulum-v5": 1000.0, "Hopper-v5": 2500.0}
#: Settings per env: InvertedPendulum learns in a few thousand steps, so warm-up is short there.
ENV_OVERRIDES = {
    "InvertedPendulum-v5": ["agent.learning_starts=1000", "train.eval_every=1000", "train.eval_episodes=5"],
    "Hopper-v5": ["train.eval_every=10000", "train.eval_episodes=10"],
}


def run_one(env_id: str, seed: int, steps: int, threads: int, runs: Path) -> list[tuple[int, float]]:
    run_dir = runs / f"sac_{env_id}_s{seed}"
    if (run_dir / METRICS_FILE).is_file():  # finished earlier
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
        if metrics.get("steps", 0) >= steps:
            return [tuple(e) for e in metrics["evals"]]
    overrides = ENV_OVERRIDES.get(env_id, []) + [f"train.torch_threads={threads}", "train.progress=false"]
    resume = checkpoint_path(run_dir).is_file()
    if resume:
        _, sections = read_run_config(run_dir)
    else:
        base = {"train": {"env": env_id, "seed": seed, "total_steps": steps}}
        sections = resolve_config("sac", base, None, overrides)
    state = train("sac", sections, run_dir, resume=resume)
    return [tuple(e) for e in state.evals]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_sac_learning"))
    args = parser.parse_args()

    curves = {seed: run_one(args.env, seed, args.steps, args.threads, args.runs) for seed in args.seeds}
    target = TARGETS.get(args.env)
    summary = {
        "env": args.env, "steps": args.steps, "seeds": args.seeds, "target_return": target,
        "curves": {str(s): c for s, c in curves.items()},
        "best_eval_return": {str(s): max(r for _, r in c) for s, c in curves.items()},
        "final_eval_return": {str(s): c[-1][1] for s, c in curves.items()},
        "first_step_reaching_target": {
            str(s): next((step for step, r in c if target is not None and r >= target), None) for s, c in curves.items()
        },
        "note": "Gymnasium v5 tasks; evaluation = mean return of the deterministic policy over the eval episodes",
    }
    summary["all_seeds_reach_target"] = all(v is not None for v in summary["first_step_reaching_target"].values())
    path = RESULTS / "sac_learning.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged[args.env] = summary
    atomic_write_json(path, merged)
    plot_curves({f"seed {s}": [c] for s, c in curves.items()}, RESULTS / f"sac_learning_{args.env}.png",
                title=f"cadence SAC on {args.env}", hline=target)
    finals = np.array(list(summary["best_eval_return"].values()))
    print(f"{args.env}: best eval return per seed {finals.round(1).tolist()}, target {target}, "
          f"first step at target {summary['first_step_reaching_target']}")


if __name__ == "__main__":
    main()

"""SAC learning quality: evaluation return against env steps.

Targets (issue 2): return >= 1000 on InvertedPendulum-v5 within 20k env steps (3 seeds), and
>= 2500 on Hopper-v5 within 300k env steps. Each (env, seed) is a normal cadence run folder under
``--runs``; an interrupted benchmark resumes its runs. Results merge into
``benchmarks/results/sac_learning.json`` and one curve plot per env; seeds recorded before for the same env
and budget are kept, so seeds can be added one invocation at a time.

    python benchmarks/sac_learning.py --env InvertedPendulum-v5 --seeds 1 2 3 --steps 20000
    python benchmarks/sac_learning.py --env Hopper-v5 --seeds 1 --steps 300000 --threads 1
    python benchmarks/sac_learning.py --env Hopper-v5 --seeds 1 --steps 300000 --precision bf16-mixed

A ``--precision bf16-mixed`` run is recorded under its own key (``"Hopper-v5 bf16-mixed"``) and plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import RESULTS, merge_result, train_or_resume

from cadence.evaluation.plots import plot_curves
from cadence.nn import PRECISIONS
from cadence.runs import resolve_config

TARGETS = {"InvertedPendulum-v5": 1000.0, "Hopper-v5": 2500.0}
#: Settings per env: InvertedPendulum learns in a few thousand steps, so warm-up is short there.
ENV_OVERRIDES = {
    "InvertedPendulum-v5": ["agent.learning_starts=1000", "train.eval_every=1000", "train.eval_episodes=5"],
    "Hopper-v5": ["train.eval_every=10000", "train.eval_episodes=10"],
}


def eval_episodes(env_id: str) -> int:
    """Evaluation episodes per point of the curve (the runs' train.eval_episodes)."""
    given = [o.split("=")[1] for o in ENV_OVERRIDES.get(env_id, []) if o.startswith("train.eval_episodes=")]
    return int(given[0]) if given else resolve_config("sac")["train"].eval_episodes


def plot_env(env_id: str, precision: str = "fp32") -> Path:
    """The stored seeds' curves of ``env_id`` (``sac_learning.json``): mean and 95% band over seeds, with the target."""
    label = env_id if precision == "fp32" else f"{env_id} {precision}"
    entry = json.loads((RESULTS / "sac_learning.json").read_text())[label]
    curves = [[tuple(p) for p in c] for c in entry["curves"].values()]
    seeds = len(curves)
    suffix = "" if precision == "fp32" else f"_{precision}"
    return plot_curves({f"cadence SAC{'' if precision == 'fp32' else ' ' + precision}": curves},
                       RESULTS / f"sac_learning_{env_id}{suffix}.png", ylabel="evaluation return",
                       title=f"cadence SAC on {env_id}" + ("" if precision == "fp32" else f" ({precision})")
                             + f": {seeds} seed{'s' if seeds != 1 else ''}, {entry['steps']:,} env steps; "
                             f"each point: mean of {eval_episodes(env_id)} eval episodes",
                       hline=entry.get("target_return"),
                       hline_label=f"target {entry['target_return']:,.0f}" if entry.get("target_return") else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_sac_learning"))
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="train.precision of the runs")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from sac_learning.json")
    args = parser.parse_args()
    if args.plot_only:
        print(f"wrote {plot_env(args.env, args.precision)}")
        return

    overrides = [*ENV_OVERRIDES.get(args.env, []), f"train.precision={args.precision}"]
    label = args.env if args.precision == "fp32" else f"{args.env} {args.precision}"
    suffix = "" if args.precision == "fp32" else f"_{args.precision}"
    trained = {seed: train_or_resume("sac", args.env, seed, args.steps, overrides,
                                     args.runs / f"sac_{args.env}_s{seed}{suffix}", args.threads)
               for seed in args.seeds}
    # read after training, so that seeds run in parallel processes (one per core) keep each other's curves
    path = RESULTS / "sac_learning.json"
    stored = json.loads(path.read_text()).get(label, {}) if path.is_file() else {}
    curves = {int(s): [tuple(p) for p in c] for s, c in stored.get("curves", {}).items()
              if stored.get("steps") == args.steps and int(s) not in args.seeds}
    curves.update(trained)
    curves = dict(sorted(curves.items()))
    target = TARGETS.get(args.env)
    summary = {
        "env": args.env, "precision": args.precision, "steps": args.steps, "seeds": list(curves),
        "target_return": target,
        "curves": {str(s): c for s, c in curves.items()},
        "best_eval_return": {str(s): max(r for _, r in c) for s, c in curves.items()},
        "final_eval_return": {str(s): c[-1][1] for s, c in curves.items()},
        "first_step_reaching_target": {
            str(s): next((step for step, r in c if target is not None and r >= target), None) for s, c in curves.items()
        },
        "note": "Gymnasium v5 tasks; evaluation = mean return of the deterministic policy over the eval episodes",
    }
    reached = [v is not None for v in summary["first_step_reaching_target"].values()]
    summary["seeds_reaching_target"] = f"{sum(reached)} of {len(reached)}"
    summary["all_seeds_reach_target"] = all(reached)
    merge_result("sac_learning", label, summary)
    plot_env(args.env, args.precision)
    finals = np.array(list(summary["best_eval_return"].values()))
    print(f"{args.env}: best eval return per seed {finals.round(1).tolist()}, target {target}, "
          f"first step at target {summary['first_step_reaching_target']}")


if __name__ == "__main__":
    main()

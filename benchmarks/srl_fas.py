"""SRL against SAC-1, SAC-J and MPC on FAS, at the same env-step budget (issue 3), run as a cadence sweep.

The script writes the grid ``benchmarks/sweeps/srl_fas_<env>.toml``: SRL-J, SAC-1 and SAC-J (action repeat J), each
trained for ``--steps`` primitive env steps, per seed. Every run then gets a FAS sweep (open-loop ASL 1..30); MPC
plans by CEM through each SRL run's learned model (its own method in the report). The grid runs with
:func:`cadence.sweeps.run_sweep` (``--workers`` runs at once, torch threads split between them) in
``runs/sweeps/srl_fas_<env>``, resumable, and ``cadence report`` writes ``benchmarks/results/srl_fas_<env>_report/``
(IQM and mean with bootstrap CIs, P(SRL-J > SAC-1), curves). The script also keeps
``benchmarks/results/srl_fas.json`` (per env: per-seed FAS and per-ASL returns, means) and ``srl_fas_<env>.png``.
The same grid runs without the script: ``cadence sweep benchmarks/sweeps/srl_fas_<env>.toml``.

    python benchmarks/srl_fas.py --env InvertedPendulum-v5 --seeds 1 2 3 --steps 20000
    python benchmarks/srl_fas.py --env Reacher-v5 --seeds 1 2 3 --steps 30000
    python benchmarks/srl_fas.py --env Hopper-v5 --seeds 1 --steps 50000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import RESULTS, merge_result, run_grid, write_grid

from cadence.evaluation.fas import ASL_GRID, PUBLISHED_SAC_J_FAS, FASResult, env_family
from cadence.evaluation.plots import plot_fas
from cadence.report import write_report

#: Shorter warm-up and more frequent evaluation than the defaults, for small budgets.
ENV_OVERRIDES = {
    "InvertedPendulum-v5": {"agent.learning_starts": 1000, "train.eval_every": 2000, "train.eval_episodes": 5},
    "Reacher-v5": {"agent.learning_starts": 2000, "train.eval_every": 5000, "train.eval_episodes": 5},
    "Hopper-v5": {"agent.learning_starts": 5000, "train.eval_every": 10000, "train.eval_episodes": 5},
}


def grid(args: argparse.Namespace) -> dict:
    """The sweep: three methods (MPC through SRL's model) x the seeds, on one env."""
    J = args.sequence_length
    mpc = {"horizon": args.mpc_horizon, "samples": args.mpc_samples, "elites": max(2, args.mpc_samples // 10),
           "iterations": args.mpc_iterations, "episodes": args.mpc_episodes, "label": "MPC"}
    return {
        "sweep": {"name": f"srl_fas_{args.env}", "fas_episodes": args.episodes, "compare": [f"SRL-{J}", "SAC-1"]},
        "base": {"train.env": args.env, "train.total_steps": args.steps, **ENV_OVERRIDES.get(args.env, {})},
        "methods": {f"SRL-{J}": {"algo": "srl", "agent.sequence_length": J, "mpc": mpc},
                    "SAC-1": {"algo": "sac"},
                    f"SAC-{J}": {"algo": "sac", "agent.action_repeat": J}},
        "axes": {"train.seed": args.seeds},
    }


def summary(args: argparse.Namespace, root: Path, sweep) -> dict:
    """srl_fas.json's entry for the env, read from the sweep's run folders."""
    per_seed: dict[str, dict[str, dict]] = {}
    for run in sweep.runs:
        folder, seed = root / run.name, str(run.settings["train.seed"])
        metrics = json.loads((folder / "metrics.json").read_text())
        for method, stem in ((run.method, "fas"), *(((run.mpc["label"], "fas_mpc"),) if run.mpc else ())):
            fas = json.loads((folder / f"{stem}.json").read_text())
            per_seed.setdefault(method, {})[seed] = {
                "fas": fas["fas"], "per_asl": fas["mean_return"],
                "curve": metrics["evals"] if stem == "fas" else None}
    out = {"env": args.env, "steps": args.steps, "seeds": args.seeds, "sequence_length": args.sequence_length,
           "fas_episodes_per_asl": args.episodes, "mpc_episodes_per_asl": args.mpc_episodes,
           "mpc": {k: v for k, v in grid(args)["methods"][f"SRL-{args.sequence_length}"]["mpc"].items()
                   if k not in ("episodes", "label")},
           "published_sac_j_fas_gym_v2": PUBLISHED_SAC_J_FAS.get(env_family(args.env)),
           "sweep": str(root), "report": f"srl_fas_{args.env}_report/report.md", "methods": {}}
    for method, seeds in per_seed.items():
        fas = [s["fas"] for s in seeds.values()]
        out["methods"][method] = {
            "fas": {s: v["fas"] for s, v in seeds.items()}, "fas_mean": float(np.mean(fas)),
            "fas_std": float(np.std(fas)),
            "asl1_return_mean": float(np.mean([v["per_asl"][0] for v in seeds.values()])),
            "mean_return_per_asl": np.mean([v["per_asl"] for v in seeds.values()], axis=0).tolist(),
            "return_per_asl": {s: v["per_asl"] for s, v in seeds.items()},
            "eval_curves": {s: v["curve"] for s, v in seeds.items() if v["curve"] is not None},
        }
    return out


def plot_env(env_id: str) -> Path:
    """One plot per env from ``srl_fas.json``: each method's mean return over seeds against ASL, ±1 std over seeds."""
    entry = json.loads((RESULTS / "srl_fas.json").read_text())[env_id]
    results, bands = {}, {}
    for name, m in entry["methods"].items():
        per_seed = m.get("return_per_asl") or {s: m["mean_return_per_asl"] for s in m["fas"]}
        returns = np.asarray(list(per_seed.values())).T.tolist()  # [asl, seed]
        label = f"{name} ({len(per_seed)} seed{'s' if len(per_seed) != 1 else ''})"
        results[label] = FASResult(env_id, list(ASL_GRID), returns, m["fas_mean"], 0.0, 0.0)
        bands[label] = f"±1 std over {len(per_seed)} seeds' mean returns"
    seeds = len(entry["seeds"])
    spread = "line and FAS: mean over seeds" if seeds > 1 else "no band: one seed (per-episode returns not stored)"
    return plot_fas(results, RESULTS / f"srl_fas_{env_id}.png", band=bands,
                    title=f"{env_id}: return against ASL, {seeds} seed{'s' if seeds != 1 else ''}, "
                          f"{entry['steps']:,} env steps of training;\n{entry['fas_episodes_per_asl']} episodes per "
                          f"ASL (MPC {entry['mpc_episodes_per_asl']}); {spread}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--sequence-length", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=10, help="FAS episodes per ASL")
    parser.add_argument("--mpc-episodes", type=int, default=3, help="FAS episodes per ASL for MPC (it is slow)")
    parser.add_argument("--mpc-samples", type=int, default=100)
    parser.add_argument("--mpc-iterations", type=int, default=3)
    parser.add_argument("--mpc-horizon", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="runs at once (torch threads split between them)")
    parser.add_argument("--runs", type=Path, default=Path("runs/sweeps"), help="where the sweep folder goes")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from srl_fas.json")
    args = parser.parse_args()
    if args.plot_only:
        print(f"wrote {plot_env(args.env)}")
        return
    sweep = write_grid(f"srl_fas_{args.env}", grid(args), "srl_fas.py")
    root = args.runs / sweep.name
    run_grid(sweep, root, args.workers)
    print(f"wrote {write_report(root, RESULTS / f'srl_fas_{args.env}_report')}")
    entry = summary(args, root, sweep)
    merge_result("srl_fas", args.env, entry)
    plot_env(args.env)
    print(f"{'method':10s} {'FAS':>14s} {'ASL-1 return':>14s}")
    for name, m in entry["methods"].items():
        print(f"{name:10s} {m['fas_mean']:8.3f} ± {m['fas_std']:.3f} {m['asl1_return_mean']:14.1f}")


if __name__ == "__main__":
    main()

"""SRL against SAC-1, SAC-J and MPC on FAS, at the same env-step budget (issue 3).

For each seed: train SRL-J, SAC-1 and SAC-J (action repeat J) for ``--steps`` primitive env steps;
MPC plans by CEM through the SRL run's learned model. Every method then gets a FAS sweep
(open-loop ASL 1..30). Writes ``benchmarks/results/srl_fas.json`` (per env: per-seed FAS and
full-frequency return, means) and ``srl_fas_<env>.png`` (return against ASL, one line per method).
Runs are resumable cadence run folders under ``--runs``. Seeds already in the results file for the same
env and budget are kept, so seeds can be added one invocation at a time (``--seeds 2 3`` after ``--seeds 1``).

    python benchmarks/srl_fas.py --env InvertedPendulum-v5 --seeds 1 2 3 --steps 20000
    python benchmarks/srl_fas.py --env Reacher-v5 --seeds 1 2 3 --steps 30000
    python benchmarks/srl_fas.py --env Hopper-v5 --seeds 1 --steps 50000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, merge_result, train_or_resume

from cadence.agents.planning import CEMConfig
from cadence.evaluation.fas import ASL_GRID, PUBLISHED_SAC_J_FAS, FASResult, env_family
from cadence.evaluation.plots import plot_fas
from cadence.runs import evaluate_fas

#: Shorter warm-up and more frequent evaluation than the defaults, for small budgets.
ENV_OVERRIDES = {
    "InvertedPendulum-v5": ["agent.learning_starts=1000", "train.eval_every=2000", "train.eval_episodes=5"],
    "Reacher-v5": ["agent.learning_starts=2000", "train.eval_every=5000", "train.eval_episodes=5"],
    "Hopper-v5": ["agent.learning_starts=5000", "train.eval_every=10000", "train.eval_episodes=5"],
}


def fas_of(run_dir: Path, episodes: int, planner: CEMConfig | None = None) -> FASResult:
    """The run's FAS result, read back if this sweep was done before."""
    path = run_dir / ("fas_mpc.json" if planner else "fas.json")
    if path.is_file() and path.stat().st_mtime >= (run_dir / "metrics.json").stat().st_mtime - 60:
        data = json.loads(path.read_text())  # a sweep of this very training (not of a shorter earlier budget)
        if len(data["returns"][0]) == episodes:
            return FASResult(data["env_id"], data["asl"], data["returns"], data["fas"], data["r_max"], data["shift"])
    return evaluate_fas(run_dir, ASL_GRID, episodes, seed=0, planner=planner)


def stored_seeds(env_id: str, steps: int, methods: list[str]) -> dict[str, dict[int, tuple]]:
    """Per method, ``{seed: (fas, per-ASL mean return, eval curve)}`` already recorded for this env and budget."""
    path = RESULTS / "srl_fas.json"
    entry = json.loads(path.read_text()).get(env_id) if path.is_file() else None
    if not entry or entry.get("steps") != steps:
        return {m: {} for m in methods}
    out: dict[str, dict[int, tuple]] = {}
    for m in methods:
        stored = entry["methods"].get(m, {})
        per_asl = stored.get("return_per_asl")
        if per_asl is None and len(stored.get("fas", {})) == 1:  # older file: a single seed's mean is that seed's
            per_asl = {s: stored["mean_return_per_asl"] for s in stored["fas"]}
        out[m] = {int(s): (fas, per_asl[s], stored.get("eval_curves", {}).get(s, []))
                  for s, fas in stored.get("fas", {}).items() if per_asl and s in per_asl}
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="InvertedPendulum-v5")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--sequence-length", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=10, help="FAS episodes per ASL")
    parser.add_argument("--mpc-episodes", type=int, default=3, help="FAS episodes per ASL for MPC (it is slow)")
    parser.add_argument("--mpc-samples", type=int, default=100)
    parser.add_argument("--mpc-iterations", type=int, default=3)
    parser.add_argument("--mpc-horizon", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_srl_fas"))
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from srl_fas.json")
    args = parser.parse_args()
    if args.plot_only:
        print(f"wrote {plot_env(args.env)}")
        return
    torch.set_num_threads(args.threads)
    J = args.sequence_length
    base = ENV_OVERRIDES.get(args.env, [])
    methods = {
        f"SRL-{J}": ("srl", [*base, f"agent.sequence_length={J}"]),
        "SAC-1": ("sac", base),
        f"SAC-{J}": ("sac", [*base, f"agent.action_repeat={J}"]),
    }
    mpc = CEMConfig(horizon=args.mpc_horizon, samples=args.mpc_samples, iterations=args.mpc_iterations,
                    elites=max(2, args.mpc_samples // 10))
    per_seed: dict[str, dict[int, FASResult]] = {m: {} for m in [*methods, "MPC"]}
    curves: dict[str, dict[int, list]] = {m: {} for m in methods}
    asl = list(ASL_GRID)
    for name, seeds in stored_seeds(args.env, args.steps, list(per_seed)).items():
        for seed, (fas, per_asl, curve) in seeds.items():
            if seed not in args.seeds:  # keep it; its per-ASL mean stands in for its episodes
                per_seed[name][seed] = FASResult(args.env, asl, [[r] for r in per_asl], fas, 0.0, 0.0)
                if name in curves:
                    curves[name][seed] = [tuple(c) for c in curve]
    for seed in args.seeds:
        for name, (algo, overrides) in methods.items():
            run_dir = args.runs / f"{name}_{args.env}_s{seed}"
            curves[name][seed] = train_or_resume(algo, args.env, seed, args.steps, overrides, run_dir, args.threads)
            per_seed[name][seed] = fas_of(run_dir, args.episodes)
            print(f"{args.env} seed {seed} {name}: FAS {per_seed[name][seed].fas:.3f}, "
                  f"ASL-1 return {per_seed[name][seed].mean[0]:.1f}", flush=True)
        srl_dir = args.runs / f"SRL-{J}_{args.env}_s{seed}"
        per_seed["MPC"][seed] = fas_of(srl_dir, args.mpc_episodes, planner=mpc)
        print(f"{args.env} seed {seed} MPC: FAS {per_seed['MPC'][seed].fas:.3f}", flush=True)

    summary = {
        "env": args.env, "steps": args.steps, "seeds": sorted(per_seed["SAC-1"]), "sequence_length": J,
        "fas_episodes_per_asl": args.episodes, "mpc_episodes_per_asl": args.mpc_episodes,
        "mpc": {"horizon": mpc.horizon, "samples": mpc.samples, "elites": mpc.elites, "iterations": mpc.iterations},
        "published_sac_j_fas_gym_v2": PUBLISHED_SAC_J_FAS.get(env_family(args.env)),
        "methods": {},
    }
    for name, results in per_seed.items():
        fas = [r.fas for r in results.values()]
        full = [float(r.mean[0]) for r in results.values()]
        summary["methods"][name] = {
            "fas": {str(s): r.fas for s, r in results.items()}, "fas_mean": float(np.mean(fas)),
            "fas_std": float(np.std(fas)), "asl1_return_mean": float(np.mean(full)),
            "mean_return_per_asl": np.mean([r.mean for r in results.values()], axis=0).tolist(),
            "return_per_asl": {str(s): r.mean.tolist() for s, r in results.items()},
            "eval_curves": {str(s): c for s, c in curves.get(name, {}).items()},
        }
    merge_result("srl_fas", args.env, summary)

    plot_env(args.env)
    print(f"{'method':10s} {'FAS':>14s} {'ASL-1 return':>14s}")
    for name, m in summary["methods"].items():
        print(f"{name:10s} {m['fas_mean']:8.3f} ± {m['fas_std']:.3f} {m['asl1_return_mean']:14.1f}")


if __name__ == "__main__":
    main()

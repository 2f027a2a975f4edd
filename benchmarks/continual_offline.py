"""Continual offline RL on a collected data-set sequence: OER against ER, finetune and multitask (issue 17).

First makes the sequence's data sets with ``cadence collect --sequence`` (one SAC run per task: its medium data
set, plus random and expert data sets whose returns give the normalised scores). Then trains every method with the
same TD3+BC, memory size and gradient budget, ``--seeds`` each, as runs of ``cadence train <method> --sequence
NAME --memory N`` in one cadence sweep (``runs/sweeps/continual_offline/<method>/seed=N``, resumable; ``cadence
report`` reads it), and the ablations: ``mbes`` (MBES memory without dual cloning) and ``dbc`` (dual cloning with a
random memory), which show which part of OER carries any gain.

Writes ``benchmarks/results/continual_offline.json``, ``continual_offline_{return,normalized_score}.png`` (every
method's evaluation matrix, mean over seeds), ``continual_offline_metrics.png`` and ``cadence report``'s output
(OER against ER) in ``continual_offline_report/``.

The paper's claim (Gai et al., 2023): OER beats ER and finetune.

    python benchmarks/continual_offline.py [--sequence cheetah-vel-3] [--seeds 1 2 3] [--workers 2]
    python benchmarks/continual_offline.py --plot-only
    python benchmarks/continual_offline.py --smoke    # a minute of tiny everything in a temp folder; writes nothing
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, cpu_name, merge_result, run_dir, run_methods

METHODS = ("oer", "er", "finetune", "multitask", "mbes", "dbc")


#: --smoke: what keeps the SAC policy runs and the learners tiny
SMOKE_POLICY = ("agent.learning_starts=100", "agent.batch_size=16", "agent.hidden_sizes=[16, 16]",
                "train.eval_episodes=1")
SMOKE_AGENT = {"hidden_sizes": [16, 16], "batch_size": 32, "mbes_starts": 8, "mbes_horizon": 3,
               "mbes_model_epochs": 1}


def collect_sequence(args: argparse.Namespace) -> None:
    """The sequence's medium data sets (the training data) and its random and expert ones (the score's ends)."""
    from cadence.collection import CollectConfig, collect

    for kind in ("medium", "random", "expert"):
        collect(CollectConfig(sequence=args.sequence, kind=kind, size=args.size, policy_steps=args.policy_steps,
                              eval_every=args.policy_steps // 20, threads=args.workers, progress=False,
                              reference_episodes=2 if args.smoke else 10), SMOKE_POLICY if args.smoke else ())


def train_all(args: argparse.Namespace) -> dict:
    """Every (method, seed) run as one cadence sweep; returns their seconds."""
    config = {"train": {"sequence": args.sequence, "steps_per_task": args.steps_per_task,
                        "eval_every": args.steps_per_task // 4, "eval_episodes": 3, "torch_threads": 1,
                        "progress": False, "checkpoint_every": args.steps_per_task // 2,
                        **({"episode_steps": 50} if args.smoke else {})},
              "agent": {"memory": args.memory, **(SMOKE_AGENT if args.smoke else {})}}
    return run_methods(f"continual_offline_{args.sequence}", {m: (m, config) for m in args.methods}, args.seeds,
                       args.runs, args.workers)


def summarise(args: argparse.Namespace, times: dict) -> dict:
    """Every record's matrix and metrics per method and seed, and their means over seeds."""
    from cadence.evaluation.continual import ContinualEvaluation, summary

    out: dict = {}
    for method in args.methods:
        per_seed: dict = {}
        for seed in args.seeds:
            run = run_dir(args.runs, method, seed)
            per_seed[str(seed)] = {"seconds": times.get((method, seed))}
            for path in sorted(run.glob("continual_*.json")):
                rec = ContinualEvaluation.from_dict(json.loads(path.read_text())["record"])
                per_seed[str(seed)][rec.metric_name] = {"matrix": rec.matrix.tolist(), "metrics": summary(rec)}
        out[method] = {"per_seed": per_seed}
        for name in [k for k in per_seed[str(args.seeds[0])] if k != "seconds"]:
            keys = per_seed[str(args.seeds[0])][name]["metrics"]
            out[method][name] = {k: float(np.mean([per_seed[str(s)][name]["metrics"][k] for s in args.seeds]))
                                 for k in keys if np.isscalar(per_seed[str(args.seeds[0])][name]["metrics"][k])}
    return out


def plot(result: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cadence.evaluation.continual import ContinualEvaluation
    from cadence.evaluation.plots import plot_bars, plot_continual_methods

    methods, seeds, paths = result["methods"], result["seeds"], []
    names = [n for n in ("return", "normalized_score") if n in result["results"][methods[0]]]
    for name in names:
        recs = {m: ContinualEvaluation(result["tasks"], metric_name=name, higher_is_better=True, matrix=np.mean(
            [result["results"][m]["per_seed"][str(s)][name]["matrix"] for s in seeds], axis=0)) for m in methods}
        what = "return" if name == "return" else "normalised score (0 random, 100 expert)"
        paths.append(plot_continual_methods(
            recs, RESULTS / f"continual_offline_{name}.png",
            title=f"{result['sequence']}: {what} on every task after each task, mean of seeds "
                  f"{', '.join(map(str, seeds))}, {result['steps_per_task']:,} gradient steps per task"))
    headline = names[-1]
    bars = {m: {"average performance": result["results"][m][headline]["average_performance"],
                "forgetting": result["results"][m][headline]["forgetting"]} for m in methods}
    paths.append(plot_bars(bars, RESULTS / "continual_offline_metrics.png", headline.replace("_", " "),
                           f"{result['sequence']}: average final {headline.replace('_', ' ')} and forgetting per "
                           f"method (mean of {len(seeds)} seeds, memory {result['memory']:,})"))
    plt.close("all")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequence", default="cheetah-vel-3")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps-per-task", type=int, default=10_000, help="gradient steps on each task")
    parser.add_argument("--memory", type=int, default=10_000, help="transitions every memory keeps")
    parser.add_argument("--size", type=int, default=50_000, help="transitions per task's data set")
    parser.add_argument("--policy-steps", type=int, default=60_000, help="SAC steps of each task's policy run")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--runs", type=Path, default=Path("runs/sweeps/continual_offline"), help="the sweep folder")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets in a temp folder, to check the script")
    args = parser.parse_args()
    if args.smoke:
        import os
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="cadence_smoke_"))
        os.environ["CADENCE_DATA_DIR"] = str(root / "data")
        args.runs, args.size, args.policy_steps, args.steps_per_task, args.memory = root / "runs", 300, 400, 40, 200
        args.seeds, args.workers = args.seeds[:1], 1
    if args.plot_only:
        print("wrote", *plot(json.loads((RESULTS / "continual_offline.json").read_text())[args.sequence]))
        return
    collect_sequence(args)
    times = train_all(args)
    from cadence.envs.tasks import resolve_sequence

    result = {"sequence": args.sequence, "tasks": [label for label, _ in resolve_sequence(args.sequence)[1]],
              "methods": args.methods, "seeds": args.seeds, "steps_per_task": args.steps_per_task,
              "memory": args.memory, "size": args.size, "policy_steps": args.policy_steps,
              "results": summarise(args, times),
              "machine": f"{platform.machine()} ({cpu_name()}), torch {torch.__version__}"}
    if not args.smoke:
        merge_result("continual_offline", args.sequence, result)
        from cadence.report import write_report

        compare = ("oer", "er") if {"oer", "er"} <= set(args.methods) else None
        print(f"wrote {write_report(args.runs, RESULTS / 'continual_offline_report', compare=compare)}")
    for method in args.methods:
        line = "  ".join(f"{name}: avg {r['average_performance']:.1f} forgetting {r['forgetting']:.1f}"
                         for name, r in result["results"][method].items() if name != "per_seed")
        print(f"{method:>10}: {line}")
    if not args.smoke:
        print("wrote", *plot(result))


if __name__ == "__main__":
    main()

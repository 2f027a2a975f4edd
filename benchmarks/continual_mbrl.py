"""Continual model-based RL on the 5-task HalfCheetahBody sequence: HyperCRL against its baselines (issue 15).

Trains HyperCRL and the baselines (finetune, coreset, EWC, SI, multitask; single, one model per task, is the
forward-transfer reference) with the same dynamics MLP, planner, data budget and model updates, ``--seeds`` each,
as runs of ``cadence train <algo> --sequence HalfCheetahBody`` in one cadence sweep
(``runs/sweeps/continual_mbrl/<method>/seed=N``, resumable; ``cadence report`` reads it). Each run records two
matrices (MPC return, and the model's prediction error on held-out random transitions of every task), with periodic
rows inside each task.
Writes ``benchmarks/results/continual_mbrl.json``, ``continual_mbrl_{return,model_error}.png`` (every method's
matrix, mean over seeds) and ``continual_mbrl_metrics.png``. Then measures one evaluation row (every task x 5
episodes) through the batched task-aware planner against planning world by world, on the same trained model.

The paper's claim (Huang et al., 2021): HyperCRL forgets far less than finetune and comes near coreset, with a
memory that does not grow with the number of tasks.

    python benchmarks/continual_mbrl.py [--steps-per-task 5000] [--seeds 1 2] [--workers 2]
    python benchmarks/continual_mbrl.py --plot-only
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, cpu_name, merge_result, run_dir, run_methods

METHODS = ("hypercrl", "hypercrl-chunked", "hypercrl-chunked-lr1e-3", "finetune", "coreset", "ewc", "si", "multitask",
           "single")
SEQUENCE = "HalfCheetahBody"
#: per method, agent settings beyond the shared ones: the chunked hypernetwork (cadence's default until it was seen to
#: forget), also at the baselines' learning rate, since at a CPU budget of updates the paper's 1e-4 leaves it
#: under-trained
METHOD_AGENT = {"hypercrl-chunked": {"chunked": True}, "hypercrl-chunked-lr1e-3": {"chunked": True, "hnet_lr": 1e-3}}


def algo_of(method: str) -> str:
    return "hypercrl" if method.startswith("hypercrl") else f"mbrl-{method}"


def settings(args: argparse.Namespace, seed: int) -> dict:
    """The CPU benchmark's [train] and [agent] sections: CEMConfig.cpu()'s planner, a (200, 200) dynamics MLP,
    16 worlds collecting, 200-step episodes, 2 evaluation episodes per task (planning is nearly all the time)."""
    return {"train": {"sequence": SEQUENCE, "seed": seed, "steps_per_task": args.steps_per_task,
                      "random_steps": args.steps_per_task // 5, "worlds": 16, "train_every": args.steps_per_task // 5,
                      "model_steps": args.model_steps,
                      "episode_steps": 200, "eval_every": args.steps_per_task // 2, "eval_episodes": 2,
                      "heldout": 2000, "torch_threads": 1, "progress": False, "checkpoint_every": 2500},
            "agent": {"hidden_sizes": [200, 200], "horizon": 15, "samples": 100, "elites": 10, "iterations": 3}}


def train_all(args: argparse.Namespace) -> dict:
    """Every (method, seed) run as one cadence sweep; returns their seconds."""
    methods = {}
    for method in args.methods:
        config = settings(args, 0)  # the sweep's seed axis sets train.seed
        config["agent"].update(METHOD_AGENT.get(method, {}))
        methods[method] = (algo_of(method), config)
    return run_methods("continual_mbrl", methods, args.seeds, args.runs, args.workers)


def records(folder: Path) -> dict:
    from cadence.evaluation.continual import ContinualEvaluation

    return {name: ContinualEvaluation.from_dict(json.loads((folder / f"continual_{name}.json").read_text())["record"])
            for name in ("return", "model_error")}


def summarise(args: argparse.Namespace, methods: list[str], seeds: list[int], times: dict) -> dict:
    """Every metric per method and seed (forward transfer against the single run of the same seed)."""
    from cadence.evaluation.continual import summary

    out: dict = {}
    for method in methods:
        per_seed = {}
        for seed in seeds:
            own = records(run_dir(args.runs, method, seed))
            single = records(run_dir(args.runs, "single", seed)) if "single" in methods else None
            per_seed[str(seed)] = {
                name: {"matrix": np.where(np.isnan(rec.matrix), None, rec.matrix).tolist(),
                       "metrics": summary(rec, np.diag(single[name].matrix) if single else None)}
                for name, rec in own.items()}
            per_seed[str(seed)]["seconds"] = times.get((method, seed))
            per_seed[str(seed)]["old_task_memory_floats"] = old_task_memory(run_dir(args.runs, method, seed))
        out[method] = {"per_seed": per_seed}
        for name in ("return", "model_error"):
            keys = per_seed[str(seeds[0])][name]["metrics"]
            out[method][name] = {k: float(np.mean([per_seed[str(s)][name]["metrics"][k] for s in seeds]))
                                 for k in keys}
    return out


def old_task_memory(folder: Path) -> int:
    """Floats the finished learner keeps for tasks before the last (multitask: their transitions, in the loop)."""
    from cadence.agents.continual import ContinualModelBased
    from cadence.checkpoint import load_checkpoint
    from cadence.envs import make
    from cadence.runs import read_run_config

    algo, sections = read_run_config(folder)
    env = make(sections["train"].env)
    strategy = "hypercrl" if algo == "hypercrl" else algo.removeprefix("mbrl-")
    learner = ContinualModelBased(env.observation_space, env.action_space, strategy, sections["agent"])
    bundle = load_checkpoint(folder)
    learner.load_state_dict(bundle["agent"])
    kept = learner.old_task_memory()
    if kept is None:  # multitask: every earlier task's buffer
        buffers = bundle["buffer"]["buffers"][:-1]
        row = 2 * env.observation_space.shape[0] + env.action_space.shape[0] + 1
        kept = sum(int(b["size"]) for b in buffers) * row
    return kept


def planner_speed(args: argparse.Namespace, seed: int, episodes: int = 5) -> dict:
    """One evaluation row of the trained HyperCRL run: every task x ``episodes``, batched (one planner call per step
    for all worlds) against world by world (one call per world and step), same seeds and planner settings."""
    from cadence.agents.continual import ContinualModelBased
    from cadence.checkpoint import load_checkpoint
    from cadence.envs import make
    from cadence.envs.batched.episodes import task_returns
    from cadence.envs.tasks import resolve_sequence
    from cadence.runs import read_run_config

    torch.set_num_threads(2)
    folder = run_dir(args.runs, "hypercrl", seed)
    _, sections = read_run_config(folder)
    env = make(sections["train"].env)
    model = ContinualModelBased(env.observation_space, env.action_space, "hypercrl", sections["agent"])
    model.load_state_dict(load_checkpoint(folder)["agent"])
    family, tasks = resolve_sequence(SEQUENCE)
    params = [p for _, p in tasks]
    timings = {}
    for mode, batch in (("batched", True), ("world_by_world", False)):
        planner = model.planner(generator=torch.Generator().manual_seed(0))
        start = time.perf_counter()
        returns = task_returns(family.name, planner.act_sequence, params, episodes, seed=10_000, task_aware=True,
                               batch_policy=batch, max_episode_steps=200)
        timings[mode] = {"seconds": time.perf_counter() - start, "mean_return_per_task": returns.mean(1).tolist()}
    timings["speedup"] = timings["world_by_world"]["seconds"] / timings["batched"]["seconds"]
    timings["worlds"] = len(params) * episodes
    return timings


def plot(result: dict) -> list[Path]:
    """Each method's mean matrix (over seeds) for both measures, and a bar chart of the headline metrics."""
    import matplotlib.pyplot as plt

    from cadence.evaluation.continual import ContinualEvaluation
    from cadence.evaluation.plots import plot_bars, plot_continual_methods

    methods, seeds = result["methods"], result["seeds"]
    paths = []
    for name, better in (("return", True), ("model_error", False)):
        recs = {}
        for method in methods:
            mats = [np.array(result["results"][method]["per_seed"][str(s)][name]["matrix"], dtype=float)
                    for s in seeds]
            rec = ContinualEvaluation(result["tasks"], metric_name=name, higher_is_better=better,
                                      matrix=np.mean(mats, axis=0))
            recs[method] = rec
        what = "MPC return (200-step episodes)" if name == "return" else "model MSE on held-out random transitions"
        paths.append(plot_continual_methods(
            recs, RESULTS / f"continual_mbrl_{name}.png",
            title=f"{SEQUENCE}: {what}, mean of seeds {', '.join(map(str, seeds))}, "
                  f"{result['steps_per_task']:,} env steps per task"))
    bars = {f"{m}": {"forgetting (return)": result["results"][m]["return"]["forgetting"],
                     "average return": result["results"][m]["return"]["average_performance"]} for m in methods}
    paths.append(plot_bars(bars, RESULTS / "continual_mbrl_metrics.png", "MPC return",
                           f"{SEQUENCE}: average final return and forgetting per method (mean of "
                           f"{len(seeds)} seeds); forgetting = return after the task - return at the end"))
    plt.close("all")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps-per-task", type=int, default=5000)
    parser.add_argument("--model-steps", type=int, default=200, help="model updates per fit (5 fits per task)")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--runs", type=Path, default=Path("runs/sweeps/continual_mbrl"), help="the sweep folder")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="skip the batched-planner timing")
    args = parser.parse_args()
    if args.plot_only:
        print("wrote", *plot(json.loads((RESULTS / "continual_mbrl.json").read_text())["HalfCheetahBody"]))
        return
    times = train_all(args)
    from cadence.envs.tasks import resolve_sequence

    result = {"sequence": SEQUENCE, "tasks": [label for label, _ in resolve_sequence(SEQUENCE)[1]],
              "methods": args.methods, "seeds": args.seeds, "steps_per_task": args.steps_per_task,
              "settings": settings(args, 0), "results": summarise(args, args.methods, args.seeds, times),
              "machine": f"{platform.machine()} ({cpu_name()}), torch {torch.__version__}"}
    if "hypercrl" in args.methods and not args.skip_speed:
        result["planner_speed"] = planner_speed(args, args.seeds[0])
        print(f"evaluation row: batched {result['planner_speed']['batched']['seconds']:.1f} s, world by world "
              f"{result['planner_speed']['world_by_world']['seconds']:.1f} s "
              f"({result['planner_speed']['speedup']:.1f}x)")
    merge_result("continual_mbrl", SEQUENCE, result)
    for method in args.methods:
        r, e = result["results"][method]["return"], result["results"][method]["model_error"]
        print(f"{method:>10}: return avg {r['average_performance']:8.1f} forgetting {r['forgetting']:8.1f} | "
              f"model error avg {e['average_performance']:.3f} forgetting {e['forgetting']:.3f}")
    print("wrote", *plot(result))


if __name__ == "__main__":
    main()

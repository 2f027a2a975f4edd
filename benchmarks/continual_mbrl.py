"""Continual model-based RL on a sequence whose tasks conflict: HyperCRL against its baselines.

The sequence is ``halfcheetah-motor-3`` (normal, every motor reversed, the back leg's reversed): on the same (s, a)
the tasks' true next states differ by about 0.6-1.4 step variances (the task gap, measured here first), so a model
that learns one task must unlearn the others. HalfCheetahBody's x1.25 parts could not show forgetting (gap 0.004).

Methods, each ``--seeds`` times, as one cadence sweep (``runs/sweeps/continual_mbrl``; the grid is written to
``benchmarks/sweeps/continual_mbrl.toml``; resumable): HyperCRL with cadence's defaults (``hypercrl``), with the
reference code's ``hnet`` preset (``hypercrl-reference``), the chunked hypernetwork (``hypercrl-chunked``), and
the baselines finetune, coreset, EWC, SI, multitask and single (one model per task: the single-task reference). All
share the planner, data budget, held-out data, a (200, 200) dynamics MLP and 2 model updates per env step (the
reference code's ratio); the reference preset takes its own batch, hypernetwork and training settings.

Each run records the MPC return and three model errors on held-out random transitions of every task (per-column
normalised state and reward error, and the raw MSE) at each task's start (zero-shot), and end. Writes
``benchmarks/results/continual_mbrl.json`` (per method and seed: matrices, every metric of
:func:`cadence.evaluation.continual.summary`, both forgetting definitions; the task gap and the no-change
predictor's errors), ``continual_mbrl_*.png`` and ``cadence report``'s output in ``continual_mbrl_report/``.

The paper's claim (Huang et al., 2021): HyperCRL forgets far less than finetune and comes near coreset, with a
memory that does not grow with the number of tasks.

    python benchmarks/continual_mbrl.py [--steps-per-task 3000] [--seeds 1 2 3] [--workers 2]
    python benchmarks/continual_mbrl.py --plot-only
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, cpu_name, merge_result, paired_difference, run_dir, run_grid, write_grid

METHODS = ("hypercrl-reference", "hypercrl", "hypercrl-chunked", "finetune", "coreset", "ewc", "si", "multitask",
           "single")
SEQUENCE = "halfcheetah-motor-3"
RECORDS = ("return", "state_error", "reward_error", "model_error")
#: per method, agent settings beyond the shared ones
METHOD_AGENT = {"hypercrl-chunked": {"chunked": True}, "hypercrl-reference": {"preset": "reference"}}
#: --ablation: the reference preset with one option at cadence's default, per option, so each option's own effect
#: is the difference to ``hypercrl-reference``. ``hidden_sizes`` and ``model_updates_per_step`` are absent: the
#: benchmark gives every method the same (200, 200) net and 2 updates per env step. Switching ``two_optimizers`` off
#: also switches off the look-ahead, a step of the two-optimiser update.
ABLATED = ("hnet_hidden_sizes", "batch_size", "activation", "init", "two_optimizers", "train_logvar_bounds",
           "loss_reduction", "normalize_per_task", "look_ahead", "output_bias_l1", "plan_with_true_reward",
           "plan_gamma", "plan_init_std")
ABLATION_PREFIX = "ref-default-"


def ablations() -> dict[str, dict]:
    """``ref-default-<option>`` -> the agent settings of that ablation (the preset, the option at its default)."""
    from cadence.agents.continual import PRESETS
    from cadence.world_models.hyper import PLAIN_HNET_HIDDEN

    defaults = {**PRESETS["default"], "hnet_hidden_sizes": list(PLAIN_HNET_HIDDEN)}
    return {f"{ABLATION_PREFIX}{name}": {"preset": "reference", name: defaults[name]} for name in ABLATED}


def algo_of(method: str) -> str:
    return "hypercrl" if method.startswith(("hypercrl", ABLATION_PREFIX)) else f"mbrl-{method}"


def agent_of(method: str) -> dict:
    """A method's agent settings beyond the shared ones."""
    return ablations()[method] if method.startswith(ABLATION_PREFIX) else METHOD_AGENT.get(method, {})


def settings(args: argparse.Namespace) -> dict:
    """The CPU benchmark's [train] and [agent] sections: a CPU planner (horizon 15, 100 samples, 3 iterations),
    16 worlds collecting, half of each task's steps uniform random (so the models also cover the held-out data's
    random-policy states: with a fifth, the single-task error was 0.06-0.18 and the gap only 3.6-9.9x it),
    200-step episodes, 2 evaluation episodes per task (planning is most of the time)."""
    return {"train": {"sequence": SEQUENCE, "steps_per_task": args.steps_per_task,
                      "random_steps": args.steps_per_task // 2, "worlds": 16, "train_every": args.steps_per_task // 5,
                      "model_steps": args.model_steps, "episode_steps": 200, "eval_every": 0, "eval_episodes": 2,
                      "heldout": 2000, "task_gap": 1000, "torch_threads": 1, "progress": False,
                      "checkpoint_every": 1500, **({"device": args.device} if args.device != "cpu" else {})},
            "agent": {"horizon": 15, "samples": 100, "elites": 10, "iterations": 3}}


def grid(args: argparse.Namespace) -> dict:
    shared = settings(args)
    methods = {}
    for method in args.methods:
        entry = {"algo": algo_of(method)}
        for section, keys in shared.items():
            entry.update({f"{section}.{k}": v for k, v in keys.items()})
        entry.update({f"agent.{k}": v for k, v in agent_of(method).items()})
        # every method's dynamics MLP is (200, 200) (the paper's and the reference preset's (200,)*4, cadence's
        # default (200,)*3, cost the hypernetworks 2-3x more per update on a CPU)
        entry["agent.hidden_sizes"] = [200, 200]
        if agent_of(method).get("preset") == "reference":
            entry.pop("train.model_steps")  # the preset's own ratio, 2 updates per env step, as everyone's
        methods[method] = entry
    name = "continual_mbrl_ablation" if args.ablation else "continual_mbrl"
    compare = ["hypercrl", "finetune"] if {"hypercrl", "finetune"} <= set(methods) else list(methods)[:2]
    return {"sweep": {"name": name, **({"compare": compare} if len(compare) == 2 else {})}, "methods": methods,
            "axes": {"train.seed": list(args.seeds)}}


def finished(folder: Path) -> bool:
    status = folder / "sweep_run.json"
    return status.is_file() and json.loads(status.read_text()).get("status") == "done"


def records(folder: Path) -> dict:
    from cadence.evaluation.continual import ContinualEvaluation

    out = {}
    for name in RECORDS:
        data = json.loads((folder / f"continual_{name}.json").read_text())
        out[name] = (ContinualEvaluation.from_dict(data["record"]), data)
    return out


def zero_shot_values(record) -> np.ndarray:
    """Each task's value at its first evaluation (the loop's zero-shot row at the task's start)."""
    return np.array([next(r.values[k] for r in record.history if r.task_index == k) for k in range(record.n_tasks)])


def summarise(args: argparse.Namespace) -> dict:
    """Every metric per method and seed (forward transfer against the single run of the same seed)."""
    from cadence.evaluation.continual import forgetting_chaudhry, summary

    out: dict = {}
    for method in args.methods:
        per_seed = {}
        for seed in args.seeds:
            folder = run_dir(args.runs, method, seed)
            own = records(folder)
            single = records(run_dir(args.runs, "single", seed)) if "single" in args.methods else None
            entry = {}
            for name, (rec, data) in own.items():
                reference = np.diag(single[name][0].matrix) if single else None
                forgot = forgetting_chaudhry(rec)
                zero_shot = zero_shot_values(rec)
                # what each task gained while it trained (zero-shot to task end), and the share of it forgotten
                gain = (1.0 if rec.higher_is_better else -1.0) * (np.diag(rec.matrix) - zero_shot)
                entry[name] = {"matrix": np.where(np.isnan(rec.matrix), None, rec.matrix).tolist(),
                               "metrics": summary(rec, reference),
                               "forgetting_chaudhry_per_task": forgot.tolist(), "zero_shot": zero_shot.tolist(),
                               "gain_per_task": gain.tolist(),
                               "forgotten_share_per_task": (forgot / gain[:-1]).tolist()}
                if "no_change" in data:
                    entry[name]["no_change"] = data["no_change"]
            entry["seconds"] = json.loads((folder / "sweep_run.json").read_text()).get("seconds")
            entry["task_gap"] = json.loads((folder / "task_gap.json").read_text())
            per_seed[str(seed)] = entry
        out[method] = {"per_seed": per_seed}
        for name in RECORDS:
            keys = per_seed[str(args.seeds[0])][name]["metrics"]
            out[method][name] = {k: float(np.mean([per_seed[str(s)][name]["metrics"][k] for s in args.seeds]))
                                 for k in keys}
    return out


def plot(result: dict) -> list[Path]:
    """Each method's mean matrix (over seeds) per record, with the no-change predictor's error in the title."""
    import matplotlib.pyplot as plt

    from cadence.evaluation.continual import ContinualEvaluation
    from cadence.evaluation.plots import plot_continual_methods

    methods, seeds = result["methods"], result["seeds"]
    paths = []
    what = {"return": "MPC return (200-step episodes)",
            "state_error": "normalised state error on held-out random transitions",
            "reward_error": "normalised reward error on held-out random transitions",
            "model_error": "raw MSE of (s', r) on held-out random transitions"}
    for name in RECORDS:
        recs = {}
        for method in methods:
            mats = [np.array(result["results"][method]["per_seed"][str(s)][name]["matrix"], dtype=float)
                    for s in seeds]
            recs[method] = ContinualEvaluation(result["tasks"], metric_name=name, higher_is_better=name == "return",
                                               matrix=np.mean(mats, axis=0))
        floor = ""
        if name != "return":
            no_change = result["results"][methods[0]]["per_seed"][str(seeds[0])][name]["no_change"]
            floor = f"; no-change predictor: {', '.join(f'{v:.3g}' for v in no_change)}"
        paths.append(plot_continual_methods(
            recs, RESULTS / f"continual_mbrl_{name}.png",
            title=f"{SEQUENCE}: {what[name]}, mean of seeds {', '.join(map(str, seeds))}, "
                  f"{result['steps_per_task']:,} env steps per task{floor}"))
    plt.close("all")
    return paths


def plot_ablation(result: dict) -> Path:
    """Per ablated option: the seed-paired difference to the reference preset (ablation minus preset), mean over
    seeds with a Student-t 95% interval, for the final state error, its Chaudhry forgetting and the MPC return."""
    import matplotlib.pyplot as plt

    from cadence.evaluation.plots import save_figure

    panels = (("state_error", "average_performance", "final state error (avg over tasks)"),
              ("state_error", "forgetting_chaudhry", "state forgetting (Chaudhry)"),
              ("return", "average_performance", "MPC return, final avg"))
    options = [m.removeprefix(ABLATION_PREFIX) for m in result["methods"] if m.startswith(ABLATION_PREFIX)]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 0.45 * len(options) + 2.6), sharey=True)
    for ax, (record, key, label) in zip(axes, panels):
        means, halves = zip(*(paired_difference(result, f"{ABLATION_PREFIX}{o}", "hypercrl-reference", record, key)
                              for o in options))
        ax.barh(range(len(options)), means, xerr=halves, color="tab:blue", alpha=0.7, capsize=3,
                label=f"mean of {len(result['seeds'])} seeds, 95% t-interval")
        ax.axvline(0.0, color="black", linewidth=0.8)
        better = "> 0" if record == "return" else "< 0"
        ax.set_xlabel(f"{label}\n(option at default) − (preset); {better}: default better")
        ax.set_yticks(range(len(options)), options)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_ylabel("option at cadence's default")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{SEQUENCE}: each reference-preset option's own effect ({result['steps_per_task']:,} env steps "
                 f"per task, {result['device']})")
    fig.tight_layout()
    return save_figure(fig, RESULTS / "continual_mbrl_ablation.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, *ablations()])
    parser.add_argument("--ablation", action="store_true",
                        help="instead of the methods: the reference preset and, per option, the preset with that "
                             "option at cadence's default (runs/sweeps/continual_mbrl_ablation, "
                             "continual_mbrl_ablation.json)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps-per-task", type=int, default=3000)
    parser.add_argument("--model-steps", type=int, default=1200, help="model updates per fit (5 fits per task, and "
                        "one at its end; the default is the reference code's 2 updates per env step, 2 x "
                        "steps-per-task / 5), for every method but the reference preset, which sets its own ratio")
    parser.add_argument("--device", default="cpu", help="train.device of every run (cuda: on a GPU)")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="the sweep folder (runs/sweeps/continual_mbrl, or ..._ablation with --ablation)")
    parser.add_argument("--no-train", action="store_true",
                        help="summarise the runs already in --runs (only methods whose every seed finished)")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    name = "continual_mbrl_ablation" if args.ablation else "continual_mbrl"
    if args.ablation:
        args.methods = ["hypercrl-reference", *ablations()]
    args.runs = args.runs or Path("runs/sweeps") / name
    if args.plot_only:
        result = json.loads((RESULTS / f"{name}.json").read_text())[SEQUENCE]
        print("wrote", *([plot_ablation(result)] if args.ablation else plot(result)))
        return
    from cadence.envs.tasks import resolve_sequence
    from cadence.report import write_report

    sweep = write_grid(name, grid(args), "continual_mbrl.py")
    if args.no_train:
        args.methods = [m for m in args.methods if all(finished(run_dir(args.runs, m, s)) for s in args.seeds)]
        if not args.methods:
            raise SystemExit(f"no method has every seed finished in {args.runs}")
    else:
        run_grid(sweep, args.runs, args.workers)
    print(f"wrote {write_report(args.runs, RESULTS / f'{name}_report')}")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device.startswith("cuda") else \
        cpu_name() if args.device == "cpu" else "a GPU"
    result = {"sequence": SEQUENCE, "tasks": [label for label, _ in resolve_sequence(SEQUENCE)[1]],
              "methods": args.methods, "seeds": args.seeds, "steps_per_task": args.steps_per_task,
              "settings": settings(args), "results": summarise(args), "device": f"{args.device} ({device})",
              "machine": f"{platform.machine()} ({cpu_name()}), torch {torch.__version__}"}
    merge_result(name, SEQUENCE, result)
    for method in args.methods:
        r, e = result["results"][method]["return"], result["results"][method]["state_error"]
        print(f"{method:>18}: return avg {r['average_performance']:8.1f} | state error avg "
              f"{e['average_performance']:.3f} forgetting {e['forgetting']:.3f} "
              f"(Chaudhry {e['forgetting_chaudhry']:.3f})")
    print("wrote", *([plot_ablation(result)] if args.ablation else plot(result)))


if __name__ == "__main__":
    main()

"""Regenerate the measured tables of benchmarks/README.md and docs/ARCHITECTURE.md from the results JSON, so no
figure is typed by hand.

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in one of those files and is made by
``RENDERERS[NAME]`` from ``benchmarks/results/<file>.json``. Aggregates are cadence report's: the interquartile mean
over seeds with a 95% stratified-bootstrap interval (:func:`cadence.evaluation.aggregate.aggregate`).

    python benchmarks/tables.py            # rewrite every table whose JSON exists
    python benchmarks/tables.py --check    # exit 1 if a table differs from its JSON (for CI or review)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cadence.agents.lifelong_bc import LIBERO_EWC_LAMBDA
from cadence.evaluation.aggregate import Interval, aggregate, iqm

HERE = Path(__file__).parent
README = HERE / "README.md"
#: the files whose table blocks are generated
TARGETS = (README, HERE.parent / "docs" / "ARCHITECTURE.md")
RESULTS = HERE / "results"


def interval(values: Sequence[float], digits: int = 3) -> str:
    """``IQM [low, high]`` of per-seed values."""
    return aggregate(list(values)).format(digits)


def _interval(values: Sequence[float]) -> Interval:
    return aggregate(list(values))


def _per_seed(result: dict, method: str, record: str, key: str) -> list[float]:
    seeds = result["results"][method]["per_seed"]
    return [float(seeds[str(s)][record]["metrics"][key]) for s in result["seeds"]]


def forgotten_over_no_change(run: dict) -> np.ndarray:
    """Per task but the last: Chaudhry forgetting over the gain against the no-change predictor (errors)."""
    matrix = np.array(run["matrix"], dtype=float)
    gain = np.array(run["no_change"]) - np.diag(matrix)
    return np.array(run["forgetting_chaudhry_per_task"]) / gain[:-1]


def continual_mbrl() -> str:
    """The continual model-based table: state/reward error, both forgetting definitions, return; the task gap, the
    single-task error and the no-change predictor above it; the HyperCRL-vs-finetune outcome below it."""
    data = json.loads((RESULTS / "continual_mbrl.json").read_text())
    key = next(iter(data))
    result = data[key]
    methods, seeds = result["methods"], result["seeds"]
    first = result["results"][methods[0]]["per_seed"]
    gaps = [first[str(s)]["task_gap"]["min_state_gap"] for s in seeds]
    no_change = np.mean([first[str(s)]["state_error"]["no_change"] for s in seeds], axis=0)
    lines = [f"Sequence `{key}` ({', '.join(result['tasks'])}), {result['steps_per_task']:,} env steps per task, "
             f"seeds {', '.join(map(str, seeds))}; IQM over seeds [95% bootstrap CI]. Errors are per-column "
             "normalised by the first task's held-out std (1 = predicting each column's mean).", ""]
    if "single" in methods:
        cells = np.concatenate([np.diag(np.array(result["results"]["single"]["per_seed"][str(s)]["state_error"]
                                                 ["matrix"], dtype=float)) for s in seeds])
        typical = iqm(cells)
        lines.append(f"- task gap (smallest, normalised): {np.mean(gaps):.3g}; a single-task model's state error (the "
                     f"`single` runs' {len(cells)} diagonal cells): IQM {typical:.3g}, so the gap is "
                     f"**{np.mean(gaps) / typical:.1f}x** it (10x needed to show forgetting); their mean "
                     f"{cells.mean():.3g} ({np.mean(gaps) / cells.mean():.1f}x) is pulled up by the worst cell, "
                     f"{cells.max():.3g}.")
    if "finetune" in methods:
        runs = [result["results"]["finetune"]["per_seed"][str(s)]["state_error"] for s in seeds]
        shares = np.mean([run["forgotten_share_per_task"] for run in runs], axis=0)
        over_floor = np.mean([forgotten_over_no_change(run) for run in runs], axis=0)
        labels = result["tasks"]
        lines.append("- finetune forgets, per task, this share of what it gained on it (mean over seeds): of its gain "
                     "over the no-change predictor (no-change error minus task-end error) "
                     + ", ".join(f"{label} {v:.2f}" for label, v in zip(labels, over_floor))
                     + "; of its gain over its own zero-shot error (which for the first task is an untrained "
                     "model's, several times the no-change one) "
                     + ", ".join(f"{label} {v:.2f}" for label, v in zip(labels, shares)) + ".")
    lines.append(f"- no-change predictor (s' = s, r = 0), state error per task: "
                 f"{', '.join(f'{v:.3g}' for v in no_change)}.")
    lines += ["", "| method | state error, final avg ↓ | state forgetting (Chaudhry) ↓ | state forgetting "
              "(Continual World) ↓ | reward error, final avg ↓ | MPC return, final avg ↑ | return forgetting "
              "(Chaudhry) ↓ |", "|---|---|---|---|---|---|---|"]
    for method in methods:
        cells = [interval(_per_seed(result, method, "state_error", "average_performance")),
                 interval(_per_seed(result, method, "state_error", "forgetting_chaudhry")),
                 interval(_per_seed(result, method, "state_error", "forgetting")),
                 interval(_per_seed(result, method, "reward_error", "average_performance")),
                 interval(_per_seed(result, method, "return", "average_performance"), 1),
                 interval(_per_seed(result, method, "return", "forgetting_chaudhry"), 1)]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", outcome(result)]
    return "\n".join(lines)


def outcome(result: dict) -> str:
    """The paper's claim, HyperCRL forgets less than finetune, against the measured Chaudhry state forgetting."""
    if not {"hypercrl", "finetune"} <= set(result["methods"]):
        return ""
    hyper = _interval(_per_seed(result, "hypercrl", "state_error", "forgetting_chaudhry"))
    fine = _interval(_per_seed(result, "finetune", "state_error", "forgetting_chaudhry"))
    if hyper.high < fine.low:
        verdict = "**HyperCRL forgets less than finetune** (the intervals do not overlap): the paper's claim holds here"
    elif hyper.low > fine.high:
        verdict = "**HyperCRL forgets more than finetune** (the intervals do not overlap): the paper's claim fails here"
    else:
        verdict = ("**the intervals overlap**: these seeds cannot tell HyperCRL's forgetting from finetune's, so the "
                   "paper's claim is neither confirmed nor refuted here")
    return (f"HyperCRL against finetune, Chaudhry forgetting of the state error: {hyper.format()} against "
            f"{fine.format()}; {verdict}.")


def reference_ablation() -> str:
    """Each reference-preset option's own effect: the preset with that option at cadence's default, against the
    preset, for the final state error, its Chaudhry forgetting and the MPC return: the seed-paired difference, and
    the ablated runs' own IQM beside the preset's."""
    from common import paired_difference
    from continual_mbrl import ABLATION_PREFIX

    data = json.loads((RESULTS / "continual_mbrl_ablation.json").read_text())
    key = next(iter(data))
    result = data[key]
    seeds = result["seeds"]
    metrics = (("state_error", "average_performance", 3, "state error"),
               ("state_error", "forgetting_chaudhry", 3, "forgetting"), ("return", "average_performance", 1, "return"))
    base = ", ".join(f"{what} {interval(_per_seed(result, 'hypercrl-reference', record, k), digits)}"
                     for record, k, digits, what in metrics)
    preset = _per_seed(result, "hypercrl-reference", "state_error", "average_performance")
    spread = max(preset) / float(np.median(preset))
    main = json.loads((RESULTS / "continual_mbrl.json").read_text())[key]["steps_per_task"]
    budget = "" if main == result["steps_per_task"] else f" (the main table's {main:,}: cut to fit the CPU budget)"
    lines = [f"`benchmarks/continual_mbrl.py --ablation`: sequence `{key}`, {result['steps_per_task']:,} env steps per "
             f"task{budget}, seeds {', '.join(map(str, seeds))}, on {result['device']}. The preset itself: {base} "
             "(IQM [95% bootstrap CI]). Each row switches one option back to cadence's default. Per metric: the "
             "ablated runs' IQM [95% bootstrap CI], then Δ, that run minus the preset's run of the same seed, mean "
             "[95% Student-t interval]. The effect column names a metric where Δ's interval excludes 0 "
             "(\"paired\") or where the two bootstrap intervals do not overlap (\"apart\"); with 3 seeds both are "
             f"coarse, and the preset's own spread (its worst seed's state error {spread:.1f}x its median) widens "
             "every Δ.",
             "",
             "| option at cadence's default | state error, final avg ↓ (Δ) | state forgetting, Chaudhry ↓ (Δ) | "
             "MPC return, final avg ↑ (Δ) | effect of the default |", "|---|---|---|---|---|"]
    for method in (m for m in result["methods"] if m.startswith(ABLATION_PREFIX)):
        cells, effects = [], []
        for record, k, digits, what in metrics:
            own = _interval(_per_seed(result, method, record, k))
            ref = _interval(_per_seed(result, "hypercrl-reference", record, k))
            mean, half = paired_difference(result, method, "hypercrl-reference", record, k)
            cells.append(f"{own.format(digits)} (Δ {mean:+.{digits}f} [{mean - half:+.{digits}f}, "
                         f"{mean + half:+.{digits}f}])")
            how = [name for name, hit in (("paired", mean - half > 0 or mean + half < 0),
                                          ("apart", own.low > ref.high or own.high < ref.low)) if hit]
            if how:
                better = (own.point > ref.point) == (record == "return")
                effects.append(f"{what} {'better' if better else 'worse'} ({', '.join(how)})")
        lines.append(f"| `{method.removeprefix(ABLATION_PREFIX)}` | " + " | ".join(cells) + " | "
                     + ("; ".join(effects) or "none measurable") + " |")
    return "\n".join(lines)


def rollout_scaling() -> str:
    """cadence's rollout backend against raw mujoco.rollout by physics threads, and its overhead per world step."""
    data = json.loads((RESULTS / "batched_rollout_scaling.json").read_text())
    machine = data["machine"]
    lines = [f"{data['env']}, 256 worlds, uniform random actions, on a {machine['cpu_count']}-core host (python "
             f"{machine['python']}, mujoco {machine['mujoco']}); median env steps/s. Overheads are microseconds per "
             "world step over raw `mujoco.rollout`: the step's own work (no-reset peer against raw rollout) and the "
             "resets (timed around each autoreset).", "",
             "| physics threads | raw rollout | cadence, no resets (ratio) | cadence, autoreset (ratio) | raw us / "
             "world step | step overhead us | resets us (per reset) |", "|---|---|---|---|---|---|---|"]
    for threads in data["threads"]:
        entry = data["by_threads"][str(threads)]
        rates = {k: v["median"] for k, v in entry["env_steps_per_second"].items()}
        raw = rates["raw_rollout_256"]
        cost = entry["overhead_over_raw_rollout_256"]
        lines.append(f"| {threads} | {raw:,.0f} | {rates['cadence_256_no_resets']:,.0f} "
                     f"({rates['cadence_256_no_resets'] / raw:.2f}x) | {rates['cadence_256']:,.0f} "
                     f"({rates['cadence_256'] / raw:.2f}x) | {cost['raw_rollout_us_per_world_step']:.1f} | "
                     f"{cost['step_us_per_world_step']:.1f} | {cost['resets_us_per_world_step']:.1f} "
                     f"({cost['us_per_reset']:.0f} us; {cost['resets_per_world_step']:.3f} per world step) |")
    return "\n".join(lines)


def rollout_cuts() -> str:
    """The rollout backend's overhead before and after the reset and step cuts, and reset cost by batch size."""
    data = json.loads((RESULTS / "batched_rollout.json").read_text())
    ab = json.loads((RESULTS / "batched_rollout_ab.json").read_text())
    lines = [f"{data['env']}, 256 worlds, uniform random actions; microseconds per world step, timed inside each "
             "run: the step's own work outside the physics calls (no resets), and autoreset's resets. "
             + ab["how"] + ".", "",
             "| | run | step's own work | resets (per reset) |", "|---|---|---|---|"]
    for label, key in (("before", "before"), ("after", "after")):
        for i, run in enumerate(ab[key]["runs"], 1):
            lines.append(f"| {label} ({ab[key]['commit']}) | {i} | {run['step_us_per_world_step']:.2f} | "
                         f"{run['resets_us_per_world_step']:.2f} ({run['us_per_reset']:.0f} us) |")
    if "reset_batches" not in data:  # measured on a cadence without batched resets
        return "\n".join(lines)
    timing = data["reset_batches"]["us_per_world"]
    lines += ["", f"One `reset` of m worlds, microseconds per world, both paths giving Gymnasium's states bit for bit "
                  f"(BatchedEnv batches from {data['reset_batches']['batched_from']} worlds on):", "",
              "| worlds | one seeded generator per world | batched draws | speedup |", "|---|---|---|---|"]
    for m in sorted(timing, key=int):
        row = timing[m]
        lines.append(f"| {int(m):,} | {row['one_generator_per_world']:.2f} | {row['batched']:.2f} | "
                     f"{row['speedup']:.1f}x |")
    return "\n".join(lines)


def task_gaps() -> str:
    """Every sequence's smallest task gap against a single-task model's error."""
    data = json.loads((RESULTS / "task_gaps.json").read_text())
    lines = [f"{data['n']:,} random transitions per task, seed {data['seed']}; single-task model: a (200, 200) "
             f"Gaussian MLP, {data['fit_steps']:,} updates on the first task. Gaps and errors are per-column "
             "normalised by the first task's std of s' - s (1 = a typical step).", "",
             "| sequence | tasks | smallest state gap | smallest reward gap | single-task state error | gap / error "
             f"(≥ {data['min_ratio']:g} shows forgetting) |", "|---|---|---|---|---|---|"]
    for name, entry in data["sequences"].items():
        verdict = "**yes**" if entry["ratio"] >= data["min_ratio"] else "no"
        lines.append(f"| `{name}` | {', '.join(entry['labels'])} | {entry['min_state_gap']:.3g} | "
                     f"{entry['min_reward_gap']:.3g} | {entry['single_task_error']:.3g} | {entry['ratio']:.1f}x "
                     f"({verdict}) |")
    return "\n".join(lines)


def libero_world_models() -> str:
    """LIBERO-Spatial continual world models: each method's raw error just after each task and at the end, against
    the no-change predictor's, and Chaudhry forgetting (one seed: the section seeds every model with 0)."""
    from cadence.evaluation.continual import forgetting_chaudhry

    wm = json.loads((RESULTS / "libero.json").read_text())["worldmodels"]
    if "no_change" not in wm:
        raise FileNotFoundError("libero.json's worldmodels section predates the no-change baseline")
    no_change = float(np.mean(wm["no_change"]["raw_mse"]))
    lines = [f"LIBERO-Spatial, {len(wm['tasks'])} tasks, {wm['model_steps_per_task']:,} model steps per task, "
             f"{wm['quaternions']} quaternions; one seed. Raw MSE of (s' - s, r) on each task's held-out "
             f"demonstrations; the no-change predictor (s' = s, r = 0) scores {no_change:.3g} on average.", "",
             "| method | just after each task (mean) | after the last task (mean) | just after / no change | "
             "after the last / no change | Chaudhry forgetting | state error after the last / no change |",
             "|---|---|---|---|---|---|---|"]
    for method, entry in wm["methods"].items():
        matrix = np.array(entry["matrix"], dtype=float)
        diag, final = float(np.mean(np.diag(matrix))), float(np.mean(matrix[-1]))
        forgot = float(np.mean(forgetting_chaudhry(matrix, higher_is_better=False)))
        lines.append(f"| {method} | {diag:.3g} | {final:.3g} | {diag / no_change:.2f} | {final / no_change:.2f} | "
                     f"{forgot:.3g} | {entry['final_over_no_change']['state']:.2f} |")
    return "\n".join(lines)


def curricula_mazes() -> str:
    """CLUTR against domain randomisation on PointMazeLayout: the share of held-out layouts solved, per seed and as
    IQM [95% CI]; the teacher's generations and regret (CLUTR); what each proposed."""
    entry = json.loads((RESULTS / "curricula.json").read_text())["PointMazeLayout-v0"]
    seeds = entry["seeds"]
    lines = [f"{entry['steps']:,} env steps per run, seeds {', '.join(map(str, seeds))}; "
             "score: share of the 40 held-out solvable layouts solved (one episode each).", "",
             "| teacher | solved at the end, per seed | IQM [95% CI] | mean of the last 3 evaluations, IQM [95% CI] | "
             "search generations | episodes with regret > 0 | layouts proposed: unsolvable, shortest path (cells) |",
             "|---|---|---|---|---|---|---|"]
    for teacher, r in entry["results"].items():
        final, last3 = r["final_mastered"]["0.5"], r["last3_mastered"]["0.5"]
        runs = [r["per_seed"][str(s)] for s in seeds]
        if "generations" in runs[0]:
            generations = ", ".join(str(run["generations"]) for run in runs)
            regret = ", ".join(f"{int(np.sum(np.array(run['regrets']) > 0))}/{len(run['regrets'])}" for run in runs)
        else:
            generations = regret = "-"
        unsolvable = np.mean([run["unsolvable_share"] for run in runs])
        path = np.mean([run["mean_path_length"] for run in runs])
        end, recent = _interval([100 * v for v in final]).format(1), _interval([100 * v for v in last3]).format(1)
        lines.append(f"| {teacher} | {', '.join(f'{100 * v:.1f}%' for v in final)} | {end} | {recent} | "
                     f"{generations} | {regret} | {100 * unsolvable:.1f}%, {path:.2f} |")
    return "\n".join(lines)


def continual_offline() -> str:
    """Continual offline RL: each method's final normalised score, forgetting and return, IQM [95% CI] over seeds;
    the paper's claim (OER beats ER and finetune) as seed-paired differences below."""
    from common import paired_difference

    data = json.loads((RESULTS / "continual_offline.json").read_text())
    key = next(iter(data))
    result = data[key]
    methods, seeds = result["methods"], result["seeds"]
    lines = [f"Sequence `{key}` ({', '.join(result['tasks'])}), {result['steps_per_task']:,} TD3+BC gradient steps "
             f"per task, memory {result['memory']:,} transitions, seeds {', '.join(map(str, seeds))}; IQM over seeds "
             "[95% bootstrap CI]. Normalised score: 0 is the task's random data set, 100 its expert one.", "",
             "| method | final avg normalised score ↑ | per seed | forgetting (Chaudhry) ↓ | final avg return ↑ |",
             "|---|---|---|---|---|"]
    for method in methods:
        scores = _per_seed(result, method, "normalized_score", "average_performance")
        lines.append(f"| {method} | {interval(scores, 1)} | {', '.join(f'{v:.1f}' for v in scores)} | "
                     f"{interval(_per_seed(result, method, 'normalized_score', 'forgetting_chaudhry'), 1)} | "
                     f"{interval(_per_seed(result, method, 'return', 'average_performance'), 1)} |")
    if "oer" in methods:
        lines.append("")
        for baseline in [m for m in ("er", "finetune") if m in methods]:
            mean, half = paired_difference(result, "oer", baseline, "normalized_score", "average_performance")
            verdict = ("OER ahead" if mean - half > 0 else "OER behind" if mean + half < 0
                       else "the interval holds 0: no difference shown")
            lines.append(f"- OER − {baseline}, final avg normalised score, seed-paired: **{mean:+.1f} "
                         f"[{mean - half:+.1f}, {mean + half:+.1f}]** (95% Student-t): {verdict}.")
    return "\n".join(lines)


def libero_lifelong() -> str:
    """Lifelong imitation on LIBERO: LIBERO's FWT, NBT and AUC per method, per seed and as IQM [95% CI]."""
    ll = json.loads((RESULTS / "libero.json").read_text())["lifelong"]
    if "checkpoints_per_task" not in ll:
        raise FileNotFoundError("libero.json's lifelong section predates the in-training checkpoints")
    seeds = ll["seeds"]
    lines = [f"LIBERO-{ll['suite'].capitalize()}, 10 tasks, {ll['bc_steps_per_task']:,} BC steps per task, "
             f"{len(ll['eval_init_states'])} held-out init states per cell, {ll['checkpoints_per_task']} checkpoints "
             f"per task (best restored), seeds {', '.join(map(str, seeds))}.", "",
             "| method | FWT per seed | FWT, IQM [95% CI] | NBT, IQM [95% CI] | AUC, IQM [95% CI] | "
             "success at the end, IQM [95% CI] |", "|---|---|---|---|---|---|"]
    first = ("seql", "er", "ewc", "multitask")  # LIBERO's order, then the variants
    order = sorted(ll["methods"], key=lambda m: (first.index(m) if m in first else len(first), m))
    for method, entry in ((m, ll["methods"][m]) for m in order):
        runs = [entry["per_seed"][str(s)] for s in seeds if str(s) in entry["per_seed"]]
        cells = [interval([r[key] for r in runs], 2) for key in
                 ("libero_fwt", "libero_nbt", "libero_auc", "average_performance")]
        per_seed = ", ".join(f"{r['libero_fwt']:.2f}" for r in runs)
        if "ewc_lambda" in entry:
            whose = ", LIBERO's" if entry["ewc_lambda"] == LIBERO_EWC_LAMBDA else ""
            method += f" (λ {entry['ewc_lambda']:g}{whose})"
        lines.append(f"| {method} | {per_seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[], str]] = {"libero_lifelong": libero_lifelong, "continual_offline": continual_offline,
                                           "reference_ablation": reference_ablation,
                                           "rollout_scaling": rollout_scaling, "rollout_cuts": rollout_cuts,
                                           "continual_mbrl": continual_mbrl, "task_gaps": task_gaps,
                                           "libero_world_models": libero_world_models,
                                           "curricula_mazes": curricula_mazes}


def render(text: str, name: str, body: str) -> str:
    """``text`` with the block between ``<!-- table:name -->`` and ``<!-- /table:name -->`` replaced by ``body``."""
    pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 where a table is out of date")
    args = parser.parse_args()
    texts = {path: path.read_text() for path in TARGETS}
    new = dict(texts)
    for name, renderer in RENDERERS.items():
        holders = [path for path, text in texts.items() if f"<!-- table:{name} -->" in text]
        if not holders:
            raise SystemExit(f"no file of {', '.join(map(str, TARGETS))} has a <!-- table:{name} --> block")
        try:
            body = renderer()
        except FileNotFoundError as missing:  # a benchmark not run yet: its table stays as it is
            print(f"skipped {name}: {missing}", file=sys.stderr)
            continue
        for path in holders:
            new[path] = render(new[path], name, body)
    stale = [path for path in TARGETS if new[path] != texts[path]]
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run python benchmarks/tables.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(new[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

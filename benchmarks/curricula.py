"""Curriculum teachers on HopperPhysics-v0: ALP-GMM against Random, RIAC and Covar-GMM, SAC as the student (issue 16).

Each teacher chooses every episode's (gravity, friction, torso mass) for a SAC student at the same env-step budget,
``--seeds`` each, as runs of ``cadence train sac --env HopperPhysics-v0 --teacher NAME``. At every evaluation the
student is scored on the family's fixed 27 test tasks (one episode each); the hook keeps every test task's return,
so the share mastered is reported at several thresholds (the family's own, 2000, and lower ones a CPU budget
reaches). Writes ``benchmarks/results/curricula.json``, ``curricula_mastered.png`` (share mastered against env
steps, mean and band over seeds) and ``curricula_density.png`` (where each teacher sampled, early, middle and
late in training), and reports the teacher's share of the run's wall time.

The paper's claim (Portelas et al., 2019): ALP-GMM masters more test tasks than Random.

    python benchmarks/curricula.py [--steps 60000] [--seeds 1 2 3] [--workers 2]
    python benchmarks/curricula.py --plot-only
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, cpu_name, merge_result

TEACHERS = ("alp-gmm", "random", "riac", "covar-gmm")
ENV = "HopperPhysics-v0"


def run_one(teacher: str, seed: int, args: argparse.Namespace) -> tuple[str, int, float]:
    """Train (or resume, or reuse) one student; returns (teacher, seed, seconds)."""
    from cadence.runs import resolve_config, train_or_resume

    torch.set_num_threads(1)
    start = time.perf_counter()
    sections = resolve_config("sac", {"train": {"env": ENV, "teacher": teacher, "seed": seed,
                                                "total_steps": args.steps, "eval_every": args.steps // 10,
                                                "eval_episodes": 3, "torch_threads": 1, "progress": False,
                                                "checkpoint_every": args.steps // 4},
                                      "agent": {"learning_starts": 5000}}, None, [])
    train_or_resume("sac", sections, args.runs / f"{teacher}_s{seed}")
    return teacher, seed, time.perf_counter() - start


def hook_state(run_dir: Path) -> dict:
    from cadence.checkpoint import load_checkpoint

    return load_checkpoint(run_dir)["hooks"]["teacher"]


def summarise(args: argparse.Namespace, times: dict) -> dict:
    """Per teacher and seed: mastery curves at each threshold, the sampled tasks, the teacher's time share."""
    out: dict = {}
    for teacher in args.teachers:
        per_seed = {}
        for seed in args.seeds:
            state = hook_state(args.runs / f"{teacher}_s{seed}")
            steps = [step for step, _ in state["tests"]]
            returns = np.array([r for _, r in state["tests"]])  # [evaluations, test tasks]
            seconds = times.get((teacher, seed))
            per_seed[str(seed)] = {
                "steps": steps, "test_returns": returns.tolist(),
                "mastered": {str(t): (returns >= t).mean(axis=1).tolist() for t in args.thresholds},
                "sampled": state["teacher"]["params"].tolist(), "episode_returns": state["teacher"]["returns"].tolist(),
                "teacher_seconds": state["teacher_seconds"], "run_seconds": seconds,
                "teacher_share": state["teacher_seconds"] / seconds if seconds else None}
        final = {str(t): [per_seed[str(s)]["mastered"][str(t)][-1] for s in args.seeds] for t in args.thresholds}
        out[teacher] = {"per_seed": per_seed, "final_mastered_mean": {t: float(np.mean(v)) for t, v in final.items()},
                        "final_mastered": final}
    return out


def plot(result: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teachers, seeds, thresholds = result["teachers"], result["seeds"], result["thresholds"]
    fig, axes = plt.subplots(1, len(thresholds), figsize=(4.5 * len(thresholds), 3.8), squeeze=False)
    for ax, threshold in zip(axes[0], thresholds, strict=True):
        for teacher in teachers:
            runs = result["results"][teacher]["per_seed"]
            steps = np.array(runs[str(seeds[0])]["steps"])
            curves = np.array([runs[str(s)]["mastered"][str(threshold)] for s in seeds])
            mean, std = curves.mean(0), curves.std(0)
            ax.plot(steps, 100 * mean, label=teacher)
            ax.fill_between(steps, 100 * (mean - std), 100 * (mean + std), alpha=0.2)
        ax.set(title=f"return >= {threshold:g}", xlabel="env steps", ylabel="% of the 27 test tasks mastered")
        ax.grid(alpha=0.3)
    axes[0][0].legend(title=f"teacher (band: ±1 std over {len(seeds)} seeds)", fontsize=8)
    fig.suptitle(f"{ENV}: SAC students, test tasks mastered, {result['steps']:,} env steps, seeds "
                 f"{', '.join(map(str, seeds))}")
    fig.tight_layout()
    mastered = RESULTS / "curricula_mastered.png"
    fig.savefig(mastered, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(len(teachers), 3, figsize=(10, 2.8 * len(teachers)), squeeze=False)
    for row, teacher in zip(axes, teachers, strict=True):
        sampled = np.array(result["results"][teacher]["per_seed"][str(seeds[0])]["sampled"])
        for ax, (name, part) in zip(row, zip(("first", "middle", "last"), np.array_split(sampled, 3)), strict=True):
            ax.hist2d(part[:, 0], part[:, 2], bins=12, range=[[0.5, 1.5], [0.5, 2.0]], cmap="viridis")
            ax.set(title=f"{teacher}: {name} third of episodes", xlabel="gravity scale", ylabel="torso mass scale")
    fig.suptitle(f"{ENV}: where each teacher sampled (seed {seeds[0]}; colour = episodes per cell)")
    fig.tight_layout()
    density = RESULTS / "curricula_density.png"
    fig.savefig(density, dpi=100)
    plt.close(fig)
    return [mastered, density]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=TEACHERS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[500.0, 1000.0, 2000.0],
                        help="mastery thresholds on a test task's return (the family's own: 2000)")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_curricula"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    if args.plot_only:
        print("wrote", *plot(json.loads((RESULTS / "curricula.json").read_text())[ENV]))
        return
    times: dict = {}
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_one, t, s, args) for s in args.seeds for t in args.teachers]
        for f in as_completed(futures):
            teacher, seed, seconds = f.result()
            times[(teacher, seed)] = seconds
            print(f"{teacher} seed {seed}: {seconds:.0f} s", flush=True)
    result = {"env": ENV, "teachers": args.teachers, "seeds": args.seeds, "steps": args.steps,
              "thresholds": args.thresholds, "results": summarise(args, times),
              "machine": f"{platform.machine()} ({cpu_name()}), torch {torch.__version__}"}
    merge_result("curricula", ENV, result)
    for teacher in args.teachers:
        r = result["results"][teacher]
        shares = [s["teacher_share"] for s in r["per_seed"].values() if s["teacher_share"] is not None]
        print(f"{teacher:>10}: final % mastered " + ", ".join(
            f"{float(t):g}: {100 * v:.0f}%" for t, v in r["final_mastered_mean"].items())
            + (f" | teacher time {100 * max(shares):.2f}% of the run at most" if shares else ""))
    print("wrote", *plot(result))


if __name__ == "__main__":
    main()

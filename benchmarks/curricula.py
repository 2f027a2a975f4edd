"""Curriculum teachers against their baselines, SAC as the student, at equal env-step budgets (issue 16).

Two suites, each a set of runs of ``cadence train sac --env ENV --teacher NAME``, ``--seeds`` each, run as one
cadence sweep (``runs/sweeps/<suite>/<teacher>/seed=N``, resumable):

* ``physics`` (default): ALP-GMM against Random, RIAC and Covar-GMM on ``HopperPhysics-v0`` (gravity, friction,
  torso mass). At every evaluation the student is scored on the family's fixed 27 test tasks (one episode each);
  the hook keeps every test task's return, so the share mastered is reported at several thresholds (the family's
  own, 2000, and lower ones a CPU budget reaches). The paper's claim (Portelas et al., 2019): ALP-GMM masters more
  test tasks than Random.
* ``mazes``: CLUTR's teacher (PPO over the RVAE's latents, learning from regret) against domain randomisation
  (uniform random layouts) on ``PointMazeLayout-v0`` (5x5 PointMaze layouts). Methods: ``clutr``, the paper's
  regret from an antagonist (a second SAC playing every layout; about twice the run's env steps and updates),
  ``clutr-pvl`` and ``clutr-maxmc``, regret estimated from the student's own critic (no antagonist), and ``dr``.
  The score is zero-shot success on the family's 40 held-out solvable layouts. The paper's claim (Azad et al.,
  2023): CLUTR generalises better than its baselines. Also measures the RVAE: held-out token accuracy of the
  CPU-sized model the runs use, and of the paper's sizes (600/800x2/64) trained for ``--rvae-minutes``.

Writes ``benchmarks/results/curricula.json`` (one key per env), ``curricula[_mazes]_mastered.png`` (share mastered
against env steps, mean and band over seeds) and ``curricula[_mazes]_density.png`` (where each teacher sampled,
early, middle and late in training), and reports the teacher's share of the run's wall time.

    python benchmarks/curricula.py [--suite physics] [--steps 60000] [--seeds 1 2 3] [--workers 2]
    python benchmarks/curricula.py --suite mazes [--steps 30000] [--teachers clutr clutr-pvl dr]
    python benchmarks/curricula.py --suite mazes --plot-only
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, cpu_name, merge_result, run_dir, run_grid


@dataclass(frozen=True)
class Suite:
    env: str
    teachers: tuple[str, ...]
    steps: int
    thresholds: tuple[float, ...]
    score: str  # what a test task's score is, for the plots
    plot_stem: str
    agent: tuple[str, ...]  # overrides of the student's settings


SUITES = {
    "physics": Suite("HopperPhysics-v0", ("alp-gmm", "random", "riac", "covar-gmm"), 60_000, (500.0, 1000.0, 2000.0),
                     "return", "curricula", ("agent.learning_starts=5000",)),
    "mazes": Suite("PointMazeLayout-v0", ("clutr", "clutr-pvl", "clutr-maxmc", "dr"), 30_000, (0.5,), "success",
                   "curricula_mazes", ("agent.learning_starts=2000",)),
}
#: methods that are a teacher with settings (train.teacher_settings); any other method is the teacher of its name
TEACHER_METHODS = {"clutr": ("clutr", {"regret": "paired"}), "clutr-pvl": ("clutr", {"regret": "pvl"}),
                   "clutr-maxmc": ("clutr", {"regret": "maxmc"})}


def teacher_of(method: str) -> tuple[str, dict]:
    """The ``train.teacher`` and ``train.teacher_settings`` a method runs."""
    return TEACHER_METHODS.get(method, (method, {}))


def hook_state(run_dir: Path) -> dict:
    from cadence.checkpoint import load_checkpoint

    return load_checkpoint(run_dir)["hooks"]["teacher"]


def summarise(args: argparse.Namespace, times: dict) -> dict:
    """Per teacher and seed: mastery curves at each threshold, the sampled tasks, the teacher's time share."""
    out: dict = {}
    for teacher in args.teachers:
        per_seed = {}
        for seed in args.seeds:
            state = hook_state(run_dir(args.runs, teacher, seed))
            steps = [step for step, _ in state["tests"]]
            returns = np.array([r for _, r in state["tests"]])  # [evaluations, test tasks]: return or success
            seconds = times.get((teacher, seed))
            sampled = state["teacher"]["params"].numpy()
            per_seed[str(seed)] = {
                "steps": steps, "test_returns": returns.tolist(),
                "mastered": {str(t): (returns >= t).mean(axis=1).tolist() for t in args.thresholds},
                "episode_returns": state["teacher"]["returns"].tolist(),
                "teacher_seconds": state["teacher_seconds"], "run_seconds": seconds,
                "teacher_share": state["teacher_seconds"] / seconds if seconds else None}
            if "regrets" in state["teacher"]:  # CLUTR: what its PPO learned from, and what computing it cost
                per_seed[str(seed)].update(regret_record(state, seconds))
            if SUITES[args.suite].score == "success":
                per_seed[str(seed)].update(maze_tasks(teacher, sampled))
            else:
                per_seed[str(seed)]["sampled"] = sampled.tolist()
        final = {str(t): [per_seed[str(s)]["mastered"][str(t)][-1] for s in args.seeds] for t in args.thresholds}
        # one test episode per task makes one evaluation noisy: also the mean of each seed's last three
        last3 = {str(t): [float(np.mean(per_seed[str(s)]["mastered"][str(t)][-3:])) for s in args.seeds]
                 for t in args.thresholds}
        out[teacher] = {"per_seed": per_seed, "final_mastered_mean": {t: float(np.mean(v)) for t, v in final.items()},
                        "final_mastered": final, "last3_mastered": last3,
                        "last3_mastered_mean": {t: float(np.mean(v)) for t, v in last3.items()}}
    return out


def regret_record(state: dict, seconds: float | None) -> dict:
    """A CLUTR run's regrets, teacher updates and search width, and the antagonist's returns and steps (paired)."""
    regret = state["regret"] or {}
    return {"regrets": state["teacher"]["regrets"].tolist(), "generations": state["teacher"]["generations"],
            "regret_seconds": state.get("regret_seconds"),
            "regret_share": state.get("regret_seconds", 0.0) / seconds if seconds else None,
            "antagonist_returns": regret.get("returns"), "antagonist_steps": regret.get("steps")}


def maze_tasks(teacher: str, sampled: np.ndarray) -> dict:
    """The layouts a maze teacher proposed (CLUTR's latents decoded by its frozen RVAE), and how many of them
    could be solved at all."""
    from cadence.curricula import make_layout_teacher
    from cadence.envs.maze_tasks import layout_family_of

    family = layout_family_of(SUITES["mazes"].env)
    if teacher_of(teacher)[0] == "clutr":
        clutr = make_layout_teacher("clutr", family)
        codes = np.stack([clutr.task(p) for p in sampled])
    else:
        codes = sampled
    paths = np.array([family.features(c)["path_length"] for c in codes])
    return {"sampled": codes.tolist(), "unsolvable_share": float(np.mean(paths < 0)),
            "mean_path_length": float(paths[paths >= 0].mean()) if (paths >= 0).any() else None}


def plot(result: dict, suite: Suite) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teachers, seeds, thresholds = result["teachers"], result["seeds"], result["thresholds"]
    first = result["results"][teachers[0]]["per_seed"][str(seeds[0])]
    n_tests = len(first["test_returns"][0])
    fig, axes = plt.subplots(1, len(thresholds), figsize=(max(7.0, 4.5 * len(thresholds) + 1), 4.2), squeeze=False)
    for ax, threshold in zip(axes[0], thresholds, strict=True):
        for teacher in teachers:
            runs = result["results"][teacher]["per_seed"]
            steps = np.array(runs[str(seeds[0])]["steps"])
            curves = np.array([runs[str(s)]["mastered"][str(threshold)] for s in seeds])
            mean, std = curves.mean(0), curves.std(0)
            ax.plot(steps, 100 * mean, label=teacher)
            ax.fill_between(steps, 100 * (mean - std), 100 * (mean + std), alpha=0.2)
        title = (f"success rate >= {threshold:g} (1 episode each)" if suite.score == "success"
                 else f"return >= {threshold:g}")
        ax.set(title=title, xlabel="env steps", ylabel=f"% of the {n_tests} held-out test tasks mastered")
        ax.grid(alpha=0.3)
    axes[0][0].legend(title=f"teacher (band: ±1 std over {len(seeds)} seeds)", fontsize=8)
    fig.suptitle(f"{suite.env}: SAC students, test tasks mastered\n{result['steps']:,} env steps per run, seeds "
                 f"{', '.join(map(str, seeds))}", fontsize=11)
    fig.tight_layout()
    mastered = RESULTS / f"{suite.plot_stem}_mastered.png"
    fig.savefig(mastered, dpi=110)
    plt.close(fig)
    return [mastered, plot_density(result, suite)]


def plot_density(result: dict, suite: Suite) -> Path:
    """Where each teacher sampled in the first, middle and last third of its episodes (the first seed): gravity
    against torso mass on the physics suite; obstacle count against shortest path on mazes."""
    import matplotlib.pyplot as plt

    teachers, seed = result["teachers"], result["seeds"][0]
    fig, axes = plt.subplots(len(teachers), 3, figsize=(10, 2.8 * len(teachers)), squeeze=False)
    for row, teacher in zip(axes, teachers, strict=True):
        sampled = np.array(result["results"][teacher]["per_seed"][str(seed)]["sampled"])
        if suite.score == "success":
            from cadence.envs.maze_tasks import layout_family_of

            family = layout_family_of(suite.env)
            features = [family.features(code) for code in sampled]
            xy = np.array([[f["obstacles"], f["path_length"]] for f in features])
            bins = [np.arange(-0.5, family.max_obstacles + 1), np.arange(-1.5, 17)]
            labels = ("obstacles", "shortest path, cells (-1: unsolvable)")
        else:
            xy, bins = sampled[:, [0, 2]], [np.linspace(0.5, 1.5, 13), np.linspace(0.5, 2.0, 13)]
            labels = ("gravity scale", "torso mass scale")
        for ax, (name, part) in zip(row, zip(("first", "middle", "last"), np.array_split(xy, 3)), strict=True):
            ax.hist2d(part[:, 0], part[:, 1], bins=bins, cmap="viridis")
            ax.set(title=f"{teacher}: {name} third of episodes", xlabel=labels[0], ylabel=labels[1])
    fig.suptitle(f"{suite.env}: where each teacher sampled (seed {seed}; colour = episodes per cell)")
    fig.tight_layout()
    density = RESULTS / f"{suite.plot_stem}_density.png"
    fig.savefig(density, dpi=100)
    plt.close(fig)
    return density


def measure_rvae(minutes: float) -> dict:
    """Held-out token accuracy of the CPU-sized RVAE the maze runs use, and of the paper's sizes after ``minutes``."""
    from cadence.curricula.rvae import LayoutRVAE, cached_rvae, default_rvae_path, fit_rvae, token_accuracy
    from cadence.envs.maze_tasks import layout_family_of
    from cadence.envs.mazes import random_layouts

    family = layout_family_of(SUITES["mazes"].env)
    held_out = random_layouts(1000, 99_999, family.shape, (0, family.max_obstacles))
    cpu = cached_rvae(family.shape, family.max_obstacles)
    saved = torch.load(default_rvae_path(family.shape, family.max_obstacles), weights_only=True)["fit"]
    out = {"held_out_layouts": len(held_out), "cpu": {"config": cpu.config, "fit": saved,
                                                     "token_accuracy": token_accuracy(cpu, held_out)}}
    if minutes > 0:
        torch.set_num_threads(2)
        design = LayoutRVAE(family.shape, family.max_obstacles)  # the paper's: 600 / 64 / 800x2, bound 4
        fit = fit_rvae(design, n_layouts=50_000, steps=100_000, batch_size=64, lr=1e-3, kl_weight=1e-3, seed=0,
                       time_limit=60 * minutes)
        out["design"] = {"config": design.config, "fit": fit, "token_accuracy": token_accuracy(design, held_out)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="physics", choices=SUITES)
    parser.add_argument("--teachers", nargs="+", help="a subset of the suite's teachers")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, help="env steps per run (physics 60000, mazes 30000)")
    parser.add_argument("--thresholds", type=float, nargs="+",
                        help="mastery thresholds on a test task's score (physics: returns 500 1000 2000, the "
                             "family's own being 2000; mazes: success rate 0.5)")
    parser.add_argument("--rvae-minutes", type=float, default=10.0,
                        help="mazes: minutes to train the paper's RVAE sizes for the accuracy report (0: skip)")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one torch thread each)")
    parser.add_argument("--runs", type=Path, help="the sweep folder (default runs/sweeps/<suite plot stem>)")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--summarise-only", action="store_true",
                        help="rebuild the results from the run folders as they are (no training; no time shares)")
    args = parser.parse_args()
    suite = SUITES[args.suite]
    args.teachers = args.teachers or list(suite.teachers)
    unknown = sorted(set(args.teachers) - set(suite.teachers))
    if unknown:
        parser.error(f"--teachers {unknown} are not in the {args.suite} suite: {', '.join(suite.teachers)}")
    args.steps = args.steps or suite.steps
    args.thresholds = args.thresholds or list(suite.thresholds)
    args.runs = args.runs or Path(f"runs/sweeps/{suite.plot_stem}")
    if args.plot_only:
        print("wrote", *plot(json.loads((RESULTS / "curricula.json").read_text())[suite.env], suite))
        return
    if args.summarise_only:  # the wall times an earlier full run measured, where there was one
        earlier = json.loads((RESULTS / "curricula.json").read_text()).get(suite.env, {}) \
            if (RESULTS / "curricula.json").is_file() else {}
        rvae = None
        times = {(teacher, int(seed)): run["run_seconds"] for teacher, r in earlier.get("results", {}).items()
                 for seed, run in r["per_seed"].items() if run.get("run_seconds")}
    else:
        rvae = measure_rvae(args.rvae_minutes) if args.suite == "mazes" else None  # trains the cached RVAE first
        times = train_all(suite, args)
    result = {"env": suite.env, "teachers": args.teachers, "seeds": args.seeds, "steps": args.steps,
              "thresholds": args.thresholds, "score": suite.score, "results": summarise(args, times),
              "machine": f"{platform.machine()} ({cpu_name()}), torch {torch.__version__}"}
    if rvae is not None:
        result["rvae"] = rvae
        print("RVAE held-out token accuracy: " + ", ".join(
            f"{name} {100 * r['token_accuracy']:.1f}% ({r['fit']['steps']} steps, {r['fit']['seconds']:.0f} s)"
            for name, r in rvae.items() if isinstance(r, dict)))
    elif args.summarise_only and "rvae" in earlier:  # keep what the earlier full run measured
        result["rvae"] = earlier["rvae"]
    merge_result("curricula", suite.env, result)
    report(result, args)
    print("wrote", *plot(result, suite))


def train_all(suite: Suite, args: argparse.Namespace) -> dict:
    """Every (teacher, seed) student as one cadence sweep, ``--workers`` at a time; returns their seconds."""
    from cadence.config import parse_override
    from cadence.sweeps import expand, read_status

    agent = dict(map(parse_override, suite.agent))
    train = {"train.env": suite.env, "train.total_steps": args.steps, "train.eval_every": args.steps // 10,
             "train.eval_episodes": 3, "train.torch_threads": 1, "train.progress": False,
             "train.checkpoint_every": args.steps // 4}
    table = {}
    for m in args.teachers:
        teacher, settings = teacher_of(m)
        table[m] = {"algo": "sac", **train, "train.teacher": teacher, **agent,
                    **({"train.teacher_settings": settings} if settings else {})}
    sweep = expand({"sweep": {"name": f"curricula_{suite.plot_stem}"}, "methods": table,
                    "axes": {"train.seed": list(args.seeds)}})
    run_grid(sweep, args.runs, args.workers)
    return {(r.method, r.settings["train.seed"]): read_status(args.runs / r.name).get("seconds") for r in sweep.runs}


def report(result: dict, args: argparse.Namespace) -> None:
    for teacher in args.teachers:
        r = result["results"][teacher]
        shares = [s["teacher_share"] for s in r["per_seed"].values() if s["teacher_share"] is not None]
        regret = [s["regret_share"] for s in r["per_seed"].values() if s.get("regret_share") is not None]
        print(f"{teacher:>11}: % mastered at the end (mean of the last 3 evaluations) " + ", ".join(
            f"{float(t):g}: {100 * v:.0f}% ({100 * r['last3_mastered_mean'][t]:.0f}%)"
            for t, v in r["final_mastered_mean"].items())
            + (f" | teacher time {100 * max(shares):.2f}% of the run at most" if shares else "")
            + (f" | regret (antagonist or critic) {100 * max(regret):.1f}% at most" if regret else ""))


if __name__ == "__main__":
    main()

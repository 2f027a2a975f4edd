"""The sweep executors' overhead per run, against running the same runs directly (issue 19; target: under 5%).

The same ``--runs`` SAC runs (InvertedPendulum-v5, ``--steps`` env steps each, one seed per run) are trained
three ways, one run at a time so that every way has the same cores: directly in this process with
:func:`cadence.runs.train_or_resume`, through :class:`~cadence.sweeps.LocalExecutor` (``workers=1``) and through
:class:`~cadence.sweeps.RayExecutor` (``workers=1``, Ray started on this machine). The direct pass runs before and
after the executors, and its mean is the reference. Each executor's start, once per sweep, is timed apart, as the
direct pass's imports are: the local forkserver importing cadence, Ray's ``ray.init`` (on a cluster it is already
running). Writes ``benchmarks/results/sweep_overhead.json`` and ``sweep_overhead.png``.

    python benchmarks/sweep_overhead.py [--runs 4] [--steps 3000] [--no-ray]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

from common import RESULTS, cpu_name, merge_result

from cadence.evaluation.plots import plot_bars
from cadence.runs import train_or_resume
from cadence.sweeps import LocalExecutor, RayExecutor, expand, run_sweep


def grid(runs: int, steps: int) -> dict:
    return {"sweep": {"name": "overhead"},
            "base": {"train.env": "InvertedPendulum-v5", "train.total_steps": steps, "train.eval_every": steps,
                     "train.eval_episodes": 2, "agent.learning_starts": min(1000, steps // 2)},
            "methods": {"SAC": {"algo": "sac"}}, "axes": {"train.seed": list(range(1, runs + 1))}}


def direct(sweep, root: Path, threads: int) -> float:
    start = time.perf_counter()
    for run in sweep.runs:
        train_or_resume(run.algo, run.sections(threads), root / run.name)
    return time.perf_counter() - start


def through(sweep, root: Path, executor) -> float:
    start = time.perf_counter()
    outcome = run_sweep(sweep, root, executor)
    if outcome.failed or len(outcome.done) != len(sweep.runs):
        raise SystemExit(f"the sweep did not finish every run: {outcome.failed}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3000, help="env steps per run")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray executor")
    args = parser.parse_args()
    sweep = expand(grid(args.runs, args.steps))
    local = LocalExecutor(workers=1)
    threads = local.torch_threads
    work = Path(tempfile.mkdtemp(prefix="cadence-overhead-"))
    seconds: dict[str, float] = {}
    try:
        seconds["direct (before)"] = direct(sweep, work / "direct1", threads)
        start = time.perf_counter()
        local.start()
        seconds["local start"] = time.perf_counter() - start
        seconds["local"] = through(sweep, work / "local", local)
        if not args.no_ray:
            ray_executor = RayExecutor(workers=1, cpus_per_run=threads)
            start = time.perf_counter()
            ray_executor.connect()
            seconds["ray start"] = time.perf_counter() - start
            seconds["ray"] = through(sweep, work / "ray", ray_executor)
            import ray

            ray.shutdown()
        seconds["direct (after)"] = direct(sweep, work / "direct2", threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reference = (seconds["direct (before)"] + seconds["direct (after)"]) / 2
    result = {"runs": args.runs, "steps_per_run": args.steps, "torch_threads": threads, "cpu": cpu_name(),
              "python": platform.python_version(), "seconds": seconds, "direct_mean_seconds": reference,
              "overhead": {}}
    for name in ("local", "ray"):
        if name in seconds:
            extra = seconds[name] - reference
            result["overhead"][name] = {"fraction": extra / reference, "seconds_per_run": extra / args.runs}
            print(f"{name}: {seconds[name]:.1f} s against {reference:.1f} s directly: overhead "
                  f"{100 * extra / reference:+.1f}% ({extra / args.runs:+.2f} s per run)")
    print(f"once per sweep: local start {seconds['local start']:.1f} s"
          + (f", ray start {seconds['ray start']:.1f} s (none on a running cluster)" if "ray start" in seconds else ""))
    merge_result("sweep_overhead", "latest", result)
    bars = {"seconds per run": {k: v / args.runs for k, v in seconds.items() if not k.endswith("start")}}
    path = plot_bars(bars, RESULTS / "sweep_overhead.png", ylabel="wall seconds per run",
                     title=f"{args.runs} SAC runs of {args.steps:,} steps (InvertedPendulum-v5), one at a time, "
                           f"{threads} torch threads;\ndirect: train_or_resume in one process; local and Ray: "
                           "the sweep executors (their once-per-sweep start excluded)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

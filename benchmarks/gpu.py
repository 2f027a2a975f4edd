"""MuJoCo Warp against mujoco.rollout, side by side in one run (issue 30): env steps/s, a FAS sweep, collection.

Sections (``--sections``; each a function ``args -> dict`` in :data:`SECTIONS`):

* ``steps``: Hopper-v5 env steps/s of ``BatchedEnv`` on ``backend="warp"`` (on ``--device``) and ``"rollout"``
  (``--rollout-threads`` CPU threads) at 16, 64, ... worlds up to ``--max-worlds`` (65,536 on CUDA; 1,024 on the
  CPU, where a run must end in minutes), autoreset on and uniform random actions made before timing; the share of
  that time spent in resets (host work: the suspect where warp falls short of its physics); plus warp's physics
  alone (the recorded graph replayed, no observations, rewards or resets).
* ``fas``: the FAS sweep of a Hopper SAC policy, 16 ASLs x ``--fas-episodes`` episodes in one batch, timed on each
  backend. The policy: ``--policy RUN_DIR`` (a trained Hopper SAC run), else a short run trained here when
  ``--train-steps`` > 0, else a fixed random-init SAC (the JSON says which).
* ``collection``: ``cadence collect``'s batched path (uniform random actions, ``--collect-worlds`` worlds) in
  transitions/s on each backend.
* **Hook for other sections**: every entry of ``SECTIONS`` in ``benchmarks/gpu_training.py`` (SAC/SRL training on
  the GPU: functions ``args -> dict``), imported lazily and skipped when that module is absent.

Writes ``benchmarks/results/gpu.json`` (atomically, after each section: the device's name, the driver, the
versions, the settings) and ``gpu.png``. GPU targets (issue 30): >= 1M Hopper env steps/s at >= 8,192 worlds on
one H200-class GPU, and the FAS sweep under 2 s.

    python benchmarks/gpu.py --device cuda
    python benchmarks/gpu.py --device cpu            # Warp's CPU device: correctness, small sizes
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))  # common.py, and gpu_training.py when it exists
from common import RESULTS, ResetClock, cpu_name  # noqa: E402

from cadence.envs.batched import BatchedEnv  # noqa: E402
from cadence.io import atomic_write_json  # noqa: E402

ENV_ID = "Hopper-v5"
TARGETS = {"warp_env_steps_per_s_at_8192_worlds_or_more": 1_000_000, "fas_sweep_seconds_at_most": 2.0}
BACKENDS = ("warp", "rollout")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="where warp runs: cuda (a GPU) or cpu (Warp's CPU device)")
    p.add_argument("--sections", nargs="+", help="default: steps fas collection, then gpu_training.py's")
    p.add_argument("--min-worlds", type=int, default=16)
    p.add_argument("--max-worlds", type=int, help="default 65536 on CUDA, 1024 on the CPU")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per (backend, worlds)")
    p.add_argument("--rollout-threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="mujoco.rollout threads (default: every core this process may use)")
    p.add_argument("--fas-episodes", type=int, default=10)
    p.add_argument("--policy", type=Path, help="a trained Hopper-v5 SAC run folder for the FAS sweep")
    p.add_argument("--train-steps", type=int, default=0, help="without --policy: train one this long (0: random-init)")
    p.add_argument("--collect-steps", type=int, help="transitions per backend (default 2M on CUDA, 20k on the CPU)")
    p.add_argument("--collect-worlds", type=int, help="default 8192 on CUDA, 256 on the CPU")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every section runs")
    p.add_argument("--plot-only", action="store_true", help="redraw gpu.png from gpu.json")
    return p


def cuda(args: argparse.Namespace) -> bool:
    return torch.device(args.device).type == "cuda"


# --- sections ---------------------------------------------------------------------------------------------------
def world_counts(args: argparse.Namespace) -> list[int]:
    top = args.max_worlds or (65_536 if cuda(args) else 1_024)
    counts, n = [], args.min_worlds
    while n <= top:
        counts.append(n)
        n *= 4
    return counts


def timed(step: Callable[[int], int], seconds: float, sync: Callable[[], None] = lambda: None,
          on_start: Callable[[], None] = lambda: None) -> float:
    """Env steps/s of ``step(t) -> env steps taken``, over about ``seconds`` after two warm-up calls (then
    ``on_start()``)."""
    step(0)
    step(1)
    sync()
    on_start()
    steps, t, start = 0, 2, time.perf_counter()
    while time.perf_counter() - start < seconds:
        steps += step(t)
        t += 1
    sync()
    return steps / (time.perf_counter() - start)


def steps_section(args: argparse.Namespace) -> dict[str, Any]:
    """Env steps/s of BatchedEnv on each backend, and warp's recorded graph alone, by world count."""
    out: dict[str, Any] = {"env": ENV_ID, "worlds": world_counts(args), "rollout_threads": args.rollout_threads,
                           "warp": {}, "warp_physics_only": {}, "rollout": {}, "first_warp_step_s": {},
                           "resets": {backend: {} for backend in BACKENDS}}
    for n in out["worlds"]:
        actions = np.random.default_rng(n).uniform(-1, 1, (64, n, 3)).astype(np.float32)
        for backend in BACKENDS:
            start = time.perf_counter()
            env = BatchedEnv(ENV_ID, n, backend, threads=args.rollout_threads,
                             physics_device=args.device if backend == "warp" else None)
            env.reset(0)
            if backend == "warp":
                env.step(actions[0])
                out["first_warp_step_s"][n] = round(time.perf_counter() - start, 2)  # load/compile, record
            clock = ResetClock(env)  # host time in autoreset: random actions end Hopper's episodes every ~23 steps
            out[backend][n] = timed(_env_step(env, actions), args.seconds, on_start=clock.zero)
            out["resets"][backend][n] = clock.summary()
            if backend == "warp":
                out["warp_physics_only"][n] = timed(_graph_step(env.backend), args.seconds,
                                                    lambda physics=env.backend: _sync(physics))
            env.close()
            resets = out["resets"][backend][n]
            print(f"  {backend:8s} {n:6d} worlds: {out[backend][n]:12,.0f} env steps/s (resets: "
                  f"{resets['share_of_time']:.0%} of the time, {resets['us_per_reset']:.0f} us each)", flush=True)
    return out


def _env_step(env: BatchedEnv, actions: np.ndarray) -> Callable[[int], int]:
    def step(t: int) -> int:
        env.step(actions[t % len(actions)])
        return env.n

    return step


def _graph_step(backend: Any) -> Callable[[int], int]:
    """One replay of warp's recorded step: physics only (launches queue up; ``timed`` synchronises at the end)."""

    def step(t: int) -> int:
        backend._launch()
        return backend.n

    return step


def _sync(backend: Any) -> None:
    import warp as wp

    wp.synchronize_device(backend.wp_device)


def sac_policy(args: argparse.Namespace) -> tuple[Any, str]:
    """The FAS sweep's policy and a line saying what it is."""
    from cadence.runs import load_agent

    device = "cuda" if cuda(args) else "cpu"
    if args.policy is not None:
        agent, _ = load_agent(args.policy)
        return agent, f"trained Hopper-v5 SAC from {args.policy}"
    if args.train_steps > 0:
        from common import train_or_resume

        run = Path("runs/bench_gpu/sac_hopper")
        train_or_resume("sac", ENV_ID, 1, args.train_steps, [f"train.device={device}"], run)
        agent, _ = load_agent(run)
        return agent, f"Hopper-v5 SAC trained here for {args.train_steps} steps ({run})"
    from cadence.envs import make
    from cadence.recipes import recipe
    from cadence.runs import resolve_config

    torch.manual_seed(0)
    sections = resolve_config("sac", {"train": {"env": ENV_ID}}, None, [])
    env = make(ENV_ID)
    agent = recipe("sac").agent_cls(env.observation_space, env.action_space, sections["agent"], device=device)
    return agent, "random-init SAC (torch seed 0): no trained checkpoint given (--policy) or trained (--train-steps)"


def fas_section(args: argparse.Namespace) -> dict[str, Any]:
    """The FAS sweep (every ASL x episodes in one batch) of one policy on each backend."""
    from cadence.evaluation.fas import ASL_GRID, fas_sweep_batched

    agent, what = sac_policy(args)
    out: dict[str, Any] = {"env": ENV_ID, "policy": what, "asl": list(ASL_GRID), "episodes": args.fas_episodes}
    for backend in BACKENDS:
        def run(backend: str = backend) -> Any:
            return fas_sweep_batched(ENV_ID, agent.act_sequence, ASL_GRID, args.fas_episodes, backend=backend,
                                     threads=args.rollout_threads,
                                     physics_device=args.device if backend == "warp" else None)

        if backend == "warp":
            run()  # untimed: kernel load and the step's recording, once per process
        start = time.perf_counter()
        result = run()
        out[backend] = {"seconds": time.perf_counter() - start, "fas": result.fas,
                        "mean_return_asl1": float(np.mean(result.returns[0]))}
        print(f"  {backend:8s} FAS sweep {out[backend]['seconds']:.2f} s, FAS {result.fas:.3f}", flush=True)
    return out


def collection_section(args: argparse.Namespace) -> dict[str, Any]:
    """``cadence collect --worlds N`` with uniform random actions: transitions/s on each backend."""
    import gymnasium as gym

    from cadence.replay.collect_batched import collect_batched, uniform_batch_policy

    steps = args.collect_steps or (2_000_000 if cuda(args) else 20_000)
    worlds = args.collect_worlds or (8_192 if cuda(args) else 256)
    space = gym.make(ENV_ID).action_space
    out: dict[str, Any] = {"env": ENV_ID, "transitions": steps, "worlds": worlds, "policy": "uniform random"}
    for backend in BACKENDS:
        start = time.perf_counter()
        data = collect_batched(ENV_ID, uniform_batch_policy(space, 0), steps, 0, worlds, backend,
                               args.device if backend == "warp" else None)
        seconds = time.perf_counter() - start
        out[backend] = {"seconds": seconds, "transitions_per_s": steps / seconds,
                        "episodes": int((data.terminals | data.timeouts).sum())}
        print(f"  {backend:8s} collected {steps:,} transitions in {seconds:.1f} s", flush=True)
    return out


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "steps": steps_section, "fas": fas_section, "collection": collection_section,
}


def training_sections() -> dict[str, Callable[[argparse.Namespace], dict[str, Any]]]:
    """HOOK: SAC/SRL GPU training sections from ``benchmarks/gpu_training.py`` (its ``SECTIONS``: functions
    ``args -> dict``), imported only when asked for; empty when the module is absent."""
    try:
        module = importlib.import_module("gpu_training")
    except ImportError:
        return {}
    return dict(getattr(module, "SECTIONS", {}))


# --- machine, results, plot -------------------------------------------------------------------------------------
def machine(args: argparse.Namespace) -> dict[str, Any]:
    """What produced the numbers: the device's name, the driver and the versions."""
    import mujoco

    info: dict[str, Any] = {"device": args.device, "cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "mujoco": mujoco.__version__, "platform": platform.platform(),
                            "load_average_1min": os.getloadavg()[0]}  # other jobs slow the CPU figures
    info["name"] = torch.cuda.get_device_name() if cuda(args) and torch.cuda.is_available() else info["cpu"]
    for module in ("warp", "mujoco_warp"):
        try:
            info[module] = importlib.import_module(module).__version__
        except ImportError:
            info[module] = None
    info["driver"] = None
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=20)
            info["driver"] = done.stdout.strip().splitlines()[0] if done.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's GPU targets, met or not (on the CPU they are not expected to be)."""
    steps = result.get("steps", {}).get("warp", {})
    big = [rate for n, rate in steps.items() if int(n) >= 8_192]
    fas = result.get("fas", {}).get("warp", {}).get("seconds")
    return {"targets": TARGETS,
            "warp_env_steps_per_s_at_8192_worlds_or_more": max(big) if big else None,
            "fas_sweep_seconds": fas,
            "met": bool(big and max(big) >= TARGETS["warp_env_steps_per_s_at_8192_worlds_or_more"]
                        and fas is not None and fas <= TARGETS["fas_sweep_seconds_at_most"])}


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    from cadence.evaluation.plots import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = result.get("steps")
    if steps:
        for key, label, style in (("warp", "warp (BatchedEnv)", "o-"), ("warp_physics_only", "warp physics only",
                                                                            "o--"),
                                  ("rollout", f"rollout ({steps['rollout_threads']} threads)", "s-")):
            xs = sorted(int(n) for n in steps[key])
            left.plot(xs, [steps[key][n if n in steps[key] else str(n)] for n in xs], style, label=label)
        left.set(xscale="log", yscale="log", xlabel="worlds", ylabel="Hopper-v5 env steps/s",
                 title="Env steps/s by world count")
        left.set_xticks(xs, [f"{x:,}" for x in xs])
        left.minorticks_off()
        left.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        left.legend()
        left.grid(True, which="both", alpha=0.3)
    bars = {}
    if "fas" in result:
        bars["FAS sweep (s)"] = {b: result["fas"][b]["seconds"] for b in BACKENDS}
    if "collection" in result:
        bars["collection (s)"] = {b: result["collection"][b]["seconds"] for b in BACKENDS}
    for i, values in enumerate(bars.values()):
        for j, backend in enumerate(BACKENDS):
            right.bar(i + (j - 0.5) * 0.35, values[backend], 0.35, color=f"C{j}",
                      label=backend if i == 0 else None)
            right.annotate(f"{values[backend]:.2f}", (i + (j - 0.5) * 0.35, values[backend]), ha="center",
                           va="bottom", fontsize=8)
    right.set_xticks(range(len(bars)), list(bars))
    right.set(ylabel="seconds (lower is better)", title="FAS sweep (16 ASLs) and batched collection")
    if bars:
        right.legend()
    name = result.get("machine", {}).get("name", "")
    device = result.get("machine", {}).get("device", "")
    where = "Warp's CPU device" if device == "cpu" else device
    fig.suptitle(f"MuJoCo Warp vs mujoco.rollout, warp on {where}: {name}")
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.plot_only:
        result = json.loads((args.out / "gpu.json").read_text())
        print(f"wrote {plot(result, args.out / 'gpu.png')}")
        return result
    if args.smoke:
        args.max_worlds, args.seconds, args.fas_episodes = args.max_worlds or 64, 0.5, 1
        args.collect_steps, args.collect_worlds = args.collect_steps or 2_000, args.collect_worlds or 16
    extra = training_sections() if args.sections is None or set(args.sections) - set(SECTIONS) else {}
    names = args.sections or [*SECTIONS, *extra]
    unknown = [n for n in names if n not in SECTIONS and n not in extra]
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; known: {', '.join([*SECTIONS, *extra])}"
                         + ("" if extra else " (benchmarks/gpu_training.py is absent)"))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu.json"
    result: dict[str, Any] = {"benchmark": "gpu", "issue": 30, "date": datetime.date.today().isoformat(),
                              "machine": machine(args), "settings": {k: str(v) for k, v in vars(args).items()},
                              "training": {}}
    if not extra:
        result["training"]["skipped"] = "benchmarks/gpu_training.py is absent or not asked for"
    print(f"gpu benchmark on {args.device}: {result['machine']['name']}", flush=True)
    for name in names:
        print(f"{name}:", flush=True)
        start = time.perf_counter()
        if name in SECTIONS:
            result[name] = {**SECTIONS[name](args), "section_seconds": time.perf_counter() - start}
        else:
            result["training"][name] = {**extra[name](args), "section_seconds": time.perf_counter() - start}
        result.update(targets(result))
        atomic_write_json(path, result)
    plot(result, args.out / "gpu.png")
    print(json.dumps({k: result[k] for k in ("targets", "warp_env_steps_per_s_at_8192_worlds_or_more",
                                             "fas_sweep_seconds", "met")}, indent=1))
    return result


if __name__ == "__main__":
    main()

"""GPU training without launch overhead (issue 32): cadence SAC and SRL on a CUDA device, eager against CUDA graphs.

Sections (each a function ``args -> dict``, listed in ``SECTIONS`` for ``benchmarks/gpu.py`` to import):

* ``sac_steps``: SAC env + gradient steps/s on Hopper-v5 through the training loop (``cadence.runs.train``):
  cadence on ``--device`` eager and with ``agent.cuda_graphs``, cadence on the CPU with ``--threads`` torch
  threads, and stable-baselines3 SAC on ``--device``. Same settings as ``sac_throughput.py``; timed over
  ``--steps`` steps after ``--warmup`` random steps and ``--settle`` gradient steps (graph capture, cuBLAS set-up).
* ``srl_updates``: SRL-8 (and SAC) gradient updates/s on ``--device``, eager and graphed, through the loop's
  ``learn`` (device-side replay sampling, metrics left on the device).
* ``learning``: learning parity, SAC with graphs and eager on InvertedPendulum-v5 (``--learn-steps`` env steps,
  ``--seeds``), each run stopping once an evaluation reaches 1000; runs past ``--learn-budget`` seconds are skipped.

Results merge into ``<out>/gpu_training.json`` (written atomically after each section and each learning run, with
the GPU's name, the driver and the versions) and ``<out>/gpu_training.png``.

    python benchmarks/gpu_training.py --device cuda
    python benchmarks/gpu_training.py --device cpu --smoke     # a quick check of the script itself
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))  # run as a script or imported by benchmarks/gpu.py

RESULTS = Path(__file__).parent / "results"
NAME = "gpu_training"
#: the Hopper-v5 settings of sac_throughput.py (hidden [256, 256], batch 256, lr 3e-4, one update per step)
SAC_SETTINGS = ["agent.hidden_sizes=256,256", "agent.batch_size=256"]
TARGET_RETURN = 1000.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--sections", nargs="+", default=["sac_steps", "srl_updates", "learning"])
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=1500, help="timed env steps per SAC mode")
    p.add_argument("--warmup", type=int, default=1000, help="random env steps before learning (untimed)")
    p.add_argument("--settle", type=int, default=100, help="gradient steps before the clock starts")
    p.add_argument("--threads", type=int, default=8, help="torch threads of the CPU path")
    p.add_argument("--modes", nargs="+", default=["eager", "graphs", "cpu", "sb3"])
    p.add_argument("--updates", type=int, default=300, help="timed updates per SRL/SAC update-rate mode")
    p.add_argument("--sequence-length", type=int, default=8)
    p.add_argument("--learn-env", default="InvertedPendulum-v5")
    p.add_argument("--learn-steps", type=int, default=20_000)
    p.add_argument("--learn-modes", nargs="+", default=["graphs", "eager"])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--learn-budget", type=float, default=float("inf"), help="seconds; later learning runs are skipped")
    p.add_argument("--no-stop", action="store_true", help="learning runs use their whole budget (no stop at 1000)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every section runs")
    p.add_argument("--plot-only", action="store_true")
    return p


def with_defaults(args: argparse.Namespace | None = None, **changes: Any) -> argparse.Namespace:
    """``args`` (e.g. benchmarks/gpu.py's) completed with this module's defaults; ``--smoke`` shrinks the sizes."""
    merged = {**vars(parser().parse_args([])), **(vars(args) if args is not None else {}), **changes}
    if merged["smoke"]:
        merged.update(steps=min(merged["steps"], 60), warmup=min(merged["warmup"], 300), settle=5,
                      updates=min(merged["updates"], 10), learn_steps=min(merged["learn_steps"], 600),
                      seeds=merged["seeds"][:1])
    return argparse.Namespace(**merged)


# --- environment facts --------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """The GPU's name, the driver and the versions that produced the numbers."""
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "cpu_count": _cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    if shutil.which("nvidia-smi"):
        try:
            query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            out = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
            info["nvidia_smi"] = out
            info["driver"] = out.split(",")[1].strip() if "," in out else out
        except (OSError, subprocess.SubprocessError) as e:
            info["nvidia_smi"] = f"failed: {e}"
    for name in ("numpy", "mujoco", "gymnasium", "stable_baselines3", "warp", "mujoco_warp"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent or broken: record that, the numbers still stand
            info[name] = None
    return info


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --- SAC env + gradient steps/s --------------------------------------------------------------------------------------
def time_cadence(args: argparse.Namespace, device: str, graphs: bool, threads: int, seed: int = 0) -> dict[str, Any]:
    """Steps/s of ``cadence.runs.train`` (the CLI's path): clock from ``--settle`` updates after learning starts."""
    from cadence.runs import resolve_config, train

    start, end = args.warmup + args.settle, args.warmup + args.settle + args.steps
    marks: dict[int, float] = {}

    def clock(state: Any) -> None:
        if state.step in (start, end):
            sync(device)
            marks[state.step] = time.perf_counter()

    overrides = [*SAC_SETTINGS, f"train.device={device}", f"agent.cuda_graphs={str(graphs).lower()}",
                 f"train.total_steps={end}", f"agent.learning_starts={args.warmup}", "train.eval_every=0",
                 "train.eval_episodes=1", "train.checkpoint_every=10000000", "train.progress=false",
                 f"train.torch_threads={threads}", f"train.seed={seed}"]
    sections = resolve_config("sac", {"train": {"env": args.env}}, None, overrides)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train("sac", sections, Path(tmp) / "run", callbacks=[clock])
    notes = sorted({str(w.message) for w in caught if "graph" in str(w.message)})
    return {"steps_per_s": args.steps / (marks[end] - marks[start]), "warnings": notes}


def time_sb3(args: argparse.Namespace, device: str, seed: int = 0) -> dict[str, Any]:
    """stable-baselines3 SAC with the same settings on ``device``, clocked over the same steps."""
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.callbacks import BaseCallback

    start, end = args.warmup + args.settle, args.warmup + args.settle + args.steps
    marks: dict[int, float] = {}

    class Clock(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps in (start, end):
                sync(device)
                marks[self.num_timesteps] = time.perf_counter()
            return True

    model = SB3SAC("MlpPolicy", gym.make(args.env), learning_rate=3e-4, buffer_size=end + 1,
                   learning_starts=args.warmup, batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1,
                   ent_coef="auto", policy_kwargs={"net_arch": [256, 256]}, seed=seed, device=device, verbose=0)
    model.learn(total_timesteps=end, callback=Clock())
    return {"steps_per_s": args.steps / (marks[end] - marks[start])}


def sac_steps(args: argparse.Namespace | None = None) -> dict[str, Any]:
    """SAC env + gradient steps/s: cadence eager and graphed on ``--device``, on the CPU, and SB3 on ``--device``."""
    args = with_defaults(args)
    threads_before = torch.get_num_threads()
    runs: dict[str, Any] = {}
    for mode in args.modes:
        t0 = time.perf_counter()
        try:
            if mode == "sb3":
                torch.set_num_threads(args.threads)
                runs[f"sb3 {args.device}"] = time_sb3(args, args.device)
            elif mode == "cpu":
                runs[f"cadence cpu ({args.threads} threads)"] = time_cadence(args, "cpu", False, args.threads)
            else:
                runs[f"cadence {args.device} {mode}"] = time_cadence(args, args.device, mode == "graphs", args.threads)
        except ImportError as e:
            runs[mode] = {"skipped": str(e)}
        finally:
            torch.set_num_threads(threads_before)
        print(f"  sac_steps {mode}: {runs[list(runs)[-1]]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rates = {k: v["steps_per_s"] for k, v in runs.items() if "steps_per_s" in v}
    graphed, eager = rates.get(f"cadence {args.device} graphs"), rates.get(f"cadence {args.device} eager")
    return {"env": args.env, "timed_steps": args.steps, "warmup": args.warmup, "settle_updates": args.settle,
            "cpu_threads": args.threads, "device": args.device, "steps_per_s": rates, "runs": runs,
            "graphs_over_eager": graphed / eager if graphed and eager else None,
            "graphs_over_best_other": graphed / max(v for k, v in rates.items() if "graphs" not in k)
            if graphed and len(rates) > 1 else None,
            "target_steps_per_s": 800}


# --- SRL-8 (and SAC) updates/s ---------------------------------------------------------------------------------------
def updates_per_second(agent: Any, buffer: Any, updates: int, warmup: int, device: str) -> float:
    """Updates/s through the loop's ``learn`` with metrics left on the device (read once, at the end)."""
    from cadence.loops import TrainState, learn
    from cadence.loops.common import read_metrics

    state = TrainState()
    read_metrics(learn(agent, buffer, warmup, state, Path("."), defer=True), state, Path("."))
    sync(device)
    t0 = time.perf_counter()
    metrics = learn(agent, buffer, updates, state, Path("."), defer=True)
    sync(device)
    rate = updates / (time.perf_counter() - t0)
    read_metrics(metrics, state, Path("."))  # finite, or TrainingDiverged
    return rate


def srl_updates(args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Gradient updates/s of SRL-J and SAC on ``--device``, eager and graphed, on Hopper-shaped random data."""
    from gymnasium import spaces

    from cadence.agents import SAC, SRL, SACConfig, SRLConfig
    from cadence.replay import ReplayBuffer

    args = with_defaults(args)
    obs_dim, act_dim, J, n = 11, 3, args.sequence_length, 20_000
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(n, (obs_dim,), (act_dim,), args.device)
    buffer.add(rng.normal(size=(n, obs_dim)), rng.uniform(-1, 1, (n, act_dim)), rng.normal(size=n),
               rng.normal(size=(n, obs_dim)), np.zeros(n, dtype=bool))
    obs = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    rates: dict[str, float] = {}
    notes: list[str] = []
    for graphs in (False, True):
        torch.manual_seed(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            srl = SRL(obs, spaces.Box(-1, 1, (J * act_dim,), np.float32), SRLConfig(sequence_length=J,
                      cuda_graphs=graphs), args.device)
            sac = SAC(obs, spaces.Box(-1, 1, (act_dim,), np.float32), SACConfig(cuda_graphs=graphs), args.device)
            mode = "graphs" if graphs else "eager"
            rates[f"SRL-{J} {mode}"] = updates_per_second(srl, buffer, args.updates, args.settle, args.device)
            rates[f"SAC {mode}"] = updates_per_second(sac, buffer, args.updates * 4, args.settle, args.device)
        notes += sorted({str(w.message) for w in caught if "graph" in str(w.message)})
        print(f"  srl_updates {mode}: " + ", ".join(f"{k} {v:.0f}/s" for k, v in rates.items() if mode in k),
              flush=True)
    return {"device": args.device, "sequence_length": J, "updates": args.updates, "updates_per_s": rates,
            "srl_graphs_over_eager": rates[f"SRL-{J} graphs"] / rates[f"SRL-{J} eager"],
            "sac_graphs_over_eager": rates["SAC graphs"] / rates["SAC eager"], "warnings": notes,
            "target_srl_updates_per_s": 300}


# --- learning parity --------------------------------------------------------------------------------------------------
def learn_run(args: argparse.Namespace, graphs: bool, seed: int) -> dict[str, Any]:
    """One SAC run on ``--learn-env``: its evaluation curve and when it first reached the target return."""
    from cadence.runs import resolve_config, train

    overrides = [f"train.device={args.device}", f"agent.cuda_graphs={str(graphs).lower()}",
                 f"train.total_steps={args.learn_steps}", f"train.seed={seed}", "train.progress=false",
                 "agent.learning_starts=1000" if not args.smoke else "agent.learning_starts=200",
                 "train.eval_every=1000" if not args.smoke else "train.eval_every=200", "train.eval_episodes=5",
                 "train.checkpoint_every=10000000", f"train.torch_threads={min(args.threads, 2)}"]
    if not args.no_stop:
        overrides.append(f"train.stop_return={TARGET_RETURN}")
    sections = resolve_config("sac", {"train": {"env": args.learn_env}}, None, overrides)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = train("sac", sections, Path(tmp) / "run")
    curve = [(int(s), float(r)) for s, r in state.evals]
    return {"curve": curve, "steps": state.step, "seconds": time.perf_counter() - t0,
            "first_step_reaching_target": next((s for s, r in curve if r >= TARGET_RETURN), None),
            "warnings": sorted({str(w.message) for w in caught if "graph" in str(w.message)})}


def learning(args: argparse.Namespace | None = None, save: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """SAC with graphs and eager on ``--learn-env``: does each seed reach 1000 within ``--learn-steps``?
    Runs past ``--learn-budget`` seconds are skipped; ``save`` gets the partial result after every run."""
    args = with_defaults(args)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"env": args.learn_env, "steps": args.learn_steps, "device": args.device,
                              "target_return": TARGET_RETURN, "stop_at_target": not args.no_stop, "runs": {}}
    for mode in args.learn_modes:
        for seed in args.seeds:
            key = f"{mode} seed {seed}"
            if time.perf_counter() - t0 > args.learn_budget:
                result["runs"][key] = {"skipped": f"past the {args.learn_budget:.0f} s budget"}
                continue
            result["runs"][key] = run = learn_run(args, mode == "graphs", seed)
            print(f"  learning {key}: first at {TARGET_RETURN:.0f}: {run['first_step_reaching_target']}, "
                  f"{run['steps']} steps in {run['seconds']:.0f} s", flush=True)
            result["summary"] = {m: _reached(result["runs"], m) for m in args.learn_modes}
            if save is not None:
                save(result)
    return result


def _reached(runs: dict[str, Any], mode: str) -> str:
    done = [r for k, r in runs.items() if k.startswith(f"{mode} ") and "curve" in r]
    return f"{sum(r['first_step_reaching_target'] is not None for r in done)} of {len(done)} seeds reach the target"


SECTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "sac_steps": sac_steps, "srl_updates": srl_updates, "learning": learning,
}


# --- results --------------------------------------------------------------------------------------------------------
def merge(out: Path, section: str, value: dict[str, Any]) -> Path:
    """Set ``section`` in ``<out>/gpu_training.json`` (atomically), with the machine's facts beside it."""
    from cadence.io import atomic_write_json

    path = out / f"{NAME}.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    stored[section] = value
    stored.setdefault("machine", machine())
    return atomic_write_json(path, stored)


def plot(result: dict[str, Any], path: Path) -> Path:
    """Three labelled panels: SAC steps/s per mode, updates/s eager against graphs, the learning curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cadence.evaluation.plots import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    gpu = result.get("machine", {}).get("gpu", "no GPU")
    panels = ((axes[0], "sac_steps", "steps_per_s", "SAC env + gradient steps/s", "target_steps_per_s"),
              (axes[1], "srl_updates", "updates_per_s", "gradient updates/s", "target_srl_updates_per_s"))
    for ax, key, field, title, target in panels:
        rates = result.get(key, {}).get(field, {})
        if result.get(key, {}).get(target):
            ax.axhline(result[key][target], color="grey", ls="--", lw=1,
                       label=f"issue 32's target: {result[key][target]:,}" + (" (SRL-8)" if "srl" in key else ""))
            ax.legend(fontsize=7)
        bars = ax.bar(range(len(rates)), list(rates.values()), color=[_color(k) for k in rates])
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in rates.values()], fontsize=8)
        ax.set_xticks(range(len(rates)), list(rates), rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(title)
        sub = result.get(key, {})
        ax.set_title(f"{title}\n{sub.get('env', 'Hopper-shaped data')}, {gpu}", fontsize=9)
    ax = axes[2]
    for key, run in result.get("learning", {}).get("runs", {}).items():
        if "curve" in run and run["curve"]:
            steps, returns = zip(*run["curve"])
            ax.plot(steps, returns, marker="o", ms=2, lw=1, color=_color(key), alpha=0.8, label=key)
    learn = result.get("learning", {})
    if not any("curve" in run for run in learn.get("runs", {}).values()):
        ax.text(0.5, 0.5, "no learning runs recorded", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(TARGET_RETURN, color="grey", ls="--", lw=1, label=f"target {TARGET_RETURN:.0f}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return (mean of 5 episodes)")
    ax.set_title(f"SAC learning on {learn.get('env', '-')}: graphs against eager\n(runs stop at the target)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _color(label: str) -> str:
    order = ("graphs", "eager", "sb3", "cpu")
    return next((f"C{i}" for i, word in enumerate(order) if word in label), "C4")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = with_defaults(parser().parse_args(argv))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{NAME}.json"
    if args.plot_only:
        print(f"wrote {plot(json.loads(path.read_text()), args.out / f'{NAME}.png')}")
        return {}
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here (torch {torch.__version__})")
    print(f"gpu_training on {args.device}: {machine()}", flush=True)
    for name in args.sections:
        t0 = time.perf_counter()
        print(f"{name}:", flush=True)
        save = lambda value, name=name: merge(args.out, name, value)  # noqa: E731
        value = SECTIONS[name](args, save) if name == "learning" else SECTIONS[name](args)
        merge(args.out, name, {**value, "seconds": time.perf_counter() - t0})
        plot(json.loads(path.read_text()), args.out / f"{NAME}.png")
    result = json.loads(path.read_text())
    print(json.dumps({k: result[k] for k in result if k != "machine"}, indent=1, default=str)[:6000])
    return result


if __name__ == "__main__":
    main()

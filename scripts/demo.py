"""The newcomer's first run: SRL-8 against SAC-1 on InvertedPendulum-v5, scored by FAS.

Trains (or resumes, or reuses) two runs under ``runs/demo/``, sweeps each over open-loop action sequences
of length 1..30, prints one table, writes one plot with both curves, and says where the TensorBoard logs
are (``make dashboard``). On CPUs with bfloat16 arithmetic (AVX512-BF16 or AMX) the gradient steps run in
bf16-mixed precision (``train.precision``), which is faster there; elsewhere in float32. Ctrl-C saves a
checkpoint, and running the demo again resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from cadence.checkpoint import checkpoint_path
from cadence.cli import fas_table
from cadence.evaluation.fas import PUBLISHED_SAC_J_FAS
from cadence.evaluation.plots import plot_fas
from cadence.loops import RunInterrupted
from cadence.runs import METRICS_FILE, evaluate_fas, read_run_config, resolve_config, train

ENV = "InvertedPendulum-v5"
SEED = 2  # one of benchmarks/srl_fas.py's seeds (the README reports all three)
COMMON = ["agent.learning_starts=1000", "train.eval_every=2000", "train.eval_episodes=5"]


def fast_precision() -> str:
    """bf16-mixed where the CPU computes in bfloat16 natively, else fp32."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.is_file() else ""
    return "bf16-mixed" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "fp32"


def agents(root: Path, precision: str) -> dict[str, tuple[str, Path, list[str]]]:
    """label: (algo, run folder, config overrides)."""
    common = [*COMMON, f"train.precision={precision}"]
    return {"SAC-1": ("sac", root / f"sac_{ENV}", common),
            "SRL-8": ("srl", root / f"srl8_{ENV}", [*common, "agent.sequence_length=8"])}


def train_or_reuse(console: Console, step: str, algo: str, run_dir: Path, overrides: list[str], steps: int) -> None:
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.is_file() and json.loads(metrics_path.read_text()).get("steps", 0) >= steps:
        console.print(f"{step} reusing the finished run in {run_dir} (delete it to train again)")
    elif checkpoint_path(run_dir).is_file():
        console.rule(f"{step} resuming the interrupted run in {run_dir}")
        train(algo, read_run_config(run_dir)[1], run_dir, resume=True)
    else:
        console.rule(f"{step} training {algo.upper()} on {ENV} for {steps:,} env steps")
        sections = resolve_config(algo, {"train": {"env": ENV, "seed": SEED, "total_steps": steps}}, None, overrides)
        state = train(algo, sections, run_dir)
        console.print(f"final evaluation return {state.evals[-1][1]:.1f} (deciding at every step, ASL 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per agent")
    parser.add_argument("--root", type=Path, default=Path("runs/demo"), help="where the two run folders go")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16-mixed"), default="auto",
                        help="gradient-step precision; auto: bf16-mixed on CPUs with bfloat16 arithmetic")
    args = parser.parse_args()
    precision = fast_precision() if args.precision == "auto" else args.precision
    console, runs = Console(), agents(args.root, precision)
    console.print(f"precision: {precision}" + (" (this CPU computes bfloat16 natively)" if precision != "fp32" else ""))
    t0 = time.perf_counter()
    try:
        for i, (algo, run_dir, overrides) in enumerate(runs.values(), start=1):
            train_or_reuse(console, f"{i}/3", algo, run_dir, overrides, args.steps)
    except RunInterrupted as stop:
        console.print(f"[yellow]stopped:[/yellow] {stop}. Run `make demo` again to resume.")
        raise SystemExit(130) from None

    console.rule("3/3  FAS sweep: open-loop action sequences of length 1..30, 10 episodes each")
    results = {}
    with console.status("sweeping") as status:
        for label, (_, run_dir, _) in runs.items():
            show = lambda asl, r, label=label: status.update(f"{label}, ASL {asl}: mean return {r.mean():.1f}")
            results[label] = evaluate_fas(run_dir, on_asl=show)
    console.print(fas_table(results, title=f"{ENV}: mean return per ASL (seed {SEED}, {args.steps:,} env steps each)"))
    plot = plot_fas(results, args.root / "fas_srl_vs_sac.png",
                    title=f"{ENV}: SRL-8 against SAC-1, seed {SEED}, {args.steps:,} env steps each")
    sac, srl = results["SAC-1"].fas, results["SRL-8"].fas
    published = PUBLISHED_SAC_J_FAS["InvertedPendulum"][1]
    console.print(f"FAS: SRL-8 {srl:.3f}, SAC-1 {sac:.3f}  |  published SAC-1 FAS {published:.3f} "
                  "(paper: Gym v2 InvertedPendulum; cadence: Gymnasium v5, same R_max 1000)")
    if srl > sac:
        console.print("SRL decides once per sequence and its GRU unrolls the rest, so it holds up open loop "
                      "where SAC, trained to act every step, falls within a few steps.")
    else:
        console.print("This SRL run did not beat SAC-1 on FAS; some seeds need more than 20k steps to learn to "
                      "balance (README, measured results: 3 seeds).")
    console.print(f"plot:        {plot}")
    console.print(f"results:     {', '.join(str(d / 'fas.json') for _, d, _ in runs.values())}")
    console.print(f"TensorBoard: make dashboard   (or: .venv/bin/tensorboard --logdir {args.root})")
    console.print(f"took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

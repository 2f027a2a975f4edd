"""The newcomer's first run: SAC on InvertedPendulum-v5, then a FAS sweep.

Trains (or resumes, or reuses) ``runs/demo/sac_InvertedPendulum-v5``, evaluates the
Frequency-Averaged Score over ASL 1..30, prints the table next to the published SAC-1 FAS,
and says where the plot and the TensorBoard logs are. About 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from cadence.checkpoint import checkpoint_path
from cadence.cli import fas_table
from cadence.evaluation.fas import PUBLISHED_SAC_J_FAS
from cadence.runs import METRICS_FILE, evaluate_fas, read_run_config, resolve_config, train

RUN_DIR = Path("runs/demo/sac_InvertedPendulum-v5")
STEPS = 20_000
OVERRIDES = ["agent.learning_starts=1000", "train.eval_every=2000", "train.eval_episodes=5"]


def main() -> None:
    console = Console()
    t0 = time.perf_counter()
    metrics_path = RUN_DIR / METRICS_FILE
    finished = metrics_path.is_file() and json.loads(metrics_path.read_text()).get("steps", 0) >= STEPS
    if finished:
        console.print(f"reusing the finished demo run in {RUN_DIR} (delete it to train again)")
    elif checkpoint_path(RUN_DIR).is_file():
        console.print(f"resuming the interrupted demo run in {RUN_DIR}")
        _, sections = read_run_config(RUN_DIR)
        train("sac", sections, RUN_DIR, resume=True)
    else:
        console.rule(f"1/2  training SAC on InvertedPendulum-v5 for {STEPS} env steps")
        sections = resolve_config("sac", {"train": {"env": "InvertedPendulum-v5", "seed": 1, "total_steps": STEPS}},
                                  None, OVERRIDES)
        state = train("sac", sections, RUN_DIR)
        console.print(f"final evaluation return {state.evals[-1][1]:.1f}")

    console.rule("2/2  FAS sweep: open-loop action sequences of length 1..30, 10 episodes each")
    with console.status("sweeping") as status:
        result = evaluate_fas(RUN_DIR, on_asl=lambda asl, r: status.update(f"ASL {asl}: mean return {r.mean():.1f}"))
    console.print(fas_table({"cadence SAC-1": result}, title="InvertedPendulum-v5: return per ASL"))
    published = PUBLISHED_SAC_J_FAS["InvertedPendulum"][1]
    console.print(f"cadence SAC-1 FAS {result.fas:.3f}  |  published SAC-1 FAS {published:.3f} "
                  "(paper: Gym v2 InvertedPendulum; cadence: Gymnasium v5, same R_max 1000)")
    console.print(f"plot:        {RUN_DIR / 'fas.png'}")
    console.print(f"results:     {RUN_DIR / 'fas.json'}, {RUN_DIR / 'metrics.json'}")
    console.print(f"TensorBoard: make dashboard   (or: .venv/bin/tensorboard --logdir {RUN_DIR.parent})")
    console.print(f"took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

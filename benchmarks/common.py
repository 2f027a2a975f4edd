"""Helpers shared by the benchmark scripts: resumable training runs and result files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from cadence.checkpoint import checkpoint_path
from cadence.io import atomic_write_json
from cadence.runs import METRICS_FILE, read_run_config, resolve_config, train

RESULTS = Path(__file__).parent / "results"


def train_or_resume(algo: str, env_id: str, seed: int, steps: int, overrides: list[str], run_dir: Path,
                    threads: int = 2) -> list[tuple[int, float]]:
    """Train ``algo`` in ``run_dir`` unless a finished run is there; resume an interrupted one.

    Returns the evaluation curve ``[(step, mean return), ...]``.
    """
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("steps", 0) >= steps:
            return [tuple(e) for e in metrics["evals"]]
    if checkpoint_path(run_dir).is_file():  # interrupted, or finished with a smaller budget: continue it
        _, sections = read_run_config(run_dir)
        sections["train"] = dataclasses.replace(sections["train"], total_steps=steps)
        state = train(algo, sections, run_dir, resume=True)
    else:
        base = {"train": {"env": env_id, "seed": seed, "total_steps": steps}}
        sections = resolve_config(algo, base, None, [*overrides, f"train.torch_threads={threads}",
                                                     "train.progress=false"])
        state = train(algo, sections, run_dir)
    return [tuple(e) for e in state.evals]


def merge_result(name: str, key: str, value: Any) -> Path:
    """Set ``key`` in ``benchmarks/results/<name>.json``, keeping the other keys."""
    path = RESULTS / f"{name}.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged[key] = value
    return atomic_write_json(path, merged)

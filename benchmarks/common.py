"""Helpers shared by the benchmark scripts: resumable training runs and result files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cadence import runs
from cadence.io import atomic_write_json
from cadence.runs import resolve_config

RESULTS = Path(__file__).parent / "results"


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform.processor() is empty on Linux)."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else (platform.processor() or platform.machine())


def train_or_resume(algo: str, env_id: str, seed: int, steps: int, overrides: list[str], run_dir: Path,
                    threads: int = 2) -> list[tuple[int, float]]:
    """Train ``algo`` in ``run_dir`` unless a finished run is there; resume an interrupted one.

    Returns the evaluation curve ``[(step, mean return), ...]``.
    """
    base = {"train": {"env": env_id, "seed": seed, "total_steps": steps}}
    sections = resolve_config(algo, base, None, [*overrides, f"train.torch_threads={threads}", "train.progress=false"])
    return runs.train_or_resume(algo, sections, run_dir)


def merge_result(name: str, key: str, value: Any) -> Path:
    """Set ``key`` in ``benchmarks/results/<name>.json``, keeping the other keys."""
    path = RESULTS / f"{name}.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged[key] = value
    return atomic_write_json(path, merged)

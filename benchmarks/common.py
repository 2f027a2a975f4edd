"""Helpers shared by the benchmark scripts: resumable training runs (one at a time, or many as a cadence sweep)
and result files."""

from __future__ import annotations

import json
import time
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


class ResetClock:
    """Times a ``BatchedEnv``'s resets (autoreset's included) by wrapping its ``reset_worlds``: ``resets`` worlds
    reset in ``seconds``, since :meth:`zero`."""

    def __init__(self, env: Any):
        self.resets, self.seconds, self.started = 0, 0.0, time.perf_counter()
        reset_worlds = env.reset_worlds

        def timed_reset(idx, tasks=None):
            start = time.perf_counter()
            out = reset_worlds(idx, tasks)
            self.seconds += time.perf_counter() - start
            self.resets += len(idx)
            return out

        env.reset_worlds = timed_reset

    def zero(self) -> None:
        self.resets, self.seconds, self.started = 0, 0.0, time.perf_counter()

    def summary(self) -> dict[str, float]:
        """Microseconds per reset, and the share of the wall time since :meth:`zero` spent resetting."""
        return {"us_per_reset": 1e6 * self.seconds / max(self.resets, 1),
                "share_of_time": self.seconds / (time.perf_counter() - self.started)}


def train_or_resume(algo: str, env_id: str, seed: int, steps: int, overrides: list[str], run_dir: Path,
                    threads: int = 2) -> list[tuple[int, float]]:
    """Train ``algo`` in ``run_dir`` unless a finished run is there; resume an interrupted one.

    Returns the evaluation curve ``[(step, mean return), ...]``.
    """
    base = {"train": {"env": env_id, "seed": seed, "total_steps": steps}}
    sections = resolve_config(algo, base, None, [*overrides, f"train.torch_threads={threads}", "train.progress=false"])
    return runs.train_or_resume(algo, sections, run_dir)


GRIDS = Path(__file__).parent / "sweeps"


def write_grid(name: str, grid: dict[str, Any], script: str) -> Any:
    """Write ``grid`` as ``benchmarks/sweeps/<name>.toml`` (so ``cadence sweep`` can run it too) and load it."""
    import tomli_w

    from cadence.sweeps import load_sweep

    GRIDS.mkdir(exist_ok=True)
    path = GRIDS / f"{name}.toml"
    path.write_text(f"# written by benchmarks/{script}; run it with: cadence sweep benchmarks/sweeps/{path.name}\n"
                    + tomli_w.dumps(grid))
    return load_sweep(path)


def run_grid(sweep: Any, root: Path, workers: int) -> None:
    """Run a sweep's unfinished runs, ``workers`` at once, with its progress on the terminal; stop on a failure."""
    from cadence.sweeps import LocalExecutor, SweepProgress, run_sweep

    executor = LocalExecutor(workers)
    with SweepProgress(sweep, root, executor.slots) as progress:
        outcome = run_sweep(sweep, root, executor, progress)
    if outcome.failed:
        raise SystemExit(f"{len(outcome.failed)} run(s) failed: {outcome.failed}")


def run_methods(name: str, methods: dict[str, tuple[str, dict[str, dict[str, Any]]]], seeds: list[int], root: Path,
                workers: int) -> dict[tuple[str, int], float]:
    """Every (method, seed) as one cadence sweep named ``name`` in ``root`` (resumable; ``workers`` runs at once):
    ``methods`` maps a method to its algo and config sections (``{"train": {...}, "agent": {...}}``). Run folders are
    :func:`run_dir`; returns each run's seconds (as recorded when it ran)."""
    from cadence.sweeps import expand, read_status

    table = {m: {"algo": algo, **{f"{section}.{k}": v for section, keys in config.items() for k, v in keys.items()}}
             for m, (algo, config) in methods.items()}
    sweep = expand({"sweep": {"name": name}, "methods": table, "axes": {"train.seed": list(seeds)}})
    run_grid(sweep, root, workers)
    return {(r.method, r.settings["train.seed"]): read_status(root / r.name).get("seconds") for r in sweep.runs}


def run_dir(root: Path, method: str, seed: int) -> Path:
    """The folder of one (method, seed) run of :func:`run_methods`."""
    return root / method / f"seed={seed}"


def merge_result(name: str, key: str, value: Any) -> Path:
    """Set ``key`` in ``benchmarks/results/<name>.json``, keeping the other keys."""
    path = RESULTS / f"{name}.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged[key] = value
    return atomic_write_json(path, merged)


def paired_difference(result: dict, method: str, baseline: str, record: str, key: str) -> tuple[float, float]:
    """Mean over seeds of (``method`` − ``baseline``) for one metric of a continual benchmark's result (seed-paired:
    a seed's random warm-up data are the same in every method), and its 95% Student-t half-width."""
    import numpy as np
    from scipy import stats

    runs = result["results"]
    diffs = np.array([runs[method]["per_seed"][str(s)][record]["metrics"][key]
                      - runs[baseline]["per_seed"][str(s)][record]["metrics"][key] for s in result["seeds"]])
    half = stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return float(diffs.mean()), float(half)

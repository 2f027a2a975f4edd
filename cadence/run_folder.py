"""The files of a run folder: ``config.toml``, ``metrics.json`` and the closing hparams record.

A run folder holds ``config.toml`` (the resolved config, with an ``[algo]`` section naming the recipe),
TensorBoard event files, ``checkpoints/`` (``last.pt`` to resume, ``agent.pt`` to deploy) and ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cadence.checkpoint import CheckpointError
from cadence.config import read_toml, to_dict, to_toml
from cadence.io import atomic_write_json, atomic_write_text
from cadence.logging import RunLogger
from cadence.loops.common import TrainState

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.json"
MODEL = "model.pt"  # the fitted dynamics model of offline model-based runs
DYNAMICS_REWARD = "dynamics_reward.pt"  # MOREC's fitted dynamics reward


@dataclass(frozen=True)
class _AlgoSection:
    name: str


def default_run_dir(algo: str, env_id: str, seed: int, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{algo}_{env_id}_s{seed}_{stamp}"


def write_config(run_dir: Path, algo: str, sections: dict[str, Any]) -> None:
    """Create the folder and write its ``config.toml`` (atomically)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, to_toml({"algo": _AlgoSection(algo), **sections}))


def read_config_file(run_dir: str | Path) -> tuple[str, dict[str, Any]]:
    """The algo and the raw config sections of an existing run folder."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a cadence run folder: {path} is missing")
    raw = read_toml(path)
    algo = raw.pop("algo", {}).get("name")
    if algo is None:
        raise CheckpointError(f"{path} does not name the run's algo ([algo] name = ...)")
    return algo, raw


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_metrics(run_dir: str | Path, update: dict[str, Any]) -> None:
    """Merge ``update`` into the run's metrics.json (atomically)."""
    atomic_write_json(Path(run_dir) / METRICS_FILE, {**read_metrics(run_dir), **update})


def close_run(algo: str, sections: dict[str, Any], run_dir: Path, state: TrainState, env_id: str,
              extra: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> TrainState:
    """metrics.json and the hparams record of a finished (or early-stopped) run; ``labels`` lead the HParams
    columns (a sweep's ``Method``)."""
    train_cfg = sections["train"]
    metrics = {"algo": algo, "env": env_id, "seed": train_cfg.seed, "steps": state.step, **(extra or {}),
               "episodes": state.episodes, "final_eval_return": state.evals[-1][1], "evals": state.evals,
               "stopped_early": state.step < train_cfg.total_steps}
    write_metrics(run_dir, metrics)
    _set_aside_stale_sweeps(run_dir, state.step)
    agent_cfg = sections["agent"]
    interval = getattr(agent_cfg, "sequence_length", getattr(agent_cfg, "action_repeat", 1))
    # TensorBoard orders HParams columns by name: capitals put the four a reader compares first ahead of the
    # settings that differ from their defaults (config.toml keeps the whole config)
    leading = {**(labels or {}), "Algo": algo, "Env": env_id, "Seed": train_cfg.seed, "J (decision interval)": interval}
    flat = {f"{name}.{k}": v for name, cfg in sections.items() for k, v in to_dict(cfg).items()
            if k not in ("env", "seed") and to_dict(type(cfg)()).get(k) != v}
    tags = ["eval/return", *state.last_evaluation.keys(), "eval/fas"]
    logger = RunLogger(run_dir)
    logger.hparams({**leading, **flat}, list(dict.fromkeys(tags)))
    logger.close()
    return state


def _set_aside_stale_sweeps(run_dir: Path, step: int) -> None:
    """A run extended past the step its FAS sweeps were made at no longer has that policy: rename the sweeps'
    files to ``<name>_at_<steps>_steps.*`` and drop their values from metrics.json (``cadence eval fas`` again)."""
    stale: list[str] = []
    for path in sorted(run_dir.glob("fas*.json")):
        swept = json.loads(path.read_text()).get("trained_steps")
        if swept is None or swept == step or "_at_" in path.stem:
            continue
        stem, at = path.stem, f"_at_{swept}_steps"
        # the files, and the TensorBoard sub-run of the curve
        moves = {f"{stem}.json": f"{stem}{at}.json", f"{stem}.png": f"{stem}{at}.png",
                 f"{stem}_by_asl": f"{stem}_by_asl{at}"}
        for old, new in moves.items():
            if (run_dir / old).exists():
                (run_dir / old).replace(run_dir / new)
        stale.append(path.stem)
    if stale:
        metrics = read_metrics(run_dir)
        for name in stale:
            metrics.pop(name, None)
            metrics.pop(f"{name}_logged_step", None)
        atomic_write_json(run_dir / METRICS_FILE, metrics)

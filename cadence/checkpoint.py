"""Checkpoint bundles: one file with everything needed to continue a run exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cadence.io import atomic_torch_save

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
DEPLOY = "agent.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or incomplete."""


def checkpoint_path(run_dir: str | Path, name: str = LAST) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / name


def save_checkpoint(run_dir: str | Path, bundle: dict[str, Any], name: str = LAST) -> Path:
    """Write ``bundle`` atomically to ``run_dir/checkpoints/name``."""
    return atomic_torch_save(checkpoint_path(run_dir, name), bundle)


def load_checkpoint(run_dir: str | Path, name: str = LAST, required: tuple[str, ...] = ("algo",)) -> dict[str, Any]:
    """Read a bundle, raising :class:`CheckpointError` if it is missing, corrupt or lacks ``required`` keys."""
    path = checkpoint_path(run_dir, name)
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint in {run_dir}: expected {path}")
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(bundle, dict):
        raise CheckpointError(f"checkpoint {path} is not a cadence checkpoint bundle")
    missing = [k for k in required if k not in bundle]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    return bundle

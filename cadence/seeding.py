"""Seeding and RNG state capture, so that a resumed run continues exactly."""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Snapshot of every global RNG cadence draws from (the CUDA generators too, when CUDA is in use)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "torch_cuda" in state:
        if torch.cuda.is_available():
            # a machine with fewer GPUs than the one that saved the checkpoint restores the ones it has
            for index, cuda_state in enumerate(state["torch_cuda"][:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, index)
        else:
            warnings.warn("the checkpoint holds CUDA generator states but CUDA is not available here: "
                          "the resumed run will not repeat the uninterrupted one exactly", stacklevel=2)

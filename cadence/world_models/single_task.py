"""A single-task model's held-out error: the yardstick a sequence's task gap is compared with."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from cadence.nn import adam
from cadence.world_models.continual import train_model_steps
from cadence.world_models.ensemble import EnsembleConfig, GaussianEnsemble


def single_task_error(data: Mapping[str, np.ndarray], state_scale: np.ndarray, steps: int = 2000,
                      seed: int = 0, hidden_sizes: tuple[int, ...] = (200, 200), holdout: float = 0.2) -> float:
    """Fit one Gaussian MLP on ``1 - holdout`` of ``data`` (``obs, action, next_obs, reward``) for ``steps`` updates
    and return its held-out next-state error, per column divided by ``state_scale**2`` and averaged (the units of
    :class:`~cadence.envs.task_gap.TaskGap`)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    tensors = {k: torch.as_tensor(np.asarray(data[k]), dtype=torch.float32)
               for k in ("obs", "action", "next_obs", "reward")}
    n = len(tensors["obs"])
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    cut = int(n * (1 - holdout))
    if cut < 2 or n - cut < 1:
        raise ValueError(f"{n} transitions are too few to fit and hold out a model")
    train = {k: v[order[:cut]] for k, v in tensors.items()}
    test = {k: v[order[cut:]] for k, v in tensors.items()}
    torch.manual_seed(seed)  # the model's initial weights
    model = GaussianEnsemble(tensors["obs"].shape[1], tensors["action"].shape[1],
                             EnsembleConfig(n_members=1, n_elites=1, hidden_sizes=hidden_sizes))
    model.set_normalizer(train["obs"], train["action"])
    train_model_steps(model.loss, list(model.parameters()), train, steps, 256, adam(model.parameters(), 1e-3), None,
                      generator)
    with torch.no_grad():
        next_obs, _ = model.elite_mean(test["obs"], test["action"])
    scale = torch.as_tensor(np.asarray(state_scale), dtype=torch.float32)
    return float((((next_obs - test["next_obs"]) / scale) ** 2).mean())


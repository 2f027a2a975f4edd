"""Fitting a GaussianEnsemble with a holdout split, early stopping and elite selection."""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch

from cadence.nn import adam
from cadence.replay import ReplayBuffer
from cadence.world_models.ensemble import GaussianEnsemble

Data = dict[str, torch.Tensor]


def buffer_transitions(buffer: ReplayBuffer) -> Data:
    """The filled part of a buffer as a dict of tensors (views, no copy)."""
    n = len(buffer)
    return {k: buffer.storage[k][:n] for k in ("obs", "action", "reward", "next_obs")}


class EnsembleTrainer:
    """Trains a GaussianEnsemble on transition data.

    Each member sees the training split in its own random order. After every epoch the holdout
    error is measured, and each member that improved by 1% has its own weights saved (as the
    MOPO/MOBILE code does, member by member); training stops after ``patience`` epochs without
    such an improvement for any member, every member gets back its best weights and the elites
    are the members with the lowest holdout error. The shared log-variance bounds and the input
    normaliser are not per member and keep their last values.

    The input normaliser is set from the training split on a model's first fit. Later fits recompute
    it (``normalizer="refit"``, the default) or keep it (``"keep"``): continual learning that refits one
    model task after task keeps it, so inputs learned under earlier data are not silently shifted.
    """

    def __init__(self, model: GaussianEnsemble, generator: torch.Generator | None = None):
        self.model = model
        self.config = model.config
        self.optimizer = adam(model.parameters(), self.config.lr, self.config.weight_decay)
        self.generator = generator

    def fit(self, data: Data, max_epochs: int | None = None,
            normalizer: Literal["refit", "keep"] = "refit") -> dict[str, Any]:
        """Fit on ``data`` (keys obs, action, reward, next_obs); returns metrics of the fit.

        ``normalizer``: recompute the input normaliser from this data (``"refit"``) or keep the model's
        (``"keep"``); a model whose normaliser was never set gets it computed either way.
        """
        if normalizer not in ("refit", "keep"):
            raise ValueError(f"normalizer must be 'refit' or 'keep', got {normalizer!r}")
        n = data["obs"].shape[0]
        for key, value in data.items():
            if not torch.isfinite(value).all():
                raise ValueError(f"model training data contains NaN or inf in {key!r}")
        n_hold = max(1, int(n * self.config.holdout_ratio))
        if n - n_hold < 1:
            raise ValueError(f"need at least 2 transitions to fit a model, got {n}")
        device = data["obs"].device
        # permutations are drawn on the generator's own device (a CPU generator cannot draw on CUDA)
        perm = torch.randperm(n, generator=self.generator).to(device)
        hold = {k: v[perm[:n_hold]] for k, v in data.items()}
        train = {k: v[perm[n_hold:]] for k, v in data.items()}
        if normalizer == "refit" or not self._normalizer_set():
            self.model.set_normalizer(train["obs"], train["action"])

        cfg, members = self.config, self.model.config.n_members
        n_train = n - n_hold
        best = self.model.member_errors(hold)
        best_members = copy.deepcopy(self.model.net.state_dict())  # every tensor is [members, ...]
        stale, epochs, last_loss = 0, 0, float("nan")
        for _ in range(max_epochs or cfg.max_epochs):
            order = torch.stack([torch.randperm(n_train, generator=self.generator) for _ in range(members)]).to(device)
            for start in range(0, n_train, cfg.batch_size):
                idx = order[:, start : start + cfg.batch_size]  # [members, B]: a different batch per member
                loss, _ = self.model.loss({k: v[idx] for k, v in train.items()})
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                last_loss = loss.item()
            epochs += 1
            errors = self.model.member_errors(hold)
            improved = (best - errors) / best.clamp_min(1e-12) > 0.01
            if improved.any():
                best = torch.where(improved, errors, best)
                with torch.no_grad():
                    for name, value in self.model.net.state_dict().items():
                        best_members[name][improved] = value[improved]
                stale = 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        self.model.net.load_state_dict(best_members)
        errors = self.model.member_errors(hold)
        self.model.elites.copy_(torch.argsort(errors)[: cfg.n_elites])
        return {
            "model/epochs": epochs,
            "model/train_loss": last_loss,
            "model/holdout_mse": errors[self.model.elites].mean().item(),
        }

    def _normalizer_set(self) -> bool:
        """Whether the model's normaliser was ever set (a new model's is exactly mean 0, std 1)."""
        return bool((self.model.in_mean != 0).any() or (self.model.in_std != 1).any())

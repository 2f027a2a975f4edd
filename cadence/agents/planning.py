"""CEM-MPC: plan action sequences through a learned model (the online-planning baseline of SRL).

At each decision the cross-entropy method searches ``horizon`` actions, scoring each candidate
by the model's predicted rewards (discounted, stopped at predicted terminations), plus an optional
terminal value. The first ASL actions of the best plan run open loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cadence.config import check, check_positive
from cadence.world_models.base import DynamicsModel


@dataclass(frozen=True)
class CEMConfig:
    """Cross-entropy-method settings; defaults are HyperCRL's Half-Cheetah planner (DESIGN.md)."""

    horizon: int = 30
    """Planning horizon in primitive steps (extended to the ASL when that is longer)."""
    samples: int = 500
    """Candidate action sequences per iteration."""
    elites: int = 50
    """Best candidates refitting the sampling distribution."""
    iterations: int = 5
    """CEM iterations per decision."""
    init_std: float = 0.5
    """Initial std of the sampling Gaussian, in actions normalised to [-1, 1]."""
    gamma: float = 0.99
    """Discount of predicted rewards."""

    def __post_init__(self) -> None:
        for name in ("horizon", "samples", "elites", "iterations", "init_std"):
            check_positive(self, name)
        check(self.elites <= self.samples, "elites", self.elites, f"<= samples ({self.samples})")
        check(0.0 <= self.gamma <= 1.0, "gamma", self.gamma, "in [0, 1]")


class CEMPlanner:
    """Model-predictive control by CEM over any :class:`DynamicsModel` (mean of its elites).

    Args:
        model: a trained dynamics model that predicts rewards (``predicts_reward``).
        low, high: primitive action bounds.
        config: CEM settings.
        termination_fn: ``next_obs -> bool`` that stops the return of a candidate (see ``envs.terminations``).
        value_fn: optional ``(obs) -> value`` added at the horizon, e.g. a critic of the actor's policy.
    """

    algo = "mpc"

    def __init__(self, model: DynamicsModel, low: np.ndarray, high: np.ndarray, config: CEMConfig = CEMConfig(),
                 termination_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 value_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 generator: torch.Generator | None = None):
        if not model.predicts_reward:
            raise ValueError("CEM-MPC needs a model that predicts rewards (learn_reward=True)")
        self.model, self.config = model, config
        self.scale = torch.as_tensor((high - low) / 2.0, dtype=torch.float32)
        self.bias = torch.as_tensor((high + low) / 2.0, dtype=torch.float32)
        self.act_dim = len(low)
        self.termination_fn, self.value_fn = termination_fn, value_fn
        self.generator = generator

    @torch.no_grad()
    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Predicted discounted return of each candidate: ``actions [N, H, act_dim]`` -> ``[N]``."""
        n, horizon, _ = actions.shape
        state = obs.expand(n, -1)
        alive = torch.ones(n)
        ret = torch.zeros(n)
        for t in range(horizon):
            state, reward = self.model.elite_mean(state, actions[:, t])
            ret += (self.config.gamma**t) * alive * reward
            if self.termination_fn is not None:
                alive = alive * (~self.termination_fn(state)).float()
        if self.value_fn is not None:
            ret += (self.config.gamma**horizon) * alive * self.value_fn(state)
        return ret

    @torch.no_grad()
    def plan(self, obs: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """The best ``[horizon, act_dim]`` action sequence from ``obs``."""
        cfg = self.config
        horizon = horizon or cfg.horizon
        obs_t = torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)
        mean = torch.zeros(horizon, self.act_dim)
        std = torch.full((horizon, self.act_dim), cfg.init_std)
        for _ in range(cfg.iterations):
            noise = torch.randn(cfg.samples, horizon, self.act_dim, generator=self.generator)
            candidates = (mean + std * noise).clamp(-1.0, 1.0)
            returns = self.evaluate(obs_t, candidates * self.scale + self.bias)
            elite = candidates[torch.topk(returns, cfg.elites).indices]
            mean, std = elite.mean(0), elite.std(0).clamp_min(1e-3)
        return (mean * self.scale + self.bias).numpy()

    def act_sequence(self, obs: np.ndarray, length: int, deterministic: bool = True) -> np.ndarray:
        """Plan once and return the first ``length`` actions (the horizon grows to ``length`` if needed)."""
        return self.plan(obs, max(length, self.config.horizon))[:length]

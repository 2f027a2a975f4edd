"""CEM-MPC: plan action sequences through a learned model (SRL's online-planning baseline, HyperCRL's controller).

At each decision the cross-entropy method searches ``horizon`` actions, scoring each candidate
by the model's predicted rewards (discounted, stopped at predicted terminations), plus an optional
terminal value. The first ASL actions of the best plan run open loop.

One call plans for a batch of worlds: every world's candidates go through the model together. A task-conditioned
model (one with ``for_task(task)``, such as HyperCRL's hypernetwork) is asked for the view of each world's task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cadence.config import check, check_positive
from cadence.world_models.base import DynamicsModel, frozen_weights


@dataclass(frozen=True)
class CEMConfig:
    """Cross-entropy-method settings. Horizon, samples, elites and iterations are HyperCRL's Half-Cheetah planner
    (Huang et al., arXiv 2009.11997); ``init_std`` 0.5 and ``gamma`` 0.99 are cadence's (the authors' code plans with
    std 1 and no discount: ``ContinualModelBasedConfig(preset="reference")``)."""

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

    @classmethod
    def cpu(cls) -> CEMConfig:
        """A cheaper setting for CPU benchmarks: horizon 15, 100 samples, 10 elites, 3 iterations (about 1/33
        of the paper's model evaluations per decision)."""
        return cls(horizon=15, samples=100, elites=10, iterations=3)

    def __post_init__(self) -> None:
        for name in ("horizon", "samples", "elites", "iterations", "init_std"):
            check_positive(self, name)
        check(self.elites <= self.samples, "elites", self.elites, f"<= samples ({self.samples})")
        check(0.0 <= self.gamma <= 1.0, "gamma", self.gamma, "in [0, 1]")


def conditioned(model: DynamicsModel, task: Any) -> DynamicsModel:
    """``model`` for ``task`` (an int, or one id per row): its ``for_task`` view if it has one, else itself
    (a model without task input plans the same for every task)."""
    if task is None:
        return model
    for_task = getattr(model, "for_task", None)
    return model if for_task is None else for_task(task)


def generator_on(device: torch.device, generator: torch.Generator | None) -> torch.Generator | None:
    """``generator`` if it draws on ``device``'s type, else a new one there seeded from one draw of it (torch
    samples on a device only with a generator of that device)."""
    if generator is None or generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


class CEMPlanner:
    """Model-predictive control by CEM over any :class:`DynamicsModel` (mean of its elites).

    Args:
        model: a trained dynamics model that predicts rewards (``predicts_reward``).
        low, high: primitive action bounds.
        config: CEM settings.
        termination_fn: ``next_obs -> bool`` that stops the return of a candidate (see ``envs.terminations``).
        value_fn: optional ``(obs) -> value`` added at the horizon, e.g. a critic of the actor's policy.
        generator: the sampling generator, for reproducible plans; one on another device than ``device`` (the
            loops keep theirs on the CPU) seeds a fresh one on ``device`` from one draw of its own.
        device: where planning runs (the model's device).
    """

    algo = "mpc"

    def __init__(self, model: DynamicsModel, low: np.ndarray, high: np.ndarray, config: CEMConfig = CEMConfig(),
                 termination_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 value_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        if not model.predicts_reward:
            raise ValueError("CEM-MPC needs a model that predicts rewards (learn_reward=True)")
        self.model, self.config, self.device = model, config, torch.device(device)
        self.scale = torch.as_tensor((high - low) / 2.0, dtype=torch.float32, device=self.device)
        self.bias = torch.as_tensor((high + low) / 2.0, dtype=torch.float32, device=self.device)
        self.act_dim = len(low)
        self.termination_fn, self.value_fn = termination_fn, value_fn
        self.generator = generator_on(self.device, generator)

    @torch.no_grad()
    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor, task: Any = None) -> torch.Tensor:
        """Predicted discounted return of each candidate: ``obs [1 or N, obs_dim]``, ``actions [N, H, act_dim]``
        -> ``[N]``; ``task`` is an int or one task id per candidate."""
        n, horizon, _ = actions.shape
        model = conditioned(self.model, task)
        state = obs.expand(n, -1)
        alive = torch.ones(n, device=actions.device)
        ret = torch.zeros(n, device=actions.device)
        for t in range(horizon):
            state, reward = model.elite_mean(state, actions[:, t])
            ret += (self.config.gamma**t) * alive * reward
            if self.termination_fn is not None:
                alive = alive * (~self.termination_fn(state)).float()
        if self.value_fn is not None:
            ret += (self.config.gamma**horizon) * alive * self.value_fn(state)
        return ret

    @torch.no_grad()
    def plan(self, obs: np.ndarray, horizon: int | None = None, task: Any = None) -> np.ndarray:
        """The best ``[horizon, act_dim]`` action sequence from one observation, or ``[B, horizon, act_dim]`` from
        a batch ``[B, obs_dim]`` (each world planned on its own, all through the model at once). ``task`` is one
        task id for all worlds or one per world."""
        cfg = self.config
        horizon = horizon or cfg.horizon
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        single = obs_t.ndim == 1
        obs_t = obs_t.reshape(-1, obs_t.shape[-1])
        b, k = obs_t.shape[0], cfg.samples
        tasks = None if task is None else torch.as_tensor(task, device=self.device).long().expand(b)
        starts = obs_t.repeat_interleave(k, dim=0)  # world-major: rows w*k .. w*k+k-1 are world w's candidates
        per_row = None if tasks is None else tasks.repeat_interleave(k)
        mean = torch.zeros(b, 1, horizon, self.act_dim, device=self.device)
        std = torch.full((b, 1, horizon, self.act_dim), cfg.init_std, device=self.device)
        with frozen_weights(self.model):  # nothing trains during one plan: generated weights are made once
            for _ in range(cfg.iterations):
                noise = torch.randn(b, k, horizon, self.act_dim, generator=self.generator, device=self.device)
                candidates = (mean + std * noise).clamp(-1.0, 1.0)
                returns = self.evaluate(starts, (candidates * self.scale + self.bias).reshape(b * k, horizon, -1),
                                        per_row).reshape(b, k)
                best = torch.topk(returns, cfg.elites, dim=1).indices
                elite = torch.gather(candidates, 1, best[:, :, None, None].expand(-1, -1, horizon, self.act_dim))
                mean, std = elite.mean(1, keepdim=True), elite.std(1, keepdim=True).clamp_min(1e-3)
        plans = (mean[:, 0] * self.scale + self.bias).cpu().numpy()
        return plans[0] if single else plans

    def act_sequence(self, obs: np.ndarray, length: int, task: Any = None, deterministic: bool = True) -> np.ndarray:
        """Plan once and return the first ``length`` actions (the horizon grows to ``length`` if needed); ``obs``
        may be one observation or a batch, as in :meth:`plan`."""
        return self.plan(obs, max(length, self.config.horizon), task)[..., :length, :]

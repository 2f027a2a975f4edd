"""Branched model rollouts for MBPO-style offline RL (MOPO, MOBILE), with a pluggable next-state choice.

From start states drawn from real data, the policy acts in the learned model for ``length`` steps.
Which next state a step takes is a ``choose`` function: by default one random elite's Gaussian sample
(MBPO/MOPO); MOREC's transition filter plugs in instead, and may end rollouts early with its ``keep`` mask.
A step the choice does not keep is still stored, as a terminal transition: the rollout ends there and the critic
bootstraps nothing beyond it (MOREC's early termination, an implicit pessimism about unreliable regions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cadence.world_models.base import DynamicsModel

Tensor = torch.Tensor
#: ``choose(obs, act) -> (next_obs, reward, keep)``; a row with ``keep == False`` is stored as terminal and stops
Choose = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]
#: ``policy(obs) -> act`` (sampled, as SAC acts while collecting)
Policy = Callable[[Tensor], Tensor]
#: ``penalty(obs, act) -> [B]`` subtracted from the model's reward (e.g. MOPO's uncertainty)
Penalty = Callable[[Tensor, Tensor], Tensor]


class ModelDiverged(RuntimeError):
    """The model predicted NaN or inf during a rollout."""


def random_elite_sample(model: DynamicsModel, generator: torch.Generator | None = None) -> Choose:
    """MBPO's choice: each row samples the Gaussian of one uniformly drawn elite."""

    def choose(obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean, logvar = model(obs, act)  # deltas (and reward), [members, B, out]
        noise = torch.randn(mean.shape, generator=generator, device=obs.device, dtype=obs.dtype)
        samples = mean + torch.exp(0.5 * logvar) * noise
        pick = model.elites[torch.randint(len(model.elites), (obs.shape[0],), generator=generator,
                                          device=model.elites.device)]
        chosen = samples[pick, torch.arange(obs.shape[0], device=obs.device)]
        keep = torch.ones(obs.shape[0], dtype=torch.bool, device=obs.device)
        return obs + chosen[:, : model.obs_dim], chosen[:, model.obs_dim], keep

    return choose


def mopo_penalty(model: DynamicsModel) -> Penalty:
    """MOPO's uncertainty u(s, a) = max over elites of ||sigma_k(s, a)||_2 (Yu et al., 2020), the norm of each
    member's predicted standard deviation over next state and reward."""

    def penalty(obs: Tensor, act: Tensor) -> Tensor:
        _, logvar = model(obs, act)
        return torch.exp(0.5 * logvar[model.elites]).norm(dim=-1).amax(dim=0)

    return penalty


@dataclass(frozen=True)
class RolloutConfig:
    """How long and how wide model rollouts are."""

    length: int = 5
    """Model steps per rollout (MOPO 1-5; MOREC's filter makes 100 usable)."""
    batch_size: int = 2000
    """Start states per rollout round."""
    penalty_coef: float = 1.0
    """lambda: the reward stored is r - lambda * penalty(s, a)."""
    clip: float = 25.0
    """Next states are clipped to [-clip, clip] (the MOPO/MOREC code's guard for D4RL MuJoCo tasks)."""

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"rollout length must be >= 1, got {self.length}")
        if self.batch_size < 1:
            raise ValueError(f"rollout batch_size must be >= 1, got {self.batch_size}")
        if self.penalty_coef < 0:
            raise ValueError(f"penalty_coef must be >= 0, got {self.penalty_coef}")
        if not self.clip > 0:
            raise ValueError(f"rollout clip must be > 0, got {self.clip}")


@torch.no_grad()
def model_rollout(start_obs: Tensor, policy: Policy, choose: Choose, termination: Callable[[Tensor], Tensor],
                  config: RolloutConfig = RolloutConfig(), penalty: Penalty | None = None) -> dict[str, Tensor]:
    """Roll ``policy`` through the model from ``start_obs``; returns every model transition taken.

    Rows stop at a termination (``termination(next_obs)``) or when ``choose`` does not keep them; either way the
    step is stored with ``terminated`` set. Next states are clipped to ``[-clip, clip]`` (MOPO/MOREC: 25) so a
    long rollout cannot run away. Fields: ``obs, action, reward`` (penalised), ``next_obs, terminated, penalty``
    and ``step`` (0-based depth), each with one row per transition.

    Raises:
        ModelDiverged: a prediction was NaN or inf; the message names the rollout step.
    """
    obs, alive = start_obs, torch.ones(start_obs.shape[0], dtype=torch.bool, device=start_obs.device)
    out: dict[str, list[Tensor]] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "penalty",
                                                     "step")}
    for step in range(config.length):
        obs = obs[alive]
        if obs.shape[0] == 0:
            break
        act = policy(obs)
        next_obs, reward, keep = choose(obs, act)
        if not (torch.isfinite(next_obs).all() and torch.isfinite(reward).all()):
            raise ModelDiverged(f"the model predicted NaN or inf at rollout step {step} of {config.length}")
        next_obs = next_obs.clamp(-config.clip, config.clip)
        pen = penalty(obs, act) if penalty is not None else torch.zeros_like(reward)
        terminated = termination(next_obs) | ~keep
        for key, value in zip(out, (obs, act, reward - config.penalty_coef * pen, next_obs, terminated, pen,
                                    torch.full_like(reward, step, dtype=torch.int64)), strict=True):
            out[key].append(value)
        alive = ~terminated
        obs = next_obs
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in out.items()}

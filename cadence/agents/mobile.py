"""MOBILE: offline model-based RL with a Bellman-inconsistency penalty (Sun et al., ICML 2023).

Model transitions are penalised inside the critic's target by how much the model's possible next states
disagree about the Bellman target; real transitions are not penalised. Rollouts are MOPO's (unpenalised
rewards), or MOREC-filtered with ``morec`` on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cadence.agents.mopo import OfflineModelBasedConfig
from cadence.agents.sac import SAC
from cadence.config import check
from cadence.replay import Batch
from cadence.world_models.ensemble import GaussianEnsemble


@dataclass(frozen=True)
class MOBILEConfig(OfflineModelBasedConfig):
    """Hyperparameters of MOBILE (and MOREC-MOBILE with ``morec = true``)."""

    penalty_coef: float = 1.0
    """beta in y = r + gamma Q' - beta * u(s, a) for model transitions."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.penalty_coef >= 0, "penalty_coef", self.penalty_coef, ">= 0")


def bellman_inconsistency(model: GaussianEnsemble, agent: SAC, obs: torch.Tensor, act: torch.Tensor,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """u(s, a) = std over elites k of T_k = r_k + gamma (min_j Q'_j(s'_k, a'_k) - alpha log pi(a'_k | s'_k)),

    with (s'_k, r_k) one sample of elite k's Gaussian and a'_k ~ pi(. | s'_k). Shape ``[B]``.
    """
    with torch.no_grad():
        mean, logvar = model(obs, act)
        mean, logvar = mean[model.elites], logvar[model.elites]  # [K, B, obs_dim + 1]
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        sample = mean + torch.exp(0.5 * logvar) * noise
        next_obs, reward = obs + sample[..., : model.obs_dim], sample[..., model.obs_dim]
        flat = next_obs.reshape(-1, model.obs_dim)
        next_act, next_logp = agent.actor(flat)
        next_q = agent.critic_target(flat, next_act).min(dim=0).values
        soft_value = (next_q - agent.alpha * next_logp).reshape(reward.shape)
        targets = reward + agent.config.gamma * soft_value
        return targets.std(dim=0)


class MOBILE(SAC):
    """SAC whose critic target subtracts ``penalty_coef * u(s, a)`` on model transitions.

    :func:`cadence.agents.offline.train_offline` hands it the learned model (``agent.model``) and batches with
    an ``is_real`` field.
    """

    algo = "mobile"
    model: GaussianEnsemble | None = None

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """SAC's soft Bellman error with the target y = r + gamma (1 - d) V'(s') - beta * u(s, a) * [model row]."""
        if self.model is None:
            raise RuntimeError("MOBILE needs its learned model: set agent.model before updating")
        # rows without an is_real flag are treated as real: no penalty
        model_rows = ~batch["is_real"] if "is_real" in batch else torch.zeros_like(batch["terminated"])
        penalty = torch.zeros_like(batch["reward"])
        if model_rows.any():
            penalty[model_rows] = bellman_inconsistency(self.model, self, batch["obs"][model_rows],
                                                        batch["action"][model_rows])
        penalised = {**batch, "reward": batch["reward"] - self.config.penalty_coef * penalty}
        loss, metrics = super().critic_loss(penalised)
        metrics["penalty"] = penalty[model_rows].mean().item() if model_rows.any() else 0.0
        return loss, metrics

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
from cadence.config import check, check_positive
from cadence.replay import Batch
from cadence.world_models.base import DynamicsModel


@dataclass(frozen=True)
class MOBILEConfig(OfflineModelBasedConfig):
    """Hyperparameters of MOBILE (and MOREC-MOBILE with ``morec = true``)."""

    penalty_coef: float = 1.0
    """beta in y = r + gamma Q' - beta * u(s, a) for model transitions."""
    penalty_samples: int = 10
    """Draws per elite whose Q-values are averaged before the std over elites (MOBILE's code: 10)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.penalty_coef >= 0, "penalty_coef", self.penalty_coef, ">= 0")
        check_positive(self, "penalty_samples")


def bellman_inconsistency(model: DynamicsModel, agent: SAC, obs: torch.Tensor, act: torch.Tensor,
                          samples: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """u(s, a) = std over elites k of mean_n min_j Q'_j(s'_kn, a'_kn), shape ``[B]``,

    with s'_kn the n-th of ``samples`` draws from elite k's Gaussian and a'_kn ~ pi(. | s'_kn). This is the
    authors' implementation (OfflineRL-Kit's ``compute_lcb``, also used by MOREC): averaging the draws per elite
    keeps the std about the elites' disagreement (epistemic), not each Gaussian's noise; reward, gamma and the
    entropy term are left out, as there.
    """
    with torch.no_grad():
        mean, logvar = model(obs, act)
        mean = mean[model.elites, :, : model.obs_dim]  # [K, B, obs_dim]
        std = torch.exp(0.5 * logvar[model.elites, :, : model.obs_dim])
        noise = torch.randn((samples, *mean.shape), generator=generator, device=mean.device, dtype=mean.dtype)
        next_obs = obs + mean + std * noise  # [N, K, B, obs_dim]
        flat = next_obs.reshape(-1, model.obs_dim)
        next_act, _ = agent.actor(flat)
        next_q = agent.critic_target(flat, next_act).min(dim=0).values.reshape(next_obs.shape[:-1])
        return next_q.mean(dim=0).std(dim=0)


class MOBILE(SAC):
    """SAC whose critic target subtracts ``penalty_coef * u(s, a)`` on model transitions.

    :func:`cadence.loops.offline.train_offline` hands it the learned model (:meth:`use_model`) and batches with
    an ``is_real`` field.
    """

    algo = "mobile"
    supports_bf16_mixed = False  # the offline loop and the model rollouts run in float32 only
    model: DynamicsModel | None = None

    def use_model(self, model: DynamicsModel) -> None:
        """Penalise Bellman targets on model rows by this model's Bellman inconsistency."""
        self.model = model

    def rollout_penalty(self) -> None:
        """MOBILE's penalty lives in its critic target, not in the rollout rewards."""
        return None

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """SAC's soft Bellman error with the target y = r + gamma (1 - d) V'(s') - beta * u(s, a) * [model row]."""
        if self.model is None:
            raise RuntimeError("MOBILE needs its learned model: call agent.use_model(model) before updating")
        # rows without an is_real flag are treated as real: no penalty
        model_rows = ~batch["is_real"] if "is_real" in batch else torch.zeros_like(batch["terminated"])
        penalty = torch.zeros_like(batch["reward"])
        if model_rows.any():
            penalty[model_rows] = bellman_inconsistency(self.model, self, batch["obs"][model_rows],
                                                        batch["action"][model_rows], self.config.penalty_samples)
        penalised = {**batch, "reward": batch["reward"] - self.config.penalty_coef * penalty}
        loss, metrics = super().critic_loss(penalised)
        metrics["penalty"] = penalty[model_rows].mean().item() if model_rows.any() else 0.0
        return loss, metrics

"""MOPO: SAC on real data mixed with short model rollouts whose rewards are penalised by model uncertainty
(Yu et al., NeurIPS 2020). With ``morec`` on, MOREC's transition filter chooses each model step and ends
rollouts whose dynamics reward falls below its threshold, so much longer rollouts are usable
(docs/ARCHITECTURE.md, "MOPO, MOBILE and MOREC").

The agent is SAC; what makes it MOPO is the data it learns from, produced by
:func:`cadence.loops.offline.train_offline`, and the penalty it asks that loop to apply to rollout rewards.
"""

from __future__ import annotations

from dataclasses import dataclass

from cadence.agents.base import Penalty
from cadence.agents.sac import SAC, SACConfig
from cadence.config import check, check_positive
from cadence.world_models.base import DynamicsModel
from cadence.world_models.rollout import mopo_penalty

#: MOPO's penalty coefficient per data-set family, as MOREC ran it (Luo et al., arXiv 2310.05422; docs/ARCHITECTURE.md,
#: "MOPO, MOBILE and MOREC": HalfCheetah 0.5, Hopper 10-15, Walker 0.25-1.0)
PENALTY_BY_FAMILY = {"halfcheetah": 0.5, "hopper": 10.0, "walker2d": 0.5}


@dataclass(frozen=True)
class OfflineModelBasedConfig(SACConfig):
    """Settings shared by MOPO and MOBILE: SAC's, plus how model data is made and mixed in."""

    actor_lr: float = 1e-4
    """Adam learning rate of the actor (MOREC's setting)."""
    learning_starts: int = 0
    """Offline: learning starts at once."""
    rollout_length: int = 5
    """Model steps per rollout (MOPO 1-5; with morec, 100)."""
    rollout_batch_size: int = 2000
    """Start states per rollout round."""
    rollout_every: int = 1000
    """Gradient steps between rollout rounds."""
    model_retain_rounds: int = 5
    """Rollout rounds the model buffer keeps (FIFO)."""
    real_ratio: float = 0.05
    """Share of real transitions in each batch."""
    morec: bool = False
    """Choose model steps with MOREC's dynamics-reward filter and end rollouts below its threshold."""
    morec_fit_steps: int = 5000
    """Discriminator training steps of MOREC's dynamics reward (at least every * checkpoint_interval = 50)."""
    morec_threshold_quantile: float = 0.05
    """0: end rollouts below MOREC's absolute dynamics reward 0.6. q in (0, 1): below the q-quantile of the filter's
    chosen rewards on the data's own (s, a) pairs, because cadence's reward, learned against a fixed model rather
    than adversarially, is not calibrated to score data-like transitions near log 2 (TransitionFilter.calibrated)."""
    morec_early_termination: bool = True
    """End rollouts (storing the step as terminal) below the threshold; False keeps only the filter's choice of
    next state (an ablation that separates the choice from the termination's pessimism)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("rollout_length", "rollout_batch_size", "rollout_every", "model_retain_rounds", "morec_fit_steps"):
            check_positive(self, name)
        check(0.0 <= self.real_ratio <= 1.0, "real_ratio", self.real_ratio, "in [0, 1]")
        check(0.0 <= self.morec_threshold_quantile < 1.0, "morec_threshold_quantile", self.morec_threshold_quantile,
              "in [0, 1)")


@dataclass(frozen=True)
class MOPOConfig(OfflineModelBasedConfig):
    """Hyperparameters of MOPO (and MOREC-MOPO with ``morec = true``)."""

    penalty_coef: float = 1.0
    """lambda in r - lambda * max_k ||sigma_k(s, a)|| (see PENALTY_BY_FAMILY for per-task values)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.penalty_coef >= 0, "penalty_coef", self.penalty_coef, ">= 0")


class MOPO(SAC):
    """SAC trained by :func:`cadence.loops.offline.train_offline` on real data and penalised model rollouts."""

    algo = "mopo"
    supports_bf16_mixed = False  # the offline loop and the model rollouts run in float32 only
    config: MOPOConfig
    _penalty: Penalty | None = None

    def use_model(self, model: DynamicsModel) -> None:
        """Penalise rollouts by this model's uncertainty."""
        self._penalty = mopo_penalty(model)

    def rollout_penalty(self) -> tuple[Penalty, float] | None:
        """MOPO's u(s, a) = max over elites of ||sigma_k(s, a)||, times ``penalty_coef``."""
        if self._penalty is None:
            raise RuntimeError("MOPO needs its learned model: call agent.use_model(model) before rolling out")
        return self._penalty, self.config.penalty_coef

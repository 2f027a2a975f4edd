"""MOREC's transition filter (Luo et al., ICLR 2024): choose each model step by its dynamics reward.

For every row ``(s, a)`` each elite's Gaussian is sampled ``samples_per_elite`` times (MOREC: 5 elites x 2 = 10
candidates ``(s'_c, r_c)``); every candidate is scored with the dynamics reward ``R(s, a, s'_c)``; the row takes

    c* = argmax_c R(s, a, s'_c)                     (mode "argmax"), or
    c* ~ softmax_c(R(s, a, s'_c) / temperature)     (mode "softmax", MOREC: temperature 0.1),

and its rollout ends after this step when ``R(s, a, s'_c*) < threshold`` (MOREC: 0.6). One batched computation:
no loop over rows, elites or candidates. A ``TransitionFilter`` is a rollout ``Choose`` (see ``rollout.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import torch

from cadence.config import check, check_positive
from cadence.world_models.base import DynamicsModel
from cadence.world_models.rollout import ModelDiverged

Tensor = torch.Tensor

MODES = ("argmax", "softmax")


class RewardModel(Protocol):
    """Anything that scores transitions, like :class:`~cadence.world_models.dynamics_reward.DynamicsReward`."""

    def reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class FilterConfig:
    """How MOREC's filter draws, picks and keeps candidate transitions."""

    samples_per_elite: int = 2
    """Gaussian samples drawn from each elite per row (MOREC: 2, so 10 candidates with 5 elites)."""
    mode: str = "argmax"
    """"argmax": the candidate with the highest dynamics reward; "softmax": a sample with p ~ exp(r / temperature)."""
    temperature: float = 0.1
    """Softmax temperature of mode "softmax" (MOREC: 0.1)."""
    threshold: float = 0.6
    """A rollout ends after a step whose chosen candidate scores below this (MOREC: 0.6, i.e. mean D below 0.45)."""

    def __post_init__(self) -> None:
        check_positive(self, "samples_per_elite")
        check(self.mode in MODES, "mode", self.mode, f"one of {MODES}")
        check(self.temperature > 0, "temperature", self.temperature, "> 0")


@dataclass(frozen=True)
class FilteredStep:
    """The filter's choice for each row of a batch."""

    next_obs: Tensor
    """Chosen next state, ``[B, obs_dim]``."""
    reward: Tensor | None
    """The ensemble's env-reward sample drawn with the chosen next state, ``[B]`` (None if it learns no reward)."""
    dynamics_reward: Tensor
    """Dynamics reward of the chosen candidate, ``[B]``."""
    keep: Tensor
    """``dynamics_reward >= threshold``: False ends the row's rollout after this step, ``[B]`` bool."""
    index: Tensor
    """Chosen candidate, elite-major (``elite_rank * samples_per_elite + sample``), ``[B]``."""


def sample_candidates(model: DynamicsModel, obs: Tensor, act: Tensor, samples_per_elite: int = 2,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
    """Draw ``samples_per_elite`` samples from each elite's Gaussian for every row.

    Returns next states ``[C, B, obs_dim]`` and env rewards ``[C, B]`` (None without a reward head), with
    ``C = n_elites * samples_per_elite``; state and reward of a candidate come from one joint draw, as in
    :meth:`DynamicsModel.predict`: ``(s', r) ~ N(mean_k + (s, 0), exp(logvar_k))``.
    """
    mean, logvar = model(obs, act)  # [members, B, out]
    elites = model.elites.to(mean.device)
    mean, std = mean[elites], torch.exp(0.5 * logvar[elites])  # [E, B, out]
    noise = torch.randn((len(elites), samples_per_elite, *mean.shape[1:]), generator=generator, device=mean.device,
                        dtype=mean.dtype)
    samples = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).flatten(0, 1)  # [E * S, B, out]
    next_obs = obs + samples[..., : model.obs_dim]
    reward = samples[..., model.obs_dim] if model.predicts_reward else None
    return next_obs, reward


def select(scores: Tensor, mode: str = "argmax", temperature: float = 0.1,
           generator: torch.Generator | None = None) -> Tensor:
    """Index of the chosen candidate per row from ``scores [C, B]``: the argmax, or a softmax(scores / T) sample."""
    if mode == "argmax":
        return scores.argmax(dim=0)
    if mode == "softmax":
        probs = torch.softmax(scores.T / temperature, dim=-1)  # [B, C]
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    raise ValueError(f"unknown filter mode {mode!r}: expected one of {MODES}")


class TransitionFilter:
    """MOREC's filter over a DynamicsModel's candidates; also a rollout ``Choose``: ``(obs, act) -> (s', r, keep)``.

    Args:
        model: the dynamics model that proposes candidates (its elites are sampled).
        dynamics_reward: scores ``(s, a, s')``, e.g. a fitted :class:`DynamicsReward`.
        config: candidates per elite, choice rule and threshold.
        generator: random source for candidate noise and softmax sampling.
    """

    def __init__(self, model: DynamicsModel, dynamics_reward: RewardModel, config: FilterConfig = FilterConfig(),
                 generator: torch.Generator | None = None):
        self.model, self.dynamics_reward, self.config, self.generator = model, dynamics_reward, config, generator

    @torch.no_grad()
    def filter(self, obs: Tensor, act: Tensor) -> FilteredStep:
        """Candidates for each row, scored and chosen; see :class:`FilteredStep`."""
        if obs.dim() != 2 or act.dim() != 2 or obs.shape[0] != act.shape[0]:
            raise ValueError(f"obs and act must be [batch, dim] with equal batch sizes, got {list(obs.shape)} and "
                             f"{list(act.shape)}")
        if obs.shape[1] != self.model.obs_dim or act.shape[1] != self.model.act_dim:
            raise ValueError(f"the model takes obs_dim={self.model.obs_dim}, act_dim={self.model.act_dim}, got "
                             f"{obs.shape[1]} and {act.shape[1]}")
        cfg = self.config
        next_obs, reward = sample_candidates(self.model, obs, act, cfg.samples_per_elite, self.generator)
        if not (torch.isfinite(next_obs).all() and (reward is None or torch.isfinite(reward).all())):
            raise ModelDiverged("the model predicted NaN or inf for a candidate transition")
        n_cand, batch = next_obs.shape[:2]
        # row c * B + b of the flat batch is candidate c of row b
        scores = self.dynamics_reward.reward(obs.repeat(n_cand, 1), act.repeat(n_cand, 1), next_obs.flatten(0, 1))
        scores = scores.reshape(n_cand, batch)
        index = select(scores, cfg.mode, cfg.temperature, self.generator)
        rows = torch.arange(batch, device=obs.device)
        chosen = scores[index, rows]
        return FilteredStep(
            next_obs=next_obs[index, rows],
            reward=reward[index, rows] if reward is not None else None,
            dynamics_reward=chosen,
            keep=chosen >= cfg.threshold,
            index=index,
        )

    def calibrated(self, obs: Tensor, act: Tensor, quantile: float) -> TransitionFilter:
        """This filter with its threshold set to the ``quantile`` of the chosen candidates' dynamics rewards on
        ``(obs, act)``, typically the data's own pairs.

        MOREC's 0.6 presumes a reward calibrated by adversarial training, where a data-like transition scores near
        log 2. A discriminator trained against a fixed model (cadence's) separates model samples from data far more
        sharply, so its absolute level says little; this threshold ends rollouts where the best candidate is less
        plausible than all but a ``quantile`` share of in-distribution steps.
        """
        check(0.0 < quantile < 1.0, "quantile", quantile, "in (0, 1)")
        threshold = float(torch.quantile(self.filter(obs, act).dynamics_reward.float(), quantile))
        config = dataclasses.replace(self.config, threshold=threshold)
        return TransitionFilter(self.model, self.dynamics_reward, config, self.generator)

    def __call__(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The rollout ``Choose``: chosen next state, its env reward and the keep mask."""
        step = self.filter(obs, act)
        if step.reward is None:
            raise ValueError("model rollouts need a reward: the ensemble was built with learn_reward=False")
        return step.next_obs, step.reward, step.keep

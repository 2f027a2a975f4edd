"""TD3+BC: TD3 with a behaviour-cloning term in the actor loss, for offline RL (Fujimoto & Gu 2021, arXiv 2106.06860).

Everything is TD3 (twin critics, target policy smoothing, delayed actor and target updates) except two changes:

1. the actor minimises ``-lambda Q_1(s, pi(s)) + (pi(s) - a)^2`` with ``lambda = alpha / mean |Q_1(s, pi(s))|``
   (detached), so the Q term is scale-free and ``alpha`` alone weighs it against behaviour cloning;
2. observations are normalised by the data set's mean and std (:meth:`TD3BC.set_normalizer`), in acting and
   in every update; the statistics are saved with the agent, deployment checkpoints included.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from cadence.agents.base import AgentBase
from cadence.agents.sac import EnsembleCritic
from cadence.config import check, check_positive, check_widths
from cadence.nn import adam, gather_state, mlp, optimizer_step, restore_state, soft_update
from cadence.replay import Batch

#: floor of the normalising std, so a constant observation feature does not blow up
MIN_OBS_STD = 1e-3


@dataclass(frozen=True)
class TD3BCConfig:
    """Hyperparameters of TD3+BC; defaults follow the paper (Fujimoto & Gu, arXiv 2106.06860)."""

    hidden_sizes: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor and of each critic."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics."""
    batch_size: int = 256
    """Transitions per gradient step."""
    gamma: float = 0.99
    """Discount per stored transition."""
    tau: float = 0.005
    """Polyak rate of the target actor and critics."""
    policy_noise: float = 0.2
    """Std of the target policy smoothing noise, in units of the action half-range."""
    noise_clip: float = 0.5
    """The smoothing noise is clipped to +-noise_clip, in units of the action half-range."""
    policy_delay: int = 2
    """Critic updates per actor and target update."""
    alpha: float = 2.5
    """BC weight: lambda = alpha / mean |Q_1(s, pi(s))| scales the Q term (0: pure behaviour cloning)."""
    exploration_noise: float = 0.1
    """Std of the Gaussian noise of non-deterministic actions, in units of the action half-range."""
    buffer_size: int = 1_000_000
    """Replay capacity in stored transitions."""
    learning_starts: int = 0
    """Offline: learning starts at once."""
    gradient_steps: int = 1
    """Gradient steps per stored transition (when trained online)."""

    def __post_init__(self) -> None:
        check_widths(self, "hidden_sizes")
        for name in ("actor_lr", "critic_lr", "batch_size", "policy_delay", "buffer_size", "gradient_steps"):
            check_positive(self, name)
        for name in ("policy_noise", "noise_clip", "alpha", "exploration_noise"):
            value = getattr(self, name)
            check(value >= 0 and math.isfinite(value), name, value, ">= 0 and finite")
        check(0.0 <= self.gamma <= 1.0, "gamma", self.gamma, "in [0, 1]")
        check(0.0 < self.tau <= 1.0, "tau", self.tau, "in (0, 1]")
        check(self.learning_starts >= 0, "learning_starts", self.learning_starts, ">= 0")


class DeterministicActor(nn.Module):
    """(Normalised) state -> action: an MLP, tanh, rescaled to the action bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], low: np.ndarray, high: np.ndarray):
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.register_buffer("scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs).float()) * self.scale + self.bias  # float32 under autocast too


class TD3BC(AgentBase):
    """TD3+BC: a deterministic actor, twin critics, and observation normalisation by the data's statistics.

    Call :meth:`set_normalizer` with the data set's observation mean and std before training; until then the
    normaliser is the identity. :meth:`critic_loss`, :meth:`policy_loss` and :meth:`bc_loss` take *normalised*
    observations (:meth:`normalize`); :meth:`act` and :meth:`update` normalise raw ones themselves.

    Args:
        observation_space: a flat ``Box``.
        action_space: a flat ``Box`` with finite bounds.
        config: hyperparameters.
        device: torch device for networks.
    """

    algo = "td3bc"

    def __init__(self, observation_space: spaces.Box, action_space: spaces.Box, config: TD3BCConfig = TD3BCConfig(),
                 device: str | torch.device = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.obs_dim = int(np.prod(observation_space.shape))
        self.act_dim = int(np.prod(action_space.shape))
        hidden = tuple(config.hidden_sizes)
        self.actor = DeterministicActor(
            self.obs_dim, self.act_dim, hidden, action_space.low, action_space.high
        ).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = EnsembleCritic(self.obs_dim, self.act_dim, hidden, 2).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = adam(self.actor.parameters(), config.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), config.critic_lr)
        self.low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        self.obs_mean = torch.zeros(self.obs_dim, device=self.device)
        self.obs_std = torch.ones(self.obs_dim, device=self.device)
        self.updates = 0
        #: the metrics of the last actor step, reported again by the updates between actor steps
        self.actor_metrics: dict[str, float] = {}

    # --- observation normalisation -------------------------------------------------------------------
    def set_normalizer(self, mean: Any, std: Any) -> None:
        """Normalise observations as ``(obs - mean) / max(std, 1e-3)`` from now on (the data set's statistics)."""
        mean_t = torch.as_tensor(mean, dtype=torch.float32, device=self.device).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32, device=self.device).reshape(-1)
        for name, value in (("mean", mean_t), ("std", std_t)):
            if value.shape != (self.obs_dim,):
                raise ValueError(f"normaliser {name} must have {self.obs_dim} values, got {value.numel()}")
            if not torch.isfinite(value).all():
                raise ValueError(f"normaliser {name} holds NaN or inf")
        self.obs_mean = mean_t
        self.obs_std = std_t.clamp(min=MIN_OBS_STD)

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """``(obs - obs_mean) / obs_std``."""
        return (obs - self.obs_mean) / self.obs_std

    # --- acting --------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """One action for one observation (or a batch ``[B, obs_dim]``); exploration noise unless deterministic."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        action = self.actor(self.normalize(obs_t))
        if not deterministic:
            noise = torch.randn_like(action) * self.config.exploration_noise * self.actor.scale
            action = (action + noise).clamp(self.low, self.high)
        return action.cpu().numpy()

    def act_sequence(self, obs: np.ndarray, length: int, deterministic: bool = True) -> np.ndarray:
        """``[length, act_dim]`` actions decided from one state (``[B, length, act_dim]`` from a batch):
        TD3+BC repeats its one action."""
        return np.repeat(self.act(obs, deterministic)[..., None, :], length, axis=-2)

    # --- losses (on normalised observations) ---------------------------------------------------------
    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """TD3's clipped double-Q error with target policy smoothing (sigma, c in action half-ranges):

        a' = clip(pi'(s') + clip(eps, -c, c), low, high),  eps ~ N(0, sigma^2)
        y = r + gamma (1 - terminated) min_k Q'_k(s', a')
        L = sum_k E[(Q_k(s, a) - y)^2]
        """
        with torch.no_grad():
            clip = self.config.noise_clip * self.actor.scale
            noise = (torch.randn_like(batch["action"]) * self.config.policy_noise * self.actor.scale).clamp(-clip, clip)
            next_action = (self.actor_target(batch["next_obs"]) + noise).clamp(self.low, self.high)
            next_q = self.critic_target(batch["next_obs"], next_action).min(dim=0).values
            not_done = 1.0 - batch["terminated"].float()
            target = batch["reward"] + self.config.gamma * not_done * next_q
        q = self.critic(batch["obs"], batch["action"])
        loss = ((q - target) ** 2).mean(dim=1).sum()
        return loss, {"critic_loss": loss.item(), "q_mean": q.mean().item()}

    def policy_loss(self, obs: torch.Tensor, pi: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """L_Q = -lambda E[Q_1(s, pi(s))],  lambda = alpha / E|Q_1(s, pi(s))| (detached).

        ``pi``: the actor's actions on ``obs``, if already computed. Returns the loss and lambda. The critics get
        no gradients from it.
        """
        pi = self.actor(obs) if pi is None else pi
        self.critic.requires_grad_(False)
        q1 = self.critic(obs, pi)[0]
        self.critic.requires_grad_(True)
        lam = self.config.alpha / q1.abs().mean().detach()
        return -lam * q1.mean(), lam

    def bc_loss(self, obs: torch.Tensor, action: torch.Tensor, pi: torch.Tensor | None = None) -> torch.Tensor:
        """L_BC = E[(pi(s) - a)^2], averaged over the batch and the action dimensions.

        ``pi``: the actor's actions on ``obs``, if already computed.
        """
        pi = self.actor(obs) if pi is None else pi
        return ((pi - action) ** 2).mean()

    # --- update --------------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One critic step; every ``policy_delay``-th update (the first included) also an actor step on
        L_Q + L_BC and a Polyak update of both targets. Between actor steps the actor metrics are the last ones."""
        batch = {**batch, "obs": self.normalize(batch["obs"]), "next_obs": self.normalize(batch["next_obs"])}
        critic_loss, metrics = self.critic_loss(batch)
        optimizer_step(self.critic_optimizer, critic_loss)

        if self.updates % self.config.policy_delay == 0:
            pi = self.actor(batch["obs"])
            policy_loss, lam = self.policy_loss(batch["obs"], pi)
            bc_loss = self.bc_loss(batch["obs"], batch["action"], pi)
            actor_loss = policy_loss + bc_loss
            optimizer_step(self.actor_optimizer, actor_loss)

            soft_update(self.critic_target, self.critic, self.config.tau)
            soft_update(self.actor_target, self.actor, self.config.tau)
            self.actor_metrics = {"actor_loss": actor_loss.item(), "bc_loss": bc_loss.item(), "lambda": lam.item()}

        self.updates += 1
        return {**metrics, **self.actor_metrics}

    # --- persistence ---------------------------------------------------------------------------------
    #: modules and optimisers saved in full checkpoints
    PARTS = ("actor", "actor_target", "critic", "critic_target", "actor_optimizer", "critic_optimizer")

    def state_dict(self) -> dict[str, Any]:
        return {**gather_state(self, self.PARTS), "obs_mean": self.obs_mean.clone(), "obs_std": self.obs_std.clone(),
                "updates": self.updates, "actor_metrics": dict(self.actor_metrics)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "critic" in state:
            restore_state(self, state, self.PARTS)
            self.updates = int(state["updates"])
            self.actor_metrics = dict(state["actor_metrics"])
        else:  # a deployment checkpoint: the actor and the normaliser
            restore_state(self, state, ("actor",))
        self.obs_mean = state["obs_mean"].to(self.device, torch.float32).clone()
        self.obs_std = state["obs_std"].to(self.device, torch.float32).clone()

    def deployment_state_dict(self) -> dict[str, Any]:
        """What acting needs: the actor and the observation normaliser."""
        return {"actor": self.actor.state_dict(), "obs_mean": self.obs_mean.clone(), "obs_std": self.obs_std.clone()}
